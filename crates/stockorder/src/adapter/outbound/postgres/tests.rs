//! The repository suite against PostgreSQL, plus what only a shared database has: leases on
//! the processor's queue, and several replicas processing one queue.
//!
//! Each test gets its own schema in the database of `TEST_DATABASE_URL` (or `DATABASE_URL`),
//! dropped afterwards; without a reachable PostgreSQL the tests print why and pass.

use std::str::FromStr;
use std::sync::Arc;

use super::*;
use crate::adapter::outbound::repository_suite::{order, repository_suite};
use crate::adapter::outbound::simulated_price::SimulatedPrices;
use crate::domain::{OrderSide, RiskRules};
use crate::service::OrderDesk;

/// A schema of its own for one test; dropped (with everything in it) when the test ends.
pub(crate) struct TestSchema {
    url: String,
    name: String,
}

impl TestSchema {
    /// A fresh schema, and a connection string whose sessions use it. `None`, with the reason
    /// printed, when no PostgreSQL is configured or reachable.
    pub(crate) async fn create() -> Option<(Self, tokio_postgres::Config)> {
        let url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
        let Some(url) = url else {
            crate::testing::skip(format_args!(
                "set TEST_DATABASE_URL (or DATABASE_URL) to postgres://… to run the PostgreSQL tests"
            ));
            return None;
        };
        let (client, connection) = match tokio_postgres::connect(&url, NoTls).await {
            Ok(c) => c,
            Err(e) => {
                crate::testing::skip(format_args!("PostgreSQL at {url} is not reachable: {e}"));
                return None;
            }
        };
        tokio::spawn(connection);
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        client.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
        let mut config = tokio_postgres::Config::from_str(&url).unwrap();
        config.options(format!("-c search_path={name}"));
        Some((Self { url, name }, config))
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let cleanup = async move {
            let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await else {
                return;
            };
            tokio::spawn(connection);
            // Never wait forever on a lock a broken test left behind: report and move on.
            if let Err(e) = client
                .batch_execute(&format!("SET lock_timeout = '5s'; DROP SCHEMA {name} CASCADE"))
                .await
            {
                eprintln!("warning: could not drop test schema {name}: {e}");
            }
        };
        // Drop cannot await. On a multi-threaded runtime, block this worker only (the others
        // keep driving the pool's connections); otherwise use a thread with its own runtime.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(cleanup));
            }
            _ => {
                let _ = std::thread::spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map(|rt| rt.block_on(cleanup))
                })
                .join();
            }
        }
    }
}

/// A store in a fresh schema.
async fn open() -> Option<(TestSchema, PostgresStore)> {
    let (schema, config) = TestSchema::create().await?;
    let store = PostgresStore::open_config(config, 8, super::Timeouts::default())
        .await
        .unwrap();
    store.start_publishing(Default::default());
    Some((schema, store))
}

repository_suite!(open);

/// Three replicas claiming from one queue at once get disjoint batches, and a batch nobody
/// settles comes back when its lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_from_several_replicas_are_disjoint() {
    let Some((schema, config)) = TestSchema::create().await else {
        return;
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            PostgresStore::open_config(config.clone(), 4, super::Timeouts::default())
                .await
                .unwrap(),
        );
    }
    for _ in 0..90 {
        replicas[0].insert(order("AAPL", OrderSide::Buy, None)).await.unwrap();
    }
    let claims: Vec<_> = replicas
        .iter()
        .map(|r| {
            let r = r.clone();
            tokio::spawn(async move { r.unprocessed(QueuePosition::START, 40).await.unwrap() })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for c in claims {
        for q in c.await.unwrap() {
            assert!(seen.insert(q.order.id()), "order {} claimed twice", q.order.id());
            total += 1;
        }
    }
    assert_eq!(total, 90, "together they claimed the whole queue");
    assert!(
        replicas[1]
            .unprocessed(QueuePosition::START, 100)
            .await
            .unwrap()
            .is_empty(),
        "all leased"
    );

    // A replica dies holding its batch: let the leases run out (moved into the past here).
    let (client, connection) = tokio_postgres::connect(&schema.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "UPDATE {}.orders SET claimed_until = now() - interval '1 second'",
            schema.name
        ))
        .await
        .unwrap();
    assert_eq!(
        replicas[2].unprocessed(QueuePosition::START, 100).await.unwrap().len(),
        90,
        "reclaimed"
    );
    drop(schema);
}

/// Three replicas' processors drain one queue together: every order is filled exactly once,
/// and no replica wastes a decision on an order another one holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_replicas_fill_each_order_exactly_once() {
    let Some((_schema, config)) = TestSchema::create().await else {
        return;
    };
    let mut desks = Vec::new();
    for _ in 0..3 {
        let store = PostgresStore::open_config(config.clone(), 4, super::Timeouts::default())
            .await
            .unwrap();
        desks.push(Arc::new(OrderDesk::new(
            store,
            Arc::new(SimulatedPrices),
            RiskRules::default(),
        )));
    }
    for _ in 0..600 {
        desks[0]
            .repository()
            .insert(order("AAPL", OrderSide::Buy, None))
            .await
            .unwrap();
    }
    let workers: Vec<_> = desks
        .iter()
        .map(|desk| {
            let desk = Arc::clone(desk);
            tokio::spawn(async move {
                let (mut filled, mut lost_race) = (0, 0);
                loop {
                    let batch = desk.pending_batch(QueuePosition::START, 25).await.unwrap();
                    if batch.is_empty() {
                        return (filled, lost_race);
                    }
                    let done = desk
                        .execute(batch.into_iter().map(|q| q.order).collect())
                        .await
                        .unwrap();
                    filled += done.filled;
                    lost_race += done.lost_race;
                }
            })
        })
        .collect();
    let (mut filled, mut lost_race, mut busy) = (0, 0, 0);
    for w in workers {
        let (f, l) = w.await.unwrap();
        filled += f;
        lost_race += l;
        busy += usize::from(f > 0);
    }
    assert_eq!(filled, 600, "every order filled once");
    assert_eq!(lost_race, 0, "no two replicas decided the same order");
    assert!(busy >= 2, "the work was shared");
    let pending = desks[1]
        .repository()
        .list(
            ListQuery {
                status: Some(crate::domain::OrderStatus::Pending),
                ..ListQuery::default()
            },
            10,
        )
        .await
        .unwrap();
    assert!(pending.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let Some((schema, config)) = TestSchema::create().await else {
        return;
    };
    PostgresStore::open_config(config.clone(), 1, super::Timeouts::default())
        .await
        .unwrap();
    let (client, connection) = tokio_postgres::connect(&schema.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "INSERT INTO {}.stockorder_schema (version) VALUES (99)",
            schema.name
        ))
        .await
        .unwrap();
    let err = PostgresStore::open_config(config, 1, super::Timeouts::default())
        .await
        .unwrap_err();
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("newer than this binary"), "{err}: {cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_refuses_later_calls_and_keeps_what_was_acknowledged() {
    let Some((_schema, config)) = TestSchema::create().await else {
        return;
    };
    let store = PostgresStore::open_config(config.clone(), 4, super::Timeouts::default())
        .await
        .unwrap();
    let o = order("AAPL", OrderSide::Buy, None);
    store.insert(o.clone()).await.unwrap();
    store.close().await.unwrap();
    assert!(matches!(store.get(o.id()).await, Err(RepositoryError::Closed)));
    assert!(matches!(
        store.insert(order("AAPL", OrderSide::Buy, None)).await,
        Err(RepositoryError::Closed)
    ));
    let reopened = PostgresStore::open_config(config, 1, super::Timeouts::default())
        .await
        .unwrap();
    assert_eq!(reopened.get(o.id()).await.unwrap(), Some(o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_query_uses_an_index() {
    let Some((_schema, config)) = TestSchema::create().await else {
        return;
    };
    let store = PostgresStore::open_config(config, 1, super::Timeouts::default())
        .await
        .unwrap();
    let client = store.client().await.unwrap();
    // Enough rows, and fresh statistics, that the planner prefers the indexes it would use
    // on a real table.
    client
        .batch_execute(
            "INSERT INTO orders (id, symbol, order_type, order_side, quantity, status, created_at, updated_at)
             SELECT gen_random_uuid(), 'S' || (i % 50), 'MARKET', CASE WHEN i % 2 = 0 THEN 'BUY' ELSE 'SELL' END,
                    1, CASE WHEN i % 4 = 0 THEN 'PENDING' ELSE 'FILLED' END, now(), now()
             FROM generate_series(1, 20000) AS i;
             ANALYZE orders;",
        )
        .await
        .unwrap();
    for mask in 0..16u8 {
        let q = ListQuery {
            status: (mask & 1 != 0).then_some(crate::domain::OrderStatus::Pending),
            symbol: (mask & 2 != 0).then(|| crate::domain::Symbol::parse("S7").unwrap()),
            side: (mask & 4 != 0).then_some(OrderSide::Buy),
            page_token: (mask & 8 != 0).then(|| crate::port::PageToken::after(OrderId::generate())),
            ..ListQuery::default()
        };
        let (sql, args) = rows::list_sql(&q, 101);
        let params: Vec<_> = args.iter().map(rows::Param::as_sql).collect();
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {sql}"), &params)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join(" | ");
        assert!(plan.contains("Index"), "{sql} => {plan}");
        assert!(!plan.contains("Seq Scan"), "{sql} => {plan}");
    }
}

/// The ordering trap: two writers whose commits come out of order. The first begins and writes
/// its event, the second writes and commits, a follower reads the second's event; then the
/// first commits. A number given at write time would put the first's event *below* what the
/// follower has seen, and a follower resuming after it would never get it. Numbered at
/// publication (`events.rs`), it comes after: the follower resuming gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_commits_late_is_not_skipped_by_a_follower_that_resumes() {
    let Some((_schema, store)) = open().await else {
        return;
    };
    let config = tokio_postgres::Config::from_str(&_schema.url).unwrap();
    let raw_event = format!(
        "INSERT INTO {}.order_events (kind, id, symbol, order_type, order_side, quantity, status, created_at, updated_at)
         VALUES ('created', $1, $2, 'MARKET', 'BUY', 1, 'PENDING', now(), now())",
        _schema.name
    );
    let connect = || async {
        let (client, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    let (mut first, mut second) = (connect().await, connect().await);
    let early = first.transaction().await.unwrap();
    early
        .execute(&raw_event, &[&uuid::Uuid::now_v7(), &"EARLY"])
        .await
        .unwrap();
    let late = second.transaction().await.unwrap();
    late.execute(&raw_event, &[&uuid::Uuid::now_v7(), &"LATE"])
        .await
        .unwrap();
    late.commit().await.unwrap();

    // The follower sees the event that committed, and resumes after it.
    let seen = crate::adapter::outbound::repository_suite::events_once_published(&store, 0, 1).await;
    assert_eq!(
        seen.iter().map(|e| e.order.symbol().as_str()).collect::<Vec<_>>(),
        ["LATE"]
    );
    let resume_after = seen[0].sequence;

    early.commit().await.unwrap();
    let rest = crate::adapter::outbound::repository_suite::events_once_published(&store, resume_after, 1).await;
    assert_eq!(
        rest.iter().map(|e| e.order.symbol().as_str()).collect::<Vec<_>>(),
        ["EARLY"],
        "the event that committed late comes after what the follower saw, not before it"
    );
    assert!(rest[0].sequence > resume_after);
}

/// Across replicas without the ticks: with rounds an hour apart, an order placed on one replica
/// is numbered because its commit woke that replica's publisher, and the other replica learns
/// of it because it heard the publisher's `NOTIFY`. Either wake-up missing, this waits an hour
/// (the test's 10 s bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_hears_of_another_replicas_events_without_waiting_for_a_tick() {
    let Some((schema, config)) = TestSchema::create().await else {
        return;
    };
    let hour = Duration::from_secs(3600);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = PostgresStore::open_config(config.clone(), 4, super::Timeouts::default())
            .await
            .unwrap();
        store.start_publishing_every(Default::default(), hour);
        replicas.push(store);
    }
    let mut heard = replicas[1].event_wakeups();
    // The first rounds (an interval ticks at once) are over, and the listener is in place.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = *heard.borrow_and_update();
    for n in 1..=3 {
        replicas[0].insert(order("AAPL", OrderSide::Buy, None)).await.unwrap();
        let moved = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                heard.changed().await.unwrap();
                if *heard.borrow_and_update() >= before + n {
                    break;
                }
            }
        })
        .await;
        assert!(moved.is_ok(), "event {n}: the other replica did not hear of it");
    }
    let events = replicas[1].events(before, None, 10).await.unwrap();
    assert_eq!(events.len(), 3);
    for store in &replicas {
        store.close().await.unwrap();
    }
    drop(schema);
}
