//! `stockorder prove` against each target: it must call demo_2 broken (exit 1) and the others
//! sound (exit 0, nothing failed, nothing lost), with numbers that match the server's own log.

use std::path::Path;

use serde_json::Value;

/// The marks drawn on a timeline, read back from the SVG as XML.
fn marks(svg: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the timeline is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_owned())
        .collect()
}

async fn prove(target: &str, svg: &Path) -> (Option<i32>, Value) {
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
        .args(["--demo-sleep-scale", "0.1", "--json", "--svg"])
        .arg(svg)
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
    let dir = tempfile::tempdir().unwrap();
    let svg = |name: &str| dir.path().join(format!("{name}.svg"));
    let paths = ["serve", "demo_1", "demo_2", "demo_3"].map(svg);
    let (serve, demo_1, demo_2, demo_3) = tokio::join!(
        prove("serve", &paths[0]),
        prove("demo_1", &paths[1]),
        prove("demo_2", &paths[2]),
        prove("demo_3", &paths[3])
    );
    assert_sound("serve", serve.0, &serve.1);
    assert_sound("demo_1", demo_1.0, &demo_1.1);
    assert_sound("demo_3", demo_3.0, &demo_3.1);

    let (code, t) = demo_2;
    assert_eq!(code, Some(1), "prove exits non-zero for demo_2: {t}");
    assert!(t["failed"].as_u64().unwrap() > 10, "{t}");
    assert!(t["outcomes"]["HTTP 503"].as_u64().unwrap() > 10, "{t}");
    assert_eq!(t["lost"], 0, "nothing acknowledged is lost even there: {t}");
    assert_eq!(t["exit_code"], 0, "and the demo itself exits 0, unaware: {t}");

    let serve_marks = marks(&svg("serve"));
    for mark in [
        "SIGTERM",
        "unready",
        "listeners closed",
        "database closed",
        "exit",
        "acknowledged (201)",
    ] {
        assert!(
            serve_marks.iter().any(|m| m == mark),
            "serve timeline lacks {mark:?}: {serve_marks:?}"
        );
    }
    let demo_2_marks = marks(&svg("demo_2"));
    for mark in ["SIGTERM", "database closed", "listeners closed", "exit", "failed"] {
        assert!(
            demo_2_marks.iter().any(|m| m == mark),
            "demo_2 timeline lacks {mark:?}: {demo_2_marks:?}"
        );
    }
}
