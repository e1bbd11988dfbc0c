//! PostgreSQL storage, for when one machine is not enough: several replicas behind a load
//! balancer share one database.
//!
//! The same port as SQLite, with the same guarantees: a write has committed (and, with
//! PostgreSQL's default `synchronous_commit = on`, is flushed to its WAL) before its future
//! resolves; status changes are conditional (`UPDATE … WHERE status = $from`), so concurrent
//! writers on any replica have exactly one winner; `client_order_id` is unique
//! (`INSERT … ON CONFLICT DO NOTHING`, then the existing row). PostgreSQL batches concurrent
//! commits itself, so each request is its own short transaction on a pooled connection
//! (`deadpool-postgres`). What SQLite does not need and PostgreSQL does: the processor's queue
//! is shared by replicas, so a claim leases its orders (`FOR UPDATE SKIP LOCKED`, see
//! [`CLAIM_LEASE`]).

mod errors;
mod events;
mod rows;
mod schema;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use errors::Stage;
use tokio_postgres::NoTls;

use crate::backoff::Backoff;
use crate::domain::{OrderEvent, OrderId, StatusChange, StockOrder, Symbol};
use crate::port::{
    EventBounds, EventRetention, Inserted, ListQuery, NoMetrics, OrderRepository, QueuePosition, Queued,
    RepositoryError, StoreMetrics, Transition,
};

pub use schema::MigrationError;

/// How long the processor's claim on a batch lasts. A replica finishes a batch in
/// milliseconds and releases it by settling it; the lease only matters when a replica dies
/// holding one, and then those orders wait this long before another replica takes them.
pub const CLAIM_LEASE: Duration = Duration::from_secs(10);

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is not a PostgreSQL connection string.
    #[error("invalid PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("cannot build the PostgreSQL connection pool: {0}")]
    Pool(String),
    /// No connection could be made (within the start-up timeout, for a server that may come).
    #[error("cannot connect to PostgreSQL at {target}: {cause}")]
    Connect {
        /// Host and database, without credentials.
        target: String,
        /// What the pool or server said, in the server's words.
        cause: String,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the PostgreSQL database {target}")]
    Migrate {
        /// Host and database, without credentials.
        target: String,
        /// What went wrong.
        source: MigrationError,
    },
}

/// Orders in PostgreSQL. Cheap to clone; all clones share one pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    target: String,
    /// The event log's wake-ups, moved by the publisher (`events`).
    wakeups: Arc<tokio::sync::watch::Sender<u64>>,
    /// What wakes the publisher before its tick: this replica's commits, others' `NOTIFY`.
    wakers: Arc<events::Wakers>,
    /// How to open the connection that `LISTEN`s for other publishers (outside the pool).
    config: Arc<tokio_postgres::Config>,
    /// Stops the publisher when the store closes.
    publishing: tokio_util::sync::CancellationToken,
    /// Where commits are reported ([`PostgresStore::with_metrics`]).
    metrics: Arc<dyn StoreMetrics>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("target", &self.target).finish()
    }
}

/// `host/dbname` of a connection config: enough to say where, without the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("(default)"))
}

/// A `map_err` for errors of statements at `stage`.
fn database(stage: Stage) -> impl Fn(tokio_postgres::Error) -> RepositoryError {
    move |e| errors::classify(e, stage)
}

/// How long the database may take, so that no request waits past its own timeout on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open a connection (TCP and the start-up handshake), and to wait for a free one.
    pub connect: Duration,
    /// For one statement (PostgreSQL's `statement_timeout`).
    pub statement: Duration,
    /// How long start-up keeps trying to reach a server that is not up (yet).
    pub startup: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            statement: Duration::from_secs(10),
            startup: Duration::from_secs(30),
        }
    }
}

impl PostgresStore {
    /// Connects to `url` with up to `pool_size` connections and migrates the schema; each
    /// commit is reported to `metrics`.
    pub async fn open(
        url: &str,
        pool_size: usize,
        timeouts: Timeouts,
        retention: EventRetention,
        metrics: Arc<dyn StoreMetrics>,
    ) -> Result<Self, OpenError> {
        let config = tokio_postgres::Config::from_str(url).map_err(OpenError::Url)?;
        let store = Self::open_config(config, pool_size, timeouts)
            .await?
            .with_metrics(metrics);
        store.start_publishing(retention);
        Ok(store)
    }

    /// Starts the event log's publisher (see `events`), which runs until [`PostgresStore::close`].
    /// [`PostgresStore::open`] does; a store opened with [`PostgresStore::open_config`] starts it
    /// when it is to serve events.
    pub fn start_publishing(&self, retention: EventRetention) {
        self.start_publishing_every(retention, events::TICK);
    }

    /// [`PostgresStore::start_publishing`] with rounds every `tick` when nothing wakes the
    /// publisher sooner (the tests' way to show what the wake-ups do alone).
    fn start_publishing_every(&self, retention: EventRetention, tick: Duration) {
        tokio::spawn(events::publisher(
            self.pool.clone(),
            Arc::clone(&self.wakeups),
            Arc::clone(&self.wakers),
            retention,
            tick,
            self.publishing.clone(),
        ));
        tokio::spawn(events::listen(
            Arc::clone(&self.config),
            Arc::clone(&self.wakers),
            self.publishing.clone(),
        ));
    }

    /// [`PostgresStore::open`] with a parsed configuration (e.g. with session `options`).
    ///
    /// A server that cannot be reached is tried again, with a log line saying what is awaited,
    /// until `timeouts.startup`; a server that answers with an error (a wrong password, no such
    /// database) fails at once.
    pub async fn open_config(
        mut config: tokio_postgres::Config,
        pool_size: usize,
        timeouts: Timeouts,
    ) -> Result<Self, OpenError> {
        let target = describe(&config);
        // The server ends a statement that runs longer than the request may; the session
        // options of the URL (a search_path, say) are kept.
        let statement_timeout = format!("-c statement_timeout={}", timeouts.statement.as_millis());
        let options = match config.get_options() {
            Some(given) if !given.is_empty() => format!("{given} {statement_timeout}"),
            _ => statement_timeout,
        };
        config
            .options(options)
            .connect_timeout(timeouts.connect)
            // A server that vanished (a partition, a power cut) is noticed without a request
            // waiting for TCP's own give-up of many minutes.
            .keepalives_idle(Duration::from_secs(10))
            .tcp_user_timeout(timeouts.connect.max(Duration::from_secs(1)));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection returned to the pool is reused without a round trip to check
                // it; a closed one (the server restarted) is replaced when next taken, and a
                // broken one fails its next query and is dropped then.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeouts.connect))
            .create_timeout(Some(timeouts.connect))
            .recycle_timeout(Some(timeouts.connect))
            .build()
            .map_err(|e| OpenError::Pool(e.to_string()))?;
        let mut client = Self::first_connection(&pool, &target, timeouts.startup).await?;
        schema::migrate(&mut client)
            .await
            .map_err(|source| OpenError::Migrate {
                target: target.clone(),
                source,
            })?;
        drop(client);
        Ok(Self {
            pool,
            target,
            wakeups: Arc::new(tokio::sync::watch::channel(0).0),
            wakers: Arc::default(),
            config: Arc::new(config),
            publishing: tokio_util::sync::CancellationToken::new(),
            metrics: Arc::new(NoMetrics),
        })
    }

    /// Reports each commit to `metrics` from now on (a store opens reporting nowhere).
    pub fn with_metrics(mut self, metrics: Arc<dyn StoreMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// A first connection, retried while the server is unreachable, up to `patience`.
    async fn first_connection(
        pool: &Pool,
        target: &str,
        patience: Duration,
    ) -> Result<deadpool_postgres::Object, OpenError> {
        let give_up = Instant::now() + patience;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut said = None;
        loop {
            let err = match pool.get().await {
                Ok(client) => {
                    if said.is_some() {
                        tracing::info!(target, "PostgreSQL reached");
                    }
                    return Ok(client);
                }
                Err(e) => errors::from_pool(e),
            };
            let cause = err.to_string();
            let retry = matches!(err, RepositoryError::Unavailable { .. });
            let wait = backoff.next_delay();
            if !retry || Instant::now() + wait >= give_up {
                return Err(OpenError::Connect {
                    target: target.to_owned(),
                    cause,
                });
            }
            if said.as_deref() != Some(cause.as_str()) {
                tracing::warn!(target, error = %cause, patience_s = patience.as_secs(), "waiting for PostgreSQL");
                said = Some(cause);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Where the store is (`host:port/dbname`), for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Closes the pool: idle connections close now, those in use when they are returned, and
    /// later calls answer [`RepositoryError::Closed`]. Every acknowledged write has committed
    /// already, so there is nothing to flush. Call it after the servers have stopped.
    pub async fn close(&self) -> Result<(), RepositoryError> {
        self.publishing.cancel();
        self.pool.close();
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, RepositoryError> {
        self.pool.get().await.map_err(errors::from_pool)
    }

    /// The orders with these ids that exist, to tell a refused change from a missing order.
    async fn current(
        client: &impl deadpool_postgres::GenericClient,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<StockOrder>, RepositoryError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let stmt = client
            .prepare_cached(rows::BY_IDS)
            .await
            .map_err(database(Stage::NotCommitting))?;
        rows::orders(
            &client
                .query(&stmt, &[&ids])
                .await
                .map_err(database(Stage::NotCommitting))?,
        )
    }

    /// Applies `changes` conditionally in one statement; a [`Transition`] per change, in order.
    /// `stage` says whether that statement commits by itself (outside a transaction).
    async fn apply(
        client: &impl deadpool_postgres::GenericClient,
        changes: &[StatusChange],
        stage: Stage,
    ) -> Result<Vec<Transition>, RepositoryError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<uuid::Uuid> = changes.iter().map(|c| *c.id().as_uuid()).collect();
        let from: Vec<&str> = changes.iter().map(|c| c.from().as_str()).collect();
        let to: Vec<&str> = changes.iter().map(|c| c.to().as_str()).collect();
        let description: Vec<Option<&str>> = changes.iter().map(|c| c.description()).collect();
        let fill_price: Vec<Option<f64>> = changes.iter().map(|c| c.fill_price().map(|p| p.get())).collect();
        let at: Vec<time::OffsetDateTime> = changes.iter().map(|c| c.at().as_datetime()).collect();
        let stmt = client
            .prepare_cached(rows::CHANGE_STATUS)
            .await
            .map_err(database(Stage::NotCommitting))?;
        let changed = rows::orders(
            &client
                .query(&stmt, &[&ids, &from, &to, &description, &fill_price, &at])
                .await
                .map_err(database(stage))?,
        )?;
        let mut applied: std::collections::HashMap<OrderId, StockOrder> =
            changed.into_iter().map(|o| (o.id(), o)).collect();
        let missed: Vec<uuid::Uuid> = ids
            .iter()
            .filter(|id| !applied.contains_key(&OrderId::from_uuid(**id)))
            .copied()
            .collect();
        let mut refused: std::collections::HashMap<OrderId, StockOrder> = Self::current(client, &missed)
            .await?
            .into_iter()
            .map(|o| (o.id(), o))
            .collect();
        Ok(changes
            .iter()
            .map(|c| {
                if let Some(o) = applied.remove(&c.id()) {
                    Transition::Applied(o)
                } else if let Some(o) = refused.remove(&c.id()) {
                    Transition::Refused(o)
                } else {
                    Transition::NotFound
                }
            })
            .collect())
    }
}

impl OrderRepository for PostgresStore {
    async fn insert(&self, order: StockOrder) -> Result<Inserted, RepositoryError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(rows::INSERT)
            .await
            .map_err(database(Stage::NotCommitting))?;
        let params = rows::InsertParams::of(&order);
        // One statement is one transaction: PostgreSQL commits (and fsyncs) each insert itself.
        let started = Instant::now();
        let inserted = client
            .execute(&stmt, &params.as_params())
            .await
            .map_err(database(Stage::Committing))?;
        self.metrics.commit("postgres", 1, started.elapsed());
        if inserted == 1 {
            self.wakers.committed.notify_one();
            return Ok(Inserted::Created(order));
        }
        // ON CONFLICT waited for the other insert of this key to commit: it is there to read.
        let key = order
            .client_order_id()
            .ok_or_else(|| RepositoryError::Unreadable(format!("order {} was not inserted", order.id())))?;
        let stmt = client
            .prepare_cached(rows::BY_CLIENT_ORDER_ID)
            .await
            .map_err(database(Stage::NotCommitting))?;
        let row = client
            .query_one(&stmt, &[&key.as_str()])
            .await
            .map_err(database(Stage::NotCommitting))?;
        Ok(Inserted::Existing(rows::order_from_row(&row)?))
    }

    async fn get(&self, id: OrderId) -> Result<Option<StockOrder>, RepositoryError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(rows::BY_ID)
            .await
            .map_err(database(Stage::NotCommitting))?;
        client
            .query_opt(&stmt, &[id.as_uuid()])
            .await
            .map_err(database(Stage::NotCommitting))?
            .map(|row| rows::order_from_row(&row))
            .transpose()
    }

    async fn list(&self, query: ListQuery, limit: u32) -> Result<Vec<StockOrder>, RepositoryError> {
        let client = self.client().await?;
        let (sql, args) = rows::list_sql(&query, limit);
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(database(Stage::NotCommitting))?;
        let params: Vec<_> = args.iter().map(rows::Param::as_sql).collect();
        rows::orders(
            &client
                .query(&stmt, &params)
                .await
                .map_err(database(Stage::NotCommitting))?,
        )
    }

    async fn change_status(&self, change: StatusChange) -> Result<Transition, RepositoryError> {
        let client = self.client().await?;
        let started = Instant::now();
        let mut transitions = Self::apply(&client, std::slice::from_ref(&change), Stage::Committing).await?;
        self.metrics.commit("postgres", 1, started.elapsed());
        let transition = transitions.pop().unwrap_or(Transition::NotFound);
        if matches!(transition, Transition::Applied(_)) {
            self.wakers.committed.notify_one();
        }
        Ok(transition)
    }

    /// `after` is ignored: the lease, not a cursor, keeps replicas' batches apart (see the
    /// port). The positions returned say only the order within this batch.
    async fn unprocessed(&self, _after: QueuePosition, limit: u32) -> Result<Vec<Queued>, RepositoryError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(rows::CLAIM)
            .await
            .map_err(database(Stage::NotCommitting))?;
        let lease = CLAIM_LEASE.as_secs_f64();
        let mut claimed = rows::orders(
            &client
                .query(&stmt, &[&i64::from(limit), &lease])
                .await
                .map_err(database(Stage::NotCommitting))?,
        )?;
        // RETURNING follows no order; the queue is oldest first.
        claimed.sort_by_key(|o| o.id());
        Ok(claimed
            .into_iter()
            .map(|order| Queued {
                position: QueuePosition { seq: 0, id: order.id() },
                order,
            })
            .collect())
    }

    async fn reoffer_resting(&self) -> Result<(), RepositoryError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(rows::REOFFER_RESTING)
            .await
            .map_err(database(Stage::NotCommitting))?;
        client
            .execute(&stmt, &[])
            .await
            .map_err(database(Stage::Committing))
            .map(drop)
    }

    async fn probe(&self) -> Result<(), RepositoryError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(rows::PROBE)
            .await
            .map_err(database(Stage::NotCommitting))?;
        client
            .execute(&stmt, &[])
            .await
            .map_err(database(Stage::NotCommitting))
            .map(drop)
    }

    async fn settle(&self, changes: Vec<StatusChange>, resting: Vec<OrderId>) -> Result<Vec<bool>, RepositoryError> {
        let mut client = self.client().await?;
        let started = Instant::now();
        let tx = client.transaction().await.map_err(database(Stage::NotCommitting))?;
        let transitions = Self::apply(&tx, &changes, Stage::NotCommitting).await?;
        if !resting.is_empty() {
            let ids: Vec<uuid::Uuid> = resting.iter().map(|id| *id.as_uuid()).collect();
            let stmt = tx
                .prepare_cached(rows::MARK_RESTING)
                .await
                .map_err(database(Stage::NotCommitting))?;
            tx.execute(&stmt, &[&ids])
                .await
                .map_err(database(Stage::NotCommitting))?;
        }
        tx.commit().await.map_err(database(Stage::Committing))?;
        self.metrics
            .commit("postgres", changes.len() + resting.len(), started.elapsed());
        let applied: Vec<bool> = transitions
            .iter()
            .map(|t| matches!(t, Transition::Applied(_)))
            .collect();
        if applied.contains(&true) {
            self.wakers.committed.notify_one();
        }
        Ok(applied)
    }

    async fn events(&self, after: u64, symbol: Option<Symbol>, limit: u32) -> Result<Vec<OrderEvent>, RepositoryError> {
        events::read(&self.pool, after, symbol, limit).await
    }

    async fn event_bounds(&self) -> Result<EventBounds, RepositoryError> {
        events::bounds(&self.pool).await
    }

    fn event_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wakeups.subscribe()
    }
}

#[cfg(test)]
mod tests;
