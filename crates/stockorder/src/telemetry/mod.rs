//! Logging, set up once per process.
//!
//! Lines are formatted on the thread that logs them, then handed to one writer thread through
//! a bounded queue (tracing-appender's non-blocking writer), which writes them to stdout in
//! batches. A request never waits for stdout: every request is logged at `info`, and a
//! synchronous write per line from the runtime's workers cost 10–25% of the throughput. If
//! stdout cannot keep up and the queue fills, lines are dropped rather than blocking requests,
//! and counted: `stockorder_log_lines_dropped_total`, and a warning when the process exits.

mod text;

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogArgs, LogFormat};

/// Lines the queue can hold before new ones are dropped: about a quarter of a second of
/// stdout not keeping up at 60k requests/s. Not tracing-appender's default of 128 000: the
/// queue's slots are allocated and touched up front, and that many took 4 MB of the idle
/// process (15.8 MB against 11.7 MB, over the 15 MB it is held to).
const QUEUE_LINES: usize = 16_384;

/// The writer's count of dropped lines, once logging is set up.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the queue to stdout was full.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Keeps the log writer running; dropping it writes out what is queued (at the end of `main`).
#[must_use = "the log is flushed when this is dropped: keep it until the process ends"]
pub struct LogGuard(Option<WorkerGuard>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        drop(self.0.take());
        let dropped = dropped_lines();
        if dropped > 0 {
            eprintln!("warning: {dropped} log line(s) were dropped: stdout did not keep up");
        }
    }
}

/// stdout as the writer thread uses it: buffered, flushed each time the queue is empty, so a
/// burst of lines is a few writes instead of one per line.
fn stdout_writer() -> Box<dyn std::io::Write + Send> {
    use std::os::fd::AsFd;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::io::BufWriter::with_capacity(64 * 1024, std::fs::File::from(fd))),
        Err(_) => Box::new(std::io::stdout()),
    }
}

/// Installs the global subscriber: lines to stdout (where process supervisors collect them), as
/// text or JSON, filtered by `RUST_LOG`, through the non-blocking writer. An unparsable filter
/// falls back to `info` with a warning rather than silencing the log. Keep the guard until the
/// process ends.
pub fn init(args: &LogArgs) -> LogGuard {
    let (filter, bad_filter) = match EnvFilter::try_new(&args.filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    // Colour only for a person at a terminal; escape codes in a log file are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUE_LINES)
        .lossy(true)
        .thread_name("log writer")
        .finish(stdout_writer());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer.clone());
    // try_init: a second call (tests, embedding) keeps the first subscriber, and its writer.
    let installed = match args.log_format {
        LogFormat::Text if ansi => builder.try_init(),
        // The same line, written for a fraction of the cost (see `text`).
        LogFormat::Text => builder
            .fmt_fields(text::TextFields)
            .event_format(text::TextLine::<text::Rfc3339Micros>::default())
            .try_init(),
        // `spans` carries the fields of the spans an event is in (a request's method, path and
        // `request_id`), so every line of a request names it.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    let guard = match installed {
        Ok(()) => {
            let _ = DROPPED.set(writer.error_counter());
            Some(guard)
        }
        Err(_) => None,
    };
    if let Some(e) = bad_filter {
        tracing::warn!(filter = %args.filter, error = %e, "ignoring unparsable log filter; using info");
    } else if hides_the_service(&args.filter) {
        // Not through tracing: the filter would hide this line too.
        eprintln!(
            "warning: RUST_LOG={:?} names no level and none of this service's targets, so the service logs nothing; try RUST_LOG=info",
            args.filter
        );
    }
    LogGuard(guard)
}

/// Whether `filter` (valid `tracing` syntax) leaves the service silent: no directive is a bare
/// level (`info`, `warn`, …, but not `off`), and none names a target of ours. `RUST_LOG=garbage`
/// is such a filter: `garbage` is a valid target, so it parses, and it hides everything else.
fn hides_the_service(filter: &str) -> bool {
    const OURS: [&str; 3] = ["stockorder", "graceful", "tower_http"];
    const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    !filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .any(|directive| {
            let target = directive.split(['=', '[']).next().unwrap_or_default();
            let bare_level = !directive.contains('=') && LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive));
            bare_level || OURS.iter().any(|o| target.starts_with(o))
        })
}

#[cfg(test)]
mod tests {
    use super::hides_the_service;

    #[test]
    fn a_filter_that_silences_the_service_is_told_apart() {
        for silent in ["garbage", "off", "hyper=debug", "garbage,off", "sqlx=info"] {
            assert!(hides_the_service(silent), "{silent}");
        }
        for heard in [
            "info",
            "WARN",
            "garbage,info",
            "stockorder=debug",
            "warn,stockorder=info",
            "graceful=info",
        ] {
            assert!(!hides_the_service(heard), "{heard}");
        }
    }
}
