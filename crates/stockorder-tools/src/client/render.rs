//! How the clients print: one line per order in the loop, JSON for single calls.

use std::time::Duration;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::CallError;
use crate::proto;

/// The wall-clock time, to the millisecond, so loop lines can be matched with server logs.
pub(super) fn clock() -> String {
    let t = OffsetDateTime::now_utc().time();
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `12:00:01.123Z  placed  <id>  AAPL MARKET BUY 100  PENDING  (1.9 ms)`, or the failure.
pub(super) fn loop_line(answer: &Result<Value, CallError>, took: Duration) -> String {
    let ms = took.as_secs_f64() * 1000.0;
    match answer {
        Ok(order) => {
            let field = |name: &str| {
                order
                    .get(name)
                    .map(|v| v.to_string().replace('"', ""))
                    .unwrap_or_default()
            };
            format!(
                "{}  placed  {}  {} {} {} {}  {}  ({ms:.1} ms)",
                clock(),
                field("id"),
                field("symbol"),
                field("order_type"),
                field("order_side"),
                field("quantity"),
                field("status"),
            )
        }
        Err(e) => format!("{}  FAILED  {e}  ({ms:.1} ms)", clock()),
    }
}

/// The canonical name of a gRPC code (`NOT_FOUND`), as the gRPC spec and grpcurl spell it.
pub fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn rfc3339(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(|t| {
        let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
        OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
    })
    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
    .map_or(Value::Null, Value::String)
}

/// A gRPC order in the REST JSON shape: same field names, enum names as text, RFC 3339 times,
/// and the fields REST omits when empty omitted here too.
pub(super) fn order_json(o: &proto::StockOrder) -> Value {
    let mut v = Map::new();
    let mut put = |key: &str, value: Value| {
        v.insert(key.to_owned(), value);
    };
    put("id", json!(o.id));
    put("symbol", json!(o.symbol));
    put("order_type", json!(o.order_type().as_str_name()));
    put("order_side", json!(o.order_side().as_str_name()));
    put("quantity", json!(o.quantity));
    if o.price != 0.0 {
        put("price", json!(o.price));
    }
    put("status", json!(o.status().as_str_name()));
    put("created_at", rfc3339(o.created_at.as_ref()));
    put("updated_at", rfc3339(o.updated_at.as_ref()));
    if !o.description.is_empty() {
        put("description", json!(o.description));
    }
    if !o.client_order_id.is_empty() {
        put("client_order_id", json!(o.client_order_id));
    }
    if o.fill_price != 0.0 {
        put("fill_price", json!(o.fill_price));
    }
    if o.filled_at.is_some() {
        put("filled_at", rfc3339(o.filled_at.as_ref()));
    }
    if o.cancelled_at.is_some() {
        put("cancelled_at", rfc3339(o.cancelled_at.as_ref()));
    }
    Value::Object(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_the_spec_spelling() {
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }

    #[test]
    fn grpc_orders_print_in_the_rest_shape() {
        let order = proto::StockOrder {
            id: "x".into(),
            symbol: "AAPL".into(),
            order_type: proto::OrderType::Limit.into(),
            order_side: proto::OrderSide::Sell.into(),
            quantity: 3,
            price: 1.5,
            status: proto::OrderStatus::Pending.into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_000,
            }),
            updated_at: None,
            description: String::new(),
            client_order_id: String::new(),
            ..Default::default()
        };
        let v = order_json(&order);
        assert_eq!(v["order_type"], "LIMIT");
        assert_eq!(v["order_side"], "SELL");
        assert_eq!(v["price"], 1.5);
        assert_eq!(v["created_at"], "2023-11-14T22:13:20.123456Z");
        assert!(v.get("description").is_none());
    }
}
