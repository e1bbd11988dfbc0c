//! Read connections. WAL mode lets any number of them read while the writer commits; each
//! reader sees the last committed state, so a read after an acknowledged write finds it.
//!
//! A read transaction costs SQLite file-lock system calls to open and close. So a reader keeps
//! its read transaction open across reads for as long as nothing has been committed since it
//! began ([`Commits`] unchanged); why a read after an acknowledged write still finds it is the
//! ordering rule in `visibility`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use rusqlite::{Connection, OpenFlags};

use super::{rows, schema};
use crate::port::RepositoryError;

/// Connections kept open. Reads are short and run on the runtime's worker threads (one per
/// core) plus a few blocking threads for list pages, so a handful is enough.
pub(super) const SLOTS: usize = 8;

/// The number of commits the writer has made. Shared by the writer (which bumps it after each
/// commit, before answering) and the readers (which reuse a snapshot only while it is unchanged).
#[derive(Debug, Clone, Default)]
pub(super) struct Commits(Arc<AtomicU64>);

impl Commits {
    /// Records a commit. Called by the writer after COMMIT and before any caller is answered.
    pub(super) fn bump(&self) -> u64 {
        self.0.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The commits counted so far.
    pub(super) fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A pooled connection and the commit count its open read transaction was begun at, if one is
/// open.
#[derive(Debug)]
struct Reader {
    conn: Connection,
    snapshot: Option<u64>,
}

impl Reader {
    /// Ends the open read transaction, if any.
    fn end_snapshot(&mut self) {
        if self.snapshot.take().is_some() {
            // Ending a read-only transaction cannot lose anything; if it fails, the connection
            // is in an unknown state and `with` will see the error on its next use.
            let _ = rows::control(&self.conn, "COMMIT");
        }
    }

    /// Makes sure the open read transaction (if any) began after the latest commit.
    fn fresh_snapshot(&mut self, commits: &Commits) -> rusqlite::Result<()> {
        let now = commits.now();
        if self.snapshot == Some(now) {
            return Ok(());
        }
        self.end_snapshot();
        // DEFERRED: the snapshot is taken by the first read, which comes after `now` was
        // loaded, so it includes every commit counted in `now`.
        rows::control(&self.conn, "BEGIN DEFERRED")?;
        self.snapshot = Some(now);
        Ok(())
    }
}

/// A fixed set of lazily opened read-only connections. A read takes the first slot it can lock
/// without waiting (`try_lock`), so two threads never block each other on the pool: a blocked
/// `Mutex` costs a futex wait and a context switch, more than the read itself (measured: GET
/// throughput stopped growing past 16 clients with a single locked `Vec`).
#[derive(Debug)]
pub(super) struct ReadPool {
    path: PathBuf,
    slots: Box<[Mutex<Option<Reader>>]>,
    next: AtomicUsize,
    closed: AtomicBool,
    commits: Commits,
    /// Another process may write: no snapshot is reused across reads.
    shared: AtomicBool,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf, commits: Commits) -> Self {
        let slots = (0..SLOTS).map(|_| Mutex::new(None)).collect();
        Self {
            path,
            slots,
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            commits,
            shared: AtomicBool::new(false),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        schema::configure_reader(&conn)?;
        Ok(conn)
    }

    /// Runs `read` on a pooled connection on the calling thread, or on a connection of its own
    /// when every pooled one is busy. For the blocking pool: opening a connection is file I/O.
    pub(super) fn with<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, RepositoryError> {
        match self.try_with(read) {
            Ok(done) => done,
            // Every slot is busy: more concurrent reads than slots. Serve this one on its own
            // connection rather than wait.
            Err(read) => {
                let db = |e| super::errors::classify(e, Some(&self.path));
                read(&self.open().map_err(db)?).map_err(db)
            }
        }
    }

    /// Runs `read` on a pooled connection on the calling thread, or gives it back when every
    /// pooled connection is busy. What a point read on a runtime worker uses: a read from the
    /// page cache takes microseconds, less than a hand-off to another thread costs, but opening
    /// a connection does not belong on a worker.
    pub(super) fn try_with<T, F>(&self, read: F) -> Result<Result<T, RepositoryError>, F>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T>,
    {
        let db = |e| super::errors::classify(e, Some(&self.path));
        if self.closed.load(Ordering::Acquire) {
            return Ok(Err(RepositoryError::Closed));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..SLOTS {
            if let Ok(mut slot) = self.slots[(start + i) % SLOTS].try_lock() {
                // Checked again under the slot lock: `close` sets the flag before emptying the
                // slots, so a read that raced it cannot reopen a connection after the close.
                if self.closed.load(Ordering::Acquire) {
                    return Ok(Err(RepositoryError::Closed));
                }
                let reader = match slot.as_mut() {
                    Some(reader) => reader,
                    None => match self.open() {
                        Ok(conn) => slot.insert(Reader { conn, snapshot: None }),
                        Err(e) => return Ok(Err(db(e))),
                    },
                };
                if let Err(e) = reader.fresh_snapshot(&self.commits) {
                    return Ok(Err(db(e)));
                }
                let result = read(&reader.conn);
                if result.is_err() || self.shared.load(Ordering::Acquire) {
                    reader.end_snapshot();
                }
                return Ok(result.map_err(db));
            }
        }
        Err(read)
    }

    /// See [`super::SqliteStore::other_process_writes`].
    pub(super) fn set_shared(&self, yes: bool) {
        self.shared.store(yes, Ordering::Release);
        self.release_all();
    }

    /// Ends every idle reader's snapshot.
    fn release_all(&self) {
        for slot in self.slots.iter() {
            if let Ok(mut slot) = slot.try_lock()
                && let Some(reader) = slot.as_mut()
            {
                reader.end_snapshot();
            }
        }
    }

    /// Ends the snapshots of readers that are idle and began before the latest commit, so none
    /// holds the WAL back. Never waits: a reader in use renews its snapshot on its next read.
    pub(super) fn release_stale(&self) {
        let now = self.commits.now();
        for slot in self.slots.iter() {
            if let Ok(mut slot) = slot.try_lock()
                && let Some(reader) = slot.as_mut()
                && reader.snapshot.is_some_and(|s| s != now)
            {
                reader.end_snapshot();
            }
        }
    }

    /// Refuses further reads and closes every connection, waiting for a read under way (they
    /// last microseconds to a millisecond) to finish with its connection first.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in self.slots.iter() {
            // A poisoned slot only means a read panicked; its connection is dropped all the same.
            let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slot.take();
        }
    }
}
