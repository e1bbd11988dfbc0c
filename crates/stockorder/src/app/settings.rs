//! The command line turned into typed, checked settings, before anything is acquired: a bad
//! value fails the start before a port is taken or a database file is created.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use phased_shutdown::serve::ConnectionLimits;

use super::StartupError;
use crate::adapter::inbound::http;
use crate::adapter::inbound::middleware::admission::Limits;
use crate::adapter::inbound::middleware::api_keys::ApiKeys;
use crate::adapter::outbound::postgres::Timeouts;
use crate::config::{ConfigError, DatabaseUrl, ServeArgs, defaults};
use crate::domain::RiskRules;
use crate::port::EventRetention;
use crate::processor::ProcessorConfig;

/// Everything `serve` needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the REST API listens (unless the service manager passes sockets).
    pub http_addr: SocketAddr,
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// The order store.
    pub store: StoreSettings,
    /// What the desk refuses.
    pub rules: RiskRules,
    /// The REST API's options; their limits apply to the gRPC port too.
    pub http: http::Options,
    /// Slow-client bounds of both ports.
    pub connection_limits: ConnectionLimits,
    /// The order processor.
    pub processor: ProcessorConfig,
    /// `SHUTDOWN_TIMEOUT`: the whole shutdown, drain delay included.
    pub shutdown_timeout: Duration,
    /// `SHUTDOWN_DRAIN_DELAY`, shorter than the timeout.
    pub drain_delay: Duration,
    /// What a SIGHUP upgrade starts, when not this process's own binary.
    pub upgrade_binary: Option<PathBuf>,
}

/// Where orders are and how long to wait for them.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `DATABASE_URL`, parsed.
    pub url: DatabaseUrl,
    /// PostgreSQL connections per process.
    pub pool_size: usize,
    /// PostgreSQL's connect and statement timeouts, and `STARTUP_TIMEOUT`.
    pub timeouts: Timeouts,
    /// How much of the event log is kept.
    pub retention: EventRetention,
}

impl StoreSettings {
    /// The store at `url`, with timeouts derived from the request timeout (a statement may take
    /// as long as the request it serves, a connection at most 5 s of it) and the start-up limit.
    pub fn new(
        url: &str,
        pool_size: u32,
        request_timeout: Duration,
        startup_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            url: DatabaseUrl::parse(url)?,
            pool_size: pool_size as usize,
            timeouts: Timeouts {
                connect: request_timeout.min(Duration::from_secs(5)),
                statement: request_timeout,
                startup: startup_timeout,
            },
            retention: EventRetention::default(),
        })
    }

    /// The store at `url` with the command line's defaults.
    pub fn defaults(url: &str) -> Result<Self, ConfigError> {
        Self::new(
            url,
            defaults::DATABASE_POOL_SIZE,
            defaults::REQUEST_TIMEOUT,
            defaults::STARTUP_TIMEOUT,
        )
    }
}

impl Settings {
    /// Checks `args`; reads `API_KEYS_FILE` if one is named (a file that cannot be read fails
    /// here, like any other setting).
    pub fn from_args(args: &ServeArgs) -> Result<Self, StartupError> {
        if args.shutdown_drain_delay >= args.shutdown_timeout {
            return Err(ConfigError::DrainDelayTooLong {
                drain: args.shutdown_drain_delay,
                deadline: args.shutdown_timeout,
            }
            .into());
        }
        let limits = &args.limits;
        let keys = ApiKeys::load(limits.api_keys.as_deref(), limits.api_keys_file.as_deref())?;
        if let Some(keys) = &keys {
            tracing::info!(?keys, "API keys required for the order API");
        }
        Ok(Self {
            http_addr: SocketAddr::new(args.host, args.port),
            grpc_addr: SocketAddr::new(args.host, args.grpc_port),
            store: StoreSettings {
                retention: EventRetention {
                    max_age: args.event_retention,
                    max_events: args.event_retention_count,
                },
                ..StoreSettings::new(
                    &args.database_url,
                    args.database_pool_size,
                    limits.request_timeout,
                    args.startup_timeout,
                )?
            },
            rules: args.processor.risk_rules()?,
            http: http::Options {
                limits: Limits {
                    keys: keys.map(Arc::new),
                    max_concurrent: limits.max_concurrent_requests as usize,
                    timeout: limits.request_timeout,
                },
                docs_ui: limits.docs_ui,
            },
            connection_limits: ConnectionLimits::default().header_read_timeout(limits.header_read_timeout),
            processor: ProcessorConfig {
                workers: args.processor.processor_workers,
                batch: args.processor.processor_batch,
                poll_interval: args.processor.processor_poll_interval,
            },
            shutdown_timeout: args.shutdown_timeout,
            drain_delay: args.shutdown_drain_delay,
            upgrade_binary: args.upgrade_binary.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::Cli;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["stockorder"];
        if !extra.contains(&"--database-url") {
            argv.extend(["--database-url", "sqlite://x.db"]);
        }
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().serve
    }

    #[test]
    fn a_drain_delay_as_long_as_the_deadline_is_refused_by_name() {
        let err =
            Settings::from_args(&args(&["--shutdown-timeout", "5s", "--shutdown-drain-delay", "5s"])).unwrap_err();
        assert!(matches!(
            err,
            StartupError::Config(ConfigError::DrainDelayTooLong { .. })
        ));
        assert!(
            err.to_string()
                .contains("SHUTDOWN_DRAIN_DELAY (5s) must be shorter than SHUTDOWN_TIMEOUT (5s)"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_database_url_and_bad_rules_are_config_errors() {
        let err = Settings::from_args(&args(&["--database-url", "mysql://db"])).unwrap_err();
        assert!(
            matches!(err, StartupError::Config(ConfigError::DatabaseUrl(_))),
            "{err}"
        );
        let err = Settings::from_args(&args(&["--allowed-symbols", "AAPL,$$"])).unwrap_err();
        assert!(
            matches!(err, StartupError::Config(ConfigError::AllowedSymbol(_))),
            "{err}"
        );
    }

    #[test]
    fn the_service_and_a_lesson_open_the_store_with_the_same_timeouts() {
        if std::env::vars()
            .any(|(k, _)| ["REQUEST_TIMEOUT", "STARTUP_TIMEOUT", "DATABASE_POOL_SIZE"].contains(&k.as_str()))
        {
            return; // the environment sets what this compares
        }
        let served = Settings::from_args(&args(&[])).unwrap().store;
        let lesson = StoreSettings::defaults("sqlite://x.db").unwrap();
        assert_eq!(served.timeouts, lesson.timeouts);
        assert_eq!(served.pool_size, lesson.pool_size);
    }
}
