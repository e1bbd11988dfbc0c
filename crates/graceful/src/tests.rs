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
}

#[tokio::test(start_paused = true)]
async fn a_straggler_is_aborted_at_its_phase_budget_and_named() {
    let mut shutdown = Shutdown::new().deadline(ms(10_000));
    let servers = shutdown.phase_with_budget("servers", ms(500));
    let resources = shutdown.phase("resources");
    let dropped = Arc::new(AtomicBool::new(false));
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
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
    let outcome = |name: &str| &report.entries.iter().find(|e| e.component == name).unwrap().outcome;
    assert_eq!(outcome("slow"), &Outcome::TimedOut);
    assert_eq!(outcome("database"), &Outcome::Skipped);
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
    let processor = report.entries.iter().find(|e| e.component == "processor").unwrap();
    assert_eq!(processor.outcome, Outcome::EndedEarly(Some("lost the database".into())));
    assert!(!report.is_clean());
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
    let outcome = |name: &str| {
        report
            .entries
            .iter()
            .find(|e| e.component == name)
            .unwrap()
            .outcome
            .clone()
    };
    assert_eq!(outcome("cache"), Outcome::Failed("flush failed".into()));
    assert_eq!(outcome("metrics"), Outcome::Panicked("exporter bug".into()));
    assert_eq!(outcome("database"), Outcome::Stopped);
    assert_eq!(report.exit_code(), 1);
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
