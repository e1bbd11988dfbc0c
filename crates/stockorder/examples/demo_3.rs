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
//! client http`, `stockorder-tools client grpc`), press Ctrl+C. Options: `--help` (PORT,
//! GRPC_PORT, DATABASE_URL, SHUTDOWN_TIMEOUT, SHUTDOWN_DRAIN_DELAY, DEMO_SLEEP_SCALE;
//! `DEMO_SLEEP_SCALE=0` skips the pauses). It runs no order processor: orders stay PENDING.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use graceful::Shutdown;
use graceful::serve::{Protocol, Server};
use stockorder::adapter::inbound::{grpc, http};
use stockorder::config::parse_duration;
use stockorder::lesson::LessonArgs;

/// Lesson 3 of 3, the generic pattern: HTTP and gRPC stop together, then the cache, the message
/// broker and the database, each registered once with the `graceful` crate, with a report at
/// the end. Put load on both ports and press Ctrl+C.
#[derive(Parser)]
#[command(name = "demo_3")]
struct Cli {
    #[command(flatten)]
    lesson: LessonArgs,

    /// gRPC port; 0 picks a free one (the log says which).
    #[arg(long, env = "GRPC_PORT", default_value_t = 50051)]
    grpc_port: u16,

    /// Longest the shutdown may take, from the signal to exit; what is still running then is
    /// aborted and named, and the exit code is 1.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// How long to keep serving after the signal with readiness already off.
    #[arg(long, env = "SHUTDOWN_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    shutdown_drain_delay: Duration,
}

fn main() -> ExitCode {
    stockorder::lesson::run(lesson(Cli::parse()))
}

async fn lesson(cli: Cli) -> anyhow::Result<ExitCode> {
    let args = &cli.lesson;
    let _log = stockorder::telemetry::init(&args.log);
    let pause = args.pacer();

    // The coordinator first, so a signal during start-up is handled.
    let mut shutdown = Shutdown::new()
        .deadline(cli.shutdown_timeout)
        .drain_delay(cli.shutdown_drain_delay)
        .catch_signals()?;
    let readiness = shutdown.readiness();
    let servers = shutdown.phase("stop servers");
    let dependencies = shutdown.phase("close dependencies");

    // The ports (a port in use leaves nothing on disk), then the database and the order
    // service over it.
    let http_listener = args.http_listener()?;
    let grpc_addr = std::net::SocketAddr::new(args.host, cli.grpc_port);
    let grpc_listener = stockorder::app::listener(stockorder::app::Port::Grpc, grpc_addr)?;
    let (store, service) = stockorder::app::open_desk(&args.database_url).await?;

    // The servers: each started with one call, stopped when their phase comes (no new
    // connections, every accepted request answered, GOAWAY on HTTP/2).
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
    Ok(ExitCode::from(report.exit_code()))
}
