//! `stockorder load`: drives HTTP or gRPC load at a server and reports throughput and latency.
//!
//! Each worker owns one connection (HTTP/1.1 keep-alive, or one HTTP/2 connection for gRPC) and
//! sends requests back to back (a closed loop, like `wrk`), so the figures measure the server,
//! not a client pool. A failed connection is counted and replaced.

mod grpc;
mod http;
mod report;

pub use http::HttpDriver;

pub use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use tokio::task::JoinSet;

use grpc::GrpcDriver;

pub use report::{Outcome, Report};

/// Options of `stockorder load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Server address (host:port): the HTTP port, or the gRPC port with `--protocol grpc`.
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub addr: String,

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
    /// Read orders created up front (`GET /api/orders/{id}`, `GetOrder`).
    Get,
    /// The first page of 100 (`GET /api/orders?limit=100`, `ListOrders`).
    List,
    /// The transport alone, no database (`GET /health`, `grpc.health.v1.Health/Check`).
    Health,
}

/// One worker's connection, over the protocol of the run.
enum Driver {
    Http(HttpDriver),
    // Boxed: a tonic client pair is ~6× the size of the HTTP driver.
    Grpc(Box<GrpcDriver>),
}

impl Driver {
    fn new(protocol: LoadProtocol, addr: &str) -> anyhow::Result<Self> {
        Ok(match protocol {
            LoadProtocol::Http => Driver::Http(HttpDriver::new(addr)),
            LoadProtocol::Grpc => Driver::Grpc(Box::new(GrpcDriver::new(addr)?)),
        })
    }

    async fn send(&mut self, scenario: Scenario, id: &str) -> Outcome {
        match self {
            Driver::Http(d) => d.send(scenario, id).await,
            Driver::Grpc(d) => d.send(scenario, id).await,
        }
    }

    async fn seed(&mut self, n: usize) -> anyhow::Result<Vec<String>> {
        match self {
            Driver::Http(d) => d.seed(n).await,
            Driver::Grpc(d) => d.seed(n).await,
        }
    }
}

/// Runs the load described by `args` and prints the report.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let ids = match args.scenario {
        Scenario::Get => Driver::new(args.protocol, &args.addr)?.seed(args.seed_orders).await?,
        _ => Vec::new(),
    };
    let report = drive(&args, Arc::new(ids)).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report.summary())?);
    } else {
        report.print_table();
    }
    Ok(())
}

async fn drive(args: &LoadArgs, ids: Arc<Vec<String>>) -> anyhow::Result<Report> {
    let started = Instant::now();
    let deadline = started + args.duration;
    let budget = Arc::new(AtomicU64::new(args.requests.unwrap_or(u64::MAX)));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let progress = tokio::spawn(report::progress(Arc::clone(&sent), Arc::clone(&stop), started));

    let mut workers = JoinSet::new();
    for worker in 0..args.concurrency {
        let mut driver = Driver::new(args.protocol, &args.addr)?;
        let (scenario, ids) = (args.scenario, Arc::clone(&ids));
        let (budget, stop, sent) = (Arc::clone(&budget), Arc::clone(&stop), Arc::clone(&sent));
        workers.spawn(async move {
            let mut report = Report::default();
            let mut n = worker;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                if budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                // A stride through the seeded ids, different per worker, so reads are spread.
                n = (n + 7919) % ids.len().max(1);
                let id = ids.get(n).map_or("0", String::as_str);
                let t0 = Instant::now();
                let outcome = driver.send(scenario, id).await;
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
    Ok(total)
}
