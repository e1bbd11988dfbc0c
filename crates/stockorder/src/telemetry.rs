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
    } else if hides_the_service(&args.filter) {
        // Not through tracing: the filter would hide this line too.
        eprintln!(
            "warning: RUST_LOG={:?} names no level and none of this service's targets, so the service logs nothing; try RUST_LOG=info",
            args.filter
        );
    }
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
