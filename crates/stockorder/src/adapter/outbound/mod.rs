//! Adapters the core drives: order storage (SQLite, PostgreSQL, and an in-memory double for
//! unit tests) and the simulated price feed. The stores report their commits through the
//! [`StoreMetrics`](crate::port::StoreMetrics) port they are opened with; none of them knows
//! the metrics registry.

#[cfg(test)]
pub(crate) mod memory;
pub mod migration;
pub mod postgres;
#[cfg(test)]
pub(crate) mod repository_suite;
pub mod simulated_price;
pub mod sqlite;
pub mod store;
