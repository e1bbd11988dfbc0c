//! Wiring: configuration → repository → service → servers → shutdown. The one place that knows
//! every adapter.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

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
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    /// The database could not be closed cleanly.
    #[error("closing the database failed: {0}")]
    CloseDatabase(#[source] crate::port::RepositoryError),
}

/// A built, bound, not yet serving instance of the service.
pub struct Application {
    http_listener: TcpListener,
    http_addr: SocketAddr,
    store: SqliteStore,
    desk: Arc<OrderDesk<SqliteStore>>,
}

impl Application {
    /// Opens the database and binds the listeners. After this returns the ports are known
    /// ([`Application::http_addr`]) even when 0 was asked for.
    pub async fn build(args: &ServeArgs) -> Result<Self, StartupError> {
        let DatabaseUrl::Sqlite(path) = DatabaseUrl::parse(&args.database_url).map_err(StartupError::DatabaseUrl)?;
        let store = SqliteStore::open(&path)?;
        tracing::info!(database = %path.display(), "database ready");
        let addr = SocketAddr::new(args.host, args.port);
        let http_listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;
        let desk = Arc::new(OrderDesk::new(store.clone()));
        Ok(Self {
            http_listener,
            http_addr,
            store,
            desk,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets every accepted request
    /// finish, and closes the database last. When this returns, every acknowledged order is
    /// in the database file.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
        let (ready_tx, ready_rx) = watch::channel(false);
        let router = http::router(Arc::clone(&self.desk), ready_rx);
        tracing::info!(addr = %self.http_addr, "HTTP server listening");
        ready_tx.send_replace(true);
        let served = axum::serve(self.http_listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                ready_tx.send_replace(false);
                tracing::info!("shutdown requested: no new connections, finishing requests in flight");
            })
            .await;
        tracing::info!("HTTP server stopped");
        let closed = self.store.close().await;
        tracing::info!("database closed");
        served.map_err(RunError::Http)?;
        closed.map_err(RunError::CloseDatabase)
    }
}
