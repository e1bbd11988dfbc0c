//! The line each answered request logs, and the span every event of the request is logged in.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::http::{Request, Response};
use tower_http::trace::OnResponse;
use tracing::Span;

use super::request_id;

/// Logs `request.finished` (status and latency) in the current span. tower-http's
/// `DefaultOnResponse` at info, plus the stable `event = "request.finished"` that log readers
/// key on (docs/log-events.md) instead of the message text.
fn finished(status: u16, latency: Duration) {
    tracing::info!(
        event = "request.finished",
        status,
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "finished processing request"
    );
}

/// [`finished`] as tower-http's `TraceLayer` calls it (the gRPC stack).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogResponse;

impl<B> OnResponse<B> for LogResponse {
    fn on_response(self, response: &Response<B>, latency: Duration, _span: &Span) {
        finished(response.status().as_u16(), latency);
    }
}

/// For the REST API: the request's span ([`request_id::span`]: method, path, id),
/// with every event logged while it is handled inside it, and [`finished`] when the answer's
/// head is ready. A 5xx is also logged at debug as "response failed", as `TraceLayer` did.
///
/// Why not tower-http's `TraceLayer`, which logs the same line: it also wraps every answer's
/// body to report its end and its failures, entering the span at each frame and closing it
/// only when the body is dropped. REST answers are whole bodies, so that reports nothing
/// more, at a cost per request given in docs/performance.md.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// See [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S, B, A> tower::Service<Request<B>> for AccessLog<S>
where
    S: tower::Service<Request<B>, Response = Response<A>>,
{
    type Response = Response<A>;
    type Error = S::Error;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = request_id::span(&request);
        let started = Instant::now();
        let answer = {
            let _inside = span.enter();
            tracing::debug!("started processing request");
            self.inner.call(request)
        };
        Logged { answer, span, started }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a logged request: polled inside its span, logged once it is ready.
    pub struct Logged<F> {
        #[pin]
        answer: F,
        span: Span,
        started: Instant,
    }
}

impl<F, A, E> Future for Logged<F>
where
    F: Future<Output = Result<Response<A>, E>>,
{
    type Output = Result<Response<A>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _inside = this.span.enter();
        let answer = ready!(this.answer.poll(cx));
        let latency = this.started.elapsed();
        match &answer {
            Ok(response) => {
                let status = response.status();
                finished(status.as_u16(), latency);
                if status.is_server_error() {
                    tracing::debug!(classification = %status, ?latency, "response failed");
                }
            }
            // The REST stack's errors are `Infallible`; another service's are reported here.
            Err(_) => tracing::debug!(?latency, "response failed"),
        }
        Poll::Ready(answer)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::adapter::inbound::middleware::request_id::RequestIdLayer;
    use crate::telemetry::text::{Captured, TextFields, TextLine};

    /// An event logged while a request is handled, and the request's own line, both name the
    /// request (method, path, id) through its span; a 5xx is a failure at debug.
    #[tokio::test]
    async fn every_line_of_a_request_names_it() {
        let lines = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .fmt_fields(TextFields)
            .event_format(TextLine::<crate::telemetry::text::Rfc3339Micros>::default())
            .with_writer(lines.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let handler = tower::service_fn(|_: Request<Body>| async {
            tokio::task::yield_now().await; // polled again: still inside the span
            tracing::warn!("the store is slow");
            Ok::<_, Infallible>(
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .body(Body::empty())
                    .unwrap(),
            )
        });
        let mut service = RequestIdLayer.layer(AccessLogLayer.layer(handler));
        let request = Request::get("/api/orders/1?x=y")
            .header("x-request-id", "abc-1")
            .body(Body::empty())
            .unwrap();
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "abc-1");

        let text = lines.text();
        let request = "request{method=GET uri=/api/orders/1?x=y request_id=abc-1}: ";
        let expect = [
            "DEBUG ".to_owned() + request + "started processing request",
            " WARN ".to_owned() + request + "the store is slow",
            " INFO ".to_owned()
                + request
                + "finished processing request event=\"request.finished\" status=503 latency_us=",
            "DEBUG ".to_owned() + request + "response failed classification=503 Service Unavailable latency=",
        ];
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), expect.len(), "{text}");
        for (line, expect) in got.iter().zip(&expect) {
            assert!(line.contains(expect.as_str()), "{line:?} lacks {expect:?}");
        }
    }
}
