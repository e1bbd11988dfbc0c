//! The log's way to stdout: lines are appended to a shared buffer, and one thread writes the
//! buffer out every few milliseconds.
//!
//! Why not tracing-appender's non-blocking writer, which this replaced: it sends each line
//! through a channel as its own allocation, and its writer thread waits on that channel by
//! spinning with `sched_yield` before it sleeps. Under load, lines arrive just often enough to
//! keep it spinning, on a 2-core machine where the request path needs every cycle (the server's
//! CPU per request with each writer is in docs/performance.md, "Each hand-written speed-up").
//! Here a line costs the
//! logging thread a lock and a copy into the buffer; the writer thread wakes on the first line
//! after a quiet spell, or every [`GATHER`] under load, and writes what gathered in one call.
//!
//! A request never waits for stdout: past [`Batches::spawn`]'s limit, lines are dropped and
//! counted, not queued, and the count is reported (`stockorder_log_lines_dropped_total`, and a
//! warning at exit).
//!
//! An `ERROR` line does not wait for the gather: it wakes the writer thread, which writes it
//! with everything before it at once. Errors are rare, and the last one may come just before
//! the process ends without flushing (the shutdown watchdog's `shutdown.overrun` is followed by
//! `exit(1)`). It is still the writer thread that writes it: a logging thread never waits for
//! stdout, which may be a pipe whose reader has stalled.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer lets lines gather after a write: a bound on its wake-ups (at most a few
/// hundred a second), and on how late a line reaches stdout.
pub const GATHER: Duration = Duration::from_millis(5);

/// Writes `bytes` to stdout. A failing stdout (closed pipe, full disk) cannot be reported
/// through the log itself, and must not stop the service: the lines are lost, as they would be
/// in the pipe.
fn write_out(out: &mut dyn Write, bytes: &[u8]) {
    if !bytes.is_empty() {
        let _ = out.write_all(bytes).and_then(|()| out.flush());
    }
}

/// What the logging threads and the writer thread share.
struct Shared {
    pending: Mutex<Pending>,
    /// stdout, owned by the writer thread (behind a lock only to be shared with it).
    out: Mutex<Box<dyn Write + Send>>,
    /// Signalled when the first line arrives in an empty buffer, at an `ERROR` line, and at
    /// close.
    wake: Condvar,
    /// Bytes the buffer may hold; a line that does not fit is dropped.
    limit: usize,
    /// How long lines gather after a write: [`GATHER`] (tests lengthen it).
    gather: Duration,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    /// An `ERROR` line is among `lines`: write without waiting out the gather.
    urgent: bool,
    closing: bool,
}

impl Shared {
    fn new(out: Box<dyn Write + Send>, limit: usize, gather: Duration) -> Self {
        Shared {
            pending: Mutex::new(Pending::default()),
            out: Mutex::new(out),
            wake: Condvar::new(),
            limit,
            gather,
            dropped: AtomicU64::new(0),
        }
    }

    /// The buffer; a thread that panicked while holding it left whole lines, so it stays usable.
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// stdout, for one write.
    fn out(&self) -> MutexGuard<'_, Box<dyn Write + Send>> {
        self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// The writer every log line goes through: a `MakeWriter` for the fmt layer, which asks it for
/// a [`Line`] per event and writes the formatted line with one `write_all`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Batches {
    shared: Arc<Shared>,
}

/// One event's writer, borrowed from [`Batches`]: no reference count is touched per line.
#[derive(Debug)]
pub struct Line<'a> {
    shared: &'a Shared,
    /// The writer for an `ERROR` line: wakes the writer thread.
    urgent: bool,
}

/// Dropped, writes out everything logged so far and stops the writer thread.
#[derive(Debug)]
pub struct Flush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Batches {
    /// Starts the writer thread over `out`, holding up to `limit` bytes of lines not yet
    /// written.
    pub fn spawn(out: impl Write + Send + 'static, limit: usize) -> io::Result<(Batches, Flush)> {
        Self::start(out, limit, GATHER)
    }

    fn start(out: impl Write + Send + 'static, limit: usize, gather: Duration) -> io::Result<(Batches, Flush)> {
        let shared = Arc::new(Shared::new(Box::new(out), limit, gather));
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("log writer".into())
                .spawn(move || run(&shared))?
        };
        let flush = Flush {
            shared: Arc::clone(&shared),
            thread: Some(thread),
        };
        Ok((Batches { shared }, flush))
    }

    /// A writer without a thread, for when none can be started: it drops every line, and
    /// counts it.
    pub fn discard() -> Batches {
        Batches {
            shared: Arc::new(Shared::new(Box::new(io::sink()), 0, GATHER)),
        }
    }

    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Write for Line<'_> {
    /// Takes the whole of `line` or, when the buffer is full, drops the whole of it: never a
    /// part, and never a wait.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut pending = self.shared.pending();
        if pending.lines.len() + line.len() > self.shared.limit {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        let wake = pending.lines.is_empty() || self.urgent;
        pending.lines.extend_from_slice(line);
        pending.urgent |= self.urgent;
        drop(pending);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batches {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line<'a> {
        Line {
            shared: &self.shared,
            urgent: *meta.level() == tracing::Level::ERROR,
        }
    }
}

impl Flush {
    /// Writes out everything logged so far and stops the writer thread.
    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.pending().closing = true;
        self.shared.wake.notify_one();
        // A writer thread that panicked has nothing more to write.
        let _ = thread.join();
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer thread: waits for lines, writes all that gathered, lets more gather (unless an
/// `ERROR` line came), again; at close, writes what is left and returns.
fn run(shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        let closing = {
            let mut pending = shared.pending();
            while pending.lines.is_empty() && !pending.closing {
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            // The emptied buffer goes back, keeping its capacity: no allocation in the steady state.
            std::mem::swap(&mut pending.lines, &mut batch);
            pending.urgent = false;
            pending.closing
        };
        write_out(&mut **shared.out(), &batch);
        batch.clear();
        if closing {
            // Lines logged while that batch was written.
            let rest = std::mem::take(&mut shared.pending().lines);
            write_out(&mut **shared.out(), &rest);
            return;
        }
        gather(shared);
    }
}

/// Lets lines gather for [`GATHER`], or less if an `ERROR` line or the close comes.
fn gather(shared: &Shared) {
    let until = std::time::Instant::now() + shared.gather;
    let mut pending = shared.pending();
    while !pending.urgent && !pending.closing {
        let Some(left) = until.checked_duration_since(std::time::Instant::now()) else {
            return;
        };
        pending = match shared.wake.wait_timeout(pending, left) {
            Ok((pending, _)) => pending,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes written to the "stdout" of a test, and how many writes it took.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut sink = self.0.lock().unwrap();
            sink.0.extend_from_slice(buf);
            sink.1 += 1;
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }
    }

    #[test]
    fn every_line_arrives_whole_and_in_each_threads_order_by_the_close() {
        let sink = Sink::default();
        let (writer, flush) = Batches::spawn(sink.clone(), 1 << 20).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        writer
                            .make_writer()
                            .write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(flush);
        let text = sink.text();
        assert_eq!(text.lines().count(), 8_000);
        for t in 0..4 {
            let own: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(own, (0..2_000).collect::<Vec<_>>(), "thread {t}");
        }
        assert_eq!(writer.dropped(), 0);
        let writes = sink.0.lock().unwrap().1;
        assert!(
            writes < 8_000,
            "lines were written in batches, not one by one ({writes} writes)"
        );
    }

    /// A stdout that stops taking anything: lines past the limit are dropped and counted, the
    /// logging thread never waits, and the lines kept are written once stdout moves again.
    #[test]
    fn a_stuck_stdout_drops_and_counts_instead_of_waiting() {
        /// Blocks its first write until the test lets it go; records everything.
        struct Stuck {
            entered: std::sync::mpsc::Sender<()>,
            gate: Option<std::sync::mpsc::Receiver<()>>,
            sink: Sink,
        }
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if let Some(gate) = self.gate.take() {
                    self.entered.send(()).unwrap();
                    gate.recv().unwrap();
                }
                self.sink.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (entered, stuck) = std::sync::mpsc::channel();
        let (release, gate) = std::sync::mpsc::channel();
        let sink = Sink::default();
        let out = Stuck {
            entered,
            gate: Some(gate),
            sink: sink.clone(),
        };
        let (writer, flush) = Batches::spawn(out, 100).unwrap();
        writer
            .make_writer()
            .write_all(b"first line, which the writer takes and is stuck on\n")
            .unwrap();
        stuck.recv().unwrap();
        let line = b"a line of twenty-six byte\n";
        for _ in 0..10 {
            writer.make_writer().write_all(line).unwrap();
        }
        // 100 bytes hold three of them; the other seven were dropped, at once.
        assert_eq!(writer.dropped(), 7);
        release.send(()).unwrap();
        drop(flush);
        let text = sink.text();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.ends_with("a line of twenty-six byte\n"), "{text}");
    }

    /// An `ERROR` line cuts the gather short: with a gather of a minute, the writer thread
    /// writes it (after what came before it) as soon as it is logged.
    #[test]
    fn an_error_line_cuts_the_gather_short() {
        /// A stdout that tells the test about each write.
        struct Told(std::sync::mpsc::Sender<Vec<u8>>);
        impl Write for Told {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let _ = self.0.send(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (told, writes) = std::sync::mpsc::channel();
        let (writer, flush) = Batches::start(Told(told), 1 << 16, Duration::from_secs(60)).unwrap();
        let subscriber = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .with_writer(writer)
            .finish();
        let within = Duration::from_secs(10);
        tracing::subscriber::with_default(subscriber, || {
            // Into an idle writer: written at once, and the minute's gather begins.
            tracing::info!("first");
            assert_eq!(writes.recv_timeout(within).unwrap(), b" INFO first\n");
            tracing::info!("before");
            tracing::error!("the error");
        });
        assert_eq!(
            String::from_utf8(writes.recv_timeout(within).unwrap()).unwrap(),
            " INFO before\nERROR the error\n"
        );
        drop(flush);
    }

    #[test]
    fn a_line_logged_just_before_the_close_is_written() {
        let sink = Sink::default();
        let (writer, flush) = Batches::spawn(sink.clone(), 1 << 16).unwrap();
        writer.make_writer().write_all(b"last words\n").unwrap();
        drop(flush);
        assert_eq!(sink.text(), "last words\n");
    }
}
