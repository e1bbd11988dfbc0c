//! Adapters: the edges of the hexagon. Each translates one technology (HTTP, gRPC, SQL) to and
//! from the ports, and nothing outside `app.rs` knows more than one of them.

pub mod grpc;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod middleware;
pub mod migration;
pub mod postgres;
#[cfg(test)]
pub(crate) mod repository_suite;
pub mod simulated_price;
pub mod sqlite;
pub mod store;
