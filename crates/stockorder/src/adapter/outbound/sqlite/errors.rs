//! SQLite's errors in the port's terms: which are faults that clear by themselves (a full disk,
//! another process's lock, a read-only remount), which mean the file is damaged, and which are
//! neither.

use std::path::Path;

use rusqlite::ErrorCode;

use crate::port::{Fault, RepositoryError};

/// Below this much free space, an I/O error on the database's file system is taken for a full
/// disk: SQLite reports ENOSPC while growing its shared-memory index as `SQLITE_IOERR_SHMSIZE`,
/// not `SQLITE_FULL`.
const NEARLY_FULL_BYTES: u64 = 1 << 20;

/// `e` as the port's error. `db` is the database file (for a look at its file system's free
/// space on an I/O error).
pub(super) fn classify(e: rusqlite::Error, db: Option<&Path>) -> RepositoryError {
    let full = db.is_some_and(|db| full_disk(&e, db).is_some());
    let fault = match e.sqlite_error_code() {
        _ if full => Some(Fault::Full),
        Some(ErrorCode::DiskFull) => Some(Fault::Full),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Some(Fault::Locked),
        Some(ErrorCode::ReadOnly) => Some(Fault::ReadOnly),
        Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => Some(Fault::Io),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            return RepositoryError::Corrupt(e.to_string());
        }
        _ => None,
    };
    match fault {
        Some(fault) => RepositoryError::Unavailable {
            fault,
            source: Box::new(e),
        },
        None => RepositoryError::Database(Box::new(e)),
    }
}

/// [`classify`] for an error on `conn`, whose file it names.
pub(super) fn on(conn: &rusqlite::Connection) -> impl Fn(rusqlite::Error) -> RepositoryError + '_ {
    move |e| classify(e, conn.path().map(Path::new))
}

/// Free bytes for an unprivileged writer on the file system holding `db`, when it can be told.
pub(super) fn free_bytes(db: &Path) -> Option<u64> {
    let dir = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// The bytes left, when `e` comes from a full disk under `db`: `SQLITE_FULL`, or an I/O error
/// while the file system is (nearly) out of space.
pub(super) fn full_disk(e: &rusqlite::Error, db: &Path) -> Option<u64> {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Some(free_bytes(db).unwrap_or(0)),
        Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => {
            free_bytes(db).filter(|&free| free < NEARLY_FULL_BYTES)
        }
        _ => None,
    }
}

/// The same error again, for each caller of a batch that failed as a whole (the driver error is
/// not `Clone`; its fault and message are what the callers need).
pub(super) fn again(e: &RepositoryError) -> RepositoryError {
    let message = e.to_string();
    match e {
        RepositoryError::Unavailable { fault, source } => RepositoryError::Unavailable {
            fault: *fault,
            source: source.to_string().into(),
        },
        RepositoryError::Closed => RepositoryError::Closed,
        RepositoryError::Corrupt(why) => RepositoryError::Corrupt(why.clone()),
        _ => RepositoryError::Database(message.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn each_code_has_its_fault() {
        use rusqlite::ffi;
        let cases = [
            (ffi::SQLITE_FULL, Some(Fault::Full)),
            (ffi::SQLITE_BUSY, Some(Fault::Locked)),
            (ffi::SQLITE_LOCKED, Some(Fault::Locked)),
            (ffi::SQLITE_READONLY, Some(Fault::ReadOnly)),
            (ffi::SQLITE_IOERR, Some(Fault::Io)),
            (ffi::SQLITE_CONSTRAINT, None),
        ];
        for (code, fault) in cases {
            assert_eq!(classify(failure(code), None).fault(), fault, "code {code}");
        }
        assert!(matches!(
            classify(failure(ffi::SQLITE_CORRUPT), None),
            RepositoryError::Corrupt(_)
        ));
        assert!(matches!(
            classify(failure(ffi::SQLITE_NOTADB), None),
            RepositoryError::Corrupt(_)
        ));
    }
}
