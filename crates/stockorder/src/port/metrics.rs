//! What the core counts, whoever collects it.

use std::time::Duration;

use crate::domain::OrderStatus;

/// The service's own measurements: order state changes and how long orders wait for a decision.
/// A port so that the core knows no metrics system (the Prometheus adapter implements it, and
/// tests may count), and so that the metrics of the transport stay with the transport adapters.
pub trait OrderMetrics: Send + Sync + 'static {
    /// `n` orders moved from `from` (`None`: just created) to `to`.
    fn transitions(&self, from: Option<OrderStatus>, to: OrderStatus, n: u64);

    /// An order waited `waited` between its creation and the processor's decision.
    fn processor_lag(&self, waited: Duration);
}

/// Counts nothing: the default of a desk wired without metrics (tests, embedding).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl OrderMetrics for NoMetrics {
    fn transitions(&self, _from: Option<OrderStatus>, _to: OrderStatus, _n: u64) {}

    fn processor_lag(&self, _waited: Duration) {}
}
