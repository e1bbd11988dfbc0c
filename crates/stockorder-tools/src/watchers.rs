//! Followers of the order event stream for `prove` (`--watchers N`): each follows the target's
//! `GET /api/orders/events` from the start, resumes after the last event it got whenever its
//! stream ends (at the signal, say), and at the end is compared with the history the log holds:
//! events missing, repeated, out of order.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::client::http::HttpApi;
use crate::client::{EventApi, StreamEnd};

/// What one follower received.
#[derive(Debug, Default)]
struct Followed {
    /// Sequences in the order received.
    sequences: Vec<u64>,
    /// Streams that ended (the server ending them, or failing to connect does not count).
    streams: usize,
}

/// Followers, running.
pub(crate) struct Watchers {
    followed: Vec<Arc<Mutex<Followed>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where the followers connect: `http://host:port`, or `None` to stop.
    target: watch::Sender<Option<String>>,
}

/// The events part of a verdict.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct WatchTally {
    /// Followers.
    pub watchers: usize,
    /// Events the log holds at the end, which each follower should have received.
    pub expected: usize,
    /// Events received, all followers together.
    pub received: usize,
    /// Expected events some follower never received (counted per follower).
    pub missing: usize,
    /// Events a follower received more than once.
    pub repeated: usize,
    /// Events received after one with a higher sequence.
    pub out_of_order: usize,
    /// Streams that ended and were resumed, all followers together.
    pub reconnects: usize,
}

impl WatchTally {
    /// Missing, repeated and out-of-order events, as the report names them.
    pub(crate) fn faults(&self) -> Vec<String> {
        [
            ("events missing", self.missing),
            ("events repeated", self.repeated),
            ("events out of order", self.out_of_order),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{n} {what}"))
        .collect()
    }
}

/// The followers' counts as they go, for the live page: a handle that outlives nothing.
#[derive(Clone)]
pub(crate) struct WatchProgress(Vec<Arc<Mutex<Followed>>>);

impl WatchProgress {
    /// Followers, events received by all of them together, and streams they resumed.
    pub(crate) fn now(&self) -> (usize, usize, usize) {
        self.0.iter().fold((self.0.len(), 0, 0), |(n, received, resumed), f| {
            let f = lock(f);
            (n, received + f.sequences.len(), resumed + f.streams)
        })
    }
}

impl Watchers {
    /// The followers' counts as they go.
    pub(crate) fn progress(&self) -> WatchProgress {
        WatchProgress(self.followed.clone())
    }

    /// `n` followers of the server at `http` (`http://host:port`), from the first event.
    pub(crate) fn start(n: usize, http: &str) -> Self {
        let (target, rx) = watch::channel(Some(http.to_owned()));
        let followed: Vec<Arc<Mutex<Followed>>> = (0..n).map(|_| Arc::default()).collect();
        let tasks = followed
            .iter()
            .map(|f| tokio::spawn(follow(rx.clone(), Arc::clone(f))))
            .collect();
        Self {
            followed,
            tasks,
            target,
        }
    }

    /// Points the followers at another server (the one the database is read back through).
    pub(crate) fn follow(&self, http: &str) {
        self.target.send_replace(Some(http.to_owned()));
    }

    /// Reads the history the server at `http` holds, waits (at most `patience`) until every
    /// follower has received as many events, stops them, and compares.
    pub(crate) async fn finish(self, http: &str, patience: Duration) -> anyhow::Result<WatchTally> {
        let expected = history(http).await?;
        let _ = tokio::time::timeout(patience, async {
            loop {
                if self.followed.iter().all(|f| lock(f).sequences.len() >= expected.len()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        self.target.send_replace(None);
        for task in &self.tasks {
            task.abort();
        }
        Ok(compare(&expected, &self.followed))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn compare(expected: &[u64], followed: &[Arc<Mutex<Followed>>]) -> WatchTally {
    let mut tally = WatchTally {
        watchers: followed.len(),
        expected: expected.len(),
        received: 0,
        missing: 0,
        repeated: 0,
        out_of_order: 0,
        reconnects: 0,
    };
    for f in followed {
        let f = lock(f);
        tally.received += f.sequences.len();
        tally.reconnects += f.streams;
        let unique: HashSet<u64> = f.sequences.iter().copied().collect();
        tally.repeated += f.sequences.len() - unique.len();
        tally.missing += expected.iter().filter(|s| !unique.contains(s)).count();
        tally.out_of_order += f.sequences.windows(2).filter(|w| w[1] < w[0]).count();
    }
    tally
}

/// One follower: follows wherever `target` says, resuming after the last sequence received.
async fn follow(mut target: watch::Receiver<Option<String>>, followed: Arc<Mutex<Followed>>) {
    let mut after = 0_u64;
    loop {
        let Some(http) = target.borrow_and_update().clone() else {
            return;
        };
        let Ok(mut api) = HttpApi::new(&http) else {
            return;
        };
        let from = after;
        let mut each = |event: Value| {
            if let Some(sequence) = event["sequence"].as_u64() {
                after = sequence;
                lock(&followed).sequences.push(sequence);
            }
        };
        let moved = target.clone();
        let stop = async move {
            let mut moved = moved;
            let _ = moved.changed().await;
        };
        tokio::pin!(stop);
        match api.watch(Some(from), None, &mut each, stop.as_mut()).await {
            Ok(StreamEnd::Ended) => lock(&followed).streams += 1,
            Ok(StreamEnd::Interrupted) => {}
            // Down (between a process and the next, say): try again shortly.
            Err(_) => {
                let _ = tokio::time::timeout(Duration::from_millis(50), target.changed()).await;
            }
        }
    }
}

/// Every sequence the log of the server at `http` holds: the stream from the start, read until
/// it has been quiet for a moment (nothing writes to a server the tools read back through).
async fn history(http: &str) -> anyhow::Result<Vec<u64>> {
    let mut api = HttpApi::new(http)?;
    let seen = Arc::new(Mutex::new((Vec::new(), tokio::time::Instant::now())));
    let mut each = {
        let seen = Arc::clone(&seen);
        move |event: Value| {
            let mut seen = lock(&seen);
            seen.0.extend(event["sequence"].as_u64());
            seen.1 = tokio::time::Instant::now();
        }
    };
    let quiet = {
        let seen = Arc::clone(&seen);
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if lock(&seen).1.elapsed() > Duration::from_millis(500) {
                    return;
                }
            }
        }
    };
    tokio::pin!(quiet);
    api.watch(Some(0), None, &mut each, quiet.as_mut())
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the event log back: {e}"))?;
    let sequences = lock(&seen).0.clone();
    Ok(sequences)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn followed(sequences: &[u64], streams: usize) -> Arc<Mutex<Followed>> {
        Arc::new(Mutex::new(Followed {
            sequences: sequences.to_vec(),
            streams,
        }))
    }

    #[test]
    fn a_follower_is_compared_with_the_history() {
        let expected = [1, 2, 3, 4];
        let clean = compare(&expected, &[followed(&[1, 2, 3, 4], 1), followed(&[1, 2, 3, 4], 0)]);
        assert!(clean.faults().is_empty(), "{clean:?}");
        assert_eq!((clean.received, clean.reconnects), (8, 1));
        let broken = compare(&expected, &[followed(&[1, 3, 3, 2], 2)]);
        assert_eq!((broken.missing, broken.repeated, broken.out_of_order), (1, 1, 1));
        assert_eq!(
            broken.faults(),
            ["1 events missing", "1 events repeated", "1 events out of order"]
        );
    }
}
