//! The REST API (docs/api.md), driven over a real socket against a real instance.

use crate::common::{market_order, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn error_of(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: Value = resp.json().await.expect("error bodies are JSON");
    (status, body["error"].as_str().expect("{\"error\": …}").to_owned())
}

#[tokio::test]
async fn seed_readme_walkthrough() {
    let app = spawn_app().await;

    let health = app.get("/health").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    assert_eq!(app.get("/ready").await.status(), 200);

    let created = app.post_json("/api/orders", market_order()).await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let market: Value = created.json().await.unwrap();
    assert_eq!(location, format!("/api/orders/{}", market["id"].as_str().unwrap()));
    assert_eq!(market["symbol"], "AAPL");
    assert_eq!(market["order_type"], "MARKET");
    assert_eq!(market["order_side"], "BUY");
    assert_eq!(market["quantity"], 100);
    assert_eq!(market["status"], "PENDING");
    assert!(market.get("price").is_none(), "absent price is omitted");
    assert!(market.get("description").is_none(), "empty description is omitted");
    time::OffsetDateTime::parse(
        market["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339 timestamps");

    let limit = app
        .post_json(
            "/api/orders",
            json!({"symbol": "GOOGL", "order_type": "LIMIT", "order_side": "SELL", "quantity": 50, "price": 150.75}),
        )
        .await;
    assert_eq!(limit.status(), 201);
    let limit: Value = limit.json().await.unwrap();
    assert_eq!(limit["price"], 150.75);

    let list: Vec<Value> = app.get("/api/orders").await.json().await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], limit["id"], "newest first");
    assert_eq!(list[1]["id"], market["id"]);

    let got: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(got, market);

    let cancel = app
        .client
        .post(app.url(&format!("{location}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    assert_eq!(
        cancel.json::<Value>().await.unwrap(),
        json!({"message": "order cancelled successfully"})
    );
    let got: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(got["status"], "CANCELLED");

    let again = app
        .client
        .post(app.url(&format!("{location}/cancel")))
        .send()
        .await
        .unwrap();
    let (status, message) = error_of(again).await;
    assert_eq!(status, 409);
    assert!(message.contains("CANCELLED"), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn invalid_orders_get_400_naming_the_field() {
    let app = spawn_app().await;
    let base = market_order();
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let limit = |price: Option<Value>| {
        let mut b = with("order_type", json!("LIMIT"));
        if let Some(p) = price {
            b["price"] = p;
        }
        b
    };
    let cases = [
        (without("symbol"), "symbol"),
        (with("symbol", json!("WAY-TOO-LONG-SYMBOL")), "symbol"),
        (with("symbol", json!("AA PL")), "symbol"),
        (without("quantity"), "quantity"),
        (with("quantity", json!(0)), "quantity"),
        (with("quantity", json!(2147483648_i64)), "quantity"),
        (with("quantity", json!(-3)), "quantity"),
        (with("quantity", json!(1.5)), "quantity"),
        (with("quantity", json!("100")), "quantity"),
        (limit(None), "price"),
        (limit(Some(json!(-1.0))), "price"),
        (limit(Some(json!(0))), "price"),
        (with("price", json!(10.0)), "price"),
        (with("order_type", json!("STOP")), "order_type"),
        (without("order_type"), "order_type"),
        (with("order_side", json!("HOLD")), "order_side"),
        (with("client_order_id", json!("")), "client_order_id"),
    ];
    for (body, field) in cases {
        let (status, message) = error_of(app.post_json("/api/orders", body.clone()).await).await;
        assert_eq!(status, 400, "{body}");
        assert!(message.contains(field), "{body}: {message:?} should name {field}");
    }
    assert_eq!(
        app.get("/api/orders").await.json::<Vec<Value>>().await.unwrap().len(),
        0,
        "nothing stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_oversized_and_wrongly_typed_bodies() {
    let app = spawn_app().await;
    let post = |body: Vec<u8>, content_type: &'static str| {
        app.client
            .post(app.url("/api/orders"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let (status, message) = error_of(post(b"{\"symbol\": ".to_vec(), "application/json").await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(message.to_lowercase().contains("json"), "{message}");

    let (status, _) = error_of(post(b"[1,2,3]".to_vec(), "application/json").await.unwrap()).await;
    assert_eq!(status, 400);

    let big = format!("{{\"symbol\":\"{}\"}}", "A".repeat(2 * 1024 * 1024)).into_bytes();
    let (status, message) = error_of(post(big, "application/json").await.unwrap()).await;
    assert_eq!(status, 413);
    assert!(message.contains("larger than"), "{message}");

    let (status, message) = error_of(
        post(market_order().to_string().into_bytes(), "text/plain")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 415);
    assert!(message.contains("application/json"), "{message}");

    let no_type = app
        .client
        .post(app.url("/api/orders"))
        .body(market_order().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), 415);
    app.stop().await;
}

/// Unknown fields are refused by name, not ignored: a misspelt `client_order_id` would lose the
/// retry protection without a word. The camelCase of a known field gets a hint.
#[tokio::test]
async fn unknown_fields_are_refused_by_name() {
    let app = spawn_app().await;
    let post = |body: Value| app.client.post(app.url("/api/orders")).json(&body).send();
    let mut camel = market_order();
    camel["clientOrderId"] = json!("retry-1");
    let (status, message) = error_of(post(camel).await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(message.contains("`clientOrderId`"), "{message}");
    assert!(message.contains("did you mean `client_order_id`?"), "{message}");
    let mut foo = market_order();
    foo["foo"] = json!(1);
    let (status, message) = error_of(post(foo).await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(message.contains("unknown field `foo`"), "{message}");
    assert!(!message.contains("did you mean"), "{message}");
    assert_eq!(
        app.get("/api/orders").await.json::<Vec<Value>>().await.unwrap().len(),
        0,
        "nothing stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let app = spawn_app().await;
    let unknown = "01a210d8-4ff9-7763-b010-ebbb681dec37";
    let (status, message) = error_of(app.get(&format!("/api/orders/{unknown}")).await).await;
    assert_eq!((status, message.contains(unknown)), (StatusCode::NOT_FOUND, true));
    let cancel = app
        .client
        .post(app.url(&format!("/api/orders/{unknown}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 404);

    let (status, message) = error_of(app.get("/api/orders/not-a-uuid").await).await;
    assert_eq!(status, 400);
    assert!(message.contains("order_id"), "{message}");
    let cancel = app
        .client
        .post(app.url("/api/orders/not-a-uuid/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 400);

    let (status, _) = error_of(app.get("/api/nothing-here").await).await;
    assert_eq!(status, 404);
    let (status, _) = error_of(app.client.delete(app.url("/api/orders")).send().await.unwrap()).await;
    assert_eq!(status, 405);
    app.stop().await;
}

#[tokio::test]
async fn client_order_id_makes_creates_idempotent() {
    let app = spawn_app().await;
    let mut body = market_order();
    body["client_order_id"] = json!("retry-me-1");

    let first = app.post_json("/api/orders", body.clone()).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["client_order_id"], "retry-me-1");

    let replay = app.post_json("/api/orders", body.clone()).await;
    assert_eq!(replay.status(), 200, "same key, same parameters: a replay");
    assert_eq!(replay.json::<Value>().await.unwrap(), first);

    body["quantity"] = json!(101);
    let (status, message) = error_of(app.post_json("/api/orders", body).await).await;
    assert_eq!(status, 409);
    assert!(message.contains("retry-me-1"), "{message}");

    assert_eq!(
        app.get("/api/orders").await.json::<Vec<Value>>().await.unwrap().len(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn listing_pages_with_link_headers_and_filters() {
    let app = spawn_app().await;
    for i in 0..7 {
        let (symbol, side) = if i % 2 == 0 { ("AAPL", "BUY") } else { ("MSFT", "SELL") };
        let body = json!({"symbol": symbol, "order_type": "MARKET", "order_side": side, "quantity": 1 + i});
        assert_eq!(app.post_json("/api/orders", body).await.status(), 201);
    }

    let mut seen = Vec::new();
    let mut next = Some("/api/orders?limit=3".to_owned());
    while let Some(path) = next.take() {
        let resp = app.get(&path).await;
        assert_eq!(resp.status(), 200);
        next = resp.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with("; rel=\"next\""), "{l}");
            l[1..l.find('>').unwrap()].to_owned()
        });
        let page: Vec<Value> = resp.json().await.unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.into_iter().map(|o| o["quantity"].as_i64().unwrap()));
    }
    assert_eq!(seen, vec![7, 6, 5, 4, 3, 2, 1], "every order once, newest first");

    let msft: Vec<Value> = app.get("/api/orders?symbol=msft").await.json().await.unwrap();
    assert_eq!(msft.len(), 3);
    let buys: Vec<Value> = app
        .get("/api/orders?side=BUY&status=PENDING")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(buys.len(), 4);
    let filled: Vec<Value> = app.get("/api/orders?status=FILLED").await.json().await.unwrap();
    assert!(filled.is_empty());

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("status=DONE", "status"),
        ("side=HOLD", "side"),
        ("symbol=A%20B", "symbol"),
        ("page_token=nope", "page_token"),
    ] {
        let (status, message) = error_of(app.get(&format!("/api/orders?{query}")).await).await;
        assert_eq!(status, 400, "{query}");
        assert!(message.contains(field), "{query}: {message}");
    }
    app.stop().await;
}
