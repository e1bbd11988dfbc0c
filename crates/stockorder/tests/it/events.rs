//! The order event stream end to end, with clients that are not the service's: raw SSE readers
//! on plain sockets and tonic `WatchOrders` clients follow the log while orders of every kind
//! are placed, through a SIGTERM and a restart on the same file. Each resumes with the last
//! sequence it received; at the end each has every event of the log exactly once, in order,
//! and every stream ended cleanly at the signal (an SSE `retry:`, a gRPC UNAVAILABLE).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use stockorder::adapter::inbound::grpc::proto;
use stockorder::adapter::inbound::grpc::proto::stock_order_service_client::StockOrderServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::common::ServerProcess;

/// What a follower received, and how each of its streams ended.
#[derive(Debug, Default)]
struct Followed {
    /// `(sequence, type, order id, status)` in the order received.
    events: Vec<(u64, String, String, String)>,
    /// One per stream: "clean" (the server ended it as its protocol defines) or what happened.
    ends: Vec<String>,
}

/// Where the server is now: the follower reconnects there (a restart gets new ports).
type Addrs = watch::Receiver<Option<(SocketAddr, SocketAddr)>>;

/// An SSE follower on a plain socket: HTTP/1.0, so the body is the stream itself, ended by
/// the server closing the connection.
async fn follow_sse(mut addrs: Addrs, seen: Arc<Mutex<Followed>>) {
    let mut last: u64 = 0;
    loop {
        let Some((http, _)) = *addrs.borrow_and_update() else {
            return; // the test is over
        };
        let Ok(mut socket) = tokio::net::TcpStream::connect(http).await else {
            // Down between the old process and the new: wait for the next address.
            let _ = tokio::time::timeout(Duration::from_millis(50), addrs.changed()).await;
            continue;
        };
        let request = format!("GET /api/orders/events HTTP/1.0\r\nLast-Event-ID: {last}\r\n\r\n");
        if socket.write_all(request.as_bytes()).await.is_err() {
            continue;
        }
        let (mut text, mut buf, mut retry) = (String::new(), [0u8; 8192], false);
        let end = loop {
            match socket.read(&mut buf).await {
                Ok(0) => {
                    break if retry {
                        "clean".to_owned()
                    } else {
                        "closed without retry".to_owned()
                    };
                }
                Ok(n) => {
                    text.push_str(std::str::from_utf8(&buf[..n]).expect("UTF-8"));
                    while let Some(end) = text.find("\n\n") {
                        let block: String = text.drain(..end + 2).collect();
                        retry |= block.lines().any(|l| l.starts_with("retry:"));
                        if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                            let event: Value = serde_json::from_str(data).unwrap();
                            last = event["sequence"].as_u64().unwrap();
                            seen.lock().unwrap().events.push((
                                last,
                                event["type"].as_str().unwrap().to_owned(),
                                event["order"]["id"].as_str().unwrap().to_owned(),
                                event["order"]["status"].as_str().unwrap().to_owned(),
                            ));
                        }
                    }
                }
                Err(e) => break format!("error: {e}"),
            }
        };
        let headers_only = text.starts_with("HTTP/1.") && !text.contains("\n\n");
        seen.lock()
            .unwrap()
            .ends
            .push(if headers_only { "refused".into() } else { end });
    }
}

/// A tonic follower of `WatchOrders`.
async fn follow_grpc(mut addrs: Addrs, seen: Arc<Mutex<Followed>>) {
    let mut last: u64 = 0;
    loop {
        let Some((_, grpc)) = *addrs.borrow_and_update() else {
            return;
        };
        let Ok(mut client) = StockOrderServiceClient::connect(format!("http://{grpc}")).await else {
            let _ = tokio::time::timeout(Duration::from_millis(50), addrs.changed()).await;
            continue;
        };
        let request = proto::WatchOrdersRequest {
            after_sequence: Some(last),
            symbol: String::new(),
        };
        let mut stream = match client.watch_orders(request).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                seen.lock().unwrap().ends.push(format!("refused: {status}"));
                continue;
            }
        };
        let end = loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    last = event.sequence;
                    let order = event.order.unwrap();
                    let status = proto::OrderStatus::try_from(order.status)
                        .unwrap()
                        .as_str_name()
                        .to_owned();
                    seen.lock()
                        .unwrap()
                        .events
                        .push((event.sequence, event.r#type, order.id, status));
                }
                Ok(None) => break "ended without a status".to_owned(),
                Err(status) if status.code() == tonic::Code::Unavailable => break "clean".to_owned(),
                Err(status) => break format!("error: {status}"),
            }
        };
        seen.lock().unwrap().ends.push(end);
    }
}

/// Places orders of every kind until `stop`: market orders (filled by the processor), limit
/// orders the price never reaches (resting, half of them cancelled), and orders over the
/// quantity limit (rejected at placement). Errors while the server is down are ignored: only
/// acknowledged orders matter.
async fn place_orders(addrs: Addrs, stop: Arc<std::sync::atomic::AtomicBool>) {
    let client = reqwest::Client::new();
    let mut n = 0_u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Some((http, _)) = *addrs.borrow() else { return };
        n += 1;
        let body = match n % 4 {
            0 => json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 10}),
            1 | 2 => {
                json!({"symbol": "MSFT", "order_type": "LIMIT", "order_side": "BUY", "quantity": 10, "price": 1.0})
            }
            _ => json!({"symbol": "GOOGL", "order_type": "MARKET", "order_side": "SELL", "quantity": 5000}),
        };
        let Ok(answer) = client
            .post(format!("http://{http}/api/orders"))
            .json(&body)
            .send()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if n % 4 == 2
            && let Ok(order) = answer.json::<Value>().await
            && let Some(id) = order["id"].as_str()
        {
            let _ = client
                .post(format!("http://{http}/api/orders/{id}/cancel"))
                .send()
                .await;
        }
    }
}

/// The events the log must hold for these orders: each order's `created`, and for one that
/// left PENDING after it was placed, its final event.
fn expected_events(orders: &[Value]) -> BTreeSet<(String, String)> {
    let mut expected = BTreeSet::new();
    for order in orders {
        let id = order["id"].as_str().unwrap().to_owned();
        expected.insert((id.clone(), "created".to_owned()));
        let changed_later = order["updated_at"] != order["created_at"];
        match order["status"].as_str().unwrap() {
            "FILLED" => expected.insert((id, "filled".into())),
            "CANCELLED" => expected.insert((id, "cancelled".into())),
            "REJECTED" if changed_later => expected.insert((id, "rejected".into())),
            _ => false,
        };
    }
    expected
}

/// Followers by kind ("sse" or "grpc"), each with what it received.
type Followers = Vec<(&'static str, Arc<Mutex<Followed>>)>;

/// Six followers, half SSE and half gRPC, following wherever `addrs` says the server is.
fn start_followers(addrs: &Addrs) -> (Followers, Vec<tokio::task::JoinHandle<()>>) {
    let followers: Followers = (0..6)
        .map(|i| (if i % 2 == 0 { "sse" } else { "grpc" }, Arc::default()))
        .collect();
    let tasks = followers
        .iter()
        .map(|(kind, seen)| match *kind {
            "sse" => tokio::spawn(follow_sse(addrs.clone(), Arc::clone(seen))),
            _ => tokio::spawn(follow_grpc(addrs.clone(), Arc::clone(seen))),
        })
        .collect();
    (followers, tasks)
}

/// Every order once the processor has decided every market order (a limit order at 1.0 rests
/// for good), and the events the log must hold for them.
async fn settled_orders(server: &ServerProcess) -> (Vec<Value>, BTreeSet<(String, String)>) {
    let orders = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let orders: Vec<Value> = server.all_orders().await.into_values().collect();
            if !orders
                .iter()
                .any(|o| o["order_type"] == "MARKET" && o["status"] == "PENDING")
            {
                return orders;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the processor decides every market order");
    let kinds: BTreeMap<&str, usize> = orders.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(o["status"].as_str().unwrap()).or_default() += 1;
        m
    });
    assert!(
        ["FILLED", "PENDING", "CANCELLED", "REJECTED"]
            .iter()
            .all(|s| kinds.contains_key(s)),
        "orders of every kind: {kinds:?}"
    );
    let expected = expected_events(&orders);
    eprintln!("{} orders ({kinds:?}), {} events", orders.len(), expected.len());
    (orders, expected)
}

/// Waits until each follower has the whole log, stops them, and checks what each received:
/// every sequence once and in order, each order's created and final events, and the streams
/// open at the first `ends_at_stop` stops ended as their protocol defines.
async fn check_followers(
    followers: &[(&str, Arc<Mutex<Followed>>)],
    tasks: Vec<tokio::task::JoinHandle<()>>,
    addrs: &watch::Sender<Option<(SocketAddr, SocketAddr)>>,
    expected: &BTreeSet<(String, String)>,
    ends_at_stop: usize,
) {
    let caught_up = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if followers
                .iter()
                .all(|(_, seen)| seen.lock().unwrap().events.len() >= expected.len())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    addrs.send_replace(None);
    for task in tasks {
        task.abort();
    }
    for (kind, seen) in followers {
        let seen = seen.lock().unwrap();
        eprintln!(
            "{kind} follower: {} events, streams ended: {:?}",
            seen.events.len(),
            seen.ends
        );
        assert!(
            caught_up.is_ok(),
            "{kind} follower got {} of {} events",
            seen.events.len(),
            expected.len()
        );
        let sequences: Vec<u64> = seen.events.iter().map(|e| e.0).collect();
        assert_eq!(
            sequences,
            (1..=expected.len() as u64).collect::<Vec<_>>(),
            "{kind}: every sequence once, in order"
        );
        let got: BTreeSet<(String, String)> = seen.events.iter().map(|e| (e.2.clone(), e.1.clone())).collect();
        assert_eq!(&got, expected, "{kind}: each order's created and final events");
        assert!(seen.ends.len() >= ends_at_stop, "{kind}: {:?}", seen.ends);
        for end in &seen.ends[..ends_at_stop] {
            assert_eq!(
                end, "clean",
                "{kind}: the streams open at each stop ended cleanly: {:?}",
                seen.ends
            );
        }
    }
}

#[tokio::test]
async fn followers_resume_across_a_restart_with_no_event_missing_or_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let env = [("MAX_ORDER_QUANTITY", "1000")];
    let mut server = ServerProcess::start(&db, &env).await;
    let (addrs, addrs_rx) = watch::channel(Some((server.addr, server.grpc_addr)));
    let (followers, tasks) = start_followers(&addrs_rx);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(place_orders(addrs_rx.clone(), Arc::clone(&stop)));

    tokio::time::sleep(Duration::from_millis(600)).await;
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0), "clean exit under load with followers");
    let server = ServerProcess::start(&db, &env).await;
    addrs.send_replace(Some((server.addr, server.grpc_addr)));
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();

    let (_, expected) = settled_orders(&server).await;
    check_followers(&followers, tasks, &addrs, &expected, 1).await;
}

/// Ten in-place upgrades (SIGHUP) under load: the ports never close, each old process ends its
/// streams as it stops, and the followers, reconnecting to the same address, reach the new one
/// and continue from their last sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_resume_across_ten_in_place_upgrades() {
    use nix::unistd::Pid;
    use stockorder::lifecycle::upgrade::exited;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let env = [("MAX_ORDER_QUANTITY", "1000")];
    let mut server = ServerProcess::start(&db, &env).await;
    let (addrs, addrs_rx) = watch::channel(Some((server.addr, server.grpc_addr)));
    let (followers, tasks) = start_followers(&addrs_rx);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(place_orders(addrs_rx.clone(), Arc::clone(&stop)));

    let first = Pid::from_raw(server.child.id().unwrap() as i32);
    let mut current = first;
    for round in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let next = server.upgrade(current).await;
        if current == first {
            assert_eq!(server.child.wait().await.unwrap().code(), Some(0), "round {round}");
        } else {
            tokio::time::timeout(Duration::from_secs(20), exited(current))
                .await
                .unwrap_or_else(|_| panic!("round {round}: the old process {current} did not exit"));
        }
        current = next;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();

    let (_, expected) = settled_orders(&server).await;
    check_followers(&followers, tasks, &addrs, &expected, 10).await;
    nix::sys::signal::kill(current, Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(20), exited(current))
        .await
        .unwrap();
}

/// The stream's answers to a client's mistakes: 400 with the usual error body, never a stream
/// and never a 500. (schemathesis does not fuzz this endpoint: a valid request is an endless
/// stream, which its request timeout would count as a server that stopped responding.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resume_points_and_symbols_are_refused_with_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("orders.db"), &[]).await;
    let client = reqwest::Client::new();
    let refused = [
        ("after=abc", None),
        ("after=-1", None),
        ("after=1.5", None),
        ("after=18446744073709551616", None),
        ("after=9223372036854775808", None),
        ("symbol=not%20a%20symbol", None),
        ("symbol=", None),
        ("", Some("abc")),
        ("", Some("-5")),
    ];
    for (query, last_event_id) in refused {
        let mut request = client.get(server.url(&format!("/api/orders/events?{query}")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 400, "{query} / Last-Event-ID {last_event_id:?}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{query}: {body}");
    }
    // A valid one is a stream: its head, then events as they come.
    let answer = client
        .get(server.url("/api/orders/events?after=0&symbol=AAPL"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
}

/// A resume point older than the history the log still holds: 410 Gone over REST and
/// OUT_OF_RANGE over gRPC, each saying where the history starts. With
/// `EVENT_RETENTION_COUNT=1` the log keeps only the newest event once the writer prunes (it
/// looks every 1024 write batches), so a thousand and some creates leave `after=1` behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_point_older_than_the_history_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("orders.db"), &[("EVENT_RETENTION_COUNT", "1")]).await;
    let client = reqwest::Client::new();
    let resting = json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1, "price": 1.0});
    let gone = async || {
        let answer = client
            .get(server.url("/api/orders/events?after=1"))
            .send()
            .await
            .unwrap();
        (answer.status() == 410).then_some(answer)
    };
    let mut placed = 0;
    let answer = loop {
        if placed % 64 == 0
            && let Some(answer) = gone().await
        {
            break answer;
        }
        assert!(placed < 5000, "the log was never pruned");
        let created = client
            .post(server.url("/api/orders"))
            .json(&resting)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        placed += 1;
    };
    let body: Value = answer.json().await.unwrap();
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("after 1"), "{body}");

    let mut grpc = StockOrderServiceClient::connect(format!("http://{}", server.grpc_addr))
        .await
        .unwrap();
    let request = proto::WatchOrdersRequest {
        after_sequence: Some(1),
        symbol: String::new(),
    };
    let status = grpc.watch_orders(request).await.expect_err("too old");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
}
