//! The REST API as the shared middleware sees it: route templates for metrics labels, the open
//! paths, and JSON refusals.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;

use super::error::ApiError;
use crate::adapter::inbound::middleware::Protocol;
use crate::telemetry::metrics::{Api, Rejection, metrics};

/// Every route template of the router, so a metrics label is one of these and never a path a
/// client made up.
pub const ROUTES: [&str; 8] = [
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/api/orders",
    "/api/orders/{id}",
    "/api/orders/{id}/cancel",
];

/// Paths answered whatever the load and without a key.
const OPEN: [&str; 5] = ["/health", "/ready", "/metrics", "/openapi.json", "/docs"];

/// Marker for the REST API in the shared middleware.
#[derive(Debug, Clone, Copy)]
pub struct Rest;

/// What a REST request is labelled with.
pub struct RestCall {
    method: &'static str,
    route: &'static str,
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Protocol for Rest {
    type Body = Body;
    type Call = RestCall;
    const API: Api = Api::Rest;

    fn is_open(path: &str) -> bool {
        OPEN.contains(&path)
    }

    fn requested_timeout(_: &HeaderMap) -> Option<Duration> {
        None
    }

    fn reject(why: Rejection) -> Response<Body> {
        match why {
            Rejection::Overloaded => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is at its limit of concurrent requests; this request was not processed, retry after a moment",
            )
            .into_response(),
            Rejection::TimedOut => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "the request took longer than the server's REQUEST_TIMEOUT; it may or may not have taken effect (retry a create with the same client_order_id)",
            )
            .into_response(),
            Rejection::Unauthenticated => {
                let mut response = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing or unknown API key: send `Authorization: Bearer <key>`",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
        }
    }

    fn call<B>(request: &Request<B>) -> RestCall {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .and_then(|m| ROUTES.iter().find(|r| **r == m.as_str()))
            .copied()
            .unwrap_or("unmatched");
        RestCall {
            method: method_label(request.method()),
            route,
        }
    }

    fn answered(call: RestCall, response: Response<Body>, started: Instant) -> Response<Body> {
        metrics().http_request(call.method, call.route, response.status().as_u16(), started.elapsed());
        response
    }
}
