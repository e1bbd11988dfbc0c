//! Orders as JSON, written straight into the answer's buffer.
//!
//! Why not `Json(OrderBody)`: serde_json writes every key and string value in three calls
//! through `io::Write`, checking each byte for escapes, and `time`'s RFC 3339 serialiser builds
//! a `String` per timestamp (the A/B is in docs/performance.md, "Each hand-written speed-up").
//! Here the fixed parts are copied as they are and only strings a client chose
//! (`client_order_id`, `description`) go through serde_json's escaping. The bytes are
//! serde_json's, to the byte: a test compares the two over orders with every optional field,
//! escapes and timestamps with and without a fraction. [`OrderBody`] stays the schema (and the
//! reference the test compares with).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::ApiError;
#[cfg(any(test, feature = "stock-json"))]
use super::dto::OrderBody;
use crate::domain::{OrderEvent, StockOrder, Timestamp};
use crate::rfc3339;

/// Room for one order's JSON without growing the buffer (a full order is ~400 bytes).
const ORDER_BYTES: usize = 512;

/// A 200 answer with one order.
pub fn order(order: &StockOrder) -> Result<Response, ApiError> {
    let mut out = Vec::with_capacity(ORDER_BYTES);
    write_order(&mut out, order)?;
    Ok(answer(out))
}

/// A 200 answer with a JSON array of orders.
pub fn orders(orders: &[StockOrder]) -> Result<Response, ApiError> {
    let mut out = Vec::with_capacity(2 + orders.len() * ORDER_BYTES);
    out.push(b'[');
    for (i, order) in orders.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_order(&mut out, order)?;
    }
    out.push(b']');
    Ok(answer(out))
}

/// An event's `data`: `{"sequence":N,"type":"…","order":{…the order as GET shows it…}}`.
pub fn event(event: &OrderEvent) -> Result<String, ApiError> {
    let mut out = Vec::with_capacity(ORDER_BYTES + 48);
    out.extend_from_slice(b"{\"sequence\":");
    out.extend_from_slice(itoa::Buffer::new().format(event.sequence).as_bytes());
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(event.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"order\":");
    write_order(&mut out, &event.order)?;
    out.push(b'}');
    // Only ASCII punctuation and what `write_order` wrote, which is UTF-8.
    String::from_utf8(out).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn answer(body: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        Bytes::from(body),
    )
        .into_response()
}

/// The fields in [`OrderBody`]'s order, with its rules for absent ones.
/// The order as `Json(OrderBody)` writes it, through serde: built with the `stock-json`
/// feature only, for bench/run's A/B of the two writers.
#[cfg(feature = "stock-json")]
fn write_order(out: &mut Vec<u8>, o: &StockOrder) -> Result<(), ApiError> {
    serde_json::to_writer(out, &OrderBody::from(o))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(not(feature = "stock-json"))]
fn write_order(out: &mut Vec<u8>, o: &StockOrder) -> Result<(), ApiError> {
    out.extend_from_slice(b"{\"id\":\"");
    let mut id = uuid::Uuid::encode_buffer();
    out.extend_from_slice(o.id().as_uuid().hyphenated().encode_lower(&mut id).as_bytes());
    out.extend_from_slice(b"\",\"symbol\":");
    string(out, o.symbol().as_str());
    out.extend_from_slice(b",\"order_type\":\"");
    out.extend_from_slice(o.order_type().as_str().as_bytes());
    out.extend_from_slice(b"\",\"order_side\":\"");
    out.extend_from_slice(o.order_side().as_str().as_bytes());
    out.extend_from_slice(b"\",\"quantity\":");
    out.extend_from_slice(itoa::Buffer::new().format(o.quantity().get()).as_bytes());
    if let Some(price) = o.price() {
        out.extend_from_slice(b",\"price\":");
        number(out, price.get());
    }
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(o.status().as_str().as_bytes());
    out.extend_from_slice(b"\",\"created_at\":");
    instant(out, o.created_at())?;
    out.extend_from_slice(b",\"updated_at\":");
    instant(out, o.updated_at())?;
    if let Some(description) = o.description().filter(|d| !d.is_empty()) {
        out.extend_from_slice(b",\"description\":");
        string(out, description);
    }
    if let Some(key) = &o.client_order_id() {
        out.extend_from_slice(b",\"client_order_id\":");
        string(out, key.as_str());
    }
    if let Some(price) = o.fill_price() {
        out.extend_from_slice(b",\"fill_price\":");
        number(out, price.get());
    }
    if let Some(at) = o.filled_at() {
        out.extend_from_slice(b",\"filled_at\":");
        instant(out, at)?;
    }
    if let Some(at) = o.cancelled_at() {
        out.extend_from_slice(b",\"cancelled_at\":");
        instant(out, at)?;
    }
    out.push(b'}');
    Ok(())
}

/// A JSON string, escaped as serde_json escapes it.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail: no I/O, and a `str` always serialises.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A finite number as serde_json writes it (shortest round-trip form, `1.0` for whole ones).
/// Prices are finite and positive by construction ([`crate::domain::Price`]).
fn number(out: &mut Vec<u8>, n: f64) {
    out.extend_from_slice(zmij::Buffer::new().format_finite(n).as_bytes());
}

/// An RFC 3339 timestamp in quotes, as `time::serde::rfc3339` writes it: UTC as `Z`, the
/// fraction of a second without trailing zeros, and none for a whole second. Written from a
/// template rather than with `time`'s formatter, which writes it in ~15 small pieces.
fn instant(out: &mut Vec<u8>, at: Timestamp) -> Result<(), ApiError> {
    let at = at.as_datetime();
    let Some(date_time) = rfc3339::date_time(at) else {
        // A corrupt row: the same 500 that serde's serialiser gave.
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the timestamp {at}: its year is outside 0-9999"),
        ));
    };
    out.push(b'"');
    out.extend_from_slice(&date_time);
    let nanos = at.nanosecond();
    if nanos != 0 {
        let mut fraction = *b".000000000";
        rfc3339::digits(&mut fraction[1..], nanos);
        let zeros = fraction.iter().rev().take_while(|&&d| d == b'0').count();
        out.extend_from_slice(&fraction[..fraction.len() - zeros]);
    }
    out.extend_from_slice(b"Z\"");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::outbound::repository_suite::order;
    use crate::domain::{ClientOrderId, OrderSide, OrderStatus, Price};

    fn serde(o: &StockOrder) -> Vec<u8> {
        serde_json::to_vec(&OrderBody::from(o)).unwrap()
    }

    fn ours(o: &StockOrder) -> Vec<u8> {
        let mut out = Vec::new();
        write_order(&mut out, o).unwrap();
        out
    }

    /// Orders covering every optional field, both price kinds and odd timestamps.
    fn variety() -> Vec<StockOrder> {
        let mut all = Vec::new();
        let plain = order("AAPL", OrderSide::Buy, None);
        all.push(plain.clone());
        let mut full = order("BRK.B", OrderSide::Sell, Some("k\"ey\\1")).into_stored();
        full.price = Some(Price::parse(150.75).unwrap());
        full.status = OrderStatus::Filled;
        full.description = Some("filled \"at\" market\n\t\u{1}é \u{2028}".into());
        full.fill_price = Some(Price::parse(0.1 + 0.2).unwrap());
        full.filled_at = Some(Timestamp::from_unix_micros(1_700_000_000_000_000).unwrap()); // whole second
        full.cancelled_at = Some(Timestamp::from_unix_micros(1_700_000_000_500_000).unwrap()); // .5
        full.created_at = Timestamp::from_unix_micros(0).unwrap();
        full.updated_at = Timestamp::from_unix_micros(253_402_300_799_999_999).unwrap(); // 9999-12-31
        all.push(StockOrder::restore(full));
        for micros in [
            1,
            10,
            120,
            999_999,
            1_000_001,
            86_399_999_999,
            -1,
            -62_167_219_200_000_000,
        ] {
            let mut at = order("TIME", OrderSide::Buy, None).into_stored();
            at.created_at = Timestamp::from_unix_micros(micros).unwrap(); // year 0 for the last
            at.updated_at = Timestamp::from_unix_micros(1_764_000_000_000_000 + micros.abs() % 1_000_000).unwrap();
            all.push(StockOrder::restore(at));
        }
        let mut empty_description = plain.clone().into_stored();
        empty_description.description = Some(String::new());
        empty_description.price = Some(Price::parse(1.0).unwrap());
        all.push(StockOrder::restore(empty_description));
        let mut big = plain.into_stored();
        big.price = Some(Price::parse(1e21).unwrap());
        big.fill_price = Some(Price::parse(1e-7).unwrap());
        big.client_order_id = Some(ClientOrderId::parse("~!").unwrap());
        all.push(StockOrder::restore(big));
        all
    }

    #[test]
    fn each_order_is_what_serde_json_writes() {
        for o in variety() {
            assert_eq!(
                String::from_utf8(ours(&o)).unwrap(),
                String::from_utf8(serde(&o)).unwrap()
            );
        }
    }

    #[tokio::test]
    async fn a_page_is_what_serde_json_writes() {
        let orders = variety();
        let response = super::orders(&orders).unwrap();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let reference: Vec<OrderBody<'_>> = orders.iter().map(OrderBody::from).collect();
        assert_eq!(body, serde_json::to_vec(&reference).unwrap());
        let empty = axum::body::to_bytes(super::orders(&[]).unwrap().into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(empty, "[]");
    }

    #[test]
    fn a_year_json_cannot_hold_is_a_server_error_not_a_panic() {
        let mut stored = order("AAPL", OrderSide::Buy, None).into_stored();
        stored.created_at = Timestamp::from_unix_micros(-62_167_219_200_000_001).unwrap(); // year -1
        let o = StockOrder::restore(stored);
        let answer = super::order(&o).map(|_| ()).unwrap_err();
        assert_eq!(answer.into_response().status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
