//! The one shared "draining" state: the first thing a shutdown changes.

use tokio::sync::watch;

/// Whether this instance still wants new traffic. Turns to draining the moment shutdown is
/// triggered, before any phase runs and before the drain delay, so a readiness probe
/// (`/ready`, gRPC health) can tell load balancers to stop sending work while everything
/// still serves. Cheap to clone; every adapter that reports readiness holds one.
#[derive(Debug, Clone)]
pub struct Readiness(pub(crate) watch::Receiver<bool>);

impl Readiness {
    /// True until shutdown starts.
    pub fn is_ready(&self) -> bool {
        !*self.0.borrow()
    }

    /// True from the moment shutdown starts.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown starts (at once if it has, or if the coordinator is gone).
    pub async fn draining(&self) {
        let mut rx = self.0.clone();
        // Err means the coordinator was dropped: nothing will serve any more, so that is
        // draining too.
        let _ = rx.wait_for(|draining| *draining).await;
    }
}

/// The switch behind [`Readiness`]. A [`Shutdown`](crate::Shutdown) owns one and flips it at
/// the trigger; code that drives readiness by hand (a small program without a coordinator, a
/// test) can own one directly.
#[derive(Debug)]
pub struct DrainSwitch(watch::Sender<bool>);

impl Default for DrainSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl DrainSwitch {
    /// A switch in the ready position.
    pub fn new() -> Self {
        Self(watch::channel(false).0)
    }

    /// A view for adapters to watch.
    pub fn readiness(&self) -> Readiness {
        Readiness(self.0.subscribe())
    }

    /// Turns every [`Readiness`] of this switch to draining. Idempotent. When it returns, every
    /// `is_draining` answers true, and every [`Readiness::draining`] waiting has been woken.
    pub fn start_draining(&self) {
        self.0.send_replace(true);
    }
}
