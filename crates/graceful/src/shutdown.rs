//! The coordinator: registration, the wait for a trigger, and the phased stop.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::report::{Entry, Outcome, Reason, Report};
use crate::signal::Signals;
use crate::{DrainSwitch, Readiness, StopResult, StopSignal};

/// A step of the shutdown. Phases run in the order they were created; the components of one
/// phase stop concurrently. Returned by [`Shutdown::phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase(usize);

/// What a second signal during shutdown does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondSignal {
    /// Exit the process at once with this code (130 by default: 128 + SIGINT, what shells
    /// report for an interrupted program). The operator asked twice; waiting longer is wrong.
    Exit(i32),
    /// Ignore it and let the shutdown finish.
    Ignore,
}

/// Starts a shutdown from code: tests, embedding, or a component that decides the process
/// must stop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl ShutdownHandle {
    /// Triggers the shutdown. The first reason given is the one reported; later calls do
    /// nothing.
    pub fn shutdown(&self, reason: impl Into<String>) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert_with(|| reason.into());
        }
        self.token.cancel();
    }
}

type BoxedStop = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send>;

struct PhaseSpec {
    name: String,
    budget: Option<Duration>,
}

struct Hook {
    name: String,
    phase: usize,
    stop: BoxedStop,
}

struct Task {
    name: String,
    phase: usize,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), String>>,
}

/// Sends its id when dropped: when the future holding it completes, panics or is aborted. This
/// is how the coordinator learns, without polling, that a component ended.
struct EndGuard {
    id: usize,
    ended: mpsc::UnboundedSender<usize>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let _ = self.ended.send(self.id);
    }
}

/// The shutdown coordinator. Register components in phases, then [`Shutdown::run`]: it waits
/// for a trigger (a signal, a [`ShutdownHandle`], or a component ending on its own) and then
///
/// 1. turns [`Readiness`] to draining,
/// 2. waits the drain delay (still serving: load balancers need time to notice),
/// 3. runs the phases in order, the components of each concurrently, each phase bounded by its
///    budget and all of it by the global deadline; whatever is still running at a deadline is
///    aborted and named,
///
/// and returns a [`Report`]. Every task it starts is joined before `run` returns.
pub struct Shutdown {
    phases: Vec<PhaseSpec>,
    hooks: Vec<Hook>,
    tasks: Vec<Task>,
    deadline: Duration,
    drain_delay: Duration,
    signals: Option<Signals>,
    second_signal: SecondSignal,
    draining: DrainSwitch,
    handle: ShutdownHandle,
    ended_tx: mpsc::UnboundedSender<usize>,
    ended_rx: mpsc::UnboundedReceiver<usize>,
    observer: Option<Observer>,
}

/// Called with each report entry the moment it is known.
type Observer = Box<dyn Fn(&Entry) + Send + Sync>;

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// The default global deadline: what Kubernetes allows before SIGKILL.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

    /// A coordinator with no phases, a 30 s deadline, no drain delay, and no signal handling
    /// (see [`Shutdown::catch_signals`]).
    pub fn new() -> Self {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Self {
            phases: Vec::new(),
            hooks: Vec::new(),
            tasks: Vec::new(),
            deadline: Self::DEFAULT_DEADLINE,
            drain_delay: Duration::ZERO,
            signals: None,
            second_signal: SecondSignal::Exit(130),
            draining: DrainSwitch::new(),
            handle: ShutdownHandle {
                token: CancellationToken::new(),
                reason: Arc::new(Mutex::new(None)),
            },
            ended_tx,
            ended_rx,
            observer: None,
        }
    }

    /// The global deadline, counted from the trigger and including the drain delay.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// How long to keep serving, already unready, before the first phase.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Listens for SIGINT and SIGTERM from now on (handlers are installed here, so a signal
    /// that arrives before [`Shutdown::run`] is not lost). Must be called inside a runtime.
    pub fn catch_signals(mut self) -> std::io::Result<Self> {
        self.signals = Some(Signals::install()?);
        Ok(self)
    }

    /// What a second signal during shutdown does ([`SecondSignal::Exit`]`(130)` by default).
    pub fn on_second_signal(mut self, action: SecondSignal) -> Self {
        self.second_signal = action;
        self
    }

    /// Calls `observe` with each entry of the report as soon as that component has stopped,
    /// while the shutdown is still going: how a metrics system or a supervisor learns the
    /// phase durations without waiting for [`Shutdown::run`] to return (the process may be
    /// gone by then, or killed at the deadline).
    pub fn on_entry(mut self, observe: impl Fn(&Entry) + Send + Sync + 'static) -> Self {
        self.observer = Some(Box::new(observe));
        self
    }

    /// Adds a phase after the existing ones, bounded only by the global deadline.
    pub fn phase(&mut self, name: impl Into<String>) -> Phase {
        self.phases.push(PhaseSpec {
            name: name.into(),
            budget: None,
        });
        Phase(self.phases.len() - 1)
    }

    /// Adds a phase with its own time budget (still within the global deadline), so one slow
    /// phase cannot eat the time a later one needs, such as closing the database.
    pub fn phase_with_budget(&mut self, name: impl Into<String>, budget: Duration) -> Phase {
        self.phases.push(PhaseSpec {
            name: name.into(),
            budget: Some(budget),
        });
        Phase(self.phases.len() - 1)
    }

    /// The readiness switch adapters watch.
    pub fn readiness(&self) -> Readiness {
        self.draining.readiness()
    }

    /// A handle that triggers this shutdown.
    pub fn handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Registers a stop function, called when `phase` comes: close a pool, flush a buffer.
    pub fn on_stop<F, Fut>(&mut self, phase: Phase, name: impl Into<String>, stop: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: StopResult,
    {
        self.hooks.push(Hook {
            name: name.into(),
            phase: phase.0,
            stop: Box::new(move || Box::pin(async move { stop().await.into_stop_result() })),
        });
    }

    /// Starts a long-running component now (a server, a worker) as a task this coordinator
    /// owns. It gets a [`StopSignal`] that fires when `phase` comes, and should then finish its
    /// work and return; its stop is done when it has returned. If it ends on its own before
    /// that, the whole shutdown starts ([`Reason::ComponentEnded`]). Must be called inside a
    /// runtime.
    pub fn spawn<F, Fut>(&mut self, phase: Phase, name: impl Into<String>, run: F)
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: StopResult,
    {
        let stop = CancellationToken::new();
        let guard = EndGuard {
            id: self.tasks.len(),
            ended: self.ended_tx.clone(),
        };
        let future = run(StopSignal(stop.clone()));
        let handle = tokio::spawn(async move {
            let _guard = guard;
            future.await.into_stop_result()
        });
        self.tasks.push(Task {
            name: name.into(),
            phase: phase.0,
            stop,
            handle,
        });
    }

    /// Runs `work` (start-up: opening a database, binding ports) unless a signal or a
    /// [`ShutdownHandle`] asks for a stop first; then `work` is dropped and the reason is
    /// returned, so a process told to stop while it starts exits promptly instead of finishing
    /// a start-up nobody wants (or dying by the signal's default action). With
    /// [`Shutdown::catch_signals`] called first, a signal that came before this call counts.
    pub async fn unless_triggered<F: Future>(&mut self, work: F) -> Result<F::Output, Reason> {
        let token = self.handle.token.clone();
        tokio::select! {
            out = work => Ok(out),
            () = token.cancelled() => {
                let why = self.handle.reason.lock().ok().and_then(|r| r.clone());
                Err(Reason::Requested(why.unwrap_or_default()))
            }
            signal = async {
                match &mut self.signals {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            } => Err(Reason::Signal(signal)),
        }
    }

    /// Waits for a trigger, then shuts down as described on [`Shutdown`], and reports.
    pub async fn run(mut self) -> Report {
        let (reason, ended_early) = self.wait_for_trigger().await;
        let started = Instant::now();
        tracing::info!(reason = %reason, "shutdown started: readiness off");
        self.draining.start_draining();

        let Shutdown {
            phases,
            hooks,
            tasks,
            deadline,
            drain_delay,
            mut signals,
            second_signal,
            ended_tx,
            mut ended_rx,
            observer,
            ..
        } = self;
        let plan = Plan {
            phases,
            hooks,
            tasks,
            ended_early,
            started,
            deadline_at: started + deadline,
            drain_delay,
            ended_tx,
            entries: Entries {
                list: Vec::new(),
                observer,
            },
        };
        let entries = tokio::select! {
            entries = plan.execute(&mut ended_rx) => entries,
            signal = second(&mut signals, second_signal) => {
                tracing::error!(signal, code = ?second_signal, "second signal during shutdown: exiting now");
                if let SecondSignal::Exit(code) = second_signal {
                    std::process::exit(code);
                }
                unreachable!("second() never resolves when second signals are ignored")
            }
        };
        Report {
            reason,
            entries,
            total: started.elapsed(),
            deadline,
        }
    }

    async fn wait_for_trigger(&mut self) -> (Reason, HashSet<usize>) {
        let mut ended_early = HashSet::new();
        let token = self.handle.token.clone();
        let reason = tokio::select! {
            () = token.cancelled() => {
                let why = self.handle.reason.lock().ok().and_then(|r| r.clone());
                Reason::Requested(why.unwrap_or_default())
            }
            signal = async {
                match &mut self.signals {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            } => Reason::Signal(signal),
            Some(id) = self.ended_rx.recv() => {
                ended_early.insert(id);
                let name = self.tasks.get(id).map(|t| t.name.clone()).unwrap_or_default();
                tracing::error!(component = %name, "a component ended on its own");
                Reason::ComponentEnded(name)
            }
        };
        while let Ok(id) = self.ended_rx.try_recv() {
            ended_early.insert(id);
        }
        (reason, ended_early)
    }
}

/// Resolves on a second signal when that should end the process; never otherwise.
async fn second(signals: &mut Option<Signals>, action: SecondSignal) -> &'static str {
    match (signals, action) {
        (Some(s), SecondSignal::Exit(_)) => s.next().await,
        _ => std::future::pending().await,
    }
}

/// The stop itself, after the trigger.
struct Plan {
    phases: Vec<PhaseSpec>,
    hooks: Vec<Hook>,
    tasks: Vec<Task>,
    ended_early: HashSet<usize>,
    started: Instant,
    deadline_at: Instant,
    drain_delay: Duration,
    ended_tx: mpsc::UnboundedSender<usize>,
    entries: Entries,
}

/// The report's entries as they come, each shown to the observer when added.
struct Entries {
    list: Vec<Entry>,
    observer: Option<Observer>,
}

impl Entries {
    fn push(&mut self, entry: Entry) {
        if let Some(observe) = &self.observer {
            observe(&entry);
        }
        self.list.push(entry);
    }
}

/// A component whose stop is under way in the current phase.
struct Stopping {
    id: usize,
    name: String,
    started: Instant,
    handle: JoinHandle<Result<(), String>>,
    early: bool,
}

impl Plan {
    async fn execute(self, ended: &mut mpsc::UnboundedReceiver<usize>) -> Vec<Entry> {
        let Plan {
            phases,
            hooks,
            tasks,
            mut ended_early,
            started,
            deadline_at,
            drain_delay,
            ended_tx,
            mut entries,
        } = self;
        if !drain_delay.is_zero() {
            tracing::info!(
                delay_ms = drain_delay.as_millis() as u64,
                "drain delay: still serving, unready"
            );
            tokio::time::sleep_until((started + drain_delay).min(deadline_at)).await;
            entries.push(Entry {
                component: "drain delay".into(),
                phase: "drain".into(),
                started: Duration::ZERO,
                took: started.elapsed(),
                outcome: Outcome::Stopped,
            });
        }

        // Hook ids follow task ids so both report through one channel.
        let mut tasks: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
        let mut hooks: Vec<Option<Hook>> = hooks.into_iter().map(Some).collect();
        let hook_base = tasks.len();

        for (index, phase) in phases.iter().enumerate() {
            let phase_start = Instant::now();
            let phase_deadline = phase.budget.map_or(deadline_at, |b| (phase_start + b).min(deadline_at));
            let mut stopping = Vec::new();
            let mut skipped = Vec::new();
            for (id, slot) in tasks.iter_mut().enumerate() {
                if slot.as_ref().is_some_and(|t| t.phase == index)
                    && let Some(task) = slot.take()
                {
                    task.stop.cancel();
                    stopping.push(Stopping {
                        id,
                        name: task.name,
                        started: phase_start,
                        handle: task.handle,
                        early: ended_early.contains(&id),
                    });
                }
            }
            for (offset, slot) in hooks.iter_mut().enumerate() {
                if slot.as_ref().is_some_and(|h| h.phase == index)
                    && let Some(hook) = slot.take()
                {
                    if Instant::now() >= deadline_at {
                        skipped.push(hook.name);
                        continue;
                    }
                    let guard = EndGuard {
                        id: hook_base + offset,
                        ended: ended_tx.clone(),
                    };
                    let stop = (hook.stop)();
                    let handle = tokio::spawn(async move {
                        let _guard = guard;
                        stop.await
                    });
                    stopping.push(Stopping {
                        id: hook_base + offset,
                        name: hook.name,
                        started: phase_start,
                        handle,
                        early: false,
                    });
                }
            }
            if stopping.is_empty() && skipped.is_empty() {
                continue;
            }
            tracing::info!(phase = %phase.name, components = stopping.len(), "phase started");
            for name in skipped {
                entries.push(Entry {
                    component: name,
                    phase: phase.name.clone(),
                    started: phase_start - started,
                    took: Duration::ZERO,
                    outcome: Outcome::Skipped,
                });
            }
            let timer = tokio::time::sleep_until(phase_deadline);
            tokio::pin!(timer);
            while !stopping.is_empty() {
                tokio::select! {
                    Some(id) = ended.recv() => {
                        if let Some(pos) = stopping.iter().position(|s| s.id == id) {
                            let s = stopping.swap_remove(pos);
                            entries.push(finish(s, &phase.name, started).await);
                        } else {
                            // A component of a later phase ended before its turn.
                            ended_early.insert(id);
                        }
                    }
                    () = &mut timer => {
                        for s in stopping.drain(..) {
                            s.handle.abort();
                            entries.push(finish(s, &phase.name, started).await);
                        }
                    }
                }
            }
        }
        entries.list
    }
}

/// Joins a component's task and turns how it ended into a report entry.
async fn finish(s: Stopping, phase: &str, trigger: Instant) -> Entry {
    let joined = s.handle.await;
    let outcome = match joined {
        Err(e) if e.is_cancelled() => Outcome::TimedOut,
        Err(e) => Outcome::Panicked(panic_message(e)),
        // Finished in the instant between the deadline and the abort: it made it.
        Ok(result) if s.early => Outcome::EndedEarly(result.err()),
        Ok(Ok(())) => Outcome::Stopped,
        Ok(Err(e)) => Outcome::Failed(e),
    };
    let entry = Entry {
        component: s.name,
        phase: phase.to_owned(),
        started: s.started - trigger,
        took: s.started.elapsed(),
        outcome,
    };
    if entry.outcome.is_clean() {
        tracing::info!(component = %entry.component, took_ms = entry.took.as_millis() as u64, "stopped");
    } else {
        tracing::warn!(component = %entry.component, outcome = %entry.outcome, "did not stop cleanly");
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
