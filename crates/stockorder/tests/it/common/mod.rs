//! Test harness: the real service on port 0 with a temp database, reached over real sockets.
#![allow(dead_code)] // not every part of the harness is used

pub mod cluster;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use stockorder::app::Application;
use stockorder::config::ServeArgs;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// An in-process instance (`Application::build` + `run`), like zero2prod's `spawn_app`.
pub struct TestApp {
    pub addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: phased_shutdown::ShutdownHandle,
    task: Option<tokio::task::JoinHandle<phased_shutdown::Report>>,
    _dir: tempfile::TempDir,
}

pub fn serve_args(db: &Path) -> ServeArgs {
    ServeArgs {
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        grpc_port: 0,
        shutdown_timeout: Duration::from_secs(10),
        shutdown_drain_delay: Duration::ZERO,
        processor: Default::default(),
        limits: Default::default(),
        database_url: format!("sqlite://{}", db.display()),
        database_pool_size: 4,
        startup_timeout: Duration::from_secs(10),
        upgrade_binary: None,
        event_retention: Duration::from_secs(24 * 3600),
        event_retention_count: 1_000_000,
    }
}

/// An instance without the order processor: orders stay exactly as the API left them, which is
/// what tests of the REST and gRPC contracts need.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|args| args.processor.processor_workers = 0).await
}

/// An instance with `configure` applied to the test defaults (processor on).
pub async fn spawn_app_with(configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(&dir.path().join("orders.db"));
    configure(&mut args);
    let app = Application::build(&args).await.unwrap();
    let addr = app.http_addr();
    let grpc_addr = app.grpc_addr();
    let shutdown = app.shutdown();
    let handle = shutdown.handle();
    let task = tokio::spawn(app.run(shutdown));
    TestApp {
        addr,
        grpc_addr,
        client: reqwest::Client::new(),
        shutdown: handle,
        task: Some(task),
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(&body).send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Stops the app the way a signal would, waits until the database is closed, and checks
    /// the shutdown was clean.
    pub async fn stop(mut self) -> phased_shutdown::Report {
        // Close the client's kept connections first, so the server has no idle connection to
        // give its grace to.
        drop(std::mem::replace(&mut self.client, reqwest::Client::new()));
        self.shutdown.shutdown("test finished");
        let report = self.task.take().unwrap().await.unwrap();
        assert!(report.is_clean(), "{report}");
        report
    }
}

pub fn market_order() -> Value {
    serde_json::json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 100})
}

/// [`market_order`] as a gRPC request.
pub fn grpc_market_order() -> stockorder::adapter::inbound::grpc::proto::CreateOrderRequest {
    use stockorder::adapter::inbound::grpc::proto;
    proto::CreateOrderRequest {
        symbol: "AAPL".into(),
        order_type: proto::OrderType::Market.into(),
        order_side: proto::OrderSide::Buy.into(),
        quantity: 100,
        ..Default::default()
    }
}

/// The real `stockorder` binary as a child process, with JSON logs read line by line.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// The gRPC address; the HTTP one for a program without gRPC (demo_1, demo_2).
    pub grpc_addr: SocketAddr,
    pub log: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl ServerProcess {
    /// Starts `stockorder serve` on port 0 with `db` and waits until its log says it listens.
    pub async fn start(db: &Path, env: &[(&str, &str)]) -> Self {
        let mut serve = Command::new(env!("CARGO_BIN_EXE_stockorder"));
        serve.arg("serve");
        Self::spawn(serve, db, env, true).await
    }

    /// Starts `command` (the binary wrapped, e.g. in `ip netns exec`) like [`ServerProcess::start`].
    pub async fn start_command(command: Command, db: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(command, db, env, true).await
    }

    /// Starts one of the examples (`demo_1`…), built by `cargo test` beside the test binaries.
    pub async fn start_example(name: &str, db: &Path, env: &[(&str, &str)], grpc: bool) -> Self {
        let examples = std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("examples");
        Self::spawn(Command::new(examples.join(name)), db, env, grpc).await
    }

    async fn spawn(mut command: Command, db: &Path, env: &[(&str, &str)], grpc: bool) -> Self {
        let mut child = command
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("GRPC_PORT", "0")
            .env("DATABASE_URL", PathBuf::from(db))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            // Not under a service manager, whatever runs the tests.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the server");
        let stdout = child.stdout.take().unwrap();
        let (tx, mut log) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let grpc_expected = grpc;
        let (addr, grpc_addr) = tokio::time::timeout(Duration::from_secs(20), async {
            let (mut http, mut grpc) = (None, None);
            while http.is_none() || (grpc_expected && grpc.is_none()) {
                let line = log.recv().await.expect("server exited before listening");
                let addr = || line["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap();
                match (line["event"].as_str(), line["protocol"].as_str()) {
                    (Some("listening"), Some("http")) => http = Some(addr()),
                    (Some("listening"), Some("grpc")) => grpc = Some(addr()),
                    _ => {}
                }
            }
            let http = http.unwrap();
            (http, grpc.unwrap_or(http))
        })
        .await
        .expect("server did not report its addresses");
        Self {
            child,
            addr,
            grpc_addr,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every order in the database, by id, paging through the REST API.
    pub async fn all_orders(&self) -> std::collections::HashMap<String, Value> {
        Self::all_orders_at(&format!("http://{}", self.addr)).await
    }

    /// Every order of the server at `base` (`http://host:port`), by id, following the pages.
    pub async fn all_orders_at(base: &str) -> std::collections::HashMap<String, Value> {
        let client = reqwest::Client::new();
        let mut orders = std::collections::HashMap::new();
        let mut next = format!("{base}/api/orders?limit=1000");
        loop {
            let resp = client.get(&next).send().await.unwrap();
            let link = resp.headers().get("link").map(|l| l.to_str().unwrap().to_owned());
            let page: Vec<Value> = resp.json().await.unwrap();
            orders.extend(page.into_iter().map(|o| (o["id"].as_str().unwrap().to_owned(), o)));
            match link {
                Some(l) => next = format!("{base}{}", l.trim_start_matches('<').split('>').next().unwrap()),
                None => return orders,
            }
        }
    }

    /// Waits for the next log line whose `event` is `event` (docs/log-events.md).
    pub async fn wait_for_event(&mut self, event: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let line = self.log.recv().await.expect("server exited before logging it");
                if line["event"] == event {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {event:?} event in the log"))
    }

    /// Every log line left, up to the process's exit.
    pub async fn rest_of_log(&mut self) -> Vec<Value> {
        let mut lines = Vec::new();
        while let Some(line) = self.log.recv().await {
            lines.push(line);
        }
        lines
    }

    /// Sends SIGHUP to `pid` (this process, or one that took over from it) and returns the pid
    /// of the process that took over in turn: one in-place upgrade.
    pub async fn upgrade(&mut self, pid: nix::unistd::Pid) -> nix::unistd::Pid {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        let line = self.wait_for_event("upgrade.handover").await;
        nix::unistd::Pid::from_raw(line["new_pid"].as_i64().unwrap() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait(&mut self) -> Option<i32> {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("server did not exit")
            .unwrap()
            .code()
    }
}

/// A PostgreSQL schema of its own for one test, and a `DATABASE_URL` whose sessions use it;
/// dropped by [`PgSchema::drop_now`]. `None`, with the reason printed, when `TEST_DATABASE_URL`
/// (or `DATABASE_URL`) names no reachable PostgreSQL.
pub struct PgSchema {
    pub name: String,
    /// `DATABASE_URL` for a server working in this schema.
    pub url: String,
    admin: tokio_postgres::Client,
}

impl PgSchema {
    pub async fn create() -> Option<Self> {
        let Some(base) = pg_url() else {
            skip(format_args!(
                "set TEST_DATABASE_URL (or DATABASE_URL) to postgres://… to run this test"
            ));
            return None;
        };
        let (admin, connection) = match tokio_postgres::connect(&base, tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) => {
                skip(format_args!("PostgreSQL at {base} is not reachable: {e}"));
                return None;
            }
        };
        tokio::spawn(connection);
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        admin.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Some(Self { name, url, admin })
    }

    pub async fn drop_now(self) {
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .unwrap();
    }
}

/// `TEST_DATABASE_URL`, else `DATABASE_URL`, when it is a PostgreSQL URL.
pub fn pg_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

/// Clients placing orders back to back over REST and gRPC until [`OrderClients::finish`]:
/// the load that restarts must not break.
pub struct OrderClients {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: tokio::task::JoinSet<Vec<(stockorder_tools::load::Outcome, Option<String>)>>,
}

/// What the clients saw: acknowledged order ids, and every other outcome by label.
pub struct Seen {
    pub acked: Vec<String>,
    pub other: std::collections::BTreeMap<String, usize>,
}

impl OrderClients {
    /// `n` clients; every `grpc_every`-th one uses gRPC at `grpc`, the others REST at `http`.
    pub fn start(n: usize, grpc_every: usize, http: &str, grpc: &str) -> Self {
        use stockorder_tools::load::{Driver, LoadProtocol};
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = tokio::task::JoinSet::new();
        for i in 0..n {
            let (protocol, addr) = if i % grpc_every == 0 {
                (LoadProtocol::Grpc, grpc)
            } else {
                (LoadProtocol::Http, http)
            };
            let mut driver = Driver::new(protocol, addr).unwrap();
            let stop = std::sync::Arc::clone(&stop);
            clients.spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    seen.push(driver.place_order().await);
                }
                seen
            });
        }
        Self { stop, clients }
    }

    /// Stops the clients (each after its request in flight) and says what they saw. An HTTP/2
    /// call turned away unprocessed by a GOAWAY is left out of `other`: it was never accepted,
    /// is safe to retry, and tonic does not retry it by itself.
    pub async fn finish(mut self) -> Seen {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut seen = Seen {
            acked: Vec::new(),
            other: std::collections::BTreeMap::new(),
        };
        let mut turned_away = 0;
        while let Some(outcomes) = self.clients.join_next().await {
            for (outcome, id) in outcomes.unwrap() {
                match id {
                    Some(id) => seen.acked.push(id),
                    None if outcome == stockorder_tools::load::Outcome::NotProcessed => turned_away += 1,
                    None => *seen.other.entry(outcome.label()).or_insert(0) += 1,
                }
            }
        }
        eprintln!(
            "acknowledged {}, turned away unprocessed {turned_away}, other outcomes {:?}",
            seen.acked.len(),
            seen.other
        );
        seen
    }
}

/// Clients placing orders back to back over REST, each create with its own `client_order_id`,
/// recording every answer: the accounting of the fault tests.
pub struct Creators {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: tokio::task::JoinSet<Vec<Answer>>,
    pub started: std::time::Instant,
}

/// One create's answer, as a client saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// When, since [`Creators::start`].
    pub at: Duration,
    /// The HTTP status, or `None` when no answer came (a refused or broken connection).
    pub status: Option<u16>,
    pub retry_after: bool,
    /// The order's id, for 200/201.
    pub id: Option<String>,
    pub error: String,
}

impl Creators {
    /// `n` clients spread over `bases` (`http://host:port`).
    pub fn start(n: usize, bases: &[String]) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let base = bases[i % bases.len()].clone();
            let stop = std::sync::Arc::clone(&stop);
            tasks.spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut answers = Vec::new();
                let mut seq = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    seq += 1;
                    let body = serde_json::json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY",
                        "quantity": 1, "client_order_id": format!("c{i}-{seq}")});
                    let sent = client.post(format!("{base}/api/orders")).json(&body).send().await;
                    let at = started.elapsed();
                    let answer = match sent {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let retry_after = resp.headers().contains_key("retry-after");
                            let v: Value = resp.json().await.unwrap_or(Value::Null);
                            Answer {
                                at,
                                status: Some(status),
                                retry_after,
                                id: v["id"].as_str().map(str::to_owned),
                                error: v["error"].as_str().unwrap_or_default().to_owned(),
                            }
                        }
                        Err(e) => Answer {
                            at,
                            status: None,
                            retry_after: false,
                            id: None,
                            error: e.to_string(),
                        },
                    };
                    let failed = !matches!(answer.status, Some(200 | 201));
                    answers.push(answer);
                    if failed {
                        // As a client honouring Retry-After would, but quicker, to see recovery.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                answers
            });
        }
        Self { stop, tasks, started }
    }

    pub async fn finish(mut self) -> Vec<Answer> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        while let Some(answers) = self.tasks.join_next().await {
            all.extend(answers.unwrap());
        }
        all.sort_by_key(|a| a.at);
        all
    }
}

/// What the clients saw, by status, for the test's output and docs/faults.md.
pub fn status_mix(answers: &[Answer]) -> std::collections::BTreeMap<String, usize> {
    let mut mix = std::collections::BTreeMap::new();
    for a in answers {
        let key = a.status.map_or_else(|| "no answer".to_owned(), |s| s.to_string());
        *mix.entry(key).or_insert(0) += 1;
    }
    mix
}

/// The fault promise: clients see only 200/201, 503 with Retry-After, or 504; never a 500 or a
/// broken connection.
pub fn assert_only_allowed(answers: &[Answer]) {
    for a in answers {
        match a.status {
            Some(200 | 201 | 504) => {}
            Some(503) => assert!(a.retry_after, "503 without Retry-After: {a:?}"),
            _ => panic!("a client saw {a:?}; mix {:?}", status_mix(answers)),
        }
    }
}

/// The first acknowledged create at or after `from`, as time after `from`.
pub fn recovered_after(answers: &[Answer], from: Duration) -> Option<Duration> {
    answers
        .iter()
        .find(|a| a.at >= from && matches!(a.status, Some(200 | 201)))
        .map(|a| a.at - from)
}

/// Polls `/ready` until it answers `status`, for at most `within`; false if it never did.
pub async fn ready_becomes(base: &str, status: u16, within: Duration) -> bool {
    let client = reqwest::Client::new();
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        if let Ok(resp) = client.get(format!("{base}/ready")).send().await
            && resp.status().as_u16() == status
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

// The same skip() as the crate's unit tests: one definition, compiled into both.
#[path = "../../../src/testing.rs"]
mod testing;
pub(crate) use testing::skip;
