//! What a component is told when its phase comes.

use std::fmt;
use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Handed to every component started with [`Shutdown::spawn`](crate::Shutdown::spawn): resolves
/// when the component's phase begins, which is the component's cue to stop taking new work,
/// finish what it has, and return.
///
/// A component that ignores it is not stuck forever: at its phase's deadline it is aborted and
/// named in the report.
#[derive(Clone)]
pub struct StopSignal(pub(crate) CancellationToken);

impl StopSignal {
    /// Resolves once this component should stop.
    pub async fn stopped(&self) {
        self.0.cancelled().await;
    }

    /// Whether the stop has been signalled.
    pub fn is_stopped(&self) -> bool {
        self.0.is_cancelled()
    }

    /// The same wait as an owned `'static` future, for APIs that take one (such as axum's
    /// `with_graceful_shutdown` or tonic's `serve_with_shutdown`).
    pub fn into_future(self) -> impl Future<Output = ()> + Send + 'static {
        self.0.cancelled_owned()
    }
}

impl fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopSignal")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

/// What a stop function or component may return: `()`, or a `Result` whose error is shown in
/// the report. Lets `async { store.close().await }` be registered as is, whatever its error type.
pub trait StopResult {
    /// The error as text, or `Ok` when the component stopped cleanly.
    fn into_stop_result(self) -> Result<(), String>;
}

impl StopResult for () {
    fn into_stop_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> StopResult for Result<(), E> {
    fn into_stop_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}
