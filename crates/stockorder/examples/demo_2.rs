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
//! Run it, put load on it (`stockorder-tools client http --interval 100ms`), press Ctrl+C, and
//! watch the failures from 5 s on. `--help` lists its options. Orders stay PENDING (no processor).

use std::process::ExitCode;

use clap::Parser;
use phased_shutdown::DrainSwitch;
use phased_shutdown::serve::Server;
use stockorder::adapter::inbound::http;
use stockorder::lesson::{LessonArgs, Marks};
use stockorder::lifecycle::signals::terminate;

/// Lesson 2 of 3, broken on purpose: on Ctrl+C or SIGTERM the database is closed 5 s later
/// while the server keeps serving for 10 s, so from 5 s on valid orders fail. Put load on it
/// (`stockorder-tools client http --interval 100ms`), press Ctrl+C and watch.
#[derive(Parser)]
#[command(name = "demo_2")]
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
    let server = Server::new(setup.listener, http::router(setup.service, readiness.readiness()))
        .readiness(readiness.readiness())
        .run(async {
            terminate().await;
            // THE BUG, part 1: the server goes on taking requests for 10 s after the signal.
            pause(10.0).await;
        });

    let shutdown_processing = async {
        terminate().await;
        let marks = Marks::since_now();
        marks.mark(
            "signal.handled",
            "signal: the server keeps serving; pre-shutdown processing starts",
        );
        pause(5.0).await;
        // THE BUG, part 2: nothing waits for the server before the database goes.
        store.close().await?;
        marks.mark(
            "database.closed",
            "database closed while the server still serves: requests fail from now on",
        );
        pause(5.0).await;
        marks.mark("server.stopped", "server drain ends");
        anyhow::Ok(())
    };

    let (_served, closed) = tokio::join!(server, shutdown_processing);
    closed?;
    tracing::info!("HTTP server stopped; exiting 0 as if all went well");
    Ok(ExitCode::SUCCESS)
}
