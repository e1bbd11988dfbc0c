//! `stockorder-tools load`: drives HTTP or gRPC load at a server and reports throughput and latency.
//!
//! Each worker owns one connection (HTTP/1.1 keep-alive, or one HTTP/2 connection for gRPC).
//! By default workers send requests back to back (a closed loop, like `wrk`), so the figures
//! measure the server, not a client pool. With `--rate` the requests follow a fixed schedule
//! instead (an open loop, like `wrk2`): each request has a planned send time, and its latency is
//! counted from that time, so a server that stalls is charged for the requests it kept waiting
//! (no coordinated omission). A failed connection is counted and replaced.

mod grpc;
mod http;
mod report;

pub use grpc::GrpcDriver;
pub use http::HttpDriver;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio::task::JoinSet;

pub use report::{Latency, Outcome, Report};

/// Options of `stockorder-tools load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Server address, `host:port` or `http://host:port`. Default: `STOCKORDER_HTTP_ADDR` or
    /// `STOCKORDER_GRPC_ADDR` (as for the clients), else the service's own port for the
    /// protocol, 127.0.0.1:8082 for HTTP and 127.0.0.1:50051 for gRPC.
    #[arg(long, value_parser = crate::process::host_port)]
    pub addr: Option<String>,

    /// Which API to load.
    #[arg(long, value_enum, default_value_t = LoadProtocol::Http)]
    pub protocol: LoadProtocol,

    /// What each request does.
    #[arg(long, value_enum, default_value_t = Scenario::Create)]
    pub scenario: Scenario,

    /// Connections, each sending one request at a time.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,

    /// How long to run (e.g. `10s`).
    #[arg(long, short = 'd', default_value = "10s", value_parser = crate::duration::parse)]
    pub duration: Duration,

    /// Stop after this many requests instead of after `--duration`.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,

    /// Send this many requests per second in total, on a fixed schedule, instead of back to
    /// back. `--concurrency` then bounds how many can be in flight at once.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Orders created up front for the `get` scenario.
    #[arg(long, default_value_t = 1000)]
    pub seed_orders: usize,

    /// Print the final report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Also follow the order event stream with this many followers (REST, so with
    /// `--protocol http`) from the start of the log, and check at the end that each got every
    /// event once and in order: what a load costs the stream, and whether it keeps up.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
}

/// The API a load run talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadProtocol {
    /// REST over HTTP/1.1.
    Http,
    /// gRPC over HTTP/2.
    Grpc,
}

/// The request mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Place a market order (`POST /api/orders`, `CreateOrder`).
    Create,
    /// Place a limit order far below the market, which rests: the write path without the
    /// processor's fill.
    CreateResting,
    /// Read orders created up front (`GET /api/orders/{id}`, `GetOrder`).
    Get,
    /// The first page of 100 (`GET /api/orders?limit=100`, `ListOrders`).
    List,
    /// The transport alone, no database (`GET /health`, `grpc.health.v1.Health/Check`).
    Health,
    /// A trading desk's mix: 7 in 10 requests read an order, 2 place one, 1 lists the first
    /// page. The figures are also printed per kind.
    Mixed,
}

/// One request a driver sends: what a scenario is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    /// Place a market order.
    Create,
    /// Place a limit order that rests.
    CreateResting,
    /// Read one order by id.
    Get,
    /// The first page of 100.
    List,
    /// The health check.
    Health,
}

impl Call {
    /// How reports name it.
    pub fn name(self) -> &'static str {
        match self {
            Call::Create => "create",
            Call::CreateResting => "create-resting",
            Call::Get => "get",
            Call::List => "list",
            Call::Health => "health",
        }
    }
}

impl Scenario {
    /// What request number `n` of a run sends.
    fn pick(self, n: u64) -> Call {
        match self {
            Scenario::Create => Call::Create,
            Scenario::CreateResting => Call::CreateResting,
            Scenario::Get => Call::Get,
            Scenario::List => Call::List,
            Scenario::Health => Call::Health,
            Scenario::Mixed => match n % 10 {
                0 | 5 => Call::Create,
                9 => Call::List,
                _ => Call::Get,
            },
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a positive number of requests per second")),
    }
}

/// One client's connection, over HTTP or gRPC: what `load` workers and `prove` clients send
/// their requests through.
pub enum Driver {
    /// REST over one HTTP/1.1 keep-alive connection.
    Http(HttpDriver),
    /// gRPC over one HTTP/2 connection. Boxed: a tonic client pair is ~6× the size of the
    /// HTTP driver.
    Grpc(Box<GrpcDriver>),
}

impl Driver {
    /// A driver for `addr` (host:port); it connects on first use.
    pub fn new(protocol: LoadProtocol, addr: &str) -> anyhow::Result<Self> {
        Ok(match protocol {
            LoadProtocol::Http => Driver::Http(HttpDriver::new(addr)),
            LoadProtocol::Grpc => Driver::Grpc(Box::new(GrpcDriver::new(addr)?)),
        })
    }

    async fn send(&mut self, call: Call, id: &str) -> Outcome {
        match self {
            Driver::Http(d) => d.send(call, id).await,
            Driver::Grpc(d) => d.send(call, id).await,
        }
    }

    /// Places one market order: the outcome, and the order's id when it was acknowledged.
    pub async fn place_order(&mut self) -> (Outcome, Option<String>) {
        match self {
            Driver::Http(d) => d.place_order().await,
            Driver::Grpc(d) => d.place_order().await,
        }
    }

    async fn seed(&mut self, n: usize) -> anyhow::Result<Vec<String>> {
        match self {
            Driver::Http(d) => d.seed(n).await,
            Driver::Grpc(d) => d.seed(n).await,
        }
    }
}

/// Where `load` goes without `--addr`: the clients' environment variable for the protocol, or
/// the service's default port.
fn default_addr(protocol: LoadProtocol) -> anyhow::Result<String> {
    use crate::client::{DefaultAddr, GrpcDefault, HttpDefault};
    let (var, fallback) = match protocol {
        LoadProtocol::Http => (HttpDefault::ENV, "127.0.0.1:8082"),
        LoadProtocol::Grpc => (GrpcDefault::ENV, "127.0.0.1:50051"),
    };
    match std::env::var(var) {
        Ok(raw) => crate::process::host_port(&raw).map_err(|e| anyhow::anyhow!("{var}: {e}")),
        Err(_) => Ok(fallback.to_owned()),
    }
}

/// Runs the load described by `args` and prints the report.
pub async fn run(mut args: LoadArgs) -> anyhow::Result<()> {
    let addr = match args.addr.take() {
        Some(addr) => addr,
        None => default_addr(args.protocol)?,
    };
    args.addr = Some(addr.clone());
    let ids = match args.scenario {
        Scenario::Get | Scenario::Mixed => Driver::new(args.protocol, &addr)?
            .seed(args.seed_orders)
            .await
            .with_context(|| format!("cannot seed orders at {addr}: is a stockorder server listening there?"))?,
        _ => Vec::new(),
    };
    anyhow::ensure!(
        args.watchers == 0 || args.protocol == LoadProtocol::Http,
        "--watchers follows the REST event stream: use it with --protocol http"
    );
    let http = format!("http://{}", addr.trim_start_matches("http://"));
    let watchers = (args.watchers > 0).then(|| crate::watchers::Watchers::start(args.watchers, &http));
    let report = drive(&args, &addr, Arc::new(ids)).await?;
    let events = match watchers {
        Some(watchers) => Some(watchers.finish(&http, Duration::from_secs(30)).await?),
        None => None,
    };
    let summary = report.summary();
    if args.json {
        let mut json = serde_json::to_value(&summary)?;
        if let Some(events) = &events {
            json["events"] = serde_json::to_value(events)?;
        }
        println!("{json}");
    } else {
        report.print_table();
        if let Some(e) = &events {
            println!(
                "events: {} in the log, {} received by {} followers; missing {}, repeated {}, out of order {}",
                e.expected, e.received, e.watchers, e.missing, e.repeated, e.out_of_order
            );
        }
    }
    if let Some(events) = &events {
        let faults = events.faults();
        anyhow::ensure!(faults.is_empty(), "the event stream: {}", faults.join(", "));
    }
    // A run in which nothing succeeded measured nothing: say so, and fail.
    anyhow::ensure!(
        summary.requests == 0 || summary.ok > 0,
        "all {} requests failed; is a stockorder server listening at {addr} ({:?})?",
        summary.requests,
        args.protocol
    );
    Ok(())
}

async fn drive(args: &LoadArgs, addr: &str, ids: Arc<Vec<String>>) -> anyhow::Result<Report> {
    let started = Instant::now();
    let deadline = started + args.duration;
    let limit = args.requests.unwrap_or(u64::MAX);
    // Request numbers are handed out from one counter: the number picks the request's kind
    // (for `mixed`), its planned send time (with `--rate`), and stops the run at `--requests`.
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let progress = tokio::spawn(report::progress(
        Arc::clone(&sent),
        Arc::clone(&failed),
        Arc::clone(&stop),
        started,
    ));
    let schedule = args.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));

    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency {
        let mut driver = Driver::new(args.protocol, addr)?;
        let (scenario, ids) = (args.scenario, Arc::clone(&ids));
        let (next, stop) = (Arc::clone(&next), Arc::clone(&stop));
        let (sent, failed) = (Arc::clone(&sent), Arc::clone(&failed));
        workers.spawn(async move {
            let mut report = Report::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= limit || stop.load(Ordering::Relaxed) {
                    break;
                }
                // With a rate, request n is due at n × interval; latency counts from then.
                let planned = schedule.map_or_else(Instant::now, |every| started + every.mul_f64(n as f64));
                if planned >= deadline {
                    break;
                }
                // Only a schedule waits: a timer, even one already due, costs a trip through
                // the timer wheel (up to 1 ms), which would cap a closed loop at ~1000/s per
                // connection.
                if schedule.is_some() {
                    tokio::time::sleep_until(planned.into()).await;
                }
                // A stride through the seeded ids, so reads are spread over them.
                let id = ids
                    .get((n.wrapping_mul(7919) % ids.len().max(1) as u64) as usize)
                    .map_or("0", String::as_str);
                let kind = scenario.pick(n);
                let outcome = driver.send(kind, id).await;
                report.record(kind, outcome, planned.elapsed());
                sent.fetch_add(1, Ordering::Relaxed);
                if !outcome.is_success() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
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
    Ok(total)
}
