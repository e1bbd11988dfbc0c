//! The crate's integration tests, as one test binary (one link instead of one per file):
//! real processes, real signals, real sockets.
//!
//! - [`drain`]: the serve adapters under load through a SIGTERM, each against the stock
//!   server's shutdown as the control that shows the test can fail.
//! - [`signals`]: signals, exit codes, the watchdog and systemd notifications, with this binary
//!   re-run as the child process.
//! - [`upgrade`]: twenty in-place upgrades of a stock axum Router under load.
//! - [`tonic_server`]: a configured tonic `Server` served through the coordinator.
//! - [`streams`]: WebSockets, SSE and gRPC streams through a SIGTERM, each against the stock
//!   servers as the control.

mod drain;
mod signals;
mod streams;
mod tonic_server;
mod upgrade;
