//! Serving through a configured tonic [`Server`](tonic::transport::Server): tonic drives the
//! connections, with everything its builder was told (layers, `timeout` and `grpc-timeout`,
//! concurrency limits, load shedding, HTTP/2 keep-alive and windows, `max_connection_age`),
//! and this crate owns the listener and the sockets.
//!
//! The listener is this crate's: at the stop it takes the backlog before it closes (tonic's
//! own accept loop would reset those connections), then ends tonic's stream of connections,
//! which makes tonic send GOAWAY on each and wait for them. Each socket is wrapped as on a
//! connection this crate drives ([`ServedIo`], sharing a [`ConnState`]), and reaches the
//! requests through tonic's connection info, so every answer is followed: a long-lived
//! streaming answer ends with `grpc-status: 14` (UNAVAILABLE) at the notice, one still open at
//! the bound is cut, and at the phase's deadline (this future dropped) every socket tonic still
//! holds is shut down under it, which tonic's own shutdown cannot do (its connections are
//! detached tasks).
//!
//! Once tonic lets a socket go during the drain, it is closed lingering, as on the connections
//! this crate drives (see `linger`): through a second descriptor taken at accept, which is also
//! what the cut and the abort shut the socket down with.
//!
//! What differs from [`Shutdown::serve_tonic`](crate::Shutdown::serve_tonic): tonic's GOAWAY
//! goes at once, without the short grace this crate gives a connection that has not sent its
//! first request (such a request is refused unprocessed, which a gRPC client retries safely),
//! and each connection holds two descriptors and a small task while it is open.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::connection::{Answer, PerConnection};
use super::io::{ConnState, ServedIo};
use super::listener::{Listener, Peer, Stream};
use super::streams::Notice;
use super::{Served, ServedBody};

/// What tonic puts in each request's extensions for a connection of this crate's: the
/// connection's shared state, and tonic's own [`TcpConnectInfo`] for `Request::remote_addr`.
#[derive(Clone)]
struct ConnInfo {
    tcp: TcpConnectInfo,
    conn: Arc<ConnState>,
}

/// A socket as tonic receives it from this crate.
struct TonicIo {
    io: ServedIo,
    info: ConnInfo,
}

impl Connected for TonicIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TonicIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TonicIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// tonic's routes as this crate serves them under a configured tonic `Server`: each answer is
/// followed on its connection, so that a streaming one can be ended at the stop. Made by
/// [`Shutdown::serve_tonic_server`](crate::Shutdown::serve_tonic_server); the `Server`'s
/// layers wrap it.
#[derive(Clone)]
pub struct FollowedRoutes<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<tonic::body::Body>> for FollowedRoutes<S>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<B>> + Clone,
    B: hyper::body::Body,
{
    type Response = Response<ServedBody<B>>;
    type Error = S::Error;
    type Future = Answer<tower::util::Oneshot<S, Request<tonic::body::Body>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call is a oneshot of a clone, which waits for its own readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        let Some(info) = request.extensions_mut().remove::<ConnInfo>() else {
            // Not from this crate's listener: passed through.
            return Answer::unfollowed(tower::ServiceExt::oneshot(self.inner.clone(), request));
        };
        request.extensions_mut().insert(info.tcp);
        let per_connection = PerConnection {
            inner: self.inner.clone(),
            conn: info.conn,
            connect_info: false,
        };
        hyper::service::Service::call(&per_connection, request)
    }
}

impl<S> FollowedRoutes<S> {
    pub(super) fn new(inner: S) -> Self {
        Self { inner }
    }
}

/// The connections accepted so far, for the cut at the bound and the abort at the deadline.
#[derive(Default)]
struct Connections {
    live: Mutex<Vec<Weak<ConnState>>>,
    accepted: AtomicU64,
    /// One task per connection: it closes the socket lingering once tonic lets it go during
    /// the drain, or just releases the second handle when it goes before.
    lingering: Mutex<tokio::task::JoinSet<()>>,
}

impl Connections {
    fn add(&self, conn: &Arc<ConnState>) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let mut live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget the closed ones now and then, so the list follows the open connections.
        if live.len() >= 64 && live.len().is_power_of_two() {
            live.retain(|c| c.strong_count() > 0);
        }
        live.push(Arc::downgrade(conn));
        drop(live);
        let mut lingering = self.lingering.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Reap the finished ones, so the set follows the open connections.
        while lingering.try_join_next().is_some() {}
        lingering.spawn(close_lingering(Arc::clone(conn)));
    }

    fn open(&self) -> Vec<Arc<ConnState>> {
        let live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        live.iter()
            .filter_map(Weak::upgrade)
            .filter(|c| !c.io_dropped())
            .collect()
    }
}

/// Closes `conn`'s socket lingering once tonic has let it go, if that happens during the drain.
async fn close_lingering(conn: Arc<ConnState>) {
    let drained = tokio::select! {
        () = conn.notice().given() => true,
        () = conn.released() => false,
    };
    if drained {
        conn.released().await;
    }
    let Some(held) = conn.take_held_socket() else {
        return;
    };
    if drained && !conn.is_cutting() {
        super::linger::Linger::from_owned(held).close(super::LINGER).await;
    }
}

/// Shuts down every socket still open when dropped: the phase's deadline has come and this
/// future is being dropped, while tonic's connection tasks, detached, would go on.
struct AbortOnDrop(Arc<Connections>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for conn in self.0.open() {
            conn.start_cutting();
            conn.kill();
        }
    }
}

/// Serves `routes` through `server` on `listener` until `stop`, then as the module says.
pub(super) async fn run<L, ResBody>(
    listener: TcpListener,
    server: tonic::transport::Server<L>,
    routes: FollowedRoutes<tonic::service::Routes>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    notice: Notice,
) -> Served
where
    L: tower::Layer<FollowedRoutes<tonic::service::Routes>>,
    L::Service: tower::Service<Request<tonic::body::Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    <L::Service as tower::Service<Request<tonic::body::Body>>>::Future: Send,
    <L::Service as tower::Service<Request<tonic::body::Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    ResBody: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connections = Arc::new(Connections::default());
    let _abort = AbortOnDrop(Arc::clone(&connections));
    let (sockets, incoming) = tokio::sync::mpsc::channel(64);
    let acceptor = Acceptor {
        connections: Arc::clone(&connections),
        notice: notice.clone(),
        sockets,
    };
    let accepting = AbortOnDropTask(tokio::spawn(acceptor.run(listener, stop)));
    // tonic's accept loop ends with the stream of sockets; as a shutdown signal is given (one
    // that never fires), it then sends GOAWAY on each connection and waits for them.
    let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming);
    let served = server.serve_with_incoming_shutdown(routes, incoming, std::future::pending());
    let cut = cut_at_the_bound(&notice, &connections);
    tokio::pin!(served, cut);
    let result = tokio::select! {
        result = &mut served => result,
        () = &mut cut => served.await,
    };
    drop(accepting);
    // The lingering closes: each ends when its client closes, or at the linger's bound.
    let lingering = std::mem::take(
        &mut *connections
            .lingering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    lingering.join_all().await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "tonic's server stopped with an error");
    }
    let tally = notice.tally();
    Served {
        connections: connections.accepted.load(Ordering::Relaxed),
        streams_ended: tally.ended.load(Ordering::Relaxed),
        streams_cut: tally.cut.load(Ordering::Relaxed),
        cut: tally.cut_names.lock().map(|n| n.clone()).unwrap_or_default(),
    }
}

/// Aborts the acceptor with the server's future.
struct AbortOnDropTask(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDropTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Once the notice's bound has come, cuts every connection still carrying a stream.
async fn cut_at_the_bound(notice: &Notice, connections: &Connections) {
    notice.given().await;
    let Some(bound) = notice.cut_at() else {
        return;
    };
    tokio::time::sleep_until(bound).await;
    for conn in connections.open() {
        if conn.streams_open() > 0 {
            conn.start_cutting();
            conn.kill();
        }
    }
}

/// Accepts sockets for tonic until the stop, then takes the backlog and ends the stream (by
/// dropping its sender). The notice is given once the backlog is in.
struct Acceptor {
    connections: Arc<Connections>,
    notice: Notice,
    sockets: tokio::sync::mpsc::Sender<std::io::Result<TonicIo>>,
}

impl Acceptor {
    async fn run(self, listener: TcpListener, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                next = listener.accept() => match next {
                    Ok((stream, peer)) => {
                        if self.sockets.send(Ok(self.wrap(stream, peer))).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: retry shortly rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
            }
        }
        self.notice.stop_accepting();
        let mut backlog = Vec::new();
        let taken = Listener::Tcp(listener).take_backlog(|stream, peer| {
            if let (Stream::Tcp(stream), Peer::Tcp(peer)) = (stream, peer) {
                backlog.push((stream, peer));
            }
        });
        tracing::info!(
            event = "listener.closed",
            protocol = "Grpc",
            from_backlog = taken,
            "stopped accepting; finishing requests in flight"
        );
        for (stream, peer) in backlog {
            if self.sockets.send(Ok(self.wrap(stream, peer))).await.is_err() {
                return;
            }
        }
        self.notice.give();
    }

    fn wrap(&self, stream: TcpStream, peer: SocketAddr) -> TonicIo {
        let _ = stream.set_nodelay(true);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let conn = ConnState::new(Peer::Tcp(peer), fd, self.notice.clone());
        conn.h2.store(true, Ordering::Relaxed);
        conn.hold_socket();
        self.connections.add(&conn);
        let tcp = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(peer),
        };
        TonicIo {
            info: ConnInfo {
                tcp,
                conn: Arc::clone(&conn),
            },
            io: ServedIo::new(Stream::Tcp(stream), conn),
        }
    }
}
