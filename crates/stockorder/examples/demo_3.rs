//! Lesson 3 — the generic pattern: HTTP and gRPC together, then every other dependency, through
//! one mechanism (the `phased-shutdown` crate) instead of hand-written sequencing.
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
//! Run it, put load on both ports (`stockorder-tools client http`, `… client grpc`), press
//! Ctrl+C. `--help` lists its options. Orders stay PENDING (no processor).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use phased_shutdown::Shutdown;
use phased_shutdown::serve::Server;
use stockorder::adapter::inbound::http;
use stockorder::app::{Port, listener};
use stockorder::lesson::{CoordinatedArgs, LessonArgs, serve_grpc};

/// Lesson 3 of 3, the generic pattern: HTTP and gRPC stop together, then the cache, the message
/// broker and the database, each registered once with the `phased-shutdown` crate, with a report at
/// the end. Put load on both ports and press Ctrl+C.
#[derive(Parser)]
#[command(name = "demo_3")]
struct Cli {
    #[command(flatten)]
    lesson: LessonArgs,
    #[command(flatten)]
    shutdown: CoordinatedArgs,
}

fn main() -> ExitCode {
    stockorder::lesson::run(lesson(Cli::parse()))
}

async fn lesson(cli: Cli) -> anyhow::Result<ExitCode> {
    let (args, pause) = (&cli.lesson, cli.lesson.pacer());
    // The coordinator first, so a signal during start-up is handled; then the ports (a port in
    // use leaves nothing on disk), the database and the order service over it.
    let mut shutdown = Shutdown::new()
        .deadline(cli.shutdown.shutdown_timeout)
        .drain_delay(cli.shutdown.shutdown_drain_delay)
        .catch_signals()?;
    let servers = shutdown.phase("stop servers");
    let dependencies = shutdown.phase("close dependencies");
    let grpc_listener = listener(Port::Grpc, SocketAddr::new(args.host, cli.shutdown.grpc_port))?;
    let setup = args.setup().await?;

    // The servers: each started with one call, stopped when their phase comes (no new
    // connections, every accepted request answered, GOAWAY on HTTP/2). gRPC health follows
    // /ready as in `serve`: NOT_SERVING from the signal on.
    let router = http::router(Arc::clone(&setup.service), shutdown.readiness());
    shutdown.serve(servers, "http server", Server::new(setup.listener, router));
    serve_grpc(&mut shutdown, servers, grpc_listener, &setup.service).await?;

    // Every other dependency: a name, a phase, a stop function. The same for all of them.
    shutdown.on_stop(dependencies, "cache", move || pause(1.0)); // flush dirty entries
    shutdown.on_stop(dependencies, "message broker", move || pause(1.0)); // ack, close the channel
    shutdown.on_stop(dependencies, "database", move || async move {
        pause(1.0).await;
        setup.store.close().await // commit queued writes, checkpoint the WAL
    });

    let report = shutdown.run().await;
    report.log();
    println!("{report}");
    Ok(ExitCode::from(report.exit_code()))
}
