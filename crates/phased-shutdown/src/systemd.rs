//! What systemd is told while the shutdown goes on (feature `systemd`): `STOPPING=1` at the
//! trigger, a `STATUS=` line per phase (what `systemctl status` shows), and
//! `EXTEND_TIMEOUT_USEC=` sized to the budget that is left, so that a unit whose
//! `TimeoutStopSec` is shorter than the coordinator's deadline is not killed while a phase is
//! still within its time, and one that hangs is killed soon after the deadline instead of after
//! systemd's default 90 s.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing; without the feature they
//! compile to nothing.

use std::time::Duration;

/// Tells the service manager the shutdown started, and how long it may take.
pub(crate) fn stopping(reason: &crate::Reason, budget: Duration) {
    #[cfg(feature = "systemd")]
    send(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status(&format!("shutting down ({reason})")),
        sd_notify::NotifyState::ExtendTimeoutUsec(micros(budget)),
    ]);
    #[cfg(not(feature = "systemd"))]
    let _ = (reason, budget);
}

/// Tells the service manager which phase runs now, and how long is left.
pub(crate) fn phase(name: &str, number: usize, of: usize, components: usize, left: Duration) {
    #[cfg(feature = "systemd")]
    send(&[
        sd_notify::NotifyState::Status(&format!(
            "shutting down: phase {number}/{of} \"{name}\", {components} component(s), {} ms left",
            left.as_millis()
        )),
        sd_notify::NotifyState::ExtendTimeoutUsec(micros(left)),
    ]);
    #[cfg(not(feature = "systemd"))]
    let _ = (name, number, of, components, left);
}

/// Tells the service manager how the shutdown ended (the report's summary).
pub(crate) fn finished(summary: &str) {
    #[cfg(feature = "systemd")]
    send(&[sd_notify::NotifyState::Status(summary)]);
    #[cfg(not(feature = "systemd"))]
    let _ = summary;
}

/// `EXTEND_TIMEOUT_USEC` takes a u32 of microseconds (about 71 minutes): a longer budget is
/// sent as that maximum, which is still an extension.
#[cfg(feature = "systemd")]
fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(feature = "systemd")]
fn send(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}
