//! Connection settings and versioned migrations.

use rusqlite::Connection;

pub use crate::adapter::outbound::migration::MigrationError;

/// Migrations in order; `PRAGMA user_version` records how many have run. Append only: a
/// released migration never changes, so every database reaches the same schema.
const MIGRATIONS: &[&str] = &[
    // 1: orders. WITHOUT ROWID with the 16-byte UUIDv7 as primary key: a get is one seek, new
    // rows append at the right edge of the tree, and "newest first" is the key order itself.
    // Each filter of the list endpoint has an index ending in `id`, so a filtered page is a
    // seek plus `limit` steps whatever the table size. The idempotency key index is partial:
    // most orders have no key, and indexing their NULLs would cost every create a B-tree insert.
    "CREATE TABLE orders (
        id              BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
        client_order_id TEXT,
        symbol          TEXT NOT NULL,
        order_type      TEXT NOT NULL CHECK (order_type IN ('MARKET', 'LIMIT')),
        order_side      TEXT NOT NULL CHECK (order_side IN ('BUY', 'SELL')),
        quantity        INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 2147483647),
        price           REAL CHECK (price IS NULL OR price > 0),
        status          TEXT NOT NULL CHECK (status IN ('PENDING', 'FILLED', 'CANCELLED', 'REJECTED')),
        description     TEXT,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX orders_by_client_order_id ON orders (client_order_id) WHERE client_order_id IS NOT NULL;
    CREATE INDEX orders_by_status ON orders (status, id);
    CREATE INDEX orders_by_symbol ON orders (symbol, id);
    CREATE INDEX orders_by_side ON orders (order_side, id);",
    // 2: the order lifecycle. Execution details, and the processor's queue: a pending order
    // not yet decided is in `orders_unprocessed` (a partial index holding exactly the work to
    // do, so a claim is a seek however many orders exist); one the processor decided to leave
    // resting (a limit not reached) gets `rests = 1` and leaves the index while staying PENDING.
    "ALTER TABLE orders ADD COLUMN fill_price REAL CHECK (fill_price IS NULL OR fill_price > 0);
    ALTER TABLE orders ADD COLUMN filled_at INTEGER;
    ALTER TABLE orders ADD COLUMN cancelled_at INTEGER;
    ALTER TABLE orders ADD COLUMN rests INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX orders_unprocessed ON orders (id) WHERE status = 'PENDING' AND rests = 0;",
    // 3: the storage probe: while writes fail, the service commits this one row now and then to
    // learn when they work again, without touching an order.
    "CREATE TABLE storage_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);",
    // 4: the processor's queue without a write per resting order. Every order gets `seq`, its
    // number in commit order, given inside the write transaction from `order_seq` (so orders
    // of another process writing the same file, as in an in-place upgrade, are numbered in the
    // same sequence). The queue is `orders_queue`, every pending order by (seq, id); the
    // processor walks it with a cursor, and a resting order stays in it untouched, behind the
    // cursor. Orders stored before this migration keep seq 0 and come first, by id. `rests`
    // and `orders_unprocessed` are no longer used.
    "ALTER TABLE orders ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    DROP INDEX orders_unprocessed;
    CREATE INDEX orders_queue ON orders (seq, id) WHERE status = 'PENDING';
    CREATE TABLE order_seq (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
    INSERT INTO order_seq (id, last) VALUES (1, 0);",
];

/// The order event log (outbox). Each row is the order as it was right after one change,
/// appended in the transaction that made the change. `sequence` is the rowid: the newest plus
/// one, allocated by the one writer (or, in an in-place upgrade's overlap, under SQLite's
/// write lock) in commit order. A number is never given twice because pruning never deletes
/// the newest event, so the newest number never goes back (what `AUTOINCREMENT` would also
/// ensure, at the price of a second table updated on every insert). No index on `symbol`: a
/// follower of one symbol reads forward from its cursor, and one more B-tree per event cost
/// every create. (The kind CHECK is written with `OR`: an `IN` list builds a temporary B-tree
/// per insert, see [`status_check_without_a_temporary_table`].)
///
/// Additive and not numbered: a binary from before it still opens the file (it writes orders
/// without events), so an upgrade can be rolled back.
const EVENT_LOG: &str = "CREATE TABLE IF NOT EXISTS order_events (
        sequence        INTEGER PRIMARY KEY,
        kind            TEXT NOT NULL CHECK (kind = 'created' OR kind = 'filled' OR kind = 'cancelled' OR kind = 'rejected'),
        id              BLOB NOT NULL,
        client_order_id TEXT,
        symbol          TEXT NOT NULL,
        order_type      TEXT NOT NULL,
        order_side      TEXT NOT NULL,
        quantity        INTEGER NOT NULL,
        price           REAL,
        status          TEXT NOT NULL,
        description     TEXT,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        fill_price      REAL,
        filled_at       INTEGER,
        cancelled_at    INTEGER
    );";

/// The event of every status change, appended by the writer's connection inside the `UPDATE`
/// that makes the change ([`rows::SETTLE`](super::rows::SETTLE)): the row as it now is, with no
/// statement of its own to run and nothing to read back.
///
/// `TEMP`: the trigger lives in the writing connection, not in the file. A binary from before
/// it still appends its own events, so during an in-place upgrade's overlap, when the old and
/// the new process write the same file, each change gets exactly one event whoever makes it.
/// The kind follows from the new status: a change only ever leaves PENDING (`domain::Happened`).
pub(super) const EVENT_TRIGGER: &str = "CREATE TEMP TRIGGER IF NOT EXISTS order_changed
    AFTER UPDATE OF status ON main.orders WHEN NEW.status IS NOT OLD.status
    BEGIN
        INSERT INTO order_events (kind, id, client_order_id, symbol, order_type, order_side, quantity, price,
                                  status, description, created_at, updated_at, fill_price, filled_at, cancelled_at)
        VALUES (CASE NEW.status WHEN 'FILLED' THEN 'filled' WHEN 'CANCELLED' THEN 'cancelled' ELSE 'rejected' END,
                NEW.id, NEW.client_order_id, NEW.symbol, NEW.order_type, NEW.order_side, NEW.quantity, NEW.price,
                NEW.status, NEW.description, NEW.created_at, NEW.updated_at, NEW.fill_price, NEW.filled_at,
                NEW.cancelled_at);
    END;";

/// Installs [`EVENT_TRIGGER`] on the writer's connection, after the migrations made the tables
/// it names. (Built with `no-event-log`, bench/events' A/B only: nothing.)
pub(super) fn append_events_of_changes(conn: &Connection) -> rusqlite::Result<()> {
    if cfg!(feature = "no-event-log") {
        return Ok(());
    }
    conn.execute_batch(EVENT_TRIGGER)
}

/// The schema version this binary writes.
pub(super) const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// "Double-quoted strings" are identifiers only, as in SQL: a misspelt column in double quotes
/// is an error instead of a string. (What `SQLITE_DQS=0` does at compile time, set per
/// connection, so the build needs no flags of ours.)
fn strict_quotes(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::config::DbConfig;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DDL, false)?;
    Ok(())
}

/// Turns off SQLite's memory statistics, process-wide, before SQLite initialises (the first
/// connection does that; later calls do nothing). The statistics take a global mutex on every
/// SQLite allocation, which the writer thread and the readers otherwise contend on (measured:
/// ~9x more context switches per GET than a bare axum handler). This is `SQLITE_DEFAULT_MEMSTATUS=0`
/// set at run time, so the bundled SQLite builds the same from any directory (a
/// `LIBSQLITE3_FLAGS` in `.cargo/config.toml` applied only inside the repository, and rebuilt
/// SQLite whenever it was or was not seen).
pub(super) fn before_first_connection() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is variadic; SQLITE_CONFIG_MEMSTATUS takes one int. It is only
        // allowed before sqlite3_initialize, and returns SQLITE_MISUSE otherwise (no harm done).
        let rc = unsafe { rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int) };
        if rc != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(rc, "SQLite was initialised already: its memory statistics stay on");
        }
    });
}

/// Settings for the one writing connection. WAL lets readers run beside the writer;
/// `synchronous = FULL` fsyncs the WAL on every commit, which is what makes an acknowledged
/// order survive a power cut, and is affordable because commits are batched.
pub(super) fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    strict_quotes(conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 5_000)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// Settings for read connections: they may never write, and wait rather than fail when a
/// checkpoint holds a lock for a moment.
pub(super) fn configure_reader(conn: &Connection) -> rusqlite::Result<()> {
    strict_quotes(conn)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "busy_timeout", 5_000)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Refuses a file this binary must not write to, before anything changes it (even the switch to
/// WAL mode, which rewrites the header): one migrated by a newer binary, or another
/// application's database.
pub(super) fn check_owner(conn: &Connection) -> Result<(), MigrationError> {
    let failed = MigrationError::failed;
    let found = version(conn)?;
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .map_err(failed(0))?;
    let tables: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .and_then(Iterator::collect)
        .map_err(failed(0))?;
    // Ours: empty (new), or migrated (a version set and the orders table there).
    let ours = tables.is_empty() || (found > 0 && tables.iter().any(|t| t == "orders"));
    if !ours {
        return Err(MigrationError::Foreign {
            tables: tables.join(", "),
        });
    }
    Ok(())
}

/// The schema version the file records, refusing one newer than this binary writes.
fn version(conn: &Connection) -> Result<usize, MigrationError> {
    let found = conn
        .pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
        .map_err(MigrationError::failed(0))? as usize;
    if found > SCHEMA_VERSION {
        return Err(MigrationError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

/// Runs every migration the database has not seen yet, each in its own transaction, creates the
/// event log if it is not there ([`EVENT_LOG`]), then the rewrite of the status CHECK
/// ([`status_check_without_a_temporary_table`]).
pub(super) fn migrate(conn: &mut Connection) -> Result<(), MigrationError> {
    let new_file = version(conn)? == 0;
    numbered_migrations(conn)?;
    conn.execute_batch(EVENT_LOG)
        .map_err(|source| MigrationError::Rewrite {
            what: "the order event log",
            source: Box::new(source),
        })?;
    let rewrote = status_check_without_a_temporary_table(conn).map_err(|source| MigrationError::Rewrite {
        what: "the orders table's status CHECK",
        source: Box::new(source),
    })?;
    // On a file created just now the rewrite is part of making it: nothing to tell an operator.
    if rewrote && !new_file {
        tracing::info!("rewrote the orders table's status CHECK as comparisons (no temporary table per write)");
    }
    Ok(())
}

/// Runs the numbered migrations the database has not seen yet: [`migrate`] without the
/// rewrite, and the tests' way to make a database as an older binary left it.
pub(super) fn numbered_migrations(conn: &mut Connection) -> Result<(), MigrationError> {
    let failed = MigrationError::failed;
    let found = version(conn)?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        let version = index + 1;
        let tx = conn.transaction().map_err(failed(version))?;
        tx.execute_batch(sql).map_err(failed(version))?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(failed(version))?;
        tx.commit().map_err(failed(version))?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}

/// The orders table's `status IN ('PENDING', …)` CHECK rewritten as the same test with `=` and
/// `OR`, once, at the first start of a binary that has this function. SQLite evaluates `x IN
/// (a list of more than two values)` by building a temporary B-tree of the list each time a
/// statement runs: every insert and every status change opened, filled and dropped one.
/// The comparisons compile to four opcodes. Instructions per request (bench/run's callgrind):
/// a resting create 116k -> 99k, a market create and its fill 152k -> 116k.
///
/// Why an edit of the stored schema rather than a copy of the table (SQLite cannot alter a
/// CHECK): SQLite documents this edit (`PRAGMA writable_schema`, then its `schema_version`
/// cookie bumped so every connection reloads the schema) for removing CHECK constraints, among
/// other changes that leave the stored rows as they are. Replacing a CHECK with one that
/// accepts exactly the same rows is such a change: no row becomes invalid, nothing on disk
/// moves. A copy would rewrite every order and every index, holding the write lock throughout:
/// with a large table, long enough to fail the writes of the process still serving during an
/// in-place upgrade. Here the lock is held for one row of `sqlite_schema`, and that process's
/// connections pick up the new CHECK at their next statement.
///
/// Why not a numbered migration: `user_version` tells a binary whether it may open the file,
/// and every binary reads this table the same with either CHECK. A new version number would
/// make the binaries before it refuse the file, so that going back to one after an upgrade
/// would fail for no reason.
///
/// Idempotent: the rewrite happens in a write transaction, only if the old text is there; a
/// failure rolls it back and leaves the schema as it was. Returns whether it rewrote.
fn status_check_without_a_temporary_table(conn: &mut Connection) -> rusqlite::Result<bool> {
    const IN_LIST: &str = "status IN ('PENDING', 'FILLED', 'CANCELLED', 'REJECTED')";
    const COMPARISONS: &str = "status = 'PENDING' OR status = 'FILLED' OR status = 'CANCELLED' OR status = 'REJECTED'";
    const ORDERS_WITH_IN_LIST: &str = "type = 'table' AND name = 'orders' AND instr(sql, ?1) > 0";
    let has_in_list = |conn: &Connection| -> rusqlite::Result<bool> {
        conn.query_row(
            &format!("SELECT count(*) FROM sqlite_schema WHERE {ORDERS_WITH_IN_LIST}"),
            [IN_LIST],
            |row| row.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    // Every start but the first: one read, no write lock.
    if !has_in_list(conn)? {
        return Ok(false);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Another process may have done it meanwhile (two starting together).
    if !has_in_list(&tx)? {
        return Ok(false);
    }
    let version: i64 = tx.pragma_query_value(None, "schema_version", |row| row.get(0))?;
    tx.pragma_update(None, "writable_schema", true)?;
    tx.execute(
        &format!("UPDATE sqlite_schema SET sql = replace(sql, ?1, ?2) WHERE {ORDERS_WITH_IN_LIST}"),
        [IN_LIST, COMPARISONS],
    )?;
    tx.pragma_update(None, "schema_version", version + 1)?;
    // Off again, and this connection's schema reloaded from the edited text: a text that did
    // not parse would fail here, inside the transaction, and be rolled back.
    tx.execute_batch("PRAGMA writable_schema = RESET; SELECT status FROM orders LIMIT 0;")?;
    tx.commit()?;
    Ok(true)
}
