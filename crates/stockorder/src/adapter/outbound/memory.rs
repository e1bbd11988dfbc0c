//! An order repository in memory: the test double the port promises. The service and the
//! processor are unit-tested against it, and the repository contract suite runs against it as
//! it runs against SQLite and PostgreSQL, so the double cannot drift from the real stores.
//! It can also be told to fail, to test how the core handles a storage fault.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::domain::{EventKind, OrderEvent, OrderId, OrderStatus, StatusChange, StockOrder, Symbol};
use crate::port::{
    EventBounds, Fault, Inserted, ListQuery, OrderRepository, QueuePosition, Queued, RepositoryError, Transition,
};

#[derive(Default)]
struct Orders {
    /// By id: ids are time-ordered, so this is creation order.
    by_id: BTreeMap<OrderId, StockOrder>,
    /// Each order's number in commit order, as SQLite gives it (see [`QueuePosition`]).
    seq: HashMap<OrderId, i64>,
    /// The last number given.
    last_seq: i64,
    /// While set, every call fails with this fault.
    failing: Option<Fault>,
    /// The event log, in sequence order; sequences start at 1.
    events: Vec<OrderEvent>,
}

/// Orders in a map behind a mutex. Cheap to clone; clones share the orders.
#[derive(Clone)]
pub struct MemoryRepository {
    orders: Arc<Mutex<Orders>>,
    /// Bumped after each change that appended events.
    wakeups: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for MemoryRepository {
    fn default() -> Self {
        Self {
            orders: Arc::default(),
            wakeups: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl MemoryRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on every call fails with `fault` (`None`: works again), as a full disk or a
    /// lost database would make it.
    pub fn fail_with(&self, fault: Option<Fault>) {
        self.lock().failing = fault;
    }

    fn lock(&self) -> MutexGuard<'_, Orders> {
        // A test that panicked while holding the lock has failed already; its data is still
        // what it was.
        self.orders.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The orders, or the fault it was told to fail with.
    fn orders(&self) -> Result<MutexGuard<'_, Orders>, RepositoryError> {
        let orders = self.lock();
        match orders.failing {
            Some(fault) => Err(RepositoryError::Unavailable {
                fault,
                source: format!("the in-memory repository was told to fail ({fault})").into(),
            }),
            None => Ok(orders),
        }
    }
}

impl Orders {
    /// Applies `change` as the domain says it does, if the order is still where the change
    /// starts: the conditional write the SQL stores do with `WHERE status = 'PENDING'`; with its
    /// event, as they append it in the same transaction.
    fn change(&mut self, change: &StatusChange) -> Transition {
        let Some(order) = self.by_id.get_mut(&change.id()) else {
            return Transition::NotFound;
        };
        match change.apply(order) {
            Ok(after) => {
                *order = after.clone();
                self.append(change.happened().into(), after.clone());
                Transition::Applied(after)
            }
            Err(_) => Transition::Refused(order.clone()),
        }
    }

    fn append(&mut self, kind: EventKind, order: StockOrder) {
        let sequence = self.events.last().map_or(1, |e| e.sequence + 1);
        self.events.push(OrderEvent { sequence, kind, order });
    }
}

impl OrderRepository for MemoryRepository {
    async fn insert(&self, order: StockOrder) -> Result<Inserted, RepositoryError> {
        let mut orders = self.orders()?;
        if let Some(key) = &order.client_order_id()
            && let Some(existing) = orders
                .by_id
                .values()
                .find(|o| o.client_order_id().as_ref() == Some(key))
        {
            return Ok(Inserted::Existing(existing.clone()));
        }
        orders.last_seq += 1;
        let seq = orders.last_seq;
        orders.seq.insert(order.id(), seq);
        orders.by_id.insert(order.id(), order.clone());
        orders.append(EventKind::Created, order.clone());
        drop(orders);
        self.wakeups.send_modify(|n| *n += 1);
        Ok(Inserted::Created(order))
    }

    async fn get(&self, id: OrderId) -> Result<Option<StockOrder>, RepositoryError> {
        Ok(self.orders()?.by_id.get(&id).cloned())
    }

    async fn list(&self, query: ListQuery, limit: u32) -> Result<Vec<StockOrder>, RepositoryError> {
        let orders = self.orders()?;
        let before = query.page_token.map(|t| t.last_id());
        Ok(orders
            .by_id
            .values()
            .rev()
            .filter(|o| before.is_none_or(|last| o.id() < last))
            .filter(|o| query.status.is_none_or(|s| o.status() == s))
            .filter(|o| query.symbol.as_ref().is_none_or(|s| o.symbol() == s))
            .filter(|o| query.side.is_none_or(|s| o.order_side() == s))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn change_status(&self, change: StatusChange) -> Result<Transition, RepositoryError> {
        let transition = self.orders()?.change(&change);
        self.wakeups.send_modify(|n| *n += 1);
        Ok(transition)
    }

    async fn unprocessed(&self, after: QueuePosition, limit: u32) -> Result<Vec<Queued>, RepositoryError> {
        let orders = self.orders()?;
        let mut queue: Vec<Queued> = orders
            .by_id
            .values()
            .filter(|o| o.status() == OrderStatus::Pending)
            .map(|o| Queued {
                position: QueuePosition {
                    seq: orders.seq.get(&o.id()).copied().unwrap_or_default(),
                    id: o.id(),
                },
                order: o.clone(),
            })
            .filter(|q| q.position > after)
            .collect();
        queue.sort_by_key(|q| q.position);
        queue.truncate(limit as usize);
        Ok(queue)
    }

    async fn reoffer_resting(&self) -> Result<(), RepositoryError> {
        self.orders().map(drop)
    }

    async fn probe(&self) -> Result<(), RepositoryError> {
        self.orders().map(drop)
    }

    async fn settle(&self, changes: Vec<StatusChange>, resting: Vec<OrderId>) -> Result<Vec<bool>, RepositoryError> {
        // Resting orders cost nothing here, as in SQLite: the caller's cursor has passed them.
        let _ = resting;
        let mut orders = self.orders()?;
        let applied = changes
            .iter()
            .map(|c| matches!(orders.change(c), Transition::Applied(_)))
            .collect();
        drop(orders);
        self.wakeups.send_modify(|n| *n += 1);
        Ok(applied)
    }

    async fn events(&self, after: u64, symbol: Option<Symbol>, limit: u32) -> Result<Vec<OrderEvent>, RepositoryError> {
        Ok(self
            .orders()?
            .events
            .iter()
            .filter(|e| e.sequence > after && symbol.as_ref().is_none_or(|s| e.order.symbol() == s))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn event_bounds(&self) -> Result<EventBounds, RepositoryError> {
        let orders = self.orders()?;
        let last = orders.events.last().map_or(0, |e| e.sequence);
        Ok(EventBounds {
            first: orders.events.first().map_or(last + 1, |e| e.sequence),
            last,
        })
    }

    fn event_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wakeups.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryRepository;
    use crate::adapter::outbound::repository_suite::repository_suite;

    async fn open() -> Option<((), MemoryRepository)> {
        Some(((), MemoryRepository::new()))
    }

    repository_suite!(open);
}
