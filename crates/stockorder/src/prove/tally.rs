//! What a proof run found, and how it is printed.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::load::Outcome;

/// One request, as its client saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it was sent, since the load started.
    pub sent: Duration,
    /// When its outcome was known.
    pub answered: Duration,
    /// What the client saw.
    pub outcome: Outcome,
    /// The order id, when the order was acknowledged.
    pub id: Option<String>,
}

/// The verdict of a run.
#[derive(Debug, Serialize)]
pub struct Tally {
    target: String,
    signal: String,
    signal_at_s: f64,
    exit_at_s: f64,
    exit_code: Option<i32>,
    requests: usize,
    /// Answers by status (`HTTP 201`, `HTTP 503`, …) and transport outcomes (`refused`, …).
    outcomes: BTreeMap<String, usize>,
    acknowledged: usize,
    refused: usize,
    /// Accepted requests that did not end in an acknowledgement: non-2xx answers, resets,
    /// closes without an answer, timeouts.
    failed: usize,
    /// Acknowledged orders missing from the database.
    lost: usize,
    /// Orders in the database that no client saw acknowledged.
    unacknowledged: usize,
    /// Requests the server's own log says it answered 201.
    server_logged_201: usize,
    /// When the last acknowledgement arrived, since the load started.
    last_acknowledged_at_s: f64,
    /// The longest any acknowledged request took, in milliseconds.
    slowest_acknowledged_ms: f64,
    /// When the first and the last failed request ended, since the load started.
    failures_from_s: Option<f64>,
    failures_until_s: Option<f64>,
}

impl Tally {
    /// Classifies `requests`, and compares them with the database (`stored`) and the server's
    /// log.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: &str,
        signal: nix::sys::signal::Signal,
        signal_at: Duration,
        exit_at: Duration,
        exit_code: Option<i32>,
        requests: &[Request],
        stored: &HashSet<String>,
        log: &[Value],
    ) -> Self {
        let mut outcomes = BTreeMap::new();
        for r in requests {
            *outcomes.entry(r.outcome.label()).or_insert(0) += 1;
        }
        let acked: HashSet<&str> = requests.iter().filter_map(|r| r.id.as_deref()).collect();
        let refused = requests.iter().filter(|r| r.outcome == Outcome::Refused).count();
        let failed = requests.len() - acked.len() - refused;
        let failure_times: Vec<f64> = requests
            .iter()
            .filter(|r| r.id.is_none() && r.outcome != Outcome::Refused)
            .map(|r| r.answered.as_secs_f64())
            .collect();
        let last_acknowledged_at_s = requests
            .iter()
            .filter(|r| r.id.is_some())
            .map(|r| r.answered.as_secs_f64())
            .fold(0.0, f64::max);
        Self {
            target: target.to_owned(),
            signal: signal.as_str().to_owned(),
            signal_at_s: signal_at.as_secs_f64(),
            exit_at_s: exit_at.as_secs_f64(),
            exit_code,
            requests: requests.len(),
            outcomes,
            acknowledged: acked.len(),
            refused,
            failed,
            lost: acked.iter().filter(|id| !stored.contains(**id)).count(),
            unacknowledged: stored.iter().filter(|id| !acked.contains(id.as_str())).count(),
            server_logged_201: log
                .iter()
                .filter(|l| l["message"] == "finished processing request" && l["status"] == 201)
                .count(),
            last_acknowledged_at_s,
            slowest_acknowledged_ms: requests
                .iter()
                .filter(|r| r.id.is_some())
                .map(|r| (r.answered - r.sent).as_secs_f64() * 1000.0)
                .fold(0.0, f64::max),
            failures_from_s: failure_times.iter().copied().reduce(f64::min),
            failures_until_s: failure_times.iter().copied().reduce(f64::max),
        }
    }

    /// True when nothing accepted failed, nothing is lost or unaccounted for, and the target
    /// exited 0.
    pub fn held(&self) -> bool {
        self.failed == 0 && self.lost == 0 && self.unacknowledged == 0 && self.exit_code == Some(0)
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exit = self
            .exit_code
            .map_or("killed by a signal".to_owned(), |c| format!("exit code {c}"));
        writeln!(
            f,
            "\nprove {}: {} at {:.2} s; {exit} at {:.2} s ({:.0} ms after the signal)\n",
            self.target,
            self.signal,
            self.signal_at_s,
            self.exit_at_s,
            (self.exit_at_s - self.signal_at_s) * 1000.0
        )?;
        let line =
            |f: &mut fmt::Formatter<'_>, what: &str, n: usize, why: &str| writeln!(f, "  {what:<22} {n:>8}   {why}");
        line(f, "requests sent", self.requests, "")?;
        line(
            f,
            "acknowledged (201)",
            self.acknowledged,
            "orders placed and confirmed",
        )?;
        line(
            f,
            "refused",
            self.refused,
            "at connect, after the listener closed: never accepted, safe to retry",
        )?;
        line(
            f,
            "failed",
            self.failed,
            "accepted but not acknowledged: error answers, resets, closes, timeouts",
        )?;
        for (label, n) in &self.outcomes {
            if label != "HTTP 201" && label != "refused" {
                line(f, &format!("  {label}"), *n, "")?;
            }
        }
        line(f, "lost", self.lost, "acknowledged, but missing from the database")?;
        line(
            f,
            "unacknowledged",
            self.unacknowledged,
            "in the database, but no client saw a 201",
        )?;
        line(
            f,
            "server log: 201s",
            self.server_logged_201,
            "answers the server logged as 201 (should equal acknowledged)",
        )?;
        writeln!(
            f,
            "  last acknowledgement at {:.2} s; slowest acknowledged request {:.1} ms",
            self.last_acknowledged_at_s, self.slowest_acknowledged_ms
        )?;
        if let (Some(from), Some(until)) = (self.failures_from_s, self.failures_until_s) {
            writeln!(f, "  failures between {from:.2} s and {until:.2} s")?;
        }
        writeln!(f)?;
        if self.held() {
            writeln!(
                f,
                "  PASS: every accepted request was answered and every acknowledged order is stored"
            )
        } else {
            writeln!(f, "  FAIL: see the lines above that are not 0")
        }
    }
}
