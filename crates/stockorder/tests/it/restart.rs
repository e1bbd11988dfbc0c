//! Durability across a restart of the real binary: every acknowledged order is there afterwards,
//! and concurrent writers never see "database is locked".

use crate::common::{ServerProcess, market_order};
use nix::sys::signal::Signal;
use serde_json::Value;

#[tokio::test]
async fn concurrent_creates_all_succeed_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let mut server = ServerProcess::start(&db, &[]).await;
    let client = reqwest::Client::new();

    let creates: Vec<_> = (0..200)
        .map(|_| {
            let (client, url) = (client.clone(), server.url("/api/orders"));
            tokio::spawn(async move {
                let resp = client.post(url).json(&market_order()).send().await.unwrap();
                assert_eq!(resp.status(), 201);
                resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for c in creates {
        ids.push(c.await.unwrap());
    }

    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0), "clean exit after SIGTERM");

    let server = ServerProcess::start(&db, &[]).await;
    for id in &ids {
        let resp = client
            .get(server.url(&format!("/api/orders/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "order {id} lost across restart");
    }
    let all: Vec<Value> = client
        .get(server.url("/api/orders?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 200);
}

/// One server per SQLite file: a second `serve` on the file of a running one exits 1 naming the
/// first one's PID, touches nothing, and the first keeps serving; once the first has stopped,
/// the file is free.
#[tokio::test]
async fn a_second_server_on_the_same_file_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let mut first = ServerProcess::start(&db, &[]).await;
    let first_pid = first.child.id().unwrap();
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder"))
        .arg("serve")
        .envs([("PORT", "0"), ("GRPC_PORT", "0"), ("HOST", "127.0.0.1")])
        .env("DATABASE_URL", &db)
        .output();
    let second = tokio::time::timeout(std::time::Duration::from_secs(20), second)
        .await
        .expect("the second server exits at once")
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("in use by another stockorder process (PID {first_pid})")),
        "{said}"
    );
    let placed = reqwest::Client::new()
        .post(first.url("/api/orders"))
        .json(&market_order())
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201, "the first server still serves");
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait().await, Some(0));
    let mut next = ServerProcess::start(&db, &[]).await;
    assert_eq!(next.all_orders().await.len(), 1);
    next.signal(Signal::SIGTERM);
    assert_eq!(next.wait().await, Some(0));
}
