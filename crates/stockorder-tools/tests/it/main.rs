//! The tools' integration tests, as one test binary: each tool run as a user runs it, against
//! a real `stockorder` process (built beside this binary by `cargo test --workspace`).

mod client;
mod docs;
mod live;
mod load;
mod prove;
mod rolling_restart;

use std::path::{Path, PathBuf};

/// The repository's root, where the docs and `deploy/` are.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The PostgreSQL the tests may use: `TEST_DATABASE_URL`, else `DATABASE_URL`, when it is a
/// `postgres://` (or `postgresql://`) URL.
pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

/// Where `program` is on `PATH`, if it is installed.
pub fn installed(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Says that the running test cannot run here, and why (with what would enable it); the caller
/// then returns. Written past the test harness's output capture, so a plain `cargo test` shows
/// the line although the test counts as passed. With `STOCKORDER_REQUIRE_ALL_TESTS` set
/// (`.ci/run` sets it, and provides PostgreSQL, HAProxy and the Python clients), a skip is a
/// failure instead: there it would be a broken set-up passing as green.
pub fn skip(why: impl std::fmt::Display) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    assert!(
        std::env::var_os("STOCKORDER_REQUIRE_ALL_TESTS").is_none(),
        "{test} cannot run here: {why} (STOCKORDER_REQUIRE_ALL_TESTS is set, so that is a failure)"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("skipped {test}: {why}\n").as_bytes());
}
