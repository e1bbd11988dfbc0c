//! Capped exponential backoff with jitter, for retrying storage after a fault.

use std::time::Duration;

/// Delays that double from `first` up to `cap`, each with ±50% random jitter, so replicas that
/// lost the database together do not come back in lock step.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, never above `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap,
            next: first,
        }
    }

    /// The pause before the next attempt; each call doubles the next one, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        base.mul_f64(0.5 + fastrand::f64())
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let bases = [100, 200, 400, 800, 800, 800];
        for base in bases {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            assert!(
                d >= base as f64 * 0.5 && d <= base as f64 * 1.5,
                "{d} ms for base {base}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(150));
    }
}
