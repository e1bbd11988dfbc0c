//! Telling whoever started this process that it is ready. (How a shutdown goes is told by the
//! `phased-shutdown` crate's `systemd` feature.)

/// Tells the service manager the service is ready (`READY=1`): systemd then considers the
/// start (or restart) complete. A no-op outside systemd. In the new process of an in-place
/// upgrade, also tells the old process, which then stops.
pub fn notify_ready() {
    phased_shutdown::upgrade::ready();
}
