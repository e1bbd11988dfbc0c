//! Request middleware shared by the REST and gRPC adapters: what happens to a request before
//! and after its handler, whatever the protocol.
//!
//! - [`observe`]: metrics (count, latency, in flight) for every answer, limits' refusals
//!   included.
//! - [`admission`]: API keys, the concurrency limit that sheds load instead of queueing it, and
//!   the per-request timeout.
//! - [`request_id`]: an `x-request-id` on every request and answer, and in every log line.
//! - [`access_log`]: the line each answered request logs.
//!
//! The middleware knows nothing of either protocol: each adapter describes its own through
//! [`Protocol`] (how to name a route, which paths stay open, how to say "no").

pub mod access_log;
pub mod admission;
pub mod api_keys;
pub mod observe;
pub mod request_id;

use std::time::Duration;

use axum::http::{HeaderMap, Request, Response};

use crate::telemetry::metrics::{Api, Rejection};

/// What the middleware needs to know about a protocol.
pub trait Protocol: Clone + Send + Sync + 'static {
    /// The body of this protocol's answers.
    type Body: Send + 'static;

    /// Which API this is, for metrics labels.
    const API: Api;

    /// Whether `path` must be answered whatever the load and without a key: health and
    /// readiness probes (an orchestrator that cannot probe an overloaded instance kills it,
    /// which makes the overload worse), metrics, and the API's own description.
    fn is_open(path: &str) -> bool;

    /// The deadline the client set on this request, if the protocol has one (`grpc-timeout`).
    fn requested_timeout(headers: &HeaderMap) -> Option<Duration>;

    /// The answer for a request refused or cut short by a limit.
    fn reject(why: Rejection) -> Response<Self::Body>;

    /// What to remember about a request before it is handled, to label its metrics once it
    /// is answered.
    type Call: Send + 'static;

    /// Takes the labels of a request (route template, method).
    fn call<B>(request: &Request<B>) -> Self::Call;

    /// Records the answer to `call`, for a request that arrived at `started`. May wrap the
    /// body to record only when it ends (gRPC puts its status in trailers).
    fn answered(call: Self::Call, response: Response<Self::Body>, started: std::time::Instant) -> Response<Self::Body>;
}
