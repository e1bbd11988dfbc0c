//! Scaffolding shared by the three lessons (`demo_1.rs`, `demo_2.rs`, `demo_3.rs`), kept out
//! of them so each reads as its shutdown sequence only: configuration (the same flags and
//! environment as `stockorder serve`), the original's pauses scaled by `DEMO_SLEEP_SCALE`, and
//! a timeline that stamps each step with the time since the signal.

#![allow(dead_code)] // each demo uses a different part

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use stockorder::adapter::simulated_price::SimulatedPrices;
use stockorder::adapter::store::Store;
use stockorder::config::{DatabaseUrl, LogArgs, ServeArgs};
use stockorder::service::OrderDesk;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// The demos take `stockorder serve`'s options (PORT, GRPC_PORT, DATABASE_URL, LOG_FORMAT, …).
#[derive(Parser)]
struct DemoCli {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    log: LogArgs,
}

/// One demo run.
pub struct Demo {
    pub args: ServeArgs,
    scale: f64,
}

impl Demo {
    /// Reads the configuration and starts logging. `DEMO_SLEEP_SCALE` (default 1) multiplies
    /// every pause: 0 runs the lesson at full speed, for tests.
    pub fn from_env() -> anyhow::Result<Self> {
        let cli = DemoCli::parse();
        stockorder::telemetry::init(&cli.log);
        let scale = match std::env::var("DEMO_SLEEP_SCALE") {
            Ok(raw) => raw
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .with_context(|| format!("DEMO_SLEEP_SCALE={raw:?} is not a non-negative number"))?,
            Err(_) => 1.0,
        };
        Ok(Self { args: cli.serve, scale })
    }

    /// The order store and the service over it, as `serve` builds them. (The demos run no order
    /// processor: their lesson is the servers and the database; orders stay PENDING.)
    pub async fn open_store(&self) -> anyhow::Result<(Store, Arc<OrderDesk<Store>>)> {
        let url = DatabaseUrl::parse(&self.args.database_url).map_err(anyhow::Error::msg)?;
        let store = Store::open(&url, self.args.database_pool_size as usize, Default::default()).await?;
        tracing::info!(database = %store.describe(), "database ready");
        let rules = self.args.processor.risk_rules().map_err(anyhow::Error::msg)?;
        let desk = OrderDesk::new(store.clone(), Arc::new(SimulatedPrices), rules);
        Ok((store, Arc::new(desk)))
    }

    /// Binds the HTTP port and says where (tests read the address from this line).
    pub async fn bind_http(&self) -> anyhow::Result<TcpListener> {
        bind(
            SocketAddr::new(self.args.host, self.args.port),
            "http",
            "HTTP server listening",
        )
        .await
    }

    /// Binds the gRPC port and says where.
    pub async fn bind_grpc(&self) -> anyhow::Result<TcpListener> {
        bind(
            SocketAddr::new(self.args.host, self.args.grpc_port),
            "grpc",
            "gRPC server listening",
        )
        .await
    }

    /// One of the original's pauses: `secs` × `DEMO_SLEEP_SCALE`, so a person can watch the
    /// order of events.
    pub async fn pause(&self, secs: f64) {
        tokio::time::sleep(Duration::from_secs_f64(secs * self.scale)).await;
    }
}

async fn bind(addr: SocketAddr, protocol: &str, says: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(event = "listening", protocol, addr = %listener.local_addr()?, "{says}");
    Ok(listener)
}

/// Stamps each step with the time since the signal: `[+5.0s] database closed`.
pub struct Timeline(Instant);

impl Timeline {
    /// Starts the clock (at the signal).
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Logs a step, with its stable `event` name for log readers (docs/log-events.md).
    pub fn mark(&self, event: &str, step: &str) {
        tracing::info!(event, "[+{:.1}s] {step}", self.0.elapsed().as_secs_f64());
    }
}
