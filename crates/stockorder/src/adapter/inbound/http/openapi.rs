//! The OpenAPI 3.1 description of the REST API, generated from the handlers' and the bodies'
//! annotations (utoipa), so it cannot drift from the code without a test noticing.

use axum::Router;
use serde_json::json;
use utoipa::OpenApi;
use utoipa_scalar::{Scalar, Servable};

use super::dto::{CreateOrderBody, MessageBody, OrderBody, StatusBody};
use super::error::ErrorBody;
use super::handlers;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "stockorder",
        description = "A stock-order service that shuts down without losing a request. Errors are `{\"error\": \"…\"}`; every answer carries `x-request-id`."
    ),
    paths(
        handlers::create_order,
        handlers::list_orders,
        handlers::order_events,
        handlers::get_order,
        handlers::cancel_order,
        handlers::health,
        handlers::ready,
        handlers::metrics,
        handlers::openapi,
    ),
    components(schemas(CreateOrderBody, OrderBody, MessageBody, StatusBody, ErrorBody)),
    tags(
        (name = "orders", description = "Place, read, list and cancel orders"),
        (name = "probes", description = "Liveness and readiness, always open"),
        (name = "operations", description = "Metrics and this document, always open"),
    )
)]
struct ApiDoc;

/// The document as a JSON value. With `auth`, the order operations require a bearer API key.
///
/// Two rules the derive cannot state are added here: a LIMIT order needs a `price` and a
/// MARKET order must not have one.
pub fn document(auth: bool) -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let new_order = &mut doc["components"]["schemas"]["NewOrder"];
    // `null` is accepted as "absent" for the optional fields, and a MARKET price of 0 too (what
    // a proto3 or Go client sends for "no price"); a LIMIT price must be above 0.
    new_order["properties"]["client_order_id"]["type"] = json!(["string", "null"]);
    new_order["properties"]["price"]["type"] = json!(["number", "null"]);
    new_order["oneOf"] = json!([
        {
            "title": "MARKET order: no price (absent, null or 0)",
            "properties": { "order_type": { "const": "MARKET" }, "price": { "enum": [null, 0] } }
        },
        {
            "title": "LIMIT order: a price above 0",
            "properties": { "order_type": { "const": "LIMIT" }, "price": { "type": "number", "exclusiveMinimum": 0 } },
            "required": ["price"]
        }
    ]);
    if auth {
        doc["components"]["securitySchemes"] = json!({
            "api_key": { "type": "http", "scheme": "bearer", "description": "One of API_KEYS" }
        });
        if let Some(paths) = doc["paths"].as_object_mut() {
            for (path, item) in paths.iter_mut() {
                if !path.starts_with("/api/") {
                    continue;
                }
                if let Some(operations) = item.as_object_mut() {
                    for operation in operations.values_mut() {
                        operation["security"] = json!([{ "api_key": [] }]);
                    }
                }
            }
        }
    }
    doc
}

/// `/docs`: Scalar's API reference over `doc`, the document `/openapi.json` serves.
pub fn docs_ui<S: Clone + Send + Sync + 'static>(doc: serde_json::Value) -> Router<S> {
    Router::from(Scalar::with_url("/docs", doc))
}
