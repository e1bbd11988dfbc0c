//! `stockorder-tools client http|grpc` as a user runs them: real binary, real server, real
//! signals.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use stockorder_tools::service::Server;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn client(protocol: &str, addr: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stockorder-tools"));
    cmd.args(["client", protocol, "--addr", addr]).kill_on_drop(true);
    cmd
}

async fn json_of(cmd: &mut Command) -> Value {
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

#[tokio::test]
async fn one_shot_calls_print_the_same_json_over_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    // No processor: the orders must not change between the calls that compare them.
    let db = format!("sqlite://{}", dir.path().join("orders.db").display());
    let server = Server::start(&db, &[("PROCESSOR_WORKERS", "0")]).await.unwrap();
    let http = format!("http://{}", server.http);
    let grpc = format!("http://{}", server.grpc);

    let args = [
        "create",
        "--symbol",
        "msft",
        "--type",
        "LIMIT",
        "--side",
        "SELL",
        "--quantity",
        "5",
    ];
    let created = json_of(client("grpc", &grpc).args(args).args(["--price", "410.5"])).await;
    assert_eq!(created["symbol"], "MSFT");
    assert_eq!(created["price"], 410.5);
    let id = created["id"].as_str().unwrap();

    let over_http = json_of(client("http", &http).args(["get", id])).await;
    let over_grpc = json_of(client("grpc", &grpc).args(["get", id])).await;
    assert_eq!(over_http, created);
    assert_eq!(over_grpc, created, "both protocols print one shape");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&over_grpc), keys(&over_http), "in one field order");

    json_of(client("http", &http).arg("create")).await;
    let page = json_of(client("grpc", &grpc).args(["list", "--limit", "1"])).await;
    assert_eq!(page["orders"].as_array().unwrap().len(), 1);
    let token = page["next_page_token"].as_str().expect("a second page exists");
    let rest = json_of(client("http", &http).args(["list", "--limit", "1", "--page-token", token])).await;
    assert_eq!(rest["orders"][0]["id"], id, "the gRPC token pages REST too");
    assert!(rest.get("next_page_token").is_none());

    let cancelled = json_of(client("http", &http).args(["cancel", id])).await;
    assert_eq!(cancelled["message"], "order cancelled successfully");

    for (protocol, addr, code) in [("http", &http, "HTTP 409"), ("grpc", &grpc, "FAILED_PRECONDITION")] {
        let out = client(protocol, addr).args(["cancel", id]).output().await.unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with(&format!("error: {code}")), "{stderr}");
        assert!(!stderr.contains("backtrace"), "{stderr}");
    }

    assert_eq!(server.stop().await.unwrap().0, Some(0));
}

#[tokio::test]
async fn the_loop_places_an_order_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("orders.db").display());
    let server = Server::start(&db, &[]).await.unwrap();
    for (protocol, addr) in [("http", &server.http), ("grpc", &server.grpc)] {
        let out = client(protocol, &format!("http://{addr}"))
            .args(["--interval", "10ms", "--count", "3"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        let stdout = String::from_utf8(out.stdout).unwrap();
        let placed: Vec<&str> = stdout.lines().filter(|l| l.contains("  placed  ")).collect();
        assert_eq!(placed.len(), 3, "{stdout}");
        assert!(
            placed.iter().all(|l| l.contains("AAPL MARKET BUY 100  PENDING")),
            "{stdout}"
        );
        assert!(stdout.ends_with("orders sent: 3, placed: 3, failed: 0\n"), "{stdout}");
    }
    let all: Vec<Value> = reqwest::get(format!("http://{}/api/orders", server.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(server.stop().await.unwrap().0, Some(0));
}

/// Ctrl+C while a request hangs: the loop cancels it and exits 0. The "server" accepts and never
/// answers, so the request is certainly in flight when the signal arrives.
#[tokio::test]
async fn ctrl_c_cancels_the_request_in_flight_and_exits_zero() {
    for protocol in ["http", "grpc"] {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", silent.local_addr().unwrap());
        let mut child = client(protocol, &addr).stdout(Stdio::piped()).spawn().unwrap();
        // Accepted means the first request is under way (and the signal handler installed).
        let (_held, _) = tokio::time::timeout(Duration::from_secs(10), silent.accept())
            .await
            .expect("the client connects")
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the client exits on Ctrl+C")
            .unwrap();
        assert_eq!(status.code(), Some(0), "{protocol}");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(line);
        }
        assert!(
            out[0].ends_with("interrupted: cancelled the request in flight"),
            "{out:?}"
        );
        assert_eq!(out[1], "orders sent: 0, placed: 0, failed: 0", "{protocol}");
    }
}

/// With no server, the loop says why nothing was placed and exits 1, not 0; an address without
/// a scheme is taken as http://, and one that is no address is refused before anything is sent.
#[tokio::test]
async fn a_loop_that_places_nothing_fails_and_says_why() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    for (protocol, addr) in [("http", addr.clone()), ("grpc", format!("http://{addr}"))] {
        let out = client(protocol, &addr)
            .args(["--count", "2", "--interval", "10ms"])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{protocol}: {stderr}");
        assert!(stderr.starts_with("error: no order was placed"), "{protocol}: {stderr}");
        let bare = addr.trim_start_matches("http://");
        assert!(
            stderr.contains(&format!("no server at {bare} (connection refused)")),
            "{protocol}: {stderr}"
        );
        // A one-shot call says the same.
        let out = client(protocol, &addr).args(["list"]).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{protocol}: {stderr}");
        assert!(
            stderr.contains(&format!("no server at {bare}")),
            "{protocol} list: {stderr}"
        );
    }
    let out = client("http", "not an address")
        .args(["--count", "1"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not a server address"), "{stderr}");
}

/// `client http|grpc watch` prints each event as a JSON line, and when the server stops and a
/// new one starts on the same address and file, resumes by itself after the last one it
/// printed: every event once, in order.
#[tokio::test]
async fn watch_prints_every_event_once_and_resumes_by_itself_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("orders.db").display());
    let ports = |l: &std::net::TcpListener| l.local_addr().unwrap().port().to_string();
    let (http_port, grpc_port) = {
        let (h, g) = (
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        (ports(&h), ports(&g))
    };
    let env = [("PORT", http_port.as_str()), ("GRPC_PORT", grpc_port.as_str())];
    let server = Server::start(&db, &env).await.unwrap();
    let mut watchers: Vec<_> = ["http", "grpc"]
        .into_iter()
        .map(|protocol| {
            let addr = if protocol == "http" { &server.http } else { &server.grpc };
            let mut child = client(protocol, &format!("http://{addr}"))
                .args(["watch", "--after", "0"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let lines = BufReader::new(child.stdout.take().unwrap()).lines();
            (protocol, child, lines)
        })
        .collect();
    let place = |http: String| async move {
        client("http", &format!("http://{http}"))
            .arg("create")
            .output()
            .await
            .unwrap();
    };
    place(server.http.clone()).await; // created, then filled
    let (code, _) = server.stop().await.unwrap();
    assert_eq!(code, Some(0));
    let server = Server::start(&db, &env).await.unwrap();
    place(server.http.clone()).await;

    for (protocol, child, lines) in &mut watchers {
        let mut sequences = Vec::new();
        while sequences.len() < 4 {
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("{protocol}: got {sequences:?}"))
                .unwrap()
                .unwrap();
            let event: Value = serde_json::from_str(&line).unwrap();
            sequences.push((
                event["sequence"].as_u64().unwrap(),
                event["type"].as_str().unwrap().to_owned(),
            ));
        }
        let kinds: Vec<&str> = sequences.iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(kinds, ["created", "filled", "created", "filled"], "{protocol}");
        assert_eq!(
            sequences.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [1, 2, 3, 4],
            "{protocol}"
        );
        let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(0), "{protocol}: Ctrl+C ends a watch with 0");
    }
    server.stop().await.unwrap();
}
