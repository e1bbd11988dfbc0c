//! SQLite-only tests: the repository suite on a file, statement plans and compilation, the
//! writer under faults, the recent-orders cache against racing writes, the event log's pruning.

use super::*;
use crate::adapter::outbound::repository_suite::{order, repository_suite};
use crate::domain::{OrderSide, OrderStatus, Symbol};
use crate::port::PageToken;

/// A fresh store in a temp dir (the guard keeps the dir).
async fn open() -> Option<(tempfile::TempDir, SqliteStore)> {
    Some(store())
}

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("orders.db")).unwrap();
    (dir, store)
}

repository_suite!(open);

/// A connection to `path` as the store's writer has it: configured, migrated, and with the
/// trigger that appends each change's event.
pub(super) fn writer_connection(path: &Path) -> Connection {
    let mut conn = Connection::open(path).unwrap();
    schema::configure_writer(&conn).unwrap();
    schema::migrate(&mut conn).unwrap();
    schema::append_events_of_changes(&conn).unwrap();
    conn
}

/// Every combination of the list filters: status, symbol, side, page token.
fn every_filter() -> impl Iterator<Item = ListQuery> {
    (0..16u8).map(|mask| ListQuery {
        status: (mask & 1 != 0).then_some(OrderStatus::Pending),
        symbol: (mask & 2 != 0).then(|| Symbol::parse("AAPL").unwrap()),
        side: (mask & 4 != 0).then_some(OrderSide::Buy),
        page_token: (mask & 8 != 0).then(|| PageToken::after(OrderId::generate())),
        ..ListQuery::default()
    })
}

/// SQLite's plan for `sql` with `params`, its steps joined by ` | `.
fn query_plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let plan: Vec<String> = stmt
        .query_map(params, |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    plan.join(" | ")
}

/// Every filter combination must be an index seek in key order: no full scan, and no
/// temporary sort whose cost would grow with the table.
#[test]
fn every_list_query_is_an_index_seek() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("plan.db")).unwrap();
    schema::migrate(&mut conn).unwrap();
    for q in every_filter() {
        let (sql, args) = rows::list_sql(&q, 101);
        let plan = query_plan(&conn, &sql, rusqlite::params_from_iter(args));
        assert!(
            !plan.contains("TEMP B-TREE"),
            "sorts instead of seeking: {sql} => {plan}"
        );
        // With a filter on status, symbol or side, the plan names the index it seeks.
        if q.status.is_some() || q.symbol.is_some() || q.side.is_some() {
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
            ids.push(o.id());
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

/// Idle readers' snapshots are ended after each commit, so the WAL can be checkpointed and does
/// not grow without bound under writes.
#[tokio::test]
async fn idle_reader_snapshots_do_not_hold_the_wal() {
    let (dir, store) = store();
    let first = order("AAPL", OrderSide::Buy, None);
    store.insert(first.clone()).await.unwrap();
    // A read of the file (an id the cache of recent orders cannot answer): a reader now holds
    // a snapshot.
    assert_eq!(store.get(OrderId::generate()).await.unwrap(), None);
    for _ in 0..3000 {
        store.insert(order("AAPL", OrderSide::Buy, None)).await.unwrap();
    }
    let wal = std::fs::metadata(dir.path().join("orders.db-wal")).unwrap().len();
    // SQLite checkpoints at 1000 pages (4 MiB); a held snapshot would stop the WAL from being
    // reused, and 3000 commits would have written far more than that.
    assert!(wal < 8 * 1024 * 1024, "WAL grew to {wal} bytes");
    store.close().await.unwrap();
}

/// A double-quoted string is an identifier, on every connection the store opens: a misspelt
/// column is an error, not a string that happens to compare unequal.
#[test]
fn double_quotes_name_columns_not_strings() {
    let conn = Connection::open_in_memory().unwrap();
    assert_eq!(
        conn.query_row(r#"SELECT "no_such_column""#, [], |r| r.get::<_, String>(0))
            .unwrap(),
        "no_such_column",
        "SQLite's lenient default, which the next two checks must not see"
    );
    schema::configure_reader(&conn).unwrap();
    assert!(conn.query_row(r#"SELECT "no_such_column""#, [], |_| Ok(())).is_err());
    let writer = Connection::open_in_memory().unwrap();
    schema::configure_writer(&writer).unwrap();
    assert!(writer.query_row(r#"SELECT "no_such_column""#, [], |_| Ok(())).is_err());
}

/// SQLite's memory statistics (and the global mutex they take on every allocation) are off in a
/// process that opens a store. Checked in a fresh process, the only place where SQLite has not
/// been initialised by another test: this test binary runs itself again with a marker.
#[test]
fn memory_statistics_are_off() {
    const CHILD: &str = "STOCKORDER_SQLITE_MEMSTATUS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let (_dir, _store) = store();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (randomblob(100000));")
            .unwrap();
        // Non-operational when the statistics are off: it answers 0.
        assert_eq!(unsafe { rusqlite::ffi::sqlite3_memory_used() }, 0);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "adapter::outbound::sqlite::tests::memory_statistics_are_off",
            "--exact",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child ran the check"
    );
}

/// A cached statement is used again as compiled: none of the store's statements is compiled
/// anew on each use (see `rows::opaque`). Each runs several times, each time in its own
/// transaction, as the writer and the readers run them.
#[test]
fn cached_statements_are_not_compiled_again() {
    use crate::adapter::outbound::repository_suite::change;
    use crate::port::QueuePosition;
    use rusqlite::StatementStatus;
    let dir = tempfile::tempdir().unwrap();
    let conn = writer_connection(&dir.path().join("plan.db"));
    let queries: Vec<ListQuery> = every_filter().collect();
    for round in 0..5 {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut sequence = rows::Sequence::default();
        let o = order("AAPL", OrderSide::Buy, Some(&format!("key-{round}")));
        rows::insert(&conn, &o, sequence.next(&conn).unwrap()).unwrap();
        rows::append_created(&conn, &o).unwrap();
        let settled = order("AAPL", OrderSide::Buy, None);
        rows::insert(&conn, &settled, sequence.next(&conn).unwrap()).unwrap();
        rows::append_created(&conn, &settled).unwrap();
        sequence.store(&conn).unwrap();
        assert!(rows::settle(&conn, &change(&settled, OrderStatus::Filled)).unwrap());
        assert!(
            rows::by_client_order_id(&conn, o.client_order_id().as_ref().unwrap())
                .unwrap()
                .is_some()
        );
        assert!(rows::by_id(&conn, o.id()).unwrap().is_some());
        assert!(rows::settle(&conn, &change(&o, OrderStatus::Cancelled)).unwrap());
        rows::probe(&conn).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        rows::unprocessed(&conn, QueuePosition::START, 10 + round).unwrap();
        for q in &queries {
            rows::list(&conn, q, 20 + round).unwrap();
        }
    }
    let mut statements = vec![
        rows::INSERT.to_owned(),
        rows::APPEND_CREATED.to_owned(),
        rows::BY_ID.to_owned(),
        rows::BY_CLIENT_ORDER_ID.to_owned(),
        rows::SETTLE.to_owned(),
        rows::UNPROCESSED.to_owned(),
    ];
    statements.extend(queries.iter().map(|q| rows::list_sql(q, 1).0));
    for sql in statements {
        let compiled = conn
            .prepare_cached(&sql)
            .unwrap()
            .get_status(StatementStatus::RePrepare);
        // Once at most: the first use binds values the planner had not seen.
        assert!(compiled <= 1, "compiled again {compiled} times in 5 uses: {sql}");
    }
}

/// The writer's and the readers' point statements seek an index: none scans the table (the
/// `CAST`s of `rows::opaque` hide values from the planner, not columns).
#[test]
fn every_point_statement_is_an_index_seek() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("plan.db")).unwrap();
    schema::migrate(&mut conn).unwrap();
    for (sql, args) in [
        (rows::BY_ID, 1),
        (rows::BY_CLIENT_ORDER_ID, 1),
        (rows::SETTLE, 6),
        (rows::UNPROCESSED, 3),
    ] {
        let nulls = std::iter::repeat_n(rusqlite::types::Value::Null, args);
        let plan = query_plan(&conn, sql, rusqlite::params_from_iter(nulls));
        assert!(plan.starts_with("SEARCH "), "{sql} => {plan}");
        assert!(
            plan.contains("INDEX") || plan.contains("PRIMARY KEY"),
            "{sql} => {plan}"
        );
    }
}

/// The opcodes SQLite compiles `sql` (with `args` parameters) to, by name.
fn opcodes(conn: &Connection, sql: &str, args: usize) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
    let nulls = std::iter::repeat_n(rusqlite::types::Value::Null, args);
    stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Whether `sql` builds a temporary B-tree each time it runs.
fn builds_a_temporary_table(conn: &Connection, sql: &str, args: usize) -> bool {
    opcodes(conn, sql, args).iter().any(|op| op == "OpenEphemeral")
}

/// The statements of every create, fill and cancel build no temporary B-tree: SQLite builds
/// one per run for `IN` with more than two values (the status CHECK before
/// `schema::status_check_without_a_temporary_table`) and for `RETURNING` (the cancel's until it
/// read the order back by its key).
#[test]
fn creates_fills_and_cancels_build_no_temporary_table() {
    let dir = tempfile::tempdir().unwrap();
    let conn = writer_connection(&dir.path().join("plan.db"));
    for (sql, args) in [
        (rows::INSERT, 15),
        (rows::APPEND_CREATED, 14),
        (rows::SETTLE, 6),
        (rows::BY_ID, 1),
    ] {
        assert!(
            !builds_a_temporary_table(&conn, sql, args),
            "{sql} => {:?}",
            opcodes(&conn, sql, args)
        );
    }
}

/// A status change and the event its trigger appends compile to a statement that cannot stop
/// half-way and leave the rest of the transaction running: no `ABORT` (a constraint's halt with
/// P2 = 2) and no function call. Either would make SQLite copy each page the statement touches
/// into a statement journal first, which cost about as much as the event itself
/// (docs/performance.md).
#[test]
fn a_change_and_its_event_need_no_statement_journal() {
    let dir = tempfile::tempdir().unwrap();
    let conn = writer_connection(&dir.path().join("plan.db"));
    let mut stmt = conn.prepare(&format!("EXPLAIN {}", rows::SETTLE)).unwrap();
    let nulls = std::iter::repeat_n(rusqlite::types::Value::Null, 6);
    let program: Vec<(String, i64)> = stmt
        .query_map(rusqlite::params_from_iter(nulls), |r| Ok((r.get(1)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        program.iter().any(|(op, _)| op == "Program"),
        "the trigger is not in the statement: {program:?}"
    );
    for (op, p2) in &program {
        assert!(
            !(op.starts_with("Halt") && *p2 == 2),
            "{op} aborts the statement: {program:?}"
        );
        assert!(
            !op.ends_with("Func") && op != "Function",
            "{op} is a function call: {program:?}"
        );
    }
}

/// The trigger that appends a change's event lives in the writer's connection, not in the
/// file: a process holding the file without it (an older binary, during an upgrade's overlap)
/// appends its own events, so a change made there gets no second one.
#[tokio::test]
async fn the_event_trigger_is_not_in_the_file() {
    use crate::adapter::outbound::repository_suite::change;
    let (dir, store) = store();
    let o = order("AAPL", OrderSide::Buy, None);
    store.insert(o.clone()).await.unwrap();
    store
        .settle(vec![change(&o, OrderStatus::Filled)], Vec::new())
        .await
        .unwrap();
    let other = Connection::open(dir.path().join("orders.db")).unwrap();
    let triggers: i64 = other
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(triggers, 0);
    let p = order("AAPL", OrderSide::Buy, None);
    store.insert(p.clone()).await.unwrap();
    store.other_process_writes(true);
    other
        .execute(
            "UPDATE orders SET status = 'CANCELLED' WHERE id = ?1",
            [p.id().as_uuid().as_bytes()],
        )
        .unwrap();
    let kinds: Vec<(String, [u8; 16])> = other
        .prepare("SELECT kind, id FROM order_events ORDER BY sequence")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (a, b) = (o.id().as_uuid().into_bytes(), p.id().as_uuid().into_bytes());
    assert_eq!(
        kinds,
        [("created".into(), a), ("filled".into(), a), ("created".into(), b)],
        "the writer's events, and none for the other connection's change"
    );
    store.other_process_writes(false);
    store.close().await.unwrap();
}

/// The status CHECK is rewritten in a database an older binary made, while another connection
/// (the process still serving during an in-place upgrade) has the file open: that connection
/// then runs the new CHECK, which still refuses an unknown status, and the file is intact. The
/// schema version is the one older binaries know, so going back to one still works.
#[test]
fn the_status_check_is_rewritten_in_place_and_still_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let mut conn = Connection::open(&path).unwrap();
    schema::configure_writer(&conn).unwrap();
    schema::numbered_migrations(&mut conn).unwrap();
    let serving = Connection::open(&path).unwrap();
    schema::configure_writer(&serving).unwrap();
    let mut sequence = rows::Sequence::default();
    let before = order("AAPL", OrderSide::Buy, None);
    rows::insert(&serving, &before, sequence.next(&serving).unwrap()).unwrap();
    assert!(builds_a_temporary_table(&serving, rows::INSERT, 15));

    schema::migrate(&mut conn).unwrap();

    let table: String = conn
        .query_row("SELECT sql FROM sqlite_schema WHERE name = 'orders'", [], |r| r.get(0))
        .unwrap();
    assert!(!table.contains("status IN"), "{table}");
    assert!(table.contains("status = 'REJECTED'"), "{table}");
    // The connection open across the rewrite sees the schema change at its next statement,
    // and compiles its statements anew, with the new CHECK.
    let after = order("AAPL", OrderSide::Buy, None);
    rows::insert(&serving, &after, sequence.next(&serving).unwrap()).unwrap();
    assert!(!builds_a_temporary_table(&serving, rows::INSERT, 15));
    let bad = order("AAPL", OrderSide::Buy, None);
    rows::insert(&serving, &bad, 0).unwrap();
    let refused = serving.execute(
        "UPDATE orders SET status = 'LOST' WHERE id = ?1",
        [bad.id().as_uuid().as_bytes()],
    );
    assert!(
        refused.as_ref().is_err_and(|e| e.to_string().contains("CHECK")),
        "{refused:?}"
    );
    for o in [&before, &after, &bad] {
        assert_eq!(rows::by_id(&conn, o.id()).unwrap().as_ref(), Some(o));
    }
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 4, "a binary from before the rewrite still opens the file");
    // A second start: nothing left to do, and no schema change for the other connections.
    let cookie = |c: &Connection| -> i64 { c.pragma_query_value(None, "schema_version", |r| r.get(0)).unwrap() };
    let before_second_start = cookie(&conn);
    schema::migrate(&mut conn).unwrap();
    assert_eq!(cookie(&conn), before_second_start);
}

/// The orders the store keeps in memory (`recent`) are the orders in the file, after every kind
/// of write: an insert, the same key again, a cancel, a refused cancel, the processor's fill.
#[tokio::test]
async fn the_orders_kept_in_memory_are_those_in_the_file() {
    use crate::adapter::outbound::repository_suite::{cancel, change};
    let (dir, store) = store();
    let keyed = order("AAPL", OrderSide::Buy, Some("memo-1"));
    let cancelled = order("MSFT", OrderSide::Sell, None);
    let filled = order("GOOGL", OrderSide::Buy, None);
    for o in [&keyed, &cancelled, &filled] {
        store.insert(o.clone()).await.unwrap();
    }
    let again = order("AAPL", OrderSide::Buy, Some("memo-1"));
    assert_eq!(store.insert(again).await.unwrap(), Inserted::Existing(keyed.clone()));
    store.change_status(cancel(cancelled.id())).await.unwrap();
    store.change_status(cancel(cancelled.id())).await.unwrap(); // refused: cancelled already
    let fill = change(&filled, OrderStatus::Filled);
    assert_eq!(store.settle(vec![fill], Vec::new()).await.unwrap(), vec![true]);

    let file = Connection::open(dir.path().join("orders.db")).unwrap();
    for id in [keyed.id(), cancelled.id(), filled.id()] {
        // Twice: a read that missed the cache may have added the order to it.
        for _ in 0..2 {
            assert_eq!(store.get(id).await.unwrap(), rows::by_id(&file, id).unwrap());
        }
    }
    assert_eq!(
        store.get(filled.id()).await.unwrap().unwrap().status(),
        OrderStatus::Filled
    );
    assert_eq!(
        store.get(cancelled.id()).await.unwrap().unwrap().status(),
        OrderStatus::Cancelled
    );
    store.close().await.unwrap();
}

/// While another process may write to the file (an upgrade's overlap), its changes are seen at
/// once: nothing is answered from memory, then or after.
#[tokio::test]
async fn changes_by_another_process_are_seen_while_it_may_write() {
    let (dir, store) = store();
    let o = order("AAPL", OrderSide::Buy, None);
    store.insert(o.clone()).await.unwrap();
    assert_eq!(store.get(o.id()).await.unwrap().unwrap().status(), OrderStatus::Pending);
    store.other_process_writes(true);
    let other = Connection::open(dir.path().join("orders.db")).unwrap();
    other
        .execute(
            "UPDATE orders SET status = 'CANCELLED' WHERE id = ?1",
            [o.id().as_uuid().as_bytes()],
        )
        .unwrap();
    assert_eq!(
        store.get(o.id()).await.unwrap().unwrap().status(),
        OrderStatus::Cancelled
    );
    store.other_process_writes(false);
    assert_eq!(
        store.get(o.id()).await.unwrap().unwrap().status(),
        OrderStatus::Cancelled
    );
    store.close().await.unwrap();
}

/// Reads racing a change never leave an old order behind: once the change is acknowledged,
/// every read sees it, however the readers' cache additions interleaved with the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_an_acknowledged_change_sees_it_despite_racing_reads() {
    use crate::adapter::outbound::repository_suite::{cancel, change};
    let (_dir, store) = store();
    for round in 0..500 {
        let o = order("RACE", OrderSide::Buy, None);
        let id = o.id();
        store.insert(o.clone()).await.unwrap();
        store.other_process_writes(false); // empties the cache: the readers below read the file
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (store, stop) = (store.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        store.get(id).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let to = if round % 2 == 0 {
            store.change_status(cancel(o.id())).await.unwrap();
            OrderStatus::Cancelled
        } else {
            store
                .settle(vec![change(&o, OrderStatus::Filled)], Vec::new())
                .await
                .unwrap();
            OrderStatus::Filled
        };
        for _ in 0..20 {
            assert_eq!(store.get(o.id()).await.unwrap().unwrap().status(), to, "round {round}");
            tokio::task::yield_now().await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.await.unwrap();
        }
        assert_eq!(
            store.get(o.id()).await.unwrap().unwrap().status(),
            to,
            "round {round}, after"
        );
    }
    store.close().await.unwrap();
}

/// Pruning keeps the newest events by count and by age, a bounded chunk at a time, and never
/// the newest one: the next event follows its number, so no number is given twice, and a
/// client that was away too long is told where the log starts.
#[tokio::test]
async fn pruning_bounds_the_log_and_never_reuses_a_number() {
    let (dir, store) = store();
    for _ in 0..10 {
        store.insert(order("PRUNE", OrderSide::Buy, None)).await.unwrap();
    }
    let conn = Connection::open(dir.path().join("orders.db")).unwrap();
    let far_past = 0;
    assert_eq!(rows::prune_events(&conn, 4, far_past, 3).unwrap(), 3, "at most a chunk");
    assert_eq!(
        rows::prune_events(&conn, 4, far_past, 100).unwrap(),
        3,
        "down to the newest 4"
    );
    let bounds = store.event_bounds().await.unwrap();
    assert_eq!((bounds.first, bounds.last), (7, 10));
    assert!(!bounds.can_resume_after(5) && bounds.can_resume_after(6) && bounds.can_resume_after(0));

    // Everything is older than "now": all but the newest goes, and the next event is 11.
    let now = crate::domain::Timestamp::now().unix_micros() + 1;
    assert_eq!(rows::prune_events(&conn, 1_000_000, now, 100).unwrap(), 3);
    store.insert(order("PRUNE", OrderSide::Buy, None)).await.unwrap();
    let left: Vec<u64> = store
        .events(0, None, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(left, [10, 11]);
}

/// Counts what a store reports through the [`StoreMetrics`] port.
#[derive(Default)]
struct CountedCommits(std::sync::Mutex<Vec<(&'static str, usize)>>);

impl StoreMetrics for CountedCommits {
    fn commit(&self, backend: &'static str, writes: usize, _took: std::time::Duration) {
        self.0.lock().unwrap().push((backend, writes));
    }
}

#[tokio::test]
async fn commits_are_reported_to_the_metrics_the_store_was_opened_with() {
    let dir = tempfile::tempdir().unwrap();
    let counted = Arc::new(CountedCommits::default());
    let store = SqliteStore::open_taking_over(
        dir.path().join("orders.db"),
        None,
        EventRetention::default(),
        Arc::clone(&counted) as Arc<dyn StoreMetrics>,
    )
    .unwrap();
    let placed = order("AAPL", OrderSide::Buy, None);
    store.insert(placed.clone()).await.unwrap();
    store
        .change_status(StatusChange::cancel(placed.id(), crate::domain::Timestamp::now()))
        .await
        .unwrap();
    let reported = counted.0.lock().unwrap().clone();
    assert_eq!(
        reported.iter().map(|(_, writes)| writes).sum::<usize>(),
        2,
        "{reported:?}"
    );
    assert!(reported.iter().all(|(backend, _)| *backend == "sqlite"));
}
