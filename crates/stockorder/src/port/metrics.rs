//! What the core and the stores count, whoever collects it.

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

/// What a store measures of its own work. A port, like [`OrderMetrics`], so that the database
/// adapters know no metrics system: the application hands the Prometheus adapter to the store
/// it opens, tests and tools hand [`NoMetrics`].
pub trait StoreMetrics: Send + Sync + 'static {
    /// One transaction committed on `backend` (`"sqlite"`, `"postgres"`): `writes` changes in
    /// it, `took` from its start to the end of its COMMIT.
    fn commit(&self, backend: &'static str, writes: usize, took: Duration);
}

/// Counts nothing: the default of a desk or a store wired without metrics (tests, tools,
/// embedding).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl OrderMetrics for NoMetrics {
    fn transitions(&self, _from: Option<OrderStatus>, _to: OrderStatus, _n: u64) {}

    fn processor_lag(&self, _waited: Duration) {}
}

impl StoreMetrics for NoMetrics {
    fn commit(&self, _backend: &'static str, _writes: usize, _took: Duration) {}
}
