//! The shutdown contract (docs/shutdown.md) against the real binary: real load, real signals, real
//! sockets. What a client sees is classified as answered, refused at connect (fine: nothing was
//! accepted), or failed (an accepted request broken), and "failed" must be 0.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{ServerProcess, grpc_market_order, market_order};
use nix::sys::signal::Signal;
use serde_json::Value;
use stockorder::adapter::inbound::grpc::proto::stock_order_service_client::StockOrderServiceClient;
use stockorder_tools::load::Outcome;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// What one load worker saw.
#[derive(Default)]
struct Tally {
    acked: Vec<String>,
    failures: Vec<String>,
}

fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        cause = c.source();
    }
    false
}

/// Creates orders over REST back to back on one keep-alive connection until a connection is
/// refused (the server has stopped listening).
async fn http_worker(url: String, acked: Arc<AtomicUsize>, progress: Arc<Notify>) -> Tally {
    let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    let mut tally = Tally::default();
    loop {
        match client.post(&url).json(&market_order()).send().await {
            Ok(resp) if resp.status() == 201 => match resp.json::<Value>().await {
                Ok(body) => {
                    tally.acked.push(body["id"].as_str().unwrap().to_owned());
                    acked.fetch_add(1, Ordering::Relaxed);
                    progress.notify_one();
                }
                Err(e) => tally.failures.push(format!("body lost: {e}")),
            },
            Ok(resp) => tally.failures.push(format!("HTTP {}", resp.status())),
            Err(e) if e.is_connect() && is_refused(&e) => return tally,
            Err(e) => {
                tally.failures.push(format!("{e:?}"));
                return tally;
            }
        }
    }
}

/// The same over gRPC, one HTTP/2 connection.
async fn grpc_worker(addr: String, acked: Arc<AtomicUsize>, progress: Arc<Notify>) -> Tally {
    let channel = tonic::transport::Endpoint::from_shared(addr).unwrap().connect_lazy();
    let mut client = StockOrderServiceClient::new(channel);
    let request = grpc_market_order();
    let mut tally = Tally::default();
    loop {
        match client.create_order(request.clone()).await {
            Ok(order) => {
                tally.acked.push(order.into_inner().id);
                acked.fetch_add(1, Ordering::Relaxed);
                progress.notify_one();
            }
            // Refused at connect: the server has stopped listening.
            Err(status) if Outcome::from_status(&status) == Outcome::Refused => return tally,
            // Turned away by the server's GOAWAY without being processed (hyper cancelled it
            // before sending, or its stream id was above the server's last processed one, RFC
            // 9113 §6.8): safe to retry, as grpc-go and grpc-java do transparently and tonic
            // does not. The stored-equals-acknowledged check below proves nothing reached the
            // service.
            Err(status) if Outcome::from_status(&status) == Outcome::NotProcessed => continue,
            Err(status) => {
                tally.failures.push(format!("{status:?}"));
                return tally;
            }
        }
    }
}

/// The heart of it: 64 clients (56 REST, 8 gRPC) creating orders back to back; SIGTERM mid-run.
/// Every accepted request gets its real answer, later connections are refused, the exit code
/// is 0, the database closed after both servers, and after a restart the stored orders are
/// exactly the acknowledged ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_breaks_no_request_and_loses_no_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let mut server = ServerProcess::start(&db, &[]).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (acked, progress) = (Arc::clone(&acked), Arc::clone(&progress));
        if i % 8 == 0 {
            workers.spawn(grpc_worker(format!("http://{}", server.grpc_addr), acked, progress));
        } else {
            workers.spawn(http_worker(server.url("/api/orders"), acked, progress));
        }
    }
    while acked.load(Ordering::Relaxed) < 500 {
        progress.notified().await;
    }

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let code = server.wait().await;
    let exit_after = signalled.elapsed();
    let log = server.rest_of_log().await;

    let mut acked_ids = HashSet::new();
    let mut failures = Vec::new();
    while let Some(tally) = workers.join_next().await {
        let tally = tally.unwrap();
        acked_ids.extend(tally.acked);
        failures.extend(tally.failures);
    }
    eprintln!(
        "{} orders acknowledged; exit {:?} {:.1} ms after SIGTERM",
        acked_ids.len(),
        code,
        exit_after.as_secs_f64() * 1e3
    );
    assert!(failures.is_empty(), "accepted requests broken: {failures:#?}");
    assert_eq!(code, Some(0), "clean exit");
    assert!(exit_after < Duration::from_secs(5), "shutdown hung: {exit_after:?}");

    // The report: both servers stopped, then the database, all clean.
    let report: Vec<&Value> = log.iter().filter(|l| l["event"] == "shutdown.entry").collect();
    let entry = |name: &str| *report.iter().find(|l| l["component"] == name).expect(name);
    for name in ["http server", "grpc server", "order processor", "database"] {
        assert_eq!(entry(name)["outcome"], "stopped", "{name}");
    }
    let ends = |name: &str| entry(name)["started_ms"].as_f64().unwrap() + entry(name)["took_ms"].as_f64().unwrap();
    let db_start = entry("database")["started_ms"].as_f64().unwrap();
    // (Figures are rounded to 0.1 ms each, hence the tolerance.)
    assert!(
        db_start + 0.2 >= ends("http server") && db_start + 0.2 >= ends("grpc server"),
        "{report:?}"
    );

    // Later connections are refused, not reset.
    let late = tokio::net::TcpStream::connect(server.addr).await.unwrap_err();
    assert_eq!(late.kind(), std::io::ErrorKind::ConnectionRefused);

    let mut server = ServerProcess::start(&db, &[]).await;
    let stored: HashSet<String> = server.all_orders().await.into_keys().collect();
    assert_eq!(stored.len(), acked_ids.len(), "stored orders = acknowledged orders");
    assert_eq!(stored, acked_ids);
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
}

#[tokio::test]
async fn an_idle_server_exits_at_once_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("orders.db"), &[]).await;
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
    let took = signalled.elapsed();
    eprintln!("idle SIGTERM → exit in {:.1} ms", took.as_secs_f64() * 1e3);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let log = server.rest_of_log().await;
    let mut reported: Vec<&str> = log
        .iter()
        .filter(|l| l["event"] == "shutdown.entry")
        .map(|l| l["component"].as_str().unwrap())
        .collect();
    // The two servers stop concurrently and are listed as they finish; then the workers (the
    // processor and the storage monitor, also concurrently), and the database last.
    reported[..2].sort_unstable();
    reported[2..4].sort_unstable();
    assert_eq!(
        reported,
        [
            "grpc server",
            "http server",
            "order processor",
            "storage monitor",
            "database"
        ]
    );
    assert!(
        log.iter()
            .any(|l| l["event"] == "shutdown.complete" && l["clean"] == true)
    );
}

/// A POST whose body never finishes: an accepted request that will not end by itself.
async fn stuck_request(server: &ServerProcess) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /api/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"symbol\":")
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn a_request_past_the_deadline_is_named_and_the_exit_code_is_not_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("orders.db"), &[("SHUTDOWN_TIMEOUT", "1s")]).await;
    let _stuck = stuck_request(&server).await;
    // The request is in the server's hands once an ordinary one behind it has been answered.
    let ok = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(ok.status(), 200);

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let code = server.wait().await;
    let took = signalled.elapsed();
    assert_eq!(code, Some(1), "a straggler makes the exit code non-zero");
    // The servers get the deadline minus a reserve for each later phase: 1 s - 2 × 250 ms.
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let log = server.rest_of_log().await;
    let http = log
        .iter()
        .find(|l| l["event"] == "shutdown.entry" && l["component"] == "http server")
        .expect("http server in the report");
    assert!(http["outcome"].as_str().unwrap().starts_with("timed out"), "{http}");
    let database = log
        .iter()
        .find(|l| l["event"] == "shutdown.entry" && l["component"] == "database")
        .expect("database in the report");
    assert_eq!(
        database["outcome"], "stopped",
        "the reserve lets the database close anyway"
    );
    let summary = log
        .iter()
        .find(|l| l["event"] == "shutdown.complete" && l["clean"] == false)
        .unwrap();
    assert_eq!(summary["stragglers"], "[\"http server\"]");
}

#[tokio::test]
async fn a_second_signal_exits_at_once_with_128_plus_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("orders.db"), &[("SHUTDOWN_TIMEOUT", "60s")]).await;
    let _stuck = stuck_request(&server).await;
    assert_eq!(reqwest::get(server.url("/health")).await.unwrap().status(), 200);
    server.signal(Signal::SIGTERM);
    server.wait_for_event("shutdown.started").await;
    // Sooner, it would be the same request delivered twice.
    tokio::time::sleep(phased_shutdown::DUPLICATE_WINDOW + Duration::from_millis(100)).await;
    let second = Instant::now();
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(143));
    assert!(second.elapsed() < Duration::from_secs(2), "{:?}", second.elapsed());
}

#[tokio::test]
async fn the_drain_delay_keeps_serving_while_unready() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("orders.db"), &[("SHUTDOWN_DRAIN_DELAY", "2s")]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let mut orders = StockOrderServiceClient::new(channel);
    let client = reqwest::Client::new();
    assert_eq!(client.get(server.url("/ready")).send().await.unwrap().status(), 200);

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    server.wait_for_event("shutdown.started").await;

    assert_eq!(client.get(server.url("/ready")).send().await.unwrap().status(), 503);
    assert_eq!(
        client.get(server.url("/health")).send().await.unwrap().status(),
        200,
        "still alive"
    );
    for service in ["", "stockorder.StockOrderService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::NotServing, "{service:?}");
    }
    let created = client
        .post(server.url("/api/orders"))
        .json(&market_order())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "orders are still taken while draining");
    assert_eq!(
        created.headers()["connection"],
        "close",
        "and keep-alive clients are told to leave"
    );
    let request = grpc_market_order();
    assert!(orders.create_order(request).await.is_ok(), "over gRPC too");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "checks ran inside the delay"
    );

    assert_eq!(server.wait().await, Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "the servers stopped after the delay"
    );
}
