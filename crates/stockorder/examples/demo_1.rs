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
//! http`), press Ctrl+C. Options: `--help` (PORT, DATABASE_URL, LOG_FORMAT, DEMO_SLEEP_SCALE;
//! `DEMO_SLEEP_SCALE=0` skips the pauses). It runs no order processor: orders stay PENDING.

use std::process::ExitCode;

use clap::Parser;
use phased_shutdown::DrainSwitch;
use phased_shutdown::serve::Server;
use stockorder::adapter::inbound::http;
use stockorder::lesson::{LessonArgs, Marks};

/// Lesson 1 of 3, the basic graceful shutdown: on Ctrl+C or SIGTERM the HTTP server stops and
/// finishes every request it accepted, and only then is the database closed, so no request
/// fails. Put load on it (`stockorder-tools client http`) and press Ctrl+C.
#[derive(Parser)]
#[command(name = "demo_1")]
struct Cli {
    #[command(flatten)]
    lesson: LessonArgs,
}

fn main() -> ExitCode {
    stockorder::lesson::run(lesson(Cli::parse().lesson))
}

async fn lesson(args: LessonArgs) -> anyhow::Result<ExitCode> {
    let (pause, setup) = (args.pacer(), args.setup().await?);
    let store = setup.store;
    let readiness = DrainSwitch::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::new(setup.listener, http::router(setup.service, readiness.readiness()))
            .readiness(readiness.readiness())
            .run(async {
                let _ = stopped.await;
            }),
    );

    // Wait for the signal. Each step below is logged with the time since it.
    stockorder::lifecycle::signals::terminate().await;
    let marks = Marks::since_now();
    readiness.start_draining(); // /ready → 503; keep-alive clients are told to close

    // Step 1: the server stops accepting and returns once every accepted request is answered.
    marks.mark("server.stopping", "stopping the HTTP server");
    let _ = stop.send(());
    server.await?;
    marks.mark("server.stopped", "HTTP server stopped: every accepted request answered");
    pause(2.0).await;

    // Step 2: nothing uses the database any more; close it.
    marks.mark("database.closing", "closing the database");
    pause(2.0).await;
    store.close().await?; // commits queued writes, checkpoints the WAL
    marks.mark("database.closed", "database closed; exiting 0");
    Ok(ExitCode::SUCCESS)
}
