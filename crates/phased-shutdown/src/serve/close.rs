//! `Connection: close` on HTTP/1 answers once the instance is draining.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use crate::Readiness;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};

/// Wraps a service so that, from the moment shutdown starts (readiness draining, or the server
/// it runs in has stopped accepting), every HTTP/1 response asks the client to close the
/// connection. The client then sends its next request on a new connection,
/// which a load balancer routes elsewhere, instead of reusing one that is about to close: the
/// keep-alive close race cannot happen on a connection that was told to close. Checked when the
/// response is ready, so a request that began before the trigger is covered too.
#[derive(Clone)]
pub struct CloseWhenDraining<S> {
    inner: S,
    closing: Closer,
}

/// What says "close": readiness, or the server stopping.
#[derive(Clone)]
struct Closer {
    readiness: Readiness,
    stopped: Arc<AtomicBool>,
}

impl Closer {
    fn now(&self) -> bool {
        self.readiness.is_draining() || self.stopped.load(Ordering::Relaxed)
    }
}

impl<S> CloseWhenDraining<S> {
    /// `inner`, answering with `Connection: close` once `readiness` is draining.
    pub fn new(inner: S, readiness: Readiness) -> Self {
        Self::or_when(inner, readiness, Arc::default())
    }

    /// `inner`, answering with `Connection: close` once `readiness` is draining or `stopped`
    /// is set: a server that stops while its readiness still says ready (it was never told, or
    /// nobody flips it) closes its keep-alive connections after their next answer instead of
    /// serving them until the idle grace runs out.
    pub(super) fn or_when(inner: S, readiness: Readiness, stopped: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            closing: Closer { readiness, stopped },
        }
    }
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for CloseWhenDraining<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = Closing<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // HTTP/2 has no Connection header (GOAWAY does this job there).
        let closing = (request.version() <= Version::HTTP_11).then(|| self.closing.clone());
        Closing {
            answer: self.inner.call(request),
            closing,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a request, marked `Connection: close` if the instance is draining when it
    /// is ready. A named future rather than a boxed one: this wraps every request.
    pub struct Closing<F> {
        #[pin]
        answer: F,
        // Only for HTTP/1 requests.
        closing: Option<Closer>,
    }
}

impl<F, ResB, E> Future for Closing<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.answer.poll(cx))?;
        // A `101 Switching Protocols` keeps its `Connection: upgrade`: the connection becomes
        // the upgraded protocol's, which the server ends its own way.
        if response.status() != StatusCode::SWITCHING_PROTOCOLS && this.closing.as_ref().is_some_and(Closer::now) {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response))
    }
}
