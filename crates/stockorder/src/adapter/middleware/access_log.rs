//! The line each answered request logs.

use std::time::Duration;

use axum::http::Response;
use tower_http::trace::OnResponse;
use tracing::Span;

/// tower-http's `DefaultOnResponse` at info, plus the stable `event = "request.finished"` that
/// log readers key on (docs/log-events.md) instead of the message text. Logged inside the
/// request's span, so JSON lines carry its method, path and request id.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogResponse;

impl<B> OnResponse<B> for LogResponse {
    fn on_response(self, response: &Response<B>, latency: Duration, _span: &Span) {
        tracing::info!(
            event = "request.finished",
            status = response.status().as_u16(),
            latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            "finished processing request"
        );
    }
}
