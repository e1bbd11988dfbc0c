//! Wiring: configuration → repository → service → servers → shutdown. The one place that knows
//! every adapter.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::adapter::grpc::{self, DescriptorError};
use crate::adapter::http;
use crate::adapter::sqlite::{OpenError, SqliteStore};
use crate::config::{DatabaseUrl, ServeArgs};
use crate::service::OrderDesk;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// `DATABASE_URL` names no store this build can use.
    #[error("invalid DATABASE_URL: {0}")]
    DatabaseUrl(String),
    /// The database could not be opened.
    #[error(transparent)]
    Database(#[from] OpenError),
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The gRPC services could not be built.
    #[error(transparent)]
    Grpc(#[from] DescriptorError),
}

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The HTTP server failed.
    #[error("HTTP server failed")]
    Http(#[source] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Grpc(#[source] tonic::transport::Error),
    /// The database could not be closed cleanly.
    #[error("closing the database failed")]
    CloseDatabase(#[source] crate::port::RepositoryError),
}

/// A built, bound, not yet serving instance of the service.
pub struct Application {
    http_listener: TcpListener,
    http_addr: SocketAddr,
    grpc_listener: TcpListener,
    grpc_addr: SocketAddr,
    store: SqliteStore,
    desk: Arc<OrderDesk<SqliteStore>>,
    grpc: grpc::GrpcServices,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartupError::Bind { addr, source })?;
    Ok((listener, bound))
}

impl Application {
    /// Opens the database and binds the listeners. After this returns the ports are known
    /// ([`Application::http_addr`], [`Application::grpc_addr`]) even when 0 was asked for.
    pub async fn build(args: &ServeArgs) -> Result<Self, StartupError> {
        let DatabaseUrl::Sqlite(path) = DatabaseUrl::parse(&args.database_url).map_err(StartupError::DatabaseUrl)?;
        let store = SqliteStore::open(&path)?;
        tracing::info!(database = %path.display(), "database ready");
        let (http_listener, http_addr) = bind(SocketAddr::new(args.host, args.port)).await?;
        let (grpc_listener, grpc_addr) = bind(SocketAddr::new(args.host, args.grpc_port)).await?;
        let desk = Arc::new(OrderDesk::new(store.clone()));
        let grpc = grpc::services(Arc::clone(&desk))?;
        Ok(Self {
            http_listener,
            http_addr,
            grpc_listener,
            grpc_addr,
            store,
            desk,
            grpc,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Serves HTTP and gRPC until `shutdown` resolves, then turns readiness off (`/ready` 503,
    /// gRPC health NOT_SERVING), stops both servers together (no new connections, every
    /// accepted request answered), and closes the database last. When this returns, every
    /// acknowledged order is in the database file.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
        let (ready_tx, ready_rx) = watch::channel(false);
        let router = http::router(Arc::clone(&self.desk), ready_rx.clone());
        let grpc::GrpcServices { routes, health } = self.grpc;
        tracing::info!(addr = %self.http_addr, "HTTP server listening");
        tracing::info!(addr = %self.grpc_addr, "gRPC server listening");
        health.set(true).await;
        ready_tx.send_replace(true);

        // Readiness off is the one "stop" both servers watch: a signal turns it off, and so
        // does either server ending on its own, so one never outlives the other.
        let draining = || {
            let mut ready = ready_rx.clone();
            async move {
                // Err only when the sender is gone, which means stop as well.
                let _ = ready.wait_for(|ready| !ready).await;
            }
        };
        let stop = || ready_tx.send_replace(false);
        let http_server = axum::serve(self.http_listener, router).with_graceful_shutdown(draining());
        // Every call logged at info, like HTTP requests (path, gRPC status, latency). A non-OK
        // status is usually the client's mistake, so "failures" stay at debug; storage errors
        // are logged at error where they happen.
        let grpc_trace = TraceLayer::new_for_grpc()
            .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
            .on_response(DefaultOnResponse::new().level(Level::INFO))
            .on_failure(DefaultOnFailure::new().level(Level::DEBUG));
        let grpc_server = tonic::transport::Server::builder()
            .layer(grpc_trace)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.grpc_listener).with_nodelay(Some(true)),
                draining(),
            );
        let (http_served, grpc_served, ()) = tokio::join!(
            async {
                let served = http_server.await;
                stop();
                tracing::info!("HTTP server stopped");
                served
            },
            async {
                let served = grpc_server.await;
                stop();
                tracing::info!("gRPC server stopped");
                served
            },
            async {
                tokio::select! {
                    () = shutdown => {
                        tracing::info!("shutdown requested: no new connections, finishing requests in flight");
                    }
                    () = draining() => {}
                }
                health.set(false).await;
                stop();
            },
        );
        let closed = self.store.close().await;
        tracing::info!("database closed");
        http_served.map_err(RunError::Http)?;
        grpc_served.map_err(RunError::Grpc)?;
        closed.map_err(RunError::CloseDatabase)
    }
}
