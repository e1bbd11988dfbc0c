//! Lesson 2 — the broken one, on purpose: the database closes while the server still serves.
//!
//! On SIGINT or SIGTERM, two things start at the same time, as in the original:
//!
//! - the HTTP server keeps serving for 10 s ("draining" slowly, as a server with long requests
//!   or a long drain delay does), then stops;
//! - a "pre-shutdown processing" step runs for 5 s, then closes the database.
//!
//! From 5 s to 10 s every request that reaches the server needs a database that is gone: valid
//! orders are answered `503 the service is shutting down` instead of being placed. Nothing
//! acknowledged is lost (an order is acknowledged only after its commit), but requests the
//! server accepted fail. The fix is an order, not a timeout: close what requests use only after
//! the servers have stopped (`demo_1`, `demo_3`).
//!
//! Run: `cargo run --release --example demo_2`, put load on it (`stockorder-tools client http
//! --interval 100ms`), press Ctrl+C, and watch the failures from 5 s on. It takes `stockorder
//! serve`'s options; `DEMO_SLEEP_SCALE=0.1` runs it ten times faster. It runs no order
//! processor: orders stay PENDING.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use graceful::DrainSwitch;
use graceful::serve::Server;
use stockorder::adapter::http;
use stockorder::config::Cli;
use stockorder::lifecycle::signals::terminate;
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
    let server = Server::new(listener, router)
        .readiness(readiness.readiness())
        .run(async {
            terminate().await;
            // THE BUG, part 1: the server goes on taking requests for 10 s after the signal.
            pause(10.0).await;
        });

    let shutdown_processing = async {
        terminate().await;
        let signalled = Instant::now();
        let mark =
            |event: &str, step: &str| tracing::info!(event, "[+{:.1}s] {step}", signalled.elapsed().as_secs_f64());
        mark(
            "signal.handled",
            "signal: the server keeps serving; pre-shutdown processing starts",
        );
        pause(5.0).await;
        // THE BUG, part 2: nothing waits for the server before the database goes.
        store.close().await?;
        mark(
            "database.closed",
            "database closed while the server still serves: requests fail from now on",
        );
        pause(5.0).await;
        mark("server.stopped", "server drain ends");
        anyhow::Ok(())
    };

    let (_served, closed) = tokio::join!(server, shutdown_processing);
    closed?;
    tracing::info!("HTTP server stopped; exiting 0 as if all went well");
    Ok(())
}
