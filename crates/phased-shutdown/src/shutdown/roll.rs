//! Where each component's stop stands, and the report's entries as they come: shared with
//! [`Shutdown::run`](super::Shutdown::run), so a shutdown cut short by a second signal still
//! reports every component.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::Observer;
use crate::report::{Entry, Outcome};

/// Every component by id (tasks, then stop functions) with where its stop stands, shared with
/// [`Shutdown::run`] so that a shutdown cut short by a second signal still reports each one:
/// those stopping as interrupted, those whose phase never came as not reached.
#[derive(Clone)]
pub(super) struct Roll {
    inner: Arc<Mutex<RollInner>>,
}

struct RollInner {
    /// `(component, phase)` by id.
    names: Vec<(String, String)>,
    started: HashMap<usize, Instant>,
    done: HashSet<usize>,
    /// The drain delay's start, while it runs.
    drain: Option<Instant>,
}

impl Roll {
    /// The drain delay's id.
    pub(super) const DRAIN: usize = usize::MAX;

    pub(super) fn new(names: Vec<(String, String)>, drain: Option<Instant>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(RollInner {
                names,
                started: HashMap::new(),
                done: HashSet::new(),
                drain,
            })),
        }
    }

    pub(super) fn start(&self, id: usize, at: Instant) {
        if let Ok(mut roll) = self.inner.lock() {
            roll.started.insert(id, at);
        }
    }

    pub(super) fn done(&self, id: usize) {
        if let Ok(mut roll) = self.inner.lock() {
            if id == Self::DRAIN {
                roll.drain = None;
            } else {
                roll.done.insert(id);
            }
        }
    }

    /// The entries of every component not reported yet, as a second signal leaves them.
    pub(super) fn unfinished(&self, trigger: Instant) -> Vec<Entry> {
        let Ok(roll) = self.inner.lock() else {
            return Vec::new();
        };
        let mut entries = Vec::new();
        if let Some(at) = roll.drain {
            entries.push(Entry {
                component: "drain delay".into(),
                phase: "drain".into(),
                started: at - trigger,
                took: at.elapsed(),
                outcome: Outcome::Interrupted,
                counts: Vec::new(),
            });
        }
        for (id, (component, phase)) in roll.names.iter().enumerate() {
            if roll.done.contains(&id) {
                continue;
            }
            let (started, took, outcome) = match roll.started.get(&id) {
                Some(at) => (*at - trigger, at.elapsed(), Outcome::Interrupted),
                None => (trigger.elapsed(), Duration::ZERO, Outcome::NotReached),
            };
            entries.push(Entry {
                component: component.clone(),
                phase: phase.clone(),
                started,
                took,
                outcome,
                counts: Vec::new(),
            });
        }
        entries
    }
}

/// The report's entries as they come, each shown to the observer when added. Shared, so a
/// shutdown cut short still reports what had finished.
pub(super) struct Entries {
    pub(super) list: Arc<Mutex<Vec<Entry>>>,
    pub(super) observer: Option<Observer>,
}

impl Entries {
    pub(super) fn push(&mut self, entry: Entry) {
        if let Some(observe) = &self.observer {
            observe(&entry);
        }
        if let Ok(mut list) = self.list.lock() {
            list.push(entry);
        }
    }
}
