//! The text log line, written without tracing-subscriber's colour machinery.
//!
//! Why: every request logs a line at `info`, and formatting it was a large share of a GET's
//! cost (the A/B against the stock formatter is in docs/performance.md, "Each hand-written
//! speed-up"). tracing-subscriber's `Full` format paints each
//! part through `nu_ansi_term` even with colours off, formats the time and every number
//! through `core::fmt`, and passes the message through its escaping writer a character at a
//! time. [`TextLine`] and [`TextFields`] write the very same line (a test holds them to it,
//! byte for byte) with plain string pushes, `itoa` for integers and the time written into a
//! fixed template. At a terminal the stock formatter is kept, for its colours.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::rfc3339;

/// The time as tracing-subscriber's `SystemTime` timer writes it: RFC 3339 in UTC with
/// microseconds, `2026-12-05T18:11:16.264071Z`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rfc3339Micros;

impl FormatTime for Rfc3339Micros {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = time::OffsetDateTime::now_utc();
        let mut line = *b"0000-00-00T00:00:00.000000Z";
        line[..19].copy_from_slice(&rfc3339::date_time(now).ok_or(fmt::Error)?);
        rfc3339::digits(&mut line[20..26], now.microsecond());
        // Invariant: only ASCII digits were written into an ASCII template.
        w.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
    }
}

/// A line as tracing-subscriber's default text format writes it without colours and without
/// targets: `TIME LEVEL span{fields}:span: message field=value …`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextLine<T = Rfc3339Micros> {
    timer: T,
}

impl<T> TextLine<T> {
    /// A line whose time is written by `timer` (tests fix it).
    #[cfg(test)]
    pub fn with_timer(timer: T) -> Self {
        Self { timer }
    }
}

impl<S, T> FormatEvent<S, TextFields> for TextLine<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: FormatTime,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, TextFields>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        self.timer.format_time(&mut w)?;
        w.write_str(match *event.metadata().level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(span) = ctx.parent_span() {
            spans(&span, &mut w)?;
            w.write_char(' ')?;
        }
        ctx.format_fields(w.by_ref(), event)?;
        w.write_char('\n')
    }
}

/// Writes `span` after the spans it is in, the outermost first: `outer{…}:inner{…}:`. Walks up
/// by recursion: tracing-subscriber's `Scope::from_root` gathers the scope into a 16-slot
/// `SmallVec` for every line, most of the cost of writing a request's span (callgrind).
fn spans<S>(span: &SpanRef<'_, S>, w: &mut Writer<'_>) -> fmt::Result
where
    S: for<'a> LookupSpan<'a>,
{
    if let Some(parent) = span.parent() {
        spans(&parent, w)?;
    }
    w.write_str(span.metadata().name())?;
    if let Some(fields) = span.extensions().get::<FormattedFields<TextFields>>()
        && !fields.is_empty()
    {
        w.write_char('{')?;
        w.write_str(fields)?;
        w.write_char('}')?;
    }
    w.write_char(':')
}

/// Fields as tracing-subscriber's default visitor writes them: `name=value` separated by
/// spaces, values in their `Debug` form (strings quoted), the message first and bare.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        // The fields are written into a reused buffer, then into the line in one piece: each
        // write through `Writer` is a dynamic call, and a field is four to six writes; and a
        // span's fields go into a new `String` that would otherwise grow several times.
        thread_local! {
            static PENDING: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let write = |pending: &mut String| {
            pending.clear();
            let mut visitor = Fields {
                w: pending,
                first: true,
                result: Ok(()),
            };
            fields.record(&mut visitor);
            visitor.result
        };
        PENDING.with(|pending| match pending.try_borrow_mut() {
            Ok(mut pending) => {
                write(&mut pending)?;
                writer.write_str(&pending)
            }
            // A field's `Display` logged an event of its own: this buffer is in use.
            Err(_) => {
                let mut own = String::new();
                write(&mut own)?;
                writer.write_str(&own)
            }
        })
    }
}

struct Fields<'a> {
    w: &'a mut String,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_> {
    /// Writes the separator, then what `write` writes; after an error, nothing more.
    fn next(&mut self, write: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        if !self.first {
            self.w.push(' ');
        }
        self.first = false;
        self.result = write(self.w);
    }

    /// Writes one field: `name=` and the value `value` writes.
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.next(|w| {
            w.write_str(name)?;
            w.write_char('=')?;
            value(w)
        });
    }

    /// Writes the message: bare, with terminal control characters escaped.
    fn message(&mut self, message: &dyn fmt::Debug) {
        self.next(|w| write!(Sanitized(w), "{message:?}"));
    }
}

fn is_message(field: &Field) -> bool {
    field.name() == "message"
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if is_message(field) {
            self.message(&format_args!("{value}"));
        } else {
            self.field(field, |w| quoted(w, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if is_message(field) {
            self.message(&value);
        } else {
            self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if is_message(field) {
            self.message(&value);
        } else {
            self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if is_message(field) {
            self.message(&value);
        } else {
            self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // As tracing-subscriber: the error, then its sources as a list, each escaped.
        let error = Escaped(format_args!("{value}"));
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!("{error} {}.sources={}", field.name(), Sources(source)),
            ),
            None => self.record_debug(field, &format_args!("{error}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if is_message(field) {
            self.message(value);
        } else {
            self.field(field, |w| write!(w, "{value:?}"));
        }
    }
}

/// A string in its `Debug` form. Most values (paths, ids, symbols) have nothing to escape and
/// are written in one piece.
fn quoted(w: &mut impl fmt::Write, value: &str) -> fmt::Result {
    if value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        w.write_char('"')?;
        w.write_str(value)?;
        w.write_char('"')
    } else {
        write!(w, "{value:?}")
    }
}

/// Whether `c` is escaped in a message: the control characters a terminal acts on (ESC, BEL,
/// BS, FF, DEL and the C1 range), as tracing-subscriber escapes them.
fn is_terminal_control(c: char) -> bool {
    matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}')
}

/// Writes through to the line, escaping terminal control characters; a piece without any is
/// written whole.
struct Sanitized<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Sanitized<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Every character escaped is ESC, BEL, BS, FF, DEL (ASCII) or C1 (encoded 0xC2 0x80–0x9F).
        if !s.bytes().any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2)) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c if is_terminal_control(c) => write!(self.0, "\\x{:02x}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// `Display` with terminal control characters escaped.
struct Escaped<T>(T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Sanitized(f), "{}", self.0)
    }
}

impl<T: fmt::Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tracing-subscriber writes each source as the Debug of a Display: the text, unquoted.
        fmt::Display::fmt(self, f)
    }
}

/// An error's sources, as a list: `["first", "second"]`, without quotes.
struct Sources<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(error) = next {
            list.entry(&Escaped(format_args!("{error}")));
            next = error.source();
        }
        list.finish()
    }
}

#[cfg(test)]
pub(crate) use captured::Captured;

#[cfg(test)]
mod captured {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    /// Lines written by a subscriber, kept for the test to read.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        /// Everything written so far.
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::{debug, error, info, info_span, trace, warn};

    use super::*;

    /// One fixed time for both formatters.
    struct FixedTime;

    impl FormatTime for FixedTime {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-12-05T18:11:16.264071Z")
        }
    }

    #[derive(Debug)]
    struct Failure(&'static str, Option<Box<Failure>>);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Failure {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    /// Every kind of field, value and span the service logs, and the awkward ones.
    fn log_everything() {
        trace!("trace level");
        debug!("debug level");
        info!("plain message");
        info!(
            event = "request.finished",
            status = 201u16,
            latency_us = 69_522u64,
            "finished processing request"
        );
        warn!(n = -3i64, ok = true, ratio = 0.25f64, huge = u128::MAX, "numbers");
        error!(error = %"disk full", "display value");
        let chain = Failure("cannot commit", Some(Box::new(Failure("disk \x1b full", None))));
        error!(error = &chain as &dyn std::error::Error, "error with sources");
        let alone = Failure("alone", None);
        error!(error = &alone as &dyn std::error::Error, "error without sources");
        info!(text = "quote \" backslash \\ newline \n tab \t esc \x1b é", "strings");
        info!(
            path = "/api/orders/0193b6a2-7c1e-7d8e-9f00-123456789abc",
            "a plain string"
        );
        info!("message with \x1b[31m colour, \u{85} C1, \x07 bell and café");
        info!(message = "a message given as a string");
        info!(r#type = "keyword", "raw identifier");
        debug!(list = ?vec![1, 2], opt = ?Some("x"), "debug values");
        info!(only = 1u64);
        info!(message = 42u64);
        let request = info_span!(
            "request",
            method = %"POST",
            uri = %"/api/orders",
            version = ?"HTTP/1.1",
            request_id = %"01a24767-365c-77d4-8180-a4bbef2b8bc4",
        );
        request.in_scope(|| {
            info!(status = 201u64, "inside a span");
            info_span!("bare").in_scope(|| warn!(x = 1u64, "nested, the inner span without fields"));
        });
        let late = info_span!("late", a = tracing::field::Empty, b = tracing::field::Empty);
        late.record("a", 5u64);
        late.record("b", "text");
        late.in_scope(|| info!("fields recorded after the span began"));
    }

    fn stock() -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_target(false)
            .with_timer(FixedTime)
            .with_max_level(Level::TRACE)
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log_everything);
        out.text()
    }

    fn ours() -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_target(false)
            .fmt_fields(TextFields)
            .event_format(TextLine::with_timer(FixedTime))
            .with_max_level(Level::TRACE)
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log_everything);
        out.text()
    }

    #[test]
    fn lines_are_the_stock_format_byte_for_byte() {
        let (stock, ours) = (stock(), ours());
        assert_eq!(stock.lines().count(), 19, "{stock}");
        for (expected, line) in stock.lines().zip(ours.lines()) {
            assert_eq!(line, expected);
        }
        assert_eq!(ours, stock);
    }

    #[test]
    fn the_time_is_utc_rfc3339_with_microseconds() {
        let mut text = String::new();
        Rfc3339Micros.format_time(&mut Writer::new(&mut text)).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let parsed = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).unwrap();
        assert_eq!(text.len(), "2026-12-05T18:11:16.264071Z".len(), "{text}");
        assert!(text.ends_with('Z'), "{text}");
        assert!(
            (now - parsed).abs() < time::Duration::seconds(2),
            "{text} is not now ({now})"
        );
    }
}
