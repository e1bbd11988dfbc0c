//! Wiring: settings → store → service → servers → shutdown plan. The one place that knows
//! every adapter. [`settings`] checks the command line before anything is acquired;
//! [`listeners`] takes the ports; [`Application::build`] opens the rest and
//! [`Application::run`] serves until the shutdown plan has run.

mod listeners;
mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use phased_shutdown::serve::{ConnectionLimits, Protocol, Server};
use phased_shutdown::{Phase, Report, Shutdown};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::adapter::inbound::grpc::{self, DescriptorError};
use crate::adapter::inbound::http;
use crate::adapter::inbound::middleware::admission::Limits;
use crate::adapter::inbound::middleware::api_keys::ApiKeysError;
use crate::adapter::outbound::simulated_price::SimulatedPrices;
use crate::adapter::outbound::store::{OpenError, Store};
use crate::config::{ConfigError, ServeArgs};
use crate::port::OrderService as _;
use crate::processor::{self, ProcessorConfig};
use crate::service::{OrderDesk, StorageState};
use crate::telemetry::metrics::{Prometheus, metrics};

use listeners::Sockets;
pub use listeners::{Port, listener};
pub use settings::{Settings, StoreSettings};

/// The phases of the shutdown plan, by the names the report, the log and the metrics use.
pub mod phases {
    /// HTTP and gRPC stop accepting and finish what they accepted.
    pub const STOP_SERVERS: &str = "stop servers";
    /// The order processor and the storage monitor stop.
    pub const STOP_WORKERS: &str = "stop workers";
    /// The database closes, last.
    pub const CLOSE_RESOURCES: &str = "close resources";
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened.
    #[error(transparent)]
    Database(#[from] OpenError),
    /// Opening the database took longer than `STARTUP_TIMEOUT`.
    #[error("the database {database} did not open within STARTUP_TIMEOUT ({timeout:?})")]
    DatabaseTimeout {
        /// What was being opened, without credentials.
        database: String,
        /// The limit.
        timeout: Duration,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen for {} on {addr}{}", port.protocol(), port.hint(source))]
    Bind {
        /// Which of the two ports.
        port: Port,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The gRPC services could not be built.
    #[error(transparent)]
    Grpc(#[from] DescriptorError),
    /// The sockets passed by the service manager cannot be used.
    #[error(transparent)]
    Activation(#[from] crate::lifecycle::activation::ActivationError),
    /// `API_KEYS` or `API_KEYS_FILE` is unusable.
    #[error(transparent)]
    ApiKeys(#[from] ApiKeysError),
}

/// A built, bound, not yet serving instance of the service.
pub struct Application {
    http_listener: TcpListener,
    http_addr: SocketAddr,
    grpc_listener: TcpListener,
    grpc_addr: SocketAddr,
    store: Store,
    desk: Arc<OrderDesk<Store>>,
    grpc: grpc::GrpcServices,
    settings: Settings,
    upgraded_from: Option<nix::unistd::Pid>,
}

/// The slice of the shutdown deadline kept for each phase after the servers, whatever the
/// servers take: workers finish the batch in hand, and closing the database commits queued
/// writes and checkpoints the WAL. Each needs a moment, not more.
fn reserve(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(1))
}

/// The shutdown coordinator for `args`, before the application exists: the binary creates it
/// first, so that signals are handled while the database opens. Same as
/// [`Application::shutdown`].
pub fn shutdown_for(args: &ServeArgs) -> Shutdown {
    plan(args.shutdown_timeout, args.shutdown_drain_delay)
}

fn plan(deadline: Duration, drain_delay: Duration) -> Shutdown {
    Shutdown::new()
        .deadline(deadline)
        .drain_delay(drain_delay)
        .on_entry(|entry| metrics().shutdown_entry(entry))
        .on_start(|_| metrics().shutdown_started())
}

/// The order store at `database_url` and the order service over it, as `serve` builds them
/// with its default settings (risk rules, pool size, timeouts, simulated prices, Prometheus
/// metrics), without servers or the processor: what a lesson or an embedding program needs to
/// serve orders its own way. Close the store last.
pub async fn open_desk(database_url: &str) -> Result<(Store, Arc<OrderDesk<Store>>), StartupError> {
    let rules = crate::config::ProcessorArgs::default().risk_rules()?;
    let store = open_store(&StoreSettings::defaults(database_url)?, None).await?;
    let desk = desk_over(&store, rules);
    Ok((store, desk))
}

/// Opens the store within `STARTUP_TIMEOUT`: the one way the service and the lessons open it.
/// `handed_lock` is the SQLite lock an in-place upgrade's old process passed on.
async fn open_store(
    settings: &StoreSettings,
    handed_lock: Option<std::os::fd::OwnedFd>,
) -> Result<Store, StartupError> {
    let (url, timeouts) = (&settings.url, settings.timeouts);
    tracing::info!(database = %url.describe(), timeout_s = timeouts.startup.as_secs_f64(), "opening the database");
    let store = tokio::time::timeout(
        // A little beyond PostgreSQL's own patience, which then reports the cause itself.
        timeouts.startup + timeouts.connect,
        Store::open(
            url,
            settings.pool_size,
            timeouts,
            settings.retention,
            handed_lock,
            Arc::new(Prometheus),
        ),
    )
    .await
    .map_err(|_| StartupError::DatabaseTimeout {
        database: url.describe(),
        timeout: timeouts.startup,
    })??;
    tracing::info!(database = %store.describe(), "database ready");
    Ok(store)
}

/// The order service over `store`: simulated prices, `rules`, Prometheus metrics.
fn desk_over(store: &Store, rules: crate::domain::RiskRules) -> Arc<OrderDesk<Store>> {
    Arc::new(OrderDesk::new(store.clone(), Arc::new(SimulatedPrices), rules).with_metrics(Arc::new(Prometheus)))
}

impl Application {
    /// Checks the settings, takes the ports, opens the database, then listens. After this
    /// returns the ports are known ([`Application::http_addr`], [`Application::grpc_addr`]) even
    /// when 0 was asked for.
    pub async fn build(args: &ServeArgs) -> Result<Self, StartupError> {
        let settings = Settings::from_args(args)?;
        // The ports first: a port in use must fail the start before the database is touched.
        let sockets = Sockets::take(settings.http_addr, settings.grpc_addr)?;
        // Started by an in-place upgrade: the old process passed its SQLite lock on, and may
        // still write to the same file until it exits (`duties` watches for that).
        let upgraded_from = crate::lifecycle::upgrade::upgraded_from();
        let handed_lock = crate::lifecycle::upgrade::handed_database_lock();
        let store = open_store(&settings.store, handed_lock).await?;
        let ((http_listener, http_addr), (grpc_listener, grpc_addr)) = sockets.listen()?;
        if upgraded_from.is_some() {
            store.other_process_writes(true);
        }
        let desk = desk_over(&store, settings.rules.clone());
        let grpc = grpc::services(Arc::clone(&desk))?;
        Ok(Self {
            http_listener,
            http_addr,
            grpc_listener,
            grpc_addr,
            store,
            desk,
            grpc,
            settings,
            upgraded_from,
        })
    }

    /// What a SIGHUP upgrade hands on: the listening sockets and the SQLite file's lock, to
    /// this binary (or `UPGRADE_BINARY`); the store told while both processes may write.
    fn upgrade(&self) -> std::io::Result<phased_shutdown::upgrade::Upgrade> {
        let mut upgrade = phased_shutdown::upgrade::Upgrade::new()
            .listener("http", &self.http_listener)?
            .listener("grpc", &self.grpc_listener)?;
        if let Some(binary) = &self.settings.upgrade_binary {
            upgrade = upgrade.binary(binary);
        }
        if let Some(fd) = self.store.database_lock_fd() {
            // SAFETY: the store holds its lock file open while it is open, which it is here;
            // the descriptor is duplicated at once.
            let lock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            upgrade = upgrade.pass_fd(crate::lifecycle::upgrade::DATABASE_LOCK, &lock)?;
        }
        let store = self.store.clone();
        Ok(upgrade.on_overlap(move |yes| store.other_process_writes(yes)))
    }

    /// This process's duties beside serving: upgrading in place on SIGHUP (the coordinator's,
    /// installed here, before the servers say they listen, so a SIGHUP sent as soon as they do
    /// upgrades instead of killing the process; it stops when the shutdown begins), and, in the
    /// new process of an upgrade, noticing when the old one has exited (owned by `run` and
    /// joined before it returns).
    fn duties(&self, shutdown: &mut Shutdown) -> JoinSet<()> {
        let mut duties = JoinSet::new();
        if let Err(e) = self.upgrade().and_then(|upgrade| shutdown.upgrade_on_sighup(upgrade)) {
            tracing::warn!(error = %e, "cannot handle SIGHUP: in-place upgrades are off");
        }
        if let Some(old) = self.upgraded_from {
            let store = self.store.clone();
            duties.spawn(async move {
                crate::lifecycle::upgrade::exited(old).await;
                store.other_process_writes(false);
                tracing::info!(old_pid = old.as_raw(), "the previous process has exited");
            });
        }
        duties
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// A shutdown coordinator with this configuration's deadline and drain delay. The binary
    /// adds signal handling; tests trigger it through its handle.
    pub fn shutdown(&self) -> Shutdown {
        plan(self.settings.shutdown_timeout, self.settings.drain_delay)
    }

    /// Serves HTTP and gRPC until `shutdown` is triggered, then follows the shutdown contract (docs/shutdown.md):
    ///
    /// 1. readiness off: `/ready` 503, gRPC health NOT_SERVING (`/health` stays 200);
    /// 2. the drain delay, still serving;
    /// 3. "stop servers": HTTP and gRPC together stop accepting, finish every accepted request
    ///    (see [`phased_shutdown::serve`]), bounded by the deadline minus a reserve for each later step;
    /// 4. "stop workers": the order processor finishes the batch in hand and stops;
    /// 5. "close resources": the database, last: queued writes committed, WAL checkpointed.
    ///
    /// Returns the report, already logged; when it is clean, every acknowledged order and
    /// every decision of the processor is in the database file.
    pub async fn run(self, mut shutdown: Shutdown) -> Report {
        let mut duties = self.duties(&mut shutdown);
        let [servers, workers, resources] = plan_phases(&mut shutdown, &self.settings);
        let readiness = shutdown.readiness();
        let Self {
            http_listener,
            http_addr,
            grpc_listener,
            grpc_addr,
            store,
            desk,
            grpc,
            settings,
            ..
        } = self;

        let router = http::router_with(Arc::clone(&desk), readiness.clone(), &settings.http);
        tracing::info!(event = "listening", protocol = "http", addr = %http_addr, "HTTP server listening");
        shutdown.serve(
            servers,
            "http server",
            Server::new(http_listener, router)
                .limits(settings.connection_limits)
                .readiness(readiness.clone()),
        );
        tracing::info!(event = "listening", protocol = "grpc", addr = %grpc_addr, "gRPC server listening");
        let limits = (&settings.http.limits, settings.connection_limits);
        serve_grpc(&mut shutdown, servers, grpc_listener, grpc, &desk, limits).await;
        spawn_workers(&mut shutdown, workers, &desk, settings.processor);
        shutdown.on_stop(resources, "database", move || async move { store.close().await });

        // systemd: started once both servers serve. The coordinator tells it STOPPING=1 and
        // each phase (phased-shutdown's feature `systemd`).
        crate::lifecycle::notify::notify_ready();

        let report = shutdown.run().await;
        duties.abort_all();
        while duties.join_next().await.is_some() {}
        report.log();
        report
    }
}

/// The three phases after the drain, each with its budget, and the budgets as metrics: the
/// servers get the deadline minus the drain delay and a reserve for each later phase.
fn plan_phases(shutdown: &mut Shutdown, settings: &Settings) -> [Phase; 3] {
    let reserve = reserve(settings.shutdown_timeout);
    let servers_budget = settings
        .shutdown_timeout
        .saturating_sub(settings.drain_delay)
        .saturating_sub(reserve * 2);
    let servers = shutdown.phase_with_budget(phases::STOP_SERVERS, servers_budget);
    let workers = shutdown.phase_with_budget(phases::STOP_WORKERS, reserve);
    let resources = shutdown.phase(phases::CLOSE_RESOURCES);
    for (phase, budget) in [
        ("drain", settings.drain_delay),
        (phases::STOP_SERVERS, servers_budget),
        (phases::STOP_WORKERS, reserve),
        // The last phase has no budget of its own: whatever is left of the deadline.
        ("total", settings.shutdown_timeout),
    ] {
        metrics().shutdown_phase_budget(phase, budget);
    }
    [servers, workers, resources]
}

/// Serves the gRPC `services` on `listener` in `phase`, behind the same middleware as the REST
/// API (`limits`: its request limits and both ports' connection limits), with gRPC health
/// following readiness and storage as `/ready` does: NOT_SERVING while storage fails, and for
/// good once draining. NOT_SERVING is queued before the server ends its streams, so a health
/// Watch sees it before its UNAVAILABLE even with no drain delay.
pub async fn serve_grpc(
    shutdown: &mut Shutdown,
    phase: Phase,
    listener: TcpListener,
    services: grpc::GrpcServices,
    desk: &OrderDesk<Store>,
    (limits, connection_limits): (&Limits, ConnectionLimits),
) {
    let readiness = shutdown.readiness();
    let server = Server::new(listener, grpc::server_with(services.routes, limits))
        .protocol(Protocol::Grpc)
        .limits(connection_limits)
        .readiness(readiness.clone());
    let health = services.health;
    health.set(desk.can_write()).await;
    let mut storage = desk.storage().subscribe();
    shutdown.spawn(phase, "grpc server", move |stop| async move {
        let unready = async {
            loop {
                let writing = *storage.borrow_and_update() == StorageState::Writing;
                health.set(writing).await;
                tokio::select! {
                    () = readiness.draining() => break,
                    changed = storage.changed() => if changed.is_err() { break },
                }
            }
            health.set(false).await;
            std::future::pending::<std::convert::Infallible>().await
        };
        let stopping = async {
            stop.stopped().await;
            health.set(false).await;
        };
        let served = tokio::select! {
            served = server.run(stopping) => served,
            never = unready => match never {},
        };
        served.report_to(&stop)
    });
}

/// The order processor, and the storage monitor that probes storage while it fails (so
/// readiness returns without client traffic) and ends the service only if the database is
/// corrupt.
fn spawn_workers(shutdown: &mut Shutdown, phase: Phase, desk: &Arc<OrderDesk<Store>>, config: ProcessorConfig) {
    let processor_desk = Arc::clone(desk);
    shutdown.spawn(phase, "order processor", move |stop| {
        processor::run(processor_desk, config, stop.into_future())
    });
    let desk = Arc::clone(desk);
    shutdown.spawn(phase, "storage monitor", move |stop| async move {
        desk.watch_storage(stop.into_future()).await
    });
}
