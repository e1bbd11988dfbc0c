//! The three lessons under the same load: `demo_2` really breaks requests (its database closes
//! while its server still serves), `demo_1` and `demo_3` break none. Pauses are scaled down with
//! `DEMO_SLEEP_SCALE`, keeping their order (demo_2: database closed at 0.5 s, server stops at
//! 1 s).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{ServerProcess, market_order};
use nix::sys::signal::Signal;
use tokio::sync::Notify;

/// What the clients saw.
#[derive(Debug, Default)]
struct Seen {
    placed: usize,
    /// Accepted requests that did not get their order placed (non-201 answers, broken
    /// connections): what a graceful shutdown must never produce.
    broken: Vec<String>,
}

/// 16 clients create orders back to back until the server refuses connections; SIGTERM once
/// 200 orders are placed. Returns what they saw and the exit code.
async fn under_load(server: &mut ServerProcess) -> (Seen, Option<i32>) {
    let placed = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (url, placed, progress) = (server.url("/api/orders"), Arc::clone(&placed), Arc::clone(&progress));
        clients.spawn(async move {
            let client = reqwest::Client::new();
            let mut seen = Seen::default();
            loop {
                match client.post(&url).json(&market_order()).send().await {
                    Ok(r) if r.status() == 201 => {
                        seen.placed += 1;
                        placed.fetch_add(1, Ordering::Relaxed);
                        progress.notify_one();
                    }
                    Ok(r) => seen.broken.push(format!("HTTP {}", r.status())),
                    Err(e) if e.is_connect() => return seen,
                    Err(e) => seen.broken.push(format!("{e:?}")),
                }
            }
        });
    }
    while placed.load(Ordering::Relaxed) < 200 {
        progress.notified().await;
    }
    server.signal(Signal::SIGTERM);
    let code = server.wait().await;
    let mut total = Seen::default();
    while let Some(seen) = clients.join_next().await {
        let seen = seen.unwrap();
        total.placed += seen.placed;
        total.broken.extend(seen.broken);
    }
    (total, code)
}

async fn run_demo(name: &str, scale: &str, grpc: bool) -> (Seen, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DEMO_SLEEP_SCALE", scale)];
    let mut server = ServerProcess::start_example(name, &dir.path().join("orders.db"), &env, grpc).await;
    let result = under_load(&mut server).await;
    eprintln!("{name}: {} placed, {} broken", result.0.placed, result.0.broken.len());
    result
}

#[tokio::test]
async fn demo_1_breaks_no_request() {
    let (seen, code) = run_demo("demo_1", "0.05", false).await;
    assert!(seen.broken.is_empty(), "{:?}", &seen.broken[..seen.broken.len().min(5)]);
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn demo_2_breaks_requests_as_the_original_does() {
    let (seen, code) = run_demo("demo_2", "0.1", false).await;
    let unavailable = seen.broken.iter().filter(|b| b.starts_with("HTTP 503")).count();
    assert!(
        unavailable > 10,
        "closing the database under a serving server must break requests: {} placed, {unavailable} of {} broken were 503",
        seen.placed,
        seen.broken.len()
    );
    assert_eq!(code, Some(0), "and it exits 0 as if all went well: the lesson");
}

#[tokio::test]
async fn demo_3_breaks_no_request_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DEMO_SLEEP_SCALE", "0.05")];
    let mut server = ServerProcess::start_example("demo_3", &dir.path().join("orders.db"), &env, true).await;
    let (seen, code) = under_load(&mut server).await;
    assert!(seen.broken.is_empty(), "{:?}", &seen.broken[..seen.broken.len().min(5)]);
    assert_eq!(code, Some(0));
    let log = server.rest_of_log().await;
    let reported: Vec<&str> = log
        .iter()
        .filter(|l| l["event"] == "shutdown.entry")
        .map(|l| l["component"].as_str().unwrap())
        .collect();
    assert_eq!(reported.len(), 5, "{reported:?}");
    let mut servers = reported[..2].to_vec();
    servers.sort_unstable();
    assert_eq!(servers, ["grpc server", "http server"], "servers first");
    assert!(
        reported[2..].contains(&"database"),
        "then the dependencies: {reported:?}"
    );
}

fn example(name: &str) -> std::path::PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("examples")
        .join(name)
}

/// Each demo has a command line of its own: `--help` says what the lesson shows and lists the
/// options it honours (`DEMO_SLEEP_SCALE` among them); one it does not honour is refused.
#[test]
fn each_demo_says_what_it_teaches_and_takes_only_its_own_options() {
    for (demo, lesson, grpc) in [
        ("demo_1", "Lesson 1 of 3", false),
        ("demo_2", "Lesson 2 of 3", false),
        ("demo_3", "Lesson 3 of 3", true),
    ] {
        let help = std::process::Command::new(example(demo))
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{demo}: {text}");
        assert!(text.contains(lesson), "{demo}: {text}");
        for option in ["DEMO_SLEEP_SCALE", "PORT", "DATABASE_URL"] {
            assert!(text.contains(option), "{demo} --help lacks {option}: {text}");
        }
        assert_eq!(text.contains("GRPC_PORT"), grpc, "{demo}: {text}");
        let refused = std::process::Command::new(example(demo))
            .args(["--processor-workers", "2"])
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(2), "{demo} accepted an option of serve's");
    }
}

/// A port in use: the same message as `serve` (which variable to change), no backtrace even
/// with `RUST_BACKTRACE=1`, and nothing left on disk.
#[test]
fn a_demo_on_a_port_in_use_says_which_variable_to_change_and_leaves_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    for demo in ["demo_1", "demo_2", "demo_3"] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(example(demo))
            .envs([
                ("HOST", "127.0.0.1"),
                ("PORT", port.as_str()),
                ("GRPC_PORT", "0"),
                ("RUST_BACKTRACE", "1"),
                ("DATABASE_URL", dir.path().join("orders.db").to_str().unwrap()),
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{demo}: {said}");
        assert!(said.contains("the port is in use"), "{demo}: {said}");
        assert!(said.contains("PORT (or --port)"), "{demo}: {said}");
        assert!(!said.to_lowercase().contains("backtrace"), "{demo}: {said}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{demo} left {left:?}");
    }
}
