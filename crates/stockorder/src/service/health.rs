//! Whether storage can write right now, as every part of the service needs to know it: `/ready`
//! and gRPC health turn unready while writes fail (so a load balancer sends traffic to healthy
//! replicas), the processor waits instead of dying, and a fault that cannot clear by itself
//! ends the service.
//!
//! The state changes on what real calls see: a transient [`Fault`] on any call turns it to
//! failing, a successful write (or [`OrderRepository::probe`]) back to writing. A successful
//! read proves nothing (reads work on a full disk), so reads only ever report faults. Each
//! change is logged once, with its cause, not once per failed request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::port::{Fault, OrderRepository, RepositoryError};

/// What storage is doing, as [`StorageHealth`] last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageState {
    /// Writes commit.
    Writing,
    /// Writes fail for a reason that can clear by itself.
    Failing {
        /// The latest fault seen.
        fault: Fault,
        /// When writes started failing.
        since: Instant,
    },
    /// The database is damaged: nothing will clear this, and serving from it is wrong.
    Broken(String),
}

/// The storage state, shared by the desk (which reports what its calls see) and everything that
/// acts on it. Cheap to read on every request: one atomic load while storage is writing.
#[derive(Debug)]
pub struct StorageHealth {
    /// False exactly while the state is [`StorageState::Writing`]: the hot path's only check.
    troubled: AtomicBool,
    state: watch::Sender<StorageState>,
}

impl Default for StorageHealth {
    fn default() -> Self {
        Self {
            troubled: AtomicBool::new(false),
            state: watch::channel(StorageState::Writing).0,
        }
    }
}

/// The database is damaged; the service stops rather than serve from it.
#[derive(Debug, thiserror::Error)]
#[error("storage is broken and cannot recover by itself: {0}")]
pub struct StorageBroken(pub String);

impl StorageHealth {
    /// True while writes commit (or nothing has failed yet).
    pub fn is_writing(&self) -> bool {
        !self.troubled.load(Ordering::Relaxed)
    }

    /// The current state.
    pub fn state(&self) -> StorageState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of state (for gRPC health).
    pub fn subscribe(&self) -> watch::Receiver<StorageState> {
        self.state.subscribe()
    }

    /// Records what a write saw.
    pub fn after_write<T>(&self, result: &Result<T, RepositoryError>) {
        match result {
            Ok(_) if self.is_writing() => {}
            Ok(_) => self.recovered(),
            Err(e) => self.after_error(e),
        }
    }

    /// Records what a read saw: only faults count (a read can work while writes cannot).
    pub fn after_read<T>(&self, result: &Result<T, RepositoryError>) {
        if let Err(e) = result {
            self.after_error(e);
        }
    }

    fn after_error(&self, e: &RepositoryError) {
        match e {
            RepositoryError::Unavailable { fault, .. } => self.failing(*fault, e),
            RepositoryError::Corrupt(why) => self.broken(why),
            _ => {}
        }
    }

    fn failing(&self, fault: Fault, cause: &RepositoryError) {
        self.troubled.store(true, Ordering::Relaxed);
        self.state.send_if_modified(|state| match state {
            StorageState::Broken(_) => false,
            StorageState::Failing { fault: seen, .. } if *seen == fault => false,
            StorageState::Failing { .. } | StorageState::Writing => {
                let since = match state {
                    StorageState::Failing { since, .. } => *since,
                    _ => Instant::now(),
                };
                tracing::warn!(fault = fault.as_str(), error = %cause, "storage failing: writes are refused with 503 and readiness is off until one succeeds");
                *state = StorageState::Failing { fault, since };
                true
            }
        });
    }

    fn recovered(&self) {
        self.state.send_if_modified(|state| match state {
            StorageState::Failing { since, .. } => {
                tracing::info!(
                    failing_ms = since.elapsed().as_millis() as u64,
                    "storage writes again: readiness restored"
                );
                *state = StorageState::Writing;
                self.troubled.store(false, Ordering::Relaxed);
                true
            }
            StorageState::Writing | StorageState::Broken(_) => false,
        });
    }

    fn broken(&self, why: &str) {
        self.troubled.store(true, Ordering::Relaxed);
        self.state.send_if_modified(|state| {
            if matches!(state, StorageState::Broken(_)) {
                return false;
            }
            tracing::error!(error = %why, "storage is broken: the service stops");
            *state = StorageState::Broken(why.to_owned());
            true
        });
    }

    /// While storage fails, probes it with a small write after a growing pause (so the state
    /// returns to writing even when no client writes, e.g. because the load balancer moved
    /// traffic away); returns when `stop` resolves, and with an error as soon as storage is
    /// broken, which ends the service.
    pub async fn watch<R: OrderRepository>(
        &self,
        repository: &R,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), StorageBroken> {
        tokio::pin!(stop);
        let mut changes = self.subscribe();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            let state = changes.borrow_and_update().clone();
            match state {
                StorageState::Broken(why) => return Err(StorageBroken(why)),
                StorageState::Writing => {
                    backoff.reset();
                    tokio::select! {
                        () = &mut stop => return Ok(()),
                        changed = changes.changed() => if changed.is_err() { return Ok(()) },
                    }
                }
                StorageState::Failing { .. } => {
                    tokio::select! {
                        () = &mut stop => return Ok(()),
                        () = tokio::time::sleep(backoff.next_delay()) => {
                            let probed = repository.probe().await;
                            if matches!(probed, Err(RepositoryError::Closed)) {
                                return Ok(()); // closing: shutdown is under way
                            }
                            self.after_write(&probed);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> RepositoryError {
        RepositoryError::Unavailable {
            fault: Fault::Full,
            source: "database or disk is full".into(),
        }
    }

    #[test]
    fn a_fault_turns_it_failing_and_a_write_back() {
        let health = StorageHealth::default();
        assert!(health.is_writing());
        health.after_write::<()>(&Err(full()));
        assert!(!health.is_writing());
        assert!(matches!(
            health.state(),
            StorageState::Failing { fault: Fault::Full, .. }
        ));
        // A read that works proves nothing about writes.
        health.after_read(&Ok(()));
        assert!(!health.is_writing());
        health.after_write(&Ok(()));
        assert!(health.is_writing());
        assert_eq!(health.state(), StorageState::Writing);
    }

    #[test]
    fn other_errors_change_nothing_and_corruption_is_final() {
        let health = StorageHealth::default();
        health.after_write::<()>(&Err(RepositoryError::Closed));
        health.after_write::<()>(&Err(RepositoryError::Database("constraint".into())));
        assert!(health.is_writing());
        health.after_read::<()>(&Err(RepositoryError::Corrupt("malformed page".into())));
        health.after_write(&Ok(()));
        health.after_write::<()>(&Err(full()));
        assert_eq!(health.state(), StorageState::Broken("malformed page".into()));
        assert!(!health.is_writing());
    }
}
