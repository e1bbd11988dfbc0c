//! The order entity, its identity and its timestamps.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;
use uuid::Uuid;

use super::validation::price_for;
use super::{ClientOrderId, OrderSide, OrderStatus, OrderType, Price, Quantity, Symbol, ValidationError};

/// An order's identity: a UUIDv7, so ids sort by creation time and new rows append to the end of
/// the primary-key index instead of landing at random pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(Uuid);

impl OrderId {
    /// The all-zero id, below every real one: where a walk over ids starts.
    pub const NIL: OrderId = OrderId(Uuid::nil());

    /// A fresh, time-ordered id (monotonic within this process).
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an id read back from storage.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl FromStr for OrderId {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s).map(Self).map_err(|_| {
            // Echo enough to recognise the value, not a 16 KiB path back to its sender.
            const SHOWN: usize = 64;
            let shown: String = s.chars().take(SHOWN).collect();
            let more = if s.chars().count() > SHOWN { "…" } else { "" };
            ValidationError::new("order_id", format!("must be a UUID, got {shown:?}{more}"))
        })
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A UTC instant with microsecond precision: the precision both SQLite (as integer micros) and
/// PostgreSQL (`timestamptz`) keep, so an order reads back exactly as it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time, truncated to microseconds.
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        let micros = now.unix_timestamp_nanos() / 1_000;
        Self::from_unix_micros(micros as i64).unwrap_or(Self(now))
    }

    /// Microseconds since the Unix epoch; `None` outside the range `time` can represent.
    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1_000)
            .ok()
            .map(Self)
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(&self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000) as i64
    }

    /// The instant as an `OffsetDateTime` (UTC).
    pub fn as_datetime(&self) -> OffsetDateTime {
        self.0
    }
}

/// A create request that passed validation: the only way to place an order.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    /// Upper-cased ticker.
    pub symbol: Symbol,
    /// Market or limit.
    pub order_type: OrderType,
    /// Buy or sell.
    pub order_side: OrderSide,
    /// Shares.
    pub quantity: Quantity,
    /// Present exactly for LIMIT orders.
    pub price: Option<Price>,
    /// Idempotency key, when the client gave one.
    pub client_order_id: Option<ClientOrderId>,
}

impl NewOrder {
    /// Builds a request from already-valid fields, applying the rules that tie them together
    /// (a LIMIT order needs a price, a MARKET order has none).
    pub fn new(
        symbol: Symbol,
        order_type: OrderType,
        order_side: OrderSide,
        quantity: Quantity,
        price: Option<f64>,
        client_order_id: Option<ClientOrderId>,
    ) -> Result<Self, ValidationError> {
        let price = price_for(order_type, price)?;
        Ok(Self {
            symbol,
            order_type,
            order_side,
            quantity,
            price,
            client_order_id,
        })
    }

    /// Whether `order` was placed with exactly these parameters: what decides between replaying
    /// an idempotent create and refusing a reused `client_order_id`.
    pub fn matches(&self, order: &StockOrder) -> bool {
        &self.symbol == order.symbol()
            && self.order_type == order.order_type()
            && self.order_side == order.order_side()
            && self.quantity == order.quantity()
            && self.price == order.price()
    }
}

/// A stock order as stored and served. What it holds is private: an order changes only through
/// the [`StatusChange`](super::StatusChange)s its methods `fill`, `reject` and `cancel` build,
/// which the state machine allows; a store reads one back with [`StockOrder::restore`].
#[derive(Debug, Clone, PartialEq)]
pub struct StockOrder(StoredOrder);

/// An order as a store holds it, every column decoded: what [`StockOrder::restore`] reads back.
/// It describes a state, not a change; changes are [`StatusChange`](super::StatusChange)s.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOrder {
    /// Time-ordered identity.
    pub id: OrderId,
    /// The client's idempotency key, if any.
    pub client_order_id: Option<ClientOrderId>,
    /// Upper-cased ticker.
    pub symbol: Symbol,
    /// Market or limit.
    pub order_type: OrderType,
    /// Buy or sell.
    pub order_side: OrderSide,
    /// Shares.
    pub quantity: Quantity,
    /// Limit price; `None` for market orders.
    pub price: Option<Price>,
    /// Where the order is in its life.
    pub status: OrderStatus,
    /// Free text, e.g. why an order was rejected.
    pub description: Option<String>,
    /// When the order was accepted.
    pub created_at: Timestamp,
    /// When the status last changed.
    pub updated_at: Timestamp,
    /// The price it executed at, once `FILLED`.
    pub fill_price: Option<Price>,
    /// When it was filled.
    pub filled_at: Option<Timestamp>,
    /// When it was cancelled.
    pub cancelled_at: Option<Timestamp>,
}

impl StockOrder {
    /// A freshly accepted order: `PENDING`, both timestamps `now`.
    pub fn pending(new: NewOrder, id: OrderId, now: Timestamp) -> Self {
        Self(StoredOrder {
            id,
            client_order_id: new.client_order_id,
            symbol: new.symbol,
            order_type: new.order_type,
            order_side: new.order_side,
            quantity: new.quantity,
            price: new.price,
            status: OrderStatus::Pending,
            description: None,
            created_at: now,
            updated_at: now,
            fill_price: None,
            filled_at: None,
            cancelled_at: None,
        })
    }

    /// An order refused when it was placed: a valid order the business declines (a risk
    /// rule), stored `REJECTED` with the reason so the client and the audit trail see why.
    pub fn rejected(new: NewOrder, id: OrderId, now: Timestamp, reason: String) -> Self {
        Self(StoredOrder {
            status: OrderStatus::Rejected,
            description: Some(reason),
            ..Self::pending(new, id, now).0
        })
    }

    /// An order read back from a store, as the store holds it.
    pub fn restore(stored: StoredOrder) -> Self {
        Self(stored)
    }

    /// The order as a store holds it, e.g. to write every column, or in a test to make a state
    /// that [`StockOrder::restore`] then reads back.
    pub fn into_stored(self) -> StoredOrder {
        self.0
    }

    /// Time-ordered identity.
    pub fn id(&self) -> OrderId {
        self.0.id
    }

    /// The client's idempotency key, if it gave one.
    pub fn client_order_id(&self) -> Option<&ClientOrderId> {
        self.0.client_order_id.as_ref()
    }

    /// Upper-cased ticker.
    pub fn symbol(&self) -> &Symbol {
        &self.0.symbol
    }

    /// Market or limit.
    pub fn order_type(&self) -> OrderType {
        self.0.order_type
    }

    /// Buy or sell.
    pub fn order_side(&self) -> OrderSide {
        self.0.order_side
    }

    /// Shares.
    pub fn quantity(&self) -> Quantity {
        self.0.quantity
    }

    /// Limit price; `None` for market orders.
    pub fn price(&self) -> Option<Price> {
        self.0.price
    }

    /// Where the order is in its life.
    pub fn status(&self) -> OrderStatus {
        self.0.status
    }

    /// Free text, e.g. why an order was rejected; `None` when there is nothing to say.
    pub fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    /// When the order was accepted.
    pub fn created_at(&self) -> Timestamp {
        self.0.created_at
    }

    /// When the status last changed (equal to `created_at` until then).
    pub fn updated_at(&self) -> Timestamp {
        self.0.updated_at
    }

    /// The price it executed at, once `FILLED`.
    pub fn fill_price(&self) -> Option<Price> {
        self.0.fill_price
    }

    /// When it was filled.
    pub fn filled_at(&self) -> Option<Timestamp> {
        self.0.filled_at
    }

    /// When it was cancelled.
    pub fn cancelled_at(&self) -> Option<Timestamp> {
        self.0.cancelled_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_and_round_trip_as_text() {
        let a = OrderId::generate();
        let b = OrderId::generate();
        assert!(a < b, "UUIDv7 generated later sorts later");
        assert_eq!(a.to_string().parse::<OrderId>().unwrap(), a);
        assert_eq!("not-a-uuid".parse::<OrderId>().unwrap_err().field, "order_id");
        let long = "x".repeat(10_000).parse::<OrderId>().unwrap_err().to_string();
        assert!(long.len() < 120 && long.ends_with("\"…"), "{long}");
    }

    #[test]
    fn timestamps_round_trip_through_micros() {
        let t = Timestamp::now();
        assert_eq!(Timestamp::from_unix_micros(t.unix_micros()), Some(t));
    }
}
