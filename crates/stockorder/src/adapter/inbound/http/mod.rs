//! The REST adapter (axum): the routes of docs/api.md over any [`OrderService`], plus the operator's
//! endpoints (`/metrics`, `/openapi.json`, optionally `/docs`).

mod dto;
mod error;
mod handlers;
mod json;
mod openapi;
mod protocol;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use bytes::Bytes;
use phased_shutdown::Readiness;
use tower::ServiceBuilder;

use crate::adapter::inbound::middleware::access_log::AccessLogLayer;
use crate::adapter::inbound::middleware::admission::{AdmissionLayer, Limits};
use crate::adapter::inbound::middleware::observe::ObserveLayer;
use crate::adapter::inbound::middleware::request_id;
use crate::port::OrderService;

pub use error::ApiError;
pub use protocol::Rest;

/// The largest request body accepted. An order is ~200 bytes; anything near this limit is a
/// mistake or an attack, and is answered 413 before it is buffered.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach: the service, whether this instance is ready for traffic, and
/// the API description. Behind one `Arc`: axum clones the state for every request, and one
/// reference count is cheaper than one per field.
pub struct HttpState<S>(Arc<StateInner<S>>);

/// The fields of [`HttpState`].
pub struct StateInner<S> {
    service: Arc<S>,
    readiness: Readiness,
    openapi: Bytes,
}

impl<S> Clone for HttpState<S> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<S> std::ops::Deref for HttpState<S> {
    type Target = StateInner<S>;

    fn deref(&self) -> &StateInner<S> {
        &self.0
    }
}

/// How the REST API is served beyond its routes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// API keys, concurrency limit and request timeout.
    pub limits: Limits,
    /// Serve an interactive API reference (Scalar) at `/docs`. It loads its script from a CDN
    /// in the browser, so it is off by default.
    pub docs_ui: bool,
}

/// The REST API with default [`Options`]. `readiness` drives `GET /ready`: 200 until shutdown
/// starts, 503 after.
pub fn router<S: OrderService>(service: Arc<S>, readiness: Readiness) -> Router {
    router_with(service, readiness, &Options::default())
}

/// The REST API with the given options.
pub fn router_with<S: OrderService>(service: Arc<S>, readiness: Readiness, options: &Options) -> Router {
    let mut router = Router::new()
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready::<S>))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(handlers::openapi))
        // The body limit where a body is read: every other request skips its layer (and the
        // map insertion it costs each request).
        .route(
            "/api/orders",
            post(handlers::create_order::<S>)
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .get(handlers::list_orders::<S>),
        )
        .route("/api/orders/events", get(handlers::order_events::<S>))
        .route("/api/orders/{id}", get(handlers::get_order::<S>))
        .route("/api/orders/{id}/cancel", post(handlers::cancel_order::<S>));
    let doc = openapi::document(options.limits.keys.is_some());
    if options.docs_ui {
        router = router.merge(openapi::docs_ui(doc.clone()));
    }
    router
        .fallback(handlers::no_route)
        .method_not_allowed_fallback(handlers::wrong_method)
        // Inner to outer: limits, then metrics (which count the limits' refusals too), then the
        // log span, then the request id the span and the answer carry.
        .layer(
            ServiceBuilder::new()
                .layer(request_id::RequestIdLayer)
                .layer(AccessLogLayer)
                .layer(ObserveLayer::<Rest>::new())
                .layer(AdmissionLayer::<Rest>::new(&options.limits)),
        )
        .with_state(HttpState(Arc::new(StateInner {
            service,
            readiness,
            openapi: Bytes::from(doc.to_string()),
        })))
}
