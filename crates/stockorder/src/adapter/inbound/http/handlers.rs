//! The request handlers: decode, call the service, encode. No business rule lives here.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::dto::{CreateOrderBody, EventParams, ListParams, MessageBody, OrderBody, StatusBody};
use super::error::{ApiError, ErrorBody};
use super::{HttpState, json};
use crate::domain::{OrderId, RawOrder, Symbol, ValidationError, parse_variant};
use crate::port::{CANCELLED_MESSAGE, EventStart, ListQuery, OrderService, PageLimit, PageToken};

/// The answers any order endpoint may give whatever the request: refusals by the limits and
/// the API keys (`adapter::inbound::middleware`), documented once for every operation.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes answers built elsewhere; never constructed
pub enum Refusals<'a> {
    /// API keys are configured and none (or an unknown one) was sent
    #[response(status = 401)]
    Unauthorized(ErrorBody<'a>),
    /// Overloaded or shutting down: not processed, retry after `Retry-After`
    #[response(status = 503)]
    Unavailable(ErrorBody<'a>),
    /// Took longer than REQUEST_TIMEOUT: it may or may not have taken effect (retry a create with
    /// the same `client_order_id`)
    #[response(status = 504)]
    TimedOut(ErrorBody<'a>),
}

/// Liveness: answers 200 as long as the process serves HTTP, draining or not, so an
/// orchestrator never kills an instance that is finishing its requests.
#[utoipa::path(get, path = "/health", tag = "probes",
    responses((status = 200, description = "The process serves HTTP", body = StatusBody)))]
pub async fn health() -> Json<StatusBody> {
    Json(StatusBody { status: "ok" })
}

/// Readiness: 200 while this instance wants new traffic; 503 once shutdown has begun (so a load
/// balancer stops routing here before the listener closes) and while storage cannot write (so
/// it routes to a healthy replica until writes work again).
#[utoipa::path(get, path = "/ready", tag = "probes", responses(
    (status = 200, description = "Ready for traffic", body = StatusBody),
    (status = 503, description = "Shutting down (`draining`) or storage cannot write (`storage failing`): route new requests elsewhere", body = StatusBody),
))]
pub async fn ready<S: OrderService>(State(state): State<HttpState<S>>) -> Response {
    let unready = |status| (StatusCode::SERVICE_UNAVAILABLE, Json(StatusBody { status })).into_response();
    if !state.readiness.is_ready() {
        unready("draining")
    } else if !state.service.can_write() {
        unready("storage failing")
    } else {
        Json(StatusBody { status: "ready" }).into_response()
    }
}

/// Places an order. It is durable (committed with `synchronous=FULL`) before the answer.
#[utoipa::path(post, path = "/api/orders", tag = "orders", request_body = CreateOrderBody, responses(
    (status = 201, description = "Created", body = OrderBody,
        headers(("Location" = String, description = "The order's URL"))),
    (status = 200, description = "Replay: an order with this `client_order_id` and the same fields exists", body = OrderBody,
        headers(("Location" = String, description = "The order's URL"))),
    (status = 400, description = "Malformed JSON or an invalid field (named in the message)", body = ErrorBody),
    (status = 409, description = "The `client_order_id` belongs to a different order", body = ErrorBody),
    (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
    (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
    Refusals,
))]
pub async fn create_order<S: OrderService>(
    State(state): State<HttpState<S>>,
    body: Result<Json<CreateOrderBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let new = RawOrder::from(body).validate()?;
    let created = state.service.create(new).await?;
    let status = if created.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let location = HeaderValue::try_from(format!("/api/orders/{}", created.order.id()))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((status, [(header::LOCATION, location)], json::order(&created.order)?).into_response())
}

/// The order event log as Server-Sent Events: `id: <sequence>`, `event: order`, `data:` the
/// event's JSON. Resumes after the `Last-Event-ID` header or `?after=`; with neither, live events
/// only. A comment every 15 s keeps proxies from closing an idle stream. At shutdown the stream
/// ends after the event in progress with a `retry:` hint (the serve adapter's doing); the
/// client reconnects, here or elsewhere, with its last id.
#[utoipa::path(get, path = "/api/orders/events", tag = "orders", params(EventParams),
    responses(
        (status = 200, description = "A stream of `text/event-stream` events", content_type = "text/event-stream"),
        (status = 400, description = "`after` (or `Last-Event-ID`) is not a sequence number, or `symbol` is invalid", body = ErrorBody),
        (status = 410, description = "`after` is older than the history the log holds", body = ErrorBody),
        Refusals,
    ))]
pub async fn order_events<S: OrderService>(
    State(state): State<HttpState<S>>,
    headers: axum::http::HeaderMap,
    params: Result<Query<EventParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt as _;

    let Query(params) = params?;
    let after = match (params.after.as_deref(), headers.get("last-event-id")) {
        (Some(after), _) => Some(sequence("after", after)?),
        (None, Some(id)) => Some(sequence("Last-Event-ID", id.to_str().unwrap_or("?"))?),
        (None, None) => None,
    };
    let symbol = params.symbol.as_deref().map(Symbol::parse).transpose()?;
    let start = after.map_or(EventStart::Live, EventStart::After);
    let events = state.service.clone().follow(start, symbol).await?;
    // An error ends the stream (`scan` stops at the first `None`); the client resumes after
    // the last id it got.
    let stream = events.scan((), |(), event| {
        let sent = match event.map(|e| (e.sequence, json::event(&e))) {
            Ok((sequence, Ok(data))) => Some(Ok::<_, std::convert::Infallible>(
                Event::default().id(sequence.to_string()).event("order").data(data),
            )),
            Ok((_, Err(e))) => {
                tracing::error!(error = ?e, "cannot write an order event");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "order event stream ended by a storage error");
                None
            }
        };
        std::future::ready(sent)
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response())
}

/// A sequence number from the query or the `Last-Event-ID` header: 0 to 2^63 − 1, the range
/// the API document states.
fn sequence(field: &'static str, text: &str) -> Result<u64, ValidationError> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(|n| n as u64)
        .ok_or_else(|| {
            let shown: String = text.chars().take(32).collect();
            ValidationError::new(
                field,
                format!("must be an event sequence number from 0 to {}, got {shown:?}", i64::MAX),
            )
        })
}

/// One order.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        Refusals,
    ))]
pub async fn get_order<S: OrderService>(
    State(state): State<HttpState<S>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let order = state.service.get(id.parse::<OrderId>()?).await?;
    json::order(&order)
}

/// Orders, newest first, one page at a time.
#[utoipa::path(get, path = "/api/orders", tag = "orders", params(ListParams), responses(
    (status = 200, description = "A page of orders", body = Vec<OrderBody>,
        headers(("Link" = String, description = "`<…>; rel=\"next\"` when there is a next page"))),
    (status = 400, description = "An invalid filter, limit or page token", body = ErrorBody),
    Refusals,
))]
pub async fn list_orders<S: OrderService>(
    State(state): State<HttpState<S>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let query = list_query(&params)?;
    let page = state.service.list(query.clone()).await?;
    let mut response = json::orders(&page.orders)?;
    if let Some(next) = page.next {
        let link = next_link(&query, next);
        if let Ok(value) = HeaderValue::try_from(link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// Cancels a pending order.
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "Cancelled", body = MessageBody),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "The order is no longer pending", body = ErrorBody),
        Refusals,
    ))]
pub async fn cancel_order<S: OrderService>(
    State(state): State<HttpState<S>>,
    Path(id): Path<String>,
) -> Result<Json<MessageBody>, ApiError> {
    state.service.cancel(id.parse::<OrderId>()?).await?;
    Ok(Json(MessageBody {
        message: CANCELLED_MESSAGE,
    }))
}

/// Prometheus metrics in the text exposition format (see the README for the series).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Every metric", content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::telemetry::metrics::metrics().render(),
    )
}

/// This API's OpenAPI 3.1 description, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn openapi<S>(State(state): State<HttpState<S>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi.clone())
}

pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route for {method} {}", uri.path()))
}

pub async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn list_query(p: &ListParams) -> Result<ListQuery, ValidationError> {
    Ok(ListQuery {
        limit: p.limit.map(PageLimit::parse).transpose()?.unwrap_or_default(),
        page_token: p.page_token.as_deref().map(PageToken::decode).transpose()?,
        status: p.status.as_deref().map(|s| parse_variant("status", s)).transpose()?,
        symbol: p.symbol.as_deref().map(Symbol::parse).transpose()?,
        side: p.side.as_deref().map(|s| parse_variant("side", s)).transpose()?,
    })
}

/// `</api/orders?…&page_token=…>; rel="next"` (RFC 8288), repeating the filters so following
/// the link continues the same listing. Every value is from a validated, URL-safe alphabet.
fn next_link(q: &ListQuery, next: PageToken) -> String {
    let mut url = format!("/api/orders?limit={}", q.limit.get());
    if let Some(s) = q.status {
        url.push_str(&format!("&status={s}"));
    }
    if let Some(s) = &q.symbol {
        url.push_str(&format!("&symbol={s}"));
    }
    if let Some(s) = q.side {
        url.push_str(&format!("&side={s}"));
    }
    format!("<{url}&page_token={}>; rel=\"next\"", next.encode())
}
