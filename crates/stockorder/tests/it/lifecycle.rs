//! The order lifecycle: the processor fills and rejects, a cancel racing a fill has one winner,
//! and the database is the queue, so a crash or a SIGTERM loses no pending order.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{ServerProcess, TestApp, market_order, spawn_app_with};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use stockorder::adapter::inbound::grpc::proto;
use stockorder::adapter::inbound::grpc::proto::stock_order_service_client::StockOrderServiceClient;
use stockorder::adapter::outbound::simulated_price::SimulatedPrices;
use stockorder::domain::Symbol;
use stockorder::port::PriceSource;

fn market_price(symbol: &str) -> f64 {
    SimulatedPrices.price(&Symbol::parse(symbol).unwrap()).get()
}

/// Polls an order until `done` holds: its state changes in the background, and there is no
/// event to wait for over the API.
async fn until(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let order: Value = app.get(&format!("/api/orders/{id}")).await.json().await.unwrap();
            if done(&order) {
                return order;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("order {id} never reached the expected state"))
}

async fn create(app: &TestApp, body: Value) -> Value {
    let resp = app.post_json("/api/orders", body).await;
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_market_order_is_filled_at_the_market_price() {
    let app = spawn_app_with(|_| {}).await;
    let placed = create(&app, market_order()).await;
    let id = placed["id"].as_str().unwrap();
    let filled = until(&app, id, |o| o["status"] != "PENDING").await;
    assert_eq!(filled["status"], "FILLED");
    assert_eq!(filled["fill_price"], market_price("AAPL"));
    assert_eq!(filled["filled_at"], filled["updated_at"]);
    assert!(filled.get("cancelled_at").is_none());
    assert!(filled["filled_at"].as_str().unwrap() >= placed["created_at"].as_str().unwrap());

    // The same over gRPC (fields 12 and 13).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = StockOrderServiceClient::new(channel);
    let order = grpc
        .get_order(proto::GetOrderRequest { order_id: id.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.status(), proto::OrderStatus::Filled);
    assert_eq!(order.fill_price, market_price("AAPL"));
    assert_eq!(order.filled_at, order.updated_at);
    assert!(order.filled_at.is_some() && order.cancelled_at.is_none());
    app.stop().await;
}

#[tokio::test]
async fn orders_that_break_a_rule_are_rejected_with_the_reason() {
    let app = spawn_app_with(|args| {
        args.processor.max_order_quantity = Some(1000);
        args.processor.max_order_notional = Some(1_000_000.0);
        args.processor.allowed_symbols = Some("AAPL,MSFT".into());
    })
    .await;
    let cases = [
        (
            json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 5000}),
            "rejected: quantity 5000 exceeds the limit of 1000",
        ),
        (
            json!({"symbol": "TSLA", "order_type": "MARKET", "order_side": "BUY", "quantity": 1}),
            "rejected: TSLA is not a traded symbol",
        ),
        (
            json!({"symbol": "MSFT", "order_type": "LIMIT", "order_side": "SELL", "quantity": 900, "price": 5000.0}),
            "rejected: notional 4500000.00 exceeds the limit of 1000000.00",
        ),
    ];
    for (body, reason) in cases {
        let order = create(&app, body).await;
        assert_eq!(order["status"], "REJECTED", "{order}");
        assert_eq!(order["description"], reason);
    }
    let fine = create(&app, market_order()).await;
    assert_eq!(fine["status"], "PENDING", "a valid order within the rules is accepted");
    app.stop().await;
}

#[tokio::test]
async fn limit_orders_fill_at_their_price_or_better_or_rest_until_cancelled() {
    let app = spawn_app_with(|_| {}).await;
    let market = market_price("AAPL");
    let limit = |side: &str, price: f64| json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": side, "quantity": 10, "price": price});
    let crossing = create(&app, limit("BUY", market + 10.0)).await;
    let resting = create(&app, limit("BUY", (market / 2.0).floor())).await;
    let resting_sell = create(&app, limit("SELL", market * 2.0)).await;
    // Oldest first: once this later market order is filled, the limits before it were decided.
    let marker = create(&app, market_order()).await;
    until(&app, marker["id"].as_str().unwrap(), |o| o["status"] == "FILLED").await;

    let filled = until(&app, crossing["id"].as_str().unwrap(), |o| o["status"] != "PENDING").await;
    assert_eq!(filled["status"], "FILLED");
    assert_eq!(
        filled["fill_price"], market,
        "filled at the market, better than the limit"
    );
    for order in [&resting, &resting_sell] {
        let id = order["id"].as_str().unwrap();
        let now: Value = app.get(&format!("/api/orders/{id}")).await.json().await.unwrap();
        assert_eq!(now["status"], "PENDING", "a limit not reached rests");
        let cancel = app
            .client
            .post(app.url(&format!("/api/orders/{id}/cancel")))
            .send()
            .await
            .unwrap();
        assert_eq!(cancel.status(), 200);
        let cancelled: Value = app.get(&format!("/api/orders/{id}")).await.json().await.unwrap();
        assert_eq!(cancelled["status"], "CANCELLED");
        assert_eq!(cancelled["cancelled_at"], cancelled["updated_at"]);
        assert!(cancelled.get("fill_price").is_none());
    }
    app.stop().await;
}

/// 100 orders, each cancelled the moment it is placed while the processor fills: every order
/// ends in exactly one final state, and the cancel succeeded exactly when that state is
/// CANCELLED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_a_fill_has_exactly_one_winner() {
    let app = spawn_app_with(|args| args.processor.processor_batch = 8).await;
    let races: Vec<_> = (0..100)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/api/orders"));
            tokio::spawn(async move {
                let placed: Value = client
                    .post(&url)
                    .json(&market_order())
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let id = placed["id"].as_str().unwrap().to_owned();
                let cancel = client.post(format!("{url}/{id}/cancel")).send().await.unwrap();
                (id, cancel.status().as_u16())
            })
        })
        .collect();
    let (mut cancelled, mut filled) = (0, 0);
    for race in races {
        let (id, cancel_status) = race.await.unwrap();
        let last = until(&app, &id, |o| o["status"] != "PENDING").await;
        match (cancel_status, last["status"].as_str().unwrap()) {
            (200, "CANCELLED") => {
                cancelled += 1;
                assert!(last.get("filled_at").is_none() && last.get("fill_price").is_none());
            }
            (409, "FILLED") => {
                filled += 1;
                assert!(last.get("cancelled_at").is_none());
            }
            other => panic!("order {id}: cancel answered {} but the order is {}", other.0, other.1),
        }
    }
    eprintln!("100 races: {cancelled} cancels won, {filled} fills won");
    assert_eq!(cancelled + filled, 100);
    app.stop().await;
}

/// Waits until no order is left PENDING.
async fn until_settled(server: &ServerProcess) -> HashMap<String, Value> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let pending: Vec<Value> = reqwest::get(server.url("/api/orders?status=PENDING&limit=1"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if pending.is_empty() {
                return server.all_orders().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("orders left pending")
}

async fn place(server: &ServerProcess, n: usize, quantity: i64) {
    let client = reqwest::Client::new();
    for _ in 0..n {
        let body = json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": quantity});
        let resp = client.post(server.url("/api/orders")).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 201);
    }
}

/// Orders accepted, then the process killed before any was executed. The restarted service
/// executes every one exactly once, under the rules it runs with now.
#[tokio::test]
async fn after_kill_9_every_pending_order_reaches_one_final_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let mut server = ServerProcess::start(&db, &[("PROCESSOR_WORKERS", "0")]).await;
    place(&server, 100, 100).await;
    place(&server, 100, 10).await;
    server.signal(Signal::SIGKILL);
    server.wait().await;

    let mut server = ServerProcess::start(&db, &[("MAX_ORDER_QUANTITY", "50")]).await;
    let orders = until_settled(&server).await;
    assert_eq!(orders.len(), 200);
    for order in orders.values() {
        match order["quantity"].as_i64().unwrap() {
            100 => {
                assert_eq!(order["status"], "REJECTED", "{order}");
                assert_eq!(order["description"], "rejected: quantity 100 exceeds the limit of 50");
            }
            _ => {
                assert_eq!(order["status"], "FILLED", "{order}");
                assert_eq!(order["filled_at"], order["updated_at"], "filled once");
            }
        }
    }
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
}

/// SIGTERM while the processor works through a backlog: it stops after the batch in hand, the
/// exit is clean, and after a restart the rest is executed; every order is executed once.
#[tokio::test]
async fn sigterm_while_the_processor_is_busy_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let mut server = ServerProcess::start(&db, &[("PROCESSOR_WORKERS", "0")]).await;
    let loaders: Vec<_> = (0..8)
        .map(|_| {
            let url = server.url("/api/orders");
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for _ in 0..250 {
                    let resp = client.post(&url).json(&market_order()).send().await.unwrap();
                    assert_eq!(resp.status(), 201);
                }
            })
        })
        .collect();
    for l in loaders {
        l.await.unwrap();
    }
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));

    let env = [("PROCESSOR_BATCH", "16")];
    let mut server = ServerProcess::start(&db, &env).await;
    server.signal(Signal::SIGTERM); // the processor has a backlog of 2000
    assert_eq!(server.wait().await, Some(0));
    let log = server.rest_of_log().await;
    let processor = log
        .iter()
        .find(|l| l["event"] == "shutdown.entry" && l["component"] == "order processor")
        .unwrap();
    assert_eq!(processor["outcome"], "stopped");

    let mut server = ServerProcess::start(&db, &env).await;
    let orders = until_settled(&server).await;
    assert_eq!(orders.len(), 2000, "no order lost");
    assert!(
        orders
            .values()
            .all(|o| o["status"] == "FILLED" && o["filled_at"] == o["updated_at"])
    );
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
}
