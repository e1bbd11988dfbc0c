//! The service as one connection sees it: each request is marked on its connection (its first
//! request, its HTTP version, that it is being answered), and its answer is told to close the
//! connection once the server stops, and watched for what outlives a response (an upgrade, a
//! stream).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tower::ServiceExt;
use tower::util::Oneshot;

use super::io::{ConnState, InFlight};
use super::streams::{Ending, ServedBody, StreamKind};
use hyper::body::Body;

/// `inner` serving one connection, as hyper calls it: by reference, so the per-request work is
/// one clone of `inner` (as `axum::serve` does) and one of the connection's state.
pub(super) struct PerConnection<S> {
    pub(super) inner: S,
    pub(super) conn: Arc<ConnState>,
    /// Put axum's `ConnectInfo` in each request (see `Server::connect_info`).
    pub(super) connect_info: bool,
}

impl<S, ReqB, ResB> hyper::service::Service<Request<ReqB>> for PerConnection<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    ResB: Body,
{
    type Response = Response<ServedBody<ResB>>;
    type Error = S::Error;
    type Future = Answer<Oneshot<S, Request<ReqB>>>;

    fn call(&self, mut request: Request<ReqB>) -> Self::Future {
        #[cfg(feature = "axum")]
        if self.connect_info
            && let super::listener::Peer::Tcp(addr) = self.conn.peer()
        {
            request.extensions_mut().insert(axum::extract::ConnectInfo(addr));
        }
        #[cfg(not(feature = "axum"))]
        let _ = (&mut request, self.connect_info);
        let http1 = request.version() <= Version::HTTP_11;
        if request.version() == Version::HTTP_2 {
            self.conn.h2.store(true, Ordering::Relaxed);
        }
        // A WebSocket opens with a GET (RFC 6455 §4.1): other requests skip the header lookup.
        let websocket = request.method() == Method::GET
            && request
                .headers()
                .get(UPGRADE)
                .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let target = (request.method().clone(), request.uri().clone());
        Answer {
            answer: self.inner.clone().oneshot(request),
            watch: Some(Watch {
                request: self.conn.request_started(),
                target,
                websocket,
                http1,
            }),
        }
    }
}

/// What the answer is checked against.
struct Watch {
    /// The connection, busy until the answer's body is sent.
    request: InFlight,
    target: (Method, Uri),
    websocket: bool,
    /// HTTP/1 (a `Connection` header means something), not HTTP/2.
    http1: bool,
}

impl Watch {
    fn name(&self) -> String {
        format!("{} {}", self.target.0, self.target.1.path())
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, its body wrapped for the stream's end when it is one. A named future
    /// rather than a boxed one: this wraps every request.
    pub struct Answer<F> {
        #[pin]
        answer: F,
        watch: Option<Watch>,
    }
}

impl<F> Answer<F> {
    /// An answer passed through as it is: nothing follows it.
    #[cfg(feature = "tonic")]
    pub(super) fn unfollowed(answer: F) -> Self {
        Self { answer, watch: None }
    }
}

impl<F, ResB, E> Future for Answer<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    ResB: Body,
{
    type Output = Result<Response<ServedBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.answer.poll(cx))?;
        let Some(watch) = this.watch.take() else {
            return Poll::Ready(Ok(response.map(|body| ServedBody::plain(body, None))));
        };
        let conn = watch.request.conn();
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // It keeps its `Connection: upgrade`: the connection becomes the upgraded
            // protocol's, which the server ends its own way.
            conn.upgrading(watch.websocket, watch.name());
            return Poll::Ready(Ok(response.map(|body| ServedBody::plain(body, Some(watch.request)))));
        }
        // Once the instance is draining, or this server has stopped accepting, the client is
        // told to open its next request elsewhere instead of racing a close on this
        // connection (checked when the answer is ready, so a request that began before counts).
        if watch.http1 && conn.notice().closing() {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        // A body of known length is no stream; only then is the content type read.
        let kind = match response.body().size_hint().exact() {
            Some(_) => None,
            None => StreamKind::of(response.headers()),
        };
        let Some(kind) = kind else {
            return Poll::Ready(Ok(response.map(|body| ServedBody::plain(body, Some(watch.request)))));
        };
        let ending = Ending::new(kind, Arc::clone(conn), watch.name());
        Poll::Ready(Ok(response.map(|body| ServedBody::stream(body, ending, watch.request))))
    }
}
