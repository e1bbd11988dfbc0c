//! The coordinator: registration, the wait for a trigger, and the phased stop.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::report::{Entry, Failure, Reason, Report};
use crate::signal::Signals;
use crate::watchdog::{self, Watchdog};
use crate::{DrainSwitch, Readiness, StopResult, StopSignal};

mod plan;
mod roll;

use plan::{Component, Plan};
use roll::{Entries, Roll};

/// How long an aborted straggler may take to be joined. A task that is blocking its thread
/// cannot be aborted (an abort takes effect at its next `.await`); it is left behind, named in
/// the report, rather than holding the shutdown up without bound.
const ABORT_JOIN: Duration = Duration::from_millis(100);

/// Tells coordinators apart, so a [`Phase`] cannot be used with the wrong one.
static NEXT_COORDINATOR: AtomicU64 = AtomicU64::new(0);

/// A step of the shutdown. Phases run in the order they were created; the components of one
/// phase stop concurrently. Returned by [`Shutdown::phase`], and usable only with the
/// coordinator that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    owner: u64,
    index: usize,
}

/// What a second signal during a signal-started shutdown does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondSignal {
    /// Stop at once (the default): [`Shutdown::run`] returns the report so far, with what was
    /// still stopping aborted, and [`Report::exit_code`] is 128 + the signal's number (130 for
    /// SIGINT, 143 for SIGTERM). If the process has not exited a second later (a wedged
    /// runtime), the watchdog exits it with that code. The operator asked twice; waiting
    /// longer is wrong.
    Exit,
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
    /// nothing. Returns at once: the shutdown itself runs in [`Shutdown::run`], whose return
    /// says it is done.
    pub fn shutdown(&self, reason: impl Into<String>) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert_with(|| reason.into());
        }
        self.token.cancel();
    }

    fn reason(&self) -> Reason {
        let why = self.reason.lock().ok().and_then(|r| r.clone());
        Reason::Requested(why.unwrap_or_default())
    }
}

type BoxedStop = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>> + Send>;

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
    stop: StopSignal,
    handle: JoinHandle<Result<(), Failure>>,
    /// May finish its work before shutdown without that being a fault ([`Shutdown::spawn_oneshot`]).
    oneshot: bool,
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
/// and returns a [`Report`]. Every task it starts is joined before `run` returns, except one
/// that blocks its thread past the deadline (an abort cannot reach it): that one is named in
/// the report and left behind. A watchdog thread makes the deadline hold even when the runtime
/// itself is wedged (see [`Shutdown::watchdog_grace`]).
///
/// Dropping a coordinator without running it (set-up failed half-way) stops what it started:
/// readiness turns to draining and its tasks are aborted.
pub struct Shutdown {
    id: u64,
    /// How the shutdown runs, as the builder methods set it.
    settings: Settings,
    /// What it stops: the phases, and the components registered in them.
    phases: Vec<PhaseSpec>,
    hooks: Vec<Hook>,
    tasks: Vec<Task>,
    /// Run state: the triggers, readiness, and how components report their end.
    signals: Option<Signals>,
    draining: DrainSwitch,
    handle: ShutdownHandle,
    ended_tx: mpsc::UnboundedSender<usize>,
    ended_rx: mpsc::UnboundedReceiver<usize>,
    ran: bool,
    /// Run the moment the shutdown begins, before any phase: what must be let go before a
    /// server closes (an upgrade's second handles on the listeners).
    at_begin: Vec<Box<dyn FnOnce() + Send>>,
}

/// The coordinator's configuration, apart from its run state.
struct Settings {
    deadline: Duration,
    drain_delay: Duration,
    watchdog_grace: Option<Duration>,
    second_signal: SecondSignal,
    termination_message: Option<std::path::PathBuf>,
    observer: Option<Observer>,
    on_start: Option<OnStart>,
}

/// Called with each report entry the moment it is known.
type Observer = Box<dyn Fn(&Entry) + Send + Sync>;

/// Called once, when the shutdown starts.
type OnStart = Box<dyn FnOnce(&Reason) + Send>;

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        if self.ran {
            return;
        }
        // Never run: nothing will stop these tasks or report on them, and a readiness that says
        // "ready" while nothing serves would send traffic into the void.
        self.draining.start_draining();
        for task in &self.tasks {
            task.stop.cancel();
            task.handle.abort();
        }
    }
}

impl Shutdown {
    /// The default global deadline: within what Kubernetes allows before SIGKILL.
    ///
    /// 28 s, with the watchdog's 0.5 s grace: the process is gone, report written, before
    /// Kubernetes' default `terminationGracePeriodSeconds` of 30 s ends in SIGKILL (which would
    /// take the report with it). Give a pod a longer grace period before a longer deadline.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(28);

    /// The default time the watchdog allows past the global deadline before it ends the process.
    pub const DEFAULT_WATCHDOG_GRACE: Duration = Duration::from_millis(500);

    /// A coordinator with no phases, a 28 s deadline, no drain delay, the watchdog on, and no
    /// signal handling (see [`Shutdown::catch_signals`]).
    pub fn new() -> Self {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Self {
            id: NEXT_COORDINATOR.fetch_add(1, Ordering::Relaxed),
            settings: Settings {
                deadline: Self::DEFAULT_DEADLINE,
                drain_delay: Duration::ZERO,
                watchdog_grace: Some(Self::DEFAULT_WATCHDOG_GRACE),
                second_signal: SecondSignal::Exit,
                termination_message: None,
                observer: None,
                on_start: None,
            },
            phases: Vec::new(),
            hooks: Vec::new(),
            tasks: Vec::new(),
            signals: None,
            draining: DrainSwitch::new(),
            handle: ShutdownHandle {
                token: CancellationToken::new(),
                reason: Arc::new(Mutex::new(None)),
            },
            ended_tx,
            ended_rx,
            ran: false,
            at_begin: Vec::new(),
        }
    }

    /// The global deadline, counted from the trigger and including the drain delay.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.settings.deadline = deadline;
        self
    }

    /// How long to keep serving, already unready, before the first phase.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.settings.drain_delay = delay;
        self
    }

    /// How long past the global deadline the watchdog waits before it writes what is still
    /// stopping to stderr and exits the process with status 1 (500 ms by default). The
    /// watchdog runs on an OS thread of its own, so this holds when the runtime is wedged.
    /// `None` turns it off: for a program embedding the coordinator that must never have its
    /// process exited by a library.
    pub fn watchdog_grace(mut self, grace: Option<Duration>) -> Self {
        self.settings.watchdog_grace = grace;
        self
    }

    /// Writes [`Report::summary`] to `path` when the shutdown ends (and, if it overruns, the
    /// watchdog's account of what was still stopping): where Kubernetes looks for a
    /// container's termination message (`terminationMessagePath`, `/dev/termination-log` by
    /// default), so `kubectl describe pod` shows why the last shutdown was not clean. Off by
    /// default.
    pub fn termination_message(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.settings.termination_message = Some(path.into());
        self
    }

    /// Listens for SIGINT and SIGTERM from now on (handlers are installed here, so a signal
    /// that arrives before [`Shutdown::run`] is not lost): when this returns, a signal no longer
    /// ends the process by its default action. Must be called inside a runtime.
    pub fn catch_signals(mut self) -> std::io::Result<Self> {
        self.signals = Some(Signals::install()?);
        Ok(self)
    }

    /// What a second signal during a signal-started shutdown does ([`SecondSignal::Exit`] by
    /// default). Which signals count as second:
    ///
    /// - Signals within [`DUPLICATE_WINDOW`](crate::DUPLICATE_WINDOW) (200 ms) of the one that
    ///   started the shutdown are the same request: a supervisor forwarding both SIGINT and
    ///   SIGTERM, or a Ctrl+C that reached a process group twice.
    /// - A shutdown started another way (a [`ShutdownHandle`], such as an in-place upgrade, or
    ///   a component ending) takes the first signal as the first request, not as a second.
    pub fn on_second_signal(mut self, action: SecondSignal) -> Self {
        self.settings.second_signal = action;
        self
    }

    /// Calls `observe` with each entry of the report as soon as that component has stopped,
    /// while the shutdown is still going: how a metrics system or a supervisor learns the
    /// phase durations without waiting for [`Shutdown::run`] to return (the process may be
    /// gone by then, or killed at the deadline).
    pub fn on_entry(mut self, observe: impl Fn(&Entry) + Send + Sync + 'static) -> Self {
        self.settings.observer = Some(Box::new(observe));
        self
    }

    /// Calls `started` once, the moment the shutdown starts (readiness is already off), with
    /// its reason: how a metric or a supervisor learns of it without a task of its own waiting
    /// on [`Readiness::draining`].
    pub fn on_start(mut self, started: impl FnOnce(&Reason) + Send + 'static) -> Self {
        self.settings.on_start = Some(Box::new(started));
        self
    }

    /// Adds a phase after the existing ones, bounded only by the global deadline.
    pub fn phase(&mut self, name: impl Into<String>) -> Phase {
        self.add_phase(name.into(), None)
    }

    /// Adds a phase with its own time budget (still within the global deadline), so one slow
    /// phase cannot eat the time a later one needs, such as closing the database.
    pub fn phase_with_budget(&mut self, name: impl Into<String>, budget: Duration) -> Phase {
        self.add_phase(name.into(), Some(budget))
    }

    fn add_phase(&mut self, name: String, budget: Option<Duration>) -> Phase {
        self.phases.push(PhaseSpec { name, budget });
        Phase {
            owner: self.id,
            index: self.phases.len() - 1,
        }
    }

    /// The phase's index, refusing one made by another coordinator: its components would
    /// never be stopped, joined or reported.
    fn own(&self, phase: Phase) -> usize {
        assert!(
            phase.owner == self.id,
            "phased-shutdown: a Phase of another Shutdown was passed; use the phases of the coordinator you register with"
        );
        phase.index
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
    /// Nothing runs when this returns; the function has run, and its outcome is in the report,
    /// when [`Shutdown::run`] returns.
    ///
    /// # Panics
    /// If `phase` belongs to another coordinator.
    pub fn on_stop<F, Fut>(&mut self, phase: Phase, name: impl Into<String>, stop: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: StopResult,
    {
        let phase = self.own(phase);
        self.hooks.push(Hook {
            name: name.into(),
            phase,
            stop: Box::new(move || Box::pin(async move { stop().await.into_stop_result() })),
        });
    }

    /// Starts a long-running component now (a server, a worker) as a task this coordinator
    /// owns: when this returns, the task has been spawned. It gets a [`StopSignal`] that fires when `phase` comes, and should then finish its
    /// work and return; its stop is done when it has returned. If it ends on its own before
    /// that, successfully or not, the whole shutdown starts ([`Reason::ComponentEnded`]) and
    /// the report is not clean: a server that stops serving by itself is a fault, and a
    /// supervisor's `Restart=on-failure` must see it. Must be called inside a runtime.
    ///
    /// # Panics
    /// If `phase` belongs to another coordinator.
    pub fn spawn<F, Fut>(&mut self, phase: Phase, name: impl Into<String>, run: F)
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: StopResult,
    {
        self.start_task(phase, name.into(), run, false);
    }

    /// Like [`Shutdown::spawn`], for work that may finish by itself (a migration, a cache
    /// warm-up): finishing does not start the shutdown. When `phase` comes it is told to stop
    /// if it still runs; a success before that is reported [`Outcome::Finished`](crate::Outcome::Finished), an error
    /// [`Outcome::Failed`](crate::Outcome::Failed).
    ///
    /// # Panics
    /// If `phase` belongs to another coordinator.
    pub fn spawn_oneshot<F, Fut>(&mut self, phase: Phase, name: impl Into<String>, run: F)
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: StopResult,
    {
        self.start_task(phase, name.into(), run, true);
    }

    fn start_task<F, Fut>(&mut self, phase: Phase, name: String, run: F, oneshot: bool)
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: StopResult,
    {
        let phase = self.own(phase);
        let stop = StopSignal::new();
        let guard = EndGuard {
            id: self.tasks.len(),
            ended: self.ended_tx.clone(),
        };
        let future = run(stop.clone());
        let handle = tokio::spawn(async move {
            let _guard = guard;
            future.await.into_stop_result()
        });
        self.tasks.push(Task {
            name,
            phase,
            stop,
            handle,
            oneshot,
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
            () = token.cancelled() => Err(self.handle.reason()),
            signal = next_signal(&mut self.signals) => Err(Reason::Signal(signal.name)),
        }
    }

    /// Waits for a trigger, then shuts down as described on [`Shutdown`], and reports.
    pub async fn run(mut self) -> Report {
        let (reason, ended_early) = self.wait_for_trigger().await;
        let started = Instant::now();
        self.begin(&reason);
        let watchdog = self.start_watchdog(&reason);
        let plan = self.plan(ended_early, started, watchdog.as_ref());
        // Shared with the plan: a second signal abandons it and still reports.
        let (roll, entries, aborts) = (
            plan.roll.clone(),
            Arc::clone(&plan.entries.list),
            Arc::clone(&plan.aborts),
        );
        let interrupt = watchdog.as_ref().map(|w| w.interrupt.clone());
        let interrupted = tokio::select! {
            () = plan.execute(&mut self.ended_rx) => None,
            () = async {
                match &interrupt {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            } => {
                // Whatever was still stopping is abandoned: abort it rather than leave it running.
                if let Ok(aborts) = aborts.lock() {
                    aborts.iter().for_each(AbortHandle::abort);
                }
                watchdog.as_ref().and_then(|w| w.shared.interrupted.lock().ok().and_then(|s| *s))
            }
        };
        if let Some(w) = &watchdog {
            w.finished();
        }
        let mut entries = entries.lock().map(|e| e.clone()).unwrap_or_default();
        if interrupted.is_some() {
            entries.extend(roll.unfinished(started));
        }
        self.finish(Report {
            reason,
            entries,
            total: started.elapsed(),
            deadline: self.settings.deadline,
            interrupted,
        })
    }

    /// Readiness off first (whoever reads "readiness off" in the log must find it off), then
    /// the log line, systemd's STOPPING=1 and the `on_start` callback.
    /// Runs `release` the moment the shutdown begins, before any phase starts.
    #[cfg(feature = "upgrade")]
    pub(crate) fn at_begin(&mut self, release: impl FnOnce() + Send + 'static) {
        self.at_begin.push(Box::new(release));
    }

    fn begin(&mut self, reason: &Reason) {
        self.draining.start_draining();
        for release in self.at_begin.drain(..) {
            release();
        }
        tracing::info!(event = "shutdown.started", reason = %reason, "shutdown started: readiness off");
        self.ran = true;
        let overrun_grace = self.settings.watchdog_grace.unwrap_or_default();
        crate::systemd::stopping(reason, self.settings.deadline + overrun_grace);
        if let Some(started) = self.settings.on_start.take() {
            started(reason);
        }
    }

    /// The watchdog thread: the deadline (plus its grace) and a second signal hold even if the
    /// runtime is wedged. `None` when the thread cannot be started; the deadline then holds
    /// only while the runtime runs.
    fn start_watchdog(&self, reason: &Reason) -> Option<Watchdog> {
        let first_signal = matches!(reason, Reason::Signal(_)).then(std::time::Instant::now);
        let settings = &self.settings;
        let watchdog = Watchdog::start(watchdog::Plan {
            hard_deadline: settings
                .watchdog_grace
                .map(|grace| std::time::Instant::now() + settings.deadline + grace),
            signals: self.signals.is_some() && settings.second_signal == SecondSignal::Exit,
            first_signal,
            termination_message: settings.termination_message.clone(),
        });
        match watchdog {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the shutdown watchdog: the deadline holds only while the runtime runs");
                None
            }
        }
    }

    /// The stop to execute: every component by id, the phases, the entries it fills.
    fn plan(&mut self, mut ended_early: HashSet<usize>, started: Instant, watchdog: Option<&Watchdog>) -> Plan {
        // Components that ended while the trigger was being noticed.
        while let Ok(id) = self.ended_rx.try_recv() {
            ended_early.insert(id);
        }
        let aborts = self.tasks.iter().map(|t| t.handle.abort_handle()).collect();
        let roll = Roll::new(
            self.tasks
                .iter()
                .map(|t| (t.name.clone(), t.phase))
                .chain(self.hooks.iter().map(|h| (h.name.clone(), h.phase)))
                .map(|(name, phase)| (name, self.phases[phase].name.clone()))
                .collect(),
            (!self.settings.drain_delay.is_zero()).then_some(started),
        );
        // Ids as the roll has them: the tasks, then the stop functions.
        let components = std::mem::take(&mut self.tasks)
            .into_iter()
            .map(Component::Task)
            .chain(std::mem::take(&mut self.hooks).into_iter().map(Component::Hook))
            .map(Some)
            .collect();
        Plan {
            roll,
            phases: std::mem::take(&mut self.phases),
            components,
            ended_early,
            started,
            deadline_at: started + self.settings.deadline,
            overrun_grace: self.settings.watchdog_grace.unwrap_or_default(),
            drain_delay: self.settings.drain_delay,
            ended_tx: self.ended_tx.clone(),
            entries: Entries {
                list: Arc::new(Mutex::new(Vec::new())),
                observer: self.settings.observer.take(),
            },
            aborts: Arc::new(Mutex::new(aborts)),
            watched: watchdog.map(|w| Arc::clone(&w.shared)),
        }
    }

    /// Tells systemd and the termination message how it ended.
    fn finish(&self, report: Report) -> Report {
        crate::systemd::finished(&report.summary());
        if let Some(path) = &self.settings.termination_message
            && let Err(e) = std::fs::write(path, report.summary())
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the termination message");
        }
        report
    }

    async fn wait_for_trigger(&mut self) -> (Reason, HashSet<usize>) {
        let mut ended_early = HashSet::new();
        let token = self.handle.token.clone();
        loop {
            tokio::select! {
                () = token.cancelled() => return (self.handle.reason(), ended_early),
                signal = next_signal(&mut self.signals) => {
                    tracing::info!(event = "signal", signal = signal.name, "signal received");
                    return (Reason::Signal(signal.name), ended_early);
                }
                Some(id) = self.ended_rx.recv() => {
                    ended_early.insert(id);
                    let Some(task) = self.tasks.get(id) else { continue }; // a hook: cannot be before run
                    if task.oneshot {
                        continue; // finishing is what it was for
                    }
                    tracing::error!(component = %task.name, "a component ended on its own");
                    return (Reason::ComponentEnded(task.name.clone()), ended_early);
                }
            }
        }
    }
}

async fn next_signal(signals: &mut Option<Signals>) -> crate::Signal {
    match signals {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}
