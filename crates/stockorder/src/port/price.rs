//! Where fill prices come from.

use crate::domain::{Price, Symbol};

/// The current market price of a symbol. A port so that a real market-data feed can replace
/// the simulated one without the service noticing.
pub trait PriceSource: Send + Sync + 'static {
    /// The price an order for `symbol` executes at now.
    fn price(&self, symbol: &Symbol) -> Price;

    /// A number that changes whenever prices may have moved. The processor looks at resting
    /// limit orders again only when it changes (or, as a safety net, every ten minutes), so a
    /// source whose prices never move (the simulated one) costs no re-examination at all.
    fn version(&self) -> u64 {
        0
    }
}
