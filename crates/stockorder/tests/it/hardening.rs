//! Operability and hardening over real sockets: metrics, request ids, API keys, load shedding,
//! request timeouts, slow clients and oversized requests.

use std::time::{Duration, Instant};

use crate::common::{TestApp, grpc_market_order, market_order, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::Value;
use stockorder::adapter::inbound::grpc::proto;
use stockorder::adapter::inbound::grpc::proto::stock_order_service_client::StockOrderServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const KEY: &str = "test-key-0123456789abcdef";

async fn grpc_client(app: &TestApp) -> StockOrderServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    StockOrderServiceClient::new(channel)
}

/// Starts a POST whose body never finishes: the request holds its place (a concurrency permit)
/// until the connection is dropped or the request times out.
async fn stalled_post(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /api/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"symbol\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

async fn read_all(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn metrics_show_requests_transitions_and_the_database() {
    let app = spawn_app_with(|_| {}).await;
    let created: Value = app.post_json("/api/orders", market_order()).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/api/orders/{id}")).await.status(), StatusCode::OK);
    assert_eq!(app.get("/api/orders/nope").await.status(), StatusCode::BAD_REQUEST);
    let mut grpc = grpc_client(&app).await;
    grpc.create_order(grpc_market_order()).await.unwrap();
    let missing = grpc
        .get_order(proto::GetOrderRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    for series in [
        r#"stockorder_http_requests_total{method="POST",route="/api/orders",status="201"}"#,
        r#"stockorder_http_requests_total{method="GET",route="/api/orders/{id}",status="200"}"#,
        r#"stockorder_http_requests_total{method="GET",route="/api/orders/{id}",status="400"}"#,
        r#"stockorder_http_request_duration_seconds_bucket{le="0.1",method="POST",route="/api/orders",status="201"}"#,
        r#"stockorder_grpc_requests_total{method="/stockorder.StockOrderService/CreateOrder",code="OK"}"#,
        r#"stockorder_grpc_requests_total{method="/stockorder.StockOrderService/GetOrder",code="NOT_FOUND"}"#,
        r#"stockorder_grpc_request_duration_seconds_count{method="/stockorder.StockOrderService/CreateOrder",code="OK"}"#,
        r#"stockorder_requests_in_flight{protocol="http"}"#,
        r#"stockorder_order_transitions_total{from="NEW",to="PENDING"}"#,
        r#"stockorder_db_batch_size_count{backend="sqlite"}"#,
        r#"stockorder_db_commit_duration_seconds_bucket{le="+Inf",backend="sqlite"}"#,
        r#"stockorder_shutdown_phase_budget_seconds{phase="stop servers"}"#,
        // Shared by every app of this test binary, some of which have shut down.
        "# TYPE stockorder_shutdown_draining gauge",
    ] {
        assert!(text.contains(series), "no {series} in\n{text}");
    }
    // The processor fills the orders (it runs in this app): their lag is measured.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = app.get("/metrics").await.text().await.unwrap();
        if text.contains(r#"stockorder_order_transitions_total{from="PENDING",to="FILLED"}"#)
            && !text.contains("stockorder_processor_lag_seconds_count 0")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no fill in the metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn request_ids_are_generated_or_kept_and_returned() {
    let app = spawn_app().await;
    let generated = app.get("/health").await;
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let kept = app
        .client
        .get(app.url("/api/orders"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-me-42");
    let mut grpc = grpc_client(&app).await;
    let mut request = tonic::Request::new(grpc_market_order());
    request
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("grpc-trace-7"));
    let answer = grpc.create_order(request).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap(), "grpc-trace-7");
    app.stop().await;
}

#[tokio::test]
async fn api_keys_guard_the_order_api_and_leave_probes_open() {
    let app = spawn_app_with(|a| a.limits.api_keys = Some(format!("{KEY},other-key-0123456789"))).await;
    let anonymous = app.post_json("/api/orders", market_order()).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let body: Value = anonymous.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let wrong = app
        .client
        .get(app.url("/api/orders"))
        .bearer_auth("test-key-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let allowed = app
        .client
        .post(app.url("/api/orders"))
        .bearer_auth(KEY)
        .json(&market_order())
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::CREATED);
    for open in ["/health", "/ready", "/metrics", "/openapi.json"] {
        assert_eq!(app.get(open).await.status(), StatusCode::OK, "{open}");
    }
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(
        doc["paths"]["/api/orders"]["post"]["security"][0]["api_key"],
        serde_json::json!([])
    );

    let mut grpc = grpc_client(&app).await;
    let refused = grpc.create_order(grpc_market_order()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(grpc_market_order());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    grpc.create_order(request).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn over_the_concurrency_limit_requests_are_shed_at_once_and_probes_still_answer() {
    let app = spawn_app_with(|a| a.limits.max_concurrent_requests = 1).await;
    let mut stalled = stalled_post(&app).await;
    // The stalled request holds the only permit once the server has read its head.
    let deadline = Instant::now() + Duration::from_secs(10);
    let shed = loop {
        let response = app.get("/api/orders").await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            break response;
        }
        assert!(Instant::now() < deadline, "never shed: {}", response.status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: Value = shed.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("not processed"), "{body}");
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    assert_eq!(app.get("/ready").await.status(), StatusCode::OK);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"stockorder_requests_rejected_total{protocol="http",reason="overloaded"}"#));

    // gRPC has its own budget of 1: a call is admitted.
    grpc_client(&app).await.create_order(grpc_market_order()).await.unwrap();

    // The permit comes back when the stalled request ends.
    stalled.shutdown().await.unwrap();
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/api/orders").await.status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "the permit never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_request_that_outlives_the_timeout_is_answered_504() {
    let app = spawn_app_with(|a| a.limits.request_timeout = Duration::from_millis(300)).await;
    let mut stalled = stalled_post(&app).await;
    let started = Instant::now();
    let answer = read_all(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    app.stop().await;
}

/// One unary call over a bare HTTP/2 connection, with the client's headers sent as given: a
/// tonic client enforces `grpc-timeout` itself and would give up before the server answers.
async fn raw_grpc_call(app: &TestApp, path: &str, message: impl prost::Message, grpc_timeout: &str) -> String {
    let tcp = TcpStream::connect(app.grpc_addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = axum::http::Request::post(format!("http://{}{path}", app.grpc_addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout)
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    let payload = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&payload);
    body.send_data(frame.into(), true).unwrap();
    let response = response.await.unwrap();
    // A refusal comes "trailers-only": the status is in the headers.
    let status = response.headers().get("grpc-status").cloned();
    match status {
        Some(status) => status.to_str().unwrap().to_owned(),
        None => {
            let mut body = response.into_body();
            while body.data().await.is_some() {}
            let trailers = body.trailers().await.unwrap().unwrap();
            trailers["grpc-status"].to_str().unwrap().to_owned()
        }
    }
}

#[tokio::test]
async fn a_grpc_deadline_shorter_than_the_server_timeout_is_honoured() {
    let app = spawn_app().await;
    let get = || proto::GetOrderRequest {
        order_id: uuid::Uuid::now_v7().to_string(),
    };
    let path = "/stockorder.StockOrderService/GetOrder";
    // NOT_FOUND (5): the call ran within its deadline.
    assert_eq!(raw_grpc_call(&app, path, get(), "5S").await, "5");
    // DEADLINE_EXCEEDED (4): `0n` has passed on arrival, so the server does not run the call.
    assert_eq!(raw_grpc_call(&app, path, get(), "0n").await, "4");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"stockorder_requests_rejected_total{protocol="grpc",reason="timed_out"}"#));
    app.stop().await;
}

#[tokio::test]
async fn slow_and_silent_clients_are_disconnected_while_others_are_served() {
    let app = spawn_app_with(|a| a.limits.header_read_timeout = Duration::from_millis(500)).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut silent_grpc = TcpStream::connect(app.grpc_addr).await.unwrap();
    let mut trickle = TcpStream::connect(app.addr).await.unwrap();
    trickle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    assert_eq!(app.get("/api/orders").await.status(), StatusCode::OK);
    for stream in [&mut silent, &mut silent_grpc, &mut trickle] {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the server closes a slow connection");
        // A close (0 bytes or a reset), perhaps after a 408 answer, never a served request.
        if let Ok(n) = read {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
        }
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "closed too early: {took:?}");
    app.stop().await;
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused_with_4xx() {
    let app = spawn_app().await;
    let huge_header = "a".repeat(20 * 1024);
    let response = app
        .client
        .get(app.url("/api/orders"))
        .header("x-padding", huge_header)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let five_mb = vec![b'a'; 5 * 1024 * 1024];
    let response = app
        .client
        .post(app.url("/api/orders"))
        .header("content-type", "application/json")
        .body(five_mb)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn the_api_reference_page_is_served_only_when_asked_for() {
    let app = spawn_app().await;
    assert_eq!(app.get("/docs").await.status(), StatusCode::NOT_FOUND);
    app.stop().await;
    let app = spawn_app_with(|a| a.limits.docs_ui = true).await;
    let page = app.get("/docs").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    // The same document as /openapi.json, with the price rule the derive cannot state.
    assert!(html.contains("\"openapi\":\"3.1.0\"") && html.contains("LIMIT order: a price above 0"));
    app.stop().await;
}

#[tokio::test]
async fn json_logs_name_the_request_on_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = crate::common::ServerProcess::start(&dir.path().join("orders.db"), &[]).await;
    let response = reqwest::Client::new()
        .get(server.url("/api/orders"))
        .header("x-request-id", "find-me-in-the-log")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let line = server.wait_for_event("request.finished").await;
    assert_eq!(line["spans"][0]["request_id"], "find-me-in-the-log", "{line}");
    assert_eq!(line["status"], 200, "{line}");
}
