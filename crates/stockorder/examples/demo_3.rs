//! Lesson 3 — the generic pattern: HTTP and gRPC together, then every other dependency, through
//! one mechanism (the `graceful` crate) instead of hand-written sequencing.
//!
//! Each thing that must stop is registered once, with a name, a phase and an async stop
//! function. On SIGINT or SIGTERM the coordinator:
//!
//! 1. turns readiness off (`/ready` 503, gRPC health NOT_SERVING), then waits
//!    `SHUTDOWN_DRAIN_DELAY` while still serving;
//! 2. phase "stop servers": HTTP and gRPC stop together — no new connections, every accepted
//!    request answered, GOAWAY on HTTP/2 —, while gRPC health already says NOT_SERVING;
//! 3. phase "close dependencies": the cache, the message broker and the database, together
//!    (1 s each), only after both servers are done;
//! 4. prints a report and exits 0, or 1 naming whatever `SHUTDOWN_TIMEOUT` cut short. A second
//!    Ctrl+C exits at once with 130 (128 + SIGINT).
//!
//! Adding a dependency is one `on_stop` line; its place in the order is its phase.
//!
//! Run: `cargo run --release --example demo_3`, put load on both ports (`stockorder-tools
//! client http`, `stockorder-tools client grpc`), press Ctrl+C. It takes `stockorder serve`'s
//! options; `DEMO_SLEEP_SCALE=0` skips the pauses. It runs no order processor: orders stay
//! PENDING.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use graceful::Shutdown;
use graceful::serve::{Protocol, Server};
use stockorder::adapter::{grpc, http};
use stockorder::config::Cli;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
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
    let pause = move |secs: f64| tokio::time::sleep(Duration::from_secs_f64(secs * scale));

    // The coordinator first, so a signal during start-up is handled.
    let mut shutdown = Shutdown::new()
        .deadline(args.shutdown_timeout)
        .drain_delay(args.shutdown_drain_delay)
        .catch_signals()?;
    let readiness = shutdown.readiness();
    let servers = shutdown.phase("stop servers");
    let dependencies = shutdown.phase("close dependencies");

    // The database and the order service over it.
    let (store, service) = stockorder::app::open_desk(&args).await?;

    // The servers: each started with one call, stopped when their phase comes (no new
    // connections, every accepted request answered, GOAWAY on HTTP/2).
    let http_listener = TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("cannot listen on port {}", args.port))?;
    let grpc_listener = TcpListener::bind((args.host, args.grpc_port))
        .await
        .with_context(|| format!("cannot listen on port {}", args.grpc_port))?;
    tracing::info!(event = "listening", protocol = "http", addr = %http_listener.local_addr()?, "HTTP server listening");
    tracing::info!(event = "listening", protocol = "grpc", addr = %grpc_listener.local_addr()?, "gRPC server listening");
    let router = http::router(std::sync::Arc::clone(&service), readiness.clone());
    shutdown.serve(servers, "http server", Server::new(http_listener, router));
    let grpc::GrpcServices { routes, health } = grpc::services(service)?;
    shutdown.serve(
        servers,
        "grpc server",
        Server::new(grpc_listener, routes.prepare()).protocol(Protocol::Grpc),
    );
    // gRPC health follows /ready: NOT_SERVING from the moment the shutdown starts.
    shutdown.spawn_oneshot(servers, "grpc health", move |_| async move {
        health.follow(&readiness).await
    });

    // Every other dependency: a name, a phase, a stop function. The same for all of them.
    shutdown.on_stop(dependencies, "cache", move || async move {
        pause(1.0).await; // flush dirty entries
    });
    shutdown.on_stop(dependencies, "message broker", move || async move {
        pause(1.0).await; // ack what was processed, close the channel
    });
    shutdown.on_stop(dependencies, "database", move || async move {
        pause(1.0).await;
        store.close().await // commit queued writes, checkpoint the WAL
    });

    let report = shutdown.run().await;
    report.log();
    println!("{report}");
    Ok(std::process::ExitCode::from(report.exit_code()))
}
