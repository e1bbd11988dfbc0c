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
//! - **Long-lived connections end the way their protocol defines** ([`StreamEnds`]): an SSE
//!   body ends after its event in progress with a `retry:` hint, a gRPC stream with
//!   `grpc-status: 14` (UNAVAILABLE), a WebSocket gets a Close frame (1001) and a bounded wait
//!   for the client's. The closes are spread over a jitter window; one that does not end is cut
//!   at its bound and named, so it never holds the later phases up. HTTP/1 upgrades stay
//!   connections the server owns: it waits for their handlers to let them go.

mod close;
mod connection;
mod io;
mod linger;
mod listener;
mod streams;
#[cfg(feature = "tonic")]
mod tonic_server;
mod websocket;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use crate::{DrainSwitch, Failure, Phase, Readiness, Shutdown};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use listener::{Listener, Peer, Stream};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use close::CloseWhenDraining;
use connection::PerConnection;
use io::{ConnState, ServedIo};
pub use linger::LINGER;
use streams::Notice;
pub use streams::{Draining, ServedBody, StreamEnds};
/// The rustls this crate's TLS is built on, for the `ServerConfig` given to [`Server::tls`].
#[cfg(feature = "rustls")]
pub use tokio_rustls::rustls;
#[cfg(feature = "tonic")]
pub use tonic_server::FollowedRoutes;

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
#[non_exhaustive]
pub struct ConnectionLimits {
    /// Longest wait for a new connection's first byte; then the connection is closed. An
    /// HTTP/1 connection that then neither starts a request nor is being answered (idle, or
    /// trickling its request head) is closed between one and two of these after its last
    /// request.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes: beyond it HTTP/1 answers 431
    /// and HTTP/2 resets the stream.
    pub max_header_bytes: usize,
    /// What a connection that is idle when the server stops gets to deliver a request already
    /// on its way before it is closed ([`IDLE_GRACE`] by default).
    pub idle_grace: Duration,
    /// After the server closes a connection, how long its client gets to close its side while
    /// what it still sends is read and discarded, so the close is not a reset ([`LINGER`] by
    /// default).
    pub linger: Duration,
    /// Connections served at once; past it, new ones wait in the listen backlog until one
    /// closes (and are taken at the stop like any other). `None` (the default): no limit.
    pub max_connections: Option<usize>,
    /// Requests one HTTP/2 connection may have in flight (its `SETTINGS_MAX_CONCURRENT_STREAMS`);
    /// `None`: hyper's default (200).
    pub http2_max_concurrent_streams: Option<u32>,
    /// How often an HTTP/2 connection is PINGed to see that its client is still there, and how
    /// long the PONG may take before the connection is closed. `None` (the default): no PINGs.
    pub http2_keep_alive: Option<(Duration, Duration)>,
}

impl Default for ConnectionLimits {
    /// 10 s and 16 KiB: a slow or oversized client is cut off well before it costs much.
    /// hyper's own defaults are 30 s and ~400 KiB.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            idle_grace: IDLE_GRACE,
            linger: LINGER,
            max_connections: None,
            http2_max_concurrent_streams: None,
            http2_keep_alive: None,
        }
    }
}

impl ConnectionLimits {
    /// The same limits with another [`ConnectionLimits::header_read_timeout`].
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// The same limits with another [`ConnectionLimits::max_header_bytes`].
    #[must_use]
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// The same limits with another [`ConnectionLimits::idle_grace`]. Shorter makes an idle
    /// server stop sooner and risks resetting a request that was on its way (see
    /// [`IDLE_GRACE`] for what was measured).
    #[must_use]
    pub fn idle_grace(mut self, grace: Duration) -> Self {
        self.idle_grace = grace;
        self
    }

    /// The same limits with another [`ConnectionLimits::linger`].
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The same limits with at most `max` connections served at once
    /// ([`ConnectionLimits::max_connections`]).
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max.max(1));
        self
    }

    /// The same limits with at most `max` requests in flight on one HTTP/2 connection.
    #[must_use]
    pub fn http2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.http2_max_concurrent_streams = Some(max);
        self
    }

    /// The same limits with HTTP/2 keep-alive PINGs every `interval`, the connection closed
    /// when one is not answered within `timeout`.
    #[must_use]
    pub fn http2_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.http2_keep_alive = Some((interval, timeout));
        self
    }

    /// Applies the HTTP/2 settings to a connection's builder.
    fn http2<E>(&self, builder: &mut hyper::server::conn::http2::Builder<E>) {
        if let Some(max) = self.http2_max_concurrent_streams {
            builder.max_concurrent_streams(max);
        }
        if let Some((interval, timeout)) = self.http2_keep_alive {
            builder.keep_alive_interval(interval).keep_alive_timeout(timeout);
        }
    }
}

/// hyper's smallest allowed HTTP/1 read buffer.
const MIN_HTTP1_BUFFER: usize = 8 * 1024;

/// Which protocols a port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP/1.1 (with upgrades, such as WebSocket), and HTTP/2 with prior knowledge: the REST
    /// port.
    Http,
    /// HTTP/2 only: the gRPC port.
    Grpc,
}

/// What a server did while it stopped, for its line in the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Served {
    /// Connections accepted, from the first to the last (the backlog's included).
    pub connections: u64,
    /// Long-lived connections (SSE, gRPC streams, upgraded connections) that ended on the
    /// notice, within their bound: a clean stop.
    pub streams_ended: u64,
    /// Long-lived connections still open at their bound, and so cut.
    pub streams_cut: u64,
    /// Each stream cut, as `METHOD path (protocol) from peer`.
    pub cut: Vec<String>,
}

impl Served {
    /// Records the counts on the component's report entry (connections, streams ended, streams
    /// cut), then [`Served::into_result`]: what a server run as a component returns.
    pub fn report_to(self, stop: &crate::StopSignal) -> Result<(), Failure> {
        stop.record("connections", self.connections);
        stop.record("streams ended", self.streams_ended);
        stop.record("streams cut", self.streams_cut);
        self.into_result()
    }

    /// `Ok` when no stream had to be cut; otherwise a failure that names them, for the report.
    pub fn into_result(self) -> Result<(), Failure> {
        if self.streams_cut == 0 {
            return Ok(());
        }
        // Thousands of names would bury the report: the first few, and how many more.
        const NAMED: usize = 10;
        let mut names = self.cut.iter().take(NAMED).cloned().collect::<Vec<_>>().join(", ");
        if self.cut.len() > NAMED {
            names.push_str(&format!(" and {} more", self.cut.len() - NAMED));
        }
        Err(Failure::from(format!(
            "{} stream(s) cut at the bound: {names}",
            self.streams_cut
        )))
    }
}

/// A server for one listener: the service it serves, the protocols it speaks, and how it
/// stops. [`Server::run`] serves until its stop future resolves, then stops as the module
/// describes. [`Shutdown::serve`] runs one as a component of a phase.
///
/// ```no_run
/// # #[cfg(feature = "axum")]
/// # async fn example(listener: tokio::net::TcpListener, router: axum::Router, readiness: phased_shutdown::Readiness) {
/// use phased_shutdown::serve::{Server, StreamEnds};
/// use std::time::Duration;
///
/// let served = Server::new(listener, router)
///     .readiness(readiness)
///     .streams(StreamEnds::default().jitter(Duration::from_millis(200)))
///     .run(async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await;
/// println!("{} connections, {} streams cut", served.connections, served.streams_cut);
/// # }
/// ```
pub struct Server<S> {
    listener: Listener,
    service: S,
    protocol: Protocol,
    limits: ConnectionLimits,
    streams: StreamEnds,
    readiness: Option<Readiness>,
    draining: Draining,
    /// Give each request axum's `ConnectInfo<SocketAddr>` (see [`Server::connect_info`]).
    connect_info: bool,
    /// TLS on every connection (see [`Server::tls`]).
    #[cfg(feature = "rustls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// What each connection of a server is told besides its socket.
#[derive(Clone)]
struct PerServer {
    connect_info: bool,
    #[cfg(feature = "rustls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl<S> Server<S> {
    /// Serves `service` on `listener`: HTTP/1.1 and HTTP/2, default [`ConnectionLimits`] and
    /// [`StreamEnds`], answers marked `Connection: close` once it stops accepting.
    pub fn new(listener: TcpListener, service: S) -> Self {
        Self::on(Listener::Tcp(listener), service)
    }

    /// [`Server::new`] on a Unix domain socket: the same protocols, and the same drain (the
    /// backlog taken, `Connection: close`, the idle grace, the lingering close, the cut at the
    /// bound). A client has no address there: [`Server::connect_info`] puts none in.
    pub fn unix(listener: tokio::net::UnixListener, service: S) -> Self {
        Self::on(Listener::Unix(listener), service)
    }

    fn on(listener: Listener, service: S) -> Self {
        Self {
            listener,
            service,
            protocol: Protocol::Http,
            limits: ConnectionLimits::default(),
            streams: StreamEnds::default(),
            readiness: None,
            draining: Draining::new(),
            connect_info: false,
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }

    /// Puts axum's `ConnectInfo<SocketAddr>` (the client's address) in every request's
    /// extensions, as `axum::serve` does for a router made with
    /// `into_make_service_with_connect_info::<SocketAddr>()`, so `ConnectInfo` extractors work.
    /// Off by default: it costs an extension per request. [`Shutdown::serve_axum`] turns it on.
    #[cfg(feature = "axum")]
    #[must_use]
    pub fn connect_info(mut self) -> Self {
        self.connect_info = true;
        self
    }

    /// Serves TLS on every connection, with `config` (rustls: build it with the crypto
    /// provider of your choice). Each connection speaks what its handshake agreed through ALPN:
    /// list `h2` (and `http/1.1`) in `config.alpn_protocols` for HTTP/2, which gRPC needs. The
    /// handshake must finish within the header read timeout ([`ConnectionLimits`]). The drain
    /// is the same as without TLS; the lingering close and the cut act on the socket under it.
    #[cfg(feature = "rustls")]
    #[must_use]
    pub fn tls(mut self, config: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// Gives `draining` the notice when this server starts ending its streams: how a handler of
    /// a protocol the server cannot end by itself learns it should end.
    pub fn draining(mut self, draining: Draining) -> Self {
        self.draining = draining;
        self
    }

    /// The protocols the port speaks ([`Protocol::Http`] by default).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// What a connection may cost before it sends a request.
    pub fn limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How long-lived connections are ended.
    pub fn streams(mut self, streams: StreamEnds) -> Self {
        self.streams = streams;
        self
    }

    /// HTTP/1 answers carry `Connection: close` from the moment `readiness` is draining (the
    /// start of the drain delay), not only once the server stops accepting. [`Shutdown::serve`]
    /// sets the coordinator's.
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// Serves until `stop` resolves, then stops accepting (after taking the backlog), gives
    /// long-lived connections the notice, lets every accepted request finish and every stream
    /// end or be cut at its bound. Returns when the last connection has closed, and with it
    /// every upgraded connection's handler has let its socket go (or been cut). Dropping the
    /// future aborts every connection and cuts every upgraded one.
    pub async fn run<B>(self, stop: impl Future<Output = ()>) -> Served
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Self {
            listener,
            service,
            protocol,
            limits,
            streams,
            readiness,
            draining,
            connect_info,
            #[cfg(feature = "rustls")]
            tls,
        } = self;
        let per_server = PerServer {
            connect_info,
            #[cfg(feature = "rustls")]
            tls,
        };
        let readiness = readiness.unwrap_or_else(|| DrainSwitch::new().readiness());
        let notice = Notice::new(streams, draining, readiness);
        let mut connections = JoinSet::new();
        let mut accepted: u64 = 0;
        tokio::pin!(stop);
        // `move`: the closure owns the service, so the future holds no `&S` across an await and
        // needs `S: Send` only (a `BoxCloneService`, which is not `Sync`, serves too).
        let for_connections = notice.clone();
        let accept = move |stream: Stream, peer: Peer, connections: &mut JoinSet<()>| {
            connections.spawn(connection(
                stream,
                peer,
                per_server.clone(),
                service.clone(),
                protocol,
                limits,
                for_connections.clone(),
            ));
        };
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                // Reap finished connections so the set holds only live ones.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                // At the limit, new connections wait in the backlog until one closes.
                next = listener.accept(), if limits.max_connections.is_none_or(|max| connections.len() < max) => match next {
                    Ok((stream, peer)) => {
                        accepted += 1;
                        accept(stream, peer, &mut connections);
                    }
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
        notice.stop_accepting();

        let taken = listener.take_backlog(|stream, peer| accept(stream, peer, &mut connections));
        accepted += taken;
        tracing::info!(
            event = "listener.closed",
            ?protocol,
            open = connections.len(),
            from_backlog = taken,
            "stopped accepting; finishing requests in flight"
        );
        notice.give();
        while connections.join_next().await.is_some() {}
        let tally = notice.tally();
        Served {
            connections: accepted,
            streams_ended: tally.ended.load(Ordering::Relaxed),
            streams_cut: tally.cut.load(Ordering::Relaxed),
            cut: tally.cut_names.lock().map(|n| n.clone()).unwrap_or_default(),
        }
    }
}

async fn connection<S, B>(
    stream: Stream,
    peer: Peer,
    per_server: PerServer,
    service: S,
    protocol: Protocol,
    limits: ConnectionLimits,
    notice: Notice,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    stream.set_nodelay();
    let Opening::Bytes { h2 } = first_byte(&stream, &limits, &notice).await else {
        return;
    };
    #[cfg(feature = "rustls")]
    let Some((stream, h2)) = handshake(stream, h2, per_server.tls.as_ref(), &limits).await else {
        return;
    };
    // The socket's descriptor, to take a second handle on at drain (see `linger`) or at an
    // upgrade. Valid for as long as the `ServedIo` owning the stream lives.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let conn = ConnState::new(peer, fd, notice.clone());
    conn.h2.store(h2, Ordering::Relaxed);
    let io = TokioIo::new(ServedIo::new(stream, Arc::clone(&conn)));
    let service = PerConnection {
        inner: service,
        conn: Arc::clone(&conn),
        connect_info: per_server.connect_info,
    };
    let header_list = u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX);
    match protocol {
        Protocol::Http => {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                // No timer: the head watch in `drive` bounds slow heads, at no cost per request.
                .max_buf_size(limits.max_header_bytes.max(MIN_HTTP1_BUFFER));
            let mut http2 = builder.http2();
            http2.timer(TokioTimer::new()).max_header_list_size(header_list);
            if let Some(max) = limits.http2_max_concurrent_streams {
                http2.max_concurrent_streams(max);
            }
            if let Some((interval, timeout)) = limits.http2_keep_alive {
                http2.keep_alive_interval(interval).keep_alive_timeout(timeout);
            }
            let grace = || async {
                // HTTP/2 (GOAWAY says which streams were taken) and a connection carrying a
                // stream (its answer ends, then it closes) need no grace; an idle HTTP/1
                // connection may have a request on its way.
                if conn.h2.load(Ordering::Relaxed) {
                    conn.first_request_within(limits.idle_grace).await;
                } else if conn.streams_open() == 0 {
                    tokio::time::sleep(limits.idle_grace).await;
                }
            };
            let head_watch = HeadWatch::new(limits.header_read_timeout);
            let served = builder.serve_connection_with_upgrades(io, service);
            drive(served, fd, &conn, &notice, Some(head_watch), grace, limits.linger).await;
        }
        Protocol::Grpc => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new()).max_header_list_size(header_list);
            limits.http2(&mut builder);
            // A connection that has carried a request needs no grace: GOAWAY tells the client
            // which streams were taken, and those are finished. One that has not may be about
            // to send its first (see `ConnState::first_request_within`).
            let grace = || conn.first_request_within(limits.idle_grace);
            drive(
                builder.serve_connection(io, service),
                fd,
                &conn,
                &notice,
                None,
                grace,
                limits.linger,
            )
            .await;
        }
    }
    if conn.is_upgraded() {
        upgraded(&conn, &notice).await;
    }
}

/// The TLS handshake, when the server serves TLS: the stream over it, and whether ALPN agreed
/// on HTTP/2. `None` when it fails or does not finish within the header read timeout (the
/// connection is closed). Without TLS, the stream as it is.
#[cfg(feature = "rustls")]
async fn handshake(
    stream: Stream,
    h2: bool,
    tls: Option<&tokio_rustls::TlsAcceptor>,
    limits: &ConnectionLimits,
) -> Option<(Stream, bool)> {
    let Some(acceptor) = tls else {
        return Some((stream, h2));
    };
    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            Some((Stream::Tls(Box::new(tls)), h2))
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// What a new connection sent first.
enum Opening {
    /// Nothing within the timeout (or within the idle grace once the server is stopping), or the
    /// client closed.
    Nothing,
    /// Bytes: an HTTP/2 preface (`PRI * HTTP/2.0…`) or, as far as can be told, HTTP/1.
    Bytes { h2: bool },
}

/// Waits for a new connection's first bytes. Until they arrive hyper has no timer running (it
/// is still finding out which protocol to speak).
async fn first_byte(stream: &Stream, limits: &ConnectionLimits, notice: &Notice) -> Opening {
    let timeout = limits.header_read_timeout;
    let mut first = [0u8; 3];
    let arrived = async {
        match stream.peek(&mut first).await {
            Ok(0) | Err(_) => Opening::Nothing,
            Ok(n) => Opening::Bytes {
                h2: first[..n] == *b"PRI",
            },
        }
    };
    tokio::pin!(arrived);
    tokio::select! {
        arrived = &mut arrived => return arrived,
        () = tokio::time::sleep(timeout) => return Opening::Nothing,
        () = notice.given() => {}
    }
    tokio::time::timeout(limits.idle_grace.min(timeout), arrived)
        .await
        .unwrap_or(Opening::Nothing)
}

/// Bounds how long an HTTP/1 connection may wait for a request head: slow-client protection.
///
/// Why not hyper's `header_read_timeout`: hyper arms it for every request (a timer created,
/// registered in tokio's wheel and removed again), which measured as the largest cost the
/// adapter added to a request over stock `axum::serve` (the crate README has the figures).
/// Here one tokio sleep per connection wakes once per `every`: if no request started since
/// the last wake and none is being answered, the connection has been idle, or trickling a
/// head, for at least `every`, and is closed. So a silent or slow client is closed between one
/// and two `every`s after its last request, and a request or answer of any length is never cut.
struct HeadWatch {
    every: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    seen: u64,
    armed: bool,
}

impl HeadWatch {
    fn new(every: Duration) -> Self {
        Self {
            every,
            sleep: Box::pin(tokio::time::sleep(every)),
            seen: 0,
            armed: false,
        }
    }

    /// Ready when the connection should be closed. Cheap while the sleep runs: polled beside
    /// the connection at every read and write.
    fn poll_expired(&mut self, cx: &mut std::task::Context<'_>, conn: &ConnState) -> Poll<()> {
        // Registered with this (the connection's own) task's waker already: nothing to do
        // until it fires.
        if self.armed && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                self.armed = true;
                return Poll::Pending;
            }
            let (requests, busy) = conn.activity();
            if !busy && requests == self.seen && !conn.h2.load(Ordering::Relaxed) {
                return Poll::Ready(());
            }
            self.seen = requests;
            self.sleep.as_mut().reset(tokio::time::Instant::now() + self.every);
        }
    }
}

/// Runs one connection (whose socket is `fd`); once the server stops, gives it the `grace`
/// future (started then) to finish on its own (HTTP/1 answers carry `Connection: close` by
/// then), then asks it to shut down gracefully and waits. Streams end on the notice; if one is
/// still open at the bound, the connection is closed under it. Then the socket is closed
/// lingering (see `linger`), unless an upgrade has handed it to a handler.
async fn drive<C, G>(
    conn: C,
    fd: std::os::fd::RawFd,
    state: &ConnState,
    notice: &Notice,
    mut head_watch: Option<HeadWatch>,
    grace: impl FnOnce() -> G,
    linger_for: Duration,
) where
    C: GracefulConnection,
    G: Future<Output = ()>,
{
    /// Why the first wait ended.
    enum Woken {
        /// The client closed, or an upgrade took the socket.
        Ended,
        /// Idle or trickling a head for too long.
        Slow,
        Notice,
    }
    tokio::pin!(conn);
    // Polled at every read and write, so kept cheap: the connection first, then an atomic
    // check of the notice and of the head watch (no `select!`, nothing shared touched).
    let mut given = notice.wait();
    let woken = std::future::poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Woken::Ended);
        }
        if Pin::new(&mut given).poll(cx).is_ready() {
            return Poll::Ready(Woken::Notice);
        }
        if let Some(watch) = head_watch.as_mut()
            && watch.poll_expired(cx, state).is_ready()
        {
            return Poll::Ready(Woken::Slow);
        }
        Poll::Pending
    })
    .await;
    drop(given);
    match woken {
        Woken::Ended => return,
        Woken::Slow => {
            tracing::debug!(peer = %state.peer(), "closing a connection idle or slow to send its request head");
            return;
        }
        Woken::Notice => {}
    }
    // A second handle on the socket, taken while `conn` still owns it, so the socket outlives
    // hyper's close. Only from the stop on: until then a connection holds one descriptor.
    // SAFETY: `fd` is the socket of the stream `conn` owns, and `conn` is alive here.
    let linger = unsafe { linger::Linger::new(fd) };
    let ended = tokio::select! {
        _ = conn.as_mut() => true,
        () = grace() => false,
    };
    if !ended {
        conn.as_mut().graceful_shutdown();
        let bound = tokio::time::sleep_until(notice.cut_at().unwrap_or_else(tokio::time::Instant::now));
        tokio::select! {
            _ = conn.as_mut() => {}
            () = bound => {
                if state.streams_open() > 0 {
                    // A stream that did not end: cut, with its connection (dropped here).
                    state.start_cutting();
                    return;
                }
                // Only ordinary requests left: the phase deadline bounds those.
                let _ = conn.as_mut().await;
            }
        }
    }
    if state.is_upgraded() {
        return;
    }
    if let Some(linger) = linger {
        linger.close(linger_for).await;
    }
}

/// Follows a connection that an upgrade handed to its handler: it ends when the handler lets
/// the socket go. After the notice (and the connection's place in the jitter window) a
/// WebSocket is sent its Close; at the bound whatever is still held is cut.
async fn upgraded(conn: &ConnState, notice: &Notice) {
    /// Cuts the connection if this wait is dropped (the server aborted at its deadline):
    /// never left running on its own.
    struct CutOnDrop<'a>(&'a ConnState);
    impl Drop for CutOnDrop<'_> {
        fn drop(&mut self) {
            if !self.0.io_dropped() {
                self.0.kill();
            }
        }
    }
    let _cut = CutOnDrop(conn);
    let offset = notice.offset();
    tokio::select! {
        // The handler let it go before the notice: ended on its own.
        () = conn.released() => return,
        () = notice.wait_for_end(offset) => {}
    }
    if conn.is_websocket() {
        conn.request_close();
    }
    let bound = tokio::time::sleep_until(notice.cut_at().unwrap_or_else(tokio::time::Instant::now));
    tokio::select! {
        () = conn.released() => notice.tally().ended(),
        () = bound => {
            conn.kill();
            notice.tally().cut(conn.upgrade_name());
        }
    }
}

impl Shutdown {
    /// Runs `server` as a component of `phase`, with this coordinator's readiness (unless it
    /// has its own) and the component's stop signal. When `phase` comes it stops accepting
    /// (taking the backlog), finishes every accepted request, closes idle keep-alive
    /// connections after [`IDLE_GRACE`], sends HTTP/2 GOAWAY and ends every long-lived
    /// connection within its [`StreamEnds`] bound. Its report entry counts the connections and
    /// the streams ended and cut; a stream cut makes it fail, naming the stream. At the phase's
    /// deadline every connection still open is aborted with it.
    ///
    /// Returns at once, the server already accepting: it is a component from here on, and has
    /// stopped when [`Shutdown::run`]'s report lists it.
    ///
    /// # Panics
    /// If `phase` belongs to another coordinator.
    pub fn serve<S, B>(&mut self, phase: Phase, name: impl Into<String>, mut server: Server<S>)
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if server.readiness.is_none() {
            server.readiness = Some(self.readiness());
        }
        self.spawn(phase, name, move |stop| async move {
            server.run(stop.clone().into_future()).await.report_to(&stop)
        });
    }

    /// Serves a stock `axum::Router` on `listener` with every connection owned and drained
    /// (see [`Shutdown::serve`]): the one call that replaces `axum::serve(..)
    /// .with_graceful_shutdown(..)`, which loses keep-alive requests at every shutdown and
    /// leaves WebSockets and SSE streams to be cut. `ConnectInfo<SocketAddr>` extractors work,
    /// as with `into_make_service_with_connect_info` ([`Server::connect_info`]). Returns at once,
    /// the router already served (see [`Shutdown::serve`]).
    ///
    /// # Panics
    /// If `phase` belongs to another coordinator.
    #[cfg(feature = "axum")]
    pub fn serve_axum(&mut self, phase: Phase, name: impl Into<String>, listener: TcpListener, router: axum::Router) {
        self.serve(phase, name, Server::new(listener, router).connect_info());
    }

    /// Serves tonic services on `listener` (HTTP/2 only) with every connection owned and
    /// drained (see [`Shutdown::serve`]): GOAWAY at the phase, every accepted call finished,
    /// streaming calls ended with UNAVAILABLE, and the connections aborted at the phase's
    /// deadline, which tonic's `serve_with_shutdown` cannot do (its connections are detached).
    /// Returns at once, the services already served (see [`Shutdown::serve`]).
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
            Server::new(listener, routes.prepare()).protocol(Protocol::Grpc),
        );
    }

    /// Serves tonic services through `server`, a tonic `Server::builder()` configured as for
    /// tonic's own `serve`: its layers, `timeout` (and each call's `grpc-timeout`), concurrency
    /// limits, load shedding, keep-alive, windows, `max_connection_age` and `tls_config` (the
    /// handshake runs on each socket this crate accepted) all apply, as tonic applies them.
    /// This crate owns the listener and the sockets: at `phase` it takes the
    /// backlog, tonic sends GOAWAY and finishes every accepted call, streaming calls end with
    /// UNAVAILABLE at the notice and are cut at the bound, and at the phase's deadline every
    /// socket still open is shut down (tonic's own shutdown leaves its connections running).
    /// The component is stopped when tonic has closed its last connection. Returns at once, the
    /// services already served.
    ///
    /// [`Shutdown::serve_tonic`] serves the routes without a tonic `Server`, with this crate's
    /// [`ConnectionLimits`] and a short grace for a connection that has not sent its first
    /// call; use this one when the tonic `Server`'s settings matter.
    ///
    /// ```no_run
    /// # async fn example(listener: tokio::net::TcpListener, routes: tonic::service::Routes) {
    /// use std::time::Duration;
    /// let mut shutdown = phased_shutdown::Shutdown::new();
    /// let servers = shutdown.phase("servers");
    /// let server = tonic::transport::Server::builder()
    ///     .timeout(Duration::from_secs(5))
    ///     .concurrency_limit_per_connection(64);
    /// shutdown.serve_tonic_server(servers, "grpc", listener, server, routes);
    /// let report = shutdown.run().await;
    /// # }
    /// ```
    ///
    /// # Panics
    /// If `phase` belongs to another coordinator.
    #[cfg(feature = "tonic")]
    pub fn serve_tonic_server<L, ResBody>(
        &mut self,
        phase: Phase,
        name: impl Into<String>,
        listener: TcpListener,
        server: tonic::transport::Server<L>,
        routes: tonic::service::Routes,
    ) where
        L: tower::Layer<FollowedRoutes<tonic::service::Routes>> + Send + 'static,
        L::Service: tower::Service<Request<tonic::body::Body>, Response = Response<ResBody>> + Clone + Send + 'static,
        <L::Service as tower::Service<Request<tonic::body::Body>>>::Future: Send,
        <L::Service as tower::Service<Request<tonic::body::Body>>>::Error:
            Into<Box<dyn std::error::Error + Send + Sync>> + Send,
        ResBody: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let notice = Notice::new(StreamEnds::default(), Draining::new(), self.readiness());
        self.spawn(phase, name, move |stop| async move {
            let routes = FollowedRoutes::new(routes);
            tonic_server::run(listener, server, routes, stop.clone().into_future(), notice)
                .await
                .report_to(&stop)
        });
    }
}
