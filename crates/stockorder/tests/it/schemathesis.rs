//! Property-based fuzzing of the REST API from its own OpenAPI document: schemathesis (PyPI)
//! generates valid and invalid requests from `/openapi.json` of the real binary and runs all of
//! its default checks (no server errors, answers that match the documented schemas, status
//! codes and headers, invalid input refused, valid input accepted, 405 with `Allow`…). Skipped,
//! with the reason printed, where schemathesis is not installed (`.ci/run` installs it).

use std::path::Path;

use crate::common::ServerProcess;

const KEY: &str = "schemathesis-key-0123456789";

/// Its command-line entry point, for when pip put the `schemathesis` script somewhere not on
/// `PATH` (a user install, an unhashed pyenv).
const VIA_PYTHON: &str =
    "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; schemathesis()";

/// Runs schemathesis against `server`; `None` when it is not installed.
/// Runs in `workdir`, where schemathesis keeps its cache (`.schemathesis/`), so a test run
/// writes nothing into the source tree.
async fn schemathesis(server: &ServerProcess, workdir: &Path, extra: &[&str]) -> Option<std::process::Output> {
    let spec = server.url("/openapi.json");
    // The event stream is left out: a valid request is an endless stream, which schemathesis'
    // 10 s request timeout counts as a server that stopped responding (several in a row end its
    // run). Its answers to bad input are tested in `events`.
    let args = [
        "run",
        &spec,
        "--max-examples",
        "100",
        "--no-color",
        "--exclude-path",
        "/api/orders/events",
    ];
    let script = tokio::process::Command::new("schemathesis")
        .current_dir(workdir)
        .args(args)
        .args(extra)
        .output()
        .await;
    if let Ok(output) = script {
        return Some(output);
    }
    let module = tokio::process::Command::new("python3")
        .current_dir(workdir)
        .args(["-c", VIA_PYTHON])
        .args(args)
        .args(extra)
        .output()
        .await;
    match module {
        Ok(output) if !String::from_utf8_lossy(&output.stderr).contains("ModuleNotFoundError") => Some(output),
        _ => {
            crate::common::skip(format_args!(
                "schemathesis is not installed; `pip install schemathesis` (or .ci/run) to run this test"
            ));
            None
        }
    }
}

fn assert_passed(output: &std::process::Output) {
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("No issues found"), "{report}");
}

#[tokio::test]
async fn schemathesis_finds_nothing_against_the_live_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("orders.db"), &[]).await;
    let Some(output) = schemathesis(&server, dir.path(), &[]).await else {
        return;
    };
    assert_passed(&output);
}

#[tokio::test]
async fn schemathesis_finds_nothing_with_api_keys_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("orders.db"), &[("API_KEYS", KEY)]).await;
    let auth = format!("Authorization: Bearer {KEY}");
    // With a key, and with the checks that requests without one are refused (ignored_auth).
    let Some(output) = schemathesis(&server, dir.path(), &["-H", &auth]).await else {
        return;
    };
    assert_passed(&output);
}
