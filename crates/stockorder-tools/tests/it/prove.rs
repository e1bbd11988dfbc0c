//! `stockorder-tools prove` against each target: it must call demo_2 broken (exit 1) and the others
//! sound (exit 0, nothing failed, nothing lost), with numbers that match the server's own log.

use std::path::Path;

use serde_json::Value;

/// The texts of a timeline, read back from the SVG as XML. A mark's entry in the list under
/// the chart (`3  listeners closed  1.016 s`) is also given as its label alone.
fn marks(svg: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the timeline is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_owned())
        .collect();
    let labels: Vec<String> = texts
        .iter()
        .filter_map(|t| {
            let mut parts = t.split("  ");
            let number = parts.next()?;
            let label = parts.next()?;
            number.parse::<u32>().is_ok().then(|| label.to_owned())
        })
        .collect();
    texts.into_iter().chain(labels).collect()
}

async fn prove(target: &str, svg: &Path) -> (Option<i32>, Value) {
    prove_with(target, svg, &[]).await
}

/// `stockorder-tools prove --target <target>` with 16 clients, the signal after 1 s, and `extra`
/// arguments.
async fn prove_with(target: &str, svg: &Path, extra: &[&str]) -> (Option<i32>, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder-tools"))
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
        .args(extra)
        .env("SHUTDOWN_DRAIN_DELAY", "0s")
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
        t["server_logged_acks"], t["acknowledged"],
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
        "acknowledged",
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

#[tokio::test]
async fn grpc_clients_see_the_same_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let svg = |name: &str| dir.path().join(format!("{name}.svg"));
    let (serve_svg, demo_svg) = (svg("serve"), svg("demo_3"));
    let ((serve_code, serve), (demo_code, demo_3)) = tokio::join!(
        prove_with("serve", &serve_svg, &["--protocol", "grpc"]),
        prove_with("demo_3", &demo_svg, &["--protocol", "grpc"]),
    );
    assert_sound("serve over gRPC", serve_code, &serve);
    // demo_3 serves gRPC as `serve` does, its request log included.
    assert_sound("demo_3 over gRPC", demo_code, &demo_3);
}

#[tokio::test]
async fn any_command_can_be_proved_and_a_second_signal_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let server = stockorder_tools::process::sibling("stockorder").unwrap();
    let me = server.to_str().unwrap();
    // An arbitrary command: told its port in PORT, ready when the port accepts connections.
    let (code, t) = prove_with("command", &dir.path().join("cmd.svg"), &["--", me, "serve"]).await;
    assert_sound("command", code, &t);

    // The impatient operator: with a 5 s drain delay the first SIGTERM leaves the server
    // serving; the second one, 300 ms later, must end it at once with 143 (128 + SIGTERM).
    let (code, t) = prove_with(
        "command",
        &dir.path().join("twice.svg"),
        &[
            "--second-signal-after",
            "300ms",
            "--",
            "env",
            "SHUTDOWN_DRAIN_DELAY=5s",
            me,
            "serve",
        ],
    )
    .await;
    assert_eq!(t["exit_code"], 143, "{t}");
    assert_eq!(t["signalled_twice"], true, "{t}");
    assert!(
        t["exit_at_s"].as_f64().unwrap() - t["signal_at_s"].as_f64().unwrap() < 2.0,
        "{t}"
    );
    assert_eq!(t["lost"], 0, "a 143 exit still loses nothing acknowledged: {t}");
    let held = t["failed"] == 0 && t["unacknowledged"] == 0;
    assert_eq!(code, Some(if held { 0 } else { 1 }), "{t}");
}

#[tokio::test]
async fn prove_says_what_is_wrong_with_its_arguments() {
    let run = |args: &'static [&'static str]| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder-tools"))
            .arg("prove")
            .args(args)
            .output()
            .await
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--target", "command"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("needs the command after `--`"), "{err}");
    let (code, err) = run(&["--target", "demo_1", "--protocol", "grpc"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("serves HTTP only"), "{err}");
}

#[tokio::test]
async fn in_place_upgrades_refuse_and_fail_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("upgrades.svg");
    let (code, t) = prove_with(
        "serve",
        &svg,
        &["--upgrade-every", "300ms", "--upgrades", "5", "--protocol", "grpc"],
    )
    .await;
    assert_eq!(t["upgrades"], 5, "{t}");
    assert_eq!(
        t["refused_before_signal"], 0,
        "nothing refused during the upgrades: {t}"
    );
    assert_sound("serve with upgrades", code, &t);
    let marks = marks(&svg);
    assert!(
        marks.iter().any(|m| m.contains("  SIGHUP  5 times")),
        "the five upgrades are one entry, counted: {marks:?}"
    );
}

/// `--watchers 8`: on serve and on demo_3 each follower of the event stream gets every event of
/// the log once and in order, resuming on the process that reads the database back, and the
/// verdict holds.
#[tokio::test]
async fn followers_of_the_event_stream_miss_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svg = |name: &str| dir.path().join(format!("{name}.svg"));
    let (serve_svg, demo_svg) = (svg("serve"), svg("demo_3"));
    let ((serve_code, serve), (demo_code, demo_3)) = tokio::join!(
        prove_with("serve", &serve_svg, &["--watchers", "8"]),
        prove_with("demo_3", &demo_svg, &["--watchers", "8"]),
    );
    for (target, code, t) in [("serve", serve_code, &serve), ("demo_3", demo_code, &demo_3)] {
        assert_eq!(code, Some(0), "{target}: {t}");
        let events = &t["events"];
        assert_eq!(events["watchers"], 8, "{target}: {t}");
        let expected = events["expected"].as_u64().unwrap();
        assert!(
            expected >= t["acknowledged"].as_u64().unwrap(),
            "a created event per order: {t}"
        );
        assert_eq!(events["received"].as_u64().unwrap(), 8 * expected, "{target}: {t}");
        for fault in ["missing", "repeated", "out_of_order"] {
            assert_eq!(events[fault], 0, "{target}: {fault}: {t}");
        }
        assert_eq!(
            events["reconnects"], 8,
            "{target}: each stream ended at the signal and resumed: {t}"
        );
    }
}
