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
