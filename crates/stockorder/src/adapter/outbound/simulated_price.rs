//! The default [`PriceSource`]: a fixed, made-up price per symbol.

use crate::domain::{Price, Symbol};
use crate::port::PriceSource;

/// A deterministic price per symbol, so runs are repeatable: the symbol's bytes hashed with
/// FNV-1a and mapped to 10.00–999.99, in cents. `AAPL` is always the same price, on every
/// machine, in every run, and never moves, so a LIMIT order either fills at once or rests until
/// it is cancelled.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimulatedPrices;

impl SimulatedPrices {
    fn cents(symbol: &str) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in symbol.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        1_000 + hash % 99_000
    }
}

impl PriceSource for SimulatedPrices {
    fn price(&self, symbol: &Symbol) -> Price {
        let cents = Self::cents(symbol.as_str());
        // 10.00 to 999.99: finite and positive, so always a valid price.
        Price::parse(cents as f64 / 100.0).unwrap_or_else(|_| unreachable!("10.00..=999.99 is a valid price"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_stable_and_in_range() {
        let aapl = Symbol::parse("AAPL").unwrap();
        let p = SimulatedPrices.price(&aapl).get();
        assert_eq!(p, SimulatedPrices.price(&aapl).get());
        for s in ["A", "MSFT", "BRK.B", "ZZZZZZZZZZZZ"] {
            let p = SimulatedPrices.price(&Symbol::parse(s).unwrap()).get();
            assert!((10.0..1000.0).contains(&p), "{s}: {p}");
        }
        assert_ne!(p, SimulatedPrices.price(&Symbol::parse("MSFT").unwrap()).get());
    }
}
