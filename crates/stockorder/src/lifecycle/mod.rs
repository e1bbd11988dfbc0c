//! The process around the service: how it starts (signals held until handled, sockets handed
//! over by systemd or a previous process), how it says it is ready, and how it hands over to a
//! new version in place (SIGHUP).
//!
//! The hand-over itself (sockets passed, the readiness handshake) is `phased_shutdown::upgrade`;
//! what is here is the service's part of it.

pub mod activation;
pub mod notify;
pub mod signals;
pub mod upgrade;
