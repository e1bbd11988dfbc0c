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
//! Run: `cargo run --example demo_2`, put load on it (`stockorder-tools client http --interval
//! 100ms`), press Ctrl+C, and watch the failures from 5 s on. `DEMO_SLEEP_SCALE=0.1` runs it
//! ten times faster.

mod common;

use common::{Demo, Timeline};
use graceful::DrainSwitch;
use graceful::serve::{self as server, ConnectionLimits, Protocol};
use stockorder::adapter::http;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let demo = Demo::from_env()?;
    let (store, service) = demo.open_store().await?;
    let listener = demo.bind_http().await?;
    let readiness = DrainSwitch::new();
    let router = http::router(service, readiness.readiness());
    let server = server::serve(
        listener,
        router,
        Protocol::Http,
        ConnectionLimits::default(),
        readiness.readiness(),
        async {
            stockorder::lifecycle::signals::terminate().await;
            // THE BUG, part 1: the server goes on taking requests for 10 s after the signal.
            demo.pause(10.0).await;
        },
    );

    let shutdown_processing = async {
        stockorder::lifecycle::signals::terminate().await;
        let timeline = Timeline::start();
        timeline.mark(
            "signal.handled",
            "signal: the server keeps serving; pre-shutdown processing starts",
        );
        demo.pause(5.0).await;
        // THE BUG, part 2: nothing waits for the server before the database goes.
        store.close().await?;
        timeline.mark(
            "database.closed",
            "database closed while the server still serves: requests fail from now on",
        );
        demo.pause(5.0).await;
        timeline.mark("server.stopped", "server drain ends");
        anyhow::Ok(())
    };

    let ((), closed) = tokio::join!(server, shutdown_processing);
    closed?;
    tracing::info!("HTTP server stopped; exiting 0 as if all went well");
    Ok(())
}
