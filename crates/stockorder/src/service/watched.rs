//! The repository as the desk reaches it: every call passes through [`Watched`], which records
//! what the call saw in the [`StorageHealth`] that `/ready` and gRPC health read.
//!
//! Why a decorator and not a call in each desk method: the port's methods have no default
//! bodies, so a method added to [`OrderRepository`] does not compile until it is added here too,
//! with its kind (read or write) stated once. The desk cannot forget to report a call.

use std::future::Future;

use super::StorageHealth;
use crate::domain::{OrderEvent, OrderId, StatusChange, StockOrder, Symbol};
use crate::port::{
    EventBounds, Inserted, ListQuery, OrderRepository, QueuePosition, Queued, RepositoryError, Transition,
};

/// A repository whose every call reports to a [`StorageHealth`]: a write's success or fault, a
/// read's fault only (a read that works proves nothing about writes).
#[derive(Debug)]
pub struct Watched<R> {
    repository: R,
    health: StorageHealth,
}

impl<R: OrderRepository> Watched<R> {
    /// Watches `repository`, starting as writing.
    pub fn new(repository: R) -> Self {
        Self {
            repository,
            health: StorageHealth::default(),
        }
    }

    /// The repository itself, for what is not a call of the port (closing it at shutdown).
    pub fn inner(&self) -> &R {
        &self.repository
    }

    /// What the calls saw.
    pub fn health(&self) -> &StorageHealth {
        &self.health
    }

    async fn write<T>(&self, call: impl Future<Output = Result<T, RepositoryError>>) -> Result<T, RepositoryError> {
        let result = call.await;
        self.health.after_write(&result);
        result
    }

    async fn read<T>(&self, call: impl Future<Output = Result<T, RepositoryError>>) -> Result<T, RepositoryError> {
        let result = call.await;
        self.health.after_read(&result);
        result
    }
}

impl<R: OrderRepository> OrderRepository for Watched<R> {
    async fn insert(&self, order: StockOrder) -> Result<Inserted, RepositoryError> {
        self.write(self.repository.insert(order)).await
    }

    async fn get(&self, id: OrderId) -> Result<Option<StockOrder>, RepositoryError> {
        self.read(self.repository.get(id)).await
    }

    async fn list(&self, query: ListQuery, limit: u32) -> Result<Vec<StockOrder>, RepositoryError> {
        self.read(self.repository.list(query, limit)).await
    }

    async fn change_status(&self, change: StatusChange) -> Result<Transition, RepositoryError> {
        self.write(self.repository.change_status(change)).await
    }

    async fn unprocessed(&self, after: QueuePosition, limit: u32) -> Result<Vec<Queued>, RepositoryError> {
        self.read(self.repository.unprocessed(after, limit)).await
    }

    async fn reoffer_resting(&self) -> Result<(), RepositoryError> {
        self.write(self.repository.reoffer_resting()).await
    }

    async fn probe(&self) -> Result<(), RepositoryError> {
        self.write(self.repository.probe()).await
    }

    async fn settle(&self, changes: Vec<StatusChange>, resting: Vec<OrderId>) -> Result<Vec<bool>, RepositoryError> {
        self.write(self.repository.settle(changes, resting)).await
    }

    async fn events(&self, after: u64, symbol: Option<Symbol>, limit: u32) -> Result<Vec<OrderEvent>, RepositoryError> {
        self.read(self.repository.events(after, symbol, limit)).await
    }

    async fn event_bounds(&self) -> Result<EventBounds, RepositoryError> {
        self.read(self.repository.event_bounds()).await
    }

    fn event_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.repository.event_wakeups()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::outbound::memory::MemoryRepository;
    use crate::adapter::outbound::repository_suite::{cancel, order};
    use crate::domain::OrderSide;
    use crate::port::Fault;
    use crate::service::StorageState;

    /// One call of the port by name; whether it failed.
    async fn call(watched: &Watched<MemoryRepository>, name: &str, o: &StockOrder) -> bool {
        match name {
            "insert" => watched.insert(o.clone()).await.is_err(),
            "get" => watched.get(o.id()).await.is_err(),
            "list" => watched.list(ListQuery::default(), 10).await.is_err(),
            "change_status" => watched.change_status(cancel(o.id())).await.is_err(),
            "unprocessed" => watched.unprocessed(QueuePosition::START, 10).await.is_err(),
            "reoffer_resting" => watched.reoffer_resting().await.is_err(),
            "probe" => watched.probe().await.is_err(),
            "settle" => watched.settle(vec![cancel(o.id())], Vec::new()).await.is_err(),
            "events" => watched.events(0, None, 10).await.is_err(),
            "event_bounds" => watched.event_bounds().await.is_err(),
            other => unreachable!("{other}"),
        }
    }

    /// Every call of the port, through the decorator: a fault on any of them turns storage
    /// failing; once the store works, the same call restores it if it writes and leaves it
    /// failing if it only reads. A method added to the port must be added to `Watched` to
    /// compile, and then to this list.
    #[tokio::test]
    async fn every_call_of_the_port_is_counted() {
        let calls = [
            ("insert", true),
            ("get", false),
            ("list", false),
            ("change_status", true),
            ("unprocessed", false),
            ("reoffer_resting", true),
            ("probe", true),
            ("settle", true),
            ("events", false),
            ("event_bounds", false),
        ];
        for (name, writes) in calls {
            let memory = MemoryRepository::new();
            let watched = Watched::new(memory.clone());
            let o = order("AAPL", OrderSide::Buy, None);
            memory.fail_with(Some(Fault::Full));
            assert!(call(&watched, name, &o).await, "{name} fails while the store fails");
            assert!(
                matches!(
                    watched.health().state(),
                    StorageState::Failing { fault: Fault::Full, .. }
                ),
                "{name}'s fault turned storage failing"
            );
            memory.fail_with(None);
            assert!(!call(&watched, name, &o).await, "{name} works again");
            assert_eq!(watched.health().is_writing(), writes, "{name} that works again");
        }
    }

    #[tokio::test]
    async fn a_read_that_works_proves_nothing_and_a_write_that_works_restores() {
        let memory = MemoryRepository::new();
        let watched = Watched::new(memory.clone());
        memory.fail_with(Some(Fault::Full));
        assert!(watched.insert(order("AAPL", OrderSide::Buy, None)).await.is_err());
        memory.fail_with(None);
        watched.get(OrderId::generate()).await.unwrap();
        watched.list(ListQuery::default(), 10).await.unwrap();
        assert!(!watched.health().is_writing(), "reads that work leave it failing");
        watched.insert(order("AAPL", OrderSide::Buy, None)).await.unwrap();
        assert!(watched.health().is_writing());
    }
}
