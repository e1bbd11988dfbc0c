//! The order processor: takes pending orders from the database and fills or rejects them.
//!
//! The database is the queue (`OrderRepository::unprocessed`): nothing waits only in memory, so
//! an order accepted before a crash is executed after the restart. Workers wake when an order is
//! placed (`OrderDesk::new_orders`), so a market order fills within milliseconds, and poll at an
//! interval as a safety net.
//!
//! The workers walk the queue with one cursor (a [`QueuePosition`], in commit order), claimed
//! under a lock so two workers never take the same batch. A decision costs a write only when it
//! changes the order: a limit order that rests stays pending and untouched behind the cursor,
//! and fills and rejections are written in the batch they were decided in, in one transaction.
//! The cursor lives in memory: it starts from the beginning at every start, so every order
//! pending after a restart (crashed or not) is looked at once; it goes back to the beginning
//! when prices move ([`crate::port::PriceSource::version`]), every ten minutes as a safety net, and
//! after a batch whose decisions could not be written. Every write is conditional on the order
//! still being pending, so looking at an order twice never decides it twice, and a cancel
//! racing a fill has exactly one winner.
//!
//! A storage fault does not stop the processor: a worker that cannot claim or settle waits with
//! capped, jittered exponential backoff and tries again, logging once when it starts waiting
//! and once when it resumes. Nothing claimed is lost meanwhile: an unsettled order is still
//! pending in the database. Only a corrupt database ends it (and so the service).
//!
//! On stop, a worker finishes the batch in hand (its decisions are written) and returns.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::domain::StockOrder;
use crate::port::{OrderError, OrderRepository, QueuePosition, RepositoryError};
use crate::service::{Executed, OrderDesk};

/// How the processor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessorConfig {
    /// Concurrent workers; 0 runs no processor (orders stay pending, e.g. to test recovery).
    pub workers: usize,
    /// Orders claimed per batch (and written per transaction).
    pub batch: u32,
    /// Longest time between two looks at the queue when no order arrives.
    pub poll_interval: Duration,
}

/// Why the processor stopped on its own: storage that cannot recover by itself.
#[derive(Debug, thiserror::Error)]
#[error("order processor stopped: {0}")]
pub struct ProcessorError(#[source] RepositoryError);

/// The first and the longest pause of a worker waiting for storage to recover.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_CAP: Duration = Duration::from_secs(2);

/// What a worker does with a failed storage call.
enum Failure {
    /// The store is closing: shutdown is under way.
    Closing,
    /// Cannot clear by itself.
    Fatal(ProcessorError),
    /// Try again after a pause.
    Retry(OrderError),
}

fn classify(e: OrderError) -> Failure {
    match e {
        OrderError::Unavailable => Failure::Closing,
        OrderError::Internal(corrupt @ RepositoryError::Corrupt(_)) => Failure::Fatal(ProcessorError(corrupt)),
        other => Failure::Retry(other),
    }
}

/// How often the whole queue is looked at again, resting orders included, when nothing else
/// asks for it: a safety net for prices that moved without saying so, and for orders another
/// process numbered out of order (an in-place upgrade from a binary that did not number them).
const RESCAN_EVERY: Duration = Duration::from_secs(600);

/// How long a worker woken by a new order waits for more before it looks at the queue. Under
/// load, orders arrive every few tens of microseconds and a look (a read on the blocking pool,
/// the decisions, the bookkeeping) costs about as much as placing one: without the wait, each
/// look found one or two orders. 2 ms adds at most that to a market order's fill, and lets a
/// look take dozens. Measured with wrk at c=64: see docs/performance.md.
const GATHER: Duration = Duration::from_millis(2);

struct Shared<R> {
    desk: Arc<OrderDesk<R>>,
    config: ProcessorConfig,
    cursor: Mutex<Cursor>,
}

/// Where the next claim starts, and what sends it back to the beginning.
struct Cursor {
    after: QueuePosition,
    /// The price source's version at the last walk from the beginning.
    prices: u64,
    /// When the last walk from the beginning started.
    since: Instant,
}

/// Runs `config.workers` workers until `stop` resolves; each finishes its batch in hand, and
/// this returns when all have. Returns early with an error only if the database is corrupt.
pub async fn run<R: OrderRepository>(
    desk: Arc<OrderDesk<R>>,
    config: ProcessorConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProcessorError> {
    if config.workers == 0 {
        stop.await;
        return Ok(());
    }
    let prices = desk.prices_version();
    let shared = Arc::new(Shared {
        desk,
        config,
        cursor: Mutex::new(Cursor {
            after: QueuePosition::START,
            prices,
            since: Instant::now(),
        }),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = JoinSet::new();
    for _ in 0..config.workers {
        workers.spawn(worker(Arc::clone(&shared), stop_rx.clone()));
    }
    tokio::pin!(stop);
    let mut result = Ok(());
    loop {
        tokio::select! {
            () = &mut stop => break,
            joined = workers.join_next() => match joined {
                Some(Ok(Err(e))) => { result = Err(e); break; }
                Some(_) => {}
                None => break,
            },
        }
    }
    stop_tx.send_replace(true);
    while let Some(joined) = workers.join_next().await {
        if let Ok(Err(e)) = joined
            && result.is_ok()
        {
            result = Err(e);
        }
    }
    result
}

async fn worker<R: OrderRepository>(
    shared: Arc<Shared<R>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ProcessorError> {
    let mut totals = Executed::default();
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
    let mut waiting = false;
    while !*stop.borrow() {
        let (full, outcome) = match claim(&shared).await {
            Ok(claimed) => {
                let full = claimed.len() >= shared.config.batch as usize;
                if claimed.is_empty() {
                    (full, Ok(Executed::default()))
                } else {
                    let executed = shared.desk.execute(claimed).await;
                    if executed.is_err() {
                        // The batch's decisions may not be written: offer it again.
                        shared.cursor.lock().await.after = QueuePosition::START;
                    }
                    (full, executed)
                }
            }
            Err(e) => (false, Err(e)),
        };
        match outcome {
            Ok(done) => {
                add(&mut totals, done);
                if waiting {
                    tracing::info!("order processor resumed");
                    waiting = false;
                    backoff.reset();
                }
            }
            Err(e) => match classify(e) {
                Failure::Closing => break,
                Failure::Fatal(e) => return Err(e),
                Failure::Retry(e) => {
                    if !waiting {
                        tracing::warn!(error = %e, "order processor waiting for storage; pending orders stay pending");
                        waiting = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.wait_for(|stopped| *stopped) => {}
                    }
                    continue;
                }
            },
        }
        if full {
            // More is waiting: let another worker share it, and go on without sleeping.
            shared.desk.new_orders().notify_one();
            continue;
        }
        let woken = tokio::select! {
            () = shared.desk.new_orders().notified() => true,
            () = tokio::time::sleep(shared.config.poll_interval) => false,
            _ = stop.wait_for(|stopped| *stopped) => false,
        };
        if woken {
            // Let the orders placed in the next moment join this batch: under load, a look at
            // the queue per order would cost more than the decisions themselves.
            tokio::select! {
                () = tokio::time::sleep(GATHER) => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
        }
    }
    tracing::debug!(
        filled = totals.filled,
        rejected = totals.rejected,
        resting = totals.resting,
        lost_race = totals.lost_race,
        "processor worker stopped"
    );
    Ok(())
}

/// The next batch after the cursor, which moves past it under the same lock, so no other
/// worker takes it. The cursor goes back to the beginning first when prices moved or the
/// safety net's ten minutes are up.
async fn claim<R: OrderRepository>(shared: &Shared<R>) -> Result<Vec<StockOrder>, OrderError> {
    let mut cursor = shared.cursor.lock().await;
    let prices = shared.desk.prices_version();
    if prices != cursor.prices {
        shared.desk.reoffer_resting().await?;
        cursor.prices = prices;
        cursor.after = QueuePosition::START;
        cursor.since = Instant::now();
    } else if cursor.since.elapsed() >= RESCAN_EVERY {
        cursor.after = QueuePosition::START;
        cursor.since = Instant::now();
    }
    let batch = shared.desk.pending_batch(cursor.after, shared.config.batch).await?;
    if let Some(last) = batch.last() {
        cursor.after = last.position;
    }
    Ok(batch.into_iter().map(|q| q.order).collect())
}

fn add(totals: &mut Executed, done: Executed) {
    totals.decided += done.decided;
    totals.filled += done.filled;
    totals.rejected += done.rejected;
    totals.resting += done.resting;
    totals.lost_race += done.lost_race;
}

#[cfg(test)]
mod tests;
