//! The HTTP/1 connection's timer for hyper: one tokio sleep per connection, moved about once
//! a second rather than at every request.
//!
//! Why not hyper-util's `TokioTimer`: hyper arms the header read timeout
//! ([`ConnectionLimits::header_read_timeout`](super::ConnectionLimits)) for every request, from
//! the moment it starts waiting for the next request head, and drops it once the head is read.
//! With `TokioTimer` each request creates a tokio sleep, registers it in tokio's timer wheel and
//! removes it again: measured with callgrind, that was the largest cost the serve adapter added
//! to a request over stock `axum::serve` (the crate README has the figures).
//!
//! Here the connection keeps one tokio sleep. A request's deadline is always later than the one
//! before, so the sleep is only moved when the new deadline is more than [`SLACK`] past it, and
//! a connection that sends request after request moves it about once a second. The price: a
//! header read timeout fires up to [`SLACK`] late, which for a bound on slow clients of seconds
//! does not matter.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A [`hyper::rt::Timer`] for one connection: its newest sleep uses the connection's one tokio
/// sleep; any older one still alive (hyper keeps one at a time for HTTP/1) gets its own.
#[derive(Clone, Default)]
pub(super) struct ConnTimer {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The sleep that may use `sleep`: the newest.
    owner: u64,
    next: u64,
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let id = match self.shared.lock() {
            Ok(mut shared) => {
                shared.next += 1;
                shared.owner = shared.next;
                shared.next
            }
            Err(_) => 0,
        };
        Box::pin(ConnSleep {
            deadline: deadline.into(),
            id,
            shared: Arc::clone(&self.shared),
            own: None,
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<ConnSleep>() {
            Some(mut sleep) => sleep.deadline = new_deadline.into(),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A deadline, waited on with the connection's tokio sleep (or, if a newer one took that, its
/// own).
struct ConnSleep {
    deadline: tokio::time::Instant,
    id: u64,
    shared: Arc<Mutex<Shared>>,
    own: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How late a sleep may fire: the shared sleep is moved only when a deadline is further past
/// it than this.
pub(super) const SLACK: Duration = Duration::from_secs(1);

/// Waits on `slot` for `deadline`, firing up to [`SLACK`] late.
fn poll_at(
    slot: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    deadline: tokio::time::Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let sleep = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline + SLACK)));
    let armed = sleep.deadline();
    if armed < deadline || armed > deadline + SLACK {
        sleep.as_mut().reset(deadline + SLACK);
    }
    sleep.as_mut().poll(cx)
}

impl std::future::Future for ConnSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Ok(mut shared) = this.shared.lock()
            && shared.owner == this.id
        {
            return poll_at(&mut shared.sleep, this.deadline, cx);
        }
        poll_at(&mut this.own, this.deadline, cx)
    }
}

impl hyper::rt::Sleep for ConnSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    fn poll_once(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> Poll<()> {
        sleep.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    /// Ends within [SLACK] after `deadline`.
    async fn ends_near(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, start: tokio::time::Instant, deadline: u64) {
        sleep.as_mut().await;
        let at = start.elapsed();
        let deadline = Duration::from_secs(deadline);
        assert!(
            at >= deadline && at <= deadline + SLACK,
            "ended at {at:?}, deadline {deadline:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_sleep_ends_near_its_own_deadline_whether_or_not_it_shares() {
        let timer = ConnTimer::default();
        let start = tokio::time::Instant::now();
        let at = |s: u64| (start + Duration::from_secs(s)).into_std();
        let mut first = timer.sleep_until(at(10));
        assert!(poll_once(&mut first).is_pending());
        // Moved earlier after it was registered, then awaited.
        timer.reset(&mut first, at(2));
        ends_near(&mut first, start, 2).await;
        // A newer sleep takes the shared one; the older keeps its own deadline.
        timer.reset(&mut first, at(8));
        assert!(poll_once(&mut first).is_pending());
        let mut second = timer.sleep_until(at(5));
        ends_near(&mut second, start, 5).await;
        ends_near(&mut first, start, 8).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_within_the_slack_leaves_the_sleep_where_it_is() {
        let timer = ConnTimer::default();
        let start = tokio::time::Instant::now();
        let mut sleep = timer.sleep_until((start + Duration::from_secs(10)).into_std());
        assert!(poll_once(&mut sleep).is_pending());
        let armed = || timer.shared.lock().unwrap().sleep.as_ref().map(|s| s.deadline());
        let first = armed();
        timer.reset(&mut sleep, (start + Duration::from_millis(10_500)).into_std());
        assert!(poll_once(&mut sleep).is_pending());
        assert_eq!(armed(), first, "moved for a deadline within the slack");
        timer.reset(&mut sleep, (start + Duration::from_secs(12)).into_std());
        assert!(poll_once(&mut sleep).is_pending());
        assert_ne!(armed(), first);
        ends_near(&mut sleep, start, 12).await;
    }
}
