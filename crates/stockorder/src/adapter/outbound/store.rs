//! The store `DATABASE_URL` names: SQLite or PostgreSQL, chosen at start-up.
//!
//! An enum rather than a trait object: the port's methods are `async fn`s (not object safe),
//! and two variants dispatched by a `match` cost nothing measurable next to a database call.

use std::sync::Arc;

use super::postgres::{self, PostgresStore};
use super::sqlite::{self, SqliteStore};
use crate::config::DatabaseUrl;
use crate::domain::{OrderEvent, OrderId, StatusChange, StockOrder, Symbol};
use crate::port::{
    EventBounds, EventRetention, Inserted, ListQuery, OrderRepository, QueuePosition, Queued, RepositoryError,
    StoreMetrics, Transition,
};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The SQLite file could not be opened or migrated.
    #[error(transparent)]
    Sqlite(#[from] sqlite::OpenError),
    /// PostgreSQL could not be reached or migrated.
    #[error(transparent)]
    Postgres(#[from] postgres::OpenError),
}

/// Orders in SQLite (one process) or PostgreSQL (replicas sharing one database).
#[derive(Debug, Clone)]
pub enum Store {
    /// A SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PostgresStore),
}

impl Store {
    /// Opens (creating and migrating as needed) the store `url` names; `pool_size` is the
    /// number of PostgreSQL connections (SQLite has its own fixed pool), `timeouts` bound how
    /// long PostgreSQL may take. A SQLite file belongs to one process; `handed_lock` is its
    /// lock as the process this one replaces in an in-place upgrade passed it on. `retention`
    /// bounds the event log; each commit is reported to `metrics`.
    pub async fn open(
        url: &DatabaseUrl,
        pool_size: usize,
        timeouts: postgres::Timeouts,
        retention: EventRetention,
        handed_lock: Option<std::os::fd::OwnedFd>,
        metrics: Arc<dyn StoreMetrics>,
    ) -> Result<Self, OpenError> {
        Ok(match url {
            // Opening may wait on another process's lock (busy timeout): off the runtime's
            // threads, so a signal during start-up is still handled at once.
            DatabaseUrl::Sqlite(path) => {
                let path = path.clone();
                let opened = tokio::task::spawn_blocking(move || {
                    SqliteStore::open_taking_over(path, handed_lock, retention, metrics)
                })
                .await
                .map_err(|e| sqlite::OpenError::Thread(std::io::Error::other(e)))?;
                Store::Sqlite(opened?)
            }
            DatabaseUrl::Postgres(url) => {
                Store::Postgres(PostgresStore::open(url, pool_size, timeouts, retention, metrics).await?)
            }
        })
    }

    /// Where the orders are, for logs: the file, or `host:port/dbname` without credentials.
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(s) => s.path().display().to_string(),
            Store::Postgres(p) => format!("postgres://{}", p.target()),
        }
    }

    /// Says whether another process may be writing to the same database right now (the
    /// overlap of an in-place upgrade). SQLite readers then take a fresh snapshot for every
    /// read instead of reusing one across reads; PostgreSQL needs nothing.
    pub fn other_process_writes(&self, yes: bool) {
        if let Store::Sqlite(s) = self {
            s.other_process_writes(yes);
        }
    }

    /// The lock that makes this process a SQLite file's one server, to pass on in an in-place
    /// upgrade; `None` for PostgreSQL, which replicas share.
    pub fn database_lock_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Store::Sqlite(s) => s.lock_fd(),
            Store::Postgres(_) => None,
        }
    }

    /// Closes the store after the servers have stopped; see each adapter's `close`.
    pub async fn close(&self) -> Result<(), RepositoryError> {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(p) => p.close().await,
        }
    }
}

impl OrderRepository for Store {
    async fn insert(&self, order: StockOrder) -> Result<Inserted, RepositoryError> {
        match self {
            Store::Sqlite(s) => s.insert(order).await,
            Store::Postgres(p) => p.insert(order).await,
        }
    }

    async fn get(&self, id: OrderId) -> Result<Option<StockOrder>, RepositoryError> {
        match self {
            Store::Sqlite(s) => s.get(id).await,
            Store::Postgres(p) => p.get(id).await,
        }
    }

    async fn list(&self, query: ListQuery, limit: u32) -> Result<Vec<StockOrder>, RepositoryError> {
        match self {
            Store::Sqlite(s) => s.list(query, limit).await,
            Store::Postgres(p) => p.list(query, limit).await,
        }
    }

    async fn change_status(&self, change: StatusChange) -> Result<Transition, RepositoryError> {
        match self {
            Store::Sqlite(s) => s.change_status(change).await,
            Store::Postgres(p) => p.change_status(change).await,
        }
    }

    async fn unprocessed(&self, after: QueuePosition, limit: u32) -> Result<Vec<Queued>, RepositoryError> {
        match self {
            Store::Sqlite(s) => s.unprocessed(after, limit).await,
            Store::Postgres(p) => p.unprocessed(after, limit).await,
        }
    }

    async fn reoffer_resting(&self) -> Result<(), RepositoryError> {
        match self {
            Store::Sqlite(s) => s.reoffer_resting().await,
            Store::Postgres(p) => p.reoffer_resting().await,
        }
    }

    async fn probe(&self) -> Result<(), RepositoryError> {
        match self {
            Store::Sqlite(s) => s.probe().await,
            Store::Postgres(p) => p.probe().await,
        }
    }

    async fn settle(&self, changes: Vec<StatusChange>, resting: Vec<OrderId>) -> Result<Vec<bool>, RepositoryError> {
        match self {
            Store::Sqlite(s) => s.settle(changes, resting).await,
            Store::Postgres(p) => p.settle(changes, resting).await,
        }
    }

    async fn events(&self, after: u64, symbol: Option<Symbol>, limit: u32) -> Result<Vec<OrderEvent>, RepositoryError> {
        match self {
            Store::Sqlite(s) => s.events(after, symbol, limit).await,
            Store::Postgres(p) => p.events(after, symbol, limit).await,
        }
    }

    async fn event_bounds(&self) -> Result<EventBounds, RepositoryError> {
        match self {
            Store::Sqlite(s) => s.event_bounds().await,
            Store::Postgres(p) => p.event_bounds().await,
        }
    }

    fn event_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        match self {
            Store::Sqlite(s) => s.event_wakeups(),
            Store::Postgres(p) => p.event_wakeups(),
        }
    }
}
