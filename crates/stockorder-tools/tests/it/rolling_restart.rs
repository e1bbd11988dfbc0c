//! Rolling restarts behind HAProxy over one PostgreSQL database, as `stockorder-tools
//! rolling-restart` runs them: three real replicas, real HAProxy, real signals, 32 clients.
//! Skipped, with the reason printed, where HAProxy or PostgreSQL is missing (`.ci/run`
//! installs and starts both).

use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo_file(path: &str) -> PathBuf {
    crate::repo_root().join(path)
}

/// `DATABASE_URL` when it names a reachable PostgreSQL and `haproxy` is installed.
async fn prerequisites() -> Option<String> {
    let Some(url) = crate::postgres_url() else {
        crate::skip(format_args!(
            "set TEST_DATABASE_URL (or DATABASE_URL) to postgres://… for the rolling-restart tests"
        ));
        return None;
    };
    if let Err(e) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        crate::skip(format_args!("PostgreSQL at {url} is not reachable: {e}"));
        return None;
    }
    if std::process::Command::new("haproxy").arg("-v").output().is_err() {
        crate::skip(format_args!(
            "haproxy is not installed (apt-get install haproxy; .ci/run does it)"
        ));
        return None;
    }
    Some(url)
}

async fn rolling_restart(url: &str, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder-tools"))
        .arg("rolling-restart")
        .args(["--database-url", url, "--concurrency", "32", "--steady", "1s", "--json"])
        .args(args)
        .output()
        .await
        .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON summary; stderr:\n{}", String::from_utf8_lossy(&out.stderr)));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{stderr}");
    (out.status.code(), summary, stderr)
}

/// The promise: 3 replicas × 2 rounds under 32 clients (half REST, half gRPC), and not
/// one request fails or one acknowledged order goes missing.
#[tokio::test]
async fn two_rolling_restarts_under_load_fail_nothing_and_lose_nothing() {
    let Some(url) = prerequisites().await else {
        return;
    };
    let config = repo_file("deploy/haproxy.cfg");
    let args = [
        "--rounds",
        "2",
        "--watchers",
        "8",
        "--haproxy-config",
        config.to_str().unwrap(),
    ];
    let (code, s, said) = rolling_restart(&url, &args).await;
    assert!(
        !said.contains("the logs are kept"),
        "a run that held leaves no logs behind: {said}"
    );
    assert_eq!(s["restarts"].as_array().unwrap().len(), 6, "{s}");
    for r in s["restarts"].as_array().unwrap() {
        assert_eq!(r["exit_code"], 0, "every replica stopped cleanly: {r}");
        assert!(
            r["out_of_rotation_ms"].as_f64() < r["exited_ms"].as_f64(),
            "HAProxy stopped routing to it before it stopped serving: {r}"
        );
    }
    assert!(s["acknowledged"].as_u64().unwrap() > 1000, "{s}");
    assert!(s["grpc_clients"].as_u64().unwrap() > 0 && s["http_clients"].as_u64().unwrap() > 0);
    assert_eq!(s["failed"], 0, "{s}");
    assert_eq!(s["never_accepted"], 0, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    assert_eq!(s["unacknowledged"], 0, "{s}");
    assert!(s["during_restarts"]["requests"].as_u64().unwrap() > 0, "{s}");
    // Eight followers of the event stream through HAProxy: each resumed on another replica
    // whenever one stopped, and got every event of the log once, in order.
    let events = &s["events"];
    let expected = events["expected"].as_u64().unwrap();
    assert!(
        expected >= s["acknowledged"].as_u64().unwrap(),
        "a created event per order: {s}"
    );
    assert_eq!(events["received"].as_u64().unwrap(), 8 * expected, "{s}");
    for fault in ["missing", "repeated", "out_of_order"] {
        assert_eq!(events[fault], 0, "{fault}: {s}");
    }
    assert!(
        events["reconnects"].as_u64().unwrap() >= 8,
        "streams ended by the restarts were resumed: {s}"
    );
    assert_eq!(code, Some(0));
}

/// The control: the same restart with no drain delay behind a balancer that does not retry
/// refused connections does fail requests, and the tool says so. (This is what the drain
/// delay is for.)
#[tokio::test]
async fn without_a_drain_delay_a_balancer_that_does_not_retry_fails_requests() {
    let Some(url) = prerequisites().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("no-retries.cfg");
    let text = std::fs::read_to_string(repo_file("deploy/haproxy.cfg")).unwrap();
    let no_retries = text
        .replace("    retries 3\n", "    retries 0\n")
        .replace("    option redispatch 1\n", "");
    assert_ne!(
        text, no_retries,
        "deploy/haproxy.cfg still has the lines this test edits"
    );
    std::fs::write(&config, no_retries).unwrap();
    let (code, s, said) = rolling_restart(
        &url,
        &[
            "--rounds",
            "1",
            "--drain-delay",
            "0s",
            "--haproxy-config",
            config.to_str().unwrap(),
        ],
    )
    .await;
    assert!(s["failed"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["lost"], 0, "failed requests were never acknowledged: {s}");
    assert_eq!(code, Some(1), "{s}");
    // A run that failed keeps its logs, and says where.
    let kept = said
        .lines()
        .find_map(|l| {
            l.split_once("the logs are kept in ")
                .map(|(_, dir)| dir.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no word of the logs: {said}"));
    let kept = Path::new(&kept);
    assert!(
        kept.join("r1.log").is_file() && kept.join("haproxy.log").is_file(),
        "{}",
        kept.display()
    );
    std::fs::remove_dir_all(kept).unwrap();
}
