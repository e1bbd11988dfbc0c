//! The service as one connection sees it: each request is marked on its connection (its first
//! request, its HTTP version), and its answer is watched for what outlives a response (an
//! upgrade, a stream).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use hyper::header::UPGRADE;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};

use super::io::ConnState;
use super::streams::{Ending, ServedBody, StreamKind};
use hyper::body::Body;

/// `inner` serving one connection.
#[derive(Clone)]
pub(super) struct PerConnection<S> {
    pub(super) inner: S,
    pub(super) conn: Arc<ConnState>,
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for PerConnection<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    type Response = Response<ServedBody<ResB>>;
    type Error = S::Error;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        self.conn.first.mark();
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
            answer: self.inner.call(request),
            watch: Some(Watch {
                conn: Arc::clone(&self.conn),
                target,
                websocket,
            }),
        }
    }
}

/// What the answer is checked against.
struct Watch {
    conn: Arc<ConnState>,
    target: (Method, Uri),
    websocket: bool,
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

impl<F, ResB, E> Future for Answer<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    ResB: Body,
{
    type Output = Result<Response<ServedBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.answer.poll(cx))?;
        let Some(watch) = this.watch.take() else {
            return Poll::Ready(Ok(response.map(ServedBody::plain)));
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            watch.conn.upgrading(watch.websocket, watch.name());
            return Poll::Ready(Ok(response.map(ServedBody::plain)));
        }
        // A body of known length is no stream; only then is the content type read.
        let kind = match response.body().size_hint().exact() {
            Some(_) => None,
            None => StreamKind::of(response.headers()),
        };
        let Some(kind) = kind else {
            return Poll::Ready(Ok(response.map(ServedBody::plain)));
        };
        let ending = Ending::new(kind, Arc::clone(&watch.conn), watch.name());
        Poll::Ready(Ok(response.map(|body| ServedBody::stream(body, ending))))
    }
}
