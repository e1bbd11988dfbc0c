//! The one ordering rule that keeps every read of this store at least as new as what its
//! callers have been told, stated and applied here only.
//!
//! After each COMMIT the writer thread calls [`Visibility::after_commit`], and only then
//! answers the callers of that batch:
//!
//! 1. **count the commit** ([`Commits::bump`]): a reader reuses its open snapshot only while the
//!    count is unchanged (`readers`), and a read that missed the cache adds what it read only if
//!    the count did not move while it ran (`recent`). Counted first, so neither can keep or add
//!    anything older than this commit;
//! 2. **update the cache** of recent orders with what the batch changed (`recent`);
//! 3. **end idle readers' stale snapshots**, so none holds the WAL back from a checkpoint;
//! 4. **wake the followers of the event log**, who read what the commit appended (from a fresh
//!    snapshot, by step 1).
//!
//! So a read that follows an acknowledged write finds that write, from a fresh snapshot or from
//! the cache. While another process also writes to the file (an in-place upgrade's overlap),
//! neither snapshots nor the cache are trusted: see [`super::SqliteStore::other_process_writes`].

use std::sync::Arc;

use super::readers::{Commits, ReadPool};
use super::recent::Recent;
use super::writer::Changes;

/// What the writer updates after each commit, in the order above.
pub(super) struct Visibility {
    pub(super) commits: Commits,
    pub(super) recent: Arc<Recent>,
    pub(super) readers: Arc<ReadPool>,
    /// What followers of the event log wait on.
    pub(super) wakeups: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Visibility {
    /// Called by the writer thread after COMMIT and before any caller of the batch is answered.
    pub(super) fn after_commit(&self, changes: Changes<'_>) {
        self.commits.bump();
        changes.for_each(|change| self.recent.committed(change));
        self.readers.release_stale();
        self.wakeups.send_modify(|n| *n += 1);
    }
}
