//! Long-lived connections ended cleanly at shutdown: a stock axum `Router` with a WebSocket and
//! an SSE stream, and a tonic server whose health `Watch` streams, served so that a SIGTERM ends
//! each the way its protocol defines. No handler knows about the shutdown.
//!
//! ```text
//! PORT=3000 GRPC_PORT=50051 cargo run -p phased-shutdown --features axum,tonic --example streams
//! curl -N localhost:3000/sse               # an event every 100 ms, forever
//! websocat ws://localhost:3000/ws           # echoes text messages
//! grpcurl -plaintext -d '{}' localhost:50051 grpc.health.v1.Health/Watch
//! kill -TERM <pid>                          # or Ctrl+C: the report on stderr, exit code from it
//! ```
//!
//! At the signal, readiness turns off and the health `Watch` sends NOT_SERVING (phase "unready"
//! makes sure it is sent before the servers stop). Then, spread over half a second:
//! - the SSE stream ends after its event in progress with `retry: 1000` (curl exits 0);
//! - the WebSocket gets a Close frame 1001 ("going away"), and the server waits up to 2 s after
//!   the notice for the client's Close;
//! - the `Watch` ends with `grpc-status: 14` (UNAVAILABLE), which gRPC clients retry.
//!
//! The stand-in "database" closes last, after every handler has let its connection go. The
//! report counts each server's connections and the streams it ended; the exit code is 0.
//!
//! `DRAIN_MS` sets a drain delay (readiness off, still serving); `DEADLINE_MS` the global
//! deadline (10 s). `SERVE=stock` serves the same router and health service the stock way,
//! `axum::serve(..).with_graceful_shutdown(..)` and tonic's `serve_with_incoming_shutdown`, to
//! see the difference: the WebSocket gets no Close, and the SSE stream and the `Watch` hold the
//! process until the deadline, when it gives up with exit code 1.

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use phased_shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt, wrappers::IntervalStream};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The whole server: the health of "" is what a `Watch` on the empty service name follows.
const SERVER: &str = "";

fn router() -> Router {
    Router::new()
        .route("/ws", get(|ws: WebSocketUpgrade| async { ws.on_upgrade(echo) }))
        .route("/sse", get(ticks))
        .route("/echo", post(|body: Bytes| async move { body }))
}

/// Echoes text messages until the client closes.
async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if let Message::Text(text) = message
            && socket.send(Message::Text(text)).await.is_err()
        {
            break;
        }
    }
}

/// An event every 100 ms, forever.
async fn ticks() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut n = 0u64;
    let events = IntervalStream::new(tokio::time::interval(Duration::from_millis(100))).map(move |_| {
        n += 1;
        Ok(Event::default().id(n.to_string()).data(format!("tick {n}")))
    });
    Sse::new(events)
}

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

fn env_port(name: &str, default: u16) -> u16 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> std::io::Result<ExitCode> {
    let deadline = env_ms("DEADLINE_MS", 10_000);
    let stock = std::env::var("SERVE").is_ok_and(|s| s == "stock");
    // Installed first, so a signal during start-up is not lost (or fatal).
    let shutdown = if stock {
        None
    } else {
        Some(
            Shutdown::new()
                .deadline(deadline)
                .drain_delay(env_ms("DRAIN_MS", 0))
                .catch_signals()?,
        )
    };

    let http = TcpListener::bind(("127.0.0.1", env_port("PORT", 3000))).await?;
    let grpc = TcpListener::bind(("127.0.0.1", env_port("GRPC_PORT", 50051))).await?;
    println!("listening on {} and {}", http.local_addr()?, grpc.local_addr()?);
    let (reporter, health) = tonic_health::server::health_reporter();
    let grpc_routes = tonic::service::Routes::new(health);

    let Some(mut shutdown) = shutdown else {
        return serve_stock(http, grpc, router(), grpc_routes, reporter, deadline).await;
    };
    let unready = shutdown.phase("unready");
    let servers = shutdown.phase("stop servers");
    let resources = shutdown.phase("close resources");

    // Health follows readiness: NOT_SERVING from the moment the shutdown starts. The phase
    // "unready" waits for it, so every Watch has it queued before the servers end the streams.
    let readiness = shutdown.readiness();
    shutdown.spawn_oneshot(unready, "grpc health", move |_| async move {
        readiness.draining().await;
        reporter.set_service_status(SERVER, ServingStatus::NotServing).await;
    });
    shutdown.serve_axum(servers, "http", http, router());
    if std::env::var("SERVE").is_ok_and(|s| s == "builder") {
        // Through a configured tonic `Server` (its settings kept): the streams end the same.
        let server = tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
        shutdown.serve_tonic_server(servers, "grpc", grpc, server, grpc_routes);
    } else {
        shutdown.serve_tonic(servers, "grpc", grpc, grpc_routes);
    }
    // A stand-in for what the handlers use: it closes only after every one has finished.
    shutdown.on_stop(resources, "database", || async {});

    let report = shutdown.run().await;
    eprintln!("{report}");
    Ok(ExitCode::from(report.exit_code()))
}

/// The pitfall, for comparison: each server's own graceful shutdown on SIGTERM or Ctrl+C,
/// given up at `deadline` after the signal.
async fn serve_stock(
    http: TcpListener,
    grpc: TcpListener,
    router: Router,
    grpc_routes: tonic::service::Routes,
    reporter: HealthReporter,
    deadline: Duration,
) -> std::io::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let (signalled, stop) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let http = tokio::spawn(
        axum::serve(http, router)
            .with_graceful_shutdown(stopped())
            .into_future(),
    );
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(grpc_routes)
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(grpc), stopped()),
    );
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    reporter.set_service_status(SERVER, ServingStatus::NotServing).await;
    signalled.send_replace(true);
    match tokio::time::timeout(deadline, async { tokio::join!(http, grpc) }).await {
        Ok(_) => {
            eprintln!("stock servers stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(_) => {
            eprintln!(
                "stock servers still serving {} ms after the signal: giving up",
                deadline.as_millis()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
