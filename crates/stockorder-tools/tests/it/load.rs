//! `stockorder-tools load` as a user runs it: the real binary against a real server, over HTTP
//! and gRPC, by request count and at a fixed rate.

use serde_json::Value;
use stockorder_tools::service::Server;

/// A server with a fresh database and no processor, and the directory that holds it.
async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("orders.db").display());
    (Server::start(&db, &[("PROCESSOR_WORKERS", "0")]).await.unwrap(), dir)
}

/// Runs `stockorder-tools load` with `args` and `--json`, and returns its summary.
async fn load(args: &[&str]) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder-tools"))
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("load --json prints one JSON object")
}

#[tokio::test]
async fn the_mixed_scenario_sends_its_mix_over_both_protocols() {
    let (app, _dir) = server().await;
    let (http, grpc) = (app.http.clone(), app.grpc.clone());
    for args in [vec!["--addr", &http], vec!["--addr", &grpc, "--protocol", "grpc"]] {
        let mut args = args.clone();
        args.extend(["--scenario", "mixed", "-c", "8", "-n", "500", "--seed-orders", "20"]);
        let s = load(&args).await;
        assert_eq!(s["requests"], 500, "{s}");
        assert_eq!(s["failed"], 0, "every request of the mix succeeds: {s}");
        // 2 in 10 place an order, 1 in 10 lists, the rest read one.
        assert_eq!(s["by_call"]["create"]["requests"], 100, "{s}");
        assert_eq!(s["by_call"]["list"]["requests"], 50, "{s}");
        assert_eq!(s["by_call"]["get"]["requests"], 350, "{s}");
    }
    // The creates (20 seeded per run, 100 in each mix) are all stored.
    let list: Vec<Value> = reqwest::get(format!("http://{http}/api/orders?limit=1000"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 240);
}

#[tokio::test]
async fn a_fixed_rate_sends_exactly_its_schedule() {
    let (app, _dir) = server().await;
    let addr = app.http.clone();
    // 200/s for 1 s: requests are planned at 0, 5, …, 995 ms, so exactly 200 are sent, however
    // fast the server answers.
    let s = load(&[
        "--addr",
        &addr,
        "--scenario",
        "health",
        "--rate",
        "200",
        "-d",
        "1s",
        "-c",
        "4",
    ])
    .await;
    assert_eq!(s["requests"], 200, "{s}");
    assert_eq!(s["ok"], 200, "{s}");
    let rate = s["rate"].as_f64().unwrap();
    assert!(rate <= 205.0, "an open loop does not run ahead of its schedule: {s}");
}

#[tokio::test]
async fn bad_load_arguments_are_refused_with_a_reason() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder-tools"))
        .args(["load", "--rate=-5"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rate"), "{err}");
}

/// `--addr` takes a URL as the clients do; a run in which every request failed exits 1 and
/// names the address it tried.
#[tokio::test]
async fn a_url_is_an_address_and_a_run_that_fails_everything_exits_1() {
    let (app, _dir) = server().await;
    let grpc = format!("http://{}", app.grpc);
    let s = load(&[
        "--addr",
        &grpc,
        "--protocol",
        "grpc",
        "--scenario",
        "health",
        "-n",
        "20",
        "-c",
        "2",
    ])
    .await;
    assert_eq!(s["ok"], 20, "{s}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder-tools"))
        .args(["load", "--addr", &addr, "--scenario", "health", "-n", "5", "-c", "1"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "all 5 requests failed; is a stockorder server listening at {addr}"
        )),
        "{stderr}"
    );
}
