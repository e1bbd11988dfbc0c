//! The closed vocabularies of an order: its type, side and status, and the status state machine.

use std::fmt;
use std::str::FromStr;

/// A string that names none of an enum's variants; the message lists the accepted ones so a
/// client can correct the request without reading the docs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of {}, got {got:?}", expected.join(", "))]
pub struct UnknownVariant {
    /// What the caller sent.
    pub got: String,
    /// The accepted spellings, for the message.
    pub expected: &'static [&'static str],
}

/// Defines an enum with a canonical upper-case wire name per variant, parsed case-insensitively.
/// The wire names are the original service's JSON values and the SQL column values, so one table
/// serves both.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical wire name (`"MARKET"`, `"BUY"`, `"PENDING"`, …).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $(if s.eq_ignore_ascii_case($wire) {
                    return Ok($name::$variant);
                })+
                Err(UnknownVariant {
                    got: s.to_owned(),
                    expected: &[$($wire),+],
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// How the order is priced: at the market, or no worse than a limit price.
    OrderType {
        /// Execute now at the market price.
        Market = "MARKET",
        /// Execute only at the limit price or better.
        Limit = "LIMIT",
    }
}

wire_enum! {
    /// Whether the order buys or sells.
    OrderSide {
        /// Acquire shares.
        Buy = "BUY",
        /// Dispose of shares.
        Sell = "SELL",
    }
}

wire_enum! {
    /// Where an order is in its life. `Pending` is the only state with a way out; the other three
    /// are final, which is what makes a cancel racing a fill safe to decide with one conditional
    /// write.
    OrderStatus {
        /// Accepted and durable, not yet executed.
        Pending = "PENDING",
        /// Executed.
        Filled = "FILLED",
        /// Withdrawn by the client before execution.
        Cancelled = "CANCELLED",
        /// Refused by a business rule; the reason is in the order's description.
        Rejected = "REJECTED",
    }
}

impl OrderStatus {
    /// A final status never changes again.
    pub const fn is_final(self) -> bool {
        !matches!(self, OrderStatus::Pending)
    }

    /// Whether the state machine allows `self → next`: only `PENDING → FILLED | CANCELLED |
    /// REJECTED`. Adapters enforce the same rule in storage with `WHERE status = 'PENDING'`.
    pub const fn can_become(self, next: OrderStatus) -> bool {
        matches!(self, OrderStatus::Pending) && next.is_final()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_and_prints_canonical_names() {
        assert_eq!("market".parse::<OrderType>(), Ok(OrderType::Market));
        assert_eq!("Sell".parse::<OrderSide>(), Ok(OrderSide::Sell));
        assert_eq!(OrderStatus::Cancelled.to_string(), "CANCELLED");
    }

    #[test]
    fn unknown_value_lists_the_accepted_ones() {
        let err = "STOP".parse::<OrderType>().unwrap_err();
        assert_eq!(err.to_string(), r#"must be one of MARKET, LIMIT, got "STOP""#);
    }

    #[test]
    fn only_pending_has_a_way_out() {
        use OrderStatus::*;
        for &from in OrderStatus::ALL {
            for &to in OrderStatus::ALL {
                let allowed = from == Pending && to != Pending;
                assert_eq!(from.can_become(to), allowed, "{from} -> {to}");
            }
        }
        assert!(!Pending.is_final());
        assert!(Filled.is_final() && Cancelled.is_final() && Rejected.is_final());
    }
}
