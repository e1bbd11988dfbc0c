//! Whether an HTTP/2 connection has carried a request yet: one that has not gets a grace to
//! send it before GOAWAY.
//!
//! Why: a client opens a connection, sends the preface, and writes its first request a moment
//! later. A GOAWAY in that moment says "no stream taken, retry elsewhere" (last stream id 0), and
//! the server then closes a connection with no open stream. A careful client retries; many
//! report an error instead, for a call the server would gladly have answered. With this grace
//! it is answered. (The broken pipes the drain test saw were the reset on close that `linger`
//! prevents; this grace was added first, for the race above, and kept.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Set by the connection's first request; awaited at drain.
#[derive(Clone, Default)]
pub(super) struct FirstRequest {
    seen: Arc<AtomicBool>,
    arrived: Arc<Notify>,
}

impl FirstRequest {
    /// Resolves when the connection has carried a request, or after `grace`.
    pub(super) async fn within(&self, grace: Duration) {
        if !self.seen.load(Ordering::Acquire) {
            // `notify_one` keeps a permit, so a request between the check and this wait counts.
            let _ = tokio::time::timeout(grace, self.arrived.notified()).await;
        }
    }

    /// Notes that the connection has carried a request.
    pub(super) fn mark(&self) {
        if !self.seen.load(Ordering::Relaxed) && !self.seen.swap(true, Ordering::AcqRel) {
            self.arrived.notify_one();
        }
    }
}
