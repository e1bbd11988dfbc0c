//! What the three demos (`examples/demo_*.rs`) share and is not their lesson: a command line of
//! their own (only the options they honour, `--help` saying what the lesson shows) and errors
//! reported the way `stockorder serve` reports them.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;

use crate::app::{Port, StartupError};
use crate::config::LogArgs;

/// The options every demo takes.
#[derive(Debug, Args)]
pub struct LessonArgs {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// HTTP port; 0 picks a free one (the log says which).
    #[arg(long, env = "PORT", default_value_t = 8082)]
    pub port: u16,

    /// Where orders are stored, as for `stockorder serve`: `sqlite://PATH`, a plain path, or
    /// `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://stock_orders.db")]
    pub database_url: String,

    /// Scales the lesson's pauses (the original's 1 s, 2 s, 5 s and 10 s, there so a person can
    /// watch the order of events): 0 skips them, 0.1 runs ten times faster.
    #[arg(long, env = "DEMO_SLEEP_SCALE", default_value_t = 1.0, value_parser = non_negative)]
    pub sleep_scale: f64,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

fn non_negative(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("{text:?} is not a non-negative number"))
}

impl LessonArgs {
    /// The lesson's pause: `pause(2.0)` sleeps the original's 2 s, scaled by
    /// `DEMO_SLEEP_SCALE`. A `Copy` closure, to move into stop functions.
    pub fn pacer(&self) -> impl Fn(f64) -> tokio::time::Sleep + Copy + Send + Sync + 'static {
        let scale = self.sleep_scale;
        move |secs| tokio::time::sleep(Duration::from_secs_f64(secs * scale))
    }

    /// The HTTP listener. Take it before opening the database: a port in use then leaves
    /// nothing on disk, and is reported as `serve` reports it (which variable to change).
    pub fn http_listener(&self) -> Result<TcpListener, StartupError> {
        crate::app::listener(Port::Http, SocketAddr::new(self.host, self.port))
    }
}

/// Runs a demo: `demo` on a multi-threaded runtime, its error (if any) printed once with its
/// causes and exit code 1, without the backtrace `anyhow` would add under `RUST_BACKTRACE`:
/// every error that reaches here is one the user can act on.
pub fn run<F>(demo: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<ExitCode>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
