//! The watchdog: an OS thread with a small runtime of its own, started at the trigger, so its
//! promises hold even when the service's runtime is wedged (a component blocking its thread, a
//! runtime whose workers are all stuck):
//!
//! - at the global deadline plus a grace, if the shutdown has not finished, it writes what is
//!   still stopping to stderr and exits the process with 1;
//! - a second SIGINT/SIGTERM during a signal-started shutdown (after the duplicate window)
//!   makes [`Shutdown::run`](crate::Shutdown::run) return at once with the report so far, and
//!   exits the process with 128 + the signal's number if it has not exited a moment later;
//! - after `run` returns, a signal still ends the process (128 + its number) instead of being
//!   swallowed by the handlers the coordinator installed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::Signal;
use crate::signal::Signals;

/// Signals that arrive this soon after the one that started the shutdown are the same request
/// (a supervisor forwarding both SIGINT and SIGTERM, a terminal's Ctrl+C reaching a process
/// group twice), not an operator asking again.
pub const DUPLICATE_WINDOW: Duration = Duration::from_millis(200);

/// How long the process is given to exit by itself after a second signal (so destructors run
/// and logs are flushed) before the watchdog ends it.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// What the watchdog shares with the coordinator.
#[derive(Default)]
pub(crate) struct Shared {
    /// The components whose stop is under way, for the overrun message.
    pub(crate) stopping: Mutex<Vec<String>>,
    /// The second signal, once it came.
    pub(crate) interrupted: Mutex<Option<Signal>>,
}

/// The coordinator's side of the watchdog.
pub(crate) struct Watchdog {
    pub(crate) shared: Arc<Shared>,
    /// Cancelled by the watchdog on a second signal: `run` returns at once.
    pub(crate) interrupt: CancellationToken,
    /// Cancelled by `run` when it returns.
    done: CancellationToken,
}

/// How the watchdog is set up for one shutdown.
pub(crate) struct Plan {
    /// Exit with 1 if the shutdown is still going at this instant (`None`: never).
    pub(crate) hard_deadline: Option<Instant>,
    /// Watch for signals (the coordinator catches them).
    pub(crate) signals: bool,
    /// When the signal that started the shutdown came; `None` when something else started it.
    pub(crate) first_signal: Option<Instant>,
    /// Where an overrun is also written, for the orchestrator.
    pub(crate) termination_message: Option<std::path::PathBuf>,
}

impl Watchdog {
    /// Starts the thread. Without a deadline and without signals there is nothing to watch, and
    /// no thread is started.
    pub(crate) fn start(plan: Plan) -> std::io::Result<Self> {
        let watchdog = Self {
            shared: Arc::default(),
            interrupt: CancellationToken::new(),
            done: CancellationToken::new(),
        };
        if plan.hard_deadline.is_none() && !plan.signals {
            return Ok(watchdog);
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Registered here, before the thread starts, so no signal falls between the trigger
        // and the watchdog's first look.
        let signals = if plan.signals {
            let _entered = runtime.enter();
            Some(Signals::install()?)
        } else {
            None
        };
        let (shared, interrupt, done) = (
            Arc::clone(&watchdog.shared),
            watchdog.interrupt.clone(),
            watchdog.done.clone(),
        );
        std::thread::Builder::new()
            .name("shutdown-watchdog".into())
            .spawn(move || runtime.block_on(watch(plan, signals, shared, interrupt, done)))?;
        Ok(watchdog)
    }

    /// The shutdown finished (or was cut short): no deadline to enforce any more.
    pub(crate) fn finished(&self) {
        self.done.cancel();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

async fn next(signals: &mut Option<Signals>) -> Signal {
    match signals {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn watch(
    plan: Plan,
    mut signals: Option<Signals>,
    shared: Arc<Shared>,
    interrupt: CancellationToken,
    done: CancellationToken,
) {
    // Started by a handle or a component: the first signal is the operator's first request.
    let mut armed = plan.first_signal.is_some();
    let overrun = async {
        match plan.hard_deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(overrun);
    loop {
        tokio::select! {
            // First: a signal that comes after `run` returned belongs to the loop below, even
            // when this thread sees both at once.
            biased;
            () = done.cancelled() => break,
            () = &mut overrun => {
                let stopping = shared.stopping.lock().map(|s| s.join(", ")).unwrap_or_default();
                let message = format!("phased-shutdown: the shutdown overran its deadline; still stopping: {stopping}; exiting with status 1");
                eprintln!("{message}");
                if let Some(path) = &plan.termination_message {
                    let _ = std::fs::write(path, crate::report::truncate(message, crate::report::TERMINATION_MESSAGE_LIMIT));
                }
                tracing::error!(event = "shutdown.overrun", stopping = %stopping, "shutdown overran its deadline: exiting");
                std::process::exit(1);
            }
            signal = next(&mut signals) => {
                if plan.first_signal.is_some_and(|first| first.elapsed() < DUPLICATE_WINDOW) {
                    continue; // the same request, delivered twice
                }
                if !armed {
                    armed = true;
                    tracing::warn!(signal = signal.name, "signal during a shutdown already under way: a second one stops at once");
                    continue;
                }
                tracing::error!(event = "shutdown.interrupted", signal = signal.name, code = signal.exit_code(), "second signal during shutdown: exiting now");
                if let Ok(mut slot) = shared.interrupted.lock() {
                    *slot = Some(signal);
                }
                interrupt.cancel();
                tokio::time::sleep(EXIT_GRACE).await;
                eprintln!("phased-shutdown: {} during shutdown and the process did not exit; exiting with status {}", signal.name, signal.exit_code());
                std::process::exit(signal.exit_code().into());
            }
        }
    }
    // `run` has returned. A hang after it (a join that never ends, a destructor that blocks)
    // must not make SIGINT and SIGTERM useless: the handlers installed for the shutdown would
    // otherwise swallow them for the rest of the process.
    if signals.is_some() {
        let signal = next(&mut signals).await;
        eprintln!(
            "phased-shutdown: {} after the shutdown finished; exiting with status {}",
            signal.name,
            signal.exit_code()
        );
        std::process::exit(signal.exit_code().into());
    }
}
