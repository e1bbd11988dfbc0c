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
//! Run: `cargo run --example demo_1`, put load on it (`stockorder-tools client http`), press Ctrl+C.
//! `DEMO_SLEEP_SCALE=0` skips the pauses.

mod common;

use common::{Demo, Timeline};
use graceful::DrainSwitch;
use graceful::serve::{self as server, ConnectionLimits, Protocol};
use stockorder::adapter::http;
use tokio::sync::oneshot;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let demo = Demo::from_env()?;
    let (store, service) = demo.open_store().await?;
    let listener = demo.bind_http().await?;
    let readiness = DrainSwitch::new();
    let router = http::router(service, readiness.readiness());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        router,
        Protocol::Http,
        ConnectionLimits::default(), // slow clients are closed after 10 s
        readiness.readiness(),
        async {
            let _ = stopped.await;
        },
    ));

    stockorder::lifecycle::signals::terminate().await;
    let timeline = Timeline::start();
    readiness.start_draining(); // /ready → 503; keep-alive clients are told to close

    // Step 1: the server stops accepting and returns once every accepted request is answered.
    timeline.mark("server.stopping", "stopping the HTTP server");
    let _ = stop.send(());
    server.await?;
    timeline.mark("server.stopped", "HTTP server stopped: every accepted request answered");
    demo.pause(2.0).await;

    // Step 2: nothing uses the database any more; close it.
    timeline.mark("database.closing", "closing the database");
    demo.pause(2.0).await;
    store.close().await?; // commits queued writes, checkpoints the WAL
    timeline.mark("database.closed", "database closed; exiting 0");
    Ok(())
}
