//! Following the order event log: where a follower starts, and the stream it is sent. The log
//! is the truth and wake-ups only say "look". A follower near the newest events takes them from
//! the process's shared window of them (`tail`), which one task reads from the log after each
//! commit; a follower further behind reads a page of events from the log after the last one it
//! read, until it reaches the window. So a follower that stops reading costs one page of events,
//! however far behind it falls, and one that catches up is served from memory.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::OrderDesk;
use super::tail::{Read, Tail};
use crate::domain::{OrderEvent, Symbol};
use crate::port::{EventStart, EventStream, OrderError, OrderRepository};

/// Events read at a time, per follower: what a follower that stops reading holds.
const PAGE: u32 = 64;

/// A follower's place in the log.
struct Follower<R> {
    desk: Arc<OrderDesk<R>>,
    symbol: Option<Symbol>,
    /// Every event up to this sequence has been read (into `page`, or skipped by the symbol
    /// filter); the next read is after it.
    read_to: u64,
    page: VecDeque<OrderEvent>,
    tail: Arc<Tail>,
    /// Moves when the tail gains events; errs when its feed has ended.
    changes: watch::Receiver<u64>,
    failed: bool,
}

/// The log from `start`, as the desk's repository holds it. The wake-ups are subscribed to
/// before the log's bounds are read, so no commit between the two is missed: "live" means every
/// event numbered after the last one committed when the follow began.
pub(super) async fn follow<R: OrderRepository>(
    desk: Arc<OrderDesk<R>>,
    start: EventStart,
    symbol: Option<Symbol>,
) -> Result<EventStream, OrderError> {
    let mut wakeups = desk.log().event_wakeups();
    wakeups.borrow_and_update();
    let bounds = desk.log().event_bounds().await?;
    let cursor = match start {
        EventStart::Live => bounds.last,
        EventStart::After(after) if bounds.can_resume_after(after) => after,
        EventStart::After(after) => {
            return Err(OrderError::EventsPruned {
                after,
                first: bounds.first,
            });
        }
    };
    let tail = shared_tail(&desk, bounds.last, wakeups);
    let follower = Follower {
        desk,
        symbol,
        read_to: cursor,
        page: VecDeque::new(),
        changes: tail.changes(),
        tail,
        failed: false,
    };
    Ok(Box::pin(futures_util::stream::unfold(follower, next)))
}

/// The desk's tail while its feed runs, or a new one starting after `newest`.
fn shared_tail<R: OrderRepository>(desk: &Arc<OrderDesk<R>>, newest: u64, wakeups: watch::Receiver<u64>) -> Arc<Tail> {
    let mut slot = desk.tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(tail) = slot.upgrade().filter(|t| t.is_live()) {
        return tail;
    }
    let tail = Tail::start(desk, newest, wakeups);
    *slot = Arc::downgrade(&tail);
    tail
}

/// The next event, from the tail or the log (waiting for the tail to move as needed).
async fn next<R: OrderRepository>(mut f: Follower<R>) -> Option<(Result<OrderEvent, OrderError>, Follower<R>)> {
    if f.failed {
        return None;
    }
    loop {
        if let Some(event) = f.page.pop_front() {
            return Some((Ok(event), f));
        }
        // Seen before reading, so a change during the read is not missed.
        f.changes.borrow_and_update();
        match f.tail.after(f.read_to, f.symbol.as_ref(), PAGE as usize) {
            Read::Held { events, scanned } if scanned > f.read_to => {
                f.read_to = scanned;
                f.page.extend(events);
            }
            Read::Held { .. } => {
                // Nothing after the cursor yet: wait for the tail to move. Its feed ended (the
                // store closed, or a read failed): the stream ends, and the follower resumes
                // where it was.
                if f.changes.changed().await.is_err() {
                    return None;
                }
            }
            Read::Behind => match f.desk.log().events(f.read_to, f.symbol.clone(), PAGE).await {
                Ok(page) if !page.is_empty() => {
                    f.read_to = page.last().map_or(f.read_to, |e| e.sequence);
                    f.page.extend(page);
                }
                Ok(_) => {
                    if f.changes.changed().await.is_err() {
                        return None;
                    }
                }
                Err(e) => {
                    f.failed = true;
                    return Some((Err(e.into()), f));
                }
            },
        }
    }
}
