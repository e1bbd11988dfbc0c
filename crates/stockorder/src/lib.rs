//! stockorder: a stock-order service with a REST API over a hexagonal core, built to show how a
//! production service shuts down without losing or breaking a request.
//!
//! Layers, inner to outer: [`domain`] (orders, validation, state machine) ← [`port`] (traits) ←
//! [`service`] (business rules) ← [`adapter`] (inbound: HTTP, gRPC; outbound: SQLite,
//! PostgreSQL, prices, metrics). [`app`] wires them together.

#![warn(missing_docs)]
// The A/B builds of bench/run (the `stock-*` and `no-recent-cache` features) replace one of
// the hand-written speed-ups with the crate it replaces, leaving the replaced code unused;
// bench/events' (`no-event-log`) leaves the event log out.
#![cfg_attr(
    any(
        feature = "stock-log-format",
        feature = "stock-log-writer",
        feature = "stock-json",
        feature = "stock-request-id",
        feature = "no-recent-cache",
        feature = "no-event-log"
    ),
    allow(dead_code, unused_imports)
)]

pub mod adapter;
pub mod app;
pub mod backoff;
pub mod config;
pub mod domain;
pub mod lesson;
pub mod lifecycle;
pub mod port;
pub mod processor;
mod rfc3339;
pub mod service;
pub mod telemetry;

#[cfg(test)]
mod testing;
