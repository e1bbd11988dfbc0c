//! `stockorder prove` against each target: it must call demo_2 broken (exit 1) and the others
//! sound (exit 0, nothing failed, nothing lost), with numbers that match the server's own log.

use serde_json::Value;

async fn prove(target: &str) -> (Option<i32>, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder"))
        .args([
            "prove",
            "--target",
            target,
            "--concurrency",
            "16",
            "--signal-after",
            "1s",
        ])
        .args(["--demo-sleep-scale", "0.1", "--json"])
        .output()
        .await
        .unwrap();
    let tally: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{target}: no JSON tally; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("{target}: {tally}");
    (out.status.code(), tally)
}

fn assert_sound(target: &str, code: Option<i32>, t: &Value) {
    assert_eq!(t["failed"], 0, "{target}: {t}");
    assert_eq!(t["lost"], 0, "{target}: {t}");
    assert_eq!(t["unacknowledged"], 0, "{target}: {t}");
    assert_eq!(t["exit_code"], 0, "{target}: {t}");
    assert!(t["acknowledged"].as_u64().unwrap() > 0, "{target}: {t}");
    assert_eq!(
        t["server_logged_201"], t["acknowledged"],
        "{target}: the server's log agrees"
    );
    assert_eq!(code, Some(0), "{target}");
}

#[tokio::test]
async fn serve_and_demos_1_and_3_hold_and_demo_2_fails() {
    let (serve, demo_1, demo_2, demo_3) =
        tokio::join!(prove("serve"), prove("demo_1"), prove("demo_2"), prove("demo_3"));
    assert_sound("serve", serve.0, &serve.1);
    assert_sound("demo_1", demo_1.0, &demo_1.1);
    assert_sound("demo_3", demo_3.0, &demo_3.1);

    let (code, t) = demo_2;
    assert_eq!(code, Some(1), "prove exits non-zero for demo_2: {t}");
    assert!(t["failed"].as_u64().unwrap() > 10, "{t}");
    assert!(t["outcomes"]["HTTP 503"].as_u64().unwrap() > 10, "{t}");
    assert_eq!(t["lost"], 0, "nothing acknowledged is lost even there: {t}");
    assert_eq!(t["exit_code"], 0, "and the demo itself exits 0, unaware: {t}");
}
