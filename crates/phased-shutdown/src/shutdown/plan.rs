//! The stop itself, after the trigger: the drain delay, then each phase in turn, its components
//! stopped together and joined (or aborted at the phase's deadline), each ending as an entry of
//! the report.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use super::roll::{Entries, Roll};
use super::{ABORT_JOIN, BoxedStop, EndGuard, Hook, PhaseSpec, Task};
use crate::StopSignal;
use crate::report::{Entry, Failure, Outcome};
use crate::watchdog;

/// The stop itself, after the trigger.
pub(super) struct Plan {
    pub(super) phases: Vec<PhaseSpec>,
    /// Every component by id: the tasks, then the stop functions (ids as the roll has them).
    pub(super) components: Vec<Option<Component>>,
    /// Every component known to have ended, whenever it was learnt: its end message has been
    /// consumed, so its phase must not wait for one.
    pub(super) ended_early: HashSet<usize>,
    pub(super) started: Instant,
    pub(super) deadline_at: Instant,
    /// What the watchdog allows past the deadline: part of the time a supervisor should wait.
    pub(super) overrun_grace: Duration,
    pub(super) drain_delay: Duration,
    pub(super) ended_tx: mpsc::UnboundedSender<usize>,
    pub(super) entries: Entries,
    /// Every task's abort handle, for a second signal to abandon what is still stopping.
    pub(super) aborts: Arc<Mutex<Vec<AbortHandle>>>,
    /// What the watchdog reports as still stopping, if there is a watchdog.
    pub(super) watched: Option<Arc<watchdog::Shared>>,
    /// Which components have started stopping and which are done, for a report cut short.
    pub(super) roll: Roll,
}

/// Something the coordinator stops: a task it runs, or a stop function it calls.
pub(super) enum Component {
    Task(Task),
    Hook(Hook),
}

impl Component {
    fn phase(&self) -> usize {
        match self {
            Component::Task(task) => task.phase,
            Component::Hook(hook) => hook.phase,
        }
    }
}

/// A component whose stop is under way in the current phase.
struct Stopping {
    id: usize,
    name: String,
    started: Instant,
    handle: JoinHandle<Result<(), Failure>>,
    /// Ended before its phase (learnt any time before).
    early: bool,
    oneshot: bool,
    /// A task's stop signal, for the counts it recorded; `None` for a stop function.
    signal: Option<StopSignal>,
}

/// What one phase has to do: the components it is stopping, and those it had no time to start.
struct Started {
    stopping: Vec<Stopping>,
    skipped: Vec<(usize, String)>,
}

impl Plan {
    /// Runs the drain delay, then every phase in order.
    pub(super) async fn execute(mut self, ended: &mut mpsc::UnboundedReceiver<usize>) {
        self.drain(ended).await;
        for index in 0..self.phases.len() {
            self.run_phase(index, ended).await;
        }
    }

    /// Keeps serving, unready, for the drain delay. A component that ends meanwhile is noted,
    /// so its phase reports it as ended early (with its error) instead of waiting for an end
    /// that was already announced.
    async fn drain(&mut self, ended: &mut mpsc::UnboundedReceiver<usize>) {
        if self.drain_delay.is_zero() {
            return;
        }
        tracing::info!(
            event = "drain.started",
            delay_ms = self.drain_delay.as_millis() as u64,
            "drain delay: still serving, unready"
        );
        let until = tokio::time::sleep_until((self.started + self.drain_delay).min(self.deadline_at));
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => break,
                Some(id) = ended.recv() => { self.ended_early.insert(id); }
            }
        }
        self.roll.done(Roll::DRAIN);
        self.entries.push(Entry {
            component: "drain delay".into(),
            phase: "drain".into(),
            started: Duration::ZERO,
            took: self.started.elapsed(),
            outcome: Outcome::Stopped,
            counts: Vec::new(),
        });
    }

    /// Stops the components of phase `index` together, bounded by its budget and the deadline.
    async fn run_phase(&mut self, index: usize, ended: &mut mpsc::UnboundedReceiver<usize>) {
        let phase_start = Instant::now();
        let (name, budget) = (self.phases[index].name.clone(), self.phases[index].budget);
        let phase_deadline = budget.map_or(self.deadline_at, |b| (phase_start + b).min(self.deadline_at));
        let Started { stopping, skipped } = self.start_phase(index, phase_start, phase_deadline);
        if stopping.is_empty() && skipped.is_empty() {
            return;
        }
        tracing::info!(event = "phase.started", phase = %name, components = stopping.len(), "phase started");
        crate::systemd::phase(
            &name,
            index + 1,
            self.phases.len(),
            stopping.len(),
            self.deadline_at.saturating_duration_since(phase_start) + self.overrun_grace,
        );
        for (id, component) in skipped {
            self.roll.done(id);
            self.entries.push(Entry {
                component,
                phase: name.clone(),
                started: phase_start - self.started,
                took: Duration::ZERO,
                outcome: Outcome::Skipped,
                counts: Vec::new(),
            });
        }
        self.join_phase(&name, stopping, phase_deadline, ended).await;
    }

    /// Asks every component of phase `index` to stop: a task gets its stop signal, a stop
    /// function is called. When the phase starts after the deadline, none is started: each is
    /// skipped (a task aborted), not its fault.
    fn start_phase(&mut self, index: usize, phase_start: Instant, phase_deadline: Instant) -> Started {
        let out_of_time = phase_start >= self.deadline_at;
        let mut started = Started {
            stopping: Vec::new(),
            skipped: Vec::new(),
        };
        for id in 0..self.components.len() {
            if self.components[id].as_ref().is_none_or(|c| c.phase() != index) {
                continue;
            }
            let Some(component) = self.components[id].take() else {
                continue;
            };
            let early = self.ended_early.contains(&id);
            let stopping = match component {
                Component::Task(task) if out_of_time && !early => {
                    task.handle.abort();
                    started.skipped.push((id, task.name));
                    continue;
                }
                Component::Hook(hook) if out_of_time => {
                    started.skipped.push((id, hook.name));
                    continue;
                }
                Component::Task(task) => {
                    task.stop.stop_by(phase_deadline);
                    Stopping {
                        id,
                        name: task.name,
                        started: phase_start,
                        handle: task.handle,
                        early,
                        oneshot: task.oneshot,
                        signal: Some(task.stop),
                    }
                }
                Component::Hook(hook) => Stopping {
                    id,
                    name: hook.name,
                    started: phase_start,
                    handle: self.call(id, hook.stop),
                    early: false,
                    oneshot: false,
                    signal: None,
                },
            };
            self.roll.start(id, phase_start);
            started.stopping.push(stopping);
        }
        started
    }

    /// Calls a stop function on its own task, which reports its end like a task's.
    fn call(&self, id: usize, stop: BoxedStop) -> JoinHandle<Result<(), Failure>> {
        let guard = EndGuard {
            id,
            ended: self.ended_tx.clone(),
        };
        let stop = stop();
        let handle = tokio::spawn(async move {
            let _guard = guard;
            stop.await
        });
        if let Ok(mut aborts) = self.aborts.lock() {
            aborts.push(handle.abort_handle());
        }
        handle
    }

    /// Waits for each component of the phase to end, reporting each as it does; at the phase's
    /// deadline aborts the rest.
    async fn join_phase(
        &mut self,
        phase: &str,
        stopping: Vec<Stopping>,
        phase_deadline: Instant,
        ended: &mut mpsc::UnboundedReceiver<usize>,
    ) {
        // Those that ended before their phase need no message: it was consumed already.
        let (done, mut stopping): (Vec<_>, Vec<_>) = stopping.into_iter().partition(|s| s.early);
        for s in done {
            self.report(s, phase, false).await;
        }
        self.watch(&stopping, phase);
        let timer = tokio::time::sleep_until(phase_deadline);
        tokio::pin!(timer);
        while !stopping.is_empty() {
            tokio::select! {
                Some(id) = ended.recv() => {
                    if let Some(pos) = stopping.iter().position(|s| s.id == id) {
                        self.report(stopping.swap_remove(pos), phase, false).await;
                        self.watch(&stopping, phase);
                    } else {
                        // A component of a later phase ended before its turn.
                        self.ended_early.insert(id);
                    }
                }
                () = &mut timer => {
                    for s in stopping.drain(..) {
                        s.handle.abort();
                        self.report(s, phase, true).await;
                    }
                }
            }
        }
        self.watch(&stopping, phase);
    }

    /// Joins a component and adds its entry.
    async fn report(&mut self, s: Stopping, phase: &str, aborted: bool) {
        let id = s.id;
        let entry = finish(s, phase, self.started, aborted).await;
        self.entries.push(entry);
        self.roll.done(id);
    }

    /// Tells the watchdog what is still stopping: what it names if the deadline is overrun.
    fn watch(&self, stopping: &[Stopping], phase: &str) {
        if let Some(w) = &self.watched
            && let Ok(mut names) = w.stopping.lock()
        {
            *names = stopping.iter().map(|s| format!("{} ({phase})", s.name)).collect();
        }
    }
}

/// Joins a component's task (at most [`ABORT_JOIN`] after an abort) and turns how it ended
/// into a report entry.
async fn finish(s: Stopping, phase: &str, trigger: Instant, aborted: bool) -> Entry {
    let joined = if aborted {
        tokio::time::timeout(ABORT_JOIN, s.handle).await.ok()
    } else {
        Some(s.handle.await)
    };
    let outcome = match joined {
        // Blocking its thread: the abort cannot reach it. Left behind, named.
        None => Outcome::TimedOut,
        Some(Err(e)) if e.is_cancelled() => Outcome::TimedOut,
        Some(Err(e)) => Outcome::Panicked(panic_message(e)),
        Some(Ok(result)) if s.oneshot && s.early => match result {
            Ok(()) => Outcome::Finished,
            Err(e) => Outcome::Failed(e),
        },
        Some(Ok(result)) if s.early => Outcome::EndedEarly(result.err()),
        // Finished in the instant between the deadline and the abort: it made it.
        Some(Ok(Ok(()))) => Outcome::Stopped,
        Some(Ok(Err(e))) => Outcome::Failed(e),
    };
    let entry = Entry {
        component: s.name,
        phase: phase.to_owned(),
        started: s.started - trigger,
        took: s.started.elapsed(),
        outcome,
        counts: s.signal.map(|signal| signal.counts()).unwrap_or_default(),
    };
    if entry.outcome.is_clean() {
        tracing::info!(event = "component.stopped", component = %entry.component, took_ms = entry.took.as_millis() as u64, clean = true, "stopped");
    } else {
        tracing::warn!(event = "component.stopped", component = %entry.component, outcome = %entry.outcome, clean = false, "did not stop cleanly");
    }
    entry
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into()),
        Err(e) => e.to_string(),
    }
}
