//! SQL text and the mapping between rows and [`StockOrder`]s, shared by the writer and readers.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use crate::domain::{ClientOrderId, OrderEvent, OrderId, Price, Quantity, StockOrder, StoredOrder, Symbol, Timestamp};
use crate::port::{EventBounds, ListQuery, QueuePosition, Queued};

/// The order columns in the order `order_from_row` reads them, as a literal so the fixed
/// statements below are `&'static str`: a GET looks its statement up in the cache without
/// formatting the SQL text first.
macro_rules! columns {
    () => {
        "id, client_order_id, symbol, order_type, order_side, quantity, price, status, description, created_at, updated_at, fill_price, filled_at, cancelled_at"
    };
}

/// A parameter SQLite does not look into when it plans the statement: `CAST(?n AS type)`.
///
/// Why: where a bound value could change the plan (a plain `LIMIT ?`; a `column = ?` next to a
/// partial index, which the value might or might not match), SQLite marks the statement to be
/// compiled again whenever that parameter is bound anew. rusqlite clears the bindings of every
/// statement it returns to its cache, so each use of such a cached statement was compiled again,
/// at many times the cost of running it (docs/performance.md). None of
/// our plans depends on a value: each query seeks one index in key order
/// (`every_list_query_is_an_index_seek`, `cached_statements_are_not_compiled_again`).
macro_rules! opaque {
    ($ty:literal) => {
        concat!("CAST(? AS ", $ty, ")")
    };
    ($n:literal, $ty:literal) => {
        concat!("CAST(?", $n, " AS ", $ty, ")")
    };
}

/// A row that does not decode is reported, not unwrapped: a file edited by hand must not crash
/// the server.
fn corrupt(what: &str, value: impl std::fmt::Debug) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("stored {what} {value:?} is not valid").into(),
    )
}

fn order_from_row(row: &Row<'_>) -> rusqlite::Result<StockOrder> {
    let id: [u8; 16] = row.get(0)?;
    let client_order_id: Option<String> = row.get(1)?;
    let symbol: String = row.get(2)?;
    let order_type: String = row.get(3)?;
    let order_side: String = row.get(4)?;
    let quantity: i64 = row.get(5)?;
    let price: Option<f64> = row.get(6)?;
    let status: String = row.get(7)?;
    let created_at: i64 = row.get(9)?;
    let updated_at: i64 = row.get(10)?;
    let fill_price: Option<f64> = row.get(11)?;
    let filled_at: Option<i64> = row.get(12)?;
    let cancelled_at: Option<i64> = row.get(13)?;
    let instant = |what: &str, micros: i64| Timestamp::from_unix_micros(micros).ok_or_else(|| corrupt(what, micros));
    Ok(StockOrder::restore(StoredOrder {
        id: OrderId::from_uuid(Uuid::from_bytes(id)),
        client_order_id: client_order_id
            .map(|k| ClientOrderId::parse(&k).map_err(|_| corrupt("client_order_id", k)))
            .transpose()?,
        symbol: Symbol::parse(&symbol).map_err(|_| corrupt("symbol", &symbol))?,
        order_type: order_type.parse().map_err(|_| corrupt("order_type", &order_type))?,
        order_side: order_side.parse().map_err(|_| corrupt("order_side", &order_side))?,
        quantity: Quantity::parse(quantity).map_err(|_| corrupt("quantity", quantity))?,
        price: price
            .map(|p| Price::parse(p).map_err(|_| corrupt("price", p)))
            .transpose()?,
        status: status.parse().map_err(|_| corrupt("status", &status))?,
        description: row.get(8)?,
        created_at: instant("created_at", created_at)?,
        updated_at: instant("updated_at", updated_at)?,
        fill_price: fill_price
            .map(|p| Price::parse(p).map_err(|_| corrupt("fill_price", p)))
            .transpose()?,
        filled_at: filled_at.map(|t| instant("filled_at", t)).transpose()?,
        cancelled_at: cancelled_at.map(|t| instant("cancelled_at", t)).transpose()?,
    }))
}

pub(super) const INSERT: &str = concat!(
    "INSERT INTO orders (",
    columns!(),
    ", seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
);

/// Runs one of the fixed transaction-control statements (`BEGIN …`, `COMMIT`, `ROLLBACK`)
/// from the statement cache.
///
/// Why not `execute_batch` or rusqlite's `Transaction`: they compile the statement from its
/// text every time, and the writer's batches and the readers' snapshots (a read renews its
/// snapshot after every commit) run these all the time.
pub(super) fn control(conn: &Connection, sql: &'static str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// The parameters of a statement that writes order `o`'s columns (`columns!()`, in that
/// order), then `extra`: the order's row and its `created` event bind the same values.
macro_rules! order_params {
    ($o:expr $(, $extra:expr)*) => {
        params![
            $o.id().as_uuid().as_bytes(),
            $o.client_order_id().map(ClientOrderId::as_str),
            $o.symbol().as_str(),
            $o.order_type().as_str(),
            $o.order_side().as_str(),
            $o.quantity().get(),
            $o.price().map(Price::get),
            $o.status().as_str(),
            $o.description(),
            $o.created_at().unix_micros(),
            $o.updated_at().unix_micros(),
            $o.fill_price().map(Price::get),
            $o.filled_at().map(|t| t.unix_micros()),
            $o.cancelled_at().map(|t| t.unix_micros()),
            $($extra,)*
        ]
    };
}

/// Stores `o` as number `seq` of the processor's queue (see [`Sequence`]).
pub(super) fn insert(conn: &Connection, o: &StockOrder, seq: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(INSERT)?.execute(order_params!(o, seq)).map(drop)
}

/// Orders' numbers in commit order, given inside the open write transaction: the last number
/// is read from `order_seq` at the transaction's first insert and written back before it
/// commits, one read and one write per transaction however many orders it holds. The write
/// lock is held from `BEGIN IMMEDIATE` to `COMMIT`, so numbers follow commit order, across
/// processes too: a reader that has seen number N will see every later commit above N.
#[derive(Debug, Default)]
pub(super) struct Sequence {
    /// The last number given in this transaction, once one has been.
    last: Option<i64>,
}

impl Sequence {
    /// The next number.
    pub(super) fn next(&mut self, conn: &Connection) -> rusqlite::Result<i64> {
        let last = match self.last {
            Some(last) => last,
            None => conn
                .prepare_cached("SELECT last FROM order_seq WHERE id = 1")?
                .query_row([], |row| row.get(0))?,
        };
        self.last = Some(last + 1);
        Ok(last + 1)
    }

    /// Writes the last number given back, before the commit; nothing when none was given.
    pub(super) fn store(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if let Some(last) = self.last.take() {
            conn.prepare_cached("UPDATE order_seq SET last = ?1 WHERE id = 1")?
                .execute([last])?;
        }
        Ok(())
    }
}

pub(super) const BY_ID: &str = concat!("SELECT ", columns!(), " FROM orders WHERE id = ?1");

pub(super) fn by_id(conn: &Connection, id: OrderId) -> rusqlite::Result<Option<StockOrder>> {
    let mut stmt = conn.prepare_cached(BY_ID)?;
    stmt.query_row([id.as_uuid().as_bytes()], order_from_row).optional()
}

pub(super) const BY_CLIENT_ORDER_ID: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM orders WHERE client_order_id = ",
    opaque!(1, "TEXT")
);

pub(super) fn by_client_order_id(conn: &Connection, key: &ClientOrderId) -> rusqlite::Result<Option<StockOrder>> {
    let mut stmt = conn.prepare_cached(BY_CLIENT_ORDER_ID)?;
    stmt.query_row([key.as_str()], order_from_row).optional()
}

/// The conditional status change: to `?1` only if the order is still in `?5`. A change to
/// FILLED records the fill price and `filled_at`, one to CANCELLED `cancelled_at`.
///
/// `OR ROLLBACK`: the writer's [`schema::EVENT_TRIGGER`](super::schema::EVENT_TRIGGER) appends
/// the change's event inside this statement. A statement that writes two tables and may fail
/// half-way with `ABORT` (the default) makes SQLite copy every page it touches into a
/// statement journal first, to undo just that statement: measured, that cost about as much as
/// the event itself. With `ROLLBACK` a failure ends the whole transaction instead (SQLite does the
/// same for a full disk), which the writer answers by failing its batch: a change is never
/// committed without its event. The constraints cannot fail for a change the domain made.
///
/// Why no `RETURNING` for the API's cancel, which answers with the changed order: `RETURNING`
/// makes SQLite gather the row in a temporary table it builds for each run, which costs more
/// than reading the row again by its key ([`by_id`], in the same transaction), as measured in
/// docs/performance.md.
pub(super) const SETTLE: &str = concat!(
    "UPDATE OR ROLLBACK orders SET status = ?1, description = coalesce(?2, description), updated_at = ?3,
            fill_price = coalesce(?6, fill_price),
            filled_at = CASE WHEN ?1 = 'FILLED' THEN ?3 ELSE filled_at END,
            cancelled_at = CASE WHEN ?1 = 'CANCELLED' THEN ?3 ELSE cancelled_at END
     WHERE id = ?4 AND status = ",
    opaque!(5, "TEXT")
);

/// Applies `change` if the order is still in `change.from`; whether it was.
pub(super) fn settle(conn: &Connection, change: &crate::domain::StatusChange) -> rusqlite::Result<bool> {
    let changed = conn.prepare_cached(SETTLE)?.execute(change_params(change))?;
    Ok(changed == 1)
}

/// The parameters of [`SETTLE`].
fn change_params(change: &crate::domain::StatusChange) -> impl rusqlite::Params + '_ {
    (
        change.to().as_str(),
        change.description(),
        change.at().unix_micros(),
        change.id().as_uuid().into_bytes(),
        change.from().as_str(),
        change.fill_price().map(Price::get),
    )
}

/// Up to `limit` pending orders after `after` in queue order, each with its position: a seek
/// into `orders_queue`, which holds the pending orders only.
pub(super) fn unprocessed(conn: &Connection, after: QueuePosition, limit: u32) -> rusqlite::Result<Vec<Queued>> {
    let mut stmt = conn.prepare_cached(UNPROCESSED)?;
    let rows = stmt.query_map(params![after.seq, after.id.as_uuid().as_bytes(), limit], |row| {
        let order = order_from_row(row)?;
        Ok(Queued {
            position: QueuePosition {
                seq: row.get(14)?,
                id: order.id(),
            },
            order,
        })
    })?;
    rows.collect()
}

pub(super) const UNPROCESSED: &str = concat!(
    "SELECT ",
    columns!(),
    ", seq FROM orders INDEXED BY orders_queue
     WHERE status = 'PENDING' AND (seq, id) > (?1, ?2) ORDER BY seq, id LIMIT ",
    opaque!(3, "INTEGER")
);

/// The list statement for this combination of filters. Only the filters present appear in the
/// SQL (no `? IS NULL OR …`), so SQLite can pick the matching index; the text is stable per
/// combination, so the statement cache holds at most 16 variants.
pub(super) fn list_sql(query: &ListQuery, limit: u32) -> (String, Vec<Value>) {
    let mut conditions = Vec::new();
    let mut args = Vec::new();
    if let Some(status) = query.status {
        conditions.push(concat!("status = ", opaque!("TEXT")));
        args.push(Value::Text(status.as_str().to_owned()));
    }
    if let Some(symbol) = &query.symbol {
        conditions.push(concat!("symbol = ", opaque!("TEXT")));
        args.push(Value::Text(symbol.as_str().to_owned()));
    }
    if let Some(side) = query.side {
        conditions.push(concat!("order_side = ", opaque!("TEXT")));
        args.push(Value::Text(side.as_str().to_owned()));
    }
    if let Some(token) = query.page_token {
        conditions.push(concat!("id < ", opaque!("BLOB")));
        args.push(Value::Blob(token.last_id().as_uuid().as_bytes().to_vec()));
    }
    let mut sql = String::from(concat!("SELECT ", columns!(), " FROM orders"));
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(concat!(" ORDER BY id DESC LIMIT ", opaque!("INTEGER")));
    args.push(Value::Integer(i64::from(limit)));
    (sql, args)
}

pub(super) fn list(conn: &Connection, query: &ListQuery, limit: u32) -> rusqlite::Result<Vec<StockOrder>> {
    let (sql, args) = list_sql(query, limit);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), order_from_row)?;
    rows.collect()
}

/// The storage probe's write: one fixed row, rewritten with the time, so a commit touches the
/// disk (WAL frames and an fsync) like an order's would, and no order changes.
pub(super) fn probe(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO storage_probe (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
    )?
    .execute([Timestamp::now().unix_micros()])
    .map(drop)
}

/// Appends the `created` event of order `o`, just inserted: the values bound as they were for
/// the order's own row. (Reading the row back with `INSERT … SELECT` costs a seek into
/// `orders`; an `AFTER INSERT` trigger would make SQLite keep a statement journal for the
/// orders insert, because its `length(id)` CHECK calls a function that could fail. Both
/// measured dearer, docs/performance.md.) The events of later changes are written by
/// [`schema::EVENT_TRIGGER`](super::schema::EVENT_TRIGGER).
pub(super) const APPEND_CREATED: &str = concat!(
    "INSERT INTO order_events (kind, ",
    columns!(),
    ") VALUES ('created', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
);

pub(super) fn append_created(conn: &Connection, o: &StockOrder) -> rusqlite::Result<()> {
    // Built with `no-event-log` (bench/events' A/B only): nothing appended.
    if cfg!(feature = "no-event-log") {
        return Ok(());
    }
    conn.prepare_cached(APPEND_CREATED)?.execute(order_params!(o)).map(drop)
}

pub(super) const EVENTS: &str = concat!(
    "SELECT ",
    columns!(),
    ", sequence, kind FROM order_events WHERE sequence > ?1 ORDER BY sequence LIMIT ",
    opaque!(2, "INTEGER")
);

pub(super) const EVENTS_OF_SYMBOL: &str = concat!(
    "SELECT ",
    columns!(),
    ", sequence, kind FROM order_events WHERE sequence > ?1 AND symbol = ",
    opaque!(3, "TEXT"),
    " ORDER BY sequence LIMIT ",
    opaque!(2, "INTEGER")
);

/// Up to `limit` events after `after`, in sequence order (one symbol's when given).
pub(super) fn events(
    conn: &Connection,
    after: u64,
    symbol: Option<&Symbol>,
    limit: u32,
) -> rusqlite::Result<Vec<OrderEvent>> {
    let event = |row: &Row<'_>| {
        let kind: String = row.get(15)?;
        Ok(OrderEvent {
            order: order_from_row(row)?,
            sequence: row.get::<_, i64>(14)? as u64,
            kind: kind.parse().map_err(|_| corrupt("event kind", &kind))?,
        })
    };
    let after = after.min(i64::MAX as u64) as i64;
    match symbol {
        None => conn
            .prepare_cached(EVENTS)?
            .query_map(params![after, limit], event)?
            .collect(),
        Some(symbol) => conn
            .prepare_cached(EVENTS_OF_SYMBOL)?
            .query_map(params![after, limit, symbol.as_str()], event)?
            .collect(),
    }
}

/// The oldest event held and the newest (two seeks at the ends of the rowid B-tree).
pub(super) const EVENT_BOUNDS: &str =
    "SELECT (SELECT min(sequence) FROM order_events), (SELECT max(sequence) FROM order_events)";

pub(super) fn event_bounds(conn: &Connection) -> rusqlite::Result<EventBounds> {
    let (first, last): (Option<i64>, Option<i64>) = conn
        .prepare_cached(EVENT_BOUNDS)?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let last = last.unwrap_or(0).max(0) as u64;
    Ok(EventBounds {
        first: first.map_or(last + 1, |f| f.max(0) as u64),
        last,
    })
}

/// Looks at the `chunk` oldest events and deletes those beyond the newest `keep` or older than
/// `before` (µs since the epoch), never the newest event (whose number the next one follows):
/// at most `chunk` rows read, however long the log, so pruning costs the writer a bounded
/// moment. Returns how many went.
pub(super) const PRUNE_EVENTS: &str = "DELETE FROM order_events WHERE sequence IN (
    SELECT sequence FROM (SELECT sequence, updated_at FROM order_events ORDER BY sequence LIMIT ?3)
     WHERE sequence < (SELECT max(sequence) FROM order_events)
       AND (sequence <= (SELECT max(sequence) FROM order_events) - ?1 OR updated_at < ?2))";

pub(super) fn prune_events(conn: &Connection, keep: u64, before: i64, chunk: u32) -> rusqlite::Result<usize> {
    conn.prepare_cached(PRUNE_EVENTS)?
        .execute(params![keep.min(i64::MAX as u64) as i64, before, chunk])
}
