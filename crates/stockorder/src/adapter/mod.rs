//! Adapters: the edges of the hexagon, by direction. [`inbound`] adapters drive the core (HTTP,
//! gRPC, and the middleware they share) and call the service port; [`outbound`] adapters are
//! driven by it (SQLite, PostgreSQL, prices) and implement the storage and price ports. An
//! adapter knows one technology and the ports; only `app.rs` knows several.

pub mod inbound;
pub mod outbound;
