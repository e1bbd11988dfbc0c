//! Long-lived responses (Server-Sent Events, gRPC streams) ended the way their protocol defines
//! when the server stops, with no change to the handlers.
//!
//! Why here, in the body: hyper's graceful shutdown waits for every response to finish, and a
//! stream never finishes by itself, so without this a single open SSE or gRPC stream holds the
//! server until the phase deadline, is then cut mid-stream (curl: "transfer closed with
//! outstanding data"; gRPC: `UNKNOWN`, "h2 protocol error"), and the later phases lose their
//! time. The body wrapper knows the protocol from the response's `content-type` and, once its
//! server has given the notice, ends the stream at the next event or message boundary:
//!
//! - `text/event-stream`: a last event `retry: <ms>` (how long the client's `EventSource` waits
//!   before it reconnects), then the end of the body: HTTP/1's terminating chunk, HTTP/2's
//!   END_STREAM. A client that reconnects reaches another replica, or this one once it is back.
//! - `application/grpc…`: trailers `grpc-status: 14` (UNAVAILABLE, which gRPC clients treat as
//!   retryable) with a message saying the server is shutting down.
//!
//! What is already ready in the stream when its time comes is still sent (up to
//! [`FLUSH_FRAMES`] frames), so a unary gRPC answer is never turned into UNAVAILABLE and a
//! status the handler has just queued (a health `Watch`'s NOT_SERVING) reaches the client
//! before the end.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// How a server ends its long-lived connections when it stops: when each is told, how long it
/// may take, and what the client is told. Set with
/// [`Server::streams`](super::Server::streams).
///
/// The notice comes when the server stops accepting (its phase), not at the start of the drain
/// delay: during the delay load balancers are still learning that this instance is going, and a
/// client told to reconnect then could well be sent back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamEnds {
    /// Each stream is ended at a moment drawn evenly from `[0, jitter]` after the notice, so
    /// that thousands of clients do not all reconnect in the same millisecond.
    pub jitter: Duration,
    /// How long after the notice a stream may still be open: one that has not ended by then (a
    /// handler that ignores the notice, a WebSocket client that never answers the Close) is cut
    /// and named in the report. Never less than `jitter`.
    pub bound: Duration,
    /// The close code a WebSocket receives: 1001 ("going away") by default; 1012 ("service
    /// restart") suits a restart that the client should simply wait out.
    pub websocket_close_code: u16,
    /// The `retry:` hint sent as an SSE stream's last event: how long a browser's
    /// `EventSource` waits before it reconnects.
    pub sse_retry: Duration,
}

impl Default for StreamEnds {
    /// Closes spread over 500 ms, cut 2 s after the notice, WebSocket close 1001, SSE clients
    /// asked to reconnect after 1 s.
    fn default() -> Self {
        Self {
            jitter: Duration::from_millis(500),
            bound: Duration::from_secs(2),
            websocket_close_code: 1001,
            sse_retry: Duration::from_secs(1),
        }
    }
}

impl StreamEnds {
    /// These settings with a window of `jitter` to spread the closes over.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// These settings with streams cut `bound` after the notice.
    pub fn bound(mut self, bound: Duration) -> Self {
        self.bound = bound;
        self
    }

    /// These settings with WebSockets closed with `code` (1001 or 1012 are the ones meant for
    /// this).
    pub fn websocket_close_code(mut self, code: u16) -> Self {
        self.websocket_close_code = code;
        self
    }

    /// These settings with `retry` as the SSE reconnect hint.
    pub fn sse_retry(mut self, retry: Duration) -> Self {
        self.sse_retry = retry;
        self
    }
}

/// At most this many frames that are already ready are still sent once a stream's time to end
/// has come; then it ends at the next boundary regardless (a stream that always has data ready
/// would otherwise never end).
pub(super) const FLUSH_FRAMES: u32 = 64;

/// The moment a server tells its long-lived connections to end, shared by all of them.
#[derive(Clone)]
pub(super) struct Notice {
    inner: Arc<NoticeInner>,
}

struct NoticeInner {
    token: CancellationToken,
    /// The instance's readiness: once draining, HTTP/1 answers ask to close the connection.
    readiness: crate::Readiness,
    /// Set when the server stops accepting: HTTP/1 answers ask to close, readiness or not.
    closing: AtomicBool,
    /// Set with `at`; what a connection's [`NoticeWait`] checks at every poll.
    given: AtomicBool,
    /// The connections waiting for the notice, by id.
    waiters: Mutex<std::collections::HashMap<u64, Arc<WakeSlot>>>,
    at: OnceLock<Instant>,
    ends: StreamEnds,
    /// Spreads the streams' ends over the jitter window (a counter, hashed).
    next: AtomicU64,
    seed: std::collections::hash_map::RandomState,
    pub(super) tally: Tally,
}

impl Notice {
    /// A notice given through `draining`'s token, so handlers holding it are told too.
    pub(super) fn new(ends: StreamEnds, draining: Draining, readiness: crate::Readiness) -> Self {
        Self {
            inner: Arc::new(NoticeInner {
                token: draining.0,
                readiness,
                closing: AtomicBool::new(false),
                given: AtomicBool::new(false),
                waiters: Mutex::default(),
                at: OnceLock::new(),
                ends: StreamEnds {
                    bound: ends.bound.max(ends.jitter),
                    ..ends
                },
                next: AtomicU64::new(0),
                seed: std::collections::hash_map::RandomState::new(),
                tally: Tally::default(),
            }),
        }
    }

    /// The server has stopped accepting: from now on every HTTP/1 answer asks to close, even
    /// when nobody turned readiness off.
    pub(super) fn stop_accepting(&self) {
        self.inner.closing.store(true, Ordering::Relaxed);
    }

    /// Whether HTTP/1 answers should ask the client to close the connection.
    pub(super) fn closing(&self) -> bool {
        self.inner.closing.load(Ordering::Relaxed) || self.inner.readiness.is_draining()
    }

    /// Gives the notice: from now on every stream ends within the jitter window.
    pub(super) fn give(&self) {
        let _ = self.inner.at.set(Instant::now());
        self.inner.given.store(true, Ordering::Release);
        self.inner.token.cancel();
        // After the flag: a connection registering from here on sees it (see `NoticeWait`).
        let waiters: Vec<Arc<WakeSlot>> = self
            .inner
            .waiters
            .lock()
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default();
        for slot in waiters {
            slot.wake();
        }
    }

    /// A connection's wait for the notice.
    pub(super) fn wait(&self) -> NoticeWait {
        NoticeWait {
            notice: self.clone(),
            slot: None,
        }
    }

    pub(super) async fn given(&self) {
        self.inner.token.cancelled().await;
    }

    pub(super) fn ends(&self) -> &StreamEnds {
        &self.inner.ends
    }

    pub(super) fn tally(&self) -> &Tally {
        &self.inner.tally
    }

    /// A new stream's place in the jitter window.
    pub(super) fn offset(&self) -> Duration {
        use std::hash::BuildHasher;
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let hash = self.inner.seed.hash_one(n);
        // The top 53 bits as a fraction in [0, 1).
        let fraction = (hash >> 11) as f64 / (1u64 << 53) as f64;
        self.inner.ends.jitter.mul_f64(fraction)
    }

    /// When a stream placed at `offset` ends: `offset` after the notice (or now, for a stream
    /// opened later than that). `None` before the notice.
    pub(super) fn end_at(&self, offset: Duration) -> Option<Instant> {
        self.inner.at.get().map(|at| (*at + offset).max(Instant::now()))
    }

    /// When streams still open are cut. `None` before the notice.
    pub(super) fn cut_at(&self) -> Option<Instant> {
        self.inner.at.get().map(|at| *at + self.inner.ends.bound)
    }

    /// Resolves when a stream placed at `offset` should end.
    pub(super) fn wait_for_end(&self, offset: Duration) -> impl Future<Output = ()> + Send + 'static {
        let notice = self.clone();
        async move {
            notice.given().await;
            if let Some(at) = notice.end_at(offset) {
                tokio::time::sleep_until(at).await;
            }
        }
    }
}

/// Where a connection's task waits to be woken by the notice.
#[derive(Default)]
struct WakeSlot(Mutex<Option<Waker>>);

impl WakeSlot {
    fn wake(&self) {
        if let Some(waker) = self.0.lock().ok().and_then(|mut w| w.take()) {
            waker.wake();
        }
    }
}

/// Resolves when the notice is given. Cheap to poll again and again (an atomic load after the
/// first poll): it is polled beside hyper's connection future, at every read and write of
/// every connection, always by that connection's task. A `CancellationToken`'s wait re-registers in a
/// shared list at each poll, which costs more than the rest of the server's own work per
/// request (measured with callgrind; see the crate README).
pub(super) struct NoticeWait {
    notice: Notice,
    slot: Option<(u64, Arc<WakeSlot>)>,
}

impl Future for NoticeWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let inner = &this.notice.inner;
        if inner.given.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        // Registered once: the connection's task always polls it with its own waker (it is
        // never moved to another task), so the waker stored first stays the right one.
        if this.slot.is_none() {
            let id = inner.next.fetch_add(1, Ordering::Relaxed);
            let slot = Arc::new(WakeSlot(Mutex::new(Some(cx.waker().clone()))));
            if let Ok(mut waiters) = inner.waiters.lock() {
                waiters.insert(id, Arc::clone(&slot));
            }
            this.slot = Some((id, slot));
        }
        // Given while registering: `give` set the flag before it read the waiters.
        if inner.given.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for NoticeWait {
    fn drop(&mut self) {
        if let Some((id, _)) = self.slot.take()
            && let Ok(mut waiters) = self.notice.inner.waiters.lock()
        {
            waiters.remove(&id);
        }
    }
}

/// What a server counts of its long-lived connections, for its line in the report.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) ended: AtomicU64,
    pub(super) cut: AtomicU64,
    /// The streams cut, each as `METHOD path (protocol) from peer`.
    pub(super) cut_names: Mutex<Vec<String>>,
}

impl Tally {
    pub(super) fn ended(&self) {
        self.ended.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn cut(&self, name: String) {
        self.cut.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut names) = self.cut_names.lock() {
            names.push(name);
        }
    }
}

/// The notice that a server has started stopping, for handlers of protocols the server cannot
/// end by itself (a custom upgrade, a streaming body of another content type): make one, give
/// it to the server with [`Server::draining`](super::Server::draining), and to the handlers
/// (state, a closure, or axum's `Extension` layer). SSE, gRPC streams and WebSockets need
/// nothing: the server ends them. Costs nothing per request: it is not put in every request's
/// extensions, only where you put it.
///
/// ```
/// # #[cfg(feature = "axum")] {
/// use axum::{Extension, Router, routing::get};
/// use phased_shutdown::serve::{Draining, Server};
///
/// async fn handler(Extension(draining): Extension<Draining>) -> &'static str {
///     tokio::select! {
///         () = draining.notified() => "the server is stopping: reconnect",
///         () = tokio::time::sleep(std::time::Duration::from_secs(30)) => "done",
///     }
/// }
///
/// # async fn run(listener: tokio::net::TcpListener) {
/// let draining = Draining::new();
/// let router: Router = Router::new().route("/long", get(handler)).layer(Extension(draining.clone()));
/// let _server = Server::new(listener, router).draining(draining);
/// # }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Draining(CancellationToken);

impl Default for Draining {
    fn default() -> Self {
        Self::new()
    }
}

impl Draining {
    /// A notice not given yet, for one server.
    pub fn new() -> Self {
        Self(CancellationToken::new())
    }

    /// Resolves once the server has stopped accepting and is ending its streams.
    pub async fn notified(&self) {
        self.0.cancelled().await;
    }

    /// The same wait as an owned `'static` future.
    pub fn into_future(self) -> WaitForCancellationFutureOwned {
        self.0.cancelled_owned()
    }

    /// Whether the notice has been given.
    pub fn is_notified(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// The kind of long-lived response, told by its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamKind {
    Sse,
    Grpc,
}

impl StreamKind {
    pub(super) fn of(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers.get(CONTENT_TYPE)?.as_bytes();
        if content_type.starts_with(b"text/event-stream") {
            Some(Self::Sse)
        } else if content_type.starts_with(b"application/grpc") {
            Some(Self::Grpc)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sse => "SSE",
            Self::Grpc => "gRPC stream",
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body as served: passed through as it is, or, for a long-lived stream, ended
    /// at a boundary after the notice (see the module's documentation). Its data is `Bytes`,
    /// taken from the handler's without a copy when that is `Bytes` too (axum's and tonic's
    /// are).
    pub struct ServedBody<B> {
        #[pin]
        inner: B,
        stream: Option<Box<Ending>>,
        // Keeps the connection busy (not waiting for a head) until the answer is sent.
        request: Option<super::io::InFlight>,
    }

    impl<B> PinnedDrop for ServedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(ending) = this.project().stream.as_mut() {
                ending.dropped();
            }
        }
    }
}

/// The state of a stream's end.
pub(super) struct Ending {
    kind: StreamKind,
    notice: Notice,
    /// Resolves when this stream's time to end has come.
    due: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Set once `due` has resolved: frames still sent since.
    flushing: Option<u32>,
    boundary: Boundary,
    /// Ended on the notice, finished by itself, or gone: nothing more to count.
    done: bool,
    /// Shared with the connection, which cuts what is still open at the bound.
    open: Arc<super::io::ConnState>,
    /// `METHOD path`, for the report if it is cut.
    name: String,
}

impl Ending {
    pub(super) fn new(kind: StreamKind, conn: Arc<super::io::ConnState>, name: String) -> Box<Self> {
        conn.stream_opened();
        let notice = conn.notice();
        let offset = notice.offset();
        Box::new(Self {
            kind,
            notice: notice.clone(),
            due: Box::pin(notice.wait_for_end(offset)),
            flushing: None,
            boundary: Boundary::new(kind),
            done: false,
            open: conn,
            name,
        })
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.open.stream_closed();
        }
    }

    fn dropped(&mut self) {
        if !self.done && self.open.is_cutting() {
            let name = format!("{} ({}) from {}", self.name, self.kind.name(), self.open.peer());
            self.notice.tally().cut(name);
        }
        self.finish();
    }

    /// The frame that ends the stream.
    fn last_frame(&self) -> Frame<Bytes> {
        match self.kind {
            StreamKind::Sse => {
                let retry = self.notice.ends().sse_retry.as_millis();
                Frame::data(Bytes::from(format!("retry: {retry}\n\n")))
            }
            StreamKind::Grpc => {
                let mut trailers = HeaderMap::with_capacity(2);
                trailers.insert("grpc-status", HeaderValue::from_static("14"));
                trailers.insert("grpc-message", HeaderValue::from_static("server%20shutting%20down"));
                Frame::trailers(trailers)
            }
        }
    }
}

impl<B> ServedBody<B> {
    /// `inner` passed through unchanged.
    pub(super) fn plain(inner: B, request: Option<super::io::InFlight>) -> Self {
        Self {
            inner,
            stream: None,
            request,
        }
    }

    /// `inner`, a long-lived stream ended by `ending`.
    pub(super) fn stream(inner: B, ending: Box<Ending>, request: super::io::InFlight) -> Self {
        Self {
            inner,
            stream: Some(ending),
            request: Some(request),
        }
    }
}

impl<B> Body for ServedBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let Some(ending) = this.stream.as_mut() else {
            return this
                .inner
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map(|f| f.map_data(to_bytes))));
        };
        if ending.done {
            return Poll::Ready(None);
        }
        if ending.flushing.is_none() && ending.due.as_mut().poll(cx).is_ready() {
            ending.flushing = Some(0);
        }
        let Some(flushed) = ending.flushing else {
            return poll_passing(this.inner, ending, cx);
        };
        // Its time has come: what is ready still goes out, then it ends at a boundary.
        if flushed < FLUSH_FRAMES || !ending.boundary.at_boundary() {
            let polled = this.inner.poll_frame(cx);
            if let Poll::Ready(frame) = polled {
                ending.flushing = Some(flushed + 1);
                return Poll::Ready(pass(ending, frame));
            }
            if !ending.boundary.at_boundary() {
                // Mid-event and nothing ready: wait for the rest (or the cut at the bound).
                return Poll::Pending;
            }
        }
        let last = ending.last_frame();
        ending.notice.tally().ended();
        ending.finish();
        Poll::Ready(Some(Ok(last)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.stream {
            Some(ending) if ending.done => true,
            _ => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Polls a stream whose time has not come yet.
fn poll_passing<B: Body>(
    inner: Pin<&mut B>,
    ending: &mut Ending,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
    let frame = ready!(inner.poll_frame(cx));
    Poll::Ready(pass(ending, frame))
}

/// A frame of the handler's on its way out, noted for the boundary; the end of the stream when
/// the handler ends it.
fn pass<D: Buf, E>(ending: &mut Ending, frame: Option<Result<Frame<D>, E>>) -> Option<Result<Frame<Bytes>, E>> {
    match frame {
        Some(Ok(frame)) => {
            let frame = frame.map_data(to_bytes);
            match frame.data_ref() {
                Some(data) => ending.boundary.feed(data),
                // Trailers: the handler has ended the stream itself.
                None => ending.finish(),
            }
            Some(Ok(frame))
        }
        Some(Err(e)) => {
            ending.finish();
            Some(Err(e))
        }
        None => {
            ending.finish();
            None
        }
    }
}

fn to_bytes<D: Buf>(mut data: D) -> Bytes {
    data.copy_to_bytes(data.remaining())
}

/// Where a stream's bytes stand: between two events (SSE) or two messages (gRPC), or inside
/// one. A stream is only ever ended between two.
enum Boundary {
    /// The last four bytes sent: an event ends with a blank line (LF, CR or CRLF).
    Sse { last: [u8; 4] },
    /// A gRPC message is a 5-byte prefix (compressed flag, big-endian length) and the message.
    Grpc {
        prefix: [u8; 5],
        have: usize,
        body_left: u64,
    },
}

impl Boundary {
    fn new(kind: StreamKind) -> Self {
        match kind {
            StreamKind::Sse => Self::Sse { last: *b"\n\n\n\n" },
            StreamKind::Grpc => Self::Grpc {
                prefix: [0; 5],
                have: 0,
                body_left: 0,
            },
        }
    }

    fn at_boundary(&self) -> bool {
        match self {
            Self::Sse { last } => last.ends_with(b"\n\n") || last.ends_with(b"\r\r") || last == b"\r\n\r\n",
            Self::Grpc { have, body_left, .. } => *have == 0 && *body_left == 0,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        match self {
            Self::Sse { last } => {
                let keep = 4 - data.len().min(4);
                last.copy_within(4 - keep.., 0);
                last[keep..].copy_from_slice(&data[data.len() - (4 - keep)..]);
            }
            Self::Grpc {
                prefix,
                have,
                body_left,
            } => {
                while !data.is_empty() {
                    if *body_left > 0 {
                        let take = (*body_left).min(data.len() as u64);
                        *body_left -= take;
                        data = &data[take as usize..];
                        continue;
                    }
                    let take = (5 - *have).min(data.len());
                    prefix[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have == 5 {
                        *have = 0;
                        *body_left = u64::from(u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_boundaries_are_blank_lines() {
        let mut b = Boundary::new(StreamKind::Sse);
        assert!(b.at_boundary());
        b.feed(b"data: 1\n");
        assert!(!b.at_boundary());
        b.feed(b"\n");
        assert!(b.at_boundary());
        b.feed(b"data: 2\r\n\r\n");
        assert!(b.at_boundary());
        b.feed(b": keep-alive");
        assert!(!b.at_boundary());
    }

    #[test]
    fn grpc_boundaries_follow_the_length_prefixes_across_frames() {
        let mut b = Boundary::new(StreamKind::Grpc);
        assert!(b.at_boundary());
        // Two messages of 3 and 1 bytes, split at awkward places.
        let bytes = [0u8, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 1, b'd'];
        for (split, at) in [(2, false), (6, false), (8, true), (10, false), (14, true)] {
            let mut b2 = Boundary::new(StreamKind::Grpc);
            b2.feed(&bytes[..split]);
            assert_eq!(b2.at_boundary(), at, "after {split} bytes");
        }
        b.feed(&bytes);
        assert!(b.at_boundary());
        // An empty message (length 0) is whole after its prefix.
        b.feed(&[0, 0, 0, 0, 0]);
        assert!(b.at_boundary());
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_spread_over_the_window_and_ends_follow_the_notice() {
        let notice = Notice::new(
            StreamEnds::default().jitter(Duration::from_millis(1000)),
            Draining::new(),
            crate::DrainSwitch::new().readiness(),
        );
        let offsets: Vec<Duration> = (0..1000).map(|_| notice.offset()).collect();
        assert!(offsets.iter().all(|o| *o < Duration::from_millis(1000)));
        let early = offsets.iter().filter(|o| **o < Duration::from_millis(500)).count();
        assert!((350..650).contains(&early), "{early} of 1000 in the first half");
        assert_eq!(notice.end_at(Duration::ZERO), None);
        let given = Instant::now();
        notice.give();
        assert_eq!(
            notice.end_at(Duration::from_millis(300)),
            Some(given + Duration::from_millis(300))
        );
        assert_eq!(notice.cut_at(), Some(given + Duration::from_secs(2)));
    }
}
