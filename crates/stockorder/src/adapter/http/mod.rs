//! The REST adapter (axum): routes of DESIGN §3 over any [`OrderService`].

mod dto;
mod error;
mod handlers;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use graceful::Readiness;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::port::OrderService;

pub use error::ApiError;

/// The largest request body accepted. An order is ~200 bytes; anything near this limit is a
/// mistake or an attack, and is answered 413 before it is buffered.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach: the service, and whether this instance is ready for traffic.
pub struct HttpState<S> {
    service: Arc<S>,
    readiness: Readiness,
}

impl<S> Clone for HttpState<S> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
            readiness: self.readiness.clone(),
        }
    }
}

/// The REST API. `readiness` drives `GET /ready`: 200 until shutdown starts, 503 after.
pub fn router<S: OrderService>(service: Arc<S>, readiness: Readiness) -> Router {
    Router::new()
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready::<S>))
        .route(
            "/api/orders",
            post(handlers::create_order::<S>).get(handlers::list_orders::<S>),
        )
        .route("/api/orders/{id}", get(handlers::get_order::<S>))
        .route("/api/orders/{id}/cancel", post(handlers::cancel_order::<S>))
        .fallback(handlers::no_route)
        .method_not_allowed_fallback(handlers::wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(HttpState { service, readiness })
}
