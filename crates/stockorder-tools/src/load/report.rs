//! What the load generator counts, and how it prints it.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Call;

/// What one request's client saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// A gRPC answer with this status code (0 is OK).
    Grpc(i32),
    /// The connection was refused (nothing listening).
    Refused,
    /// Turned away unprocessed: hyper cancelled the request before sending it (its connection
    /// had just closed), or the server's HTTP/2 GOAWAY or REFUSED_STREAM said it did not
    /// process it (RFC 9113 §6.8). Like a refused connection, it is safe to retry: grpc-go and
    /// grpc-java do so transparently, tonic does not.
    NotProcessed,
    /// The connection was reset by the peer.
    Reset,
    /// The connection closed before an answer arrived.
    Closed,
    /// No answer within the client's timeout.
    TimedOut,
    /// Any other transport failure.
    Other,
}

impl Outcome {
    pub(super) fn from_connect(e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
            std::io::ErrorKind::ConnectionReset => Outcome::Reset,
            _ => Outcome::Other,
        }
    }

    pub(super) fn from_hyper(e: &hyper::Error) -> Self {
        if e.is_canceled() {
            // hyper says so only for a request it never started to send.
            return Outcome::NotProcessed;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = source {
            if let Some(h2) = err.downcast_ref::<h2::Error>() {
                let refused = h2.is_remote()
                    && ((h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
                        || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)));
                return if refused { Outcome::NotProcessed } else { Outcome::Other };
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Outcome::Reset,
                    std::io::ErrorKind::UnexpectedEof => Outcome::Closed,
                    _ => Outcome::Other,
                };
            }
            source = err.source();
        }
        if e.is_incomplete_message() {
            Outcome::Closed
        } else {
            Outcome::Other
        }
    }

    /// A gRPC status: the server's code, or, when the status was made on this side because
    /// the call failed in transport, what happened to the connection.
    pub fn from_status(status: &tonic::Status) -> Self {
        let Some(mut cause) = std::error::Error::source(status) else {
            return Outcome::Grpc(status.code() as i32);
        };
        loop {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Outcome::Reset,
                    std::io::ErrorKind::UnexpectedEof => Outcome::Closed,
                    _ => Outcome::Other,
                };
            }
            if let Some(h) = cause.downcast_ref::<hyper::Error>() {
                return Outcome::from_hyper(h);
            }
            match cause.source() {
                Some(next) => cause = next,
                None => return Outcome::Other,
            }
        }
    }

    /// How the outcome is named in reports (`HTTP 201`, `refused`, …).
    pub fn label(self) -> String {
        match self {
            Outcome::Status(s) => format!("HTTP {s}"),
            Outcome::Grpc(code) => format!("gRPC {}", crate::client::code_name(tonic::Code::from_i32(code))),
            Outcome::Refused => "refused".into(),
            Outcome::NotProcessed => "turned away unprocessed".into(),
            Outcome::Reset => "reset".into(),
            Outcome::Closed => "closed without answer".into(),
            Outcome::TimedOut => "timed out".into(),
            Outcome::Other => "other error".into(),
        }
    }

    /// Never accepted by the server: refused at connect, or turned away unprocessed. Safe to
    /// retry, and not a failure of a graceful shutdown.
    pub fn never_accepted(self) -> bool {
        matches!(self, Outcome::Refused | Outcome::NotProcessed)
    }

    /// A 2xx answer, or gRPC OK.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Status(s) if (200..300).contains(&s)) || self == Outcome::Grpc(0)
    }
}

/// Counts and latencies of a run, kept per kind of call so a mixed run can show each.
#[derive(Debug, Default)]
pub struct Report {
    outcomes: BTreeMap<Outcome, u64>,
    latencies_us: BTreeMap<Call, Vec<u32>>,
    pub(super) elapsed: Duration,
}

/// Latency percentiles of a set of requests, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Requests measured.
    pub requests: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// The percentiles of these latencies, in microseconds.
    pub fn of(mut us: Vec<u32>) -> Self {
        us.sort_unstable();
        let pct = |p: f64| {
            if us.is_empty() {
                return 0.0;
            }
            let i = ((us.len() as f64 - 1.0) * p).round() as usize;
            f64::from(us[i]) / 1000.0
        };
        Self {
            requests: us.len() as u64,
            p50_ms: pct(0.50),
            p90_ms: pct(0.90),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
        }
    }
}

/// The figures of a run, as printed with `--json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Requests sent.
    pub requests: u64,
    /// Requests answered 2xx (HTTP) or OK (gRPC).
    pub ok: u64,
    /// Everything else.
    pub failed: u64,
    /// Successful requests per second.
    pub rate: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Count per outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Latency per kind of call (`create`, `get`, …), for runs that mix them.
    pub by_call: BTreeMap<&'static str, Latency>,
}

impl Report {
    pub(super) fn record(&mut self, call: Call, outcome: Outcome, latency: Duration) {
        *self.outcomes.entry(outcome).or_default() += 1;
        let us = latency.as_micros().min(u128::from(u32::MAX)) as u32;
        self.latencies_us.entry(call).or_default().push(us);
    }

    pub(super) fn merge(&mut self, other: Report) {
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for (call, us) in other.latencies_us {
            self.latencies_us.entry(call).or_default().extend(us);
        }
    }

    /// The run's figures.
    pub fn summary(&self) -> Summary {
        let all = Latency::of(self.latencies_us.values().flatten().copied().collect());
        let requests: u64 = self.outcomes.values().sum();
        let ok: u64 = self
            .outcomes
            .iter()
            .filter(|(o, _)| o.is_success())
            .map(|(_, n)| n)
            .sum();
        Summary {
            requests,
            ok,
            failed: requests - ok,
            rate: ok as f64 / self.elapsed.as_secs_f64().max(1e-9),
            p50_ms: all.p50_ms,
            p90_ms: all.p90_ms,
            p99_ms: all.p99_ms,
            max_ms: all.max_ms,
            outcomes: self.outcomes.iter().map(|(o, n)| (o.label(), *n)).collect(),
            by_call: self
                .latencies_us
                .iter()
                .map(|(call, us)| (call.name(), Latency::of(us.clone())))
                .collect(),
        }
    }

    pub(super) fn print_table(&self) {
        let s = self.summary();
        println!("requests  {:>10}   in {:.1}s", s.requests, self.elapsed.as_secs_f64());
        println!("ok        {:>10}   {:.0}/s", s.ok, s.rate);
        println!("failed    {:>10}", s.failed);
        for (label, n) in &s.outcomes {
            println!("  {label:<24}{n:>10}");
        }
        println!();
        println!(
            "latency   {:>10} {:>10} {:>10} {:>10} {:>10}",
            "requests", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let row = |name: &str, l: &Latency| {
            println!(
                "  {name:<8}{:>10} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                l.requests, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            );
        };
        if s.by_call.len() > 1 {
            for (name, l) in &s.by_call {
                row(name, l);
            }
        }
        row(
            "all",
            &Latency {
                requests: s.requests,
                p50_ms: s.p50_ms,
                p90_ms: s.p90_ms,
                p99_ms: s.p99_ms,
                max_ms: s.max_ms,
            },
        );
    }
}

/// Prints a progress line to stderr every second until `stop` is set: requests so far, the
/// rate of the last second, and how many failed.
pub(super) async fn progress(sent: Arc<AtomicU64>, failed: Arc<AtomicU64>, stop: Arc<AtomicBool>, started: Instant) {
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) {
            // The run ended during this second: its figures are in the report, not here.
            break;
        }
        let now = sent.load(Ordering::Relaxed);
        eprint!(
            "\r{:>6.1}s  {:>10} requests  {:>8}/s  {:>8} failed",
            started.elapsed().as_secs_f64(),
            now,
            now - last,
            failed.load(Ordering::Relaxed)
        );
        let _ = std::io::stderr().flush();
        last = now;
    }
    eprintln!();
}
