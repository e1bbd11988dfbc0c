//! What a proof run found, and how it is printed.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::load::Outcome;

/// One request, as its client saw it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// When it was sent, since the load started.
    pub sent: Duration,
    /// When its outcome was known.
    pub answered: Duration,
    /// What the client saw.
    pub outcome: Outcome,
    /// The order id, when the order was acknowledged.
    pub id: Option<String>,
}

/// What a request counts as in a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Its order id came back: placed and confirmed.
    Acknowledged,
    /// Refused at connect, or turned away unprocessed: safe to retry.
    NeverAccepted,
    /// Accepted but not acknowledged.
    Failed,
}

impl Request {
    /// How the tally, and the live page, count this request.
    pub(crate) fn class(&self) -> Class {
        if self.id.is_some() {
            Class::Acknowledged
        } else if self.outcome.never_accepted() {
            Class::NeverAccepted
        } else {
            Class::Failed
        }
    }
}

/// Every request classified by what its client saw, and checked against the orders stored:
/// the part of a verdict that `prove` and `rolling-restart` share.
#[derive(Debug)]
pub(crate) struct Accounting {
    /// Requests sent.
    pub requests: usize,
    /// Count per outcome label (`HTTP 201`, `refused`, …).
    pub outcomes: BTreeMap<String, usize>,
    /// Orders acknowledged.
    pub acknowledged: usize,
    /// Refused at connect, or turned away unprocessed: safe to retry.
    pub never_accepted: usize,
    /// Accepted but not acknowledged.
    pub failed: usize,
    /// Acknowledged orders missing from `stored` (`None` without a store to check).
    pub lost: Option<usize>,
    /// Stored orders no client saw acknowledged.
    pub unacknowledged: Option<usize>,
}

impl Accounting {
    pub(crate) fn of<'a>(requests: impl IntoIterator<Item = &'a Request>, stored: Option<&HashSet<String>>) -> Self {
        let mut outcomes = BTreeMap::new();
        let mut acked = HashSet::new();
        let (mut sent, mut never_accepted) = (0, 0);
        for r in requests {
            sent += 1;
            *outcomes.entry(r.outcome.label()).or_insert(0) += 1;
            match (r.class(), r.id.as_deref()) {
                (Class::Acknowledged, Some(id)) => {
                    acked.insert(id);
                }
                (Class::NeverAccepted, _) => never_accepted += 1,
                _ => {}
            }
        }
        Self {
            requests: sent,
            outcomes,
            acknowledged: acked.len(),
            never_accepted,
            failed: sent - acked.len() - never_accepted,
            lost: stored.map(|stored| acked.iter().filter(|id| !stored.contains(**id)).count()),
            unacknowledged: stored.map(|stored| stored.iter().filter(|id| !acked.contains(id.as_str())).count()),
        }
    }
}

/// The verdict of a run.
#[derive(Debug, Serialize)]
pub(crate) struct Tally {
    target: String,
    /// The API the clients used: `HTTP` or `gRPC`.
    protocol: &'static str,
    signal: String,
    /// Whether the signal was sent a second time during the shutdown.
    signalled_twice: bool,
    /// In-place upgrades (SIGHUP) before the signal.
    upgrades: usize,
    signal_at_s: f64,
    exit_at_s: f64,
    exit_code: Option<i32>,
    requests: usize,
    /// Answers by status (`HTTP 201`, `HTTP 503`, …) and transport outcomes (`refused`, …).
    outcomes: BTreeMap<String, usize>,
    acknowledged: usize,
    refused: usize,
    /// Connections refused before the signal (during upgrades, say): a restart that hands its
    /// sockets over refuses none.
    refused_before_signal: usize,
    /// Accepted requests that did not end in an acknowledgement: non-2xx answers, resets,
    /// closes without an answer, timeouts.
    failed: usize,
    /// Acknowledged orders missing from the database (`null` when the target left no
    /// database to check).
    lost: Option<usize>,
    /// Orders in the database that no client saw acknowledged.
    unacknowledged: Option<usize>,
    /// Order placements the server's own log says it answered: `POST /api/orders` with 201, or
    /// `CreateOrder` calls (`null` when the target logs no requests).
    server_logged_acks: Option<usize>,
    /// When the last acknowledgement arrived, since the load started.
    last_acknowledged_at_s: f64,
    /// The longest any acknowledged request took, in milliseconds.
    slowest_acknowledged_ms: f64,
    /// When the first and the last failed request ended, since the load started.
    failures_from_s: Option<f64>,
    failures_until_s: Option<f64>,
    /// What the followers of the event stream received (`null` without `--watchers`).
    events: Option<crate::watchers::WatchTally>,
}

impl Tally {
    /// Classifies `requests`, and compares them with the database (`stored`) and the server's
    /// log.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        target: &str,
        protocol: &'static str,
        signal: nix::sys::signal::Signal,
        signalled_twice: bool,
        signal_at: Duration,
        exit_at: Duration,
        exit_code: Option<i32>,
        upgrades: usize,
        requests: &[Request],
        stored: Option<&HashSet<String>>,
        log: &[Value],
    ) -> Self {
        let counts = Accounting::of(requests, stored);
        let failure_times: Vec<f64> = requests
            .iter()
            .filter(|r| r.id.is_none() && !r.outcome.never_accepted())
            .map(|r| r.answered.as_secs_f64())
            .collect();
        let last_acknowledged_at_s = requests
            .iter()
            .filter(|r| r.id.is_some())
            .map(|r| r.answered.as_secs_f64())
            .fold(0.0, f64::max);
        Self {
            target: target.to_owned(),
            protocol,
            signal: signal.as_str().to_owned(),
            signalled_twice,
            upgrades,
            signal_at_s: signal_at.as_secs_f64(),
            exit_at_s: exit_at.as_secs_f64(),
            exit_code,
            requests: counts.requests,
            outcomes: counts.outcomes,
            acknowledged: counts.acknowledged,
            refused: counts.never_accepted,
            refused_before_signal: requests
                .iter()
                .filter(|r| r.outcome == Outcome::Refused && r.answered < signal_at)
                .count(),
            failed: counts.failed,
            lost: counts.lost,
            unacknowledged: counts.unacknowledged,
            server_logged_acks: server_logged_acks(log),
            last_acknowledged_at_s,
            slowest_acknowledged_ms: requests
                .iter()
                .filter(|r| r.id.is_some())
                .map(|r| (r.answered - r.sent).as_secs_f64() * 1000.0)
                .fold(0.0, f64::max),
            failures_from_s: failure_times.iter().copied().reduce(f64::min),
            failures_until_s: failure_times.iter().copied().reduce(f64::max),
            events: None,
        }
    }

    /// The same verdict, with what the followers of the event stream received.
    pub(crate) fn with_events(mut self, events: Option<crate::watchers::WatchTally>) -> Self {
        self.events = events;
        self
    }

    /// True when nothing accepted failed, nothing is lost or unaccounted for, and the target
    /// exited 0 (or 128 + the signal's number, 130 or 143, the promised answer to a second signal).
    pub(crate) fn held(&self) -> bool {
        self.faults().is_empty()
    }

    /// What broke the promise, each as the report names it: failed, lost and unacknowledged
    /// orders, and an exit code other than 0 (or 130/143 after a second signal). "Never
    /// accepted" is not among them: a refused connection is safe to retry.
    pub(crate) fn faults(&self) -> Vec<String> {
        let mut faults = Vec::new();
        for (what, n) in [
            ("failed", self.failed),
            ("lost", self.lost.unwrap_or(0)),
            ("unacknowledged", self.unacknowledged.unwrap_or(0)),
        ] {
            if n > 0 {
                faults.push(format!("{n} {what}"));
            }
        }
        if let Some(events) = &self.events {
            faults.extend(events.faults());
        }
        let exit_ok = self.exit_code == Some(0) || (self.signalled_twice && matches!(self.exit_code, Some(130 | 143)));
        if !exit_ok {
            match self.exit_code {
                Some(code) => faults.push(format!("exit code {code}")),
                None => faults.push("no exit code (killed by a signal)".to_owned()),
            }
        }
        faults
    }
}

/// Order placements the target logged as answered: HTTP `POST /api/orders` answered 201, or
/// gRPC `CreateOrder` calls (tower-http logs no gRPC status on the response line; in a run
/// where nothing failed, every one of them is an acknowledgement). `None` when the target logs
/// no requests at all, so the comparison means nothing.
fn server_logged_acks(log: &[Value]) -> Option<usize> {
    let answered: Vec<&Value> = log
        .iter()
        .filter(|l| crate::service::event(l) == "request.finished")
        .collect();
    if answered.is_empty() {
        return None;
    }
    let create_call = |l: &Value| {
        l["spans"].as_array().is_some_and(|spans| {
            spans
                .iter()
                .any(|s| s["uri"].as_str().is_some_and(|u| u.ends_with("/CreateOrder")))
        })
    };
    Some(answered.iter().filter(|l| l["status"] == 201 || create_call(l)).count())
}

/// One row of the tally: a count with what it means.
fn line(f: &mut fmt::Formatter<'_>, what: &str, n: usize, why: &str) -> fmt::Result {
    writeln!(f, "{}", format!("  {what:<22} {n:>8}   {why}").trim_end())
}

/// A row whose count could not be taken: `none` says why.
fn maybe(f: &mut fmt::Formatter<'_>, what: &str, n: Option<usize>, why: &str, none: &str) -> fmt::Result {
    match n {
        Some(n) => line(f, what, n, why),
        None => writeln!(f, "  {what:<22} {:>8}   {none}", "-"),
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_heading(f)?;
        self.fmt_requests(f)?;
        self.fmt_checks(f)?;
        if let Some(events) = &self.events {
            fmt_events(f, events)?;
        }
        writeln!(f)?;
        if self.held() {
            let events = if self.events.is_some() {
                ", and every follower got every event once, in order"
            } else {
                ""
            };
            writeln!(
                f,
                "  PASS: every accepted request was answered and every acknowledged order is stored{events}"
            )
        } else {
            writeln!(f, "  FAIL: {}", self.faults().join(", "))
        }
    }
}

impl Tally {
    /// What was run, the signal, and the exit.
    fn fmt_heading(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exit = self
            .exit_code
            .map_or("killed by a signal".to_owned(), |c| format!("exit code {c}"));
        let upgrades = match self.upgrades {
            0 => String::new(),
            n => format!("{n} in-place upgrades (SIGHUP), then "),
        };
        writeln!(
            f,
            "\nprove {} ({} clients): {upgrades}{} at {:.2} s; {exit} at {:.2} s ({:.0} ms after the signal)\n",
            self.target,
            self.protocol,
            self.signal,
            self.signal_at_s,
            self.exit_at_s,
            (self.exit_at_s - self.signal_at_s) * 1000.0
        )
    }

    /// The requests by what became of them, each group broken down by outcome.
    fn fmt_requests(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        line(f, "requests sent", self.requests, "")?;
        line(f, "acknowledged", self.acknowledged, "orders placed and confirmed")?;
        let never_accepted = [Outcome::Refused.label(), Outcome::NotProcessed.label()];
        let breakdown = |f: &mut fmt::Formatter<'_>, pick: &dyn Fn(&str) -> bool| -> fmt::Result {
            for (label, n) in self.outcomes.iter().filter(|(label, _)| pick(label)) {
                line(f, &format!("  {label}"), *n, "")?;
            }
            Ok(())
        };
        line(
            f,
            "never accepted",
            self.refused,
            "refused at connect, or turned away unprocessed by HTTP/2 GOAWAY: safe to retry",
        )?;
        breakdown(f, &|label| never_accepted.iter().any(|l| l == label))?;
        line(f, "  refused before signal", self.refused_before_signal, "")?;
        line(
            f,
            "failed",
            self.failed,
            "accepted but not acknowledged: error answers, resets, closes, timeouts",
        )?;
        breakdown(f, &|label| {
            !never_accepted.iter().any(|l| l == label) && label != "HTTP 201" && label != "gRPC OK"
        })
    }

    /// What the database and the server's log say, against what the clients saw.
    fn fmt_checks(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        maybe(
            f,
            "lost",
            self.lost,
            "acknowledged, but missing from the database",
            "not checked: the target left no SQLite database at DATABASE_URL",
        )?;
        maybe(
            f,
            "unacknowledged",
            self.unacknowledged,
            "in the database, but no client saw it acknowledged",
            "not checked",
        )?;
        maybe(
            f,
            "server log: placed",
            self.server_logged_acks,
            "placements the server logged as answered (should equal acknowledged)",
            "the target logs no requests",
        )?;
        writeln!(
            f,
            "  last acknowledgement at {:.2} s; slowest acknowledged request {:.1} ms",
            self.last_acknowledged_at_s, self.slowest_acknowledged_ms
        )?;
        if let (Some(from), Some(until)) = (self.failures_from_s, self.failures_until_s) {
            writeln!(f, "  failures between {from:.2} s and {until:.2} s")?;
        }
        Ok(())
    }
}

/// What the event-stream followers received against the history.
fn fmt_events(f: &mut fmt::Formatter<'_>, events: &crate::watchers::WatchTally) -> fmt::Result {
    writeln!(f, "\n  event stream, {} followers:", events.watchers)?;
    line(
        f,
        "events in the log",
        events.expected,
        "what each follower should have received",
    )?;
    line(f, "received", events.received, "all followers together")?;
    line(
        f,
        "streams resumed",
        events.reconnects,
        "ended by the server, resumed after the last event",
    )?;
    line(f, "missing", events.missing, "in the log, never received by a follower")?;
    line(f, "repeated", events.repeated, "received twice by one follower")?;
    line(f, "out of order", events.out_of_order, "received after a later one")
}
