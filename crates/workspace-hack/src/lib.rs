//! Empty on purpose: this crate exists for its `Cargo.toml`, which turns on, for the service and
//! the tools alike, the union of the dependency features that any README command would turn on,
//! so that one `cargo build` serves `cargo run`, the tools and the demos without rebuilding.
