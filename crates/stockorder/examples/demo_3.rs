//! Lesson 3 — the generic pattern: HTTP and gRPC together, then every other dependency, through
//! one mechanism (the `graceful` crate) instead of hand-written sequencing.
//!
//! Each thing that must stop is registered once, with a name, a phase and an async stop
//! function. On SIGINT or SIGTERM the coordinator:
//!
//! 1. turns readiness off (`/ready` 503, gRPC health NOT_SERVING), then waits
//!    `SHUTDOWN_DRAIN_DELAY` while still serving;
//! 2. phase "stop servers": HTTP and gRPC stop together — no new connections, every accepted
//!    request answered, GOAWAY on HTTP/2 — (1 s each of the original's closer time);
//! 3. phase "close dependencies": the cache, the message broker and the database, together
//!    (1 s each), only after both servers are done;
//! 4. prints a report and exits 0, or 1 naming whatever `SHUTDOWN_TIMEOUT` cut short. A second
//!    Ctrl+C exits at once with 130 (128 + SIGINT).
//!
//! Adding a dependency is one `on_stop` line; its place in the order is its phase.
//!
//! Run: `cargo run --example demo_3`, put load on both ports (`stockorder-tools client http`,
//! `stockorder-tools client grpc`), press Ctrl+C. `DEMO_SLEEP_SCALE=0` skips the pauses.

mod common;

use std::sync::Arc;

use common::Demo;
use graceful::Shutdown;
use graceful::serve::{self as server, ConnectionLimits, Protocol};
use stockorder::adapter::{grpc, http};

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let demo = Arc::new(Demo::from_env()?);
    let (store, service) = demo.open_store().await?;
    let http_listener = demo.bind_http().await?;
    let grpc_listener = demo.bind_grpc().await?;

    let mut shutdown = Shutdown::new()
        .deadline(demo.args.shutdown_timeout)
        .drain_delay(demo.args.shutdown_drain_delay)
        .catch_signals()?;
    let readiness = shutdown.readiness();
    let servers = shutdown.phase("stop servers");
    let dependencies = shutdown.phase("close dependencies");

    // The servers: started now, stopped when their phase comes.
    let router = http::router(Arc::clone(&service), readiness.clone());
    let (r, d) = (readiness.clone(), Arc::clone(&demo));
    shutdown.spawn(servers, "http server", move |stop| async move {
        server::serve(
            http_listener,
            router,
            Protocol::Http,
            ConnectionLimits::default(),
            r,
            stop.stopped(),
        )
        .await;
        d.pause(1.0).await;
    });
    let grpc::GrpcServices { routes, health } = grpc::services(service)?;
    health.set(true).await;
    let (r, d) = (readiness.clone(), Arc::clone(&demo));
    shutdown.spawn(servers, "grpc server", move |stop| async move {
        let unready = async {
            r.draining().await;
            health.set(false).await; // gRPC health follows /ready
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = server::serve(grpc_listener, routes.prepare(), Protocol::Grpc, ConnectionLimits::default(), r.clone(), stop.stopped()) => {}
            () = unready => {}
        }
        d.pause(1.0).await;
    });

    // Every other dependency: a name, a phase, a stop function. The same for all of them.
    let d = Arc::clone(&demo);
    shutdown.on_stop(dependencies, "cache", move || async move {
        d.pause(1.0).await; // flush dirty entries
    });
    let d = Arc::clone(&demo);
    shutdown.on_stop(dependencies, "message broker", move || async move {
        d.pause(1.0).await; // ack what was processed, close the channel
    });
    let d = Arc::clone(&demo);
    shutdown.on_stop(dependencies, "database", move || async move {
        d.pause(1.0).await;
        store.close().await // commit queued writes, checkpoint the WAL
    });

    let report = shutdown.run().await;
    report.log();
    println!("{report}");
    Ok(std::process::ExitCode::from(report.exit_code()))
}
