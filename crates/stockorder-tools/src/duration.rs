//! Durations on the command line: `2` or `2.5` (seconds), or `1500ms`, `2s`, `1m30s`.

use std::time::Duration;

/// Parses a bare number as seconds and anything else with `humantime` (`1500ms`, `2s`, `1m`).
pub fn parse(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| format!("{raw:?} is not a non-negative duration"));
    }
    humantime::parse_duration(raw).map_err(|e| format!("{raw:?} is not a duration (try 2, 2s or 1500ms): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_units() {
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert!(parse("-1").is_err());
        assert!(parse("soon").is_err());
    }
}
