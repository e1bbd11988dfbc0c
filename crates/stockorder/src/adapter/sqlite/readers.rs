//! Read connections. WAL mode lets any number of them read while the writer commits; each
//! reader sees the last committed state, so a read after an acknowledged write finds it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rusqlite::{Connection, OpenFlags};

use super::schema;
use crate::port::RepositoryError;

/// Connections kept open. Reads are short and run on the runtime's worker threads (one per
/// core) plus a few blocking threads for list pages, so a handful is enough.
const SLOTS: usize = 8;

/// A fixed set of lazily opened read-only connections. A read takes the first slot it can lock
/// without waiting (`try_lock`), so two threads never block each other on the pool: a blocked
/// `Mutex` costs a futex wait and a context switch, more than the read itself (measured: GET
/// throughput stopped growing past 16 clients with a single locked `Vec`).
#[derive(Debug)]
pub(super) struct ReadPool {
    path: PathBuf,
    slots: Box<[Mutex<Option<Connection>>]>,
    next: AtomicUsize,
    closed: AtomicBool,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf) -> Self {
        let slots = (0..SLOTS).map(|_| Mutex::new(None)).collect();
        Self {
            path,
            slots,
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        schema::configure_reader(&conn)?;
        Ok(conn)
    }

    /// Runs `read` on a pooled connection on the calling thread. Callers choose the thread:
    /// a point read from the page cache takes microseconds, less than a hand-off to another
    /// thread costs, while a page of up to 1000 rows belongs on the blocking pool.
    pub(super) fn with<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, RepositoryError> {
        let db = |e| RepositoryError::Database(Box::new(e));
        if self.closed.load(Ordering::Acquire) {
            return Err(RepositoryError::Closed);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..SLOTS {
            if let Ok(mut slot) = self.slots[(start + i) % SLOTS].try_lock() {
                // Checked again under the slot lock: `close` sets the flag before emptying the
                // slots, so a read that raced it cannot reopen a connection after the close.
                if self.closed.load(Ordering::Acquire) {
                    return Err(RepositoryError::Closed);
                }
                if slot.is_none() {
                    *slot = Some(self.open().map_err(db)?);
                }
                if let Some(conn) = slot.as_ref() {
                    return read(conn).map_err(db);
                }
            }
        }
        // Every slot is busy: more concurrent reads than slots. Serve this one on its own
        // connection rather than wait.
        read(&self.open().map_err(db)?).map_err(db)
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
