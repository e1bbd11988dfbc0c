//! Business rules over the ports: identity and timestamps of new orders, idempotent creates,
//! paging, and cancellation as a conditional transition. Depends on `domain` and `port` only.

use crate::domain::{NewOrder, OrderId, OrderStatus, StockOrder, Timestamp};
use crate::port::{
    Created, Inserted, ListQuery, OrderError, OrderRepository, OrderService, Page, PageToken, StatusChange, Transition,
};

/// The order desk: takes orders, answers for them, cancels them. Generic over the repository so
/// the same rules run on SQLite, PostgreSQL or a test double.
#[derive(Debug)]
pub struct OrderDesk<R> {
    repository: R,
}

impl<R: OrderRepository> OrderDesk<R> {
    /// A desk storing orders in `repository`.
    pub fn new(repository: R) -> Self {
        Self { repository }
    }

    /// The repository, for wiring code that needs to close it at shutdown.
    pub fn repository(&self) -> &R {
        &self.repository
    }
}

impl<R: OrderRepository> OrderService for OrderDesk<R> {
    async fn create(&self, new: NewOrder) -> Result<Created, OrderError> {
        let order = StockOrder::pending(new.clone(), OrderId::generate(), Timestamp::now());
        match self.repository.insert(order).await? {
            Inserted::Created(order) => Ok(Created { order, replayed: false }),
            Inserted::Existing(existing) if new.matches(&existing) => Ok(Created {
                order: existing,
                replayed: true,
            }),
            Inserted::Existing(existing) => Err(OrderError::ClientOrderIdReused(
                existing
                    .client_order_id
                    .map(|k| k.as_str().to_owned())
                    .unwrap_or_default(),
            )),
        }
    }

    async fn get(&self, id: OrderId) -> Result<StockOrder, OrderError> {
        self.repository.get(id).await?.ok_or(OrderError::NotFound(id))
    }

    async fn list(&self, query: ListQuery) -> Result<Page, OrderError> {
        let limit = query.limit.get();
        // One row more than the page tells whether a next page exists without a COUNT.
        let mut orders = self.repository.list(query, limit + 1).await?;
        let next = if orders.len() > limit as usize {
            orders.truncate(limit as usize);
            orders.last().map(|o| PageToken::after(o.id))
        } else {
            None
        };
        Ok(Page { orders, next })
    }

    async fn cancel(&self, id: OrderId) -> Result<StockOrder, OrderError> {
        let change = StatusChange {
            id,
            from: OrderStatus::Pending,
            to: OrderStatus::Cancelled,
            description: None,
            at: Timestamp::now(),
        };
        match self.repository.change_status(change).await? {
            Transition::Applied(order) => Ok(order),
            Transition::NotFound => Err(OrderError::NotFound(id)),
            Transition::Refused(order) => Err(OrderError::NotCancellable {
                id,
                status: order.status,
            }),
        }
    }
}
