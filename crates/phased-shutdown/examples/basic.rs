//! A worker, a "server" and a resource, shut down in order on Ctrl+C (or after 3 s).
//!
//! Run: `cargo run -p phased-shutdown --example basic`, then press Ctrl+C (twice to exit at once).

use std::time::Duration;

use phased_shutdown::Shutdown;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut shutdown = Shutdown::new()
        .deadline(Duration::from_secs(5))
        .drain_delay(Duration::from_millis(500))
        .catch_signals()?;
    let servers = shutdown.phase("stop servers");
    let workers = shutdown.phase_with_budget("stop workers", Duration::from_secs(1));
    let resources = shutdown.phase("close resources");
    let readiness = shutdown.readiness();

    shutdown.spawn(servers, "server", move |stop| async move {
        let mut served = 0u32;
        loop {
            tokio::select! {
                () = stop.stopped() => break,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    served += 1;
                    println!("server: request {served} answered (ready: {})", readiness.is_ready());
                }
            }
        }
        println!("server: stopped after {served} requests");
    });
    shutdown.spawn(workers, "worker that ignores its stop", |_stop| async {
        std::future::pending::<()>().await; // aborted at its phase budget, and named
    });
    shutdown.on_stop(resources, "database", || async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        println!("database: flushed and closed");
    });

    // Also stop by ourselves after 3 s, for a run without a terminal.
    let handle = shutdown.handle();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        handle.shutdown("example timer");
    });

    // (A real service installs a `tracing` subscriber to see the coordinator's log lines and
    // `Report::log`; this example prints the report as a table.)
    let report = shutdown.run().await;
    timer.abort();
    let _ = timer.await;
    println!("\n{report}");
    std::process::exit(report.exit_code().into());
}
