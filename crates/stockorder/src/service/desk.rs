//! The order desk: identity and timestamps of new orders, risk rules at placement, idempotent
//! creates, paging, cancellation as a conditional transition, and the execution of pending
//! orders. Depends on `domain` and `port` only: counts the state changes it makes through the
//! [`OrderMetrics`] port (it is the one place that knows every transition), and reaches storage
//! through [`Watched`], so what every call saw reaches its [`StorageHealth`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{StorageHealth, Watched};
use crate::domain::{
    Decision, Happened, NewOrder, OrderId, OrderStatus, OrderType, RiskRules, StatusChange, StockOrder, Symbol,
    Timestamp, decide,
};
use crate::port::{
    Created, EventStart, EventStream, Inserted, ListQuery, NoMetrics, OrderError, OrderMetrics, OrderRepository,
    OrderService, Page, PageToken, PriceSource, QueuePosition, Queued, Transition,
};

/// The order desk: takes orders, answers for them, cancels them, and executes them. Generic over
/// the repository so the same rules run on SQLite, PostgreSQL or a test double.
pub struct OrderDesk<R> {
    repository: Watched<R>,
    rules: RiskRules,
    prices: Arc<dyn PriceSource>,
    metrics: Arc<dyn OrderMetrics>,
    new_orders: Notify,
    /// The newest events, shared by this desk's followers while any follows (`tail`).
    pub(super) tail: std::sync::Mutex<std::sync::Weak<super::tail::Tail>>,
}

impl<R> std::fmt::Debug for OrderDesk<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderDesk")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// What one execution batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Executed {
    /// Orders looked at.
    pub decided: usize,
    /// Filled.
    pub filled: usize,
    /// Rejected by a risk rule.
    pub rejected: usize,
    /// Limit orders left resting.
    pub resting: usize,
    /// Orders that stopped being pending before their execution was written (a cancel won the
    /// race): nothing was done to them.
    pub lost_race: usize,
}

impl<R: OrderRepository> OrderDesk<R> {
    /// A desk storing orders in `repository`, executing at `prices` under `rules`.
    pub fn new(repository: R, prices: Arc<dyn PriceSource>, rules: RiskRules) -> Self {
        Self {
            repository: Watched::new(repository),
            rules,
            prices,
            metrics: Arc::new(NoMetrics),
            new_orders: Notify::new(),
            tail: std::sync::Mutex::default(),
        }
    }

    /// The same desk, counting its state changes in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn OrderMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The repository, for wiring code that needs to close it at shutdown.
    pub fn repository(&self) -> &R {
        self.repository.inner()
    }

    /// The repository as this desk reaches it (every call reported to its health): for the
    /// event log's followers.
    pub(super) fn log(&self) -> &Watched<R> {
        &self.repository
    }

    /// Whether storage can write right now, as this desk's calls last saw it.
    pub fn storage(&self) -> &StorageHealth {
        self.repository.health()
    }

    /// Probes storage while it fails, until `stop`; see [`StorageHealth::watch`].
    pub async fn watch_storage(&self, stop: impl std::future::Future<Output = ()>) -> Result<(), super::StorageBroken> {
        self.storage().watch(self.repository.inner(), stop).await
    }

    /// Notified after every new pending order is stored, so the processor runs at once instead
    /// of at its next poll. (A `Notify` keeps one permit: a wake-up sent while no worker waits is
    /// not lost.)
    pub fn new_orders(&self) -> &Notify {
        &self.new_orders
    }

    /// Up to `limit` orders from the processor's queue after `after`, in queue order.
    pub async fn pending_batch(&self, after: QueuePosition, limit: u32) -> Result<Vec<Queued>, OrderError> {
        Ok(self.repository.unprocessed(after, limit).await?)
    }

    /// A number that changes whenever prices may have moved (see [`PriceSource::version`]).
    pub fn prices_version(&self) -> u64 {
        self.prices.version()
    }

    /// Puts the resting orders back in the queue, for a store that takes them out of it.
    pub async fn reoffer_resting(&self) -> Result<(), OrderError> {
        Ok(self.repository.reoffer_resting().await?)
    }

    /// Decides each order at the current price under the rules, and writes every decision in
    /// one transaction. Each write is conditional on the order still being pending, so a cancel
    /// that got there first wins and the fill is simply not applied.
    pub async fn execute(&self, orders: Vec<StockOrder>) -> Result<Executed, OrderError> {
        let now = Timestamp::now();
        let mut changes = Vec::with_capacity(orders.len());
        let mut resting = Vec::new();
        // For each change: whether it fills, and how long its order waited (for the metric
        // once the decision is written).
        let mut decided = Vec::with_capacity(orders.len());
        let mut done = Executed {
            decided: orders.len(),
            ..Executed::default()
        };
        for order in &orders {
            let market = self.prices.price(order.symbol());
            let decision = decide(
                order.order_type(),
                order.order_side(),
                order.symbol(),
                order.quantity(),
                order.price(),
                market,
                &self.rules,
            );
            let change = match decision {
                Decision::Fill(price) => order.fill(price, now),
                Decision::Reject(reason) => order.reject(reason.0, now),
                Decision::Rest => {
                    resting.push(order.id());
                    continue;
                }
            };
            // The batch holds what the store returned as pending; one that is not any more
            // is a cancel that won, like a refused conditional write.
            let Ok(change) = change else {
                done.lost_race += 1;
                continue;
            };
            let waited = now.unix_micros().saturating_sub(order.created_at().unix_micros());
            decided.push((change.happened() == Happened::Filled, waited));
            changes.push(change);
        }
        done.resting = resting.len();
        let settled = self.repository.settle(changes, resting).await?;
        for (applied, (filled, waited)) in settled.into_iter().zip(decided) {
            if !applied {
                done.lost_race += 1;
                continue;
            }
            if filled {
                done.filled += 1;
            } else {
                done.rejected += 1;
            }
            self.metrics
                .processor_lag(Duration::from_micros(waited.max(0).unsigned_abs()));
        }
        self.metrics
            .transitions(Some(OrderStatus::Pending), OrderStatus::Filled, done.filled as u64);
        self.metrics
            .transitions(Some(OrderStatus::Pending), OrderStatus::Rejected, done.rejected as u64);
        Ok(done)
    }
}

impl<R: OrderRepository> OrderService for OrderDesk<R> {
    fn can_write(&self) -> bool {
        self.storage().is_writing()
    }

    async fn create(&self, new: NewOrder) -> Result<Created, OrderError> {
        let (id, now) = (OrderId::generate(), Timestamp::now());
        // The rules that can be checked now are: a market order at today's price, a limit order
        // at its limit. Breaking one is not a client mistake but a business refusal, so the
        // order is stored REJECTED with the reason.
        let price = match new.order_type {
            OrderType::Market => Some(self.prices.price(&new.symbol).get()),
            OrderType::Limit => new.price.map(|p| p.get()),
        };
        let order = match self.rules.check(&new.symbol, new.quantity, price) {
            Ok(()) => StockOrder::pending(new.clone(), id, now),
            Err(reason) => StockOrder::rejected(new.clone(), id, now, reason.0),
        };
        match self.repository.insert(order).await? {
            Inserted::Created(order) => {
                self.metrics.transitions(None, order.status(), 1);
                if order.status() == OrderStatus::Pending {
                    self.new_orders.notify_one();
                }
                Ok(Created { order, replayed: false })
            }
            Inserted::Existing(existing) if new.matches(&existing) => Ok(Created {
                order: existing,
                replayed: true,
            }),
            Inserted::Existing(existing) => Err(OrderError::ClientOrderIdReused(
                existing
                    .client_order_id()
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
            orders.last().map(|o| PageToken::after(o.id()))
        } else {
            None
        };
        Ok(Page { orders, next })
    }

    async fn follow(self: Arc<Self>, start: EventStart, symbol: Option<Symbol>) -> Result<EventStream, OrderError> {
        super::events::follow(self, start, symbol).await
    }

    async fn cancel(&self, id: OrderId) -> Result<StockOrder, OrderError> {
        let change = StatusChange::cancel(id, Timestamp::now());
        match self.repository.change_status(change).await? {
            Transition::Applied(order) => {
                self.metrics.transitions(Some(OrderStatus::Pending), order.status(), 1);
                Ok(order)
            }
            Transition::NotFound => Err(OrderError::NotFound(id)),
            Transition::Refused(order) => Err(OrderError::NotCancellable {
                id,
                status: order.status(),
            }),
        }
    }
}
