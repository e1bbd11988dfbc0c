//! The PostgreSQL schema and its versioned migrations.

use tokio_postgres::Client;

pub use crate::adapter::outbound::migration::MigrationError;

/// Migrations in order; the `stockorder_schema` table records how many have run. Append only,
/// as for SQLite. The table mirrors the SQLite one column for column, with native types
/// (`uuid`, `timestamptz`, `boolean`).
const MIGRATIONS: &[&str] = &[
    // 1: orders, with the lifecycle columns of SQLite's migration 2 from the start, and
    // `claimed_until`: the processor's lease. Several replicas poll one queue; a claim sets the
    // lease (taking rows with `FOR UPDATE SKIP LOCKED`, so concurrent claims never wait on or
    // return each other's rows), and a replica that dies holding a batch only delays it until
    // the lease runs out. Each filter of the list endpoint has an index ending in `id`, so a
    // page is an index scan of `limit` entries whatever the table size.
    "CREATE TABLE orders (
        id              uuid PRIMARY KEY,
        client_order_id text,
        symbol          text NOT NULL,
        order_type      text NOT NULL CHECK (order_type IN ('MARKET', 'LIMIT')),
        order_side      text NOT NULL CHECK (order_side IN ('BUY', 'SELL')),
        quantity        integer NOT NULL CHECK (quantity >= 1),
        price           double precision CHECK (price IS NULL OR price > 0),
        status          text NOT NULL CHECK (status IN ('PENDING', 'FILLED', 'CANCELLED', 'REJECTED')),
        description     text,
        created_at      timestamptz NOT NULL,
        updated_at      timestamptz NOT NULL,
        fill_price      double precision CHECK (fill_price IS NULL OR fill_price > 0),
        filled_at       timestamptz,
        cancelled_at    timestamptz,
        rests           boolean NOT NULL DEFAULT false,
        claimed_until   timestamptz
    );
    CREATE UNIQUE INDEX orders_by_client_order_id ON orders (client_order_id) WHERE client_order_id IS NOT NULL;
    CREATE INDEX orders_by_status ON orders (status, id);
    CREATE INDEX orders_by_symbol ON orders (symbol, id);
    CREATE INDEX orders_by_side ON orders (order_side, id);
    CREATE INDEX orders_unprocessed ON orders (id) WHERE status = 'PENDING' AND NOT rests;",
    // 2: the storage probe: while writes fail, replicas commit this one row now and then to
    // learn when they work again, without touching an order.
    "CREATE TABLE storage_probe (id integer PRIMARY KEY CHECK (id = 1), at timestamptz NOT NULL);",
    // 3: the order event log (outbox), and the ordering trap it avoids. A number given when an
    // event is written (a `bigserial`) follows the order writes *start*, not the order they
    // commit: the transaction holding 10 can commit after the one holding 11 is visible, and a
    // reader that delivered 11 would resume "after 11" and skip 10 for ever. So an event is
    // written with `position` only (insertion order, never shown) and `sequence` NULL; the
    // publisher (see `events.rs`) numbers committed events, one replica at a time, from the
    // counter `order_event_seq`. Numbers are given only to what has committed, each round above
    // the last, so a reader can never see N + 1 before N.
    "CREATE TABLE order_events (
        position        bigserial PRIMARY KEY,
        sequence        bigint UNIQUE,
        kind            text NOT NULL CHECK (kind IN ('created', 'filled', 'cancelled', 'rejected')),
        id              uuid NOT NULL,
        client_order_id text,
        symbol          text NOT NULL,
        order_type      text NOT NULL,
        order_side      text NOT NULL,
        quantity        integer NOT NULL,
        price           double precision,
        status          text NOT NULL,
        description     text,
        created_at      timestamptz NOT NULL,
        updated_at      timestamptz NOT NULL,
        fill_price      double precision,
        filled_at       timestamptz,
        cancelled_at    timestamptz
    );
    CREATE INDEX order_events_unpublished ON order_events (position) WHERE sequence IS NULL;
    CREATE INDEX order_events_by_symbol ON order_events (symbol, sequence);
    CREATE TABLE order_event_seq (id integer PRIMARY KEY CHECK (id = 1), last bigint NOT NULL);
    INSERT INTO order_event_seq (id, last) VALUES (1, 0);",
];

/// The schema version this binary writes.
pub(super) const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Runs every migration the database has not seen yet, in one transaction under an advisory
/// lock: replicas starting together migrate once, and the others wait and find it done.
pub(super) async fn migrate(client: &mut Client) -> Result<(), MigrationError> {
    let failed = MigrationError::failed;
    let tx = client.transaction().await.map_err(failed(0))?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtext('stockorder migrate'));
         CREATE TABLE IF NOT EXISTS stockorder_schema (version integer NOT NULL);",
    )
    .await
    .map_err(failed(0))?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM stockorder_schema", &[])
        .await
        .map_err(failed(0))?
        .get(0);
    let found = found as usize;
    if found > SCHEMA_VERSION {
        // End the transaction (and its advisory lock) now, not whenever the pool next
        // touches this connection.
        tx.rollback().await.map_err(failed(0))?;
        return Err(MigrationError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        let version = index + 1;
        tx.batch_execute(sql).await.map_err(failed(version))?;
        tx.execute(
            "INSERT INTO stockorder_schema (version) VALUES ($1)",
            &[&(version as i32)],
        )
        .await
        .map_err(failed(version))?;
        tracing::info!(version, "applied database migration");
    }
    tx.commit().await.map_err(failed(SCHEMA_VERSION))
}
