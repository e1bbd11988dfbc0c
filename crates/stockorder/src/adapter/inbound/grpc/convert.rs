//! proto ↔ domain. Requests become the same [`RawOrder`] / [`ListQuery`] the REST adapter builds,
//! so validation and its messages are shared; replies are built from domain orders.

use crate::domain::{OrderId, OrderSide, OrderStatus, OrderType, RawOrder, StockOrder, Symbol, Timestamp};
use crate::domain::{ValidationError, parse_variant};
use crate::port::{ListQuery, PageLimit, PageToken};

use super::proto;

/// A proto3 enum field as the text the domain parses: `None` for 0 (UNSPECIFIED, which is also
/// what an unset field reads as), the value's name when known, and otherwise the number itself,
/// which validation then refuses by field name listing the accepted values.
fn enum_text(value: i32, name: Option<&'static str>) -> Option<String> {
    match (value, name) {
        (0, _) => None,
        (_, Some(name)) => Some(name.to_owned()),
        (n, None) => Some(n.to_string()),
    }
}

/// proto3 strings have no "absent": empty means not given.
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<proto::CreateOrderRequest> for RawOrder {
    fn from(r: proto::CreateOrderRequest) -> Self {
        RawOrder {
            symbol: non_empty(r.symbol),
            order_type: enum_text(
                r.order_type,
                proto::OrderType::try_from(r.order_type).ok().map(|t| t.as_str_name()),
            ),
            order_side: enum_text(
                r.order_side,
                proto::OrderSide::try_from(r.order_side).ok().map(|s| s.as_str_name()),
            ),
            // 0 is "not sent" on the wire; validation reports it as out of range, naming the field.
            quantity: Some(i64::from(r.quantity)),
            // 0 is "not sent": required (and so refused) for LIMIT, absent for MARKET.
            price: (r.price != 0.0).then_some(r.price),
            client_order_id: non_empty(r.client_order_id),
        }
    }
}

/// Parses an order id field, naming `field` when it is not a UUID.
pub fn order_id(raw: &str) -> Result<OrderId, ValidationError> {
    if raw.is_empty() {
        return Err(ValidationError::new("order_id", "is required"));
    }
    raw.parse()
}

/// The list request as the domain's query. Unset fields mean "default" / "no filter".
pub fn list_query(r: &proto::ListOrdersRequest) -> Result<ListQuery, ValidationError> {
    let limit = match r.page_size {
        0 => PageLimit::default(),
        n => PageLimit::parse(i64::from(n)).map_err(|e| ValidationError::new("page_size", e.reason))?,
    };
    let status = enum_text(
        r.status,
        proto::OrderStatus::try_from(r.status).ok().map(|s| s.as_str_name()),
    );
    let side = enum_text(r.side, proto::OrderSide::try_from(r.side).ok().map(|s| s.as_str_name()));
    Ok(ListQuery {
        limit,
        page_token: (!r.page_token.is_empty())
            .then(|| PageToken::decode(&r.page_token))
            .transpose()?,
        status: status.map(|s| parse_variant("status", &s)).transpose()?,
        symbol: (!r.symbol.is_empty()).then(|| Symbol::parse(&r.symbol)).transpose()?,
        side: side.map(|s| parse_variant("side", &s)).transpose()?,
    })
}

impl From<OrderType> for proto::OrderType {
    fn from(t: OrderType) -> Self {
        match t {
            OrderType::Market => proto::OrderType::Market,
            OrderType::Limit => proto::OrderType::Limit,
        }
    }
}

impl From<OrderSide> for proto::OrderSide {
    fn from(s: OrderSide) -> Self {
        match s {
            OrderSide::Buy => proto::OrderSide::Buy,
            OrderSide::Sell => proto::OrderSide::Sell,
        }
    }
}

impl From<OrderStatus> for proto::OrderStatus {
    fn from(s: OrderStatus) -> Self {
        match s {
            OrderStatus::Pending => proto::OrderStatus::Pending,
            OrderStatus::Filled => proto::OrderStatus::Filled,
            OrderStatus::Cancelled => proto::OrderStatus::Cancelled,
            OrderStatus::Rejected => proto::OrderStatus::Rejected,
        }
    }
}

fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let micros = t.unix_micros();
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        // rem_euclid of 1e6 is below 1e6, so ×1000 stays below 1e9 and fits in i32.
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

impl From<&StockOrder> for proto::StockOrder {
    fn from(o: &StockOrder) -> Self {
        proto::StockOrder {
            id: o.id().to_string(),
            symbol: o.symbol().as_str().to_owned(),
            order_type: proto::OrderType::from(o.order_type()).into(),
            order_side: proto::OrderSide::from(o.order_side()).into(),
            quantity: o.quantity().get(),
            price: o.price().map_or(0.0, |p| p.get()),
            status: proto::OrderStatus::from(o.status()).into(),
            created_at: Some(timestamp(o.created_at())),
            updated_at: Some(timestamp(o.updated_at())),
            description: o.description().unwrap_or_default().to_owned(),
            client_order_id: o
                .client_order_id()
                .as_ref()
                .map(|k| k.as_str().to_owned())
                .unwrap_or_default(),
            fill_price: o.fill_price().map_or(0.0, |p| p.get()),
            filled_at: o.filled_at().map(timestamp),
            cancelled_at: o.cancelled_at().map(timestamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> proto::CreateOrderRequest {
        proto::CreateOrderRequest {
            symbol: "aapl".into(),
            order_type: proto::OrderType::Limit.into(),
            order_side: proto::OrderSide::Buy.into(),
            quantity: 10,
            price: 1.5,
            client_order_id: String::new(),
        }
    }

    fn refused_field(r: proto::CreateOrderRequest) -> &'static str {
        RawOrder::from(r).validate().unwrap_err().field
    }

    #[test]
    fn zero_values_mean_not_sent() {
        assert_eq!(
            refused_field(proto::CreateOrderRequest {
                symbol: String::new(),
                ..request()
            }),
            "symbol"
        );
        assert_eq!(
            refused_field(proto::CreateOrderRequest {
                order_type: 0,
                ..request()
            }),
            "order_type"
        );
        assert_eq!(
            refused_field(proto::CreateOrderRequest {
                quantity: 0,
                ..request()
            }),
            "quantity"
        );
        assert_eq!(
            refused_field(proto::CreateOrderRequest {
                price: 0.0,
                ..request()
            }),
            "price"
        );
        let market = proto::CreateOrderRequest {
            order_type: proto::OrderType::Market.into(),
            price: 0.0,
            ..request()
        };
        assert!(RawOrder::from(market).validate().unwrap().price.is_none());
    }

    #[test]
    fn unknown_enum_numbers_are_refused_by_field() {
        let e = RawOrder::from(proto::CreateOrderRequest {
            order_side: 9,
            ..request()
        })
        .validate()
        .unwrap_err();
        assert_eq!(e.to_string(), r#"order_side must be one of BUY, SELL, got "9""#);
        let q = proto::ListOrdersRequest {
            status: 42,
            ..Default::default()
        };
        assert_eq!(list_query(&q).unwrap_err().field, "status");
    }

    #[test]
    fn list_defaults_and_bounds() {
        let q = list_query(&proto::ListOrdersRequest::default()).unwrap();
        assert_eq!(q, ListQuery::default());
        let bad = proto::ListOrdersRequest {
            page_size: 1001,
            ..Default::default()
        };
        assert_eq!(list_query(&bad).unwrap_err().field, "page_size");
        let filtered = proto::ListOrdersRequest {
            status: proto::OrderStatus::Filled.into(),
            side: proto::OrderSide::Sell.into(),
            symbol: "msft".into(),
            ..Default::default()
        };
        let q = list_query(&filtered).unwrap();
        assert_eq!(q.status, Some(OrderStatus::Filled));
        assert_eq!(q.side, Some(OrderSide::Sell));
        assert_eq!(q.symbol.unwrap().as_str(), "MSFT");
    }

    #[test]
    fn timestamps_split_into_seconds_and_nanos() {
        let before_epoch = Timestamp::from_unix_micros(-1).unwrap();
        assert_eq!(
            timestamp(before_epoch),
            prost_types::Timestamp {
                seconds: -1,
                nanos: 999_999_000
            }
        );
        let t = Timestamp::from_unix_micros(1_700_000_000_123_456).unwrap();
        assert_eq!(
            timestamp(t),
            prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_000
            }
        );
    }
}
