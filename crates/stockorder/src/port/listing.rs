//! Listing orders page by page: the query, its limit, and the opaque cursor between pages.

use crate::domain::{OrderId, OrderSide, OrderStatus, StockOrder, Symbol, ValidationError};

/// How many orders one page holds: 1 to [`PageLimit::MAX`], [`PageLimit::DEFAULT`] when the
/// client does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u32);

impl PageLimit {
    /// The page size when none is asked for.
    pub const DEFAULT: PageLimit = PageLimit(100);
    /// The largest page served; keeps one request's cost bounded.
    pub const MAX: u32 = 1000;

    /// Validates a requested page size.
    pub fn parse(raw: i64) -> Result<Self, ValidationError> {
        match u32::try_from(raw) {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(ValidationError::new(
                "limit",
                format!("must be from 1 to {}, got {raw}", Self::MAX),
            )),
        }
    }

    /// The page size.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where the next page starts. Opaque to clients (they pass back what they were given); inside,
/// it is the id of the last order served, and the next page holds strictly older orders, so the
/// cost of a page is an index seek whatever the table size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken(OrderId);

impl PageToken {
    /// The token that continues after `last`.
    pub fn after(last: OrderId) -> Self {
        Self(last)
    }

    /// The last order id of the previous page.
    pub fn last_id(self) -> OrderId {
        self.0
    }

    /// The wire form: 32 lower-case hex digits.
    pub fn encode(self) -> String {
        self.0.as_uuid().simple().to_string()
    }

    /// Reads a token produced by [`PageToken::encode`].
    pub fn decode(raw: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new("page_token", "is not a token this server issued");
        if raw.len() != 32 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        uuid::Uuid::try_parse(raw)
            .map(|u| Self(OrderId::from_uuid(u)))
            .map_err(|_| bad())
    }
}

/// Which orders to list: newest first, filtered, one page at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// Page size.
    pub limit: PageLimit,
    /// Continue after this token; `None` for the first page.
    pub page_token: Option<PageToken>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Only orders for this symbol.
    pub symbol: Option<Symbol>,
    /// Only orders on this side.
    pub side: Option<OrderSide>,
}

/// One page of orders, newest first, and the token for the next page when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The orders, newest first.
    pub orders: Vec<StockOrder>,
    /// Present when more orders match beyond this page.
    pub next: Option<PageToken>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_bounds() {
        assert_eq!(PageLimit::parse(1).unwrap().get(), 1);
        assert_eq!(PageLimit::parse(1000).unwrap().get(), 1000);
        for bad in [0, -5, 1001] {
            assert_eq!(PageLimit::parse(bad).unwrap_err().field, "limit");
        }
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = PageToken::after(OrderId::generate());
        assert_eq!(PageToken::decode(&t.encode()), Ok(t));
        for bad in ["", "xyz", &"g".repeat(32), "0195f0b1-7a2c-7bb1-8a1e-9d2d2b0c1c1a"] {
            assert_eq!(PageToken::decode(bad).unwrap_err().field, "page_token", "{bad}");
        }
    }
}
