//! Serving HTTP and gRPC (feature `hyper`) on a listener with the shutdown behaviour that makes
//! "zero dropped requests" true, which stock `axum::serve(..).with_graceful_shutdown` and
//! tonic's `serve_with_shutdown` do not give:
//!
//! - **Every connection is a task this server owns** (a `JoinSet`): when the shutdown coordinator
//!   aborts the server at its deadline, every connection is aborted with it. tonic spawns its
//!   connections detached, so its own server cannot be bounded that way.
//! - **No request is cut between two keep-alive requests** (the idle close race). From the moment
//!   the instance is draining, every HTTP/1 response carries `Connection: close`, so clients open
//!   their next request elsewhere instead of racing a close. At stop, connections that are idle
//!   get [`IDLE_GRACE`] to deliver a request already on its way before they are closed.
//! - **Nothing in the listen backlog is reset**: before the listening socket closes, connections
//!   the kernel has already accepted are taken and served (their first request is answered with
//!   `Connection: close`), so a client that got through the handshake gets an answer. Later
//!   connections are refused, which clients can retry safely.
//! - HTTP/2 and gRPC connections get GOAWAY, and every stream already accepted is finished. A
//!   gRPC connection that has not carried a request yet gets [`IDLE_GRACE`] to send its first
//!   before the GOAWAY, so a client that just connected is answered rather than cut.

mod close;
mod first;
mod linger;

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use crate::{Phase, Readiness, Shutdown};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use close::CloseWhenDraining;
use first::{FirstRequest, MarkFirst};

/// How long an HTTP/1 connection that is idle when the server stops may still deliver a request
/// already on its way (it is answered with `Connection: close`). A busy connection does not
/// wait for this: it closes right after its next answer, so under load the servers stop within
/// milliseconds. Only a connection that stays idle waits the whole grace.
///
/// Why 1 s: closing a kept connection at the moment its client sends on it resets that request,
/// and the client's "moment" stretches when it is short of CPU. Measured on 2 cores with both
/// busy: a 50 ms grace reset 1–3 requests in about one shutdown in eight; 1 s and 2 s reset none.
pub const IDLE_GRACE: Duration = Duration::from_secs(1);

/// What a connection may cost before it has sent a request: slow-client protection.
///
/// Why at the connection: a client that opens a connection and then sends nothing, or one byte
/// a second, never reaches the request middleware; without these bounds 1000 such clients hold
/// 1000 sockets and buffers for as long as they like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest wait for a new connection's first byte, and for an HTTP/1 request's complete
    /// headers; then the connection is closed.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes: beyond it HTTP/1 answers 431
    /// and HTTP/2 resets the stream.
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    /// 10 s and 16 KiB: a slow or oversized client is cut off well before it costs much.
    /// hyper's own defaults are 30 s and ~400 KiB.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// hyper's smallest allowed HTTP/1 read buffer.
const MIN_HTTP1_BUFFER: usize = 8 * 1024;

/// Which protocols a port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, and HTTP/2 with prior knowledge: the REST port.
    Http,
    /// HTTP/2 only: the gRPC port.
    Grpc,
}

/// Serves `service` on `listener` until `stop` resolves, then stops accepting (after taking the
/// backlog), lets every accepted request finish, and returns when the last connection has
/// closed. HTTP/1 answers carry `Connection: close` while `readiness` is draining, and in any
/// case once `stop` has resolved. `limits`
/// bound what a connection may cost before it sends a request. Dropping the returned future
/// aborts every connection.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    protocol: Protocol,
    limits: ConnectionLimits,
    readiness: Readiness,
    stop: impl Future<Output = ()>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service = CloseWhenDraining::or_when(service, readiness, std::sync::Arc::clone(&stopped));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    let accept = |stream: TcpStream, connections: &mut JoinSet<()>| {
        connections.spawn(connection(stream, service.clone(), protocol, limits, drain_rx.clone()));
    };
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            // Reap finished connections so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => accept(stream, &mut connections),
                Err(e) => {
                    // Out of file descriptors and the like: keep serving what is open, retry
                    // shortly rather than spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }

    // From now on every HTTP/1 answer says `Connection: close`, readiness or not.
    stopped.store(true, std::sync::atomic::Ordering::Relaxed);

    // Take whatever completed its handshake before the socket closes; closing would reset it.
    // Asked of the kernel directly (a non-blocking accept until it would block): tokio's
    // readiness for the socket can lag behind connections that arrived since the reactor last
    // looked, and those would be reset.
    let mut taken = 0;
    match listener.into_std() {
        Ok(listener) => {
            while let Ok((stream, _)) = listener.accept() {
                match stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) {
                    Ok(stream) => {
                        accept(stream, &mut connections);
                        taken += 1;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot serve a connection taken from the backlog"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot take the listen backlog"),
    }
    tracing::info!(
        event = "listener.closed",
        ?protocol,
        open = connections.len(),
        from_backlog = taken,
        "stopped accepting; finishing requests in flight"
    );
    drain_tx.send_replace(true);
    while connections.join_next().await.is_some() {}
}

async fn connection<S, B>(
    stream: TcpStream,
    service: S,
    protocol: Protocol,
    limits: ConnectionLimits,
    drain: watch::Receiver<bool>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = stream.set_nodelay(true);
    if !first_byte(&stream, limits.header_read_timeout, drain.clone()).await {
        return;
    }
    // The socket's descriptor, to take a second handle on at drain (see `linger`). Valid for as
    // long as `drive` holds the connection, which owns the stream.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let io = TokioIo::new(stream);
    let header_list = u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX);
    match protocol {
        Protocol::Http => {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(MIN_HTTP1_BUFFER));
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(header_list);
            let service = TowerToHyperService::new(service);
            drive(builder.serve_connection(io, service), fd, drain, || {
                tokio::time::sleep(IDLE_GRACE)
            })
            .await
        }
        Protocol::Grpc => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new()).max_header_list_size(header_list);
            // A connection that has carried a request needs no grace: GOAWAY tells the client
            // which streams were taken, and those are finished. One that has not may be about
            // to send its first (see `first`).
            let first = FirstRequest::default();
            let service = TowerToHyperService::new(MarkFirst {
                inner: service,
                first: first.clone(),
            });
            drive(builder.serve_connection(io, service), fd, drain, || async move {
                first.within(IDLE_GRACE).await;
            })
            .await
        }
    }
}

/// Waits for a new connection's first byte: false when it does not come within `timeout`, or
/// within [`IDLE_GRACE`] once the server is draining, or the client closes first. Until a byte
/// arrives hyper has no timer running (it is still finding out which protocol to speak).
async fn first_byte(stream: &TcpStream, timeout: Duration, mut drain: watch::Receiver<bool>) -> bool {
    let mut byte = [0u8; 1];
    let arrived = async { matches!(stream.peek(&mut byte).await, Ok(n) if n > 0) };
    tokio::pin!(arrived);
    tokio::select! {
        arrived = &mut arrived => return arrived,
        () = tokio::time::sleep(timeout) => return false,
        _ = drain.wait_for(|draining| *draining) => {}
    }
    tokio::time::timeout(IDLE_GRACE.min(timeout), arrived)
        .await
        .unwrap_or(false)
}

/// Runs one connection (whose socket is `fd`); once draining, gives it the `grace` future
/// (started then) to finish on its own (HTTP/1 answers carry `Connection: close` by then), then
/// asks it to shut down gracefully, waits, and closes the socket lingering (see `linger`).
async fn drive<C, G>(conn: C, fd: std::os::fd::RawFd, mut drain: watch::Receiver<bool>, grace: impl FnOnce() -> G)
where
    C: GracefulConnection,
    G: Future<Output = ()>,
{
    tokio::pin!(conn);
    tokio::select! {
        // Ended before the drain: the client closed, nothing to linger for.
        _ = conn.as_mut() => return,
        _ = drain.wait_for(|draining| *draining) => {}
    }
    // A second handle on the socket, taken while `conn` still owns it, so the socket outlives
    // hyper's close. Only from the drain on: until then a connection holds one descriptor.
    // SAFETY: `fd` is the socket of the stream `conn` owns, and `conn` is alive here.
    let linger = unsafe { linger::Linger::new(fd) };
    let ended = tokio::select! {
        _ = conn.as_mut() => true,
        () = grace() => false,
    };
    if !ended {
        conn.as_mut().graceful_shutdown();
        let _ = conn.as_mut().await;
    }
    if let Some(linger) = linger {
        linger.close().await;
    }
}

impl Shutdown {
    /// Serves `service` on `listener` as a component of `phase`: [`serve`] with this
    /// coordinator's readiness and the component's stop signal. At `phase` it stops accepting
    /// (taking the backlog), finishes every accepted request, closes idle keep-alive
    /// connections after [`IDLE_GRACE`] and sends HTTP/2 GOAWAY; at the phase's deadline every
    /// connection still open is aborted with it.
    ///
    /// # Panics
    /// If `phase` belongs to another coordinator.
    pub fn serve<S, B>(
        &mut self,
        phase: Phase,
        name: impl Into<String>,
        listener: TcpListener,
        service: S,
        protocol: Protocol,
        limits: ConnectionLimits,
    ) where
        S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let readiness = self.readiness();
        self.spawn(phase, name, move |stop| {
            serve(listener, service, protocol, limits, readiness, stop.into_future())
        });
    }

    /// Serves a stock `axum::Router` on `listener` with every connection owned and drained
    /// (see [`Shutdown::serve`]): the one call that replaces `axum::serve(..)
    /// .with_graceful_shutdown(..)`, which loses keep-alive requests at every shutdown.
    ///
    /// # Panics
    /// If `phase` belongs to another coordinator.
    #[cfg(feature = "axum")]
    pub fn serve_axum(&mut self, phase: Phase, name: impl Into<String>, listener: TcpListener, router: axum::Router) {
        self.serve(
            phase,
            name,
            listener,
            router,
            Protocol::Http,
            ConnectionLimits::default(),
        );
    }

    /// Serves tonic services on `listener` (HTTP/2 only) with every connection owned and
    /// drained (see [`Shutdown::serve`]): GOAWAY at the phase, every accepted call finished, and
    /// the connections aborted at the phase's deadline, which tonic's `serve_with_shutdown`
    /// cannot do (its connections are detached).
    ///
    /// # Panics
    /// If `phase` belongs to another coordinator.
    #[cfg(feature = "tonic")]
    pub fn serve_tonic(
        &mut self,
        phase: Phase,
        name: impl Into<String>,
        listener: TcpListener,
        routes: tonic::service::Routes,
    ) {
        self.serve(
            phase,
            name,
            listener,
            routes.prepare(),
            Protocol::Grpc,
            ConnectionLimits::default(),
        );
    }
}
