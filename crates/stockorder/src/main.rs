//! The `stockorder` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use stockorder::app::Application;
use stockorder::config::{Cli, Command};

/// Errors end here: printed once with their causes (`error: cannot listen for HTTP on …: …`)
/// and exit code 1, without the backtrace `anyhow` would add under `RUST_BACKTRACE`, since every
/// error that reaches this point is an expected one with a message for the user.
fn main() -> ExitCode {
    // Before any thread exists, so every thread inherits it.
    stockorder::lifecycle::signals::hold_termination();
    // SAFETY: first thing in main, before the runtime or any other thread exists.
    unsafe { phased_shutdown::upgrade::adopt_env() };
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let _log = stockorder::telemetry::init(&cli.log);
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
    }
}

/// Serves until SIGINT/SIGTERM, then shuts down; exit code 0 when every component stopped
/// cleanly in time, 1 when the report names stragglers or failures, 128 + the signal's number
/// (130, 143) when a second signal cut the shutdown short.
async fn serve(args: stockorder::config::ServeArgs) -> anyhow::Result<ExitCode> {
    match raise_open_file_limit() {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit; keeping the current one"),
    }
    // Signals count from here: one sent while the database opens ends start-up at once.
    let mut shutdown = stockorder::app::shutdown_for(&args).catch_signals()?;
    stockorder::lifecycle::signals::release_termination();
    let app = match shutdown.unless_triggered(Application::build(&args)).await {
        Ok(app) => app?,
        Err(reason) => {
            tracing::warn!(reason = %reason, "stopped during start-up, before serving anything");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let report = app.run(shutdown).await;
    Ok(ExitCode::from(report.exit_code()))
}

/// Raises this process's soft limit on open files to its hard limit, and returns the limit now
/// in force.
///
/// Why: every connection is a file descriptor, and the usual soft limit (1024) is less than
/// what 1000 slow clients plus the real ones need; past it, `accept` fails and new clients wait.
/// The hard limit is what the administrator allows; Go's runtime raises the soft limit the same
/// way at start-up. (Nothing here uses `select(2)`, the one API that breaks above 1024.)
fn raise_open_file_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

// mimalloc: glibc's malloc and free were a measurable share of a request's CPU. Built with
// `no_thp`: transparent huge pages would back its first arena with 2 MiB pages and double the
// idle RSS. (Figures in docs/performance.md.)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
