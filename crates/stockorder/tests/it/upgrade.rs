//! In-place upgrades (SIGHUP) as an operator runs them: the real binary, real signals, real
//! sockets, HTTP and gRPC clients placing orders all the while.

use std::time::Duration;

use crate::common::ServerProcess;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use stockorder::lifecycle::upgrade::exited;

/// 20 upgrades in a row under 32 clients (REST and gRPC): nothing refused, reset or failed,
/// and every acknowledged order is in the database at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_upgrades_under_load_break_nothing_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let mut server = ServerProcess::start(&db, &[]).await;
    let (http, grpc) = (server.addr.to_string(), server.grpc_addr.to_string());

    let clients = crate::common::OrderClients::start(32, 4, &http, &grpc);

    let first = Pid::from_raw(server.child.id().unwrap() as i32);
    let mut current = first;
    for round in 0..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let next = server.upgrade(current).await;
        assert_ne!(next, current, "round {round}");
        if current == first {
            // Our own child: reap it, and check it exited cleanly.
            assert_eq!(server.child.wait().await.unwrap().code(), Some(0), "round {round}");
        } else {
            tokio::time::timeout(Duration::from_secs(20), exited(current))
                .await
                .unwrap_or_else(|_| panic!("round {round}: the old process {current} did not exit"));
        }
        current = next;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // `other` leaves out gRPC calls a GOAWAY turned away unprocessed (see `finish`).
    let crate::common::Seen { acked, other } = clients.finish().await;
    assert!(other.is_empty(), "refused, reset, closed or failed: {other:?}");
    assert!(acked.len() > 1000, "{} acknowledged", acked.len());

    kill(current, Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(20), exited(current))
        .await
        .unwrap();
    let check = ServerProcess::start(&db, &[("PROCESSOR_WORKERS", "0")]).await;
    let stored = check.all_orders().await;
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains_key(*id)).collect();
    assert!(missing.is_empty(), "{} acknowledged orders missing", missing.len());
}

/// A new binary that cannot start leaves the old process serving, and it says why.
#[tokio::test]
async fn a_failing_new_binary_leaves_the_old_process_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("orders.db"), &[("UPGRADE_BINARY", "/bin/false")]).await;
    let pid = Pid::from_raw(server.child.id().unwrap() as i32);
    kill(pid, Signal::SIGHUP).unwrap();
    let failure = server.wait_for_event("upgrade.failed").await;
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("exited before it was ready"),
        "{failure}"
    );
    let health = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(health.status(), 200, "still serving, still ready");
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
}

/// During an upgrade's overlap two processes serve one SQLite file, and neither answers a read
/// with an order older than the file: each order is read through the old process before the
/// upgrade (so it holds it in memory), then, while the old one keeps serving through a 3 s drain
/// delay beside the new one, cancelled and read again on fresh connections, which the two
/// processes accept in turn. Every read after the cancel must say CANCELLED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_is_stale_while_two_processes_share_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let env = [("SHUTDOWN_DRAIN_DELAY", "3s"), ("PROCESSOR_WORKERS", "0")];
    let mut server = ServerProcess::start(&db, &env).await;
    // A new connection for every request, so that requests spread over both processes.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut ids = Vec::new();
    for _ in 0..40 {
        let created = client
            .post(server.url("/api/orders"))
            .json(&crate::common::market_order())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let id = created.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let read = client
            .get(server.url(&format!("/api/orders/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        ids.push(id);
    }
    let old = Pid::from_raw(server.child.id().unwrap() as i32);
    let new = server.upgrade(old).await;
    // Not our child: killed if an assertion below fails, so no server outlives the test.
    struct Reap(Pid);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGKILL);
        }
    }
    let _reap = Reap(new);
    let overlap_ends = std::time::Instant::now() + Duration::from_millis(2500);
    let (mut checked, mut stale) = (0, Vec::new());
    for id in &ids {
        if std::time::Instant::now() >= overlap_ends {
            break;
        }
        let cancel = client
            .post(server.url(&format!("/api/orders/{id}/cancel")))
            .send()
            .await
            .unwrap();
        assert_eq!(cancel.status(), 200, "{id}");
        for _ in 0..4 {
            let order: serde_json::Value = client
                .get(server.url(&format!("/api/orders/{id}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            checked += 1;
            if order["status"] != "CANCELLED" {
                stale.push(format!("{id}: {}", order["status"]));
            }
        }
    }
    assert!(checked >= 40, "only {checked} reads within the overlap");
    assert!(stale.is_empty(), "stale reads during the overlap: {stale:?}");
    assert_eq!(server.child.wait().await.unwrap().code(), Some(0));
    kill(new, Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(20), exited(new))
        .await
        .unwrap();
}
