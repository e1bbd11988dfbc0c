//! What happens to a pending order: the risk rules, and the decision to fill, reject or rest.

use std::collections::HashSet;
use std::fmt;

use super::{OrderSide, OrderType, Price, Quantity, Symbol};

/// The business's limits on what it will execute. Checked when an order is placed (an order
/// that breaks them is stored REJECTED, with the reason, rather than refused as invalid: it is
/// a well-formed order the business declines) and again when it is executed, since the rules
/// may have been tightened in between.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RiskRules {
    /// Largest quantity per order.
    pub max_quantity: Option<Quantity>,
    /// Largest quantity × price per order.
    pub max_notional: Option<f64>,
    /// When set, the only symbols traded.
    pub allowed_symbols: Option<HashSet<Symbol>>,
}

/// Why an order was rejected; stored as its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl RiskRules {
    /// Checks an order at `price` (the limit price, or the market price for a market order;
    /// `None` when no price is known yet, which skips the notional rule).
    pub fn check(&self, symbol: &Symbol, quantity: Quantity, price: Option<f64>) -> Result<(), Rejection> {
        if let Some(allowed) = &self.allowed_symbols
            && !allowed.contains(symbol)
        {
            return Err(Rejection(format!("rejected: {symbol} is not a traded symbol")));
        }
        if let Some(max) = self.max_quantity
            && quantity > max
        {
            return Err(Rejection(format!(
                "rejected: quantity {} exceeds the limit of {}",
                quantity.get(),
                max.get()
            )));
        }
        if let (Some(max), Some(price)) = (self.max_notional, price) {
            let notional = f64::from(quantity.get()) * price;
            if notional > max {
                return Err(Rejection(format!(
                    "rejected: notional {notional:.2} exceeds the limit of {max:.2}"
                )));
            }
        }
        Ok(())
    }
}

/// What the processor does with a pending order.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Execute now at this price.
    Fill(Price),
    /// Refuse, for this reason.
    Reject(Rejection),
    /// A limit order whose price has not been reached: it stays pending until it is, or until
    /// it is cancelled.
    Rest,
}

/// Decides a pending order at the current market price: the rules first, then the order type.
/// A market order fills at the market. A limit order fills at the market price when that is at
/// or better than its limit (at or below it to buy, at or above it to sell), and rests
/// otherwise.
pub fn decide(
    order_type: OrderType,
    side: OrderSide,
    symbol: &Symbol,
    quantity: Quantity,
    limit: Option<Price>,
    market: Price,
    rules: &RiskRules,
) -> Decision {
    if let Err(rejection) = rules.check(symbol, quantity, Some(market.get())) {
        return Decision::Reject(rejection);
    }
    match (order_type, limit) {
        (OrderType::Market, _) | (OrderType::Limit, None) => Decision::Fill(market),
        (OrderType::Limit, Some(limit)) => {
            let crosses = match side {
                OrderSide::Buy => market <= limit,
                OrderSide::Sell => market >= limit,
            };
            if crosses {
                Decision::Fill(market)
            } else {
                Decision::Rest
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    fn qty(n: i64) -> Quantity {
        Quantity::parse(n).unwrap()
    }

    fn px(p: f64) -> Price {
        Price::parse(p).unwrap()
    }

    #[test]
    fn market_orders_fill_at_the_market() {
        let d = decide(
            OrderType::Market,
            OrderSide::Buy,
            &sym("AAPL"),
            qty(10),
            None,
            px(150.0),
            &RiskRules::default(),
        );
        assert_eq!(d, Decision::Fill(px(150.0)));
    }

    #[test]
    fn limit_orders_fill_only_at_their_price_or_better() {
        let rules = RiskRules::default();
        let at = |side, limit| {
            decide(
                OrderType::Limit,
                side,
                &sym("AAPL"),
                qty(1),
                Some(px(limit)),
                px(100.0),
                &rules,
            )
        };
        assert_eq!(
            at(OrderSide::Buy, 101.0),
            Decision::Fill(px(100.0)),
            "buy limit above market"
        );
        assert_eq!(at(OrderSide::Buy, 100.0), Decision::Fill(px(100.0)));
        assert_eq!(at(OrderSide::Buy, 99.0), Decision::Rest);
        assert_eq!(
            at(OrderSide::Sell, 99.0),
            Decision::Fill(px(100.0)),
            "sell limit below market"
        );
        assert_eq!(at(OrderSide::Sell, 101.0), Decision::Rest);
    }

    #[test]
    fn rules_reject_with_a_reason() {
        let rules = RiskRules {
            max_quantity: Some(qty(1000)),
            max_notional: Some(50_000.0),
            allowed_symbols: Some([sym("AAPL"), sym("MSFT")].into_iter().collect()),
        };
        assert!(rules.check(&sym("AAPL"), qty(100), Some(100.0)).is_ok());
        let reason = |s: &str, q: i64, p: f64| rules.check(&sym(s), qty(q), Some(p)).unwrap_err().0;
        assert_eq!(reason("TSLA", 1, 1.0), "rejected: TSLA is not a traded symbol");
        assert_eq!(
            reason("AAPL", 1001, 1.0),
            "rejected: quantity 1001 exceeds the limit of 1000"
        );
        assert_eq!(
            reason("AAPL", 600, 100.0),
            "rejected: notional 60000.00 exceeds the limit of 50000.00"
        );
        assert!(
            rules.check(&sym("AAPL"), qty(600), None).is_ok(),
            "no price yet: notional waits"
        );
        let d = decide(
            OrderType::Market,
            OrderSide::Sell,
            &sym("AAPL"),
            qty(600),
            None,
            px(100.0),
            &rules,
        );
        assert!(matches!(d, Decision::Reject(_)));
    }
}
