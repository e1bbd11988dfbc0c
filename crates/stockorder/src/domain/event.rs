//! The order event log's entries: what happened to an order, numbered in the order clients read
//! them. Born where an order's state changes: a placement, or a [`StatusChange`] the domain
//! built.

use std::fmt;
use std::str::FromStr;

use super::{Happened, StockOrder, UnknownVariant};

/// What an event says happened. An order refused by a risk rule when it is placed has one event,
/// `Created`, carrying its `REJECTED` status: it was never pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Placed (pending, or rejected at placement).
    Created,
    /// Executed.
    Filled,
    /// Withdrawn by its client.
    Cancelled,
    /// Refused by a risk rule when it came to be executed.
    Rejected,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 4] = [
        EventKind::Created,
        EventKind::Filled,
        EventKind::Cancelled,
        EventKind::Rejected,
    ];

    /// The wire name (`"created"`, …): the JSON `type`, the gRPC `type`, the stored value.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Filled => "filled",
            EventKind::Cancelled => "cancelled",
            EventKind::Rejected => "rejected",
        }
    }
}

impl From<Happened> for EventKind {
    fn from(happened: Happened) -> Self {
        match happened {
            Happened::Filled => EventKind::Filled,
            Happened::Cancelled => EventKind::Cancelled,
            Happened::Rejected => EventKind::Rejected,
        }
    }
}

impl FromStr for EventKind {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownVariant {
                got: s.to_owned(),
                expected: &["created", "filled", "cancelled", "rejected"],
            })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the event log: the order as it was right after the change.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderEvent {
    /// Strictly increasing in the order clients read events; a client resumes after the last
    /// one it saw.
    pub sequence: u64,
    /// What happened.
    pub kind: EventKind,
    /// The order after the change, as `GET /api/orders/{id}` showed it then.
    pub order: StockOrder,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_follow_the_changes() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
        }
        assert!("CREATED".parse::<EventKind>().is_err());
        assert_eq!(EventKind::from(Happened::Filled), EventKind::Filled);
        assert_eq!(EventKind::from(Happened::Cancelled), EventKind::Cancelled);
        assert_eq!(EventKind::from(Happened::Rejected), EventKind::Rejected);
    }
}
