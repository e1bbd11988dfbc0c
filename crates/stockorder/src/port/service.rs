//! The driving port: what the REST and gRPC adapters call. Errors are per cause so each adapter
//! can map them to its own status codes without inspecting messages.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;

use crate::domain::{NewOrder, OrderEvent, OrderId, OrderStatus, StockOrder, Symbol};

use super::{Fault, ListQuery, Page, RepositoryError};

/// The events a follower of the log is sent, in sequence order, until it stops reading or the
/// server ends the stream (at shutdown, through the serve adapter). An error ends it; the
/// follower resumes after the last event it received.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<OrderEvent, OrderError>> + Send>>;

/// Where a follower of the event log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStart {
    /// With the events committed from now on.
    Live,
    /// With every event after this sequence (0: the whole history the log holds), then live.
    After(u64),
}

/// The confirmation both APIs send for a successful cancel: the original service's wording, which
/// its clients print.
pub const CANCELLED_MESSAGE: &str = "order cancelled successfully";

/// A successful create.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The stored order.
    pub order: StockOrder,
    /// True when this was a retry of an earlier create with the same `client_order_id` and
    /// parameters: nothing new was placed (REST answers 200 instead of 201).
    pub replayed: bool,
}

/// Why an order operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// No order has this id.
    #[error("order {0} not found")]
    NotFound(OrderId),
    /// Only pending orders can be cancelled.
    #[error("order {id} is {status} and can no longer be cancelled")]
    NotCancellable {
        /// The order.
        id: OrderId,
        /// Its (final) status.
        status: OrderStatus,
    },
    /// The `client_order_id` belongs to an order with different parameters.
    #[error("client_order_id {0:?} was already used for an order with different parameters")]
    ClientOrderIdReused(String),
    /// The service is shutting down and takes no new work.
    #[error("the service is shutting down; retry on another instance")]
    Unavailable,
    /// Storage cannot write (or read) right now, for a reason that can clear by itself; nothing
    /// was changed. The client retries later, or on another instance.
    #[error("{0}: nothing was changed; retry shortly")]
    StorageUnavailable(Fault),
    /// A write was sent but its commit was never confirmed: it may have been applied. Retrying a
    /// create with the same `client_order_id` is safe and tells which.
    #[error(
        "the database connection was lost during the commit: the outcome is unknown; retry with the same client_order_id"
    )]
    OutcomeUnknown,
    /// A follower asked to resume after an event the log no longer holds: what came between is
    /// gone from the log (the orders themselves are not).
    #[error(
        "events after {after} are no longer held: the log starts at sequence {first}; read the orders (GET /api/orders) and follow from there"
    )]
    EventsPruned {
        /// The sequence asked for.
        after: u64,
        /// The oldest sequence held.
        first: u64,
    },
    /// Storage failed; the client did nothing wrong.
    #[error("internal error")]
    Internal(#[source] RepositoryError),
}

impl From<RepositoryError> for OrderError {
    fn from(e: RepositoryError) -> Self {
        match e {
            RepositoryError::Closed => OrderError::Unavailable,
            RepositoryError::Unavailable { fault, .. } => OrderError::StorageUnavailable(fault),
            RepositoryError::OutcomeUnknown(_) => OrderError::OutcomeUnknown,
            other => OrderError::Internal(other),
        }
    }
}

/// The order operations of the service, shared by every API.
pub trait OrderService: Send + Sync + 'static {
    /// Places an order, or replays an earlier create with the same `client_order_id`.
    fn create(&self, order: NewOrder) -> impl Future<Output = Result<Created, OrderError>> + Send;

    /// Reads one order.
    fn get(&self, id: OrderId) -> impl Future<Output = Result<StockOrder, OrderError>> + Send;

    /// Lists orders newest first, one page at a time.
    fn list(&self, query: ListQuery) -> impl Future<Output = Result<Page, OrderError>> + Send;

    /// Cancels a pending order.
    fn cancel(&self, id: OrderId) -> impl Future<Output = Result<StockOrder, OrderError>> + Send;

    /// The order event log from `start` (only `symbol`'s events when given): the history first,
    /// then each event as it is committed. Fails at once, with [`OrderError::EventsPruned`],
    /// when `start` is older than the log holds.
    fn follow(
        self: Arc<Self>,
        start: EventStart,
        symbol: Option<Symbol>,
    ) -> impl Future<Output = Result<EventStream, OrderError>> + Send;

    /// False while storage cannot commit writes for a reason that can clear by itself (a full
    /// disk, a database that is down): readiness probes then answer "not ready", so a load
    /// balancer sends new traffic to another instance until writes work again.
    fn can_write(&self) -> bool {
        true
    }
}
