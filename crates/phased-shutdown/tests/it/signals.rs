//! Signals and exit codes, with real signals to a real process: this test binary runs itself
//! again as the child (`GRACEFUL_SCENARIO` names what the child does), so the coordinator under
//! test owns a whole process, as it does in a service.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phased_shutdown::Shutdown;

const SCENARIO: &str = "GRACEFUL_SCENARIO";

/// The child's side: runs the scenario named in the environment and exits with the report's
/// code. Without the variable (a normal test run) it does nothing.
#[test]
fn child() {
    let Ok(scenario) = std::env::var(SCENARIO) else { return };
    let runtime = match scenario.as_str() {
        // One thread, so a blocking component wedges the whole runtime.
        "wedged" => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .unwrap();
    let code = runtime.block_on(async {
        let mut shutdown = Shutdown::new()
            .deadline(Duration::from_secs(5))
            .catch_signals()
            .unwrap();
        let workers = shutdown.phase("workers");
        let stop_takes = match scenario.as_str() {
            "slow" => Duration::from_secs(5),
            _ => Duration::from_secs(1),
        };
        if scenario == "wedged" {
            shutdown = shutdown.deadline(Duration::from_secs(1));
            shutdown.spawn(workers, "blocker", |stop| async move {
                stop.stopped().await;
                println!("stopping");
                std::thread::sleep(Duration::from_secs(10));
            });
        } else if scenario != "after_run" {
            shutdown.spawn(workers, "worker", move |stop| async move {
                stop.stopped().await;
                println!("stopping");
                tokio::time::sleep(stop_takes).await;
            });
        }
        if scenario == "systemd" || scenario == "slow" {
            let resources = shutdown.phase("resources");
            shutdown.on_stop(resources, "database", || async {});
        }
        if matches!(
            scenario.as_str(),
            "handle_then_sigterm" | "wedged" | "after_run" | "systemd"
        ) {
            shutdown.handle().shutdown("started by a handle");
        }
        println!("ready");
        let report = shutdown.run().await;
        eprintln!("{report}");
        report.exit_code()
    });
    if scenario == "after_run" {
        println!("ran");
        // A hang after the shutdown: only a signal can end it.
        std::thread::sleep(Duration::from_secs(30));
    }
    std::process::exit(code.into());
}

/// The parent's side: the child running `scenario`, and its stdout.
fn spawn(scenario: &str) -> (Child, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    spawn_with(scenario, &[])
}

/// [`spawn`] with more environment variables for the child.
fn spawn_with(
    scenario: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> (Child, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["signals::child", "--exact", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

fn wait_for(lines: &mut std::io::Lines<BufReader<std::process::ChildStdout>>, what: &str) {
    // The harness's own "test child ... " has no newline: the first line ends with ours.
    for line in lines.by_ref() {
        if line.unwrap().ends_with(what) {
            return;
        }
    }
    panic!("the child never printed {what:?}");
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Waits for the exit (at most 15 s): its code and how long that took from `since`.
fn exit(child: &mut Child, since: Instant) -> (Option<i32>, Duration, String) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return (status.code(), since.elapsed(), stderr);
        }
        assert!(Instant::now() < until, "the child did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

use nix::sys::signal::Signal::{SIGINT, SIGTERM};

/// A shutdown started by a handle (as an in-place upgrade does), then one SIGTERM: that is
/// the operator's first request, not a second one; the shutdown finishes.
#[test]
fn a_handle_started_shutdown_takes_the_first_signal_as_the_first() {
    let (mut child, mut lines) = spawn("handle_then_sigterm");
    wait_for(&mut lines, "stopping");
    let sent = Instant::now();
    signal(&child, SIGTERM);
    let (code, took, stderr) = exit(&mut child, sent);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took >= Duration::from_millis(800), "exited early, after {took:?}");
}

/// A second SIGINT stops at once with 130, a second SIGTERM with 143.
#[test]
fn a_second_signal_stops_at_once_with_128_plus_its_number() {
    for (second, expected) in [(SIGINT, 130), (SIGTERM, 143)] {
        let (mut child, mut lines) = spawn("slow");
        wait_for(&mut lines, "ready");
        signal(&child, SIGINT);
        wait_for(&mut lines, "stopping");
        // Past the window in which a repeat counts as the same request.
        std::thread::sleep(phased_shutdown::DUPLICATE_WINDOW + Duration::from_millis(100));
        let sent = Instant::now();
        signal(&child, second);
        let (code, took, stderr) = exit(&mut child, sent);
        assert_eq!(code, Some(expected), "{second}: {stderr}");
        assert!(
            took < Duration::from_secs(1),
            "{second}: took {took:?} (the stop takes 5 s)"
        );
        assert!(stderr.contains("cut short") || stderr.contains("shutdown"), "{stderr}");
        // Every component is listed: the one stopping as aborted, the one whose phase never
        // came as not reached.
        let line = |name: &str| stderr.lines().find(|l| l.contains(name)).unwrap_or_default().to_owned();
        assert!(
            line(" worker ").contains("aborted: a second signal"),
            "{second}: {stderr}"
        );
        assert!(line(" database ").contains("not reached"), "{second}: {stderr}");
    }
}

/// SIGINT and SIGTERM together (a supervisor forwarding both) are one request.
#[test]
fn signals_delivered_together_are_one_request() {
    let (mut child, mut lines) = spawn("together");
    wait_for(&mut lines, "ready");
    let sent = Instant::now();
    signal(&child, SIGINT);
    signal(&child, SIGTERM);
    let (code, took, stderr) = exit(&mut child, sent);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took >= Duration::from_millis(800), "cut short after {took:?}");
}

/// A component blocking the runtime's only thread past the deadline: the watchdog ends the
/// process within deadline + 1 s, non-zero, naming the component.
#[test]
fn a_wedged_runtime_is_ended_by_the_watchdog_naming_the_blocker() {
    let (mut child, mut lines) = spawn("wedged");
    wait_for(&mut lines, "ready");
    let started = Instant::now();
    let (code, took, stderr) = exit(&mut child, started);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(took < Duration::from_secs(2), "deadline 1 s, exited after {took:?}");
    assert!(stderr.contains("blocker"), "{stderr}");
}

/// After `run` returns, SIGTERM still ends the process instead of being swallowed.
#[test]
fn signals_still_work_after_the_shutdown() {
    let (mut child, mut lines) = spawn("after_run");
    wait_for(&mut lines, "ran");
    let sent = Instant::now();
    signal(&child, SIGTERM);
    let (code, took, stderr) = exit(&mut child, sent);
    assert_eq!(code, Some(143), "{stderr}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// Under systemd (feature `systemd`, a fake `NOTIFY_SOCKET` here): `STOPPING=1` at the trigger,
/// a `STATUS=` per phase naming it, `EXTEND_TIMEOUT_USEC` never more than the budget left (the
/// 5 s deadline plus the watchdog's 500 ms) and shrinking as the phases go, and the report's
/// summary as the last status.
#[test]
fn systemd_is_told_each_phase_and_the_time_left() {
    use std::os::unix::net::UnixDatagram;
    let path = std::env::temp_dir().join(format!("phased-shutdown-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (mut child, _lines) = spawn_with("systemd", &[("NOTIFY_SOCKET", path.as_os_str())]);
    let mut messages = Vec::new();
    let mut buffer = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(n) = socket.recv(&mut buffer) {
            messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        } else if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < until, "the child did not exit; got {messages:?}");
    }
    let _ = std::fs::remove_file(&path);
    let (code, _, stderr) = exit(&mut child, Instant::now());
    assert_eq!(code, Some(0), "{stderr}");

    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(messages[0].contains("STOPPING=1\n"), "{messages:#?}");
    assert!(
        messages[0].contains("STATUS=shutting down (requested: started by a handle)"),
        "{messages:#?}"
    );
    assert!(
        messages[1].contains("STATUS=shutting down: phase 1/2 \"workers\""),
        "{messages:#?}"
    );
    assert!(
        messages[2].contains("STATUS=shutting down: phase 2/2 \"resources\""),
        "{messages:#?}"
    );
    assert!(
        messages[3].starts_with("STATUS=") && messages[3].contains("clean"),
        "{messages:#?}"
    );
    let extensions: Vec<u64> = messages[..3]
        .iter()
        .map(|m| {
            let value = m.lines().find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="));
            value
                .expect("every message but the last extends the timeout")
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(extensions[0], 5_500_000, "deadline + watchdog grace: {messages:#?}");
    assert!(extensions[1] <= extensions[0], "{extensions:?}");
    // The workers took 1 s of the budget before the second phase.
    assert!(extensions[2] <= extensions[1] - 900_000, "{extensions:?}");
}
