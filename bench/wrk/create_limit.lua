-- A LIMIT BUY below AAPL's simulated price (203.87): it rests, so with the processor on it is
-- decided (looked at) but never written a second time.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"symbol":"AAPL","order_type":"LIMIT","order_side":"BUY","quantity":100,"price":150.5}'
