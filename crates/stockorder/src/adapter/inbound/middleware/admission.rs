//! Who gets in, how many at once, and for how long: API keys, load shedding, timeouts.
//!
//! Why shed rather than queue: a server that queues every request it cannot serve now answers
//! all of them late, and clients time out and retry into a longer queue. Refusing the excess at
//! once (503 + `Retry-After`, or RESOURCE_EXHAUSTED) costs microseconds, tells the client the
//! request was *not* processed, and keeps the latency of the admitted ones flat.
//!
//! Open paths ([`Protocol::is_open`]) skip the key and the limit, never the timeout.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::{Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Protocol;
use super::api_keys::ApiKeys;
use crate::telemetry::metrics::{Rejection, metrics};

/// The limits of one port.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Accepted keys; `None` admits everyone.
    pub keys: Option<Arc<ApiKeys>>,
    /// Requests handled at once; more are shed.
    pub max_concurrent: usize,
    /// Longest a request may take (a client's shorter `grpc-timeout` wins).
    pub timeout: Duration,
}

impl Default for Limits {
    /// No keys, and the command line's defaults ([`crate::config::defaults`]).
    fn default() -> Self {
        Self {
            keys: None,
            max_concurrent: crate::config::defaults::MAX_CONCURRENT_REQUESTS as usize,
            timeout: crate::config::defaults::REQUEST_TIMEOUT,
        }
    }
}

/// What every copy of the layer shares. One `Arc`, because the service is cloned for every
/// request.
struct Shared {
    keys: Option<Arc<ApiKeys>>,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

/// Adds [`Admission`] around a service. Clones share one concurrency budget.
#[derive(Clone)]
pub struct AdmissionLayer<P> {
    shared: Arc<Shared>,
    protocol: PhantomData<P>,
}

impl<P> AdmissionLayer<P> {
    /// A budget of `limits.max_concurrent` requests for every service this layer wraps.
    pub fn new(limits: &Limits) -> Self {
        Self {
            shared: Arc::new(Shared {
                keys: limits.keys.clone(),
                permits: Arc::new(Semaphore::new(limits.max_concurrent)),
                timeout: limits.timeout,
            }),
            protocol: PhantomData,
        }
    }
}

impl<S, P> tower::Layer<S> for AdmissionLayer<P> {
    type Service = Admission<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            shared: Arc::clone(&self.shared),
            protocol: PhantomData,
        }
    }
}

/// Applies the limits; see the module documentation.
pub struct Admission<S, P> {
    inner: S,
    shared: Arc<Shared>,
    protocol: PhantomData<P>,
}

impl<S: Clone, P> Clone for Admission<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            protocol: PhantomData,
        }
    }
}

impl<S, P, B> tower::Service<Request<B>> for Admission<S, P>
where
    P: Protocol,
    S: tower::Service<Request<B>, Response = Response<P::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<P::Body>;
    type Error = Infallible;
    type Future = Admitted<S::Future, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let refuse = |why| -> Self::Future {
            metrics().rejected(P::API, why);
            Admitted::Refused {
                answer: Some(P::reject(why)),
            }
        };
        let shared = &*self.shared;
        let open = P::is_open(request.uri().path());
        let permit = if open {
            None
        } else {
            if let Some(keys) = &shared.keys
                && !keys.admits(request.headers())
            {
                return refuse(Rejection::Unauthenticated);
            }
            match Arc::clone(&shared.permits).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return refuse(Rejection::Overloaded),
            }
        };
        let timeout = P::requested_timeout(request.headers()).map_or(shared.timeout, |t| t.min(shared.timeout));
        if timeout.is_zero() {
            // The client's deadline has already passed: running the request could only waste
            // work nobody will read.
            return refuse(Rejection::TimedOut);
        }
        Admitted::Running {
            answer: tokio::time::timeout(timeout, self.inner.call(request)),
            _permit: permit,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of an admitted request, or the refusal of one that was not. A named future
    /// rather than a boxed one, as this runs for every request.
    #[project = AdmittedProj]
    #[allow(missing_docs)] // fields of a future's states, described on their variants
    pub enum Admitted<F, P: Protocol> {
        /// Refused before it ran; the answer is taken when polled.
        Refused { answer: Option<Response<P::Body>> },
        /// Running under its timeout, holding its place in the concurrency budget (none for
        /// open paths) until done.
        Running {
            #[pin]
            answer: tokio::time::Timeout<F>,
            _permit: Option<OwnedSemaphorePermit>,
        },
    }
}

impl<F, P> Future for Admitted<F, P>
where
    P: Protocol,
    F: Future<Output = Result<Response<P::Body>, Infallible>>,
{
    type Output = Result<Response<P::Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmittedProj::Refused { answer } => match answer.take() {
                Some(answer) => Poll::Ready(Ok(answer)),
                // Polled again after it was ready: a bug in the caller.
                None => panic!("Admitted polled after completion"),
            },
            AdmittedProj::Running { answer, .. } => match ready!(answer.poll(cx)) {
                Ok(answer) => Poll::Ready(answer),
                Err(_elapsed) => {
                    metrics().rejected(P::API, Rejection::TimedOut);
                    Poll::Ready(Ok(P::reject(Rejection::TimedOut)))
                }
            },
        }
    }
}
