//! PostgreSQL's errors in the port's terms, with the server's own words (SQLSTATE and message)
//! kept for the log: tokio-postgres shows a server error as just "db error".

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::port::{Fault, RepositoryError};

/// Whether a write may have reached the server when its error came: then a lost connection
/// leaves the outcome unknown, where before it the write was simply not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Nothing was committed by this statement (a read, or a statement inside a transaction
    /// that is not yet committing).
    NotCommitting,
    /// The statement commits (an autocommit write, or COMMIT itself).
    Committing,
}

/// An error of the driver, described as the server said it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Described(String);

/// `e` as text an operator can act on: `SQLSTATE 57P01: terminating connection due to
/// administrator command`, or the driver's error with its causes.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("SQLSTATE {}: {}", db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The fault a SQLSTATE stands for, if it is one that clears by itself.
fn fault_of(code: &SqlState) -> Option<Fault> {
    let text = code.code();
    Some(match text {
        _ if text.starts_with("08") => Fault::Unreachable, // connection exception
        "57P01" | "57P02" | "57P03" | "53300" => Fault::Unreachable, // shutdown, starting, no slots
        "53100" => Fault::Full,
        _ if text.starts_with("53") => Fault::Full, // insufficient resources (memory, files)
        "25006" => Fault::ReadOnly,                 // a standby, or default_transaction_read_only
        "40001" | "40P01" | "55P03" => Fault::Locked,
        "57014" => Fault::Timeout, // statement_timeout
        _ => return None,
    })
}

/// `e` as the port's error.
pub(super) fn classify(e: tokio_postgres::Error, stage: Stage) -> RepositoryError {
    let text = describe(&e);
    if let Some(code) = e.code() {
        if matches!(code.code(), "XX001" | "XX002") {
            return RepositoryError::Corrupt(text);
        }
        return match fault_of(code) {
            Some(fault) => RepositoryError::Unavailable {
                fault,
                source: Box::new(Described(text)),
            },
            None => RepositoryError::Database(Box::new(Described(text))),
        };
    }
    // No answer from the server: the connection broke (or never worked).
    if stage == Stage::Committing {
        return RepositoryError::OutcomeUnknown(Box::new(Described(text)));
    }
    RepositoryError::Unavailable {
        fault: Fault::Unreachable,
        source: Box::new(Described(text)),
    }
}

/// A failure to get a pooled connection: nothing was sent.
pub(super) fn from_pool(e: PoolError) -> RepositoryError {
    match e {
        PoolError::Closed => RepositoryError::Closed,
        PoolError::Backend(e) => classify(e, Stage::NotCommitting),
        PoolError::Timeout(kind) => RepositoryError::Unavailable {
            fault: Fault::Unreachable,
            source: Box::new(Described(format!(
                "no database connection within the timeout ({kind:?})"
            ))),
        },
        other => RepositoryError::Database(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_have_their_faults() {
        let cases = [
            (SqlState::ADMIN_SHUTDOWN, Some(Fault::Unreachable)),
            (SqlState::CANNOT_CONNECT_NOW, Some(Fault::Unreachable)),
            (SqlState::CONNECTION_FAILURE, Some(Fault::Unreachable)),
            (SqlState::TOO_MANY_CONNECTIONS, Some(Fault::Unreachable)),
            (SqlState::DISK_FULL, Some(Fault::Full)),
            (SqlState::READ_ONLY_SQL_TRANSACTION, Some(Fault::ReadOnly)),
            (SqlState::T_R_SERIALIZATION_FAILURE, Some(Fault::Locked)),
            (SqlState::QUERY_CANCELED, Some(Fault::Timeout)),
            (SqlState::UNIQUE_VIOLATION, None),
            (SqlState::UNDEFINED_TABLE, None),
        ];
        for (code, fault) in cases {
            assert_eq!(fault_of(&code), fault, "{}", code.code());
        }
    }
}
