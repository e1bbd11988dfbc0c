//! The changes an order's status may go through, built only here: the state machine of
//! [`OrderStatus::can_become`] is the one rule, and a [`StatusChange`] that breaks it cannot be
//! constructed.
//!
//! Stores persist a change with a conditional write (`WHERE status = 'PENDING'`): that is their
//! guard against a cancel and a fill racing, not a second statement of the rule. The condition
//! they write is [`StatusChange::from`], which the domain supplies.

use super::{OrderId, OrderStatus, Price, StockOrder, Timestamp};

/// A change that the state machine does not allow, e.g. FILLED → CANCELLED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from} cannot become {to}")]
pub struct IllegalTransition {
    /// Where the order is.
    pub from: OrderStatus,
    /// Where the change would take it.
    pub to: OrderStatus,
}

/// What a change did, for the event it becomes (and the metric it counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Happened {
    /// Executed at a price.
    Filled,
    /// Withdrawn by its client.
    Cancelled,
    /// Refused by a risk rule when it came to be executed.
    Rejected,
}

/// A legal change of one order's status, conditional on the order still being where every
/// change starts (`PENDING`, the only state with a way out). Its fields are private: the
/// constructors below are the only way to make one.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    id: OrderId,
    happened: Happened,
    description: Option<String>,
    fill_price: Option<Price>,
    at: Timestamp,
}

impl StatusChange {
    /// The client withdraws order `id`. Built from the id alone: whether the order is still
    /// pending is decided by the store's conditional write, atomically with the change, which a
    /// read before it could not do.
    pub fn cancel(id: OrderId, at: Timestamp) -> Self {
        Self::new(id, Happened::Cancelled, None, None, at)
    }

    fn new(
        id: OrderId,
        happened: Happened,
        description: Option<String>,
        fill_price: Option<Price>,
        at: Timestamp,
    ) -> Self {
        Self {
            id,
            happened,
            description,
            fill_price,
            at,
        }
    }

    /// The order changed.
    pub fn id(&self) -> OrderId {
        self.id
    }

    /// The status the order must still be in for the change to apply: the condition a store
    /// writes the change under.
    pub fn from(&self) -> OrderStatus {
        OrderStatus::Pending
    }

    /// The status the order takes.
    pub fn to(&self) -> OrderStatus {
        match self.happened {
            Happened::Filled => OrderStatus::Filled,
            Happened::Cancelled => OrderStatus::Cancelled,
            Happened::Rejected => OrderStatus::Rejected,
        }
    }

    /// What the change does.
    pub fn happened(&self) -> Happened {
        self.happened
    }

    /// The new description (a rejection's reason); `None` keeps the current one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The execution price, for a fill.
    pub fn fill_price(&self) -> Option<Price> {
        self.fill_price
    }

    /// When the change happens: the new `updated_at`, and `filled_at` or `cancelled_at`.
    pub fn at(&self) -> Timestamp {
        self.at
    }

    /// `order` as it is after this change, or why the change does not apply to it. What the
    /// in-memory store runs; the SQL stores write the same fields (see their `SETTLE`).
    pub fn apply(&self, order: &StockOrder) -> Result<StockOrder, IllegalTransition> {
        let (from, to) = (order.status(), self.to());
        if order.id() != self.id || !from.can_become(to) {
            return Err(IllegalTransition { from, to });
        }
        let mut after = order.clone().into_stored();
        after.status = to;
        if self.description.is_some() {
            after.description.clone_from(&self.description);
        }
        after.updated_at = self.at;
        if self.fill_price.is_some() {
            after.fill_price = self.fill_price;
        }
        match self.happened {
            Happened::Filled => after.filled_at = Some(self.at),
            Happened::Cancelled => after.cancelled_at = Some(self.at),
            Happened::Rejected => {}
        }
        Ok(StockOrder::restore(after))
    }
}

impl StockOrder {
    /// The change that executes this order at `price`; refused unless it is pending.
    pub fn fill(&self, price: Price, at: Timestamp) -> Result<StatusChange, IllegalTransition> {
        self.change(Happened::Filled, None, Some(price), at)
    }

    /// The change that refuses this order under a risk rule, with the rule's reason.
    pub fn reject(&self, reason: String, at: Timestamp) -> Result<StatusChange, IllegalTransition> {
        self.change(Happened::Rejected, Some(reason), None, at)
    }

    /// The change that withdraws this order; refused unless it is pending.
    pub fn cancel(&self, at: Timestamp) -> Result<StatusChange, IllegalTransition> {
        self.change(Happened::Cancelled, None, None, at)
    }

    fn change(
        &self,
        happened: Happened,
        description: Option<String>,
        fill_price: Option<Price>,
        at: Timestamp,
    ) -> Result<StatusChange, IllegalTransition> {
        let change = StatusChange::new(self.id(), happened, description, fill_price, at);
        if !self.status().can_become(change.to()) {
            return Err(IllegalTransition {
                from: self.status(),
                to: change.to(),
            });
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewOrder, OrderSide, OrderType, Quantity, Symbol};

    fn pending() -> StockOrder {
        let new = NewOrder::new(
            Symbol::parse("AAPL").unwrap(),
            OrderType::Market,
            OrderSide::Buy,
            Quantity::parse(10).unwrap(),
            None,
            None,
        )
        .unwrap();
        StockOrder::pending(new, OrderId::generate(), Timestamp::now())
    }

    #[test]
    fn a_pending_order_fills_once_and_then_has_no_way_out() {
        let order = pending();
        let price = Price::parse(101.5).unwrap();
        let at = Timestamp::now();
        let filled = order.fill(price, at).unwrap().apply(&order).unwrap();
        assert_eq!(filled.status(), OrderStatus::Filled);
        assert_eq!(
            (filled.fill_price(), filled.filled_at(), filled.updated_at()),
            (Some(price), Some(at), at)
        );

        let refused = IllegalTransition {
            from: OrderStatus::Filled,
            to: OrderStatus::Cancelled,
        };
        assert_eq!(filled.cancel(at), Err(refused));
        assert_eq!(StatusChange::cancel(order.id(), at).apply(&filled), Err(refused));
        assert_eq!(refused.to_string(), "an order that is FILLED cannot become CANCELLED");
        assert!(filled.fill(price, at).is_err() && filled.reject("late".into(), at).is_err());
    }

    #[test]
    fn a_rejection_keeps_its_reason_and_a_cancel_its_time() {
        let order = pending();
        let at = Timestamp::now();
        let rejected = order.reject("too big".into(), at).unwrap().apply(&order).unwrap();
        assert_eq!(
            (rejected.status(), rejected.description()),
            (OrderStatus::Rejected, Some("too big"))
        );
        let cancelled = StatusChange::cancel(order.id(), at).apply(&order).unwrap();
        assert_eq!(
            (cancelled.status(), cancelled.cancelled_at()),
            (OrderStatus::Cancelled, Some(at))
        );
    }

    #[test]
    fn every_change_starts_from_the_one_state_with_a_way_out() {
        let order = pending();
        let at = Timestamp::now();
        let changes = [
            order.fill(Price::parse(1.0).unwrap(), at).unwrap(),
            order.reject("r".into(), at).unwrap(),
            StatusChange::cancel(order.id(), at),
        ];
        for change in changes {
            assert!(change.from().can_become(change.to()), "{change:?}");
        }
    }

    #[test]
    fn a_change_applies_to_its_own_order_only() {
        let (a, b) = (pending(), pending());
        let change = StatusChange::cancel(a.id(), Timestamp::now());
        assert!(change.apply(&b).is_err());
    }
}
