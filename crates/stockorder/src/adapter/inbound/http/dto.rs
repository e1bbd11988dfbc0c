//! The JSON shapes of the REST API (docs/api.md): field names are the original service's.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::domain::{RawOrder, StockOrder};

// Every field is optional in Rust so that a missing one is reported by domain validation with
// its name, not as a generic deserialisation error; the schema attributes state what validation
// accepts, and `super::openapi` adds the LIMIT/MARKET price rule. The doc comment is the schema's
// description.
// Unknown fields are refused, not ignored: a misspelt `client_order_id` (say the camelCase
// `clientOrderId` that gRPC's JSON mapping uses) would otherwise lose the retry protection
// without a word. The OpenAPI schema says so too (`additionalProperties: false`).
/// A new order (`POST /api/orders`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewOrder)]
pub struct CreateOrderBody {
    /// Ticker: 1–12 letters, digits, `.` or `-`; stored upper-cased.
    #[schema(required = true, value_type = String, pattern = r"^[A-Za-z0-9.\-]{1,12}$", example = "AAPL")]
    symbol: Option<String>,
    /// `MARKET` executes at the market price; `LIMIT` at `price` or better.
    #[schema(required = true, value_type = OrderTypeSchema)]
    order_type: Option<String>,
    /// `BUY` or `SELL`.
    #[schema(required = true, value_type = OrderSideSchema)]
    order_side: Option<String>,
    /// Shares, 1 to 2 147 483 647.
    #[schema(required = true, value_type = i64, minimum = 1, maximum = 2147483647, example = 100)]
    #[serde(default, deserialize_with = "whole_number")]
    quantity: Option<i64>,
    /// Limit price, greater than 0: required for LIMIT orders, omitted for MARKET orders.
    #[schema(required = false, value_type = f64, minimum = 0, example = 150.75)]
    price: Option<f64>,
    /// Idempotency key, 1–64 printable ASCII characters without spaces: the same key with the
    /// same order returns the first order (200), with a different order 409.
    #[schema(required = false, value_type = String, pattern = r"^[!-~]{1,64}$")]
    client_order_id: Option<String>,
}

/// A quantity as JSON writes it. JSON has one number type, and to JSON Schema (and to many
/// clients' serialisers) `100.0` is the whole number 100, so it is accepted; `1.5` is not.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    // Beyond ±2^53 a float is not exact; such a value is far out of range anyway.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
                .map(|f| f as i64)
        })
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("must be a whole number from 1 to {}, got {n}", i32::MAX)))
}

/// Order types, as the API writes them (parsed case-insensitively).
#[derive(ToSchema)]
#[schema(as = OrderType)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum OrderTypeSchema {
    MARKET,
    LIMIT,
}

/// Order sides, as the API writes them (parsed case-insensitively).
#[derive(ToSchema)]
#[schema(as = OrderSide)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum OrderSideSchema {
    BUY,
    SELL,
}

/// Order statuses, as the API writes them (parsed case-insensitively in filters).
#[derive(ToSchema)]
#[schema(as = OrderStatus)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum OrderStatusSchema {
    PENDING,
    FILLED,
    CANCELLED,
    REJECTED,
}

impl From<CreateOrderBody> for RawOrder {
    fn from(b: CreateOrderBody) -> Self {
        RawOrder {
            symbol: b.symbol,
            order_type: b.order_type,
            order_side: b.order_side,
            quantity: b.quantity,
            price: b.price,
            client_order_id: b.client_order_id,
        }
    }
}

/// `GET /api/orders` query string.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(required = false, value_type = i64, minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Where the page starts: the token of the previous page's `Link: rel="next"`.
    #[param(required = false, value_type = String, pattern = r"^[0-9a-fA-F]{32}$")]
    pub page_token: Option<String>,
    /// Only orders in this status.
    #[param(required = false, value_type = OrderStatusSchema)]
    pub status: Option<String>,
    /// Only orders of this symbol.
    #[param(required = false, value_type = String, pattern = r"^[A-Za-z0-9.\-]{1,12}$")]
    pub symbol: Option<String>,
    /// Only orders of this side.
    #[param(required = false, value_type = OrderSideSchema)]
    pub side: Option<String>,
}

/// `GET /api/orders/events` query string.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Resume after this sequence (0: the whole history the log holds); wins over the
    /// `Last-Event-ID` header. Neither: live events only, from now.
    #[param(required = false, value_type = i64, minimum = 0, maximum = 9223372036854775807_i64)]
    pub after: Option<String>,
    /// Only events of orders of this symbol.
    #[param(required = false, value_type = String, pattern = r"^[A-Za-z0-9.\-]{1,12}$")]
    pub symbol: Option<String>,
}

// Borrows from the domain order: serialising a page of 1000 orders copies no strings.
/// An order as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderBody<'a> {
    #[schema(format = Uuid)]
    id: String,
    symbol: &'a str,
    #[schema(value_type = OrderTypeSchema)]
    order_type: &'static str,
    #[schema(value_type = OrderSideSchema)]
    order_side: &'static str,
    quantity: i32,
    /// The limit price; absent for MARKET orders.
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<f64>,
    #[schema(value_type = OrderStatusSchema)]
    status: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_order_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fill_price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    filled_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    cancelled_at: Option<OffsetDateTime>,
}

impl<'a> From<&'a StockOrder> for OrderBody<'a> {
    fn from(o: &'a StockOrder) -> Self {
        OrderBody {
            id: o.id().to_string(),
            symbol: o.symbol().as_str(),
            order_type: o.order_type().as_str(),
            order_side: o.order_side().as_str(),
            quantity: o.quantity().get(),
            price: o.price().map(|p| p.get()),
            status: o.status().as_str(),
            created_at: o.created_at().as_datetime(),
            updated_at: o.updated_at().as_datetime(),
            description: o.description().filter(|d| !d.is_empty()),
            client_order_id: o.client_order_id().as_ref().map(|k| k.as_str()),
            fill_price: o.fill_price().map(|p| p.get()),
            filled_at: o.filled_at().map(|t| t.as_datetime()),
            cancelled_at: o.cancelled_at().map(|t| t.as_datetime()),
        }
    }
}

/// `{"message": "…"}`, the original's answer to a cancel.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Message)]
pub struct MessageBody {
    pub message: &'static str,
}

/// `{"status": "…"}` for the health and readiness probes.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProbeStatus)]
pub struct StatusBody {
    pub status: &'static str,
}
