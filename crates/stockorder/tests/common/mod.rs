//! Test harness: the real service on port 0 with a temp database, reached over real sockets.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use stockorder::app::Application;
use stockorder::config::ServeArgs;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// An in-process instance (`Application::build` + `run_until`), like zero2prod's `spawn_app`.
pub struct TestApp {
    pub addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub fn serve_args(db: &Path) -> ServeArgs {
    ServeArgs {
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        grpc_port: 0,
        database_url: format!("sqlite://{}", db.display()),
    }
}

pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let app = Application::build(&serve_args(&dir.path().join("orders.db")))
        .await
        .unwrap();
    let addr = app.http_addr();
    let grpc_addr = app.grpc_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until(async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        addr,
        grpc_addr,
        client: reqwest::Client::new(),
        stop: Some(stop),
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

    /// Stops the app the way a signal would and waits until the database is closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

pub fn market_order() -> Value {
    serde_json::json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 100})
}

/// The real `stockorder` binary as a child process, with JSON logs read line by line.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub log: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl ServerProcess {
    /// Starts `stockorder serve` on port 0 with `db` and waits until its log says it listens.
    pub async fn start(db: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stockorder"))
            .arg("serve")
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("GRPC_PORT", "0")
            .env("DATABASE_URL", PathBuf::from(db))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start stockorder");
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
        let (addr, grpc_addr) = tokio::time::timeout(Duration::from_secs(20), async {
            let (mut http, mut grpc) = (None, None);
            while http.is_none() || grpc.is_none() {
                let line = log.recv().await.expect("server exited before listening");
                let addr = || line["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap();
                match line["message"].as_str() {
                    Some("HTTP server listening") => http = Some(addr()),
                    Some("gRPC server listening") => grpc = Some(addr()),
                    _ => {}
                }
            }
            (http.unwrap(), grpc.unwrap())
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
