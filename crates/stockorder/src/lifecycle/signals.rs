//! Process signals: as futures, and held back until their handlers exist.

/// Holds SIGINT and SIGTERM pending on this thread and every thread started from it, so a
/// signal sent in the first milliseconds (before the runtime and the handlers exist) waits
/// instead of killing the process by its default action. Call first thing in `main`, then
/// [`release_termination`] once the handlers are installed. (A child process starts with an
/// empty mask: the standard library resets it on spawn.)
pub fn hold_termination() {
    #[cfg(unix)]
    if let Err(e) =
        nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&termination()), None)
    {
        eprintln!("warning: cannot hold back SIGINT/SIGTERM during start-up: {e}");
    }
}

/// Lets SIGINT and SIGTERM through to this thread again: one that came while they were held is
/// delivered now, to the handlers installed meanwhile (or by its default action when there are
/// none). The runtime's worker threads keep them held, so this thread receives them.
pub fn release_termination() {
    #[cfg(unix)]
    if let Err(e) =
        nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_UNBLOCK, Some(&termination()), None)
    {
        eprintln!("warning: cannot release SIGINT/SIGTERM: {e}");
    }
}

#[cfg(unix)]
fn termination() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGINT);
    set.add(nix::sys::signal::Signal::SIGTERM);
    set
}

/// Resolves on the first SIGINT (Ctrl+C) or SIGTERM (what `kill`, systemd and Kubernetes send),
/// and logs which: [`phased_shutdown::terminated`], for the demos that stop on their own terms.
pub async fn terminate() {
    match phased_shutdown::terminated().await {
        Ok(signal) => tracing::info!(event = "signal", signal = signal.name, "signal received"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGTERM handler; only Ctrl+C will stop the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
