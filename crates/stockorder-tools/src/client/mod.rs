//! `stockorder-tools client http|grpc`: the original's two demo clients, plus one-shot commands.
//!
//! Without a subcommand a client is the original's loop: every `--interval` it places an AAPL
//! market order and prints one line per answer, so a person can watch a server restart or shut
//! down from the client's side. Ctrl+C cancels the request in flight and exits 0. With
//! `create`, `get`, `list` or `cancel` it makes one call and prints the answer as JSON, in the
//! same shape for both protocols, so the README can show them side by side.

mod grpc;
pub mod http;
mod render;

pub use render::code_name;

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::Value;

/// Options of `stockorder-tools client`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Which API to talk to.
    #[command(subcommand)]
    pub protocol: Protocol,
}

/// The two APIs of the service.
#[derive(Debug, Clone, Subcommand)]
pub enum Protocol {
    /// REST (HTTP/JSON).
    Http(ProtocolArgs<HttpDefault>),
    /// gRPC (stockorder.StockOrderService).
    Grpc(ProtocolArgs<GrpcDefault>),
}

/// Default server address per protocol, as a type so each subcommand's `--help` shows its own.
pub trait DefaultAddr: Clone + Send + Sync + 'static {
    /// The address used when `--addr` is not given.
    const ADDR: &'static str;
    /// The environment variable that overrides [`Self::ADDR`], so a shell (or the docs'
    /// generator) points every client and `load` at a server once instead of per command.
    const ENV: &'static str;
}

/// `http://localhost:8082`, the service's default HTTP port.
#[derive(Debug, Clone)]
pub struct HttpDefault;
impl DefaultAddr for HttpDefault {
    const ADDR: &'static str = "http://localhost:8082";
    const ENV: &'static str = "STOCKORDER_HTTP_ADDR";
}

/// `http://localhost:50051`, the service's default gRPC port.
#[derive(Debug, Clone)]
pub struct GrpcDefault;
impl DefaultAddr for GrpcDefault {
    const ADDR: &'static str = "http://localhost:50051";
    const ENV: &'static str = "STOCKORDER_GRPC_ADDR";
}

/// Options shared by both clients.
#[derive(Debug, Clone, Args)]
pub struct ProtocolArgs<D: DefaultAddr> {
    /// Server URL (`http://host:port`; `host:port` works too).
    #[arg(long, global = true, env = D::ENV, default_value = D::ADDR, value_parser = parse_url)]
    pub addr: String,

    /// One call instead of the loop.
    #[command(subcommand)]
    pub call: Option<Call>,

    /// Loop: time between orders (e.g. `1s`, `250ms`).
    #[arg(long, default_value = "1s", value_parser = crate::duration::parse)]
    pub interval: Duration,

    /// Loop: stop after this many orders (default: until Ctrl+C).
    #[arg(long)]
    pub count: Option<u64>,

    #[arg(skip)]
    _default: std::marker::PhantomData<D>,
}

/// A single call, printed as JSON.
#[derive(Debug, Clone, Subcommand)]
pub enum Call {
    /// Place an order.
    Create(CreateArgs),
    /// Read one order.
    Get {
        /// Order id.
        id: String,
    },
    /// List orders, newest first.
    List(ListArgs),
    /// Cancel a pending order.
    Cancel {
        /// Order id.
        id: String,
    },
    /// Follow the order event stream: one JSON line per event, as it comes. When the stream
    /// ends (a server shutting down, an upgrade) or the server is unreachable, it reconnects by
    /// itself and resumes after the last event it printed, until Ctrl+C.
    Watch(WatchArgs),
}

/// Where to start following, and what.
#[derive(Debug, Clone, Default, Args)]
pub struct WatchArgs {
    /// Resume after this sequence (0: the whole history the server holds). Default: live
    /// events only, from now.
    #[arg(long)]
    pub after: Option<u64>,
    /// Only this symbol's orders.
    #[arg(long)]
    pub symbol: Option<String>,
}

/// How one stream of events ended.
#[derive(Debug)]
pub(crate) enum StreamEnd {
    /// The server ended it as its protocol defines (shutting down): resume elsewhere.
    Ended,
    /// Ctrl+C.
    Interrupted,
}

/// The event stream, over either protocol: events are JSON in the REST shape
/// (`{"sequence":…,"type":…,"order":{…}}`).
pub(crate) trait EventApi {
    /// Follows from after `after` (`None`: live), calling `each` per event, until the stream
    /// ends or `stop` resolves.
    async fn watch(
        &mut self,
        after: Option<u64>,
        symbol: Option<&str>,
        each: &mut (dyn FnMut(Value) + Send),
        stop: std::pin::Pin<&mut (dyn std::future::Future<Output = ()> + Send)>,
    ) -> Result<StreamEnd, CallError>;
}

/// What to order.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Ticker symbol.
    #[arg(long, default_value = "AAPL")]
    pub symbol: String,
    /// MARKET or LIMIT.
    #[arg(long = "type", default_value = "MARKET")]
    pub order_type: String,
    /// BUY or SELL.
    #[arg(long, default_value = "BUY")]
    pub side: String,
    /// Number of shares.
    #[arg(long, default_value_t = 100)]
    pub quantity: i32,
    /// Limit price (LIMIT orders only).
    #[arg(long)]
    pub price: Option<f64>,
    /// Idempotency key: a retry with the same key places nothing new.
    #[arg(long)]
    pub client_order_id: Option<String>,
}

impl Default for CreateArgs {
    /// The original client's order: 100 AAPL at the market.
    fn default() -> Self {
        Self {
            symbol: "AAPL".into(),
            order_type: "MARKET".into(),
            side: "BUY".into(),
            quantity: 100,
            price: None,
            client_order_id: None,
        }
    }
}

/// Which orders to list.
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    /// Page size (1-1000, default 100).
    #[arg(long)]
    pub limit: Option<u32>,
    /// `next_page_token` of the previous page.
    #[arg(long)]
    pub page_token: Option<String>,
    /// Only this status (PENDING, FILLED, CANCELLED, REJECTED).
    #[arg(long)]
    pub status: Option<String>,
    /// Only this symbol.
    #[arg(long)]
    pub symbol: Option<String>,
    /// Only this side (BUY, SELL).
    #[arg(long)]
    pub side: Option<String>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server answered with an error (`HTTP 404: …`, `NOT_FOUND: …`).
    #[error("{0}")]
    Refused(String),
    /// The request did not get an answer (connection refused, reset, …).
    #[error("{0}")]
    Transport(String),
    /// The request could not be expressed in this protocol (an unknown enum name for gRPC).
    #[error("{0}")]
    Invalid(String),
}

/// `error: cause: deeper cause`, down to the root, which is usually what a person needs
/// ("Connection refused").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The four calls, over either protocol. Answers are JSON in the REST shape.
pub(crate) trait OrderApi {
    async fn create(&mut self, order: &CreateArgs) -> Result<Value, CallError>;
    async fn get(&mut self, id: &str) -> Result<Value, CallError>;
    async fn list(&mut self, query: &ListArgs) -> Result<Value, CallError>;
    async fn cancel(&mut self, id: &str) -> Result<Value, CallError>;
}

/// Runs `stockorder-tools client …`.
pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    match args.protocol {
        Protocol::Http(a) => {
            let api = http::HttpApi::new(&a.addr)?;
            drive(api, &a.addr, a.call, a.interval, a.count).await
        }
        Protocol::Grpc(a) => {
            let api = grpc::GrpcApi::new(&a.addr)?;
            drive(api, &a.addr, a.call, a.interval, a.count).await
        }
    }
}

/// `client … watch`: prints each event as a JSON line and resumes by itself after the last
/// one printed, reporting each reconnection on stderr, until Ctrl+C.
async fn watch_loop(mut api: impl EventApi, addr: &str, args: WatchArgs) -> anyhow::Result<()> {
    let stop = crate::process::terminated();
    tokio::pin!(stop);
    let mut after = args.after;
    let mut printed = 0_u64;
    let mut pause = Duration::from_millis(100);
    loop {
        let from = after;
        let mut each = |event: Value| {
            after = event["sequence"].as_u64().or(after);
            printed += 1;
            println!("{event}");
        };
        let ended = api.watch(from, args.symbol.as_deref(), &mut each, stop.as_mut()).await;
        match ended {
            Ok(StreamEnd::Interrupted) => break,
            Ok(StreamEnd::Ended) => {
                eprintln!(
                    "{}  the server ended the stream; resuming after {}",
                    render::clock(),
                    after.unwrap_or(0)
                );
                pause = Duration::from_millis(100);
            }
            // A refusal is the request's fault (a bad symbol, history no longer held): say it.
            Err(CallError::Refused(why)) | Err(CallError::Invalid(why)) => anyhow::bail!("{why}"),
            Err(e) => {
                eprintln!("{}  {}; trying again in {pause:?}", render::clock(), explain(&e, addr));
                tokio::select! {
                    biased;
                    () = &mut stop => break,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
    eprintln!("events printed: {printed}");
    Ok(())
}

async fn drive(
    mut api: impl OrderApi + EventApi,
    addr: &str,
    call: Option<Call>,
    interval: Duration,
    count: Option<u64>,
) -> anyhow::Result<()> {
    let answer = match call {
        None => return order_loop(api, addr, interval, count).await,
        Some(Call::Create(order)) => api.create(&order).await,
        Some(Call::Get { id }) => api.get(&id).await,
        Some(Call::List(query)) => api.list(&query).await,
        Some(Call::Cancel { id }) => api.cancel(&id).await,
        Some(Call::Watch(args)) => return watch_loop(api, addr, args).await,
    }
    .map_err(|e| anyhow::anyhow!(explain(&e, addr)))?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// The original clients' loop: one market order per interval, one line per answer, until
/// Ctrl+C (or SIGTERM), which cancels the request in flight and ends with exit code 0.
async fn order_loop(mut api: impl OrderApi, addr: &str, interval: Duration, count: Option<u64>) -> anyhow::Result<()> {
    let order = CreateArgs::default();
    let stop = crate::process::terminated();
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut sent, mut ok) = (0u64, 0u64);
    let mut first_error = None;
    while count.is_none_or(|n| sent < n) {
        // biased: the signal future is polled first, so its handler is installed before the
        // first request leaves; a Ctrl+C can never find the process without one.
        tokio::select! {
            biased;
            () = &mut stop => break,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        sent += 1;
        tokio::select! {
            biased;
            () = &mut stop => {
                println!("{}  interrupted: cancelled the request in flight", render::clock());
                sent -= 1;
                break;
            }
            answer = api.create(&order) => {
                ok += u64::from(answer.is_ok());
                println!("{}", render::loop_line(&answer, started.elapsed()));
                if let Err(e) = answer {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    println!("orders sent: {sent}, placed: {ok}, failed: {}", sent - ok);
    match first_error {
        // Every order failed: the exit code says so, with the first reason.
        Some(e) if ok == 0 => Err(anyhow::anyhow!("no order was placed: {}", explain(&e, addr))),
        _ => Ok(()),
    }
}

/// A failure as the person at the terminal needs it: a refused connection is said as "no
/// server at ADDR", which is what it nearly always means; anything else as it came.
fn explain(e: &CallError, addr: &str) -> String {
    match e {
        CallError::Transport(text) if text.contains("Connection refused") => {
            let at = addr
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            format!("no server at {at} (connection refused); start one, or point --addr at it")
        }
        other => other.to_string(),
    }
}

/// A server URL: `http://host:port`, or `host:port` taken as `http://host:port`.
fn parse_url(raw: &str) -> Result<String, String> {
    crate::process::host_port(raw).map(|addr| format!("http://{addr}"))
}
