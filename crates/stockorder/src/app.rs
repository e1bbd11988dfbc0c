//! Wiring: configuration → repository → service → servers → shutdown plan. The one place that
//! knows every adapter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use graceful::{Report, Shutdown};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceBuilder;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::adapter::inbound::grpc::{self, DescriptorError};
use crate::adapter::inbound::http;
use crate::adapter::inbound::middleware::access_log::LogResponse;
use crate::adapter::inbound::middleware::admission::{AdmissionLayer, Limits};
use crate::adapter::inbound::middleware::api_keys::{ApiKeys, ApiKeysError};
use crate::adapter::inbound::middleware::observe::ObserveLayer;
use crate::adapter::inbound::middleware::request_id;
use crate::adapter::outbound::simulated_price::SimulatedPrices;
use crate::adapter::outbound::store::{OpenError, Store};
use crate::config::{DatabaseUrl, ServeArgs};
use crate::lifecycle::upgrade::Upgrader;
use crate::port::OrderService as _;
use crate::processor::{self, ProcessorConfig};
use crate::service::{OrderDesk, StorageState};
use crate::telemetry::metrics::{Prometheus, metrics};
use graceful::serve::{ConnectionLimits, Protocol, Server};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `DATABASE_URL` names no store this build can use.
    #[error("invalid DATABASE_URL: {0}")]
    DatabaseUrl(String),
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
    shutdown_timeout: Duration,
    drain_delay: Duration,
    processor: ProcessorConfig,
    http_options: http::Options,
    connection_limits: ConnectionLimits,
    upgrade_binary: Option<std::path::PathBuf>,
    upgraded_from: Option<nix::unistd::Pid>,
}

/// The kernel's cap on a listen backlog (`net.core.somaxconn`), so a burst of connections
/// waits in the accept queue instead of being dropped (and retried by the client a second
/// later). 4096 on current Linux; tokio's own default is 1024.
fn listen_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// The service's two ports, for saying which one a problem is with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The REST API's.
    Http,
    /// The gRPC API's.
    Grpc,
}

impl Port {
    fn protocol(self) -> &'static str {
        match self {
            Port::Http => "HTTP",
            Port::Grpc => "gRPC",
        }
    }

    /// What to do about `error`, when there is something to say.
    fn hint(self, error: &std::io::Error) -> String {
        let setting = match self {
            Port::Http => "PORT (or --port)",
            Port::Grpc => "GRPC_PORT (or --grpc-port)",
        };
        match error.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!(": the port is in use (another server?); choose another with {setting}, 0 for any free one")
            }
            std::io::ErrorKind::PermissionDenied => {
                format!(": not allowed (ports below 1024 need privileges); choose another with {setting}")
            }
            _ => String::new(),
        }
    }
}

/// Takes the port now, before anything else is touched: a second server started on a port in
/// use fails here, before it has created or migrated a database. It listens (and the kernel
/// starts accepting connections) only in [`listen`], once the database is open.
fn bind(port: Port, addr: SocketAddr) -> Result<tokio::net::TcpSocket, StartupError> {
    let failed = |source| StartupError::Bind { port, addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(failed)?;
    // As std and tokio do for a listener: a restart can bind while old connections linger.
    socket.set_reuseaddr(true).map_err(failed)?;
    socket.bind(addr).map_err(failed)?;
    Ok(socket)
}

/// Where the two ports come from.
enum Sockets {
    /// Listening already, passed by the service manager (or the previous process).
    Inherited {
        http: std::net::TcpListener,
        grpc: std::net::TcpListener,
    },
    /// Bound here, to listen on once the database is open.
    Bound {
        http: (SocketAddr, tokio::net::TcpSocket),
        grpc: (SocketAddr, tokio::net::TcpSocket),
    },
}

/// A listener on `addr` for `port`, bound and listening now: for the demos, which take their
/// port before they open the database, so that a port in use leaves nothing on disk. The same
/// errors, and hints, as the service's.
pub fn listener(port: Port, addr: SocketAddr) -> Result<TcpListener, StartupError> {
    let socket = bind(port, addr)?;
    listen(port, addr, socket).map(|(listener, _)| listener)
}

/// Listens on a socket [`bind`] took.
fn listen(
    port: Port,
    addr: SocketAddr,
    socket: tokio::net::TcpSocket,
) -> Result<(TcpListener, SocketAddr), StartupError> {
    let failed = |source| StartupError::Bind { port, addr, source };
    let listener = socket.listen(listen_backlog()).map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// A listening socket from the service manager, as a tokio listener.
fn adopt(port: Port, listener: std::net::TcpListener) -> Result<(TcpListener, SocketAddr), StartupError> {
    let addr = listener.local_addr().map_err(|source| StartupError::Bind {
        port,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let listener = TcpListener::from_std(listener).map_err(|source| StartupError::Bind { port, addr, source })?;
    Ok((listener, addr))
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
/// with its default settings (risk rules, pool size, simulated prices, Prometheus metrics),
/// without servers or the processor: what a lesson or an embedding program needs to serve
/// orders its own way. Close the store last.
pub async fn open_desk(database_url: &str) -> Result<(Store, Arc<OrderDesk<Store>>), StartupError> {
    let rules = crate::config::ProcessorArgs::default()
        .risk_rules()
        .map_err(StartupError::Config)?;
    let url = DatabaseUrl::parse(database_url).map_err(StartupError::DatabaseUrl)?;
    let pool_size = crate::config::defaults::DATABASE_POOL_SIZE as usize;
    let store = Store::open(&url, pool_size, Default::default(), None).await?;
    tracing::info!(database = %store.describe(), "database ready");
    let desk = desk_over(&store, rules);
    Ok((store, desk))
}

/// The order service over `store`: simulated prices, `rules`, Prometheus metrics.
fn desk_over(store: &Store, rules: crate::domain::RiskRules) -> Arc<OrderDesk<Store>> {
    Arc::new(OrderDesk::new(store.clone(), Arc::new(SimulatedPrices), rules).with_metrics(Arc::new(Prometheus)))
}

impl Application {
    /// Opens the database and binds the listeners. After this returns the ports are known
    /// ([`Application::http_addr`], [`Application::grpc_addr`]) even when 0 was asked for.
    pub async fn build(args: &ServeArgs) -> Result<Self, StartupError> {
        if args.shutdown_drain_delay >= args.shutdown_timeout {
            return Err(StartupError::Config(format!(
                "SHUTDOWN_DRAIN_DELAY ({:?}) must be shorter than SHUTDOWN_TIMEOUT ({:?}): the servers need time to stop after it",
                args.shutdown_drain_delay, args.shutdown_timeout
            )));
        }
        let rules = args.processor.risk_rules().map_err(StartupError::Config)?;
        let limits = &args.limits;
        let keys = ApiKeys::load(limits.api_keys.as_deref(), limits.api_keys_file.as_deref())?;
        if let Some(keys) = &keys {
            tracing::info!(?keys, "API keys required for the order API");
        }
        let http_options = http::Options {
            limits: Limits {
                keys: keys.map(Arc::new),
                max_concurrent: limits.max_concurrent_requests as usize,
                timeout: limits.request_timeout,
            },
            docs_ui: limits.docs_ui,
        };
        let connection_limits = ConnectionLimits {
            header_read_timeout: limits.header_read_timeout,
            ..ConnectionLimits::default()
        };
        let url = DatabaseUrl::parse(&args.database_url).map_err(StartupError::DatabaseUrl)?;
        // The ports first: a port in use must fail the start before the database is touched.
        // Socket activation: the service manager owns the sockets; HOST and the ports are its
        // business (`stockorder.socket`).
        let sockets = match crate::lifecycle::activation::inherited_listeners()? {
            Some((http, grpc)) => Sockets::Inherited { http, grpc },
            None => {
                let (http, grpc) = (
                    SocketAddr::new(args.host, args.port),
                    SocketAddr::new(args.host, args.grpc_port),
                );
                Sockets::Bound {
                    http: (http, bind(Port::Http, http)?),
                    grpc: (grpc, bind(Port::Grpc, grpc)?),
                }
            }
        };
        let timeouts = crate::adapter::outbound::postgres::Timeouts {
            connect: args.limits.request_timeout.min(Duration::from_secs(5)),
            statement: args.limits.request_timeout,
            startup: args.startup_timeout,
        };
        tracing::info!(database = %url.describe(), timeout_s = args.startup_timeout.as_secs_f64(), "opening the database");
        // Started by an in-place upgrade: the old process passed its SQLite lock on, and may
        // still write to the file until it exits (`run` watches for that).
        let upgraded_from = crate::lifecycle::upgrade::upgraded_from();
        let handed_lock = crate::lifecycle::upgrade::handed_database_lock();
        let store = tokio::time::timeout(
            // A little beyond PostgreSQL's own patience, which then reports the cause itself.
            args.startup_timeout + timeouts.connect,
            Store::open(&url, args.database_pool_size as usize, timeouts, handed_lock),
        )
        .await
        .map_err(|_| StartupError::DatabaseTimeout {
            database: url.describe(),
            timeout: args.startup_timeout,
        })??;
        tracing::info!(database = %store.describe(), "database ready");
        let ((http_listener, http_addr), (grpc_listener, grpc_addr)) = match sockets {
            Sockets::Inherited { http, grpc } => {
                tracing::info!("serving on sockets passed by the service manager");
                (adopt(Port::Http, http)?, adopt(Port::Grpc, grpc)?)
            }
            Sockets::Bound { http, grpc } => (listen(Port::Http, http.0, http.1)?, listen(Port::Grpc, grpc.0, grpc.1)?),
        };
        // Until the old process has exited, it may still write to the same database.
        if upgraded_from.is_some() {
            store.other_process_writes(true);
        }
        let desk = desk_over(&store, rules);
        let grpc = grpc::services(Arc::clone(&desk))?;
        Ok(Self {
            http_listener,
            http_addr,
            grpc_listener,
            grpc_addr,
            store,
            desk,
            grpc,
            shutdown_timeout: args.shutdown_timeout,
            drain_delay: args.shutdown_drain_delay,
            processor: ProcessorConfig {
                workers: args.processor.processor_workers,
                batch: args.processor.processor_batch,
                poll_interval: args.processor.processor_poll_interval,
            },
            http_options,
            connection_limits,
            upgrade_binary: args.upgrade_binary.clone(),
            upgraded_from,
        })
    }

    /// What a SIGHUP upgrade needs: the binary to start, and the listening sockets to pass on.
    /// `None` when this process cannot tell where its own binary is and none was configured.
    fn upgrader(&self) -> Option<Upgrader> {
        use std::os::fd::AsRawFd;
        let binary = self
            .upgrade_binary
            .clone()
            .or_else(crate::lifecycle::upgrade::own_binary)?;
        let store = self.store.clone();
        Some(Upgrader {
            binary,
            http_fd: self.http_listener.as_raw_fd(),
            grpc_fd: self.grpc_listener.as_raw_fd(),
            database_lock_fd: self.store.database_lock_fd(),
            overlap: Box::new(move |yes| store.other_process_writes(yes)),
        })
    }

    /// This process's duties beside serving, owned by `run` and joined before it returns:
    /// upgrading in place on SIGHUP (the handler is installed here, before the servers say they
    /// listen, so a SIGHUP sent as soon as they do upgrades instead of killing the process), and,
    /// in the new process of an upgrade, noticing when the old one has exited.
    fn duties(&self, shutdown: &Shutdown) -> JoinSet<()> {
        let mut duties = JoinSet::new();
        if let Some(upgrader) = self.upgrader() {
            match upgrader.listen(shutdown.readiness(), shutdown.handle()) {
                Ok(upgrades) => {
                    duties.spawn(upgrades);
                }
                Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP: in-place upgrades are off"),
            }
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
        plan(self.shutdown_timeout, self.drain_delay)
    }

    /// Serves HTTP and gRPC until `shutdown` is triggered, then follows the shutdown contract (docs/shutdown.md):
    ///
    /// 1. readiness off: `/ready` 503, gRPC health NOT_SERVING (`/health` stays 200);
    /// 2. the drain delay, still serving;
    /// 3. "stop servers": HTTP and gRPC together stop accepting, finish every accepted request
    ///    (see [`graceful::serve`]), bounded by the deadline minus a reserve for each later step;
    /// 4. "stop workers": the order processor finishes the batch in hand and stops;
    /// 5. "close resources": the database, last: queued writes committed, WAL checkpointed.
    ///
    /// Returns the report, already logged; when it is clean, every acknowledged order and
    /// every decision of the processor is in the database file.
    pub async fn run(self, mut shutdown: Shutdown) -> Report {
        let mut duties = self.duties(&shutdown);
        let readiness = shutdown.readiness();
        let reserve = reserve(self.shutdown_timeout);
        let servers_budget = self
            .shutdown_timeout
            .saturating_sub(self.drain_delay)
            .saturating_sub(reserve * 2);
        let servers = shutdown.phase_with_budget("stop servers", servers_budget);
        let workers = shutdown.phase_with_budget("stop workers", reserve);
        let resources = shutdown.phase("close resources");
        for (phase, budget) in [
            ("drain", self.drain_delay),
            ("stop servers", servers_budget),
            ("stop workers", reserve),
            // The last phase has no budget of its own: whatever is left of the deadline.
            ("total", self.shutdown_timeout),
        ] {
            metrics().shutdown_phase_budget(phase, budget);
        }

        let router = http::router_with(Arc::clone(&self.desk), readiness.clone(), &self.http_options);
        tracing::info!(event = "listening", protocol = "http", addr = %self.http_addr, "HTTP server listening");
        let http_readiness = readiness.clone();
        let connection_limits = self.connection_limits;
        shutdown.serve(
            servers,
            "http server",
            Server::new(self.http_listener, router)
                .limits(connection_limits)
                .readiness(http_readiness),
        );

        let grpc::GrpcServices { routes, health } = self.grpc;
        // The same stack as the REST API's (see `http::router_with`). Every call is logged at
        // info, like HTTP requests (path, gRPC status, latency). A non-OK status is usually the
        // client's mistake, so "failures" stay at debug; storage errors are logged at error
        // where they happen.
        let grpc_service = ServiceBuilder::new()
            .layer(request_id::RequestIdLayer)
            .layer(
                TraceLayer::new_for_grpc()
                    .make_span_with(request_id::span)
                    .on_response(LogResponse)
                    .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
            )
            .layer(ObserveLayer::<grpc::Grpc>::new())
            .layer(AdmissionLayer::<grpc::Grpc>::new(&self.http_options.limits))
            .service(routes.prepare());
        health.set(self.desk.can_write()).await;
        tracing::info!(event = "listening", protocol = "grpc", addr = %self.grpc_addr, "gRPC server listening");
        let grpc_readiness = readiness.clone();
        let mut storage = self.desk.storage().subscribe();
        shutdown.spawn(servers, "grpc server", move |stop| async move {
            // NOT_SERVING while storage fails, and for good once draining: the same rule as
            // `/ready`.
            let unready = async {
                loop {
                    let writing = *storage.borrow_and_update() == StorageState::Writing;
                    health.set(writing).await;
                    tokio::select! {
                        () = grpc_readiness.draining() => break,
                        changed = storage.changed() => if changed.is_err() { break },
                    }
                }
                health.set(false).await;
                std::future::pending::<std::convert::Infallible>().await
            };
            let server = Server::new(self.grpc_listener, grpc_service)
                .protocol(Protocol::Grpc)
                .limits(connection_limits)
                .readiness(grpc_readiness.clone());
            // NOT_SERVING is queued before the server ends its streams, so a health Watch sees
            // it before its UNAVAILABLE even with no drain delay.
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

        let (desk, config) = (Arc::clone(&self.desk), self.processor);
        shutdown.spawn(workers, "order processor", move |stop| {
            processor::run(desk, config, stop.into_future())
        });
        // While storage fails it probes it, so readiness returns without client traffic; it
        // ends the service (with the cause) only if the database is corrupt.
        let desk = Arc::clone(&self.desk);
        shutdown.spawn(workers, "storage monitor", move |stop| async move {
            desk.watch_storage(stop.into_future()).await
        });

        let store = self.store;
        shutdown.on_stop(resources, "database", move || async move { store.close().await });

        // systemd: started once both servers serve. The coordinator tells it STOPPING=1 and
        // each phase (graceful's feature `systemd`).
        crate::lifecycle::notify::notify_ready();

        let report = shutdown.run().await;
        duties.abort_all();
        while duties.join_next().await.is_some() {}
        report.log();
        report
    }
}
