//! Values that can only be built valid. Every adapter turns its wire input into a [`RawOrder`]
//! (or calls the field parsers directly) and gets back either a [`NewOrder`] or a
//! [`ValidationError`] naming the field, so "valid" means the same over REST and gRPC.

use std::fmt;

use super::{NewOrder, OrderSide, OrderType};

/// Why input was refused, with the field it concerns so a client can fix the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct ValidationError {
    /// The field as the client spelled it (`quantity`, `price`, …).
    pub field: &'static str,
    /// What is wrong, phrased to follow the field name.
    pub reason: String,
}

impl ValidationError {
    /// A refusal of `field` for `reason` (which reads after the field name).
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    fn required(field: &'static str) -> Self {
        Self::new(field, "is required")
    }
}

/// A ticker symbol: 1–12 characters of `A–Z 0–9 . -`, stored upper-case so `aapl` and `AAPL`
/// are one instrument.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Symbol(String);

impl Symbol {
    /// The longest symbol accepted.
    pub const MAX_LEN: usize = 12;

    /// Validates and upper-cases `raw`.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ValidationError::required("symbol"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "symbol",
                format!("must be at most {} characters, got {}", Self::MAX_LEN, raw.len()),
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '-'))
        {
            return Err(ValidationError::new(
                "symbol",
                format!("may contain only letters, digits, '.' and '-', found {bad:?}"),
            ));
        }
        Ok(Self(raw.to_ascii_uppercase()))
    }

    /// The canonical (upper-case) symbol.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A number of shares: at least 1 and at most `i32::MAX`, the range of the original proto's
/// `int32 quantity`, so every stored order can be sent to an old gRPC client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(i32);

impl Quantity {
    /// Validates a quantity given as any integer the wire format can carry.
    pub fn parse(raw: i64) -> Result<Self, ValidationError> {
        match i32::try_from(raw) {
            Ok(q) if q >= 1 => Ok(Self(q)),
            _ => Err(ValidationError::new(
                "quantity",
                format!("must be a whole number from 1 to {}, got {raw}", i32::MAX),
            )),
        }
    }

    /// The number of shares.
    pub fn get(self) -> i32 {
        self.0
    }
}

/// A limit price: finite and greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Price(f64);

impl Price {
    /// Validates a price.
    pub fn parse(raw: f64) -> Result<Self, ValidationError> {
        if raw.is_finite() && raw > 0.0 {
            Ok(Self(raw))
        } else {
            Err(ValidationError::new(
                "price",
                format!("must be a finite number greater than 0, got {raw}"),
            ))
        }
    }

    /// The price per share.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// The client's own key for an order, which makes a retried create safe: the same key with the
/// same parameters returns the first order instead of placing a second one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientOrderId(String);

impl ClientOrderId {
    /// The longest key accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates a key: 1–64 printable ASCII characters without spaces.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "client_order_id",
                format!("must be 1 to {} characters, got {}", Self::MAX_LEN, raw.len()),
            ));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValidationError::new(
                "client_order_id",
                "may contain only printable ASCII characters without spaces",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A create request as it arrived, before validation: every field optional, enums as text.
/// Adapters fill it from their wire format and call [`RawOrder::validate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawOrder {
    /// Ticker symbol.
    pub symbol: Option<String>,
    /// `MARKET` or `LIMIT`.
    pub order_type: Option<String>,
    /// `BUY` or `SELL`.
    pub order_side: Option<String>,
    /// Shares; wider than `i32` so an out-of-range value gets a validation message, not a
    /// parse error.
    pub quantity: Option<i64>,
    /// Limit price.
    pub price: Option<f64>,
    /// Idempotency key.
    pub client_order_id: Option<String>,
}

impl RawOrder {
    /// Checks every field, then the rules that tie fields together.
    pub fn validate(self) -> Result<NewOrder, ValidationError> {
        let symbol = Symbol::parse(self.symbol.as_deref().unwrap_or_default())?;
        let order_type = parse_enum::<OrderType>("order_type", self.order_type.as_deref())?;
        let order_side = parse_enum::<OrderSide>("order_side", self.order_side.as_deref())?;
        let quantity = Quantity::parse(self.quantity.ok_or(ValidationError::required("quantity"))?)?;
        let client_order_id = self.client_order_id.as_deref().map(ClientOrderId::parse).transpose()?;
        NewOrder::new(symbol, order_type, order_side, quantity, self.price, client_order_id)
    }
}

fn parse_enum<T>(field: &'static str, raw: Option<&str>) -> Result<T, ValidationError>
where
    T: std::str::FromStr<Err = super::UnknownVariant>,
{
    match raw {
        None | Some("") => Err(ValidationError::required(field)),
        Some(s) => parse_variant(field, s),
    }
}

/// Parses one of an enum's wire names (`"MARKET"`, `"filled"`, …) given for `field`, so an
/// unknown value is refused with the field's name and the accepted values.
pub fn parse_variant<T>(field: &'static str, raw: &str) -> Result<T, ValidationError>
where
    T: std::str::FromStr<Err = super::UnknownVariant>,
{
    raw.parse()
        .map_err(|e: super::UnknownVariant| ValidationError::new(field, e.to_string()))
}

/// Applies the price rule that depends on the order type: a LIMIT order needs a valid price, a
/// MARKET order has none. A MARKET price of exactly 0 counts as absent, because proto3 cannot
/// tell 0 from "not sent" and the original's Go clients send zero values.
pub(super) fn price_for(order_type: OrderType, price: Option<f64>) -> Result<Option<Price>, ValidationError> {
    match (order_type, price) {
        (OrderType::Limit, None) => Err(ValidationError::new("price", "is required for LIMIT orders")),
        (OrderType::Limit, Some(p)) => Price::parse(p).map(Some),
        (OrderType::Market, None) => Ok(None),
        (OrderType::Market, Some(0.0)) => Ok(None),
        (OrderType::Market, Some(_)) => Err(ValidationError::new(
            "price",
            "must be omitted for MARKET orders (they execute at the market price)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawOrder {
        RawOrder {
            symbol: Some("aapl".into()),
            order_type: Some("LIMIT".into()),
            order_side: Some("BUY".into()),
            quantity: Some(100),
            price: Some(150.75),
            client_order_id: None,
        }
    }

    fn field_of(r: RawOrder) -> &'static str {
        r.validate().unwrap_err().field
    }

    #[test]
    fn valid_order_is_normalised() {
        let o = raw().validate().unwrap();
        assert_eq!(o.symbol.as_str(), "AAPL");
        assert_eq!(o.quantity.get(), 100);
        assert_eq!(o.price.map(Price::get), Some(150.75));
    }

    #[test]
    fn symbol_rules() {
        assert!(Symbol::parse("BRK.B").is_ok());
        assert!(Symbol::parse("ABC-1").is_ok());
        assert!(Symbol::parse("ABCDEFGHIJKL").is_ok());
        assert_eq!(Symbol::parse("ABCDEFGHIJKLM").unwrap_err().field, "symbol");
        assert!(Symbol::parse("AA PL").is_err());
        assert!(Symbol::parse("ÄPPLE").is_err());
        assert_eq!(Symbol::parse("").unwrap_err().to_string(), "symbol is required");
        assert_eq!(field_of(RawOrder { symbol: None, ..raw() }), "symbol");
    }

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::parse(1).is_ok());
        assert!(Quantity::parse(i32::MAX as i64).is_ok());
        for bad in [0, -1, i32::MAX as i64 + 1, i64::MIN] {
            let e = Quantity::parse(bad).unwrap_err();
            assert_eq!(e.field, "quantity");
            assert!(e.reason.contains(&bad.to_string()));
        }
        assert_eq!(
            field_of(RawOrder {
                quantity: None,
                ..raw()
            }),
            "quantity"
        );
    }

    #[test]
    fn price_rules_depend_on_type() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                field_of(RawOrder {
                    price: Some(bad),
                    ..raw()
                }),
                "price"
            );
        }
        let e = RawOrder { price: None, ..raw() }.validate().unwrap_err();
        assert_eq!(e.to_string(), "price is required for LIMIT orders");

        let market = RawOrder {
            order_type: Some("MARKET".into()),
            ..raw()
        };
        assert_eq!(
            field_of(market.clone()),
            "price",
            "a MARKET order with a price is refused"
        );
        assert!(
            RawOrder {
                price: None,
                ..market.clone()
            }
            .validate()
            .unwrap()
            .price
            .is_none()
        );
        assert!(
            RawOrder {
                price: Some(0.0),
                ..market
            }
            .validate()
            .unwrap()
            .price
            .is_none()
        );
    }

    #[test]
    fn enums_and_keys() {
        assert_eq!(
            field_of(RawOrder {
                order_type: Some("STOP".into()),
                ..raw()
            }),
            "order_type"
        );
        assert_eq!(
            field_of(RawOrder {
                order_type: None,
                ..raw()
            }),
            "order_type"
        );
        assert_eq!(
            field_of(RawOrder {
                order_side: Some("".into()),
                ..raw()
            }),
            "order_side"
        );
        assert_eq!(
            field_of(RawOrder {
                client_order_id: Some("".into()),
                ..raw()
            }),
            "client_order_id"
        );
        assert_eq!(
            field_of(RawOrder {
                client_order_id: Some("a b".into()),
                ..raw()
            }),
            "client_order_id"
        );
        assert_eq!(
            field_of(RawOrder {
                client_order_id: Some("x".repeat(65)),
                ..raw()
            }),
            "client_order_id"
        );
        let ok = RawOrder {
            client_order_id: Some("batch-7/42".into()),
            ..raw()
        }
        .validate()
        .unwrap();
        assert_eq!(ok.client_order_id.unwrap().as_str(), "batch-7/42");
    }
}
