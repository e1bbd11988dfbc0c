//! `stockorder serve` on PostgreSQL, as a user runs it: `DATABASE_URL=postgres://…`, the seed
//! README's commands over a real socket, and a restart that keeps every order. Skipped, with
//! the reason printed, where no PostgreSQL is reachable.

use std::path::Path;

use crate::common::{PgSchema, ServerProcess, market_order};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

#[tokio::test]
async fn serve_on_postgres_answers_the_seed_commands_and_keeps_orders_across_a_restart() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let env = [("DATABASE_URL", schema.url.as_str())];
    let mut server = ServerProcess::start(Path::new("unused.db"), &env).await;
    let http = reqwest::Client::new();

    let health: Value = http
        .get(server.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let market = http
        .post(server.url("/api/orders"))
        .json(&market_order())
        .send()
        .await
        .unwrap();
    assert_eq!(market.status(), 201);
    let market: Value = market.json().await.unwrap();
    // A buy limit far below the simulated price rests PENDING, so it can be cancelled.
    let limit: Value = http
        .post(server.url("/api/orders"))
        .json(&json!({"symbol": "GOOGL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 50, "price": 1.25}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = limit["id"].as_str().unwrap();
    let cancel = |id: String| {
        let (http, url) = (http.clone(), server.url(&format!("/api/orders/{id}/cancel")));
        async move { http.post(url).send().await.unwrap() }
    };
    let cancelled = cancel(id.to_owned()).await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap(),
        json!({"message": "order cancelled successfully"})
    );
    assert_eq!(cancel(id.to_owned()).await.status(), 409, "cancel twice");

    // The market order is filled by the processor, through the database queue.
    let filled = loop {
        let o: Value = http
            .get(server.url(&format!("/api/orders/{}", market["id"].as_str().unwrap())))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if o["status"] == "FILLED" {
            break o;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(filled["fill_price"].as_f64().unwrap() > 0.0);
    let listed = server.all_orders().await;
    assert_eq!(listed.len(), 2);

    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
    let restarted = ServerProcess::start(Path::new("unused.db"), &env).await;
    assert_eq!(
        restarted.all_orders().await,
        listed,
        "every order survives the restart as it was"
    );
    drop(restarted);
    schema.drop_now().await;
}
