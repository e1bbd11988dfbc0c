//! Where fill prices come from.

use crate::domain::{Price, Symbol};

/// The current market price of a symbol. A port so that a real market-data feed can replace
/// the simulated one without the service noticing.
pub trait PriceSource: Send + Sync + 'static {
    /// The price an order for `symbol` executes at now.
    fn price(&self, symbol: &Symbol) -> Price;
}
