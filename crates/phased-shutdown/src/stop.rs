//! What a component is told when its phase comes.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Failure;

/// Handed to every component started with [`Shutdown::spawn`](crate::Shutdown::spawn): resolves
/// when the component's phase begins, which is the component's cue to stop taking new work,
/// finish what it has, and return.
///
/// A component that ignores it is not stuck forever: at its phase's deadline it is aborted and
/// named in the report.
#[derive(Clone)]
pub struct StopSignal {
    token: CancellationToken,
    deadline: Arc<OnceLock<Instant>>,
    counts: Arc<Mutex<Vec<(&'static str, u64)>>>,
}

impl StopSignal {
    pub(crate) fn new() -> Self {
        Self {
            token: CancellationToken::new(),
            deadline: Arc::default(),
            counts: Arc::default(),
        }
    }

    /// Records a count for this component's line in the report (connections served, items
    /// flushed): shown beside its outcome, and in [`Entry::counts`](crate::Entry::counts). A
    /// second count of the same name replaces the first, so a component can keep one current
    /// as it stops and the report has it even if the component is then aborted.
    pub fn record(&self, name: &'static str, value: u64) {
        if let Ok(mut counts) = self.counts.lock() {
            match counts.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => counts.push((name, value)),
            }
        }
    }

    /// The counts recorded so far.
    pub(crate) fn counts(&self) -> Vec<(&'static str, u64)> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Sets this component's deadline (its phase's), then tells it to stop.
    pub(crate) fn stop_by(&self, deadline: Instant) {
        let _ = self.deadline.set(deadline);
        self.token.cancel();
    }

    /// Stops it without a deadline of its own (the coordinator was dropped unrun).
    pub(crate) fn cancel(&self) {
        self.token.cancel();
    }

    /// Resolves once this component should stop.
    pub async fn stopped(&self) {
        self.token.cancelled().await;
    }

    /// Whether the stop has been signalled.
    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// When this component will be aborted if it has not returned: its phase's deadline, known
    /// from the moment it is told to stop (`None` before).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }

    /// How long it has left before that deadline, so a stop can bound its own work (flush what
    /// fits, give up on the rest) instead of being cut off mid-way. `None` before the stop.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline().map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The wait for the stop as an owned `'static` future, for APIs that take one.
    ///
    /// Handing it to stock `axum::serve(..).with_graceful_shutdown` or tonic's
    /// `serve_with_shutdown` is not enough for zero dropped requests: both close idle
    /// keep-alive connections while clients may be sending on them, and return before the
    /// connections they detached have finished. See the crate README.
    pub fn into_future(self) -> impl Future<Output = ()> + Send + 'static {
        self.token.cancelled_owned()
    }
}

impl fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopSignal")
            .field("stopped", &self.is_stopped())
            .field("deadline", &self.deadline())
            .finish()
    }
}

/// What a stop function or component may return: `()`, or a `Result` whose error goes into
/// the report with its chain of sources. Lets `async { store.close().await }` be registered as
/// is, whatever its error type: any `std::error::Error`, `anyhow::Error`, `eyre::Report`, or a
/// `&str`/`String` message.
pub trait StopResult {
    /// `Ok` when the component stopped cleanly, its failure otherwise.
    fn into_stop_result(self) -> Result<(), Failure>;
}

impl StopResult for () {
    fn into_stop_result(self) -> Result<(), Failure> {
        Ok(())
    }
}

impl<E: Into<Box<dyn Error + Send + Sync + 'static>>> StopResult for Result<(), E> {
    fn into_stop_result(self) -> Result<(), Failure> {
        self.map_err(|e| Failure::from_error(e.into()))
    }
}

impl StopResult for Result<(), Failure> {
    fn into_stop_result(self) -> Result<(), Failure> {
        self
    }
}
