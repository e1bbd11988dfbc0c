-- A MARKET BUY: with the processor on, each is filled, a second write.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"symbol":"AAPL","order_type":"MARKET","order_side":"BUY","quantity":100}'
