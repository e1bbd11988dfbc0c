//! Deadline and ordering logic, on tokio's paused clock: `sleep`s complete instantly in real
//! time but advance the virtual clock exactly, so timings are asserted without flakiness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::{Outcome, Reason, SecondSignal, Shutdown};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Log = Arc<Mutex<Vec<(String, Duration)>>>;

/// The report's entry for `name`.
fn entry<'a>(report: &'a crate::Report, name: &str) -> &'a crate::Entry {
    report
        .entries
        .iter()
        .find(|e| e.component == name)
        .unwrap_or_else(|| panic!("no entry for {name:?} in\n{report}"))
}

/// How `name` ended.
fn outcome(report: &crate::Report, name: &str) -> Outcome {
    entry(report, name).outcome.clone()
}

/// Sets its flag when dropped: shows that a task's future was dropped (aborted or finished).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn note(log: &Log, t0: Instant, what: &str) {
    log.lock().unwrap().push((what.to_owned(), t0.elapsed()));
}

#[tokio::test(start_paused = true)]
async fn phases_run_in_order_and_a_phase_runs_concurrently() {
    let mut shutdown = Shutdown::new().on_second_signal(SecondSignal::Ignore);
    let servers = shutdown.phase("servers");
    let resources = shutdown.phase("resources");
    let log: Log = Arc::default();
    let t0 = Instant::now();
    for name in ["http", "grpc"] {
        let log = Arc::clone(&log);
        shutdown.spawn(servers, name, move |stop| async move {
            stop.stopped().await;
            tokio::time::sleep(ms(100)).await; // finishing requests in flight
            note(&log, t0, name);
        });
    }
    let l = Arc::clone(&log);
    shutdown.on_stop(resources, "database", move || async move {
        note(&l, t0, "database");
        Ok::<(), std::io::Error>(())
    });
    shutdown.handle().shutdown("test");
    let report = shutdown.run().await;

    assert!(report.is_clean(), "{report}");
    assert_eq!(report.reason, Reason::Requested("test".into()));
    let log = log.lock().unwrap().clone();
    let at = |what: &str| log.iter().find(|(w, _)| w == what).unwrap().1;
    assert_eq!(at("http"), ms(100), "servers stop concurrently: 100 ms, not 200");
    assert_eq!(at("grpc"), ms(100));
    assert_eq!(at("database"), ms(100), "the database closes only after both servers");
    let names: Vec<_> = report.entries.iter().map(|e| e.component.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert_eq!(names[2], "database");
    assert_eq!(report.total, ms(100));
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test(start_paused = true)]
async fn readiness_flips_first_and_the_drain_delay_keeps_serving() {
    let mut shutdown = Shutdown::new().drain_delay(ms(2000));
    let readiness = shutdown.readiness();
    let servers = shutdown.phase("servers");
    let stopped_at: Arc<Mutex<Option<Duration>>> = Arc::default();
    let t0 = Instant::now();
    let s = Arc::clone(&stopped_at);
    shutdown.spawn(servers, "http", move |stop| async move {
        stop.stopped().await;
        *s.lock().unwrap() = Some(t0.elapsed());
    });
    assert!(readiness.is_ready());
    let handle = shutdown.handle();
    let run = tokio::spawn(shutdown.run());
    handle.shutdown("deploy");
    readiness.draining().await;
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "unready at the trigger, not after the delay"
    );
    assert!(
        stopped_at.lock().unwrap().is_none(),
        "still serving during the drain delay"
    );
    let report = run.await.unwrap();
    assert_eq!(*stopped_at.lock().unwrap(), Some(ms(2000)));
    assert_eq!(report.entries[0].component, "drain delay");
    assert!(report.is_clean());
    assert_eq!(report.total, ms(2000));
}

#[tokio::test(start_paused = true)]
async fn a_straggler_is_aborted_at_its_phase_budget_and_named() {
    let mut shutdown = Shutdown::new().deadline(ms(10_000));
    let servers = shutdown.phase_with_budget("servers", ms(500));
    let resources = shutdown.phase("resources");
    let dropped = Arc::new(AtomicBool::new(false));
    let d = SetOnDrop(Arc::clone(&dropped));
    shutdown.spawn(servers, "stream that never ends", move |_stop| async move {
        let _d = d;
        std::future::pending::<()>().await;
    });
    shutdown.spawn(servers, "http", |stop| async move { stop.stopped().await });
    let closed = Arc::new(AtomicBool::new(false));
    let c = Arc::clone(&closed);
    shutdown.on_stop(
        resources,
        "database",
        move || async move { c.store(true, Ordering::SeqCst) },
    );

    shutdown.handle().shutdown("test");
    let report = shutdown.run().await;
    assert!(
        dropped.load(Ordering::SeqCst),
        "the straggler's task was aborted and joined"
    );
    assert!(closed.load(Ordering::SeqCst), "later phases still run");
    assert_eq!(report.stragglers().collect::<Vec<_>>(), ["stream that never ends"]);
    let straggler = report.entries.iter().find(|e| e.outcome == Outcome::TimedOut).unwrap();
    assert_eq!(straggler.took, ms(500));
    assert_eq!(report.total, ms(500));
    assert!(!report.is_clean());
    assert_eq!(report.exit_code(), 1);
    assert!(report.to_string().contains("stream that never ends"));
}

#[tokio::test(start_paused = true)]
async fn the_global_deadline_bounds_everything_and_skips_what_is_left() {
    let mut shutdown = Shutdown::new().deadline(ms(1000)).drain_delay(ms(400));
    let servers = shutdown.phase("servers");
    let resources = shutdown.phase("resources");
    shutdown.on_stop(servers, "slow", std::future::pending::<()>);
    shutdown.on_stop(resources, "database", || async {});
    shutdown.handle().shutdown("test");
    let report = shutdown.run().await;
    assert_eq!(report.total, ms(1000), "drain delay counts against the deadline");
    assert_eq!(outcome(&report, "slow"), Outcome::TimedOut);
    assert_eq!(outcome(&report, "database"), Outcome::Skipped);
    assert!(!report.is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_component_that_ends_on_its_own_starts_the_shutdown() {
    let mut shutdown = Shutdown::new();
    let readiness = shutdown.readiness();
    let servers = shutdown.phase("servers");
    let workers = shutdown.phase("workers");
    shutdown.spawn(servers, "http", |stop| async move { stop.stopped().await });
    shutdown.spawn(workers, "processor", |_stop| async move {
        tokio::time::sleep(ms(50)).await;
        Err::<(), _>("lost the database")
    });
    let report = shutdown.run().await;
    assert_eq!(report.reason, Reason::ComponentEnded("processor".into()));
    assert!(readiness.is_draining());
    let processor = entry(&report, "processor");
    assert_eq!(processor.outcome, Outcome::EndedEarly(Some("lost the database".into())));
    assert!(!report.is_clean());
    // The server stops at once; the processor had ended: nothing waited for it.
    assert_eq!(report.total, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn failures_and_panics_are_reported_not_propagated() {
    let mut shutdown = Shutdown::new();
    let resources = shutdown.phase("resources");
    shutdown.on_stop(resources, "cache", || async { Err::<(), _>("flush failed") });
    shutdown.on_stop(resources, "metrics", || async {
        if true {
            panic!("exporter bug");
        }
    });
    shutdown.on_stop(resources, "database", || async {});
    shutdown.handle().shutdown("test");
    let report = shutdown.run().await;
    assert_eq!(outcome(&report, "cache"), Outcome::Failed("flush failed".into()));
    assert_eq!(outcome(&report, "metrics"), Outcome::Panicked("exporter bug".into()));
    assert_eq!(outcome(&report, "database"), Outcome::Stopped);
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.total, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_first_reason_is_kept() {
    let shutdown = Shutdown::new();
    let handle = shutdown.handle();
    handle.shutdown("first");
    handle.shutdown("second");
    let report = shutdown.run().await;
    assert_eq!(report.reason, Reason::Requested("first".into()));
    assert!(report.entries.is_empty() && report.is_clean());
}

#[tokio::test(start_paused = true)]
async fn the_observer_sees_each_entry_when_its_component_stops_not_at_the_end() {
    let seen: Log = Arc::default();
    let t0 = Instant::now();
    let s = Arc::clone(&seen);
    let mut shutdown = Shutdown::new()
        .drain_delay(ms(200))
        .on_entry(move |e| note(&s, t0, &e.component));
    let servers = shutdown.phase("servers");
    let resources = shutdown.phase("resources");
    shutdown.spawn(servers, "http", |stop| async move {
        stop.stopped().await;
        tokio::time::sleep(ms(100)).await;
    });
    shutdown.on_stop(resources, "database", || async {
        tokio::time::sleep(ms(50)).await;
        Ok::<(), std::io::Error>(())
    });
    shutdown.handle().shutdown("test");
    let report = shutdown.run().await;

    let seen = seen.lock().unwrap().clone();
    let names: Vec<_> = report.entries.iter().map(|e| e.component.clone()).collect();
    assert_eq!(seen.iter().map(|(w, _)| w.clone()).collect::<Vec<_>>(), names);
    assert_eq!(
        seen.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        [ms(200), ms(300), ms(350)],
        "each entry is observed when it is known"
    );
    assert_eq!(report.total, ms(350));
}

/// `on_start` is called once, when the trigger comes and readiness is already off, with the
/// reason; not before.
#[tokio::test(start_paused = true)]
async fn on_start_is_told_the_reason_when_the_shutdown_starts() {
    let seen: Arc<std::sync::Mutex<Vec<(Reason, bool, Duration)>>> = Arc::default();
    let s = Arc::clone(&seen);
    let t0 = Instant::now();
    let shutdown = Shutdown::new();
    let readiness = shutdown.readiness();
    let shutdown = shutdown.on_start(move |reason| {
        s.lock()
            .unwrap()
            .push((reason.clone(), readiness.is_draining(), t0.elapsed()));
    });
    let handle = shutdown.handle();
    tokio::spawn(async move {
        tokio::time::sleep(ms(100)).await;
        handle.shutdown("later");
    });
    let report = shutdown.run().await;
    assert_eq!(
        *seen.lock().unwrap(),
        [(Reason::Requested("later".into()), true, ms(100))]
    );
    assert_eq!(report.total, Duration::ZERO);
}

/// Start-up work is abandoned when a stop is asked for first, and finishes otherwise.
#[tokio::test(start_paused = true)]
async fn unless_triggered_abandons_startup_on_a_trigger() {
    let mut shutdown = Shutdown::new();
    let done = shutdown.unless_triggered(async { 7 }).await;
    assert_eq!(done.ok(), Some(7));

    let handle = shutdown.handle();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        handle.shutdown("stop during start-up");
    });
    let started = tokio::time::Instant::now();
    let abandoned = shutdown
        .unless_triggered(tokio::time::sleep(Duration::from_secs(60)))
        .await;
    assert_eq!(abandoned.err(), Some(Reason::Requested("stop during start-up".into())));
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

/// Item 1: a component that ended before its phase is finished at once, not waited for until
/// the phase deadline (its end message was consumed by the trigger wait).
#[tokio::test(start_paused = true)]
async fn a_component_that_ended_first_does_not_stall_its_phase() {
    let mut shutdown = Shutdown::new().deadline(ms(30_000));
    let servers = shutdown.phase_with_budget("servers", ms(20_000));
    shutdown.spawn(servers, "accept loop", |_stop| async move {
        tokio::time::sleep(ms(10)).await;
    });
    let report = shutdown.run().await;
    assert_eq!(report.reason, Reason::ComponentEnded("accept loop".into()));
    assert_eq!(report.entries[0].outcome, Outcome::EndedEarly(None));
    assert_eq!(report.total, Duration::ZERO, "{report}");
}

/// Item 1: a worker of a later phase that exits while an earlier phase runs is reported when
/// its phase comes, at once.
#[tokio::test(start_paused = true)]
async fn a_later_worker_that_exits_during_an_earlier_phase_does_not_stall() {
    let mut shutdown = Shutdown::new().deadline(ms(30_000));
    let servers = shutdown.phase("servers");
    let workers = shutdown.phase_with_budget("workers", ms(20_000));
    shutdown.spawn(servers, "http", |stop| async move {
        stop.stopped().await;
        tokio::time::sleep(ms(100)).await;
    });
    let handle = shutdown.handle();
    shutdown.spawn(workers, "processor", move |_stop| async move {
        handle.shutdown("test");
        tokio::time::sleep(ms(50)).await; // ends during "servers", before its own phase
    });
    let report = shutdown.run().await;
    let processor = entry(&report, "processor");
    assert_eq!(processor.outcome, Outcome::EndedEarly(None));
    assert_eq!(report.total, ms(100), "{report}");
}

/// Item 4: a task whose phase begins after the global deadline was never asked to stop: it is
/// skipped, not a straggler; the one that used the time up is.
#[tokio::test(start_paused = true)]
async fn a_task_whose_phase_comes_after_the_deadline_is_skipped_not_blamed() {
    let mut shutdown = Shutdown::new().deadline(ms(1000));
    let servers = shutdown.phase("servers");
    let workers = shutdown.phase("workers");
    shutdown.on_stop(servers, "slow", std::future::pending::<()>);
    shutdown.spawn(workers, "processor", |stop| async move { stop.stopped().await });
    shutdown.handle().shutdown("test");
    let report = shutdown.run().await;
    assert_eq!(outcome(&report, "processor"), Outcome::Skipped);
    assert_eq!(report.stragglers().collect::<Vec<_>>(), ["slow"]);
    assert_eq!(report.total, ms(1000));
}

/// Item 5.
#[tokio::test]
#[should_panic(expected = "a Phase of another Shutdown")]
async fn a_phase_of_another_coordinator_is_refused() {
    let mut one = Shutdown::new();
    let mut other = Shutdown::new();
    let foreign = other.phase("servers");
    one.spawn(foreign, "http", |stop| async move { stop.stopped().await });
}

/// Item 6: set-up failed half-way and the coordinator is dropped unrun: its tasks stop and
/// readiness agrees with itself.
#[tokio::test(start_paused = true)]
async fn dropping_an_unrun_coordinator_stops_its_tasks_and_turns_unready() {
    let mut shutdown = Shutdown::new();
    let readiness = shutdown.readiness();
    let servers = shutdown.phase("servers");
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = SetOnDrop(Arc::clone(&dropped));
    shutdown.spawn(servers, "http", move |_stop| async move {
        let _flag = flag;
        std::future::pending::<()>().await;
    });
    drop(shutdown);
    tokio::task::yield_now().await;
    assert!(dropped.load(Ordering::SeqCst), "the task still runs");
    assert!(readiness.is_draining() && !readiness.is_ready());
    readiness.draining().await;
}

/// Item 7: a component that fails during the drain delay ended early, with its error.
#[tokio::test(start_paused = true)]
async fn a_failure_during_the_drain_delay_is_an_early_end_with_its_error() {
    let mut shutdown = Shutdown::new().drain_delay(ms(500));
    let workers = shutdown.phase("workers");
    shutdown.spawn(workers, "processor", |_stop| async move {
        tokio::time::sleep(ms(100)).await;
        Err::<(), _>("lost the database")
    });
    shutdown.handle().shutdown("test");
    let report = shutdown.run().await;
    let processor = entry(&report, "processor");
    assert_eq!(processor.outcome, Outcome::EndedEarly(Some("lost the database".into())));
    assert_eq!(report.total, ms(500));
    assert!(!report.is_clean());
}

/// Item 8: a component that ends by itself, even without an error, is a fault (exit 1), unless
/// it was started as one-shot work.
#[tokio::test(start_paused = true)]
async fn ending_early_is_unclean_unless_the_task_was_one_shot() {
    let mut shutdown = Shutdown::new();
    let servers = shutdown.phase("servers");
    shutdown.spawn(servers, "accept loop", |_stop| async {});
    let report = shutdown.run().await;
    assert!(!report.is_clean());
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.total, Duration::ZERO);

    let mut shutdown = Shutdown::new();
    let workers = shutdown.phase("workers");
    shutdown.spawn_oneshot(workers, "warm cache", |_stop| async {
        tokio::time::sleep(ms(10)).await;
    });
    shutdown.spawn(workers, "processor", |stop| async move { stop.stopped().await });
    let handle = shutdown.handle();
    tokio::spawn(async move {
        tokio::time::sleep(ms(50)).await;
        handle.shutdown("test");
    });
    let report = shutdown.run().await;
    assert_eq!(
        report.reason,
        Reason::Requested("test".into()),
        "finishing did not trigger it"
    );
    let warm = entry(&report, "warm cache");
    assert_eq!(warm.outcome, Outcome::Finished);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.total, Duration::ZERO);
}

/// Item 3: an overrun is never clean, whatever the entries say.
#[test]
fn an_overrun_is_not_clean() {
    let report = crate::Report {
        reason: Reason::Requested("test".into()),
        entries: vec![crate::Entry {
            component: "blocking".into(),
            phase: "servers".into(),
            started: Duration::ZERO,
            took: ms(6000),
            outcome: Outcome::Stopped,
            counts: Vec::new(),
        }],
        total: ms(6000),
        deadline: ms(2000),
        interrupted: None,
    };
    assert!(!report.is_clean());
    assert_eq!(report.exit_code(), 1);
}

/// Item 3: a component blocking its thread cannot be aborted; it is named and left behind, and
/// the shutdown returns at the deadline instead of waiting for it. (Real time, several
/// threads: a blocked thread is what is tested.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_straggler_is_named_and_left_behind_at_the_deadline() {
    let mut shutdown = Shutdown::new().deadline(ms(300)).watchdog_grace(None);
    let servers = shutdown.phase("servers");
    shutdown.spawn(servers, "blocking", |_stop| async {
        std::thread::sleep(ms(3000));
    });
    shutdown.handle().shutdown("test");
    let started = std::time::Instant::now();
    let report = shutdown.run().await;
    assert!(
        started.elapsed() < ms(1500),
        "waited {:?} for a blocked task",
        started.elapsed()
    );
    assert_eq!(report.stragglers().collect::<Vec<_>>(), ["blocking"]);
    assert!(!report.is_clean());
    assert!(report.total >= ms(300) && report.total < ms(1500), "{report}");
}

/// Item 10: the error's chain of sources is kept, and the error itself for a typed look.
#[tokio::test(start_paused = true)]
async fn failures_keep_their_chain_of_sources() {
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot flush the cache")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let mut shutdown = Shutdown::new();
    let resources = shutdown.phase("resources");
    shutdown.on_stop(resources, "cache", || async {
        Err::<(), _>(Outer(std::io::Error::other("disk full")))
    });
    shutdown.handle().shutdown("test");
    let report = shutdown.run().await;
    let Outcome::Failed(failure) = &report.entries[0].outcome else {
        panic!("{report}");
    };
    assert_eq!(failure.message(), "cannot flush the cache");
    assert_eq!(failure.causes(), ["disk full"]);
    assert_eq!(failure.to_string(), "cannot flush the cache: disk full");
    assert!(failure.downcast_ref::<Outer>().is_some());
    assert!(report.to_string().contains("cannot flush the cache: disk full"));
    assert_eq!(report.total, Duration::ZERO);
}

/// Each component sees its own deadline once told to stop.
#[tokio::test(start_paused = true)]
async fn a_component_sees_its_deadline() {
    let mut shutdown = Shutdown::new().deadline(ms(10_000));
    let servers = shutdown.phase_with_budget("servers", ms(2000));
    let seen = Arc::new(Mutex::new(None));
    let s = Arc::clone(&seen);
    shutdown.spawn(servers, "http", move |stop| {
        assert_eq!(stop.remaining(), None, "no deadline before the stop");
        async move {
            stop.stopped().await;
            *s.lock().unwrap() = stop.remaining();
        }
    });
    shutdown.handle().shutdown("test");
    let report = shutdown.run().await;
    assert_eq!(*seen.lock().unwrap(), Some(ms(2000)));
    assert!(report.is_clean());
    assert_eq!(report.total, Duration::ZERO);
}

/// The summary goes where Kubernetes reads a termination message, within its 4096 bytes.
#[tokio::test(start_paused = true)]
async fn the_summary_is_written_as_the_termination_message() {
    let path = std::env::temp_dir().join(format!("phased-shutdown-termination-{}", std::process::id()));
    let mut shutdown = Shutdown::new().termination_message(&path);
    let resources = shutdown.phase("resources");
    shutdown.on_stop(resources, "cache", || async { Err::<(), _>("flush failed") });
    shutdown.on_stop(resources, "database", || async {});
    shutdown.handle().shutdown("test");
    let report = shutdown.run().await;
    let written = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(written, report.summary());
    assert!(written.starts_with("shutdown (requested: test) not clean"), "{written}");
    assert!(written.contains("cache (resources): failed: flush failed"), "{written}");
    assert!(
        !written.contains("database"),
        "only what did not stop cleanly: {written}"
    );
    assert_eq!(report.total, Duration::ZERO);
    assert_eq!(crate::report::truncate("é".repeat(3000), 4096).len(), 4096);
}
