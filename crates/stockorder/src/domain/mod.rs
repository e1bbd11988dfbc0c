//! The order domain: what a stock order is, which values are valid, and how its status may
//! change. Nothing here knows about HTTP, gRPC or SQL, so every adapter shares one definition of
//! "valid" and one state machine.

mod enums;
mod event;
mod execution;
mod order;
mod transition;
mod validation;

pub use enums::{OrderSide, OrderStatus, OrderType, UnknownVariant};
pub use event::{EventKind, OrderEvent};
pub use execution::{Decision, Rejection, RiskRules, decide};
pub use order::{NewOrder, OrderId, StockOrder, StoredOrder, Timestamp};
pub use transition::{Happened, IllegalTransition, StatusChange};
pub use validation::{ClientOrderId, Price, Quantity, RawOrder, Symbol, ValidationError, parse_variant};
