//! Following the order event log: where a follower starts, and the stream it is sent. The log
//! is the truth and wake-ups only say "look": a follower reads a page of events after the last
//! one it was sent, and waits for the next commit when there are none. So a follower that stops
//! reading costs one page of events, however far behind it falls, and one that catches up is
//! served from the log.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::OrderDesk;
use crate::domain::{OrderEvent, Symbol};
use crate::port::{EventStart, EventStream, OrderError, OrderRepository};

/// Events read from the log at a time, per follower: what a follower that stops reading holds.
const PAGE: u32 = 64;

/// A follower's place in the log.
struct Follower<R> {
    desk: Arc<OrderDesk<R>>,
    symbol: Option<Symbol>,
    /// The last sequence sent (or, at the start, the one to continue after).
    cursor: u64,
    page: VecDeque<OrderEvent>,
    wakeups: watch::Receiver<u64>,
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
    let follower = Follower {
        desk,
        symbol,
        cursor,
        page: VecDeque::new(),
        wakeups,
        failed: false,
    };
    Ok(Box::pin(futures_util::stream::unfold(follower, next)))
}

/// The next event, reading the log (and waiting for a commit) as needed.
async fn next<R: OrderRepository>(mut f: Follower<R>) -> Option<(Result<OrderEvent, OrderError>, Follower<R>)> {
    if f.failed {
        return None;
    }
    loop {
        if let Some(event) = f.page.pop_front() {
            f.cursor = event.sequence;
            return Some((Ok(event), f));
        }
        match f.desk.log().events(f.cursor, f.symbol.clone(), PAGE).await {
            Ok(page) if !page.is_empty() => f.page.extend(page),
            Ok(_) => {
                // Nothing after the cursor: wait for a commit. A closed channel is a closed
                // store: the stream ends, and the follower resumes elsewhere.
                if f.wakeups.changed().await.is_err() {
                    return None;
                }
            }
            Err(e) => {
                f.failed = true;
                return Some((Err(e.into()), f));
            }
        }
    }
}
