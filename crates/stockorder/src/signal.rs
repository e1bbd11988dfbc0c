//! Process signals as futures.

/// Resolves on the first SIGINT (Ctrl+C) or SIGTERM (what `kill`, systemd and Kubernetes send).
pub async fn terminate() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
                }
            }
            _ => {
                tracing::warn!("cannot install SIGTERM handler; only Ctrl+C will stop the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
