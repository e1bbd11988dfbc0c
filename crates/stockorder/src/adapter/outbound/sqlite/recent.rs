//! Orders kept in memory after this process wrote or read them, so that reading one again (a
//! client polling its order until it fills) costs no SQLite read.
//!
//! Why it can be trusted: in this process every change to an order goes through the one writer
//! thread, which updates this cache after each commit and before answering any of its callers
//! (the ordering rule in `visibility`). A read that missed may add what it read, but only if
//! the commit count ([`Commits`]) did not move while it ran.
//!
//! Another process writing to the same file (the overlap of an in-place upgrade) would change
//! orders behind the writer's back: the cache is switched off and emptied for that time
//! ([`Recent::set_enabled`]), as the readers stop reusing snapshots then.
//!
//! What it costs: at most [`CAPACITY`] orders (a few hundred bytes each), evicted oldest first.
//! What it saves per GET is in docs/performance.md.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::readers::Commits;
use crate::domain::{OrderId, StockOrder};

/// Orders kept at most, across all shards.
pub(super) const CAPACITY: usize = 8 * 1024;

/// Independent locks, so the runtime's worker threads rarely meet on one.
const SHARDS: usize = 16;

/// A change the writer committed, for the cache to follow.
#[derive(Debug)]
pub(super) enum Committed<'a> {
    /// The order as it now is in the file.
    Order(&'a StockOrder),
    /// The order changed in a way the writer did not read back: forget it.
    Changed(OrderId),
}

/// The cache; see the module documentation.
#[derive(Debug)]
pub(super) struct Recent {
    shards: Box<[Mutex<Shard>]>,
    enabled: AtomicBool,
    /// Set by [`Recent::close`]: off for good, whatever [`Recent::set_enabled`] says later.
    closed: AtomicBool,
    commits: Commits,
}

#[derive(Debug, Default)]
struct Shard {
    /// Ids are made here, not chosen by clients (a read that finds nothing adds nothing), so a
    /// fast unkeyed hash is safe, and cheaper than SipHash on every GET.
    orders: HashMap<OrderId, StockOrder, foldhash::fast::FixedState>,
    /// Ids in the order they were added, for eviction. May hold ids already forgotten, and an
    /// id twice; it bounds the map all the same, as the map holds no id this does not.
    arrivals: VecDeque<OrderId>,
}

impl Shard {
    const CAPACITY: usize = CAPACITY / SHARDS;

    fn put(&mut self, order: &StockOrder) {
        if let Some(kept) = self.orders.get_mut(&order.id()) {
            kept.clone_from(order);
            return;
        }
        while self.arrivals.len() >= Self::CAPACITY {
            if let Some(oldest) = self.arrivals.pop_front() {
                self.orders.remove(&oldest);
            }
        }
        self.arrivals.push_back(order.id());
        self.orders.insert(order.id(), order.clone());
    }
}

impl Recent {
    /// An empty cache, switched on, that trusts reads only while `commits` is unchanged.
    pub(super) fn new(commits: Commits) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            // Built with `no-recent-cache` (bench/run's A/B only): closed from the start, so
            // every read goes to the file.
            enabled: AtomicBool::new(!cfg!(feature = "no-recent-cache")),
            closed: AtomicBool::new(cfg!(feature = "no-recent-cache")),
            commits,
        }
    }

    fn shard(&self, id: OrderId) -> MutexGuard<'_, Shard> {
        // The last bytes of a UUIDv7 are random: a fair spread.
        let byte = id.as_uuid().as_bytes()[15] as usize;
        lock(&self.shards[byte % SHARDS])
    }

    /// The order, if it is kept.
    pub(super) fn get(&self, id: OrderId) -> Option<StockOrder> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        self.shard(id).orders.get(&id).cloned()
    }

    /// The commit count to pass to [`Recent::offer`], taken before a read starts.
    pub(super) fn before_read(&self) -> u64 {
        self.commits.now()
    }

    /// Keeps an order a reader read, if nothing was committed since `before_read` gave
    /// `seen` (else the order read may be older than one the writer has put since).
    pub(super) fn offer(&self, order: &StockOrder, seen: u64) {
        let mut shard = self.shard(order.id());
        // Checked under the shard's lock: the writer updates entries only after bumping the
        // count, so an update that this read could have missed has moved the count already,
        // or comes after this insert and overwrites it.
        if self.enabled.load(Ordering::Acquire) && self.commits.now() == seen {
            shard.put(order);
        }
    }

    /// Follows a commit. Called by the writer after it bumped the commit count and before it
    /// answers any caller of the commit.
    pub(super) fn committed(&self, change: Committed<'_>) {
        match change {
            Committed::Order(order) => {
                let mut shard = self.shard(order.id());
                // Under the shard's lock, like `offer`: `set_enabled(false)` clears each shard
                // after switching off, so nothing put here outlives the switch.
                if self.enabled.load(Ordering::Acquire) {
                    shard.put(order);
                }
            }
            Committed::Changed(id) => {
                self.shard(id).orders.remove(&id);
            }
        }
    }

    /// Switches the cache off (emptied) while another process may write to the file, and on
    /// again (emptied again: what was read meanwhile may be stale) once it no longer may.
    /// Bumps the commit count, so a read under way as this happens adds nothing.
    pub(super) fn set_enabled(&self, yes: bool) {
        let yes = yes && !self.closed.load(Ordering::Acquire);
        // Off before emptying, on after: no entry from before the switch is ever served.
        if !yes {
            self.enabled.store(false, Ordering::Release);
        }
        self.commits.bump();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.orders.clear();
            shard.arrivals.clear();
        }
        if yes {
            self.enabled.store(true, Ordering::Release);
            // A `close` that raced this switch stays in force: it set `closed` before turning
            // the cache off, so either that comes after the line above or this sees it.
            if self.closed.load(Ordering::Acquire) {
                self.enabled.store(false, Ordering::Release);
            }
        }
    }

    /// Switches the cache off for good: a closed store answers no read, not even from memory.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.set_enabled(false);
    }
}

/// A shard, locked. A poisoned one only means a panic while it was held; its map is whole (no
/// operation leaves it half-changed).
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::outbound::repository_suite::order;
    use crate::domain::{OrderSide, OrderStatus, StatusChange, Timestamp};

    fn recent() -> Recent {
        Recent::new(Commits::default())
    }

    #[test]
    fn a_read_that_raced_a_commit_adds_nothing() {
        let cache = recent();
        let o = order("RACE", OrderSide::Buy, None);
        let seen = cache.before_read();
        cache.commits.bump(); // the writer committed while the read ran
        cache.offer(&o, seen);
        assert!(cache.get(o.id()).is_none(), "kept an order read before a commit");
        let seen = cache.before_read();
        cache.offer(&o, seen);
        assert_eq!(cache.get(o.id()), Some(o));
    }

    #[test]
    fn the_writer_replaces_and_forgets_entries() {
        let cache = recent();
        let mut o = order("KEEP", OrderSide::Sell, None);
        cache.committed(Committed::Order(&o));
        o = StatusChange::cancel(o.id(), Timestamp::now()).apply(&o).unwrap();
        cache.committed(Committed::Order(&o));
        assert_eq!(cache.get(o.id()).map(|k| k.status()), Some(OrderStatus::Cancelled));
        cache.committed(Committed::Changed(o.id()));
        assert!(cache.get(o.id()).is_none());
    }

    #[test]
    fn switched_off_it_keeps_nothing_and_forgets_what_it_had() {
        let cache = recent();
        let o = order("OFF", OrderSide::Buy, None);
        cache.committed(Committed::Order(&o));
        cache.set_enabled(false);
        assert!(cache.get(o.id()).is_none());
        let seen = cache.before_read();
        cache.offer(&o, seen);
        cache.committed(Committed::Order(&o));
        cache.set_enabled(true);
        assert!(cache.get(o.id()).is_none(), "kept what it was given while off");
    }

    #[test]
    fn it_holds_at_most_its_capacity_evicting_the_oldest() {
        let cache = recent();
        let orders: Vec<StockOrder> = (0..CAPACITY * 2).map(|_| order("MANY", OrderSide::Buy, None)).collect();
        for o in &orders {
            cache.committed(Committed::Order(o));
        }
        let kept: usize = cache.shards.iter().map(|s| s.lock().unwrap().orders.len()).sum();
        assert!(kept <= CAPACITY, "{kept} kept, more than {CAPACITY}");
        assert!(kept >= CAPACITY / 2, "only {kept} kept");
        let last = orders.last().unwrap();
        assert!(cache.get(last.id()).is_some(), "the newest order was evicted");
        assert!(cache.get(orders[0].id()).is_none(), "the oldest order was kept");
    }
}
