//! The process around the service: how it starts (signals held until handled, sockets handed
//! over by systemd or a previous process), how it says it is ready, and how it hands over to a
//! new version in place (SIGHUP).
//!
//! Imports go one way: [`notify`] → [`upgrade`] → [`activation`]; [`signals`] stands alone.

pub mod activation;
pub mod notify;
pub mod signals;
pub mod upgrade;
