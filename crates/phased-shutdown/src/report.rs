//! What a shutdown did: one entry per component, in the order they finished.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Signal;

/// Why shutdown started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// A process signal (`SIGINT`, `SIGTERM`), by name.
    Signal(&'static str),
    /// [`ShutdownHandle::shutdown`](crate::ShutdownHandle::shutdown) was called.
    Requested(String),
    /// A component started with [`Shutdown::spawn`](crate::Shutdown::spawn) ended on its own
    /// (returned, failed or panicked) before shutdown: the rest cannot be trusted to be useful.
    ComponentEnded(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Signal(name) => write!(f, "signal {name}"),
            Reason::Requested(why) => write!(f, "requested: {why}"),
            Reason::ComponentEnded(name) => write!(f, "component {name:?} ended on its own"),
        }
    }
}

/// Why a component failed: the error's message and those of its sources (so an `anyhow` or
/// `eyre` chain survives into the report and the log), and the error itself, for a caller that
/// wants it typed ([`Failure::downcast_ref`]). Compared by its messages.
#[derive(Clone)]
pub struct Failure {
    chain: Vec<String>,
    error: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl Failure {
    /// A failure from an error, keeping its chain of sources.
    pub fn from_error(error: Box<dyn Error + Send + Sync + 'static>) -> Self {
        let mut chain = vec![error.to_string()];
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        Self {
            chain,
            error: Some(Arc::from(error)),
        }
    }

    /// The error's own message, without its causes.
    pub fn message(&self) -> &str {
        &self.chain[0]
    }

    /// The messages of its sources, outermost first.
    pub fn causes(&self) -> &[String] {
        &self.chain[1..]
    }

    /// The error, when it was one (not a plain message).
    pub fn error(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.error.as_deref()
    }

    /// The error as `E`, when it is one.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.error()?.downcast_ref::<E>()
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            chain: vec![message],
            error: None,
        }
    }
}

impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain
    }
}

impl Eq for Failure {}

impl fmt::Display for Failure {
    /// `message: cause: cause`, as `anyhow` prints with `{:#}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.chain.join(": "))
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Failure").field(&self.chain).finish()
    }
}

/// How one component's stop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Stopped cleanly within its deadline.
    Stopped,
    /// Its stop function or task returned an error.
    Failed(Failure),
    /// It panicked.
    Panicked(String),
    /// Still running at its deadline: aborted (or, when blocking its thread so that an abort
    /// cannot reach it, left behind). The one that held the shutdown up.
    TimedOut,
    /// Never asked to stop: the global deadline had passed before its phase came (a task is
    /// aborted unasked). Not a straggler: the time went to earlier phases.
    Skipped,
    /// A long-running component that ended on its own before its stop (with its error, if any):
    /// never clean, since a server or worker that stops serving by itself is a fault.
    EndedEarly(Option<Failure>),
    /// A one-shot task ([`Shutdown::spawn_oneshot`](crate::Shutdown::spawn_oneshot)) that had
    /// finished its work, successfully, before its phase.
    Finished,
    /// Still stopping when a second signal cut the shutdown short: aborted.
    Interrupted,
    /// Its phase never came: a second signal cut the shutdown short before it (a task is
    /// aborted unasked, a stop function never called).
    NotReached,
}

impl Outcome {
    /// Whether this outcome leaves the shutdown clean (exit code 0).
    pub fn is_clean(&self) -> bool {
        matches!(self, Outcome::Stopped | Outcome::Finished)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Stopped => f.write_str("stopped"),
            Outcome::Failed(e) => write!(f, "failed: {e}"),
            Outcome::Panicked(e) => write!(f, "panicked: {e}"),
            Outcome::TimedOut => f.write_str("timed out: aborted at the deadline"),
            Outcome::Skipped => f.write_str("skipped: the deadline had passed"),
            Outcome::EndedEarly(None) => f.write_str("had already ended on its own"),
            Outcome::EndedEarly(Some(e)) => write!(f, "had already ended: {e}"),
            Outcome::Finished => f.write_str("finished its work earlier"),
            Outcome::Interrupted => f.write_str("aborted: a second signal cut the shutdown short"),
            Outcome::NotReached => f.write_str("not reached: a second signal cut the shutdown short"),
        }
    }
}

/// One component's line in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The name it was registered with.
    pub component: String,
    /// The phase it stopped in.
    pub phase: String,
    /// When its stop began, counted from the trigger.
    pub started: Duration,
    /// How long its stop took.
    pub took: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// What it counted ([`StopSignal::record`](crate::StopSignal::record)): a server's
    /// connections and streams, say. Empty for most components.
    pub counts: Vec<(&'static str, u64)>,
}

impl Entry {
    /// An entry as the coordinator makes them, with no counts: for testing what observes
    /// entries ([`Shutdown::on_entry`](crate::Shutdown::on_entry)).
    pub fn new(
        component: impl Into<String>,
        phase: impl Into<String>,
        started: Duration,
        took: Duration,
        outcome: Outcome,
    ) -> Self {
        Self {
            component: component.into(),
            phase: phase.into(),
            started,
            took,
            outcome,
            counts: Vec::new(),
        }
    }

    /// The counts as `name value, name value`, or an empty string.
    pub fn counts_text(&self) -> String {
        self.counts
            .iter()
            .map(|(name, value)| format!("{name} {value}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The record of one shutdown: why it started, what each component did, and how long it all
/// took. [`Report::exit_code`] turns it into the process's exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// What triggered it.
    pub reason: Reason,
    /// One entry per component (and one for the drain delay, when there was one).
    pub entries: Vec<Entry>,
    /// From trigger to the last component done.
    pub total: Duration,
    /// The global deadline it ran under.
    pub deadline: Duration,
    /// The second signal that cut the shutdown short, if one did: what was still stopping was
    /// aborted, and the exit code is 128 + its number.
    pub interrupted: Option<Signal>,
}

impl Report {
    /// True when every component stopped cleanly, the whole shutdown within its deadline, and
    /// no second signal cut it short.
    pub fn is_clean(&self) -> bool {
        self.interrupted.is_none() && self.total <= self.deadline && self.entries.iter().all(|e| e.outcome.is_clean())
    }

    /// The components aborted at a deadline: what held the shutdown up.
    pub fn stragglers(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|e| e.outcome == Outcome::TimedOut)
            .map(|e| e.component.as_str())
    }

    /// For `std::process::ExitCode::from`: 0 for a clean shutdown, 128 + the signal's number
    /// when a second signal cut it short (130 for SIGINT, 143 for SIGTERM: what a shell reports
    /// for a program the signal ended), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self.interrupted {
            Some(signal) => signal.exit_code(),
            None if self.is_clean() => 0,
            None => 1,
        }
    }

    /// A few lines for an orchestrator to show (Kubernetes' termination message, at most 4096
    /// bytes): how the shutdown ended, and each component that did not stop cleanly.
    pub fn summary(&self) -> String {
        let verdict = match self.interrupted {
            _ if self.is_clean() => "clean".to_owned(),
            Some(signal) => format!("cut short by a second {}", signal.name),
            None => "not clean".to_owned(),
        };
        let mut text = format!(
            "shutdown ({}) {verdict}: {:.1} ms of {:.0} ms allowed\n",
            self.reason,
            ms(self.total),
            ms(self.deadline)
        );
        for e in self.entries.iter().filter(|e| !e.outcome.is_clean()) {
            text.push_str(&format!("{} ({}): {}\n", e.component, e.phase, e.outcome));
        }
        truncate(text, TERMINATION_MESSAGE_LIMIT)
    }

    /// Logs the report through `tracing`: one event per component (fields `component`,
    /// `phase`, `started_ms`, `took_ms`, `outcome`, and `counts` when it counted something),
    /// then a summary. With a JSON subscriber each
    /// line is a JSON object, so the report can be read by tools. A program that installed no
    /// `tracing` subscriber would see nothing, so then the report is written to stderr as text
    /// (its `Display`) instead. Returns once it has been written.
    pub fn log(&self) {
        if !tracing::dispatcher::has_been_set()
            && tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>())
        {
            eprint!("{self}");
            return;
        }
        for e in &self.entries {
            let (started_ms, took_ms) = (ms(e.started), ms(e.took));
            // Only for components that counted something (a `None` field is left out).
            let counts = Some(e.counts_text()).filter(|c| !c.is_empty());
            let counts = counts.as_deref();
            if e.outcome.is_clean() {
                tracing::info!(event = "shutdown.entry", component = %e.component, phase = %e.phase, started_ms, took_ms, outcome = %e.outcome, counts, "shutdown report");
            } else {
                tracing::error!(event = "shutdown.entry", component = %e.component, phase = %e.phase, started_ms, took_ms, outcome = %e.outcome, counts, "shutdown report");
            }
        }
        let stragglers: Vec<&str> = self.stragglers().collect();
        let total_ms = ms(self.total);
        if self.is_clean() {
            tracing::info!(event = "shutdown.complete", reason = %self.reason, total_ms, clean = true, exit_code = self.exit_code(), "shutdown complete");
        } else if let Some(signal) = self.interrupted {
            tracing::error!(event = "shutdown.complete", reason = %self.reason, total_ms, clean = false, exit_code = self.exit_code(), interrupted_by = signal.name, stragglers = ?stragglers, "shutdown cut short by a second signal");
        } else {
            tracing::error!(event = "shutdown.complete", reason = %self.reason, total_ms, clean = false, exit_code = self.exit_code(), stragglers = ?stragglers, "shutdown complete with failures");
        }
    }
}

/// What Kubernetes keeps of a termination message.
pub(crate) const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// `text` cut to at most `limit` bytes, on a character boundary.
pub(crate) fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

impl fmt::Display for Report {
    /// A table, for people: `phase  component  start  took  outcome`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "shutdown ({}) took {:.1} ms of {:.0} ms allowed",
            self.reason,
            ms(self.total),
            ms(self.deadline)
        )?;
        let phase_w = self.entries.iter().map(|e| e.phase.len()).max().unwrap_or(0).max(5);
        let name_w = self.entries.iter().map(|e| e.component.len()).max().unwrap_or(0).max(9);
        writeln!(
            f,
            "  {:<phase_w$}  {:<name_w$}  {:>9}  {:>9}  outcome",
            "phase", "component", "start ms", "took ms"
        )?;
        for e in &self.entries {
            write!(
                f,
                "  {:<phase_w$}  {:<name_w$}  {:>9.1}  {:>9.1}  {}",
                e.phase,
                e.component,
                ms(e.started),
                ms(e.took),
                e.outcome
            )?;
            if e.counts.is_empty() {
                writeln!(f)?;
            } else {
                writeln!(f, " ({})", e.counts_text())?;
            }
        }
        Ok(())
    }
}
