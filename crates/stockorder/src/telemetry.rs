//! Logging, set up once per process.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::{LogArgs, LogFormat};

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// The service logs to stdout, where process supervisors collect it.
    Stdout,
    /// Tools (clients, load) log to stderr, keeping stdout for their results.
    Stderr,
}

/// Installs the global subscriber: lines to `output`, as text or JSON, filtered by `RUST_LOG`.
/// An unparsable filter falls back to `info` with a warning rather than silencing the log.
pub fn init(args: &LogArgs, output: LogOutput) {
    let (filter, bad_filter) = match EnvFilter::try_new(&args.filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    // Colour only for a person at a terminal; escape codes in a log file are noise.
    let (ansi, writer) = match output {
        LogOutput::Stdout => (
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
            BoxMakeWriter::new(std::io::stdout),
        ),
        LogOutput::Stderr => (
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            BoxMakeWriter::new(std::io::stderr),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    // try_init: a second call (tests, embedding) keeps the first subscriber.
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        // `spans` carries the fields of the spans an event is in (a request's method, path and
        // `request_id`), so every line of a request names it.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    if let Some(e) = bad_filter {
        tracing::warn!(filter = %args.filter, error = %e, "ignoring unparsable log filter; using info");
    }
}
