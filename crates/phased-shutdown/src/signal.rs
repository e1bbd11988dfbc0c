//! Process signals: SIGINT and SIGTERM, installed once. The first starts the shutdown; what a
//! later one does is the watchdog's business (`watchdog.rs`).

/// A termination signal, by name and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// `SIGINT` or `SIGTERM`.
    pub name: &'static str,
    /// Its number (2 or 15 on every Unix tokio supports).
    pub number: u8,
}

impl Signal {
    /// Ctrl+C.
    pub const INTERRUPT: Signal = Signal {
        name: "SIGINT",
        number: 2,
    };
    /// What `kill`, systemd and Kubernetes send.
    pub const TERMINATE: Signal = Signal {
        name: "SIGTERM",
        number: 15,
    };

    /// 128 + the number: the status a shell reports for a program this signal ended.
    pub fn exit_code(self) -> u8 {
        128 + self.number
    }
}

/// Resolves on the first SIGINT (Ctrl+C) or SIGTERM (what `kill`, systemd and Kubernetes send)
/// received after the call, and says which: for a program that stops on its own terms. A
/// [`Shutdown`](crate::Shutdown) catches them itself ([`Shutdown::catch_signals`](crate::Shutdown::catch_signals)),
/// from the moment it is asked to, so that none sent before `run` is lost. Fails only if the
/// handlers cannot be installed (outside a runtime, say).
pub async fn terminated() -> std::io::Result<Signal> {
    Ok(Signals::install()?.next().await)
}

/// The process's termination signals, registered when this is created, so a signal that arrives
/// before anyone awaits it is still seen (and does not kill the process by default action).
pub(crate) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers, on the runtime this is called in.
    pub(crate) fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves on the next SIGINT or SIGTERM and says which.
    pub(crate) async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Signal::INTERRUPT,
                _ = self.terminate.recv() => Signal::TERMINATE,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::INTERRUPT
        }
    }
}
