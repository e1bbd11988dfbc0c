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
//! is the publisher's update of the rows it numbers, and a round between a commit and its
//! event being readable.
//!
//! **Wake-ups: LISTEN/NOTIFY, the table as the truth.** A round runs at once (at most every
//! [`MIN_GAP`]) when this replica commits a change, and a publisher that numbered events sends
//! `NOTIFY` with that transaction; every replica `LISTEN`s on a connection of its own
//! ([`listen`]) and reads the last number when it hears one. So an event committed on one
//! replica reaches followers of another within a few milliseconds, not a tick or two. A
//! notification carries nothing a reader relies on: a lost one (the listening connection
//! dropped, and is opened again) delays followers until the next [`TICK`], which every
//! replica still runs.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt as _;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::errors::Stage;
use super::{database, errors, rows};
use crate::domain::{OrderEvent, Symbol};
use crate::port::{EventBounds, EventRetention, RepositoryError};

/// How often each replica publishes and looks for events other replicas published, whether or
/// not anything woke it: what bounds the delay when a notification is lost.
pub(super) const TICK: Duration = Duration::from_millis(20);

/// The least time between two rounds that commits started: under load a replica commits
/// thousands of times a second, and a round per commit would cost the database more than
/// the events' few milliseconds are worth.
const MIN_GAP: Duration = Duration::from_millis(5);

/// What each replica's listening connection runs: the channel the publishers notify.
const LISTEN: &str = "LISTEN stockorder_events";

/// The `NOTIFY` a publishing round sends, in its transaction, when it numbered events.
const NOTIFY: &str = "NOTIFY stockorder_events";

/// What wakes a replica's publisher before its tick.
#[derive(Debug, Default)]
pub(super) struct Wakers {
    /// This replica committed a change: number its event now.
    pub(super) committed: Notify,
    /// A publisher (this replica's or another's) numbered events: read the last number.
    pub(super) heard: Notify,
}

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
    if numbered > 0 {
        // Delivered to the listeners when this commits, with the numbers.
        tx.batch_execute(NOTIFY).await?;
    }
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

/// Why the publisher runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Tick,
    Committed,
    Heard,
}

/// Runs until `stop`: a publishing round each `tick` and after this replica's commits (at most
/// every [`MIN_GAP`]), then a look at the last number given, also when another publisher's
/// `NOTIFY` was heard; `wakeups` changes when that number moved.
pub(super) async fn publisher(
    pool: Pool,
    wakeups: Arc<watch::Sender<u64>>,
    wakers: Arc<Wakers>,
    retention: EventRetention,
    tick: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = 0_u64;
    let mut last_round = Instant::now();
    loop {
        let wake = tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => Wake::Tick,
            () = wakers.committed.notified() => Wake::Committed,
            () = wakers.heard.notified() => Wake::Heard,
        };
        if wake == Wake::Committed {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(last_round + MIN_GAP) => {}
            }
        }
        if wake != Wake::Heard {
            last_round = Instant::now();
            // The next tick a whole tick after this round: under load, commits start the rounds.
            ticks.reset();
            rounds += 1;
            if let Err(e) = publish(&pool).await {
                tracing::debug!(error = %e, "cannot publish events this round; trying again");
            }
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
        if wake != Wake::Heard
            && rounds.is_multiple_of(PRUNE_EVERY)
            && let Err(e) = prune(&pool, retention).await
        {
            tracing::warn!(error = %e, "cannot prune the event log; trying again later");
        }
    }
}

/// Until `stop`: `LISTEN`s on a connection of its own and wakes `heard` at each notification.
/// A dropped connection is opened again after a pause; meanwhile the ticks carry on.
pub(super) async fn listen(config: Arc<tokio_postgres::Config>, heard: Arc<Wakers>, stop: CancellationToken) {
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = listen_once(&config, &heard) => outcome,
        };
        match outcome {
            Ok(()) => backoff.reset(),
            Err(e) => tracing::debug!(error = %e, "listening for event notifications failed; the ticks carry on"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One listening connection, until it ends.
async fn listen_once(config: &tokio_postgres::Config, wakers: &Wakers) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listening = client.batch_execute(LISTEN);
    tokio::pin!(listening);
    let mut listened = false;
    loop {
        tokio::select! {
            result = &mut listening, if !listened => {
                result?;
                listened = true;
                // What was published before the LISTEN took hold.
                wakers.heard.notify_one();
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(_))) => wakers.heard.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}
