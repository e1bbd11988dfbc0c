//! `Connection: close` on HTTP/1 answers once the instance is draining.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::Readiness;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::{Request, Response, Version};

/// Wraps a service so that, from the moment shutdown starts, every HTTP/1 response asks the
/// client to close the connection. The client then sends its next request on a new connection,
/// which a load balancer routes elsewhere, instead of reusing one that is about to close: the
/// keep-alive close race cannot happen on a connection that was told to close. Checked when the
/// response is ready, so a request that began before the trigger is covered too.
#[derive(Clone)]
pub struct CloseWhenDraining<S> {
    inner: S,
    readiness: Readiness,
}

impl<S> CloseWhenDraining<S> {
    /// `inner`, answering with `Connection: close` once `readiness` is draining.
    pub fn new(inner: S, readiness: Readiness) -> Self {
        Self { inner, readiness }
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
        let readiness = (request.version() <= Version::HTTP_11).then(|| self.readiness.clone());
        Closing {
            answer: self.inner.call(request),
            readiness,
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
        readiness: Option<Readiness>,
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
        if this.readiness.as_ref().is_some_and(Readiness::is_draining) {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response))
    }
}
