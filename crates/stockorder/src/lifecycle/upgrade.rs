//! In-place upgrade on one host, through `phased_shutdown::upgrade`: on SIGHUP the running
//! process starts the new binary with its listening sockets and its SQLite lock, waits until
//! the new process says it is ready, and then shuts itself down gracefully. Nothing is refused
//! and nothing is reset, because the listening sockets never close: both processes accept from
//! them during the overlap, the old one finishes what it accepted, and connections still in the
//! backlog are taken by whichever accepts them.
//!
//! What is the service's own here: the database's lock travels with the sockets (so the file
//! is never unlocked between the two processes), and while both may write to it the store is
//! told so (its snapshots and cache cannot be trusted then).

use std::time::Duration;

/// The name the SQLite file's lock is passed under.
pub const DATABASE_LOCK: &str = "database-lock";

/// The database lock the old process of an upgrade passed on, once (later calls: `None`).
pub fn handed_database_lock() -> Option<std::os::fd::OwnedFd> {
    phased_shutdown::upgrade::handed_fd(DATABASE_LOCK)
}

/// The old process's pid, when this process was started by an upgrade.
pub fn upgraded_from() -> Option<nix::unistd::Pid> {
    let pid = i32::try_from(phased_shutdown::upgrade::upgraded_from()?).ok()?;
    Some(nix::unistd::Pid::from_raw(pid))
}

/// Resolves when process `pid` has exited (checked every 50 ms). A zombie counts as exited:
/// the old process is reparented when its own parent is gone, and whoever reaps it may be slow.
pub async fn exited(pid: nix::unistd::Pid) {
    let alive = || {
        nix::sys::signal::kill(pid, None).is_ok()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
                })
                .is_none_or(|dead| !dead)
    };
    while alive() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
