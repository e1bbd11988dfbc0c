//! Metrics for every request: in flight while it runs, then counted and timed by the protocol's
//! own labels ([`Protocol::answered`]).

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::http::{Request, Response};

use super::Protocol;
use crate::telemetry::metrics::{InFlight, metrics};

/// Adds [`Observe`] around a service.
#[derive(Clone)]
pub struct ObserveLayer<P>(PhantomData<P>);

impl<P> ObserveLayer<P> {
    /// Observes requests of protocol `P`.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<P> Default for ObserveLayer<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, P> tower::Layer<S> for ObserveLayer<P> {
    type Service = Observe<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            protocol: PhantomData,
        }
    }
}

/// Records each request's metrics; see the module documentation.
pub struct Observe<S, P> {
    inner: S,
    protocol: PhantomData<P>,
}

impl<S: Clone, P> Clone for Observe<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            protocol: PhantomData,
        }
    }
}

impl<S, P, B> tower::Service<Request<B>> for Observe<S, P>
where
    P: Protocol,
    S: tower::Service<Request<B>, Response = Response<P::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<P::Body>;
    type Error = Infallible;
    type Future = Observed<S::Future, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let in_flight = metrics().in_flight(P::API);
        let call = P::call(&request);
        Observed {
            answer: self.inner.call(request),
            pending: Some((call, started, in_flight)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of an observed request: records it when it is ready. A named future rather
    /// than a boxed one, as this runs for every request.
    pub struct Observed<F, P: Protocol> {
        #[pin]
        answer: F,
        pending: Option<(P::Call, Instant, InFlight)>,
    }
}

impl<F, P> Future for Observed<F, P>
where
    P: Protocol,
    F: Future<Output = Result<Response<P::Body>, Infallible>>,
{
    type Output = Result<Response<P::Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.answer.poll(cx));
        let Some((call, started, in_flight)) = this.pending.take() else {
            // Polled again after it was ready: a bug in the caller, answered as tower expects.
            panic!("Observed polled after completion");
        };
        drop(in_flight);
        Poll::Ready(Ok(P::answered(call, response, started)))
    }
}
