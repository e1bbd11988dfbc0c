//! The socket as the server hands it to hyper, and through hyper to an upgraded connection's
//! handler: how the server keeps hold of a connection it no longer drives.
//!
//! After `101 Switching Protocols` hyper gives the socket to the handler (axum's `WebSocket`
//! runs in a task axum spawns), and a stock server forgets it: the connection is detached, and
//! at shutdown it is reset with no Close frame while later phases close what its handler uses.
//! Here the socket stays wrapped in [`ServedIo`], which shares a [`ConnState`] with the
//! connection's task in the server. Through it the server
//!
//! - knows when the handler has let the connection go (the wrapper is dropped), and waits for
//!   that before it counts itself stopped;
//! - tells a WebSocket it is going away: it writes a Close frame between two of the handler's
//!   frames (see [`websocket`](super::websocket)), waking a handler that is waiting to read;
//! - cuts it at the bound: the socket is shut down under the handler, so its reads end and its
//!   writes fail.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::listener::{Peer, Stream};
use super::streams::Notice;
use super::websocket::{Frames, HeadEnd, close_frame};

/// What the server and a connection's socket share.
pub(super) struct ConnState {
    notice: Notice,
    peer: Peer,
    fd: RawFd,
    /// Speaks HTTP/2 (its preface was seen, or it carried an HTTP/2 request): GOAWAY needs no
    /// grace, and the head watch does not apply.
    pub(super) h2: AtomicBool,
    /// Requests started on this connection: for the head watch, and for the grace an HTTP/2
    /// connection gets to send its first (see [`ConnState::first_request_within`]).
    requests: AtomicU64,
    /// Notified at the first request.
    first_arrived: Notify,
    /// Requests whose answer is not yet fully sent: while one is, the connection is busy, not
    /// waiting for a head.
    in_flight: AtomicUsize,
    /// Long-lived responses in flight on this connection.
    streams_open: AtomicUsize,
    /// Set when the server closes the connection at the bound: streams still open are cut.
    cutting: AtomicBool,
    /// [`NOT_UPGRADED`], [`WEBSOCKET`] or [`OTHER_UPGRADE`].
    upgrade: AtomicU8,
    /// `METHOD path` of the upgrade request, for the report.
    upgrade_name: Mutex<String>,
    /// A second handle on the socket, taken at the upgrade, to cut it with.
    upgrade_fd: Mutex<Option<OwnedFd>>,
    /// The server asks for a WebSocket Close.
    close_requested: AtomicBool,
    /// The Close frame has been written.
    close_sent: AtomicBool,
    /// Cut: every read and write fails.
    killed: AtomicBool,
    /// The handler's task, when it waits to read: woken to send the Close.
    read_waker: Mutex<Option<Waker>>,
    io_dropped: AtomicBool,
    dropped: Notify,
}

const NOT_UPGRADED: u8 = 0;
const WEBSOCKET: u8 = 1;
const OTHER_UPGRADE: u8 = 2;

impl ConnState {
    pub(super) fn new(peer: Peer, fd: RawFd, notice: Notice) -> Arc<Self> {
        Arc::new(Self {
            notice,
            peer,
            fd,
            h2: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            first_arrived: Notify::new(),
            in_flight: AtomicUsize::new(0),
            streams_open: AtomicUsize::new(0),
            cutting: AtomicBool::new(false),
            upgrade: AtomicU8::new(NOT_UPGRADED),
            upgrade_name: Mutex::new(String::new()),
            upgrade_fd: Mutex::new(None),
            close_requested: AtomicBool::new(false),
            close_sent: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            read_waker: Mutex::new(None),
            io_dropped: AtomicBool::new(false),
            dropped: Notify::new(),
        })
    }

    /// The server's notice.
    pub(super) fn notice(&self) -> &Notice {
        &self.notice
    }

    pub(super) fn peer(&self) -> Peer {
        self.peer
    }

    /// A request starts: busy until the returned guard (carried by its answer's body) drops.
    pub(super) fn request_started(self: &Arc<Self>) -> InFlight {
        if self.requests.fetch_add(1, Ordering::AcqRel) == 0 {
            self.first_arrived.notify_one();
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// Resolves when the connection has carried a request, or after `grace`.
    ///
    /// Why an HTTP/2 connection that has not carried one gets this grace before GOAWAY: a
    /// client opens a connection, sends the preface, and writes its first request a moment
    /// later. A GOAWAY in that moment says "no stream taken, retry elsewhere" (last stream id
    /// 0), and the server then closes a connection with no open stream. A careful client
    /// retries; many report an error instead, for a call the server would gladly have
    /// answered. With this grace it is answered.
    pub(super) async fn first_request_within(&self, grace: Duration) {
        if self.requests.load(Ordering::Acquire) == 0 {
            // `notify_one` keeps a permit, so a request between the check and this wait counts.
            let _ = tokio::time::timeout(grace, self.first_arrived.notified()).await;
        }
    }

    /// Requests started so far, and whether one is still being answered.
    pub(super) fn activity(&self) -> (u64, bool) {
        (
            self.requests.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Acquire) > 0,
        )
    }

    pub(super) fn stream_opened(&self) {
        self.streams_open.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn stream_closed(&self) {
        self.streams_open.fetch_sub(1, Ordering::AcqRel);
    }

    pub(super) fn streams_open(&self) -> usize {
        self.streams_open.load(Ordering::Acquire)
    }

    /// The server is about to close this connection with streams still open: they are cut.
    pub(super) fn start_cutting(&self) {
        self.cutting.store(true, Ordering::Release);
    }

    pub(super) fn is_cutting(&self) -> bool {
        self.cutting.load(Ordering::Acquire)
    }

    /// The handler answered `101 Switching Protocols` to `name`: from here the socket will
    /// belong to it. Called while hyper still holds the socket, so the descriptor is valid.
    pub(super) fn upgrading(&self, websocket: bool, name: String) {
        // SAFETY: hyper owns the `ServedIo` holding this socket until the upgrade completes,
        // which cannot happen before this answer is written: the descriptor is open.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        if let Ok(mut slot) = self.upgrade_fd.lock() {
            *slot = fd.try_clone_to_owned().ok();
        }
        if let Ok(mut slot) = self.upgrade_name.lock() {
            *slot = name;
        }
        let kind = if websocket { WEBSOCKET } else { OTHER_UPGRADE };
        self.upgrade.store(kind, Ordering::Release);
    }

    pub(super) fn is_upgraded(&self) -> bool {
        self.upgrade.load(Ordering::Acquire) != NOT_UPGRADED
    }

    pub(super) fn is_websocket(&self) -> bool {
        self.upgrade.load(Ordering::Acquire) == WEBSOCKET
    }

    /// `METHOD path (protocol) from peer`, for the report.
    pub(super) fn upgrade_name(&self) -> String {
        let name = self.upgrade_name.lock().map(|n| n.clone()).unwrap_or_default();
        let protocol = if self.is_websocket() { "WebSocket" } else { "upgraded" };
        format!("{name} ({protocol}) from {}", self.peer)
    }

    /// Asks for the WebSocket Close, and wakes the handler if it waits to read.
    pub(super) fn request_close(&self) {
        self.close_requested.store(true, Ordering::Release);
        self.wake_reader();
    }

    pub(super) fn close_sent(&self) -> bool {
        self.close_sent.load(Ordering::Acquire)
    }

    /// Takes a second handle on the socket now, so that [`ConnState::kill`] can shut it down
    /// whoever drives it (tonic's own connection tasks, see `tonic_server`). Called while the
    /// stream is still this crate's, so the descriptor is open.
    #[cfg(feature = "tonic")]
    pub(super) fn hold_socket(&self) {
        // SAFETY: called right after accepting, before the stream is handed on: it is open.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        if let Ok(mut slot) = self.upgrade_fd.lock() {
            *slot = fd.try_clone_to_owned().ok();
        }
    }

    /// The second handle [`ConnState::hold_socket`] took, for a lingering close once the
    /// connection's driver has let the socket go.
    #[cfg(feature = "tonic")]
    pub(super) fn take_held_socket(&self) -> Option<OwnedFd> {
        self.upgrade_fd.lock().ok().and_then(|mut slot| slot.take())
    }

    /// Cuts a connection: the socket is shut down both ways under whoever holds it.
    pub(super) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        if let Some(fd) = self.upgrade_fd.lock().ok().and_then(|mut slot| slot.take()) {
            let _ = std::net::TcpStream::from(fd).shutdown(std::net::Shutdown::Both);
        }
        self.wake_reader();
    }

    fn wake_reader(&self) {
        if let Some(waker) = self.read_waker.lock().ok().and_then(|mut slot| slot.take()) {
            waker.wake();
        }
    }

    pub(super) fn io_dropped(&self) -> bool {
        self.io_dropped.load(Ordering::Acquire)
    }

    /// Resolves once the socket's wrapper is dropped: its handler has let it go.
    pub(super) async fn released(&self) {
        while !self.io_dropped() {
            self.dropped.notified().await;
        }
    }
}

/// One request being answered on a connection; dropped with its answer's body (or with the
/// answer, if it never came).
pub(super) struct InFlight(Arc<ConnState>);

impl InFlight {
    pub(super) fn conn(&self) -> &Arc<ConnState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's socket: passed straight through until an upgrade to WebSocket, then
/// following the frames the handler writes so the server can add its Close between two.
pub(super) struct ServedIo {
    stream: Stream,
    conn: Arc<ConnState>,
    ws: Option<Box<WsWrites>>,
}

/// The handler's side of a WebSocket, as far as the server needs to follow it.
#[derive(Default)]
struct WsWrites {
    head: HeadEnd,
    /// The `101` head is written: frames from here on.
    framing: bool,
    frames: Frames,
    /// How much of the Close frame is written.
    close: Option<(Vec<u8>, usize)>,
}

impl ServedIo {
    pub(super) fn new(stream: Stream, conn: Arc<ConnState>) -> Self {
        Self { stream, conn, ws: None }
    }

    /// Writes (the rest of) the server's Close frame.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(ws) = self.ws.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let (frame, sent) = ws
            .close
            .get_or_insert_with(|| (close_frame(self.conn.notice.ends().websocket_close_code), 0));
        while *sent < frame.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &frame[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        self.conn.close_sent.store(true, Ordering::Release);
        Poll::Ready(Ok(()))
    }

    /// Whether the Close can go now: asked for, not sent, and between two frames.
    fn close_due(&self) -> bool {
        self.conn.close_requested.load(Ordering::Acquire)
            && !self.conn.close_sent()
            && self.ws.as_ref().is_some_and(|ws| ws.framing && ws.frames.at_boundary())
    }

    fn poll_websocket_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.conn.killed.load(Ordering::Acquire) {
            return Poll::Ready(Err(cut()));
        }
        let ws = self.ws.get_or_insert_with(Box::default);
        if !ws.framing {
            // The rest of the 101 head; frames begin where it ends.
            let head = ws.head.head_bytes(buf);
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &buf[..head]))?;
            ws.framing = ws.head.feed(&buf[..n]);
            return Poll::Ready(Ok(n));
        }
        if self.conn.close_sent() {
            // After the server's Close the client gets nothing more: data frames are refused
            // (the handler's send fails, as it would after its own Close), control frames (its
            // reply to the client's Close) dropped.
            return if ws.frames.feed(buf) {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the server has closed this WebSocket: it is shutting down",
                )))
            } else {
                Poll::Ready(Ok(buf.len()))
            };
        }
        // Once a Close is asked for, write no further than the end of the frame under way.
        let limit = if self.conn.close_requested.load(Ordering::Acquire) {
            ws.frames.left_in_frame().min(buf.len())
        } else {
            buf.len()
        };
        if self.close_due() {
            ready!(self.poll_close(cx))?;
            return self.poll_websocket_write(cx, buf);
        }
        let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &buf[..limit]))?;
        if let Some(ws) = self.ws.as_mut() {
            ws.frames.feed(&buf[..n]);
        }
        if self.close_due() {
            // Best effort now; any later read or write finishes it.
            let _ = self.poll_close(cx);
        }
        Poll::Ready(Ok(n))
    }
}

fn cut() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the server cut this connection at its shutdown bound",
    )
}

impl Drop for ServedIo {
    fn drop(&mut self) {
        self.conn.io_dropped.store(true, Ordering::Release);
        self.conn.dropped.notify_one();
    }
}

impl AsyncRead for ServedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.conn.is_upgraded() {
            if this.conn.killed.load(Ordering::Acquire) {
                return Poll::Ready(Err(cut()));
            }
            // The waker first, then the flags: a Close asked for in between still wakes it.
            if let Ok(mut slot) = this.conn.read_waker.lock()
                && !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
            {
                *slot = Some(cx.waker().clone());
            }
            if this.close_due() {
                // Pending only means the socket is full; a later poll finishes it.
                if let Poll::Ready(Err(e)) = this.poll_close(cx) {
                    return Poll::Ready(Err(e));
                }
            }
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.conn.is_websocket() {
            return this.poll_websocket_write(cx, buf);
        }
        if this.conn.killed.load(Ordering::Acquire) {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.conn.is_websocket() {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b);
            return this.poll_websocket_write(cx, first);
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
