//! Socket activation: listening sockets handed over by the service manager (or by the previous
//! process of an in-place upgrade, which speaks the same protocol), taken with
//! `phased_shutdown::upgrade`.
//!
//! Why: with a plain restart, even a perfect graceful shutdown leaves a gap between the old
//! process closing its listener and the new one binding, and connections in that gap are
//! refused. Under socket activation systemd owns the listening sockets (`stockorder.socket`)
//! and passes them to each generation of the service: while one process stops and the next
//! starts, new connections wait in the socket's backlog instead of being refused.
//!
//! A no-op outside systemd: without `LISTEN_FDS` the service binds its own ports.

use std::net::TcpListener;

use phased_shutdown::upgrade::{UpgradeError, inherited_listeners};

/// Why the inherited sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// The passed descriptors could not be read, or one is not a listening TCP socket.
    #[error(transparent)]
    Read(#[from] UpgradeError),
    /// The wrong number or kind of sockets was passed.
    #[error(
        "socket activation needs two listening TCP sockets, named http and grpc (LISTEN_FDNAMES=http:grpc) or in that order; got {0}"
    )]
    Unusable(String),
}

/// The HTTP and gRPC listening sockets passed by the service manager, if any.
///
/// Sockets are matched by name (`FileDescriptorName=http` / `grpc` in the socket unit); when
/// unnamed, the first is HTTP and the second gRPC.
pub fn inherited() -> Result<Option<(TcpListener, TcpListener)>, ActivationError> {
    let mut listeners = inherited_listeners()?;
    if listeners.is_empty() {
        return Ok(None);
    }
    let names = listeners.names().join(", ");
    let count = listeners.len();
    match (listeners.take("http", 0), listeners.take("grpc", 1)) {
        (Some(http), Some(grpc)) => Ok(Some((http, grpc))),
        _ => Err(ActivationError::Unusable(format!("{count} ({names})"))),
    }
}
