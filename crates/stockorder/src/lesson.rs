//! What the three demos (`examples/demo_*.rs`) share and is not their lesson: a command line of
//! their own (only the options they honour, `--help` saying what the lesson shows) and errors
//! reported the way `stockorder serve` reports them.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::net::TcpListener;

use crate::adapter::outbound::store::Store;
use crate::app::{Port, StartupError};
use crate::config::LogArgs;
use crate::service::OrderDesk;
use crate::telemetry::LogGuard;

/// The options of the demo that uses the coordinator (demo_3): the gRPC port and the shutdown's
/// bounds, as `serve` takes them.
#[derive(Debug, Args)]
pub struct CoordinatedArgs {
    /// gRPC port; 0 picks a free one (the log says which).
    #[arg(long, env = "GRPC_PORT", default_value_t = 50051)]
    pub grpc_port: u16,

    /// Longest the shutdown may take, from the signal to exit; what is still running then is
    /// aborted and named, and the exit code is 1.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = crate::config::parse_duration)]
    pub shutdown_timeout: Duration,

    /// How long to keep serving after the signal with readiness already off.
    #[arg(long, env = "SHUTDOWN_DRAIN_DELAY", default_value = "0s", value_parser = crate::config::parse_duration)]
    pub shutdown_drain_delay: Duration,
}

/// What every demo starts from, made by [`LessonArgs::setup`]: logging on, the HTTP port
/// taken, the order store open and the order service over it.
pub struct Setup {
    /// The HTTP listener, listening.
    pub listener: TcpListener,
    /// The order store: what the lesson closes, in the right order or not.
    pub store: Store,
    /// The order service, for the REST (and gRPC) API.
    pub service: Arc<OrderDesk<Store>>,
    /// Keeps the log writer running until the demo returns.
    pub log: LogGuard,
}

/// Logs a step of the shutdown with the time since the signal: `[+5.0s] closing the database`.
#[derive(Debug, Clone, Copy)]
pub struct Marks(Instant);

impl Marks {
    /// Counting from now (the signal).
    pub fn since_now() -> Self {
        Self(Instant::now())
    }

    /// Logs `step` as `event` (the JSON log's key, which the tests and the tools read).
    pub fn mark(&self, event: &str, step: &str) {
        tracing::info!(event, "[+{:.1}s] {step}", self.0.elapsed().as_secs_f64());
    }
}

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

    /// Logging, then the port (a port in use leaves nothing on disk), then the database and
    /// the order service over it, opened as `serve` opens them.
    pub async fn setup(&self) -> Result<Setup, StartupError> {
        let log = crate::telemetry::init(&self.log);
        let listener = self.http_listener()?;
        let (store, service) = crate::app::open_desk(&self.database_url).await?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(event = "listening", protocol = "http", %addr, "HTTP server listening");
        }
        Ok(Setup {
            listener,
            store,
            service,
            log,
        })
    }
}

/// Serves the gRPC API over `service` on `listener` in `phase`, as `serve` does (its
/// middleware, and health following `/ready` and storage), with the default limits.
pub async fn serve_grpc(
    shutdown: &mut phased_shutdown::Shutdown,
    phase: phased_shutdown::Phase,
    listener: TcpListener,
    service: &Arc<OrderDesk<Store>>,
) -> Result<(), StartupError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(event = "listening", protocol = "grpc", %addr, "gRPC server listening");
    }
    let services = crate::adapter::inbound::grpc::services(Arc::clone(service))?;
    let limits = (&Default::default(), Default::default());
    crate::app::serve_grpc(shutdown, phase, listener, services, service, limits).await;
    Ok(())
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
