//! `prove --live`: a web page that shows the run as it happens.
//!
//! The page (`live.html`, embedded in the binary: no CDN, no build step) draws requests per
//! second by outcome and the shutdown's moments as they come, counts every request, and shows
//! the verdict and the server's shutdown report once the run is over. Its button sends the
//! signal when the presenter decides.
//!
//! With `--compare`, one run per target (demo_1, demo_2, demo_3, serve), one after another: the
//! page stacks their timelines on one time axis and puts their tallies side by side.
//!
//! Data reaches it by Server-Sent Events from this process's own axum server: every 100 ms,
//! the whole state as one JSON object (a few kilobytes per run), so a page that connects late,
//! or misses an event, is whole again at the next one. The counters use the tally's own
//! rule ([`Request::class`]) on the same requests, so the page's final counts equal the tally.
//! Recording a request costs the clients an atomic add and, once per request, a short lock on
//! the chart's bins: nothing waits for the page.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_stream::StreamExt;

use super::tally::{Class, Request};

/// The chart's resolution: one bin per 100 ms of the run.
const BIN: Duration = Duration::from_millis(100);

/// The page.
const PAGE: &str = include_str!("live.html");

/// What the page shows, updated by the clients, the log reader and `prove` itself.
#[derive(Default)]
pub(crate) struct Board {
    sent: AtomicU64,
    acknowledged: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    in_flight: AtomicU64,
    /// Per 100 ms of the run, by when the outcome was known: acknowledged, failed, refused.
    bins: Mutex<Vec<[u32; 3]>>,
    /// The run's moments, in seconds since the load started.
    marks: Mutex<Vec<(f64, String)>>,
    /// Set once, at the start: what runs and how.
    title: Mutex<String>,
    /// The server's shutdown report, one entry per component, as it logged them.
    report: Mutex<Vec<Value>>,
    /// The tally, once the database has been checked.
    verdict: Mutex<Option<Value>>,
    /// When the load started: the page's clock.
    clock: Mutex<Option<tokio::time::Instant>>,
    /// The clock's reading when the run ended: a finished run's time axis stops there.
    ended_at: Mutex<Option<f64>>,
    /// The page's button: send the signal now.
    signal_now: Notify,
    /// The event-stream followers (`--watchers`), when there are any.
    watchers: Mutex<Option<crate::watchers::WatchProgress>>,
}

/// One snapshot, as the page receives it.
#[derive(Serialize)]
struct Snapshot<'a> {
    title: &'a str,
    t: f64,
    bin_s: f64,
    sent: u64,
    acknowledged: u64,
    failed: u64,
    refused: u64,
    in_flight: u64,
    bins: &'a [[u32; 3]],
    marks: Vec<Value>,
    report: &'a [Value],
    verdict: &'a Option<Value>,
    /// `{"followers", "received", "resumed"}` with `--watchers`; the page derives the rate.
    watchers: Option<Value>,
}

impl Board {
    /// The run's title (`prove demo_2 (HTTP clients)`), and the moment its clock starts.
    pub(crate) fn start(&self, title: String, started: tokio::time::Instant) {
        *lock(&self.title) = title;
        *lock(&self.clock) = Some(started);
    }

    /// A request is about to be sent.
    pub(crate) fn sending(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's outcome is known: counted as the tally counts it.
    pub(crate) fn answered(&self, request: &Request) {
        let (counter, kind) = match request.class() {
            Class::Acknowledged => (&self.acknowledged, 0),
            Class::Failed => (&self.failed, 1),
            Class::NeverAccepted => (&self.refused, 2),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let bin = (request.answered.as_millis() / BIN.as_millis()) as usize;
        let mut bins = lock(&self.bins);
        if bins.len() <= bin {
            bins.resize(bin + 1, [0; 3]);
        }
        bins[bin][kind] += 1;
    }

    /// The run has event-stream followers: the page shows their counts as they go.
    pub(crate) fn show_watchers(&self, progress: crate::watchers::WatchProgress) {
        *lock(&self.watchers) = Some(progress);
    }

    /// A moment of the run: the signal, a shutdown step the server logged, the exit.
    pub(crate) fn mark(&self, at_s: f64, label: impl Into<String>) {
        lock(&self.marks).push((at_s, label.into()));
    }

    /// A line of the server's log: its shutdown steps become marks, its report entries the
    /// report. `at_s` is when the line was written, on the load's clock.
    pub(crate) fn log_line(&self, line: &Value, at_s: Option<f64>) {
        let event = crate::service::event(line);
        let label = match event {
            "shutdown.started" => Some("unready".to_owned()),
            "listener.closed" => Some(format!(
                "listener closed ({})",
                line["protocol"].as_str().unwrap_or("?").to_lowercase()
            )),
            "phase.started" => Some(format!("phase: {}", line["phase"].as_str().unwrap_or("?"))),
            "component.stopped" if line["component"] == "database" => Some("database closed".to_owned()),
            "database.closed" => Some("database closed".to_owned()),
            "server.stopped" => Some("server stopped".to_owned()),
            _ => None,
        };
        if let (Some(label), Some(at)) = (label, at_s) {
            self.mark(at, label);
        }
        if event == "shutdown.entry" {
            lock(&self.report).push(json!({
                "phase": line["phase"],
                "component": line["component"],
                "started_ms": line["started_ms"],
                "took_ms": line["took_ms"],
                "outcome": line["outcome"],
            }));
        }
    }

    /// The run is over and checked: the page shows the verdict from now on.
    pub(crate) fn finish(&self, tally: Value) {
        *lock(&self.ended_at) = Some(self.now());
        *lock(&self.verdict) = Some(tally);
    }

    /// Seconds since the load started (0 before it does).
    fn now(&self) -> f64 {
        lock(&self.clock).map_or(0.0, |c| c.elapsed().as_secs_f64())
    }

    /// Resolves when the page's button asks for the signal.
    pub(crate) async fn signal_requested(&self) {
        self.signal_now.notified().await;
    }

    fn snapshot(&self) -> String {
        let now = lock(&self.ended_at).unwrap_or_else(|| self.now());
        let (title, bins, marks, report, verdict) = (
            lock(&self.title),
            lock(&self.bins),
            lock(&self.marks),
            lock(&self.report),
            lock(&self.verdict),
        );
        let mut sorted: Vec<&(f64, String)> = marks.iter().collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let snapshot = Snapshot {
            title: &title,
            t: now,
            bin_s: BIN.as_secs_f64(),
            sent: self.sent.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            bins: &bins,
            marks: sorted
                .iter()
                .map(|(at, label)| json!({"at": at, "label": label}))
                .collect(),
            report: &report,
            verdict: &verdict,
            watchers: lock(&self.watchers).as_ref().map(|w| {
                let (followers, received, resumed) = w.now();
                json!({"followers": followers, "received": received, "resumed": resumed})
            }),
        };
        serde_json::to_string(&snapshot).unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string())
    }
}

/// A poisoned lock means a panicking thread; what it guarded is still the best there is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The page's server, and the runs it shows: one, or with `--compare` one per target, one
/// after another.
#[derive(Default)]
pub(crate) struct Live {
    runs: Mutex<Vec<Arc<Board>>>,
}

impl Live {
    /// Serves the page on `addr` (`host:port`, port 0 for a free one) until the process ends;
    /// returns the server and the URL it is at.
    pub(crate) async fn serve(addr: &str) -> anyhow::Result<(Arc<Live>, String)> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--live: cannot listen on {addr}"))?;
        let url = format!("http://{}/", listener.local_addr()?);
        let live = Arc::new(Live::default());
        let events = {
            let live = Arc::clone(&live);
            move || async move {
                let ticks =
                    tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_millis(100)));
                let stream =
                    ticks.map(move |_| Ok::<_, std::convert::Infallible>(Event::default().data(live.snapshot())));
                Sse::new(stream).keep_alive(KeepAlive::default())
            }
        };
        let signal = {
            let live = Arc::clone(&live);
            move || async move {
                // The button signals the run going on now: the last one.
                if let Some(board) = lock(&live.runs).last() {
                    board.signal_now.notify_one();
                }
                "signal requested\n".into_response()
            }
        };
        let app = Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route("/events", get(events))
            .route("/signal", post(signal));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("--live: the page's server stopped: {e}");
            }
        });
        Ok((live, url))
    }

    /// A board for the next run, shown after the ones before it.
    pub(crate) fn next_run(&self) -> Arc<Board> {
        let board = Arc::new(Board::default());
        lock(&self.runs).push(Arc::clone(&board));
        board
    }

    fn snapshot(&self) -> String {
        let runs: Vec<String> = lock(&self.runs).iter().map(|b| b.snapshot()).collect();
        format!("{{\"runs\":[{}]}}", runs.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Outcome;

    fn request(ms: u64, outcome: Outcome, id: Option<&str>) -> Request {
        Request {
            sent: Duration::from_millis(ms),
            answered: Duration::from_millis(ms),
            outcome,
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn requests_are_counted_as_the_tally_counts_them_and_binned_by_answer() {
        let board = Board::default();
        let requests = [
            request(10, Outcome::Status(201), Some("a")),
            request(150, Outcome::Status(503), None),
            request(160, Outcome::Refused, None),
            request(170, Outcome::NotProcessed, None),
            request(250, Outcome::Reset, None),
        ];
        for r in &requests {
            board.sending();
            board.answered(r);
        }
        let snapshot: Value = serde_json::from_str(&board.snapshot()).unwrap();
        assert_eq!(snapshot["sent"], 5);
        assert_eq!(snapshot["acknowledged"], 1);
        assert_eq!(snapshot["failed"], 2);
        assert_eq!(snapshot["refused"], 2);
        assert_eq!(snapshot["in_flight"], 0);
        assert_eq!(snapshot["bins"], json!([[1, 0, 0], [0, 1, 2], [0, 1, 0]]));
        let tally = super::super::tally::Accounting::of(&requests, None);
        assert_eq!(
            (tally.acknowledged, tally.failed, tally.never_accepted),
            (1, 2, 2),
            "the tally agrees"
        );
    }
}
