//! The event log on PostgreSQL: reading it, and the publisher that numbers it.
//!
//! **The ordering trap.** Replicas write events concurrently, and a number handed out when a
//! row is written follows the order transactions *start* writing, not the order they commit:
//! the transaction holding 10 may commit after the one holding 11 is already visible. A reader
//! that delivered 11 and resumes "after 11" would never see 10.
//!
//! **What this does instead: number in commit order.** An event is written unnumbered
//! (`sequence` NULL) in the transaction of its change. Every replica runs [`publisher`], which
//! every [`TICK`] takes a transaction-level advisory lock (one publisher at a time, across
//! replicas) and gives the next numbers from `order_event_seq` to the events that are committed
//! and unnumbered, in the order they were written. An event still uncommitted is invisible to
//! the publisher and is numbered in a later round, above everything numbered so far; readers
//! read numbered events only. So no number ever appears below one a reader has seen. The cost
//! is latency: an event becomes readable at the next round after its commit (a tick, 20 ms),
//! and the publisher's update of the rows it numbers.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::errors::Stage;
use super::{database, errors, rows};
use crate::domain::{OrderEvent, Symbol};
use crate::port::{EventBounds, EventRetention, RepositoryError};

/// How often each replica publishes and looks for events other replicas published.
pub(super) const TICK: Duration = Duration::from_millis(20);

/// Events one round numbers at most.
const PUBLISH_BATCH: i64 = 10_000;

/// Rounds between two looks at the retention.
const PRUNE_EVERY: u64 = 1000;

/// Events one look at the retention deletes at most.
const PRUNE_CHUNK: i64 = 2048;

/// The advisory lock key that makes one replica the publisher of a round.
const PUBLISHER_LOCK: &str = "SELECT pg_try_advisory_xact_lock(hashtext('stockorder events'))";

/// Numbers the committed, unnumbered events in the order they were written, from the counter.
/// One statement: the events, the count and the counter move together.
const PUBLISH: &str = "WITH pending AS (
        SELECT position, row_number() OVER (ORDER BY position) AS n
        FROM order_events WHERE sequence IS NULL ORDER BY position LIMIT $1
     ), counter AS (
        UPDATE order_event_seq SET last = last + (SELECT count(*) FROM pending) WHERE id = 1
        RETURNING last - (SELECT count(*) FROM pending) AS base
     )
     UPDATE order_events AS e SET sequence = counter.base + pending.n
     FROM pending, counter WHERE e.position = pending.position";

/// The last number given.
const LAST: &str = "SELECT last FROM order_event_seq WHERE id = 1";

/// Looks at the `$3` oldest numbered events and deletes those beyond the newest `$1` or older
/// than `$2`.
const PRUNE: &str = "DELETE FROM order_events WHERE position IN (
        SELECT position FROM (
            SELECT position, sequence, updated_at FROM order_events
            WHERE sequence IS NOT NULL ORDER BY sequence LIMIT $3
        ) oldest
        WHERE sequence <= (SELECT last FROM order_event_seq WHERE id = 1) - $1 OR updated_at < $2
     )";

/// Up to `limit` numbered events after `after`, in sequence order.
pub(super) async fn read(
    pool: &Pool,
    after: u64,
    symbol: Option<Symbol>,
    limit: u32,
) -> Result<Vec<OrderEvent>, RepositoryError> {
    let client = pool.get().await.map_err(errors::from_pool)?;
    let after = after.min(i64::MAX as u64) as i64;
    let limit = i64::from(limit);
    let found = match &symbol {
        None => {
            let stmt = client
                .prepare_cached(rows::EVENTS)
                .await
                .map_err(database(Stage::NotCommitting))?;
            client.query(&stmt, &[&after, &limit]).await
        }
        Some(symbol) => {
            let stmt = client
                .prepare_cached(rows::EVENTS_OF_SYMBOL)
                .await
                .map_err(database(Stage::NotCommitting))?;
            client.query(&stmt, &[&after, &limit, &symbol.as_str()]).await
        }
    }
    .map_err(database(Stage::NotCommitting))?;
    found.iter().map(rows::event_from_row).collect()
}

/// The oldest numbered event held and the last number given.
pub(super) async fn bounds(pool: &Pool) -> Result<EventBounds, RepositoryError> {
    let client = pool.get().await.map_err(errors::from_pool)?;
    let row = client
        .query_one(
            "SELECT (SELECT min(sequence) FROM order_events), (SELECT last FROM order_event_seq WHERE id = 1)",
            &[],
        )
        .await
        .map_err(database(Stage::NotCommitting))?;
    let first: Option<i64> = row.get(0);
    let last = row.get::<_, i64>(1).max(0) as u64;
    Ok(EventBounds {
        first: first.map_or(last + 1, |f| f.max(0) as u64),
        last,
    })
}

/// One publishing round: numbers what has committed, if no other replica is doing so now.
async fn publish(pool: &Pool) -> Result<u64, tokio_postgres::Error> {
    let Ok(mut client) = pool.get().await else {
        return Ok(0);
    };
    let tx = client.transaction().await?;
    let leader: bool = tx.query_one(PUBLISHER_LOCK, &[]).await?.get(0);
    if !leader {
        return Ok(0); // another replica publishes this round; its numbers are read below
    }
    let stmt = tx.prepare_cached(PUBLISH).await?;
    let numbered = tx.execute(&stmt, &[&PUBLISH_BATCH]).await?;
    tx.commit().await?;
    Ok(numbered)
}

/// The last number given, as every replica reads it.
async fn last(pool: &Pool) -> Result<u64, tokio_postgres::Error> {
    let Ok(client) = pool.get().await else {
        return Ok(0);
    };
    let stmt = client.prepare_cached(LAST).await?;
    Ok(client.query_one(&stmt, &[]).await?.get::<_, i64>(0).max(0) as u64)
}

async fn prune(pool: &Pool, retention: EventRetention) -> Result<u64, tokio_postgres::Error> {
    let Ok(client) = pool.get().await else {
        return Ok(0);
    };
    let keep = retention.max_events.min(i64::MAX as u64) as i64;
    let before = time::OffsetDateTime::now_utc() - retention.max_age;
    client.execute(PRUNE, &[&keep, &before, &PRUNE_CHUNK]).await
}

/// Runs until `stop`: each [`TICK`], a publishing round, then a look at the last number given,
/// which changes `wakeups` when it moved (events published here or by another replica).
pub(super) async fn publisher(
    pool: Pool,
    wakeups: Arc<watch::Sender<u64>>,
    retention: EventRetention,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = 0_u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        rounds += 1;
        if let Err(e) = publish(&pool).await {
            tracing::debug!(error = %e, "cannot publish events this round; trying again");
        }
        match last(&pool).await {
            Ok(last) => {
                wakeups.send_if_modified(|seen| {
                    let moved = *seen != last;
                    *seen = last;
                    moved
                });
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the event log's last number"),
        }
        if rounds.is_multiple_of(PRUNE_EVERY)
            && let Err(e) = prune(&pool, retention).await
        {
            tracing::warn!(error = %e, "cannot prune the event log; trying again later");
        }
    }
}
