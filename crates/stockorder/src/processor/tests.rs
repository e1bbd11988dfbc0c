//! The processor against the in-memory repository: it decides what is queued, waits out a
//! storage fault instead of dying, and stops when told.

use std::sync::Arc;
use std::time::Duration;

use super::{ProcessorConfig, run};
use crate::adapter::memory::MemoryRepository;
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
            let status = repository.get(id).await.ok().flatten().map(|o| o.status);
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
    assert_eq!(decided(&repository, order.id).await, OrderStatus::Filled);
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
    assert_eq!(decided(&repository, order.id).await, OrderStatus::Filled);
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
        repository.get(order.id).await.unwrap().unwrap().status,
        OrderStatus::Pending
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
