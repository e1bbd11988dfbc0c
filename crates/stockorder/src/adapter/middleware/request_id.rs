//! `x-request-id`: kept when the client (or a proxy in front) sent one, generated otherwise,
//! returned on the answer and carried by every log line of the request, so one id finds a
//! request in the client's log, the proxy's and ours.

use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};

/// Generates time-ordered ids (UUIDv7): sorted ids are sorted by arrival, like the order ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::now_v7();
        // A UUID's hyphenated form is ASCII: always a valid header value.
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()))
            .ok()
            .map(RequestId::new)
    }
}

/// Sets the id on the request (outermost, before the log span is made).
pub fn set() -> SetRequestIdLayer<MakeRequestUuidV7> {
    SetRequestIdLayer::x_request_id(MakeRequestUuidV7)
}

/// Copies the id onto the answer.
pub fn propagate() -> PropagateRequestIdLayer {
    PropagateRequestIdLayer::x_request_id()
}

/// The log span of one request: method, path and its id, so every event logged while handling
/// it (the answer's status and latency, an error) names the request.
pub fn span<B>(request: &Request<B>) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        version = ?request.version(),
        request_id = %id,
    )
}
