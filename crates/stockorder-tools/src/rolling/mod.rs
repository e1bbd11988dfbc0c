//! `stockorder-tools rolling-restart`: three replicas over one PostgreSQL database behind HAProxy,
//! restarted one at a time, round after round, under load, with every request accounted for.
//!
//! This is the deploy most services do every day, and where graceful shutdown pays off. Each
//! step is the shutdown contract (docs/shutdown.md) meeting a load balancer's health checks:
//!
//! 1. SIGTERM to one replica: `/ready` turns 503 at once, but it keeps serving.
//! 2. HAProxy's checks (`inter 250ms`, `fall 2`) take it out of rotation within ~0.5 s; no new
//!    request goes there. `SHUTDOWN_DRAIN_DELAY` (1.5 s here) is longer than that on purpose.
//! 3. The drain delay ends; the replica stops accepting, finishes what it has, closes the
//!    database pool, and exits 0.
//! 4. A new replica starts on the same ports; when its `/ready` answers 200 and HAProxy has it
//!    back in rotation, the next replica goes.
//!
//! Clients talk only to HAProxy, over HTTP/1.1 keep-alive and gRPC (HTTP/2). At the end the
//! database is read back: every acknowledged order must be there.

mod lb;
mod replica;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_postgres::NoTls;

use crate::load::{Driver, Latency, LoadProtocol};
use crate::process::free_port;
use crate::prove::tally::{Accounting, Request};
use crate::prove::{Next, place_orders};
use lb::{LbPorts, LoadBalancer};
use replica::{Replica, ReplicaSpec};

/// The replicas `deploy/haproxy.cfg` names (`r1` to `r3`).
const REPLICAS: usize = 3;

/// Options of `stockorder-tools rolling-restart`.
#[derive(Debug, Clone, Args)]
pub struct RollingArgs {
    /// The PostgreSQL database the replicas share. The run works in a schema of its own,
    /// dropped at the end (`--keep-schema` keeps it).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Full passes over the replicas.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// Clients placing orders back to back through HAProxy.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub concurrency: usize,

    /// Which API the clients use; `both` splits them evenly.
    #[arg(long, value_enum, default_value_t = Clients::Both)]
    pub protocol: Clients,

    /// `SHUTDOWN_DRAIN_DELAY` of the replicas: must be longer than HAProxy needs to take a
    /// replica out of rotation (2 checks × 250 ms in `deploy/haproxy.cfg`).
    #[arg(long, default_value = "1500ms", value_parser = crate::duration::parse)]
    pub drain_delay: Duration,

    /// Load before the first restart and after the last, for the steady-state latency.
    #[arg(long, default_value = "2s", value_parser = crate::duration::parse)]
    pub steady: Duration,

    /// The HAProxy configuration.
    #[arg(long, default_value = "deploy/haproxy.cfg")]
    pub haproxy_config: PathBuf,

    /// The HAProxy binary.
    #[arg(long, default_value = "haproxy")]
    pub haproxy: String,

    /// Keep the run's schema (and its orders) instead of dropping it.
    #[arg(long)]
    pub keep_schema: bool,

    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Also follow the order event stream through HAProxy with this many followers: each
    /// resumes on another replica after the last event it got whenever a replica's stop ends
    /// its stream, and at the end is compared with the history the log holds. An event
    /// missing, repeated or out of order fails the run.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
}

/// Which API the clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Clients {
    /// REST only.
    Http,
    /// gRPC only.
    Grpc,
    /// Half REST, half gRPC.
    Both,
}

/// One replica's restart, as timed from outside.
#[derive(Debug, Serialize)]
struct Restart {
    round: u32,
    replica: String,
    /// SIGTERM → HAProxy shows it out of rotation.
    out_of_rotation_ms: f64,
    /// SIGTERM → the process exited.
    exited_ms: f64,
    exit_code: Option<i32>,
    /// SIGTERM → the new replica answers `/ready`.
    new_ready_ms: f64,
    /// SIGTERM → HAProxy has the new one in rotation.
    back_in_rotation_ms: f64,
}

/// The result of a run.
#[derive(Debug, Serialize)]
struct Summary {
    replicas: usize,
    rounds: u32,
    http_clients: usize,
    grpc_clients: usize,
    requests: usize,
    acknowledged: usize,
    /// Refused at connect, or turned away unprocessed: none expected behind HAProxy.
    never_accepted: usize,
    failed: usize,
    lost: usize,
    unacknowledged: usize,
    outcomes: std::collections::BTreeMap<String, usize>,
    steady: Latency,
    during_restarts: Latency,
    restarts: Vec<Restart>,
    /// What the followers of the event stream received (`null` without `--watchers`).
    events: Option<crate::watchers::WatchTally>,
}

impl Summary {
    fn held(&self) -> bool {
        self.failed == 0
            && self.lost == 0
            && self.unacknowledged == 0
            && self.never_accepted == 0
            && self.restarts.iter().all(|r| r.exit_code == Some(0))
            && self.events.as_ref().is_none_or(|e| e.faults().is_empty())
    }
}

/// `url` with every session's `search_path` set to `schema`.
fn in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// Runs the rolling restart and prints the result; the exit code says whether it held.
pub async fn run(args: RollingArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(
        args.database_url.starts_with("postgres://") || args.database_url.starts_with("postgresql://"),
        "replicas must share a PostgreSQL database: set DATABASE_URL (or --database-url) to postgres://…"
    );
    anyhow::ensure!(
        args.haproxy_config.is_file(),
        "{} not found (run from the repository root, or pass --haproxy-config)",
        args.haproxy_config.display()
    );
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    // The replicas' and HAProxy's logs: removed after a run that held, kept after one that did
    // not (that is when they are read).
    let dir = tempfile::Builder::new()
        .prefix("rolling-restart-")
        .tempdir()
        .context("cannot create a temporary directory")?;

    // A schema of its own: the lost-order check reads exactly this run's orders.
    let (admin, connection) = tokio_postgres::connect(&args.database_url, NoTls)
        .await
        .context("cannot connect to PostgreSQL")?;
    // The connection's driver, ended (and joined) once the schema is dropped.
    let connection = tokio::spawn(connection);
    let schema = format!("rolling_restart_{}", uuid::Uuid::now_v7().simple());
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .context("cannot create the run's schema")?;
    let result = run_in_schema(&args, &in_schema(&args.database_url, &schema), dir.path()).await;
    // Read back over the API, as a client would, from a server of the same binary.
    let stored = crate::service::stored_ids(&in_schema(&args.database_url, &schema)).await;
    if args.keep_schema {
        eprintln!("kept schema {schema}");
    } else if let Err(e) = admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await {
        eprintln!("warning: could not drop schema {schema}: {e}");
    }
    drop(admin);
    let _ = connection.await;
    let keep_logs = |why: &str| eprintln!("{why}; the logs are kept in {}", dir.keep().display());
    let (requests, restarts, clients, events, stored) = match (result, stored) {
        (Ok((requests, restarts, clients, events)), Ok(stored)) => (requests, restarts, clients, events, stored),
        (Err(e), _) | (_, Err(e)) => {
            keep_logs("the run did not complete");
            return Err(e);
        }
    };
    let mut summary = summarize(&args, requests, restarts, clients, &stored);
    summary.events = events;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if summary.held() {
        std::process::ExitCode::SUCCESS
    } else {
        keep_logs("the run did not hold");
        std::process::ExitCode::FAILURE
    })
}

type Outcomes = (
    Vec<(Request, bool)>,
    Vec<Restart>,
    (usize, usize),
    Option<crate::watchers::WatchTally>,
);

/// Starts the replicas and HAProxy, loads them, rolls the replicas, and returns every request
/// (with whether it was sent during a restart) and the restarts' timings.
async fn run_in_schema(args: &RollingArgs, database_url: &str, dir: &std::path::Path) -> anyhow::Result<Outcomes> {
    let specs: Vec<ReplicaSpec> = (1..=REPLICAS)
        .map(|i| {
            Ok(ReplicaSpec {
                name: format!("r{i}"),
                http_port: free_port()?,
                grpc_port: free_port()?,
                database_url: database_url.to_owned(),
                drain_delay: args.drain_delay,
                log: dir.join(format!("r{i}.log")),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut replicas = Vec::new();
    for spec in &specs {
        replicas.push(Some(spec.start().await?));
    }
    let ports = LbPorts {
        http: free_port()?,
        grpc: free_port()?,
        stats: free_port()?,
    };
    let lb_log = dir.join("haproxy.log");
    let replica_ports: Vec<(u16, u16)> = specs.iter().map(|s| (s.http_port, s.grpc_port)).collect();
    let lb = LoadBalancer::start(&args.haproxy, &args.haproxy_config, ports, &replica_ports, &lb_log).await?;
    for spec in &specs {
        lb.wait_for(&["rest", "grpc"], &spec.name, true).await?;
    }
    let front = format!("http://127.0.0.1:{}", ports.http);
    let watchers = (args.watchers > 0).then(|| crate::watchers::Watchers::start(args.watchers, &front));
    eprintln!(
        "{REPLICAS} replicas up behind HAProxy (REST 127.0.0.1:{}, gRPC 127.0.0.1:{}); logs in {} (kept if the run fails)",
        ports.http,
        ports.grpc,
        dir.display()
    );

    // The clients: through HAProxy only, until told to stop.
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (mut clients, client_counts) = start_clients(args, ports, started, &stop)?;

    tokio::time::sleep(args.steady).await;
    let restarts_from = started.elapsed();
    let mut restarts = Vec::new();
    for round in 1..=args.rounds {
        for (spec, slot) in specs.iter().zip(replicas.iter_mut()) {
            restarts.push(restart(args, &lb, spec, slot, round).await?);
        }
    }
    let restarts_until = started.elapsed();
    tokio::time::sleep(args.steady).await;
    stop.store(true, Ordering::Relaxed);

    let mut requests = Vec::new();
    while let Some(done) = clients.join_next().await {
        requests.extend(done.context("a client task failed")?);
    }
    // The followers catch up through HAProxy with the last generation, which reads the history.
    let events = match watchers {
        Some(watchers) => Some(watchers.finish(&front, Duration::from_secs(30)).await?),
        None => None,
    };
    // Stop the last generation gracefully too, so every acknowledged write is in before the
    // database is read.
    for replica in replicas.into_iter().flatten() {
        replica.terminate()?;
        replica.wait(Duration::from_secs(60)).await?;
    }
    drop(lb);
    let requests = requests
        .into_iter()
        .map(|r| {
            let during = r.sent >= restarts_from && r.sent < restarts_until;
            (r, during)
        })
        .collect();
    Ok((requests, restarts, client_counts, events))
}

/// The load's clients, each returning what it saw of its requests.
type Running = JoinSet<Vec<Request>>;

/// The clients: through HAProxy only, until `stop` is set. Returns them and how many speak
/// HTTP and gRPC.
fn start_clients(
    args: &RollingArgs,
    ports: LbPorts,
    started: Instant,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<(Running, (usize, usize))> {
    let mut clients = JoinSet::new();
    let (mut http_clients, mut grpc_clients) = (0, 0);
    for i in 0..args.concurrency {
        let protocol = match args.protocol {
            Clients::Http => LoadProtocol::Http,
            Clients::Grpc => LoadProtocol::Grpc,
            Clients::Both if i % 2 == 0 => LoadProtocol::Http,
            Clients::Both => LoadProtocol::Grpc,
        };
        let addr = match protocol {
            LoadProtocol::Http => {
                http_clients += 1;
                format!("127.0.0.1:{}", ports.http)
            }
            LoadProtocol::Grpc => {
                grpc_clients += 1;
                format!("127.0.0.1:{}", ports.grpc)
            }
        };
        let driver = Driver::new(protocol, &addr)?;
        let stop = Arc::clone(stop);
        clients.spawn(place_orders(
            driver,
            started,
            Duration::from_secs(10),
            None,
            move |_| {
                if stop.load(Ordering::Relaxed) {
                    Next::Stop
                } else {
                    Next::Send
                }
            },
        ));
    }

    Ok((clients, (http_clients, grpc_clients)))
}

/// One replica restarted: SIGTERM, out of HAProxy's rotation and exited (timed independently:
/// with no drain delay the process may exit before HAProxy notices, and that order is part of
/// what the run shows), a new process started in its slot, back in rotation.
async fn restart(
    args: &RollingArgs,
    lb: &LoadBalancer,
    spec: &ReplicaSpec,
    slot: &mut Option<Replica>,
    round: u32,
) -> anyhow::Result<Restart> {
    let old = slot.take().context("replica missing")?;
    let t0 = Instant::now();
    old.terminate()?;
    let out = async {
        let limit = args.drain_delay * 4 + Duration::from_secs(5);
        tokio::time::timeout(limit, lb.wait_for(&["rest", "grpc"], &spec.name, false))
            .await
            .with_context(|| format!("HAProxy never took {} out of rotation", spec.name))??;
        anyhow::Ok(t0.elapsed())
    };
    let exit = async {
        let code = old.wait(Duration::from_secs(60)).await?;
        anyhow::Ok((code, t0.elapsed()))
    };
    let (out_ms, exit) = tokio::join!(out, exit);
    let (out_ms, (exit_code, exited)) = (out_ms?, exit?);
    let new = spec.start().await?;
    let ready = t0.elapsed();
    lb.wait_for(&["rest", "grpc"], &spec.name, true).await?;
    let back = t0.elapsed();
    *slot = Some(new);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "round {round} {}: SIGTERM → out of rotation {:.0} ms → exit {:.0} ms (code {}) → new replica ready {:.0} ms → back in rotation {:.0} ms",
        spec.name,
        ms(out_ms),
        ms(exited),
        exit_code.map_or("signal".to_owned(), |c| c.to_string()),
        ms(ready),
        ms(back)
    );
    let restart = Restart {
        round,
        replica: spec.name.clone(),
        out_of_rotation_ms: ms(out_ms),
        exited_ms: ms(exited),
        exit_code,
        new_ready_ms: ms(ready),
        back_in_rotation_ms: ms(back),
    };
    if exit_code != Some(0) {
        eprintln!(
            "replica {} exited with {exit_code:?}; see {}",
            spec.name,
            spec.log().display()
        );
    }
    Ok(restart)
}

fn summarize(
    args: &RollingArgs,
    requests: Vec<(Request, bool)>,
    restarts: Vec<Restart>,
    (http_clients, grpc_clients): (usize, usize),
    stored: &HashSet<String>,
) -> Summary {
    let counts = Accounting::of(requests.iter().map(|(r, _)| r), Some(stored));
    let latency = |during: bool| {
        Latency::of(
            requests
                .iter()
                .filter(|(r, d)| *d == during && r.id.is_some())
                .map(|(r, _)| (r.answered - r.sent).as_micros().min(u128::from(u32::MAX)) as u32)
                .collect(),
        )
    };
    Summary {
        replicas: REPLICAS,
        rounds: args.rounds,
        http_clients,
        grpc_clients,
        requests: counts.requests,
        acknowledged: counts.acknowledged,
        never_accepted: counts.never_accepted,
        failed: counts.failed,
        // Both are counted: `stored` was given.
        lost: counts.lost.unwrap_or_default(),
        unacknowledged: counts.unacknowledged.unwrap_or_default(),
        outcomes: counts.outcomes,
        steady: latency(false),
        during_restarts: latency(true),
        restarts,
        events: None,
    }
}

fn print_summary(s: &Summary) {
    println!(
        "\nrolling restart: {} replicas × {} rounds behind HAProxy; {} clients ({} HTTP, {} gRPC)\n",
        s.replicas,
        s.rounds,
        s.http_clients + s.grpc_clients,
        s.http_clients,
        s.grpc_clients
    );
    let line = |what: &str, n: usize, why: &str| println!("{}", format!("  {what:<18} {n:>9}   {why}").trim_end());
    line("requests sent", s.requests, "");
    line("acknowledged", s.acknowledged, "orders placed and confirmed");
    line("never accepted", s.never_accepted, "refused or turned away unprocessed");
    line(
        "failed",
        s.failed,
        "accepted but not acknowledged: error answers, resets, closes, timeouts",
    );
    for (label, n) in &s.outcomes {
        if label != "HTTP 201" && label != "gRPC OK" {
            line(&format!("  {label}"), *n, "");
        }
    }
    line("lost", s.lost, "acknowledged, but missing from the database");
    line(
        "unacknowledged",
        s.unacknowledged,
        "in the database, but no client saw it acknowledged",
    );
    println!();
    println!("  latency (ms)          requests      p50      p90      p99      max");
    for (what, l) in [("steady state", &s.steady), ("during restarts", &s.during_restarts)] {
        println!(
            "  {what:<18} {:>12} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            l.requests, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
        );
    }
    if let Some(e) = &s.events {
        println!();
        println!("  event stream, {} followers through HAProxy:", e.watchers);
        line(
            "events in the log",
            e.expected,
            "what each follower should have received",
        );
        line("received", e.received, "all followers together");
        line(
            "streams resumed",
            e.reconnects,
            "ended by a replica's stop, resumed on another",
        );
        line("missing", e.missing, "in the log, never received by a follower");
        line("repeated", e.repeated, "received twice by one follower");
        line("out of order", e.out_of_order, "received after a later one");
    }
    println!();
    if s.held() {
        println!("  PASS: no request failed and no acknowledged order is missing");
    } else {
        println!("  FAIL: see the lines above that are not 0");
    }
}
