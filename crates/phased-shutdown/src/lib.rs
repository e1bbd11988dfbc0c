//! Ordered, deadline-bounded graceful shutdown for tokio services.
//!
//! A service registers its components with a [`Shutdown`] coordinator, each in a [`Phase`]:
//! servers first, then workers, then resources such as the database. When a trigger comes (a
//! SIGINT or SIGTERM, a [`ShutdownHandle`], or a component ending on its own), the coordinator
//!
//! 1. turns [`Readiness`] to draining, so `/ready` and gRPC health can tell load balancers,
//! 2. keeps serving for the drain delay, so they have time to notice,
//! 3. runs the phases in order: the components of one phase stop concurrently, each phase
//!    bounded by its own budget and all of them by one global deadline. Whatever is still
//!    running at a deadline is aborted and named,
//! 4. returns a [`Report`]: one [`Entry`] per component with its phase, timing and [`Outcome`],
//!    and an exit code.
//!
//! A second signal during a signal-started shutdown stops it at once, with exit code 128 + its
//! number ([`SecondSignal`]). Every task the coordinator starts is joined before
//! [`Shutdown::run`] returns (one that blocks its thread past the deadline is named and left
//! behind), and a watchdog on its own OS thread ends the process if the deadline passes
//! anyway, so even a wedged runtime cannot hold the shutdown up. The crate knows nothing of
//! HTTP, gRPC or databases: a component is a name, a phase, and an async function.
//!
//! Unix only (Linux, macOS, the BSDs): the signals it handles and the sockets its serve
//! adapters own are Unix ones. On another platform the build stops with that message.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<std::process::ExitCode> {
//!     let mut shutdown = phased_shutdown::Shutdown::new()
//!         .deadline(Duration::from_secs(30))
//!         .drain_delay(Duration::from_secs(5))
//!         .catch_signals()?;
//!     let servers = shutdown.phase("stop servers");
//!     let resources = shutdown.phase("close resources");
//!
//!     let readiness = shutdown.readiness();
//!     shutdown.spawn(servers, "http", move |stop| async move {
//!         // serve until `stop.stopped()` resolves, then finish what was accepted;
//!         // answer /ready with 503 once `readiness.is_draining()`.
//!         stop.stopped().await;
//!         let _ = readiness;
//!     });
//!     shutdown.on_stop(resources, "database", || async {
//!         // flush and close: runs only after every server has stopped
//!     });
//!
//!     let report = shutdown.run().await;
//!     report.log();
//!     // Returned rather than `process::exit`: destructors run and logs are flushed.
//!     Ok(std::process::ExitCode::from(report.exit_code()))
//! }
//! ```

//! # Log events
//!
//! The `tracing` events a log reader may key on carry a stable `event` field (the message text
//! may be reworded): `signal`, `shutdown.started`, `drain.started`, `phase.started`, `listener.closed` (feature
//! `hyper`), `component.stopped` (with `clean`), `shutdown.entry` (one per report entry, from
//! [`Report::log`]), `shutdown.complete` (with `clean` and `exit_code`), `shutdown.interrupted`
//! (a second signal) and `shutdown.overrun` (the watchdog).

#![warn(missing_docs)]

#[cfg(not(unix))]
compile_error!(
    "phased-shutdown supports Unix only (Linux, macOS, the BSDs): it handles Unix signals and owns Unix sockets"
);

mod readiness;
mod report;
#[cfg(feature = "hyper")]
pub mod serve;
mod shutdown;
mod signal;
mod stop;
mod systemd;
#[cfg(feature = "upgrade")]
pub mod upgrade;
mod watchdog;

pub use readiness::{DrainSwitch, Readiness};
pub use report::{Entry, Failure, Outcome, Reason, Report};
pub use shutdown::{Phase, SecondSignal, Shutdown, ShutdownHandle};
pub use signal::{Signal, terminated};
pub use stop::{StopResult, StopSignal};
pub use watchdog::DUPLICATE_WINDOW;

#[cfg(test)]
mod tests;
