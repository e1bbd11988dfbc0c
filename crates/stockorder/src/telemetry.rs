//! Logging, set up once per process.

use tracing_subscriber::EnvFilter;

use crate::config::{LogArgs, LogFormat};

/// Installs the global subscriber: lines to stdout (where process supervisors collect them), as
/// text or JSON, filtered by `RUST_LOG`. An unparsable filter falls back to `info` with a
/// warning rather than silencing the log.
pub fn init(args: &LogArgs) {
    let (filter, bad_filter) = match EnvFilter::try_new(&args.filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    // Colour only for a person at a terminal; escape codes in a log file are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stdout);
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
