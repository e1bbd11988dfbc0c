//! The fault suite, a test binary of its own: storage that fails and comes back, start-up
//! faults, malformed gRPC, 2000 connections, and a rolling restart across network namespaces.
//! Its heavy tests take turns ([`heavy`]) and share the machine with nothing else, since two
//! of them at once on two cores would measure each other. (About 75 s.)

#[path = "../it/common/mod.rs"]
mod common;

mod fault_hosts;
mod faults;

/// The tests that put load on the machine and time recovery run one at a time.
/// (An async mutex: each test has a runtime of its own, and the guard lives across awaits.)
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for this test's turn among the heavy ones.
async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}
