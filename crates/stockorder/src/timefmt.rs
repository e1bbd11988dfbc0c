//! RFC 3339 text of a UTC time, written into a fixed template on the stack.
//!
//! Why: every answer carries two or three timestamps and every log line one. `time`'s RFC 3339
//! formatter goes through its generic formatting machinery into a fresh `String` (about 1k
//! instructions a timestamp, callgrind), while the text is a fixed layout of digits. The
//! output is the same as `time`'s (a test holds it to that), only cheaper.

use time::{OffsetDateTime, UtcOffset};

/// How the fraction of a second is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fraction {
    /// Always six digits: `2026-12-05T18:11:16.264000Z` (log lines, which line up).
    Micros,
    /// As `time`'s `Rfc3339` writes it, which the API has always answered: nanoseconds without
    /// their trailing zeros, and no fraction at all on a whole second
    /// (`2026-12-05T18:11:16.264Z`, `2026-12-05T18:11:16Z`).
    Trimmed,
}

/// A formatted time; [`Rfc3339::as_str`] gives the text.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339 {
    text: [u8; 30],
    len: usize,
}

impl Rfc3339 {
    /// `at` in UTC (whatever its offset), with the fraction written as `fraction` says. Years
    /// outside 0–9999 are written modulo 10 000: RFC 3339 has four digits for them, and no
    /// time this service stores is near either end.
    pub fn new(at: OffsetDateTime, fraction: Fraction) -> Self {
        let at = at.checked_to_offset(UtcOffset::UTC).unwrap_or(at);
        let mut text = *b"0000-00-00T00:00:00.000000000Z";
        digits(&mut text[0..4], at.year().unsigned_abs());
        digits(&mut text[5..7], u32::from(u8::from(at.month())));
        digits(&mut text[8..10], u32::from(at.day()));
        digits(&mut text[11..13], u32::from(at.hour()));
        digits(&mut text[14..16], u32::from(at.minute()));
        digits(&mut text[17..19], u32::from(at.second()));
        let nanos = at.nanosecond();
        let len = match fraction {
            Fraction::Micros => {
                digits(&mut text[20..26], nanos / 1_000);
                26
            }
            Fraction::Trimmed if nanos == 0 => 19,
            Fraction::Trimmed => {
                digits(&mut text[20..29], nanos);
                // Drop trailing zeros; at least one digit stays, as nanos is not zero.
                let mut end = 29;
                while text[end - 1] == b'0' {
                    end -= 1;
                }
                end
            }
        };
        text[len] = b'Z';
        Self { text, len: len + 1 }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Invariant: only ASCII digits and the template's ASCII punctuation are in `text`.
        std::str::from_utf8(&self.text[..self.len]).unwrap_or_default()
    }
}

/// Writes `value` into `out` as decimal digits, zero-padded (or cut) to its length.
fn digits(out: &mut [u8], mut value: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Serde `with` modules: a time as [`Fraction::Trimmed`] RFC 3339 text, `time::serde::rfc3339`'s
/// format.
pub mod serde_rfc3339 {
    use serde::Serializer;
    use time::OffsetDateTime;

    use super::{Fraction, Rfc3339};

    /// Writes `at` as RFC 3339 text.
    pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Rfc3339::new(*at, Fraction::Trimmed).as_str())
    }

    /// The same for an optional time (used with `skip_serializing_if = "Option::is_none"`).
    pub mod option {
        use super::*;

        /// Writes `at` as RFC 3339 text, or `null`.
        pub fn serialize<S: Serializer>(at: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, s),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use time::format_description::well_known::Rfc3339 as TimeRfc3339;

    use super::*;

    /// Times from 1970 to 9999, with nanoseconds that end in any number of zeros.
    fn any_time() -> impl Strategy<Value = OffsetDateTime> {
        (0i64..253_402_300_800, 0u32..1_000_000_000, 0u32..10).prop_map(|(secs, nanos, zeros)| {
            let nanos = nanos / 10u32.pow(zeros) * 10u32.pow(zeros);
            OffsetDateTime::from_unix_timestamp(secs).unwrap() + time::Duration::nanoseconds(i64::from(nanos))
        })
    }

    proptest! {
        #[test]
        fn trimmed_is_what_time_writes(at in any_time()) {
            let ours = Rfc3339::new(at, Fraction::Trimmed);
            prop_assert_eq!(ours.as_str(), at.format(&TimeRfc3339).unwrap());
        }

        #[test]
        fn micros_always_has_six_digits(at in any_time()) {
            let text = Rfc3339::new(at, Fraction::Micros);
            let text = text.as_str();
            prop_assert_eq!(text.len(), "2026-12-05T18:11:16.264071Z".len());
            let back = OffsetDateTime::parse(text, &TimeRfc3339).unwrap();
            prop_assert_eq!(back, at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000).unwrap());
        }

        #[test]
        fn another_offset_is_written_in_utc(at in any_time(), hours in -12i8..=12) {
            let Some(there) = at.checked_to_offset(UtcOffset::from_hms(hours, 0, 0).unwrap()) else {
                return Ok(()); // beyond year 9999 there
            };
            let ours = Rfc3339::new(there, Fraction::Trimmed);
            prop_assert_eq!(ours.as_str(), at.format(&TimeRfc3339).unwrap());
        }
    }

    #[test]
    fn whole_seconds_have_no_fraction() {
        let at = OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap();
        assert_eq!(Rfc3339::new(at, Fraction::Trimmed).as_str(), "2026-05-28T20:26:40Z");
        assert_eq!(
            Rfc3339::new(at, Fraction::Micros).as_str(),
            "2026-05-28T20:26:40.000000Z"
        );
    }
}
