//! Interop: the seed README's grpcurl commands, run by a client that is not ours. The client is
//! `tests/interop/grpcurl.py`, built on the reference gRPC implementation (Python `grpcio`) and
//! knowing the API only through server reflection. Skipped, with the reason printed, where
//! Python or its gRPC packages are missing (`.ci/run` installs them).

use std::path::Path;
use std::process::Output;

use crate::common::ServerProcess;
use nix::sys::signal::Signal;
use serde_json::Value;

const GRPCURL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/grpcurl.py");

/// Runs the Python client; `None` (with the reason printed) when it cannot run here.
async fn grpcurl(args: &[&str]) -> Option<Output> {
    let output = match tokio::process::Command::new("python3")
        .arg(GRPCURL)
        .args(args)
        .output()
        .await
    {
        Ok(output) => output,
        Err(e) => {
            crate::common::skip(format_args!(
                "python3 cannot be started ({e}); install Python 3 to run the interop test"
            ));
            return None;
        }
    };
    if output.status.code() == Some(3) {
        crate::common::skip(format_args!("{}", String::from_utf8_lossy(&output.stderr).trim()));
        return None;
    }
    Some(output)
}

fn stdout_json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

#[tokio::test]
async fn seed_readme_grpcurl_commands_work_through_reflection() {
    assert!(Path::new(GRPCURL).exists());
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("orders.db"), &[]).await;
    let addr = server.grpc_addr.to_string();

    // grpcurl -plaintext localhost:50051 list
    let Some(list) = grpcurl(&["-plaintext", &addr, "list"]).await else {
        return;
    };
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let services = String::from_utf8(list.stdout).unwrap();
    for expected in ["stockorder.StockOrderService", "grpc.health.v1.Health"] {
        assert!(
            services.lines().any(|l| l == expected),
            "{expected} not in:\n{services}"
        );
    }

    // The README's create, byte for byte.
    let body = r#"{
  "symbol": "AAPL",
  "order_type": "MARKET",
  "order_side": "BUY",
  "quantity": 100
}"#;
    let method = "stockorder.StockOrderService/CreateOrder";
    let created = stdout_json(&grpcurl(&["-plaintext", "-d", body, &addr, method]).await.unwrap());
    assert_eq!(created["symbol"], "AAPL");
    assert_eq!(created["orderType"], "MARKET");
    assert_eq!(created["orderSide"], "BUY");
    assert_eq!(created["quantity"], 100);
    assert_eq!(created["status"], "PENDING");
    let id = created["id"].as_str().unwrap();

    let method = "stockorder.StockOrderService/ListOrders";
    let listed = stdout_json(&grpcurl(&["-plaintext", "-d", "{}", &addr, method]).await.unwrap());
    assert_eq!(listed["orders"][0]["id"], id);

    // The same order over REST.
    let rest: Value = reqwest::get(server.url(&format!("/api/orders/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["id"], id);

    let check = r#"{"service": "stockorder.StockOrderService"}"#;
    let health = stdout_json(
        &grpcurl(&["-plaintext", "-d", check, &addr, "grpc.health.v1.Health/Check"])
            .await
            .unwrap(),
    );
    assert_eq!(health["status"], "SERVING");

    // A client mistake: INVALID_ARGUMENT (3) naming the field; grpcurl exits 64 + code.
    let bad = r#"{"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY", "quantity": 1}"#;
    let method = "stockorder.StockOrderService/CreateOrder";
    let refused = grpcurl(&["-plaintext", "-d", bad, &addr, method]).await.unwrap();
    assert_eq!(refused.status.code(), Some(64 + 3));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("price"),
        "{stderr}"
    );

    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
}
