//! The tools' integration tests, as one test binary: each tool run as a user runs it, against
//! a real `stockorder` process (built beside this binary by `cargo test --workspace`).

mod client;
mod load;
mod prove;
mod rolling_restart;
