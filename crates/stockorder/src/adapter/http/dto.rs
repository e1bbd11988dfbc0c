//! The JSON shapes of the REST API (DESIGN §3): field names are the original service's.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{RawOrder, StockOrder};

/// `POST /api/orders` body. Every field is optional here so that a missing one is reported by
/// domain validation with its name, not as a generic deserialisation error.
#[derive(Debug, Deserialize)]
pub struct CreateOrderBody {
    symbol: Option<String>,
    order_type: Option<String>,
    order_side: Option<String>,
    quantity: Option<i64>,
    price: Option<f64>,
    client_order_id: Option<String>,
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
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    pub limit: Option<i64>,
    pub page_token: Option<String>,
    pub status: Option<String>,
    pub symbol: Option<String>,
    pub side: Option<String>,
}

/// An order as the API shows it. Borrows from the domain order: serialising a page of 1000
/// orders copies no strings.
#[derive(Debug, Serialize)]
pub struct OrderBody<'a> {
    id: String,
    symbol: &'a str,
    order_type: &'static str,
    order_side: &'static str,
    quantity: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<f64>,
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
            id: o.id.to_string(),
            symbol: o.symbol.as_str(),
            order_type: o.order_type.as_str(),
            order_side: o.order_side.as_str(),
            quantity: o.quantity.get(),
            price: o.price.map(|p| p.get()),
            status: o.status.as_str(),
            created_at: o.created_at.as_datetime(),
            updated_at: o.updated_at.as_datetime(),
            description: o.description.as_deref().filter(|d| !d.is_empty()),
            client_order_id: o.client_order_id.as_ref().map(|k| k.as_str()),
            fill_price: o.fill_price.map(|p| p.get()),
            filled_at: o.filled_at.map(|t| t.as_datetime()),
            cancelled_at: o.cancelled_at.map(|t| t.as_datetime()),
        }
    }
}

/// `{"message": "…"}`, the original's answer to a cancel.
#[derive(Debug, Serialize)]
pub struct MessageBody {
    pub message: &'static str,
}

/// `{"status": "…"}` for the health and readiness probes.
#[derive(Debug, Serialize)]
pub struct StatusBody {
    pub status: &'static str,
}
