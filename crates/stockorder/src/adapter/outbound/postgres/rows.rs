//! SQL text and the mapping between PostgreSQL rows and [`StockOrder`]s.

use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::domain::{ClientOrderId, OrderEvent, OrderId, Price, Quantity, StockOrder, StoredOrder, Symbol, Timestamp};
use crate::port::{ListQuery, RepositoryError};

/// The order columns in the order [`order_from_row`] reads them.
macro_rules! columns {
    () => {
        "id, client_order_id, symbol, order_type, order_side, quantity, price, status, description, created_at, updated_at, fill_price, filled_at, cancelled_at"
    };
}

/// [`columns!`] of the table aliased `o`, for `UPDATE orders AS o … RETURNING`.
macro_rules! prefixed_columns {
    () => {
        "o.id, o.client_order_id, o.symbol, o.order_type, o.order_side, o.quantity, o.price, o.status, o.description, o.created_at, o.updated_at, o.fill_price, o.filled_at, o.cancelled_at"
    };
}

/// A row that does not decode is reported, not unwrapped: a database edited by hand must not
/// crash the server.
fn corrupt(what: &str, value: impl std::fmt::Debug) -> RepositoryError {
    RepositoryError::Unreadable(format!("stored {what} {value:?} is not valid"))
}

fn column<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, RepositoryError> {
    row.try_get(index)
        .map_err(|e| RepositoryError::Unreadable(format!("column {index}: {e}")))
}

/// The domain's timestamp of a `timestamptz` (both are microseconds).
fn instant(what: &str, at: OffsetDateTime) -> Result<Timestamp, RepositoryError> {
    let micros = at.unix_timestamp_nanos() / 1000;
    i64::try_from(micros)
        .ok()
        .and_then(Timestamp::from_unix_micros)
        .ok_or_else(|| corrupt(what, at))
}

pub(super) fn order_from_row(row: &Row) -> Result<StockOrder, RepositoryError> {
    let symbol: String = column(row, 2)?;
    let order_type: String = column(row, 3)?;
    let order_side: String = column(row, 4)?;
    let quantity: i32 = column(row, 5)?;
    let status: String = column(row, 7)?;
    let price = |index, what| -> Result<Option<Price>, RepositoryError> {
        column::<Option<f64>>(row, index)?
            .map(|p| Price::parse(p).map_err(|_| corrupt(what, p)))
            .transpose()
    };
    let optional_instant = |index, what| -> Result<Option<Timestamp>, RepositoryError> {
        column::<Option<OffsetDateTime>>(row, index)?
            .map(|t| instant(what, t))
            .transpose()
    };
    Ok(StockOrder::restore(StoredOrder {
        id: OrderId::from_uuid(column::<Uuid>(row, 0)?),
        client_order_id: column::<Option<String>>(row, 1)?
            .map(|k| ClientOrderId::parse(&k).map_err(|_| corrupt("client_order_id", k)))
            .transpose()?,
        symbol: Symbol::parse(&symbol).map_err(|_| corrupt("symbol", &symbol))?,
        order_type: order_type.parse().map_err(|_| corrupt("order_type", &order_type))?,
        order_side: order_side.parse().map_err(|_| corrupt("order_side", &order_side))?,
        quantity: Quantity::parse(i64::from(quantity)).map_err(|_| corrupt("quantity", quantity))?,
        price: price(6, "price")?,
        status: status.parse().map_err(|_| corrupt("status", &status))?,
        description: column(row, 8)?,
        created_at: instant("created_at", column(row, 9)?)?,
        updated_at: instant("updated_at", column(row, 10)?)?,
        fill_price: price(11, "fill_price")?,
        filled_at: optional_instant(12, "filled_at")?,
        cancelled_at: optional_instant(13, "cancelled_at")?,
    }))
}

/// Decodes every row, in order.
pub(super) fn orders(rows: &[Row]) -> Result<Vec<StockOrder>, RepositoryError> {
    rows.iter().map(order_from_row).collect()
}

pub(super) const INSERT: &str = concat!(
    "WITH inserted AS (INSERT INTO orders (",
    columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
     ON CONFLICT (client_order_id) WHERE client_order_id IS NOT NULL DO NOTHING
     RETURNING ",
    columns!(),
    ") INSERT INTO order_events (kind, ",
    columns!(),
    ") SELECT 'created', ",
    columns!(),
    " FROM inserted"
);

/// The parameters of [`INSERT`], owned so they can be borrowed as `&dyn ToSql`.
pub(super) struct InsertParams {
    id: Uuid,
    client_order_id: Option<String>,
    symbol: String,
    order_type: &'static str,
    order_side: &'static str,
    quantity: i32,
    price: Option<f64>,
    status: &'static str,
    description: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    fill_price: Option<f64>,
    filled_at: Option<OffsetDateTime>,
    cancelled_at: Option<OffsetDateTime>,
}

impl InsertParams {
    pub(super) fn of(o: &StockOrder) -> Self {
        Self {
            id: *o.id().as_uuid(),
            client_order_id: o.client_order_id().as_ref().map(|k| k.as_str().to_owned()),
            symbol: o.symbol().as_str().to_owned(),
            order_type: o.order_type().as_str(),
            order_side: o.order_side().as_str(),
            quantity: o.quantity().get(),
            price: o.price().map(Price::get),
            status: o.status().as_str(),
            description: o.description().map(str::to_owned),
            created_at: o.created_at().as_datetime(),
            updated_at: o.updated_at().as_datetime(),
            fill_price: o.fill_price().map(Price::get),
            filled_at: o.filled_at().map(|t| t.as_datetime()),
            cancelled_at: o.cancelled_at().map(|t| t.as_datetime()),
        }
    }

    pub(super) fn as_params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.id,
            &self.client_order_id,
            &self.symbol,
            &self.order_type,
            &self.order_side,
            &self.quantity,
            &self.price,
            &self.status,
            &self.description,
            &self.created_at,
            &self.updated_at,
            &self.fill_price,
            &self.filled_at,
            &self.cancelled_at,
        ]
    }
}

pub(super) const BY_ID: &str = concat!("SELECT ", columns!(), " FROM orders WHERE id = $1");

pub(super) const BY_IDS: &str = concat!("SELECT ", columns!(), " FROM orders WHERE id = ANY($1)");

pub(super) const BY_CLIENT_ORDER_ID: &str = concat!("SELECT ", columns!(), " FROM orders WHERE client_order_id = $1");

/// Applies a batch of conditional changes in one statement: each row changes if, and only if,
/// it is still in its `from` status. A change to FILLED records the fill price and `filled_at`,
/// one to CANCELLED `cancelled_at`. Each applied change appends its event (`filled`,
/// `cancelled` or `rejected`: the new status, in lower case) in the same statement. Returns the
/// changed rows.
pub(super) const CHANGE_STATUS: &str = concat!(
    "WITH changed AS (UPDATE orders AS o SET status = c.to_status,
            description = coalesce(c.description, o.description),
            updated_at = c.at,
            fill_price = coalesce(c.fill_price, o.fill_price),
            filled_at = CASE WHEN c.to_status = 'FILLED' THEN c.at ELSE o.filled_at END,
            cancelled_at = CASE WHEN c.to_status = 'CANCELLED' THEN c.at ELSE o.cancelled_at END,
            claimed_until = NULL
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::timestamptz[])
          AS c(id, from_status, to_status, description, fill_price, at)
     WHERE o.id = c.id AND o.status = c.from_status
     RETURNING ",
    prefixed_columns!(),
    "), logged AS (INSERT INTO order_events (kind, ",
    columns!(),
    ") SELECT lower(status), ",
    columns!(),
    " FROM changed) SELECT ",
    columns!(),
    " FROM changed"
);

/// Takes pending orders out of the processor's queue, leaving them pending (resting limits).
pub(super) const MARK_RESTING: &str =
    "UPDATE orders SET rests = true, claimed_until = NULL WHERE id = ANY($1) AND status = 'PENDING'";

/// Puts every resting order back in the processor's queue (prices moved).
pub(super) const REOFFER_RESTING: &str = "UPDATE orders SET rests = false WHERE status = 'PENDING' AND rests";

/// Claims up to `$1` orders of the processor's queue, oldest first, for `$2` seconds. Rows
/// another replica is claiming right now are skipped, not waited for; rows whose lease ran out
/// (their replica died) are claimable again.
pub(super) const CLAIM: &str = concat!(
    "WITH claimed AS (
        SELECT id FROM orders
        WHERE status = 'PENDING' AND NOT rests AND (claimed_until IS NULL OR claimed_until < now())
        ORDER BY id LIMIT $1
        FOR UPDATE SKIP LOCKED
     )
     UPDATE orders AS o SET claimed_until = now() + make_interval(secs => $2)
     FROM claimed WHERE o.id = claimed.id
     RETURNING ",
    prefixed_columns!()
);

/// One list query parameter.
pub(super) enum Param {
    Text(String),
    Id(Uuid),
    Limit(i64),
}

impl Param {
    pub(super) fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Text(s) => s,
            Param::Id(u) => u,
            Param::Limit(n) => n,
        }
    }
}

/// The list statement for this combination of filters. Only the filters present appear in the
/// SQL, so the planner can pick the matching index; the text is stable per combination, so
/// each connection prepares at most 16 variants.
pub(super) fn list_sql(query: &ListQuery, limit: u32) -> (String, Vec<Param>) {
    let mut conditions = Vec::new();
    let mut args = Vec::new();
    let mut next = |condition: &str, param: Param, args: &mut Vec<Param>| {
        args.push(param);
        conditions.push(format!("{condition} ${}", args.len()));
    };
    if let Some(status) = query.status {
        next("status =", Param::Text(status.as_str().to_owned()), &mut args);
    }
    if let Some(symbol) = &query.symbol {
        next("symbol =", Param::Text(symbol.as_str().to_owned()), &mut args);
    }
    if let Some(side) = query.side {
        next("order_side =", Param::Text(side.as_str().to_owned()), &mut args);
    }
    if let Some(token) = query.page_token {
        next("id <", Param::Id(*token.last_id().as_uuid()), &mut args);
    }
    let mut sql = String::from(concat!("SELECT ", columns!(), " FROM orders"));
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    args.push(Param::Limit(i64::from(limit)));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    (sql, args)
}

/// The storage probe's write (see `OrderRepository::probe`): one fixed row, rewritten.
pub(super) const PROBE: &str =
    "INSERT INTO storage_probe (id, at) VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET at = excluded.at";

/// Numbered events after `$1`, in sequence order, at most `$2`.
pub(super) const EVENTS: &str = concat!(
    "SELECT ",
    columns!(),
    ", sequence, kind FROM order_events WHERE sequence > $1 ORDER BY sequence LIMIT $2"
);

/// [`EVENTS`] of one symbol (`$3`).
pub(super) const EVENTS_OF_SYMBOL: &str = concat!(
    "SELECT ",
    columns!(),
    ", sequence, kind FROM order_events WHERE symbol = $3 AND sequence > $1 ORDER BY sequence LIMIT $2"
);

/// An event row of [`EVENTS`]: the order's columns, then its number and kind.
pub(super) fn event_from_row(row: &Row) -> Result<OrderEvent, RepositoryError> {
    let kind: String = column(row, 15)?;
    Ok(OrderEvent {
        order: order_from_row(row)?,
        sequence: column::<i64>(row, 14)?.max(0) as u64,
        kind: kind.parse().map_err(|_| corrupt("event kind", &kind))?,
    })
}
