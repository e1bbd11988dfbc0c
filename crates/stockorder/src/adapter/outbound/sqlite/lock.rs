//! One server per SQLite file: an exclusive `flock` on `<database>.lock`, which holds the
//! owner's PID so that a second server can say who has the file.
//!
//! Why: the writer keeps a cache of recent orders and its readers reuse snapshots, both kept
//! current by the one writer of this process. A second process writing the same file changes
//! orders behind them, and the first then answers `GET`s with orders older than the file.
//! SQLite itself allows that overlap, so the service refuses it at start.
//!
//! The in-place upgrade is the one overlap allowed, and it is explicit: the old process hands
//! the lock itself to the new one (the locked file, inherited across `exec`; see
//! `lifecycle::upgrade`). A `flock` belongs to the open file, not to a process, so the file is
//! never unlocked on the way: not while both run, not when the old one exits. During that
//! overlap both read fresh snapshots and cache nothing (`SqliteStore::other_process_writes`).
//!
//! The lock file stays on disk when the server stops (a stale one is harmless: it is the lock,
//! not the file's existence, that counts).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The lock, held until dropped (by this process: a successor it was handed to keeps it).
#[derive(Debug)]
pub(super) struct FileLock {
    file: File,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub(super) enum LockError {
    /// Another process holds it; its PID, when the file names one.
    InUse(Option<u32>),
    /// The lock file could not be opened or written.
    Io(std::io::Error),
}

/// The lock file of `database`: `orders.db` → `orders.db.lock`.
pub(super) fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file holds it.
fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: `file` is an open file for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        e => Err(e),
    }
}

impl FileLock {
    /// Takes the lock of `database`, or says who has it.
    pub(super) fn take(database: &Path) -> Result<Self, LockError> {
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_path(database))
            .map_err(LockError::Io)?;
        if try_flock(&file).map_err(LockError::Io)? {
            let mut lock = Self { file };
            lock.name_this_process().map_err(LockError::Io)?;
            return Ok(lock);
        }
        let mut text = String::new();
        let holder = file
            .read_to_string(&mut text)
            .ok()
            .and_then(|_| text.trim().parse::<u32>().ok());
        Err(LockError::InUse(holder))
    }

    /// Adopts the lock of `database` handed over by the process this one replaces (`handed`,
    /// its locked file). `None` if `handed` is not that file's lock (a `DATABASE_URL` that
    /// changed with the upgrade): take the lock the ordinary way then.
    pub(super) fn adopt(database: &Path, handed: OwnedFd) -> Option<Self> {
        let file = File::from(handed);
        let ours = std::fs::metadata(lock_path(database)).ok()?;
        let handed = file.metadata().ok()?;
        if (ours.dev(), ours.ino()) != (handed.dev(), handed.ino()) {
            return None;
        }
        // The same open file that holds the lock: asking again succeeds at once.
        if !try_flock(&file).ok()? {
            return None;
        }
        let mut lock = Self { file };
        let _ = lock.name_this_process();
        Some(lock)
    }

    fn name_this_process(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        write!(self.file, "{}", std::process::id())
    }

    /// The locked file, to hand to the process that replaces this one.
    pub(super) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_told_the_holders_pid_and_a_handed_lock_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("orders.db");
        let lock = FileLock::take(&db).expect("the first takes it");
        let me = std::process::id();
        assert_eq!(std::fs::read_to_string(lock_path(&db)).unwrap(), me.to_string());
        // Another open file, as another process would have.
        assert!(matches!(FileLock::take(&db), Err(LockError::InUse(Some(pid))) if pid == me));
        // Handed over (another descriptor of the same open file), the lock is kept when the
        // first holder closes its own.
        let handed = lock.file.try_clone().unwrap();
        let adopted = FileLock::adopt(&db, OwnedFd::from(handed)).expect("adopted");
        drop(lock);
        assert!(matches!(FileLock::take(&db), Err(LockError::InUse(_))), "still held");
        // A lock of another database is not adopted.
        let other = dir.path().join("other.db");
        let elsewhere = FileLock::take(&other).unwrap();
        assert!(FileLock::adopt(&db, OwnedFd::from(elsewhere.file.try_clone().unwrap())).is_none());
        drop(adopted);
        assert!(FileLock::take(&db).is_ok(), "free once every holder is gone");
    }
}
