//! The newest events of the log, read once for every follower of this process.
//!
//! Without it, each follower reads the log itself after every commit: with 100 followers a
//! commit costs 100 reads, and the reads, not the writes, take the cores. Here one task (the
//! feed) reads what each commit appended, in sequence order, and keeps the newest
//! [`TAIL_EVENTS`] in memory; a follower whose cursor lies inside that window takes its events
//! from memory, and one further behind (resuming after a restart, or one that stopped reading
//! for a while) reads the log itself until it reaches the window.
//!
//! The window is exact because the feed reads the log as a follower would: everything after the
//! last sequence it holds, in order, through the same repository call that keeps PostgreSQL's
//! not-yet-committed sequence numbers out (the ordering trap, `postgres::events`). So the
//! window holds every event of the log between its floor and its newest sequence, and a
//! follower served from it sees what it would have read.
//!
//! The feed runs while at least one follower holds the tail, and ends with the store (its
//! wake-ups closed) or at a read error; the followers' streams then end, and their clients
//! resume where they were, as after any end of stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

use super::OrderDesk;
use crate::domain::{OrderEvent, Symbol};
use crate::port::OrderRepository;

/// Events kept in memory: several seconds of creates and fills at full load, about 2 MB.
pub(super) const TAIL_EVENTS: usize = 4096;

/// Events the feed reads from the log at a time.
const FEED_PAGE: u32 = 512;

/// The newest events, shared by this process's followers.
#[derive(Debug)]
pub(super) struct Tail {
    window: Mutex<Window>,
    /// The newest sequence read into the window; moves after each read of the feed. Closed
    /// when the feed ends.
    newest: watch::Receiver<u64>,
}

/// The events the tail holds: every event of the log after `floor`, up to the newest.
#[derive(Debug)]
struct Window {
    floor: u64,
    events: VecDeque<OrderEvent>,
    capacity: usize,
}

/// What the tail can say about the events after a cursor.
pub(super) enum Read {
    /// The cursor lies inside the window: the events after it (up to the limit, matching the
    /// symbol), and the sequence the scan reached, which the cursor may move to.
    Held { events: Vec<OrderEvent>, scanned: u64 },
    /// The cursor lies before the window: read the log.
    Behind,
}

impl Tail {
    /// A tail for `desk`'s log starting after `newest` (the log's last sequence, read after
    /// `wakeups` was subscribed, so no commit in between is missed), and its feed task.
    pub(super) fn start<R: OrderRepository>(
        desk: &Arc<OrderDesk<R>>,
        newest: u64,
        wakeups: watch::Receiver<u64>,
    ) -> Arc<Self> {
        Self::with_capacity(desk, newest, wakeups, TAIL_EVENTS)
    }

    fn with_capacity<R: OrderRepository>(
        desk: &Arc<OrderDesk<R>>,
        newest: u64,
        wakeups: watch::Receiver<u64>,
        capacity: usize,
    ) -> Arc<Self> {
        let (moved, newest_rx) = watch::channel(newest);
        let tail = Arc::new(Self {
            window: Mutex::new(Window {
                floor: newest,
                events: VecDeque::new(),
                capacity,
            }),
            newest: newest_rx,
        });
        tokio::spawn(feed(
            Arc::downgrade(desk),
            Arc::downgrade(&tail),
            newest,
            wakeups,
            moved,
        ));
        tail
    }

    /// A receiver that changes whenever the window gains events, and errs once the feed ended.
    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.newest.clone()
    }

    /// Whether the feed still runs: a tail whose feed ended is not handed to new followers.
    pub(super) fn is_live(&self) -> bool {
        self.newest.has_changed().is_ok()
    }

    /// The events after `cursor`, from memory, or [`Read::Behind`] when the window does not
    /// reach back that far.
    pub(super) fn after(&self, cursor: u64, symbol: Option<&Symbol>, limit: usize) -> Read {
        let window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cursor < window.floor {
            return Read::Behind;
        }
        // Sequences increase along the window: skip to the first after the cursor.
        let start = window.events.partition_point(|e| e.sequence <= cursor);
        let mut events = Vec::new();
        let mut scanned = cursor;
        for event in window.events.range(start..) {
            if events.len() == limit {
                break;
            }
            scanned = event.sequence;
            if symbol.is_none_or(|s| event.order.symbol() == s) {
                events.push(event.clone());
            }
        }
        Read::Held { events, scanned }
    }

    fn push(&self, page: Vec<OrderEvent>) {
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        window.events.extend(page);
        while window.events.len() > window.capacity {
            if let Some(dropped) = window.events.pop_front() {
                window.floor = dropped.sequence;
            }
        }
    }
}

/// Reads what each commit appended into the tail, while any follower holds it.
async fn feed<R: OrderRepository>(
    desk: Weak<OrderDesk<R>>,
    tail: Weak<Tail>,
    mut newest: u64,
    mut wakeups: watch::Receiver<u64>,
    moved: watch::Sender<u64>,
) {
    loop {
        loop {
            let (Some(desk), Some(tail)) = (desk.upgrade(), tail.upgrade()) else {
                return;
            };
            match desk.log().events(newest, None, FEED_PAGE).await {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    newest = page.last().map_or(newest, |e| e.sequence);
                    tail.push(page);
                    moved.send_replace(newest);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the event log for followers failed; their streams end and resume");
                    return;
                }
            }
        }
        if wakeups.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::adapter::outbound::memory::MemoryRepository;
    use crate::domain::{OrderSide, OrderType, RiskRules};
    use crate::port::{EventStart, OrderService};
    use crate::service::tests::new_order;

    fn desk() -> Arc<OrderDesk<MemoryRepository>> {
        Arc::new(crate::service::tests::desk(RiskRules::default()).1)
    }

    /// `n` resting orders: one `created` event each.
    async fn place(desk: &Arc<OrderDesk<MemoryRepository>>, n: usize) {
        for _ in 0..n {
            let order = new_order(OrderType::Limit, OrderSide::Buy, 1, Some(1.0));
            desk.create(order).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_window_holds_every_event_after_its_floor_and_says_when_a_cursor_is_behind() {
        let desk = desk();
        let log = desk.log();
        let wakeups = log.event_wakeups();
        let tail = Tail::with_capacity(&desk, 0, wakeups, 8);
        let mut changes = tail.changes();
        place(&desk, 20).await;
        while *changes.borrow_and_update() < 20 {
            changes.changed().await.unwrap();
        }
        // 20 events, the newest 8 kept: 13..=20, floor 12.
        assert!(matches!(tail.after(11, None, 100), Read::Behind));
        let Read::Held { events, scanned } = tail.after(12, None, 100) else {
            panic!("12 is the floor: held")
        };
        assert_eq!(
            events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            (13..=20).collect::<Vec<_>>()
        );
        assert_eq!(scanned, 20);
        let Read::Held { events, scanned } = tail.after(15, None, 2) else {
            panic!("held")
        };
        assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), [16, 17]);
        assert_eq!(scanned, 17);
        let Read::Held { events, .. } = tail.after(12, Some(&Symbol::parse("MSFT").unwrap()), 100) else {
            panic!("held")
        };
        assert!(events.is_empty());
    }

    #[tokio::test]
    async fn many_followers_and_one_far_behind_each_get_every_event_once_in_order() {
        let desk = desk();
        place(&desk, 50).await;
        let mut streams = Vec::new();
        for start in [
            EventStart::After(0),
            EventStart::Live,
            EventStart::Live,
            EventStart::After(10),
        ] {
            streams.push(Arc::clone(&desk).follow(start, None).await.unwrap());
        }
        place(&desk, 5000).await;
        for (i, stream) in streams.into_iter().enumerate() {
            let first = [1, 51, 51, 11][i];
            let got: Vec<u64> = stream
                .take(5050 - first as usize + 1)
                .map(|e| e.unwrap().sequence)
                .collect()
                .await;
            assert_eq!(got, (first..=5050).collect::<Vec<_>>(), "follower {i}");
        }
    }
}
