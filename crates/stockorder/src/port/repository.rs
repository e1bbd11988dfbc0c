//! The storage port. Implemented by the SQLite and PostgreSQL adapters; the service layer is
//! written against this trait only.

use std::future::Future;

use crate::domain::{OrderEvent, OrderId, StatusChange, StockOrder, Symbol};

use super::ListQuery;

/// The outcome of storing a new order.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// The order was stored (and is durable: the write committed before this was returned).
    Created(StockOrder),
    /// An order with the same `client_order_id` already exists; nothing was written. The
    /// service decides whether this is a replay or a conflict.
    Existing(StockOrder),
}

/// The outcome of a [`StatusChange`].
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Applied and durable; the order as it now is.
    Applied(StockOrder),
    /// No such order.
    NotFound,
    /// The order exists but was not in `from` (someone else won the race); as it now is.
    Refused(StockOrder),
}

/// A storage fault that can clear by itself: the disk fills up and is freed, another process
/// holds a lock and lets go, the database server restarts. Nothing was written; the same call may
/// succeed later, so the service stays up, answers 503 with `Retry-After`, and turns unready
/// until a write succeeds again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// No space left for the database (or its write-ahead log).
    Full,
    /// Another process (or a long transaction) holds the lock writes need.
    Locked,
    /// The database server cannot be reached, or is restarting.
    Unreachable,
    /// The database accepts reads only (a read-only mount, a standby server).
    ReadOnly,
    /// The database did not answer within the statement timeout.
    Timeout,
    /// The operating system reported an I/O error.
    Io,
}

impl Fault {
    /// A stable lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Full => "full",
            Fault::Locked => "locked",
            Fault::Unreachable => "unreachable",
            Fault::ReadOnly => "read_only",
            Fault::Timeout => "timeout",
            Fault::Io => "io_error",
        }
    }
}

impl std::fmt::Display for Fault {
    /// What a client is told: the cause in words, without paths or server names.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fault::Full => "storage is full",
            Fault::Locked => "the database is locked by another process",
            Fault::Unreachable => "the database is unreachable",
            Fault::ReadOnly => "the database is read-only",
            Fault::Timeout => "the database did not answer in time",
            Fault::Io => "the database had an I/O error",
        })
    }
}

/// Why storage could not answer. None of these is a client mistake.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The store was closed (the service is shutting down).
    #[error("the order store is closed")]
    Closed,
    /// A fault that can clear by itself; nothing was written.
    #[error("{fault}: {source}")]
    Unavailable {
        /// What kind of fault.
        fault: Fault,
        /// What the database said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The connection broke after a write was sent and before its commit was confirmed: it may
    /// or may not have been applied. A client retries with the same `client_order_id`.
    #[error("commit outcome unknown: {0}")]
    OutcomeUnknown(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database reported another error.
    /// (The driver error is shown in the message rather than chained as a source, because
    /// this error is logged on its own where it happens.)
    #[error("database error: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
    /// A stored row cannot be read back as an order (edited by hand, say). That request fails;
    /// the rest of the database serves on.
    #[error("stored order is unreadable: {0}")]
    Unreadable(String),
    /// The database itself is damaged (a malformed page, not a database file). This cannot
    /// clear by itself, so the service stops rather than serve from it.
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
}

impl RepositoryError {
    /// The transient fault behind this error, if it is one.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            RepositoryError::Unavailable { fault, .. } => Some(*fault),
            _ => None,
        }
    }
}

/// Where an order stands in the processor's queue: its number in commit order, then its id
/// (orders stored before the numbering existed all have number 0, and are ordered by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueuePosition {
    /// Commit order: assigned inside the transaction that stores the order.
    pub seq: i64,
    /// Breaks ties between orders with the same `seq`.
    pub id: OrderId,
}

impl QueuePosition {
    /// Before every order: asking from here offers every pending order.
    pub const START: QueuePosition = QueuePosition {
        seq: -1,
        id: OrderId::NIL,
    };
}

/// A pending order and where it stands in the processor's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// Where the next look at the queue continues from, once this order is taken.
    pub position: QueuePosition,
    /// The order.
    pub order: StockOrder,
}

/// How much of the event log a store keeps: events older than `max_age`, and all but the newest
/// `max_events`, are pruned. A client that was away longer resumes with a 410 / OUT_OF_RANGE and
/// reads the orders instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetention {
    /// Longest an event is kept.
    pub max_age: std::time::Duration,
    /// Most events kept.
    pub max_events: u64,
}

impl Default for EventRetention {
    /// A day, and a million events (a few hundred MB at most).
    fn default() -> Self {
        Self {
            max_age: std::time::Duration::from_secs(24 * 3600),
            max_events: 1_000_000,
        }
    }
}

/// Where the event log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBounds {
    /// The oldest sequence still held (older ones were pruned); the next to come when the log
    /// holds none. A client may resume after any sequence from `first - 1` on.
    pub first: u64,
    /// The newest sequence committed; 0 before the first event.
    pub last: u64,
}

impl EventBounds {
    /// Whether a client that has seen every event up to `after` can continue with no gap: the
    /// log still holds every event after it. `after = 0` asks for whatever is held.
    pub fn can_resume_after(&self, after: u64) -> bool {
        after == 0 || after.saturating_add(1) >= self.first
    }
}

/// Durable storage of orders.
///
/// Every write is committed before its future resolves: an `Ok` means the change survives a
/// crash. Status changes are conditional so concurrent writers have exactly one winner.
pub trait OrderRepository: Send + Sync + 'static {
    /// Stores a new order, unless one with the same `client_order_id` exists.
    fn insert(&self, order: StockOrder) -> impl Future<Output = Result<Inserted, RepositoryError>> + Send;

    /// Reads one order.
    fn get(&self, id: OrderId) -> impl Future<Output = Result<Option<StockOrder>, RepositoryError>> + Send;

    /// Reads up to `limit` matching orders, newest first, strictly older than the page token.
    /// The caller asks for one more than it serves to learn whether a next page exists.
    fn list(
        &self,
        query: ListQuery,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StockOrder>, RepositoryError>> + Send;

    /// Applies a conditional status change.
    fn change_status(&self, change: StatusChange) -> impl Future<Output = Result<Transition, RepositoryError>> + Send;

    /// Up to `limit` pending orders after `after` in the processor's queue, in queue order,
    /// each with its position. SQLite and the in-memory store number orders in commit order, so
    /// a caller that has read up to position P finds every order committed later after P, and
    /// walks the queue with a cursor; asking from [`QueuePosition::START`] offers every pending
    /// order again. A store shared by several processes (PostgreSQL) ignores `after`: it leases
    /// what it returns, so concurrent callers get disjoint batches, offers an order again only
    /// once the lease runs out unsettled, and leaves out the orders marked resting.
    fn unprocessed(
        &self,
        after: QueuePosition,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Queued>, RepositoryError>> + Send;

    /// Puts the orders decided resting back in the queue (prices moved, so a limit may be
    /// reached now). Only a store that records resting orders (PostgreSQL) has work to do; the
    /// others offer them again to a caller asking from [`QueuePosition::START`].
    fn reoffer_resting(&self) -> impl Future<Output = Result<(), RepositoryError>> + Send;

    /// Commits a small write that changes no order, to learn whether writes work again after a
    /// [`Fault`] (a read can succeed while the disk is still full). Called only while storage is
    /// failing.
    fn probe(&self) -> impl Future<Output = Result<(), RepositoryError>> + Send;

    /// Applies a processor batch in one transaction: each change conditionally. Returns, in the
    /// same order, whether each change was applied (false: the order was no longer pending, or
    /// is gone). Only that: the caller holds the orders it decided, and reading each changed
    /// row back cost the one writer of SQLite a third of a fill. `resting` are the orders decided to stay
    /// pending: PostgreSQL marks them out of its shared queue; SQLite and the in-memory store
    /// write nothing for them (the processor's cursor has passed them), so a resting order
    /// costs no write, and a batch with no change costs no transaction.
    fn settle(
        &self,
        changes: Vec<StatusChange>,
        resting: Vec<OrderId>,
    ) -> impl Future<Output = Result<Vec<bool>, RepositoryError>> + Send;

    /// Up to `limit` events after sequence `after`, in sequence order, only `symbol`'s when
    /// given. Every insert that creates an order and every applied change appends its event in
    /// the same transaction, so an acknowledged change always has one and no event describes a
    /// change that did not commit.
    fn events(
        &self,
        after: u64,
        symbol: Option<Symbol>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<OrderEvent>, RepositoryError>> + Send;

    /// The oldest event still held and the newest committed.
    fn event_bounds(&self) -> impl Future<Output = Result<EventBounds, RepositoryError>> + Send;

    /// Changes after each commit that may have appended events: what a follower of the log
    /// waits on before it reads again. The log is the truth; a wake-up only says "look".
    fn event_wakeups(&self) -> tokio::sync::watch::Receiver<u64>;
}
