//! A stock axum `Router`, upgraded in place on SIGHUP without a refused or broken request.
//!
//! ```text
//! PORT=3000 DELAY_MS=20 cargo run -p phased-shutdown --features axum,upgrade --example upgrade
//! curl -d hello localhost:3000/echo      # answers "hello" after DELAY_MS
//! kill -HUP <pid>                        # a new process of the same binary takes over
//! kill -TERM <pid of the new one>        # drains and exits 0
//! ```
//!
//! On SIGHUP the process starts its own binary again with its listening socket (as fd 3, the
//! way systemd passes sockets), waits until the new process says it is ready, then shuts itself
//! down gracefully while the new one accepts from the same socket: the socket never closes, so
//! no connection is refused, and the old process finishes every request it accepted. If the new
//! process fails to start, the old one keeps serving. Each process prints `listening on ADDR
//! (pid PID)` once it serves, and its shutdown report on stderr when it exits.

use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use phased_shutdown::Shutdown;
use phased_shutdown::upgrade::{self, Upgrade};

fn main() -> std::io::Result<ExitCode> {
    // SAFETY: first thing in `main`, before the runtime starts any thread.
    unsafe { upgrade::adopt_env() };
    tokio::runtime::Runtime::new()?.block_on(serve())
}

async fn serve() -> std::io::Result<ExitCode> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000);
    let delay = Duration::from_millis(
        std::env::var("DELAY_MS")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(20),
    );

    let mut shutdown = Shutdown::new().deadline(Duration::from_secs(10)).catch_signals()?;
    let servers = shutdown.phase("stop servers");

    let router = Router::new().route(
        "/echo",
        post(move |body: Bytes| async move {
            tokio::time::sleep(delay).await;
            body
        }),
    );
    // The socket the previous process passed on, or a new one the first time.
    let inherited = upgrade::inherited_listeners()
        .map_err(std::io::Error::other)?
        .take("http", 0);
    let listener = match inherited {
        Some(listener) => tokio::net::TcpListener::from_std(listener)?,
        None => tokio::net::TcpListener::bind(("127.0.0.1", port)).await?,
    };
    shutdown.upgrade_on_sighup(Upgrade::new().listener("http", &listener)?)?;
    println!("listening on {} (pid {})", listener.local_addr()?, std::process::id());
    shutdown.serve_axum(servers, "http", listener, router);
    // Serving: the previous process, if there is one, may stop now.
    upgrade::ready();

    let report = shutdown.run().await;
    eprintln!("{report}");
    Ok(ExitCode::from(report.exit_code()))
}
