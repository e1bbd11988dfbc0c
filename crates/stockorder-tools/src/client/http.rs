//! The REST client: the original `cmd/client` as four calls.

use reqwest::header::{HeaderMap, LINK};
use reqwest::{Client, RequestBuilder, Url};
use serde_json::{Map, Value, json};

use super::{CallError, CreateArgs, ListArgs, OrderApi, with_causes};

/// Talks to `/api/orders` at a base URL.
pub struct HttpApi {
    client: Client,
    base: Url,
}

impl HttpApi {
    /// A client for the server at `addr` (`http://host:port`).
    pub fn new(addr: &str) -> anyhow::Result<Self> {
        let base = Url::parse(addr).map_err(|e| anyhow::anyhow!("--addr {addr:?} is not a URL: {e}"))?;
        Ok(Self {
            client: Client::new(),
            base,
        })
    }

    fn url(&self, path: &str) -> Result<Url, CallError> {
        self.base.join(path).map_err(|e| CallError::Invalid(e.to_string()))
    }
}

fn transport(e: reqwest::Error) -> CallError {
    CallError::Transport(with_causes(&e))
}

/// Sends `request`; the JSON body and headers of a 2xx answer, or `HTTP 409: <error>`.
async fn send(request: RequestBuilder) -> Result<(Value, HeaderMap), CallError> {
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body: Value = response.json().await.map_err(transport)?;
    if status.is_success() {
        return Ok((body, headers));
    }
    let message = body.get("error").and_then(Value::as_str).unwrap_or("no error message");
    Err(CallError::Refused(format!("HTTP {}: {message}", status.as_u16())))
}

/// The `page_token` of a `Link: <…page_token=X>; rel="next"` header.
fn next_page_token(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    let target = link
        .split(';')
        .next()?
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let url = Url::parse("http://link.invalid").ok()?.join(target).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "page_token")
        .map(|(_, v)| v.into_owned())
}

impl OrderApi for HttpApi {
    async fn create(&mut self, order: &CreateArgs) -> Result<Value, CallError> {
        let mut body = json!({
            "symbol": order.symbol,
            "order_type": order.order_type,
            "order_side": order.side,
            "quantity": order.quantity,
        });
        if let Some(price) = order.price {
            body["price"] = json!(price);
        }
        if let Some(key) = &order.client_order_id {
            body["client_order_id"] = json!(key);
        }
        let url = self.url("/api/orders")?;
        Ok(send(self.client.post(url).json(&body)).await?.0)
    }

    async fn get(&mut self, id: &str) -> Result<Value, CallError> {
        let url = self.url(&format!("/api/orders/{id}"))?;
        Ok(send(self.client.get(url)).await?.0)
    }

    async fn list(&mut self, query: &ListArgs) -> Result<Value, CallError> {
        let mut url = self.url("/api/orders")?;
        {
            let mut pairs = url.query_pairs_mut();
            let limit = query.limit.map(|l| l.to_string());
            for (key, value) in [
                ("limit", &limit),
                ("page_token", &query.page_token),
                ("status", &query.status),
                ("symbol", &query.symbol),
                ("side", &query.side),
            ] {
                if let Some(v) = value {
                    pairs.append_pair(key, v);
                }
            }
        }
        let (orders, headers) = send(self.client.get(url)).await?;
        let mut page = Map::new();
        page.insert("orders".into(), orders);
        if let Some(token) = next_page_token(&headers) {
            page.insert("next_page_token".into(), Value::String(token));
        }
        Ok(Value::Object(page))
    }

    async fn cancel(&mut self, id: &str) -> Result<Value, CallError> {
        let url = self.url(&format!("/api/orders/{id}/cancel"))?;
        Ok(send(self.client.post(url)).await?.0)
    }
}

impl super::EventApi for HttpApi {
    async fn watch(
        &mut self,
        after: Option<u64>,
        symbol: Option<&str>,
        each: &mut (dyn FnMut(Value) + Send),
        mut stop: std::pin::Pin<&mut (dyn std::future::Future<Output = ()> + Send)>,
    ) -> Result<super::StreamEnd, CallError> {
        let mut url = self.url("/api/orders/events")?;
        if let Some(after) = after {
            url.query_pairs_mut().append_pair("after", &after.to_string());
        }
        if let Some(symbol) = symbol {
            url.query_pairs_mut().append_pair("symbol", symbol);
        }
        let mut response = tokio::select! {
            biased;
            () = stop.as_mut() => return Ok(super::StreamEnd::Interrupted),
            sent = self.client.get(url).send() => sent.map_err(transport)?,
        };
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or_default();
            let message = body.get("error").and_then(Value::as_str).unwrap_or("no error message");
            return Err(CallError::Refused(format!("HTTP {status}: {message}")));
        }
        // Server-Sent Events: blocks separated by a blank line; `data:` holds the event.
        let mut pending = String::new();
        loop {
            let chunk = tokio::select! {
                biased;
                () = stop.as_mut() => return Ok(super::StreamEnd::Interrupted),
                chunk = response.chunk() => chunk.map_err(transport)?,
            };
            let Some(chunk) = chunk else {
                return Ok(super::StreamEnd::Ended);
            };
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                    let event = serde_json::from_str(data.trim_start())
                        .map_err(|e| CallError::Transport(format!("an event that is not JSON: {e}")))?;
                    each(event);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_from_a_link_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            "</api/orders?limit=2&status=PENDING&page_token=0195f0b17a2c7bb18a1e9d2d2b0c1c1a>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page_token(&headers).as_deref(),
            Some("0195f0b17a2c7bb18a1e9d2d2b0c1c1a")
        );
        assert_eq!(next_page_token(&HeaderMap::new()), None);
    }
}
