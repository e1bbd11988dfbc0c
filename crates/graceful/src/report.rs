//! What a shutdown did: one entry per component, in the order they finished.

use std::fmt;
use std::time::Duration;

/// Why shutdown started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A process signal (`SIGINT`, `SIGTERM`).
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

/// How one component's stop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped cleanly within its deadline.
    Stopped,
    /// Its stop function or task returned an error.
    Failed(String),
    /// It panicked.
    Panicked(String),
    /// Still running at its deadline: aborted. The one that held the shutdown up.
    TimedOut,
    /// Never started: the global deadline had passed before its phase came.
    Skipped,
    /// A long-running component that ended before shutdown (with its error, if any).
    EndedEarly(Option<String>),
}

impl Outcome {
    /// Whether this outcome leaves the shutdown clean (exit code 0).
    pub fn is_clean(&self) -> bool {
        matches!(self, Outcome::Stopped | Outcome::EndedEarly(None))
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
            Outcome::EndedEarly(None) => f.write_str("had already ended"),
            Outcome::EndedEarly(Some(e)) => write!(f, "had already ended: {e}"),
        }
    }
}

/// One component's line in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// The record of one shutdown: why it started, what each component did, and how long it all
/// took. [`Report::exit_code`] turns it into the process's exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What triggered it.
    pub reason: Reason,
    /// One entry per component (and one for the drain delay, when there was one).
    pub entries: Vec<Entry>,
    /// From trigger to the last component done.
    pub total: Duration,
    /// The global deadline it ran under.
    pub deadline: Duration,
}

impl Report {
    /// True when every component stopped cleanly within its deadline.
    pub fn is_clean(&self) -> bool {
        self.entries.iter().all(|e| e.outcome.is_clean())
    }

    /// The components aborted at a deadline: what held the shutdown up.
    pub fn stragglers(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|e| e.outcome == Outcome::TimedOut)
            .map(|e| e.component.as_str())
    }

    /// 0 for a clean shutdown, 1 otherwise, for `std::process::ExitCode::from`.
    pub fn exit_code(&self) -> u8 {
        if self.is_clean() { 0 } else { 1 }
    }

    /// Logs the report through `tracing`: one event per component (fields `component`,
    /// `phase`, `started_ms`, `took_ms`, `outcome`), then a summary. With a JSON subscriber each
    /// line is a JSON object, so the report can be read by tools.
    pub fn log(&self) {
        for e in &self.entries {
            let (started_ms, took_ms) = (ms(e.started), ms(e.took));
            if e.outcome.is_clean() {
                tracing::info!(component = %e.component, phase = %e.phase, started_ms, took_ms, outcome = %e.outcome, "shutdown report");
            } else {
                tracing::error!(component = %e.component, phase = %e.phase, started_ms, took_ms, outcome = %e.outcome, "shutdown report");
            }
        }
        let stragglers: Vec<&str> = self.stragglers().collect();
        let total_ms = ms(self.total);
        if self.is_clean() {
            tracing::info!(reason = %self.reason, total_ms, clean = true, "shutdown complete");
        } else {
            tracing::error!(reason = %self.reason, total_ms, clean = false, stragglers = ?stragglers, "shutdown complete with failures");
        }
    }
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
            writeln!(
                f,
                "  {:<phase_w$}  {:<name_w$}  {:>9.1}  {:>9.1}  {}",
                e.phase,
                e.component,
                ms(e.started),
                ms(e.took),
                e.outcome
            )?;
        }
        Ok(())
    }
}
