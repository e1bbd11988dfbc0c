//! Read connections. WAL mode lets any number of them read while the writer commits; each
//! reader sees the last committed state, so a read after an acknowledged write finds it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{Connection, OpenFlags};

use super::schema;
use crate::port::RepositoryError;

/// Connections kept open between reads. More would only hold memory: reads are short, and the
/// runtime has one worker thread per core.
const MAX_IDLE: usize = 4;

/// A small pool of read-only connections, opened on demand and kept for reuse.
#[derive(Debug)]
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
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
        if self.closed.load(Ordering::Acquire) {
            return Err(RepositoryError::Closed);
        }
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => self.open().map_err(|e| RepositoryError::Database(Box::new(e)))?,
        };
        let result = read(&conn).map_err(|e| RepositoryError::Database(Box::new(e)));
        if !self.closed.load(Ordering::Acquire)
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
        result
    }

    /// Refuses further reads and closes the idle connections; a read under way finishes and
    /// closes its connection itself.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}
