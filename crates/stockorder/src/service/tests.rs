//! The business rules against the in-memory repository: no database, no transport, so each
//! rule is tested alone and fast.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::OrderDesk;
use crate::adapter::outbound::memory::MemoryRepository;
use crate::domain::{
    ClientOrderId, NewOrder, OrderId, OrderSide, OrderStatus, OrderType, Price, Quantity, RiskRules, StockOrder, Symbol,
};
use crate::port::{Fault, ListQuery, OrderError, OrderMetrics, OrderService, PageLimit, PriceSource, QueuePosition};

/// Every symbol trades at one price.
pub(crate) struct FixedPrice(pub(crate) f64);

impl PriceSource for FixedPrice {
    fn price(&self, _symbol: &Symbol) -> Price {
        Price::parse(self.0).expect("a test price is positive")
    }
}

/// Records what the desk counts.
#[derive(Default)]
struct Counted(Mutex<Vec<(Option<OrderStatus>, OrderStatus, u64)>>);

impl OrderMetrics for Counted {
    fn transitions(&self, from: Option<OrderStatus>, to: OrderStatus, n: u64) {
        if n > 0 {
            self.0.lock().unwrap().push((from, to, n));
        }
    }

    fn processor_lag(&self, _waited: Duration) {}
}

pub(crate) fn desk(rules: RiskRules) -> (MemoryRepository, OrderDesk<MemoryRepository>) {
    let repository = MemoryRepository::new();
    let desk = OrderDesk::new(repository.clone(), Arc::new(FixedPrice(100.0)), rules);
    (repository, desk)
}

pub(crate) fn new_order(order_type: OrderType, side: OrderSide, quantity: i64, price: Option<f64>) -> NewOrder {
    NewOrder::new(
        Symbol::parse("AAPL").unwrap(),
        order_type,
        side,
        Quantity::parse(quantity).unwrap(),
        price,
        None,
    )
    .unwrap()
}

fn keyed(key: &str, quantity: i64) -> NewOrder {
    let mut order = new_order(OrderType::Market, OrderSide::Buy, quantity, None);
    order.client_order_id = Some(ClientOrderId::parse(key).unwrap());
    order
}

#[tokio::test]
async fn a_new_order_is_stored_pending_and_counted() {
    let counted = Arc::new(Counted::default());
    let (repository, desk) = desk(RiskRules::default());
    let desk = desk.with_metrics(counted.clone());
    let created = desk
        .create(new_order(OrderType::Market, OrderSide::Buy, 10, None))
        .await
        .unwrap();
    assert!(!created.replayed);
    assert_eq!(created.order.status(), OrderStatus::Pending);
    assert_eq!(desk.get(created.order.id()).await.unwrap(), created.order);
    let queue = repository.unprocessed(QueuePosition::START, 10).await.unwrap();
    assert_eq!(queue.into_iter().map(|q| q.order).collect::<Vec<_>>(), [created.order]);
    assert_eq!(*counted.0.lock().unwrap(), [(None, OrderStatus::Pending, 1)]);
}

#[tokio::test]
async fn a_client_order_id_replays_the_same_order_and_refuses_another() {
    let (_, desk) = desk(RiskRules::default());
    let first = desk.create(keyed("key-1", 10)).await.unwrap();
    let again = desk.create(keyed("key-1", 10)).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.order, first.order);
    let other = desk.create(keyed("key-1", 11)).await;
    assert!(
        matches!(&other, Err(OrderError::ClientOrderIdReused(k)) if k == "key-1"),
        "{other:?}"
    );
}

#[tokio::test]
async fn an_order_breaking_a_risk_rule_is_stored_rejected_with_the_reason() {
    let rules = RiskRules {
        max_quantity: Some(Quantity::parse(100).unwrap()),
        ..RiskRules::default()
    };
    let (_, desk) = desk(rules);
    let created = desk
        .create(new_order(OrderType::Market, OrderSide::Buy, 101, None))
        .await
        .unwrap();
    assert_eq!(created.order.status(), OrderStatus::Rejected);
    let reason = created.order.description().unwrap_or_default();
    assert!(reason.contains("101") && reason.contains("100"), "{reason}");
}

#[tokio::test]
async fn pages_follow_their_tokens_to_the_end() {
    let (_, desk) = desk(RiskRules::default());
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            desk.create(new_order(OrderType::Market, OrderSide::Sell, 1, None))
                .await
                .unwrap()
                .order
                .id(),
        );
    }
    ids.reverse();
    let mut seen: Vec<OrderId> = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = desk
            .list(ListQuery {
                limit: PageLimit::parse(2).unwrap(),
                page_token: token,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.orders.iter().map(|o| o.id()));
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "newest first, each once");
}

#[tokio::test]
async fn only_a_pending_order_can_be_cancelled() {
    let (_, desk) = desk(RiskRules::default());
    let order = desk.create(keyed("to-cancel", 5)).await.unwrap().order;
    let cancelled = desk.cancel(order.id()).await.unwrap();
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    assert!(cancelled.cancelled_at().is_some());
    assert!(matches!(
        desk.cancel(order.id()).await,
        Err(OrderError::NotCancellable {
            status: OrderStatus::Cancelled,
            ..
        })
    ));
    let unknown = OrderId::generate();
    assert!(matches!(desk.cancel(unknown).await, Err(OrderError::NotFound(id)) if id == unknown));
}

#[tokio::test]
async fn a_storage_fault_is_reported_and_health_returns_with_a_write() {
    let (repository, desk) = desk(RiskRules::default());
    repository.fail_with(Some(Fault::Full));
    let failed = desk.create(new_order(OrderType::Market, OrderSide::Buy, 1, None)).await;
    assert!(
        matches!(failed, Err(OrderError::StorageUnavailable(Fault::Full))),
        "{failed:?}"
    );
    assert!(!desk.can_write());
    repository.fail_with(None);
    // A read that works says nothing about writes: still failing.
    desk.list(ListQuery::default()).await.unwrap();
    assert!(!desk.can_write());
    desk.create(new_order(OrderType::Market, OrderSide::Buy, 1, None))
        .await
        .unwrap();
    assert!(desk.can_write());
}

#[tokio::test]
async fn execution_fills_at_the_market_rests_limits_below_it_and_loses_to_a_cancel() {
    let (repository, desk) = desk(RiskRules::default());
    let market = desk
        .create(new_order(OrderType::Market, OrderSide::Buy, 1, None))
        .await
        .unwrap()
        .order;
    let below = desk
        .create(new_order(OrderType::Limit, OrderSide::Buy, 1, Some(90.0)))
        .await
        .unwrap()
        .order;
    let above = desk
        .create(new_order(OrderType::Limit, OrderSide::Buy, 1, Some(110.0)))
        .await
        .unwrap()
        .order;
    let cancelled = desk
        .create(new_order(OrderType::Market, OrderSide::Sell, 1, None))
        .await
        .unwrap()
        .order;
    let batch = desk.pending_batch(QueuePosition::START, 10).await.unwrap();
    assert_eq!(batch.len(), 4);
    let last = batch[3].position;
    // The cancel comes between the claim and the decision: it must win.
    desk.cancel(cancelled.id()).await.unwrap();
    let done = desk
        .execute(batch.into_iter().map(|q| q.order).collect())
        .await
        .unwrap();
    assert_eq!(
        (done.decided, done.filled, done.resting, done.lost_race),
        (4, 2, 1, 1),
        "{done:?}"
    );

    let get = |id| {
        let repository = repository.clone();
        async move { repository.get(id).await.unwrap().unwrap() }
    };
    let filled: StockOrder = get(market.id()).await;
    assert_eq!(
        (filled.status(), filled.fill_price().map(Price::get)),
        (OrderStatus::Filled, Some(100.0))
    );
    assert_eq!(
        get(above.id()).await.status(),
        OrderStatus::Filled,
        "a buy limit above the market fills"
    );
    assert_eq!(
        get(below.id()).await.status(),
        OrderStatus::Pending,
        "a buy limit below the market rests"
    );
    assert_eq!(get(cancelled.id()).await.status(), OrderStatus::Cancelled);
    assert!(
        desk.pending_batch(last, 10).await.unwrap().is_empty(),
        "nothing after the batch"
    );
    let again = desk.pending_batch(QueuePosition::START, 10).await.unwrap();
    assert_eq!(
        again.into_iter().map(|q| q.order.id()).collect::<Vec<_>>(),
        [below.id()],
        "from the start, only the resting order is still pending"
    );
}

use crate::port::OrderRepository as _;
