//! Lesson 1 — the basic graceful shutdown: one HTTP server and a database, stopped in order.
//!
//! On SIGINT or SIGTERM:
//!
//! 1. stop the HTTP server: it stops accepting connections and finishes every request it has
//!    already accepted (2 s of the original's cleanup time follow, to watch);
//! 2. only then close the database (2 s more): no request can still be using it.
//!
//! Under load, no accepted request fails, because the one resource every request needs outlives
//! every request. Compare `demo_2`, which gets the order wrong on purpose.
//!
//! Run: `cargo run --release --example demo_1`, put load on it (`stockorder-tools client
//! http`), press Ctrl+C. It takes `stockorder serve`'s options (PORT, DATABASE_URL, LOG_FORMAT,
//! …); `DEMO_SLEEP_SCALE=0` skips the pauses. It runs no order processor: orders stay PENDING.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use graceful::DrainSwitch;
use graceful::serve::Server;
use stockorder::adapter::http;
use stockorder::config::Cli;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Configuration: the service's own flags and environment, and the lesson's pace.
    let cli = Cli::parse();
    let _log = stockorder::telemetry::init(&cli.log);
    let args = cli.serve;
    let scale = match std::env::var("DEMO_SLEEP_SCALE") {
        Ok(raw) => raw
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .with_context(|| format!("DEMO_SLEEP_SCALE={raw:?} is not a non-negative number"))?,
        Err(_) => 1.0,
    };
    let pause = |secs: f64| tokio::time::sleep(Duration::from_secs_f64(secs * scale));

    // The database, the order service over it, and the HTTP server in front.
    let (store, service) = stockorder::app::open_desk(&args).await?;
    let listener = TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("cannot listen on port {}", args.port))?;
    tracing::info!(event = "listening", protocol = "http", addr = %listener.local_addr()?, "HTTP server listening");
    let readiness = DrainSwitch::new();
    let router = http::router(service, readiness.readiness());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::new(listener, router)
            .readiness(readiness.readiness())
            .run(async {
                let _ = stopped.await;
            }),
    );

    // Wait for the signal. Each step below is logged with the time since it.
    stockorder::lifecycle::signals::terminate().await;
    let signalled = Instant::now();
    let mark = |event: &str, step: &str| tracing::info!(event, "[+{:.1}s] {step}", signalled.elapsed().as_secs_f64());
    readiness.start_draining(); // /ready → 503; keep-alive clients are told to close

    // Step 1: the server stops accepting and returns once every accepted request is answered.
    mark("server.stopping", "stopping the HTTP server");
    let _ = stop.send(());
    server.await?;
    mark("server.stopped", "HTTP server stopped: every accepted request answered");
    pause(2.0).await;

    // Step 2: nothing uses the database any more; close it.
    mark("database.closing", "closing the database");
    pause(2.0).await;
    store.close().await?; // commits queued writes, checkpoints the WAL
    mark("database.closed", "database closed; exiting 0");
    Ok(())
}
