//! The processor against the in-memory repository: it decides what is queued, waits out a
//! storage fault instead of dying, and stops when told.

use std::sync::Arc;
use std::time::Duration;

use super::{ProcessorConfig, run};
use crate::adapter::outbound::memory::MemoryRepository;
use crate::domain::{OrderId, OrderSide, OrderStatus, OrderType, RiskRules};
use crate::port::{Fault, OrderRepository, OrderService};
use crate::service::OrderDesk;
use crate::service::tests::{desk, new_order};

const CONFIG: ProcessorConfig = ProcessorConfig {
    workers: 1,
    batch: 16,
    poll_interval: Duration::from_secs(1),
};

/// Waits (at most 5 s) until order `id` has left PENDING; its status then.
async fn decided(repository: &MemoryRepository, id: OrderId) -> OrderStatus {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let status = repository.get(id).await.ok().flatten().map(|o| o.status());
            if let Some(s) = status.filter(|s| *s != OrderStatus::Pending) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the processor decides within 5 s")
}

/// The processor on `desk`, and what stops it.
fn start(
    desk: Arc<OrderDesk<MemoryRepository>>,
    config: ProcessorConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), super::ProcessorError>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(desk, config, async {
        let _ = stopped.await;
    }));
    (stop, task)
}

#[tokio::test]
async fn a_new_market_order_is_filled_and_the_processor_stops_when_told() {
    let (repository, desk) = desk(RiskRules::default());
    let desk = Arc::new(desk);
    let (stop, task) = start(Arc::clone(&desk), CONFIG);
    let order = desk
        .create(new_order(OrderType::Market, OrderSide::Buy, 3, None))
        .await
        .unwrap()
        .order;
    assert_eq!(decided(&repository, order.id()).await, OrderStatus::Filled);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops at once")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_storage_fault_is_waited_out_and_the_queue_then_decided() {
    let (repository, desk) = desk(RiskRules::default());
    let desk = Arc::new(desk);
    let order = desk
        .create(new_order(OrderType::Market, OrderSide::Sell, 3, None))
        .await
        .unwrap()
        .order;
    repository.fail_with(Some(Fault::Full));
    let (stop, task) = start(Arc::clone(&desk), CONFIG);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished(), "a fault that can clear does not end the processor");
    repository.fail_with(None);
    assert_eq!(decided(&repository, order.id()).await, OrderStatus::Filled);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn with_no_workers_nothing_is_decided_until_the_stop() {
    let (repository, desk) = desk(RiskRules::default());
    let desk = Arc::new(desk);
    let order = desk
        .create(new_order(OrderType::Market, OrderSide::Buy, 1, None))
        .await
        .unwrap()
        .order;
    let (stop, task) = start(Arc::clone(&desk), ProcessorConfig { workers: 0, ..CONFIG });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        repository.get(order.id()).await.unwrap().unwrap().status(),
        OrderStatus::Pending
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// The simulated prices, with a price the test can move: what a market-data feed does.
struct MovablePrices {
    moved: std::sync::Mutex<Option<f64>>,
    version: std::sync::atomic::AtomicU64,
}

impl crate::port::PriceSource for MovablePrices {
    fn price(&self, symbol: &crate::domain::Symbol) -> crate::domain::Price {
        match *self.moved.lock().unwrap() {
            Some(p) => crate::domain::Price::parse(p).unwrap(),
            None => crate::adapter::outbound::simulated_price::SimulatedPrices.price(symbol),
        }
    }

    fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A limit order the price does not reach rests, costing no write: the order is untouched (its
/// `updated_at` is its creation). When the price moves to reach it, the processor looks at the
/// resting orders again and fills it at the new price, once. On SQLite, the default store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resting_limit_is_filled_when_the_price_moves_to_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::adapter::outbound::sqlite::SqliteStore::open(dir.path().join("orders.db")).unwrap();
    let prices = Arc::new(MovablePrices {
        moved: std::sync::Mutex::new(None),
        version: std::sync::atomic::AtomicU64::new(0),
    });
    let desk = Arc::new(OrderDesk::new(store.clone(), prices.clone(), RiskRules::default()));
    let config = ProcessorConfig {
        poll_interval: Duration::from_millis(20),
        ..CONFIG
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(Arc::clone(&desk), config, async {
        let _ = stopped.await;
    }));
    // AAPL's simulated price is 203.87: a buy limit at 150 rests; a market order fills.
    let limit = desk
        .create(new_order(OrderType::Limit, OrderSide::Buy, 5, Some(150.0)))
        .await
        .unwrap()
        .order;
    let market = desk
        .create(new_order(OrderType::Market, OrderSide::Buy, 1, None))
        .await
        .unwrap()
        .order;
    // Orders are decided in queue order, so once the later market order is filled, the limit
    // has been looked at.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.get(market.id()).await.unwrap().unwrap().status() == OrderStatus::Pending {
        assert!(
            std::time::Instant::now() < deadline,
            "the market order is filled within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resting = store.get(limit.id()).await.unwrap().unwrap();
    assert_eq!(resting.status(), OrderStatus::Pending, "the limit rests");
    assert_eq!(resting, limit, "resting changed nothing of the order");

    *prices.moved.lock().unwrap() = Some(149.5);
    prices.version.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let filled = loop {
        let o = store.get(limit.id()).await.unwrap().unwrap();
        if o.status() != OrderStatus::Pending {
            break o;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "filled within 5 s of the price move"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(filled.status(), OrderStatus::Filled);
    assert_eq!(filled.fill_price().map(crate::domain::Price::get), Some(149.5));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    store.close().await.unwrap();
}
