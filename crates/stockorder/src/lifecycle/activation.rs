//! Socket activation: listening sockets handed over by the service manager (or by the previous
//! process of an in-place upgrade, which speaks the same protocol).
//!
//! Why: with a plain restart, even a perfect graceful shutdown leaves a gap between the old
//! process closing its listener and the new one binding, and connections in that gap are
//! refused. Under socket activation systemd owns the listening sockets (`stockorder.socket`)
//! and passes them to each generation of the service: while one process stops and the next
//! starts, new connections wait in the socket's backlog instead of being refused.
//!
//! A no-op outside systemd: without `LISTEN_FDS` the service binds its own ports.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

/// Why the inherited sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS`/`LISTEN_FDNAMES` could not be read.
    #[error("cannot read the sockets passed by the service manager: {0}")]
    Read(#[source] std::io::Error),
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
pub fn inherited_listeners() -> Result<Option<(TcpListener, TcpListener)>, ActivationError> {
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .map_err(ActivationError::Read)?
        .collect();
    if fds.is_empty() {
        return Ok(None);
    }
    let by_name = |name: &str| fds.iter().find(|(_, n)| n == name).map(|(fd, _)| *fd);
    let (http, grpc) = match (by_name("http"), by_name("grpc"), fds.as_slice()) {
        (Some(http), Some(grpc), _) => (http, grpc),
        (_, _, [(http, _), (grpc, _)]) => (*http, *grpc),
        _ => {
            let names: Vec<&str> = fds.iter().map(|(_, n)| n.as_str()).collect();
            return Err(ActivationError::Unusable(format!(
                "{} ({})",
                fds.len(),
                names.join(", ")
            )));
        }
    };
    Ok(Some((listener(http)?, listener(grpc)?)))
}

fn listener(fd: RawFd) -> Result<TcpListener, ActivationError> {
    // SAFETY: `fd` is one of the descriptors the service manager passed for this process
    // (LISTEN_PID matched); nothing else in the process owns it, and it is taken once.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let addr = listener
        .local_addr()
        .map_err(|e| ActivationError::Unusable(format!("fd {fd} is not a TCP socket: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ActivationError::Unusable(format!("fd {fd} ({addr}): {e}")))?;
    Ok(listener)
}

/// Where [`pass_listeners`] puts its `extra` fd in the new process, after the two listeners.
pub const EXTRA_FD: RawFd = 5;

/// Hands the listening sockets `http` and `grpc` to the program `cmd` starts, the way systemd
/// does: as fds 3 and 4, with `LISTEN_FDS=2` and `LISTEN_FDNAMES=http:grpc`, and `extra` (the
/// database's lock, in an upgrade) as fd [`EXTRA_FD`]. `LISTEN_PID` is the caller's business
/// (it can only be known in the child; the upgrade's child sets it).
pub fn pass_listeners(cmd: &mut std::process::Command, http: RawFd, grpc: RawFd, extra: Option<RawFd>) {
    use std::os::unix::process::CommandExt;
    cmd.env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "http:grpc")
        .env_remove("LISTEN_PID");
    // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2). The fds are
    // first copied above the fds 3, 4 and 5 they are moved to, so none can overwrite another;
    // dup2 leaves the copies at 3, 4 (and 5) open across exec.
    unsafe {
        cmd.pre_exec(move || {
            let h = libc::fcntl(http, libc::F_DUPFD_CLOEXEC, 10);
            let g = libc::fcntl(grpc, libc::F_DUPFD_CLOEXEC, 10);
            let e = extra.map_or(0, |fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10));
            if h < 0 || g < 0 || e < 0 || libc::dup2(h, 3) < 0 || libc::dup2(g, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if extra.is_some() && libc::dup2(e, EXTRA_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
