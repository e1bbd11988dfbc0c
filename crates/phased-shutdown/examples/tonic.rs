//! A stock tonic service, served with one call so that a shutdown drops no call.
//!
//! ```text
//! GRPC_PORT=50051 DELAY_MS=20 cargo run -p phased-shutdown --features tonic --example tonic
//! # a unary call /echo.Echo/Echo answers its message after DELAY_MS
//! kill -TERM <pid>                       # or Ctrl+C: the report on stderr, exit code from it
//! ```
//!
//! The pitfall this replaces: tonic's `Server::builder()..serve_with_shutdown(addr, signal)`
//! closes its listening socket the moment the signal comes, which resets every connection the
//! kernel had already accepted into the listen backlog: a client that connected and sent its
//! call gets a reset instead of an answer. Its connections are detached tasks, so nothing bounds
//! them by a deadline either. `Shutdown::serve_tonic` serves the backlog before the socket
//! closes, sends GOAWAY, finishes every call it accepted, and aborts what is left at the
//! phase's deadline.
//!
//! The service is written out as `tonic-build` would generate it from
//!
//! ```proto
//! package echo;
//! message EchoMessage { bytes body = 1; }
//! service Echo { rpc Echo(EchoMessage) returns (EchoMessage); }
//! ```
//!
//! so that the example needs neither a build script nor protoc.
//!
//! `SERVE=builder` serves it through a configured `tonic::transport::Server` instead
//! (`Shutdown::serve_tonic_server`), whose timeout and concurrency limit then apply.
//!
//! `SERVE=stock` serves the same service the stock way, with tonic's
//! `serve_with_incoming_shutdown`, to see the difference (`tests/it/drain.rs` uses it as the
//! control that shows the test can fail).

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use phased_shutdown::Shutdown;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::NamedService;

/// The request and the answer: the body comes back as it was sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    /// Whatever the client sent.
    #[prost(bytes = "vec", tag = "1")]
    pub body: Vec<u8>,
}

/// The `echo.Echo` service: what tonic-build generates for it, reduced to its one method.
#[derive(Clone)]
struct EchoServer {
    delay: Duration,
}

impl NamedService for EchoServer {
    const NAME: &'static str = "echo.Echo";
}

impl<B> Service<http::Request<B>> for EchoServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let delay = self.delay;
        Box::pin(async move {
            if request.uri().path() != "/echo.Echo/Echo" {
                return Ok(tonic::Status::unimplemented("only /echo.Echo/Echo is served").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<EchoMessage, EchoMessage>::default());
            Ok(grpc.unary(Echo { delay }, request).await)
        })
    }
}

/// The handler: waits `delay`, then answers with the request's message.
struct Echo {
    delay: Duration,
}

impl tonic::server::UnaryService<EchoMessage> for Echo {
    type Response = EchoMessage;
    type Future = BoxFuture<tonic::Response<EchoMessage>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<EchoMessage>) -> Self::Future {
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(tonic::Response::new(request.into_inner()))
        })
    }
}

#[tokio::main]
async fn main() -> std::io::Result<ExitCode> {
    let port: u16 = std::env::var("GRPC_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(50051);
    let delay = Duration::from_millis(
        std::env::var("DELAY_MS")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(20),
    );

    if std::env::var("SERVE").is_ok_and(|s| s == "stock") {
        return serve_stock(port, delay).await;
    }

    // Installed first, so a signal during start-up is not lost (or fatal).
    let mut shutdown = Shutdown::new().deadline(Duration::from_secs(10)).catch_signals()?;
    let servers = shutdown.phase("stop servers");

    let routes = tonic::service::Routes::new(EchoServer { delay });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    if std::env::var("SERVE").is_ok_and(|s| s == "builder") {
        // A tonic `Server` configured as for tonic's own `serve`: its settings are kept.
        let server = tonic::transport::Server::builder()
            .timeout(Duration::from_secs(5))
            .concurrency_limit_per_connection(256);
        shutdown.serve_tonic_server(servers, "grpc", listener, server, routes);
    } else {
        shutdown.serve_tonic(servers, "grpc", listener, routes);
    }

    let report = shutdown.run().await;
    eprintln!("{report}");
    Ok(ExitCode::from(report.exit_code()))
}

/// The pitfall, for comparison: tonic's own graceful shutdown on SIGTERM or Ctrl+C. It closes
/// the listening socket first (resetting connections waiting in its backlog), then sends GOAWAY
/// and waits for its connections with no bound.
async fn serve_stock(port: u16, delay: Duration) -> std::io::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    let stopped = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let served = tonic::transport::Server::builder()
        .add_routes(tonic::service::Routes::new(EchoServer { delay }))
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stopped)
        .await;
    match served {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("serve failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
