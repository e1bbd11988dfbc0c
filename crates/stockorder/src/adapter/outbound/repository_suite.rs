//! One repository test suite for every storage adapter: SQLite and PostgreSQL must keep the
//! same promises (read-back exactness, idempotency, conditional transitions, paging, the
//! processor's queue, the event log), so the same tests run against both. Each adapter's `tests` module calls
//! [`repository_suite!`] with a function that opens a fresh, empty store (or `None`, with the
//! reason printed, when its database is not reachable here).

use std::collections::HashSet;

use crate::domain::{
    ClientOrderId, EventKind, NewOrder, OrderEvent, OrderId, OrderSide, OrderStatus, OrderType, Price, Quantity,
    StatusChange, StockOrder, Symbol, Timestamp,
};
use crate::port::{Inserted, ListQuery, OrderRepository, PageLimit, PageToken, QueuePosition, Transition};

/// A pending market order.
pub fn order(symbol: &str, side: OrderSide, key: Option<&str>) -> StockOrder {
    let new = NewOrder::new(
        Symbol::parse(symbol).unwrap(),
        OrderType::Market,
        side,
        Quantity::parse(10).unwrap(),
        None,
        key.map(|k| ClientOrderId::parse(k).unwrap()),
    )
    .unwrap();
    StockOrder::pending(new, OrderId::generate(), Timestamp::now())
}

/// The change of pending `order` to `to`: a fill at 101.5, a rejection for "quantity 10 exceeds
/// the limit", or a cancel.
pub fn change(order: &StockOrder, to: OrderStatus) -> StatusChange {
    let now = Timestamp::now();
    match to {
        OrderStatus::Filled => order.fill(Price::parse(101.5).unwrap(), now),
        OrderStatus::Rejected => order.reject("quantity 10 exceeds the limit".into(), now),
        _ => order.cancel(now),
    }
    .unwrap()
}

/// A cancel.
pub fn cancel(id: OrderId) -> StatusChange {
    StatusChange::cancel(id, Timestamp::now())
}

pub async fn insert_then_read_back_exactly<S: OrderRepository>(store: S) {
    let o = order("aapl", OrderSide::Buy, Some("k1"));
    assert_eq!(store.insert(o.clone()).await.unwrap(), Inserted::Created(o.clone()));
    assert_eq!(store.get(o.id()).await.unwrap(), Some(o));
    assert_eq!(store.get(OrderId::generate()).await.unwrap(), None);
}

pub async fn a_known_client_order_id_returns_the_existing_order<S: OrderRepository>(store: S) {
    let first = order("AAPL", OrderSide::Buy, Some("same"));
    store.insert(first.clone()).await.unwrap();
    let second = order("MSFT", OrderSide::Sell, Some("same"));
    assert_eq!(store.insert(second.clone()).await.unwrap(), Inserted::Existing(first));
    assert_eq!(
        store.get(second.id()).await.unwrap(),
        None,
        "nothing was written for the duplicate"
    );
}

/// Twenty clients retrying one `client_order_id` at once: one order is created, and every
/// other caller is handed that same order.
pub async fn concurrent_creates_with_one_key_store_one_order<S: OrderRepository + Clone>(store: S) {
    let racers: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert(order("AAPL", OrderSide::Buy, Some("retry")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut existing = HashSet::new();
    for r in racers {
        match r.await.unwrap() {
            Inserted::Created(o) => created.push(o.id()),
            Inserted::Existing(o) => {
                existing.insert(o.id());
            }
        }
    }
    assert_eq!(created.len(), 1, "exactly one insert wins");
    assert!(existing.iter().all(|id| *id == created[0]), "the others see the winner");
    let all = store.list(ListQuery::default(), 100).await.unwrap();
    assert_eq!(all.len(), 1);
}

pub async fn status_changes_are_conditional<S: OrderRepository>(store: S) {
    let o = order("AAPL", OrderSide::Buy, None);
    store.insert(o.clone()).await.unwrap();
    let Transition::Applied(cancelled) = store.change_status(cancel(o.id())).await.unwrap() else {
        panic!("first cancel must apply");
    };
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    assert!(cancelled.updated_at() >= o.updated_at());
    assert_eq!(cancelled.cancelled_at(), Some(cancelled.updated_at()));
    assert_eq!(store.get(o.id()).await.unwrap(), Some(cancelled.clone()));
    assert_eq!(
        store.change_status(cancel(o.id())).await.unwrap(),
        Transition::Refused(cancelled)
    );
    assert_eq!(
        store.change_status(cancel(OrderId::generate())).await.unwrap(),
        Transition::NotFound
    );
}

pub async fn concurrent_racing_cancels_have_one_winner<S: OrderRepository + Clone>(store: S) {
    let o = order("AAPL", OrderSide::Buy, None);
    store.insert(o.clone()).await.unwrap();
    let id = o.id();
    let racers: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.change_status(cancel(id)).await.unwrap() })
        })
        .collect();
    let mut applied = 0;
    for r in racers {
        if matches!(r.await.unwrap(), Transition::Applied(_)) {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
}

pub async fn list_is_newest_first_paged_and_filtered<S: OrderRepository>(store: S) {
    let mut ids = Vec::new();
    for i in 0..25 {
        let side = if i % 2 == 0 { OrderSide::Buy } else { OrderSide::Sell };
        let o = order(if i % 5 == 0 { "MSFT" } else { "AAPL" }, side, None);
        ids.push(o.id());
        store.insert(o).await.unwrap();
    }
    ids.reverse();
    let page = |token: Option<OrderId>| ListQuery {
        limit: PageLimit::parse(10).unwrap(),
        page_token: token.map(PageToken::after),
        ..ListQuery::default()
    };
    let first = store.list(page(None), 10).await.unwrap();
    assert_eq!(first.iter().map(|o| o.id()).collect::<Vec<_>>(), ids[..10]);
    let second = store.list(page(Some(ids[9])), 10).await.unwrap();
    assert_eq!(second.iter().map(|o| o.id()).collect::<Vec<_>>(), ids[10..20]);
    let last = store.list(page(Some(ids[19])), 10).await.unwrap();
    assert_eq!(last.iter().map(|o| o.id()).collect::<Vec<_>>(), ids[20..]);

    let msft = ListQuery {
        symbol: Some(Symbol::parse("msft").unwrap()),
        ..ListQuery::default()
    };
    assert_eq!(store.list(msft, 100).await.unwrap().len(), 5);
    let sells = ListQuery {
        side: Some(OrderSide::Sell),
        ..ListQuery::default()
    };
    let sells = store.list(sells, 100).await.unwrap();
    assert_eq!(sells.len(), 12);
    assert!(sells.iter().all(|o| o.order_side() == OrderSide::Sell));
    let msft_buys_pending = ListQuery {
        status: Some(OrderStatus::Pending),
        symbol: Some(Symbol::parse("MSFT").unwrap()),
        side: Some(OrderSide::Buy),
        ..ListQuery::default()
    };
    assert_eq!(store.list(msft_buys_pending, 100).await.unwrap().len(), 3);
    let filled = ListQuery {
        status: Some(OrderStatus::Filled),
        ..ListQuery::default()
    };
    assert!(store.list(filled, 100).await.unwrap().is_empty());
}

/// The processor's queue: oldest first, walked by position; a settled batch's changes are
/// applied conditionally (a change that lost its race is reported, not applied); a resting
/// order stays pending, and comes back when the queue is walked again from the start after
/// `reoffer_resting`, while decided orders do not.
pub async fn the_queue_is_settled_in_one_batch<S: OrderRepository>(store: S) {
    let orders: Vec<StockOrder> = (0..6).map(|_| order("AAPL", OrderSide::Buy, None)).collect();
    for o in &orders {
        store.insert(o.clone()).await.unwrap();
    }
    let queue = store.unprocessed(QueuePosition::START, 100).await.unwrap();
    assert_eq!(
        queue.iter().map(|q| q.order.id()).collect::<Vec<_>>(),
        orders.iter().map(|o| o.id()).collect::<Vec<_>>(),
        "oldest first"
    );
    // A cancel gets to order 2 first; the processor's fill of it must lose.
    store.change_status(cancel(orders[2].id())).await.unwrap();
    let never_stored = order("AAPL", OrderSide::Buy, None);
    let applied = store
        .settle(
            vec![
                change(&orders[0], OrderStatus::Filled),
                change(&orders[1], OrderStatus::Rejected),
                change(&orders[2], OrderStatus::Filled),
                change(&never_stored, OrderStatus::Filled),
            ],
            vec![orders[3].id()],
        )
        .await
        .unwrap();
    assert_eq!(
        applied,
        [true, true, false, false],
        "the cancel won order 2; order 4 does not exist"
    );
    let filled = store.get(orders[0].id()).await.unwrap().unwrap();
    assert_eq!(filled.status(), OrderStatus::Filled);
    assert_eq!(filled.fill_price(), Some(Price::parse(101.5).unwrap()));
    assert_eq!(filled.filled_at(), Some(filled.updated_at()));
    let rejected = store.get(orders[1].id()).await.unwrap().unwrap();
    assert_eq!(rejected.status(), OrderStatus::Rejected);
    assert_eq!(rejected.description(), Some("quantity 10 exceeds the limit"));
    let cancelled = store.get(orders[2].id()).await.unwrap().unwrap();
    assert_eq!(
        cancelled.status(),
        OrderStatus::Cancelled,
        "the fill that lost the race changed nothing"
    );
    assert_eq!(cancelled.fill_price(), None);
    let resting = store.get(orders[3].id()).await.unwrap().unwrap();
    assert_eq!(resting.status(), OrderStatus::Pending, "a resting order stays pending");

    let positions: Vec<QueuePosition> = queue.iter().map(|q| q.position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions grow: {positions:?}"
    );

    // Past the last position, nothing until a new order comes; then only that order.
    let last = positions[positions.len() - 1];
    assert!(store.unprocessed(last, 100).await.unwrap().is_empty());
    let later = order("MSFT", OrderSide::Sell, None);
    store.insert(later.clone()).await.unwrap();
    let next: Vec<OrderId> = store
        .unprocessed(last, 100)
        .await
        .unwrap()
        .iter()
        .map(|q| q.order.id())
        .collect();
    assert!(next == vec![later.id()] || next.is_empty(), "{next:?}");

    // Walked again from the start after a price move: the resting order and the two nobody
    // decided, never the decided ones. (PostgreSQL leased the undecided ones with the first
    // claim and offers them again only when the lease runs out; its own tests check that.)
    store.reoffer_resting().await.unwrap();
    let again: Vec<OrderId> = store
        .unprocessed(QueuePosition::START, 100)
        .await
        .unwrap()
        .iter()
        .map(|q| q.order.id())
        .collect();
    assert!(
        again.contains(&orders[3].id()),
        "the resting order comes back: {again:?}"
    );
    for decided in &orders[..3] {
        assert!(!again.contains(&decided.id()), "{again:?}");
    }
}

/// Reads right after an acknowledged write see it, however the adapter pools its reads.
pub async fn reads_after_an_acknowledged_write_see_it<S: OrderRepository + Clone>(store: S) {
    let first = order("AAPL", OrderSide::Buy, None);
    store.insert(first.clone()).await.unwrap();
    for round in 0..30 {
        let reads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let id = first.id();
                tokio::spawn(async move { store.get(id).await.unwrap() })
            })
            .collect();
        for r in reads {
            assert!(r.await.unwrap().is_some());
        }
        let next = order("MSFT", OrderSide::Sell, None);
        store.insert(next.clone()).await.unwrap();
        for _ in 0..8 {
            assert!(
                store.get(next.id()).await.unwrap().is_some(),
                "round {round}: acknowledged write not visible"
            );
        }
        store.change_status(cancel(next.id())).await.unwrap();
        let page = store.list(ListQuery::default(), 1).await.unwrap();
        assert_eq!(page[0].status(), OrderStatus::Cancelled, "round {round}");
    }
}

/// Generates one `#[tokio::test]` per suite test for an adapter. `$open` is an async function
/// returning `Option<(guard, store)>`: a fresh empty store, and whatever must live as long as
/// it (a temp dir, a schema to drop); `None` skips the test (it prints why).
/// Every event after `after` once there are at least `expected`: a store that numbers events
/// after they commit (PostgreSQL's publisher) does so within a tick or two.
pub async fn events_once_published<S: OrderRepository>(store: &S, after: u64, expected: usize) -> Vec<OrderEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let events = store.events(after, None, 1000).await.unwrap();
        if events.len() >= expected || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub async fn every_committed_change_has_its_event_in_order<S: OrderRepository>(store: S) {
    let a = order("AAPL", OrderSide::Buy, Some("ev-a"));
    let b = order("MSFT", OrderSide::Sell, None);
    let mut wakeups = store.event_wakeups();
    wakeups.borrow_and_update();
    store.insert(a.clone()).await.unwrap();
    store.insert(b.clone()).await.unwrap();
    // Not changes: a replayed key, a refused cancel and a fill of an order that is not there.
    store.insert(order("AAPL", OrderSide::Buy, Some("ev-a"))).await.unwrap();
    store.change_status(cancel(a.id())).await.unwrap();
    store.change_status(cancel(a.id())).await.unwrap();
    let applied = store
        .settle(
            vec![
                change(&b, OrderStatus::Filled),
                change(&order("NONE", OrderSide::Buy, None), OrderStatus::Filled),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(applied, [true, false]);

    let events = events_once_published(&store, 0, 4).await;
    let got: Vec<(EventKind, OrderId, OrderStatus)> = events
        .iter()
        .map(|e| (e.kind, e.order.id(), e.order.status()))
        .collect();
    assert_eq!(
        got,
        [
            (EventKind::Created, a.id(), OrderStatus::Pending),
            (EventKind::Created, b.id(), OrderStatus::Pending),
            (EventKind::Cancelled, a.id(), OrderStatus::Cancelled),
            (EventKind::Filled, b.id(), OrderStatus::Filled),
        ]
    );
    assert!(
        events.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "strictly increasing"
    );
    // Each event holds the order as it was right after its change.
    assert_eq!(events[0].order, a);
    assert_eq!(Some(&events[2].order), store.get(a.id()).await.unwrap().as_ref());
    assert_eq!(events[3].order.fill_price(), Some(Price::parse(101.5).unwrap()));
    assert!(
        wakeups.has_changed().unwrap(),
        "a follower waiting for commits was woken"
    );

    // Resuming after any of them gives exactly the rest; one symbol's only when asked.
    let after_second = store.events(events[1].sequence, None, 1000).await.unwrap();
    assert_eq!(after_second, events[2..]);
    let msft = store
        .events(0, Some(Symbol::parse("MSFT").unwrap()), 1000)
        .await
        .unwrap();
    assert_eq!(
        msft.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Created, EventKind::Filled]
    );
    assert_eq!(store.events(events[0].sequence, None, 2).await.unwrap(), events[1..3]);
    let bounds = store.event_bounds().await.unwrap();
    assert_eq!((bounds.first, bounds.last), (events[0].sequence, events[3].sequence));
    assert!(bounds.can_resume_after(0) && bounds.can_resume_after(bounds.last));
}

macro_rules! repository_suite {
    ($open:ident) => {
        $crate::adapter::outbound::repository_suite::repository_suite!(
            $open;
            insert_then_read_back_exactly,
            a_known_client_order_id_returns_the_existing_order,
            concurrent_creates_with_one_key_store_one_order,
            status_changes_are_conditional,
            concurrent_racing_cancels_have_one_winner,
            list_is_newest_first_paged_and_filtered,
            the_queue_is_settled_in_one_batch,
            reads_after_an_acknowledged_write_see_it,
            every_committed_change_has_its_event_in_order,
        );
    };
    ($open:ident; $($name:ident),+ $(,)?) => {
        mod suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some((_guard, store)) = super::$open().await else {
                        return;
                    };
                    $crate::adapter::outbound::repository_suite::$name(store).await;
                }
            )+
        }
    };
}
pub(crate) use repository_suite;
