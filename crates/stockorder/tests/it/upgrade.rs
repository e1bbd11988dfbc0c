//! In-place upgrades (SIGHUP) as an operator runs them: the real binary, real signals, real
//! sockets, HTTP and gRPC clients placing orders all the while.

use std::time::Duration;

use crate::common::ServerProcess;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use stockorder::lifecycle::upgrade::exited;

/// Sends SIGHUP to `pid` and returns the pid of the process that took over.
async fn upgrade(server: &mut ServerProcess, pid: Pid) -> Pid {
    kill(pid, Signal::SIGHUP).unwrap();
    let line = server.wait_for_event("upgrade.handover").await;
    Pid::from_raw(line["new_pid"].as_i64().unwrap() as i32)
}

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
        let next = upgrade(&mut server, current).await;
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
