//! HTTP/1.1 requests for the load generator: one keep-alive connection per worker, reopened
//! after a failure, built directly on hyper so the client adds as little as possible.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Call, Outcome};

const ORDER_BODY: &str = r#"{"symbol":"AAPL","order_type":"MARKET","order_side":"BUY","quantity":100}"#;
/// A buy limit far below AAPL's simulated price (203.87): it rests.
const RESTING_BODY: &str = r#"{"symbol":"AAPL","order_type":"LIMIT","order_side":"BUY","quantity":100,"price":1.5}"#;

/// One worker's connection to the REST API.
pub struct HttpDriver {
    addr: String,
    conn: Option<Conn>,
}

impl HttpDriver {
    /// A driver for `addr` (host:port); connects on first use.
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            conn: None,
        }
    }

    /// Sends one `call` (`id` for `get`) and says what came back.
    pub async fn send(&mut self, call: Call, id: &str) -> Outcome {
        let req = match call {
            Call::Create => request(&self.addr, "POST", "/api/orders", Some(ORDER_BODY)),
            Call::CreateResting => request(&self.addr, "POST", "/api/orders", Some(RESTING_BODY)),
            Call::Get => request(&self.addr, "GET", &format!("/api/orders/{id}"), None),
            Call::List => request(&self.addr, "GET", "/api/orders?limit=100", None),
            Call::Health => request(&self.addr, "GET", "/health", None),
        };
        match self.exchange(req).await {
            Ok((status, _)) => Outcome::Status(status.as_u16()),
            Err(outcome) => outcome,
        }
    }

    /// Places one market order; the outcome, and the order's id when it was acknowledged.
    pub async fn place_order(&mut self) -> (Outcome, Option<String>) {
        let req = request(&self.addr, "POST", "/api/orders", Some(ORDER_BODY));
        match self.exchange(req).await {
            Ok((status, body)) => {
                let id = status
                    .is_success()
                    .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
                    .flatten()
                    .and_then(|v| v.get("id").and_then(|id| id.as_str().map(str::to_owned)));
                (Outcome::Status(status.as_u16()), id)
            }
            Err(outcome) => (outcome, None),
        }
    }

    /// Creates `n` orders and returns their ids (or positions, for a server whose answers
    /// carry no id, such as the echo baseline).
    pub async fn seed(&mut self, n: usize) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let req = request(&self.addr, "POST", "/api/orders", Some(ORDER_BODY));
            let (status, body) = self
                .exchange(req)
                .await
                .map_err(|o| anyhow::anyhow!("seeding orders at {} failed: {}", self.addr, o.label()))?;
            anyhow::ensure!(status.is_success(), "seeding orders failed with HTTP {status}");
            let id = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("id").and_then(|id| id.as_str().map(str::to_owned)))
                .unwrap_or_else(|| i.to_string());
            ids.push(id);
        }
        Ok(ids)
    }

    async fn exchange(&mut self, req: Request<Full<Bytes>>) -> Result<(hyper::StatusCode, Bytes), Outcome> {
        // A kept connection the server has closed since (idle timeout, shutdown) is noticed
        // before the request is sent: that is not a failed request, so open a new one.
        if let Some(conn) = &mut self.conn
            && conn.sender.ready().await.is_err()
        {
            self.conn = None;
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(Conn::open(&self.addr).await?),
        };
        let result = conn.send(req).await;
        match &result {
            // The server asked to close (it is draining): the next request goes on a new one.
            Ok((_, _, close)) if *close => self.conn = None,
            Err(_) => self.conn = None,
            Ok(_) => {}
        }
        result.map(|(status, body, _)| (status, body))
    }
}

fn request(addr: &str, method: &str, path: &str, body: Option<&'static str>) -> Request<Full<Bytes>> {
    let builder = Request::builder().method(method).uri(path).header("host", addr);
    let (builder, body) = match body {
        Some(b) => (
            builder.header("content-type", "application/json"),
            Full::new(Bytes::from_static(b.as_bytes())),
        ),
        None => (builder, Full::new(Bytes::new())),
    };
    // Every part above is a constant or a validated address; building cannot fail.
    builder
        .body(body)
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

/// One keep-alive connection; the task driving it is aborted when this is dropped.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Conn {
    async fn open(addr: &str) -> Result<Self, Outcome> {
        let stream = TcpStream::connect(addr).await.map_err(|e| Outcome::from_connect(&e))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Outcome::from_hyper(&e))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender, driver })
    }

    /// Sends one request; the answer's status, body, and whether it said `Connection: close`.
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<(hyper::StatusCode, Bytes, bool), Outcome> {
        self.sender.ready().await.map_err(|e| Outcome::from_hyper(&e))?;
        let response = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| Outcome::from_hyper(&e))?;
        let status = response.status();
        let close = response
            .headers()
            .get(hyper::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Outcome::from_hyper(&e))?
            .to_bytes();
        Ok((status, body, close))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
