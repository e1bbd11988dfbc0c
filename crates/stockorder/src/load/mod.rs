//! `stockorder load`: drives HTTP load at a server and reports throughput and latency.
//!
//! Each worker owns one HTTP/1.1 keep-alive connection and sends requests back to back (a
//! closed loop, like `wrk`), so the figures measure the server, not a client pool. A failed
//! connection is counted and replaced.

mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

pub use report::{Outcome, Report};

/// Options of `stockorder load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Server address (host:port), e.g. 127.0.0.1:8082.
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub addr: String,

    /// What each request does.
    #[arg(long, value_enum, default_value_t = Scenario::Create)]
    pub scenario: Scenario,

    /// Connections, each sending one request at a time.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,

    /// How long to run (e.g. `10s`).
    #[arg(long, short = 'd', default_value = "10s", value_parser = crate::config::parse_duration)]
    pub duration: Duration,

    /// Stop after this many requests instead of after `--duration`.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,

    /// Orders created up front for the `get` scenario.
    #[arg(long, default_value_t = 1000)]
    pub seed_orders: usize,

    /// Print the final report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The request mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `POST /api/orders` with a market order.
    Create,
    /// `GET /api/orders/{id}` over orders created up front.
    Get,
    /// `GET /api/orders?limit=100`: the first page.
    List,
    /// `GET /health`: the HTTP stack alone, no database.
    Health,
}

const ORDER_BODY: &str = r#"{"symbol":"AAPL","order_type":"MARKET","order_side":"BUY","quantity":100}"#;

/// Runs the load described by `args` and prints the report.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let ids = match args.scenario {
        Scenario::Get => Arc::new(seed(&args.addr, args.seed_orders).await?),
        _ => Arc::new(Vec::new()),
    };
    let report = drive(&args, ids).await;
    if args.json {
        println!("{}", serde_json::to_string(&report.summary())?);
    } else {
        report.print_table();
    }
    Ok(())
}

/// Creates `n` orders and returns the ids the server answered with (or the order's position,
/// for a server whose answers carry no id, such as the echo baseline).
async fn seed(addr: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let failed = |o: Outcome| anyhow::anyhow!("seeding orders at {addr} failed: {}", o.label());
    let mut conn = Conn::open(addr).await.map_err(failed)?;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n.max(1) {
        let (status, body) = conn.send(post_order(addr)).await.map_err(failed)?;
        anyhow::ensure!(status.is_success(), "seeding orders failed with HTTP {status}");
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str().map(str::to_owned)))
            .unwrap_or_else(|| i.to_string());
        ids.push(id);
    }
    Ok(ids)
}

fn post_order(addr: &str) -> Request<Full<Bytes>> {
    request(addr, "POST", "/api/orders", Some(ORDER_BODY))
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

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<(hyper::StatusCode, Bytes), Outcome> {
        self.sender.ready().await.map_err(|e| Outcome::from_hyper(&e))?;
        let response = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| Outcome::from_hyper(&e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Outcome::from_hyper(&e))?
            .to_bytes();
        Ok((status, body))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn drive(args: &LoadArgs, ids: Arc<Vec<String>>) -> Report {
    let started = Instant::now();
    let deadline = started + args.duration;
    let budget = Arc::new(AtomicU64::new(args.requests.unwrap_or(u64::MAX)));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let progress = tokio::spawn(report::progress(Arc::clone(&sent), Arc::clone(&stop), started));

    let mut workers = JoinSet::new();
    for worker in 0..args.concurrency {
        let (addr, scenario, ids) = (args.addr.clone(), args.scenario, Arc::clone(&ids));
        let (budget, stop, sent) = (Arc::clone(&budget), Arc::clone(&stop), Arc::clone(&sent));
        workers.spawn(async move {
            let mut report = Report::default();
            let mut conn: Option<Conn> = None;
            let mut n = worker;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                if budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                let req = match scenario {
                    Scenario::Create => post_order(&addr),
                    Scenario::Get => {
                        n = (n + 7919) % ids.len().max(1);
                        let path = format!("/api/orders/{}", ids.get(n).map(String::as_str).unwrap_or("0"));
                        request(&addr, "GET", &path, None)
                    }
                    Scenario::List => request(&addr, "GET", "/api/orders?limit=100", None),
                    Scenario::Health => request(&addr, "GET", "/health", None),
                };
                let t0 = Instant::now();
                let result = match conn.as_mut() {
                    Some(c) => c.send(req).await,
                    None => match Conn::open(&addr).await {
                        Ok(mut c) => {
                            let r = c.send(req).await;
                            conn = Some(c);
                            r
                        }
                        Err(e) => Err(e),
                    },
                };
                let outcome = match result {
                    Ok((status, _)) => Outcome::Status(status.as_u16()),
                    Err(e) => {
                        conn = None;
                        e
                    }
                };
                report.record(outcome, t0.elapsed());
                sent.fetch_add(1, Ordering::Relaxed);
            }
            report
        });
    }
    let mut total = Report::default();
    while let Some(joined) = workers.join_next().await {
        if let Ok(part) = joined {
            total.merge(part);
        }
    }
    total.elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    total
}
