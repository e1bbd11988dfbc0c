//! Configuration: one clap struct per command, with `env` on every field, so each knob works as
//! a flag and as an environment variable and `--help` documents them all.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::{Quantity, RiskRules, Symbol, ValidationError};

/// A setting that cannot be used, named by the variable that sets it, found before anything
/// (a port, a database) is acquired.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The drain delay leaves the servers no time to stop.
    #[error(
        "SHUTDOWN_DRAIN_DELAY ({drain:?}) must be shorter than SHUTDOWN_TIMEOUT ({deadline:?}): the servers need time to stop after it"
    )]
    DrainDelayTooLong {
        /// `SHUTDOWN_DRAIN_DELAY`.
        drain: Duration,
        /// `SHUTDOWN_TIMEOUT`.
        deadline: Duration,
    },
    /// `MAX_ORDER_QUANTITY` is not a quantity an order could have.
    #[error("MAX_ORDER_QUANTITY: {0}")]
    MaxOrderQuantity(ValidationError),
    /// `MAX_ORDER_NOTIONAL` is not a positive number.
    #[error("MAX_ORDER_NOTIONAL must be a positive number, got {0}")]
    MaxOrderNotional(f64),
    /// An entry of `ALLOWED_SYMBOLS` is not a symbol.
    #[error("ALLOWED_SYMBOLS: {0}")]
    AllowedSymbol(ValidationError),
    /// `DATABASE_URL` names no store this build can use.
    #[error("invalid DATABASE_URL: {0}")]
    DatabaseUrl(#[from] DatabaseUrlError),
}

/// Why `DATABASE_URL` names no usable store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseUrlError {
    /// A scheme that is neither SQLite nor PostgreSQL (`mysql:…`), which must not quietly
    /// become a SQLite file of that name.
    #[error(
        "unknown database URL scheme {0:?}: use sqlite://PATH, postgres://… or a file path (sqlite:PATH for a file name with a colon)"
    )]
    UnknownScheme(String),
    /// `sqlite://` with no path.
    #[error("the SQLite URL names no file (expected sqlite://PATH)")]
    NoFile,
    /// `sqlite::memory:`, which would lose every order.
    #[error("an in-memory SQLite database would lose every order; name a file")]
    InMemory,
}

/// The defaults of the limits, written once: the command line shows and applies them, and
/// [`LimitArgs::default`] (what tests and embedders start from) returns the same values. A
/// duration is given twice, as the command line's text and as a value, side by side and
/// checked against each other by a test.
pub mod defaults {
    use std::time::Duration;

    /// Longest a request may take (`REQUEST_TIMEOUT`).
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    pub(super) const REQUEST_TIMEOUT_TEXT: &str = "10s";
    /// Requests handled at once per port (`MAX_CONCURRENT_REQUESTS`).
    pub const MAX_CONCURRENT_REQUESTS: u32 = 1024;
    /// Longest wait for a request's headers (`HEADER_READ_TIMEOUT`).
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub(super) const HEADER_READ_TIMEOUT_TEXT: &str = "10s";
    /// PostgreSQL connections per process (`DATABASE_POOL_SIZE`).
    pub const DATABASE_POOL_SIZE: u32 = 16;
    /// Longest start-up waits for the database (`STARTUP_TIMEOUT`).
    pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
    pub(super) const STARTUP_TIMEOUT_TEXT: &str = "30s";
}

/// stockorder: a stock-order service (REST + gRPC) that shuts down without losing a request.
#[derive(Debug, Parser)]
#[command(name = "stockorder", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options of `serve`, accepted without the word `serve` so `cargo run` starts the service.
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Logging, shared by every command.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The commands of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default). The clients, load and shutdown proofs are another
    /// binary, `stockorder-tools`, that talks to this one over its APIs only.
    Serve(ServeArgs),
}

/// Options of `stockorder serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// HTTP port; 0 picks a free one (the log says which).
    #[arg(long, env = "PORT", default_value_t = 8082)]
    pub port: u16,

    /// gRPC port; 0 picks a free one (the log says which).
    #[arg(long, env = "GRPC_PORT", default_value_t = 50051)]
    pub grpc_port: u16,

    /// Longest a shutdown may take, from the signal to exit, drain delay included. What is
    /// still running then is aborted and named, and the exit code is 1.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// How long to keep serving after a signal with readiness already off (`/ready` 503, gRPC
    /// health NOT_SERVING), so load balancers stop routing here first. ~5s behind one.
    #[arg(long, env = "SHUTDOWN_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_drain_delay: Duration,

    /// Order processing and risk rules.
    #[command(flatten)]
    pub processor: ProcessorArgs,

    /// Limits, authentication and API documentation.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// Where orders are stored: `sqlite://PATH` (created and migrated on start), a plain path,
    /// or `postgres://USER@HOST:PORT/DB` (migrated on start; replicas may share it). Checked
    /// when the service starts, not when the command line is read.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://stock_orders.db")]
    pub database_url: String,

    /// The binary a SIGHUP upgrade starts; by default the path this process was started from
    /// (where a deploy puts the new version).
    #[arg(long, env = "UPGRADE_BINARY")]
    pub upgrade_binary: Option<PathBuf>,

    /// Longest start-up may wait for the database (a PostgreSQL server that is not up yet is
    /// tried again until then, with a log line saying so); then the service exits with the cause.
    #[arg(long, env = "STARTUP_TIMEOUT", default_value = defaults::STARTUP_TIMEOUT_TEXT, value_parser = parse_duration)]
    pub startup_timeout: Duration,

    /// PostgreSQL connections per process (SQLite uses one writer and its own readers).
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = defaults::DATABASE_POOL_SIZE, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: u32,

    /// How long the order event log keeps an event (`GET /api/orders/events`, `WatchOrders`);
    /// a follower away longer is told where the log starts (410 / OUT_OF_RANGE).
    #[arg(long, env = "EVENT_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub event_retention: Duration,

    /// Most events the log keeps; older ones are pruned, a small chunk at a time.
    #[arg(long, env = "EVENT_RETENTION_COUNT", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub event_retention_count: u64,
}

/// What protects the service from bad, excessive or unauthenticated traffic.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct LimitArgs {
    /// Longest a request may take; then it is answered 504 (gRPC DEADLINE_EXCEEDED). A
    /// client's shorter `grpc-timeout` wins.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = defaults::REQUEST_TIMEOUT_TEXT, value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Requests handled at once per port; more are refused at once with 503 + Retry-After
    /// (gRPC RESOURCE_EXHAUSTED) instead of queueing. Probes and /metrics are never refused.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = defaults::MAX_CONCURRENT_REQUESTS, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_requests: u32,

    /// Slow-client protection: a new connection must send its first byte within this, and an
    /// HTTP/1 connection that neither starts a request nor is being answered (idle, or
    /// trickling its headers) is closed one to two of these after its last request.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = defaults::HEADER_READ_TIMEOUT_TEXT, value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Comma-separated API keys (16+ characters each). When set, order endpoints and RPCs need
    /// `Authorization: Bearer KEY`; health, readiness, metrics and /openapi.json stay open.
    #[arg(long, env = "API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,

    /// A file of API keys, one per line (`#` starts a comment); adds to API_KEYS.
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Serve an interactive API reference at /docs (its script loads from a CDN in the
    /// browser).
    #[arg(long, env = "DOCS_UI", default_value_t = false)]
    pub docs_ui: bool,
}

impl Default for LimitArgs {
    /// The same values as the command-line defaults (a test checks they agree).
    fn default() -> Self {
        Self {
            request_timeout: defaults::REQUEST_TIMEOUT,
            max_concurrent_requests: defaults::MAX_CONCURRENT_REQUESTS,
            header_read_timeout: defaults::HEADER_READ_TIMEOUT,
            api_keys: None,
            api_keys_file: None,
            docs_ui: false,
        }
    }
}

/// Options of the order processor and the risk rules it (and order placement) applies.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ProcessorArgs {
    /// Processor workers; 0 runs none (orders then stay PENDING).
    #[arg(long, env = "PROCESSOR_WORKERS", default_value_t = 1)]
    pub processor_workers: usize,

    /// Orders claimed and written per processor batch.
    #[arg(long, env = "PROCESSOR_BATCH", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub processor_batch: u32,

    /// Longest time between two looks at the queue when no order arrives (new orders wake the
    /// processor at once).
    #[arg(long, env = "PROCESSOR_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub processor_poll_interval: Duration,

    /// Largest quantity per order; larger orders are REJECTED.
    #[arg(long, env = "MAX_ORDER_QUANTITY", value_parser = clap::value_parser!(i64).range(1..=i32::MAX as i64))]
    pub max_order_quantity: Option<i64>,

    /// Largest quantity × price per order; larger orders are REJECTED.
    #[arg(long, env = "MAX_ORDER_NOTIONAL")]
    pub max_order_notional: Option<f64>,

    /// Comma-separated symbols that may be traded (e.g. `AAPL,MSFT`); others are REJECTED.
    /// Unset: all symbols.
    #[arg(long, env = "ALLOWED_SYMBOLS")]
    pub allowed_symbols: Option<String>,
}

impl Default for ProcessorArgs {
    /// The same values as the command-line defaults (a test checks they agree).
    fn default() -> Self {
        Self {
            processor_workers: 1,
            processor_batch: 256,
            processor_poll_interval: Duration::from_secs(1),
            max_order_quantity: None,
            max_order_notional: None,
            allowed_symbols: None,
        }
    }
}

impl ProcessorArgs {
    /// The risk rules these options describe, or why they are unusable.
    pub fn risk_rules(&self) -> Result<RiskRules, ConfigError> {
        let max_quantity = self
            .max_order_quantity
            .map(|q| Quantity::parse(q).map_err(ConfigError::MaxOrderQuantity))
            .transpose()?;
        if let Some(n) = self.max_order_notional
            && !(n.is_finite() && n > 0.0)
        {
            return Err(ConfigError::MaxOrderNotional(n));
        }
        let allowed_symbols = self
            .allowed_symbols
            .as_deref()
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Symbol::parse(s).map_err(ConfigError::AllowedSymbol))
                    .collect::<Result<HashSet<_>, _>>()
            })
            .transpose()?;
        Ok(RiskRules {
            max_quantity,
            max_notional: self.max_order_notional,
            allowed_symbols,
        })
    }
}

/// Logging options.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter in `tracing` syntax (e.g. `info`, `stockorder=debug,tower_http=warn`).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info", global = true)]
    pub filter: String,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line, for log shippers (and for tests that read the log).
    Json,
}

/// Where orders are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://…` or `postgresql://…`), checked in full
    /// when the store connects.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `postgres://…`, `postgresql://…`, `sqlite://PATH`, `sqlite:PATH` or a plain file
    /// path.
    pub fn parse(raw: &str) -> Result<Self, DatabaseUrlError> {
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_owned()));
        }
        // `mysql:orders.db` must not quietly become a SQLite file of that name.
        if let Some((scheme, _)) = raw.split_once(':')
            && !scheme.is_empty()
            && scheme != "sqlite"
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            return Err(DatabaseUrlError::UnknownScheme(scheme.to_owned()));
        }
        let path = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
            .unwrap_or(raw);
        if path.is_empty() {
            return Err(DatabaseUrlError::NoFile);
        }
        if path == ":memory:" {
            return Err(DatabaseUrlError::InMemory);
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

impl DatabaseUrl {
    /// Where the orders are, for logs: the file, or `postgres://host/db` without credentials.
    pub fn describe(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => path.display().to_string(),
            DatabaseUrl::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                let rest = rest.split_once('?').map_or(rest, |(path, _)| path);
                format!("{scheme}://{rest}")
            }
        }
    }
}

/// Parses a bare number as seconds (`30`, `2.5`) and anything else with `humantime`
/// (`1500ms`, `30s`, `1m30s`): the same syntax as `stockorder-tools`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| format!("{raw:?} is not a non-negative duration"));
    }
    humantime::parse_duration(raw).map_err(|e| format!("{raw:?} is not a duration (try 30, 30s or 1500ms): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://a/b.db"),
            Ok(DatabaseUrl::Sqlite("a/b.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db"),
            Ok(DatabaseUrl::Sqlite("/tmp/x.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("orders.db"),
            Ok(DatabaseUrl::Sqlite("orders.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("postgres://u@db:5432/orders"),
            Ok(DatabaseUrl::Postgres("postgres://u@db:5432/orders".into()))
        );
        assert!(matches!(
            DatabaseUrl::parse("postgresql://db/orders"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert!(DatabaseUrl::parse("sqlite::memory:").is_err());
        assert_eq!(
            DatabaseUrl::parse("postgres://u:secret@db:5432/orders?sslmode=disable")
                .unwrap()
                .describe(),
            "postgres://db:5432/orders"
        );
        for unknown in ["mysql:orders.db", "mysql://db/orders", "file:orders.db", "redis://x"] {
            let err = DatabaseUrl::parse(unknown).unwrap_err();
            assert!(matches!(err, DatabaseUrlError::UnknownScheme(_)), "{unknown}: {err}");
        }
        assert_eq!(
            DatabaseUrl::parse("sqlite:odd:name.db"),
            Ok(DatabaseUrl::Sqlite("odd:name.db".into()))
        );
    }

    #[test]
    fn processor_defaults_match_the_command_line() {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            p: ProcessorArgs,
        }
        let vars = [
            "PROCESSOR_WORKERS",
            "PROCESSOR_BATCH",
            "PROCESSOR_POLL_INTERVAL",
            "MAX_ORDER_QUANTITY",
        ];
        if vars.iter().all(|v| std::env::var_os(v).is_none()) {
            assert_eq!(Only::try_parse_from(["x"]).unwrap().p, ProcessorArgs::default());
        }
    }

    #[test]
    fn limit_defaults_match_the_command_line_and_the_layers() {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            l: LimitArgs,
        }
        let vars = [
            "REQUEST_TIMEOUT",
            "MAX_CONCURRENT_REQUESTS",
            "HEADER_READ_TIMEOUT",
            "API_KEYS",
            "API_KEYS_FILE",
            "DOCS_UI",
        ];
        if vars.iter().all(|v| std::env::var_os(v).is_none()) {
            assert_eq!(Only::try_parse_from(["x"]).unwrap().l, LimitArgs::default());
        }
        assert_eq!(
            parse_duration(defaults::REQUEST_TIMEOUT_TEXT),
            Ok(defaults::REQUEST_TIMEOUT)
        );
        assert_eq!(
            parse_duration(defaults::HEADER_READ_TIMEOUT_TEXT),
            Ok(defaults::HEADER_READ_TIMEOUT)
        );
        assert_eq!(
            parse_duration(defaults::STARTUP_TIMEOUT_TEXT),
            Ok(defaults::STARTUP_TIMEOUT)
        );
    }

    #[test]
    fn risk_rules_from_options() {
        let args = ProcessorArgs {
            max_order_quantity: Some(1000),
            max_order_notional: Some(1e6),
            allowed_symbols: Some("aapl, MSFT,".into()),
            ..ProcessorArgs::default()
        };
        let rules = args.risk_rules().unwrap();
        assert_eq!(rules.allowed_symbols.unwrap().len(), 2);
        let bad = ProcessorArgs {
            allowed_symbols: Some("AAPL,$$".into()),
            ..ProcessorArgs::default()
        };
        assert!(matches!(bad.risk_rules(), Err(ConfigError::AllowedSymbol(_))));
        let bad = ProcessorArgs {
            max_order_notional: Some(-1.0),
            ..ProcessorArgs::default()
        };
        assert_eq!(bad.risk_rules(), Err(ConfigError::MaxOrderNotional(-1.0)));
    }

    #[test]
    fn no_arguments_means_serve_and_flags_override_env() {
        // Defaults are checked only where the environment (e.g. CI's DATABASE_URL) is silent.
        if std::env::var_os("DATABASE_URL").is_none() {
            let cli = Cli::try_parse_from(["stockorder"]).unwrap();
            assert_eq!(cli.serve.database_url, "sqlite://stock_orders.db");
        }
        let cli = Cli::try_parse_from(["stockorder", "--database-url", "sqlite://d.db"]).unwrap();
        assert!(cli.command.is_none());
        if std::env::var_os("PORT").is_none() {
            assert_eq!(cli.serve.port, 8082);
        }
        let cli =
            Cli::try_parse_from(["stockorder", "serve", "--port", "0", "--database-url", "sqlite://x.db"]).unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!((args.port, args.database_url.as_str()), (0, "sqlite://x.db"));
    }
}
