//! stockorder: a stock-order service with a REST API over a hexagonal core, built to show how a
//! production service shuts down without losing or breaking a request.
//!
//! Layers, inner to outer: [`domain`] (orders, validation, state machine) ← [`port`] (traits) ←
//! [`service`] (business rules) ← [`adapter`] (inbound: HTTP, gRPC; outbound: SQLite,
//! PostgreSQL, prices, metrics). [`app`] wires them together.

#![warn(missing_docs)]

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
