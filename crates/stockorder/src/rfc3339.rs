//! RFC 3339 text written into fixed templates, for the two places that write a time for every
//! request: the log line's time ([`crate::telemetry`]) and the API's timestamps (the REST
//! adapter's JSON). `time`'s own formatter writes the same text in ~15 small pieces through
//! `io::Write`.

use time::OffsetDateTime;

/// `YYYY-MM-DDTHH:MM:SS` of `at`, in its own offset; `None` when the year is outside 0–9999,
/// which four digits cannot hold (nor RFC 3339 allow).
pub(crate) fn date_time(at: OffsetDateTime) -> Option<[u8; 19]> {
    // The date once: `month()` and `day()` would each work it out from the day of the year.
    let (year, month, day) = at.to_calendar_date();
    let Ok(year @ 0..=9999) = u32::try_from(year) else {
        return None;
    };
    let mut text = *b"0000-00-00T00:00:00";
    digits(&mut text[0..4], year);
    digits(&mut text[5..7], u32::from(u8::from(month)));
    digits(&mut text[8..10], u32::from(day));
    digits(&mut text[11..13], u32::from(at.hour()));
    digits(&mut text[14..16], u32::from(at.minute()));
    digits(&mut text[17..19], u32::from(at.second()));
    Some(text)
}

/// Writes `value` into `out` as decimal digits, zero-padded to its length.
pub(crate) fn digits(out: &mut [u8], mut value: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}
