use super::*;
use crate::domain::{ClientOrderId, NewOrder, OrderSide, OrderStatus, OrderType, Quantity, Symbol, Timestamp};
use crate::port::{PageLimit, PageToken};

fn order(symbol: &str, side: OrderSide, key: Option<&str>) -> StockOrder {
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

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("orders.db")).unwrap();
    (dir, store)
}

fn cancel(id: OrderId) -> StatusChange {
    StatusChange {
        id,
        from: OrderStatus::Pending,
        to: OrderStatus::Cancelled,
        description: None,
        fill_price: None,
        at: Timestamp::now(),
    }
}

#[tokio::test]
async fn insert_then_read_back_exactly() {
    let (_dir, store) = store();
    let o = order("aapl", OrderSide::Buy, Some("k1"));
    assert_eq!(store.insert(o.clone()).await.unwrap(), Inserted::Created(o.clone()));
    assert_eq!(store.get(o.id).await.unwrap(), Some(o));
    assert_eq!(store.get(OrderId::generate()).await.unwrap(), None);
}

#[tokio::test]
async fn a_known_client_order_id_returns_the_existing_order() {
    let (_dir, store) = store();
    let first = order("AAPL", OrderSide::Buy, Some("same"));
    store.insert(first.clone()).await.unwrap();
    let second = order("MSFT", OrderSide::Sell, Some("same"));
    assert_eq!(store.insert(second.clone()).await.unwrap(), Inserted::Existing(first));
    assert_eq!(
        store.get(second.id).await.unwrap(),
        None,
        "nothing was written for the duplicate"
    );
}

#[tokio::test]
async fn status_changes_are_conditional() {
    let (_dir, store) = store();
    let o = order("AAPL", OrderSide::Buy, None);
    store.insert(o.clone()).await.unwrap();
    let Transition::Applied(cancelled) = store.change_status(cancel(o.id)).await.unwrap() else {
        panic!("first cancel must apply");
    };
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert!(cancelled.updated_at >= o.updated_at);
    assert_eq!(
        store.change_status(cancel(o.id)).await.unwrap(),
        Transition::Refused(cancelled)
    );
    assert_eq!(
        store.change_status(cancel(OrderId::generate())).await.unwrap(),
        Transition::NotFound
    );
}

#[tokio::test]
async fn concurrent_racing_cancels_have_one_winner() {
    let (_dir, store) = store();
    let o = order("AAPL", OrderSide::Buy, None);
    store.insert(o.clone()).await.unwrap();
    let racers: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.change_status(cancel(o.id)).await.unwrap() })
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

#[tokio::test]
async fn list_is_newest_first_paged_and_filtered() {
    let (_dir, store) = store();
    let mut ids = Vec::new();
    for i in 0..25 {
        let side = if i % 2 == 0 { OrderSide::Buy } else { OrderSide::Sell };
        let o = order(if i % 5 == 0 { "MSFT" } else { "AAPL" }, side, None);
        ids.push(o.id);
        store.insert(o).await.unwrap();
    }
    ids.reverse();
    let page = |token: Option<OrderId>| ListQuery {
        limit: PageLimit::parse(10).unwrap(),
        page_token: token.map(PageToken::after),
        ..ListQuery::default()
    };
    let first = store.list(page(None), 10).await.unwrap();
    assert_eq!(first.iter().map(|o| o.id).collect::<Vec<_>>(), ids[..10]);
    let second = store.list(page(Some(ids[9])), 10).await.unwrap();
    assert_eq!(second.iter().map(|o| o.id).collect::<Vec<_>>(), ids[10..20]);

    let msft = ListQuery {
        symbol: Some(Symbol::parse("msft").unwrap()),
        ..ListQuery::default()
    };
    assert_eq!(store.list(msft, 100).await.unwrap().len(), 5);
    let sells = ListQuery {
        side: Some(OrderSide::Sell),
        ..ListQuery::default()
    };
    assert!(
        store
            .list(sells, 100)
            .await
            .unwrap()
            .iter()
            .all(|o| o.order_side == OrderSide::Sell)
    );
    let filled = ListQuery {
        status: Some(OrderStatus::Filled),
        ..ListQuery::default()
    };
    assert!(store.list(filled, 100).await.unwrap().is_empty());
}

/// Every filter combination must be an index seek in key order: no full scan, and no
/// temporary sort whose cost would grow with the table.
#[test]
fn every_list_query_is_an_index_seek() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("plan.db")).unwrap();
    schema::migrate(&mut conn).unwrap();
    for mask in 0..16u8 {
        let q = ListQuery {
            status: (mask & 1 != 0).then_some(OrderStatus::Pending),
            symbol: (mask & 2 != 0).then(|| Symbol::parse("AAPL").unwrap()),
            side: (mask & 4 != 0).then_some(OrderSide::Buy),
            page_token: (mask & 8 != 0).then(|| PageToken::after(OrderId::generate())),
            ..ListQuery::default()
        };
        let (sql, args) = rows::list_sql(&q, 101);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join(" | ");
        assert!(
            !plan.contains("TEMP B-TREE"),
            "sorts instead of seeking: {sql} => {plan}"
        );
        if mask & 7 != 0 {
            assert!(
                plan.contains("USING INDEX") || plan.contains("PRIMARY KEY"),
                "{sql} => {plan}"
            );
        }
    }
}

#[tokio::test]
async fn close_commits_checkpoints_and_refuses_later_calls() {
    let (dir, store) = store();
    let writes: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.insert(order("AAPL", OrderSide::Buy, None)).await })
        })
        .collect();
    let mut ids = Vec::new();
    for w in writes {
        if let Inserted::Created(o) = w.await.unwrap().unwrap() {
            ids.push(o.id);
        }
    }
    store.close().await.unwrap();
    assert!(matches!(
        store.insert(order("AAPL", OrderSide::Buy, None)).await,
        Err(RepositoryError::Closed)
    ));
    assert!(matches!(store.get(ids[0]).await, Err(RepositoryError::Closed)));
    let wal = dir.path().join("orders.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "WAL checkpointed into the file"
    );

    let reopened = SqliteStore::open(dir.path().join("orders.db")).unwrap();
    for id in ids {
        assert!(reopened.get(id).await.unwrap().is_some());
    }
    store.close().await.unwrap(); // closing twice is harmless
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    let cause = std::error::Error::source(&err)
        .expect("the cause is chained")
        .to_string();
    assert!(cause.contains("newer than this binary"), "{err}: {cause}");
}

/// Readers keep their snapshot between reads while nothing is committed; every acknowledged
/// write must still be visible to the next read, on every pooled connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_an_acknowledged_write_see_it_on_every_reader() {
    let (_dir, store) = store();
    let first = order("AAPL", OrderSide::Buy, None);
    store.insert(first.clone()).await.unwrap();
    for round in 0..50 {
        // Hold snapshots on several pooled connections at once.
        let reads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let id = first.id;
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
                store.get(next.id).await.unwrap().is_some(),
                "round {round}: acknowledged write not visible"
            );
        }
        store.change_status(cancel(next.id)).await.unwrap();
        let page = store.list(ListQuery::default(), 1).await.unwrap();
        assert_eq!(page[0].status, OrderStatus::Cancelled, "round {round}");
    }
}

/// Idle readers' snapshots are ended after each commit, so the WAL can be checkpointed and does
/// not grow without bound under writes.
#[tokio::test]
async fn idle_reader_snapshots_do_not_hold_the_wal() {
    let (dir, store) = store();
    let first = order("AAPL", OrderSide::Buy, None);
    store.insert(first.clone()).await.unwrap();
    store.get(first.id).await.unwrap(); // a reader now holds a snapshot
    for _ in 0..3000 {
        store.insert(order("AAPL", OrderSide::Buy, None)).await.unwrap();
    }
    let wal = std::fs::metadata(dir.path().join("orders.db-wal")).unwrap().len();
    // SQLite checkpoints at 1000 pages (4 MiB); a held snapshot would stop the WAL from being
    // reused, and 3000 commits would have written far more than that.
    assert!(wal < 8 * 1024 * 1024, "WAL grew to {wal} bytes");
    store.close().await.unwrap();
}
