//! The single writer: one thread owns the only writing connection and commits whatever requests
//! are waiting as one transaction (group commit).
//!
//! Why: with `synchronous = FULL` every commit costs an fsync. Committing each order alone caps
//! throughput at one order per fsync and makes concurrent writers fight over SQLite's write lock
//! ("database is locked"). Here requests queue while a commit is under way and the next
//! transaction takes them all, so the fsync cost is shared and there is no lock contention.
//! Every caller is answered only after the transaction holding its write has committed.

use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::errors::{self, again};
use super::recent::Committed;
use super::rows;
use crate::domain::{StatusChange, StockOrder};
use crate::port::{EventRetention as Retention, Inserted, RepositoryError, Transition};

/// The most requests committed in one transaction; bounds the latency a batch adds to its first
/// request.
const MAX_BATCH: usize = 512;

/// How many requests may wait for the writer before senders are made to wait: backpressure
/// instead of unbounded memory.
const QUEUE_DEPTH: usize = 4_096;

/// How long a batch waits for another process's lock, normally (the connection's busy timeout),
/// and once a batch has been refused for it. One writer serves every write in turn, so while the
/// lock is held, each batch waiting the full timeout would make the callers queued behind it
/// wait several timeouts: past their request timeout, a 504 that says less than "locked".
const BUSY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
const LOCKED_OUT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the last batch found the database locked by another process.
#[derive(Debug, Default)]
struct Patience {
    locked_out: bool,
}

impl Patience {
    /// After a batch: shorten the wait while locked out, restore it once a commit went through.
    fn after(&mut self, conn: &Connection, locked: bool) {
        if locked != self.locked_out {
            let wait = if locked { LOCKED_OUT_PATIENCE } else { BUSY_PATIENCE };
            if conn.busy_timeout(wait).is_ok() {
                self.locked_out = locked;
            }
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, RepositoryError>>;

enum Command {
    Write(Write),
    /// Commit what is queued, checkpoint the WAL and close the connection.
    Close(oneshot::Sender<Result<(), RepositoryError>>),
}

/// One request that changes the database; a batch is a list of these.
enum Write {
    Insert(StockOrder, Reply<Inserted>),
    ChangeStatus(StatusChange, Reply<Transition>),
    Settle(Vec<StatusChange>, Reply<Vec<bool>>),
    /// A write that changes no order: does committing work?
    Probe(Reply<()>),
}

/// A result computed inside the open transaction, sent once the transaction's fate is known.
enum Outcome {
    Insert(Reply<Inserted>, Result<Inserted, RepositoryError>),
    ChangeStatus(Reply<Transition>, Result<Transition, RepositoryError>),
    /// The changes are kept to tell [`Committed`] which orders they touched.
    Settle(Reply<Vec<bool>>, Result<Vec<bool>, RepositoryError>, Vec<StatusChange>),
    Probe(Reply<()>, Result<(), RepositoryError>),
}

impl Outcome {
    /// What this write changed, once its transaction has committed.
    fn committed(&self, mut each: impl FnMut(Committed<'_>)) {
        match self {
            Outcome::Insert(_, Ok(Inserted::Created(order) | Inserted::Existing(order)))
            | Outcome::ChangeStatus(_, Ok(Transition::Applied(order) | Transition::Refused(order))) => {
                each(Committed::Order(order))
            }
            Outcome::Settle(_, Ok(applied), changes) => changes
                .iter()
                .zip(applied)
                .filter(|(_, applied)| **applied)
                .for_each(|(change, _)| each(Committed::Changed(change.id()))),
            _ => {}
        }
    }

    /// A write the transaction never ran (it could not begin); only its caller remains.
    fn not_applied(write: Write) -> Self {
        match write {
            Write::Insert(_, reply) => Outcome::Insert(reply, Err(RepositoryError::Closed)),
            Write::ChangeStatus(_, reply) => Outcome::ChangeStatus(reply, Err(RepositoryError::Closed)),
            Write::Settle(changes, reply) => Outcome::Settle(reply, Err(RepositoryError::Closed), changes),
            Write::Probe(reply) => Outcome::Probe(reply, Err(RepositoryError::Closed)),
        }
    }

    /// The error this write's statement failed with, if it did.
    fn error(&self) -> Option<&RepositoryError> {
        match self {
            Outcome::Insert(_, Err(e))
            | Outcome::ChangeStatus(_, Err(e))
            | Outcome::Settle(_, Err(e), _)
            | Outcome::Probe(_, Err(e)) => Some(e),
            _ => None,
        }
    }

    fn send(self) {
        // A caller that stopped waiting (client went away) is not an error for the batch.
        match self {
            Outcome::Insert(reply, result) => drop(reply.send(result)),
            Outcome::ChangeStatus(reply, result) => drop(reply.send(result)),
            Outcome::Settle(reply, result, _) => drop(reply.send(result)),
            Outcome::Probe(reply, result) => drop(reply.send(result)),
        }
    }

    /// The transaction failed: nothing of this batch was written, whatever the statement said.
    /// Every caller gets `cause` (with its fault, so a full disk is a 503 for all of them).
    fn fail(self, cause: &RepositoryError) {
        match self {
            Outcome::Insert(reply, _) => drop(reply.send(Err(again(cause)))),
            Outcome::ChangeStatus(reply, _) => drop(reply.send(Err(again(cause)))),
            Outcome::Settle(reply, ..) => drop(reply.send(Err(again(cause)))),
            Outcome::Probe(reply, _) => drop(reply.send(Err(again(cause)))),
        }
    }
}

/// What runs after each successful commit, before any of its callers is answered: given the
/// changes, the number of writes in the transaction and how long it took.
type AfterCommit = dyn Fn(Changes<'_>, usize, Duration);

/// The orders a committed transaction changed.
pub(super) struct Changes<'a>(&'a [Outcome]);

impl Changes<'_> {
    /// Calls `each` for every change, in the order they were made.
    pub(super) fn for_each(&self, mut each: impl FnMut(Committed<'_>)) {
        self.0.iter().for_each(|outcome| outcome.committed(&mut each));
    }
}

/// The handle async code uses to reach the writer thread.
#[derive(Debug)]
pub(super) struct Writer {
    queue: mpsc::Sender<Command>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread on an open, migrated connection. `after_commit` runs after
    /// each successful commit and before any of its callers is answered.
    pub(super) fn spawn(
        conn: Connection,
        retention: Retention,
        after_commit: impl Fn(Changes<'_>, usize, Duration) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (queue, requests) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, requests, &after_commit, retention))?;
        Ok(Self {
            queue,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, RepositoryError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(make(reply))
            .await
            .map_err(|_| RepositoryError::Closed)?;
        // A dropped reply means the writer stopped before reaching this request.
        answer.await.map_err(|_| RepositoryError::Closed)?
    }

    pub(super) async fn insert(&self, order: StockOrder) -> Result<Inserted, RepositoryError> {
        self.call(|reply| Command::Write(Write::Insert(order, reply))).await
    }

    pub(super) async fn change_status(&self, change: StatusChange) -> Result<Transition, RepositoryError> {
        self.call(|reply| Command::Write(Write::ChangeStatus(change, reply)))
            .await
    }

    /// The processor's decisions, in one transaction with whatever else is queued. A batch
    /// of resting orders only changes nothing, and costs no transaction.
    pub(super) async fn settle(&self, changes: Vec<StatusChange>) -> Result<Vec<bool>, RepositoryError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|reply| Command::Write(Write::Settle(changes, reply))).await
    }

    pub(super) async fn probe(&self) -> Result<(), RepositoryError> {
        self.call(|reply| Command::Write(Write::Probe(reply))).await
    }

    /// Commits everything queued, checkpoints and closes the connection, and joins the thread.
    /// When this returns, every write that was ever acknowledged is in the main database file.
    pub(super) async fn close(&self) -> Result<(), RepositoryError> {
        let result = match self.call(Command::Close).await {
            Err(RepositoryError::Closed) => Ok(()), // closed already
            other => other,
        };
        let thread = self.thread.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(thread) = thread {
            // The thread has answered Close and is returning; joining is immediate.
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| RepositoryError::Database(e.into()))?
                .map_err(|_| RepositoryError::Database("the writer thread panicked".into()))?;
        }
        result
    }
}

fn run(mut conn: Connection, mut requests: mpsc::Receiver<Command>, after_commit: &AfterCommit, retention: Retention) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut patience = Patience::default();
    let mut closing = None;
    let mut batches = 0_u64;
    while let Some(first) = requests.blocking_recv() {
        batches += 1;
        if batches.is_multiple_of(PRUNE_EVERY) {
            prune(&conn, retention);
        }
        take(first, &mut batch, &mut closing);
        while batch.len() < MAX_BATCH && closing.is_none() {
            match requests.try_recv() {
                Ok(next) => take(next, &mut batch, &mut closing),
                Err(_) => break,
            }
        }
        commit(&mut conn, &mut batch, &mut patience, after_commit);
        if closing.is_some() {
            break;
        }
    }
    // Refuse new requests, but finish those already queued: they were accepted before the
    // close took effect and their callers are waiting.
    requests.close();
    while let Ok(cmd) = requests.try_recv() {
        take(cmd, &mut batch, &mut closing);
        if batch.len() == MAX_BATCH {
            commit(&mut conn, &mut batch, &mut patience, after_commit);
        }
    }
    commit(&mut conn, &mut batch, &mut patience, after_commit);
    let result = shut(conn);
    if let Some(reply) = closing {
        let _ = reply.send(result);
    }
}

fn take(cmd: Command, batch: &mut Vec<Write>, closing: &mut Option<oneshot::Sender<Result<(), RepositoryError>>>) {
    match cmd {
        Command::Close(reply) => {
            if let Some(earlier) = closing.replace(reply) {
                let _ = earlier.send(Ok(()));
            }
        }
        Command::Write(write) => batch.push(write),
    }
}

/// Runs the batch in one transaction and answers every caller after the commit.
fn commit(conn: &mut Connection, batch: &mut Vec<Write>, patience: &mut Patience, after_commit: &AfterCommit) {
    if batch.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let writes = batch.len();
    if let Err(e) = rows::control(conn, "BEGIN IMMEDIATE") {
        let cause = errors::on(conn)(e);
        patience.after(conn, cause.fault() == Some(crate::port::Fault::Locked));
        batch.drain(..).map(Outcome::not_applied).for_each(|o| o.fail(&cause));
        return;
    }
    let mut outcomes = Vec::with_capacity(writes);
    let mut sequence = rows::Sequence::default();
    let mut pending = batch.drain(..);
    for write in pending.by_ref() {
        outcomes.push(apply(conn, write, &mut sequence));
        // Some errors (disk full, I/O error) make SQLite roll the whole transaction back. The
        // writes applied so far are gone, and the rest must not run outside a transaction.
        if conn.is_autocommit() {
            break;
        }
    }
    // The numbers given to this batch's orders, stored with them. Should that fail, nothing
    // of the batch may commit: the next batch would give the same numbers again.
    if !conn.is_autocommit()
        && let Err(e) = sequence.store(conn)
    {
        let cause = errors::on(conn)(e);
        tracing::debug!(writes, error = %cause, "cannot store the order sequence; rolling the batch back");
        let _ = rows::control(conn, "ROLLBACK");
        outcomes.into_iter().for_each(|o| o.fail(&cause));
        pending.map(Outcome::not_applied).for_each(|o| o.fail(&cause));
        return;
    }
    if conn.is_autocommit() {
        // The statement that failed last says why (a full disk, say).
        let cause = outcomes
            .iter()
            .rev()
            .find_map(Outcome::error)
            .map(again)
            .unwrap_or_else(|| RepositoryError::Database("SQLite rolled the transaction back".into()));
        tracing::debug!(writes, error = %cause, "SQLite rolled the transaction back");
        outcomes.into_iter().for_each(|o| o.fail(&cause));
        pending.map(Outcome::not_applied).for_each(|o| o.fail(&cause));
        return;
    }
    match rows::control(conn, "COMMIT") {
        Ok(()) => {
            patience.after(conn, false);
            after_commit(Changes(&outcomes), writes, started.elapsed());
            outcomes.into_iter().for_each(Outcome::send);
        }
        Err(e) => {
            let cause = errors::on(conn)(e);
            tracing::debug!(error = %cause, writes, "sqlite commit failed");
            // Nothing of this batch may stay half-applied for the next one to commit.
            if !conn.is_autocommit() {
                let _ = rows::control(conn, "ROLLBACK");
            }
            outcomes.into_iter().for_each(|o| o.fail(&cause));
        }
    }
}

fn apply(conn: &Connection, write: Write, sequence: &mut rows::Sequence) -> Outcome {
    match write {
        Write::Insert(order, reply) => Outcome::Insert(reply, insert(conn, order, sequence)),
        Write::ChangeStatus(change, reply) => Outcome::ChangeStatus(reply, change_status(conn, &change)),
        Write::Settle(changes, reply) => {
            let applied = settle(conn, &changes);
            Outcome::Settle(reply, applied, changes)
        }
        Write::Probe(reply) => Outcome::Probe(reply, rows::probe(conn).map_err(errors::on(conn))),
    }
}

/// Applies each change whose order is still where it starts (the trigger appends its event).
fn settle(conn: &Connection, changes: &[StatusChange]) -> Result<Vec<bool>, RepositoryError> {
    changes
        .iter()
        .map(|change| rows::settle(conn, change).map_err(errors::on(conn)))
        .collect()
}

fn insert(conn: &Connection, order: StockOrder, sequence: &mut rows::Sequence) -> Result<Inserted, RepositoryError> {
    // The writer is the only writer, so check-then-insert cannot race; the UNIQUE constraint
    // stays as the last line of defence.
    if let Some(key) = &order.client_order_id()
        && let Some(existing) = rows::by_client_order_id(conn, key).map_err(errors::on(conn))?
    {
        return Ok(Inserted::Existing(existing));
    }
    let seq = sequence.next(conn).map_err(errors::on(conn))?;
    rows::insert(conn, &order, seq).map_err(errors::on(conn))?;
    rows::append_created(conn, &order).map_err(errors::on(conn))?;
    Ok(Inserted::Created(order))
}

/// The change if the order is still in `change.from`, and the order as it is now either way:
/// read back in the same transaction (see [`rows::SETTLE`] for why not `RETURNING`).
fn change_status(conn: &Connection, change: &StatusChange) -> Result<Transition, RepositoryError> {
    let applied = rows::settle(conn, change).map_err(errors::on(conn))?;
    Ok(match rows::by_id(conn, change.id()).map_err(errors::on(conn))? {
        Some(order) if applied => Transition::Applied(order),
        Some(current) => Transition::Refused(current),
        None => Transition::NotFound,
    })
}

/// Batches between two looks at the event log's retention.
const PRUNE_EVERY: u64 = 1024;

/// Events one look at the retention deletes at most.
const PRUNE_CHUNK: u32 = 2048;

/// Deletes the oldest events beyond the retention, a bounded chunk in a transaction of its own
/// between two batches: the writer pauses for at most one small delete, and a log that grew
/// past its bounds shrinks back over the next looks. A failure (a full disk) is logged and
/// tried again at the next look.
fn prune(conn: &Connection, retention: Retention) {
    let before = crate::domain::Timestamp::now().unix_micros()
        - i64::try_from(retention.max_age.as_micros()).unwrap_or(i64::MAX);
    let pruned = rows::control(conn, "BEGIN IMMEDIATE")
        .and_then(|()| rows::prune_events(conn, retention.max_events, before, PRUNE_CHUNK))
        .and_then(|n| rows::control(conn, "COMMIT").map(|()| n));
    match pruned {
        Ok(0) => {}
        Ok(n) => tracing::debug!(events = n, "pruned the event log"),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = rows::control(conn, "ROLLBACK");
            }
            tracing::warn!(error = %e, "cannot prune the event log; trying again later");
        }
    }
}

/// Moves the whole WAL into the database file and closes, so the file is complete on its own
/// (a copy or backup taken after shutdown needs no `-wal` beside it).
fn shut(conn: Connection) -> Result<(), RepositoryError> {
    // Another process reading the file (the new one of an in-place upgrade) keeps the WAL from
    // being truncated; wait for that only briefly: the WAL is complete either way.
    conn.busy_timeout(std::time::Duration::from_millis(200))
        .map_err(errors::on(&conn))?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(errors::on(&conn))?;
    conn.close().map_err(|(conn, e)| errors::on(&conn)(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::outbound::repository_suite::{change, order};
    use crate::adapter::outbound::sqlite::tests::writer_connection;
    use crate::domain::{OrderSide, OrderStatus};

    /// A disk that fills up halfway through a batch of fills, whose events the trigger writes
    /// inside each `UPDATE`: each change answered as made is in the file with its one event,
    /// and no change refused left either a change or an event behind.
    #[test]
    fn a_full_disk_mid_batch_of_changes_keeps_each_change_with_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = writer_connection(&dir.path().join("full.db"));
        let orders: Vec<StockOrder> = (0..300).map(|_| order("FULL", OrderSide::Buy, None)).collect();
        let mut batch: Vec<Write> = orders
            .iter()
            .map(|o| Write::Insert(o.clone(), oneshot::channel().0))
            .collect();
        commit(&mut conn, &mut batch, &mut Patience::default(), &|_, _, _| {});
        let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0)).unwrap();
        conn.pragma_update(None, "max_page_count", pages + 2).unwrap();

        let changes: Vec<StatusChange> = orders.iter().map(|o| change(o, OrderStatus::Filled)).collect();
        let (reply, mut answer) = oneshot::channel();
        let mut batch = vec![Write::Settle(changes, reply)];
        commit(&mut conn, &mut batch, &mut Patience::default(), &|_, _, _| {});

        assert!(conn.is_autocommit(), "a transaction was left open");
        let applied = answer.try_recv().expect("the caller is answered");
        let filled_events = |o: &StockOrder| -> i64 {
            conn.query_row(
                "SELECT count(*) FROM order_events WHERE id = ?1 AND kind = 'filled'",
                [o.id().as_uuid().as_bytes()],
                |r| r.get(0),
            )
            .unwrap()
        };
        for (i, o) in orders.iter().enumerate() {
            let filled = rows::by_id(&conn, o.id()).unwrap().unwrap().status() == OrderStatus::Filled;
            let told = applied.as_ref().is_ok_and(|a| a[i]);
            assert_eq!(filled, told, "order {i}: in the file {filled}, told {told}");
            assert_eq!(filled_events(o), i64::from(filled), "order {i}: events of its fill");
        }
        assert!(applied.is_err(), "the page limit was never reached");
    }

    /// A disk that fills up halfway through a batch: whichever way SQLite recovers (undoing the
    /// one statement, or the whole transaction), every caller is told exactly what the file
    /// holds afterwards, and the connection is left outside any transaction.
    #[test]
    fn a_full_disk_mid_batch_answers_each_caller_with_what_was_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = writer_connection(&dir.path().join("full.db"));
        // Room for a few more pages: the batch's first orders fit, then inserts fail with
        // SQLITE_FULL.
        let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0)).unwrap();
        conn.pragma_update(None, "max_page_count", pages + 4).unwrap();

        let orders: Vec<StockOrder> = (0..300).map(|_| order("FULL", OrderSide::Buy, None)).collect();
        let mut answers = Vec::new();
        let mut batch = Vec::new();
        for o in &orders {
            let (reply, answer) = oneshot::channel();
            batch.push(Write::Insert(o.clone(), reply));
            answers.push(answer);
        }
        commit(&mut conn, &mut batch, &mut Patience::default(), &|_, _, _| {});

        assert!(conn.is_autocommit(), "a transaction was left open");
        let (mut kept, mut refused) = (0, 0);
        for (o, mut answer) in orders.iter().zip(answers) {
            let stored = rows::by_id(&conn, o.id()).unwrap().is_some();
            match answer.try_recv().expect("every caller is answered") {
                Ok(Inserted::Created(_)) => {
                    assert!(stored, "acknowledged but not stored");
                    kept += 1;
                }
                Ok(Inserted::Existing(_)) => panic!("no order had a client_order_id"),
                Err(_) => {
                    assert!(!stored, "refused but stored");
                    refused += 1;
                }
            }
        }
        assert!(refused > 0, "the page limit was never reached ({kept} kept)");
    }
}
