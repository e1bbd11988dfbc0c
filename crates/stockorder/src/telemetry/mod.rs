//! Telemetry: logging, set up once per process, and the Prometheus metrics ([`metrics`]) that
//! every adapter records.
//!
//! Lines are formatted on the thread that logs them, then appended to a buffer that one writer
//! thread writes to stdout every few milliseconds ([`batches`]). A request never waits for
//! stdout: every request is logged at `info`, and a synchronous write per line from the
//! runtime's workers costs throughput (docs/performance.md). If stdout cannot keep up and the buffer
//! fills, lines are dropped rather than blocking requests, and counted:
//! `stockorder_log_lines_dropped_total`, and a warning when the process exits.

mod batches;
pub mod metrics;
pub(crate) mod text;

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogArgs, LogFormat};
use batches::Batches;
#[cfg(not(feature = "stock-log-writer"))]
use batches::Flush;

/// Bytes of lines the buffer holds before new ones are dropped: about a quarter of a second of
/// stdout not keeping up at 60k requests/s. Only what is pending takes memory.
const BUFFER_BYTES: usize = 4 << 20;

/// The writer, once logging is set up: its count of dropped lines.
static WRITER: OnceLock<Batches> = OnceLock::new();

/// Log lines dropped so far because the buffer to stdout was full.
pub fn dropped_lines() -> u64 {
    WRITER.get().map_or(0, Batches::dropped)
}

/// Keeps the log writer running; dropping it writes out what is pending (at the end of `main`).
#[must_use = "the log is flushed when this is dropped: keep it until the process ends"]
pub struct LogGuard(Option<Flush>);

/// The batching writer to stdout. A process that cannot start one more thread will fail at the
/// runtime's next; it says so on stderr, and drops (and counts) every line.
#[cfg(not(feature = "stock-log-writer"))]
fn writer() -> (Batches, Option<Flush>) {
    match Batches::spawn(stdout_writer(), BUFFER_BYTES) {
        Ok((writer, flush)) => (writer, Some(flush)),
        Err(e) => {
            eprintln!("warning: cannot start the log writer thread ({e}); the log is off");
            (Batches::discard(), None)
        }
    }
}

/// Built with `stock-log-writer` (bench/run's A/B only): tracing-appender's non-blocking
/// writer, lossy past as many lines as [`BUFFER_BYTES`] holds of 200-byte lines.
#[cfg(feature = "stock-log-writer")]
type Flush = tracing_appender::non_blocking::WorkerGuard;

#[cfg(feature = "stock-log-writer")]
fn writer() -> (tracing_appender::non_blocking::NonBlocking, Option<Flush>) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFER_BYTES / 200)
        .finish(stdout_writer());
    (writer, Some(guard))
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        drop(self.0.take());
        let dropped = dropped_lines();
        if dropped > 0 {
            eprintln!("warning: {dropped} log line(s) were dropped: stdout did not keep up");
        }
    }
}

/// stdout as the writer thread uses it: its file descriptor, unbuffered, since each write is a
/// whole batch already (std's `Stdout` would add a lock and a line buffer).
fn stdout_writer() -> Box<dyn std::io::Write + Send> {
    use std::os::fd::AsFd;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(std::io::stdout()),
    }
}

/// Installs the global subscriber: lines to stdout (where process supervisors collect them), as
/// text or JSON, filtered by `RUST_LOG`, through the batching writer. An unparsable filter
/// falls back to `info` with a warning rather than silencing the log. Keep the guard until the
/// process ends.
pub fn init(args: &LogArgs) -> LogGuard {
    // `RUST_LOG=garbage` (or `hyper=debug`) names no level and none of the service's targets:
    // taken as it is, it silences the service. As an unparsable filter falls back to `info`,
    // this one gets `info` as its default level, its own directives kept.
    let defaulted = lacks_a_default_level(&args.filter).then(|| format!("info,{}", args.filter));
    let (filter, bad_filter) = Filter::parse(defaulted.as_deref().unwrap_or(&args.filter));
    // Colour only for a person at a terminal; escape codes in a log file are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, flush) = writer();
    let lines = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer.clone());
    let filtered = tracing_subscriber::registry().with(filter.targets).with(filter.env);
    // try_init: a second call (tests, embedding) keeps the first subscriber, and its writer.
    let installed = match args.log_format {
        // Built with `stock-log-format` (bench/run's A/B only), always the stock formatter.
        LogFormat::Text if ansi || cfg!(feature = "stock-log-format") => filtered.with(lines).try_init(),
        // The same line, written for a fraction of the cost (see `text`).
        LogFormat::Text => filtered
            .with(
                lines
                    .fmt_fields(text::TextFields)
                    .event_format(text::TextLine::<text::Rfc3339Micros>::default()),
            )
            .try_init(),
        // `spans` carries the fields of the spans an event is in (a request's method, path and
        // `request_id`), so every line of a request names it.
        LogFormat::Json => filtered
            .with(lines.json().flatten_event(true).with_current_span(false))
            .try_init(),
    };
    let guard = match installed {
        Ok(()) => {
            #[cfg(not(feature = "stock-log-writer"))]
            let _ = WRITER.set(writer);
            flush
        }
        // Not installed: this writer serves nobody, and its thread stops with `flush`.
        Err(_) => None,
    };
    if let Some(e) = bad_filter {
        tracing::warn!(filter = %args.filter, error = %e, "ignoring unparsable log filter; using info");
    } else if let Some(used) = defaulted {
        tracing::warn!(filter = %args.filter, using = %used, "log filter names no level and none of this service's targets; adding info as the default level");
    }
    LogGuard(guard)
}

/// `RUST_LOG` as a filter: exactly one of the two is set.
struct Filter {
    /// A list of `target=level` and bare levels, the usual case (`info`,
    /// `warn,stockorder=debug`): decided per call site, once.
    targets: Option<Targets>,
    /// Anything `Targets` cannot say (span and field directives). `EnvFilter` keeps every span
    /// in a map behind a lock it takes at each span's creation, enter, exit and close, whether
    /// a directive names spans or not: with a span per request, a lock shared by all the
    /// runtime's threads four times per request (default against lean, GETs with wrk: ~5%).
    env: Option<EnvFilter>,
}

impl Filter {
    /// The filter `text` describes, or `info` and the reason `text` was refused.
    fn parse(text: &str) -> (Self, Option<tracing_subscriber::filter::ParseError>) {
        let env = |env| Self {
            targets: None,
            env: Some(env),
        };
        if !text.trim().is_empty()
            && !text.contains(['[', '{'])
            && let Ok(targets) = text.parse::<Targets>()
        {
            return (
                Self {
                    targets: Some(targets),
                    env: None,
                },
                None,
            );
        }
        match EnvFilter::try_new(text) {
            Ok(f) => (env(f), None),
            Err(e) => (env(EnvFilter::new("info")), Some(e)),
        }
    }
}

/// Whether `filter` (valid `tracing` syntax) would leave the service silent without meaning to:
/// no directive is a bare level (`info`, `warn`, …, `off`), and none names a target of ours.
/// `RUST_LOG=garbage` is such a filter: `garbage` is a valid target, so it parses, and it hides
/// everything else. `off` says silence on purpose.
fn lacks_a_default_level(filter: &str) -> bool {
    const OURS: [&str; 3] = ["stockorder", "phased_shutdown", "tower_http"];
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    !filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .any(|directive| {
            let target = directive.split(['=', '[']).next().unwrap_or_default();
            let bare_level = !directive.contains('=') && LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive));
            bare_level || OURS.iter().any(|o| target.starts_with(o))
        })
        && !filter.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::{Filter, lacks_a_default_level};
    use tracing::Level;

    #[test]
    fn plain_filters_are_targets_and_the_rest_env_filters() {
        for plain in [
            "info",
            "warn,stockorder=debug",
            "WARN",
            "off",
            "stockorder::adapter=trace,info",
        ] {
            let (filter, error) = Filter::parse(plain);
            assert!(
                filter.targets.is_some() && filter.env.is_none() && error.is_none(),
                "{plain}"
            );
        }
        let (filter, _) = Filter::parse("warn,stockorder=debug");
        let targets = filter.targets.unwrap();
        assert!(targets.would_enable("stockorder::adapter::inbound::http", &Level::DEBUG));
        assert!(!targets.would_enable("stockorder::adapter::inbound::http", &Level::TRACE));
        assert!(!targets.would_enable("hyper", &Level::INFO));
        assert!(targets.would_enable("hyper", &Level::WARN));
        for spans in ["stockorder[request]=debug", "[{request_id=abc}]=trace", ""] {
            let (filter, error) = Filter::parse(spans);
            assert!(
                filter.targets.is_none() && filter.env.is_some() && error.is_none(),
                "{spans:?}"
            );
        }
        let (filter, error) = Filter::parse("stockorder=loud");
        assert!(
            filter.env.is_some() && error.is_some(),
            "an invalid level falls back to info, with the reason"
        );
    }

    #[test]
    fn a_filter_that_would_silence_the_service_by_mistake_is_told_apart() {
        for silent in ["garbage", "hyper=debug", "sqlx=info"] {
            assert!(lacks_a_default_level(silent), "{silent}");
        }
        for heard in [
            "info",
            "WARN",
            "off",
            "garbage,off",
            "garbage,info",
            "stockorder=debug",
            "warn,stockorder=info",
            "phased_shutdown=info",
        ] {
            assert!(!lacks_a_default_level(heard), "{heard}");
        }
        // With `info` in front, the user's directives still count.
        let (filter, error) = Filter::parse("info,hyper=debug");
        let targets = filter.targets.unwrap();
        assert!(error.is_none());
        assert!(targets.would_enable("stockorder::app", &Level::INFO));
        assert!(targets.would_enable("hyper", &Level::DEBUG));
    }
}
