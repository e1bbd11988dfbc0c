//! The service as these tools see it from the outside: a process to start, a JSON log whose
//! stable `event` fields (docs/log-events.md) say when it listens and how it stops, and a REST
//! API through which what it stored is read back.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::client::{ListArgs, OrderApi, http::HttpApi};

/// The `event` of a JSON log line, or "" for a line without one.
pub fn event(line: &Value) -> &str {
    line["event"].as_str().unwrap_or_default()
}

/// The address in a line saying the server listens on `protocol` (`"http"` or `"grpc"`).
pub fn listening_on<'a>(line: &'a Value, protocol: &str) -> Option<&'a str> {
    (event(line) == "listening" && line["protocol"] == protocol)
        .then(|| line["addr"].as_str())
        .flatten()
}

/// `stockorder serve`, built beside this binary (see [`crate::process::sibling`]).
pub fn serve_command() -> anyhow::Result<Command> {
    let mut command = Command::new(crate::process::sibling("stockorder")?);
    command.arg("serve");
    Ok(command)
}

/// A `stockorder serve` process on free loopback ports, known ready once it has said where it
/// listens (both protocols); its JSON log is kept. Killed if dropped.
pub struct Server {
    child: Child,
    /// Where its REST API listens (`127.0.0.1:PORT`).
    pub http: String,
    /// Where its gRPC API listens.
    pub grpc: String,
    log: JoinHandle<Vec<Value>>,
}

impl Server {
    /// Starts `stockorder serve` on `database_url`, with JSON logs and `env` on top, and waits
    /// (at most 30 s) until it listens.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut child = serve_command()?
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("GRPC_PORT", "0")
            .env("DATABASE_URL", database_url)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("API_KEYS")
            .env_remove("API_KEYS_FILE")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start stockorder serve")?;
        let stdout = child.stdout.take().context("no stdout from stockorder")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut log = Vec::new();
        let listening = async {
            let (mut http, mut grpc) = (None, None);
            loop {
                if let (Some(http), Some(grpc)) = (&http, &grpc) {
                    return Ok((String::clone(http), String::clone(grpc)));
                }
                let Some(line) = lines.next_line().await? else {
                    anyhow::bail!("stockorder exited before listening (its errors are above)");
                };
                let Ok(line) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                http = http.or_else(|| listening_on(&line, "http").map(str::to_owned));
                grpc = grpc.or_else(|| listening_on(&line, "grpc").map(str::to_owned));
                log.push(line);
            }
        };
        let (http, grpc) = tokio::time::timeout(Duration::from_secs(30), listening)
            .await
            .context("stockorder did not listen within 30 s")??;
        // Keep reading its log, so a full pipe never blocks it.
        let log = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(line) = serde_json::from_str::<Value>(&line) {
                    log.push(line);
                }
            }
            log
        });
        Ok(Self { child, http, grpc, log })
    }

    /// The process id, to signal it.
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id().map_or(0, |id| id as i32))
    }

    /// Sends SIGTERM and waits (at most 60 s) for the exit: its code and the whole JSON log.
    pub async fn stop(mut self) -> anyhow::Result<(Option<i32>, Vec<Value>)> {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM).context("cannot signal stockorder")?;
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("stockorder did not exit within 60 s of SIGTERM")??;
        let log = self.log.await.unwrap_or_default();
        Ok((status.code(), log))
    }
}

/// A `stockorder serve` on `database_url` to read it back through (no processor, so nothing
/// changes): how the tools check what a run stored without reading the service's tables.
pub async fn reader(database_url: &str) -> anyhow::Result<Server> {
    Server::start(
        database_url,
        &[("PROCESSOR_WORKERS", "0"), ("RUST_LOG", "warn,stockorder=info")],
    )
    .await
    .context("cannot start stockorder to read the stored orders back")
}

/// Every order id stored in `database_url`, read back through a [`reader`] stopped afterwards.
pub async fn stored_ids(database_url: &str) -> anyhow::Result<HashSet<String>> {
    let server = reader(database_url).await?;
    let ids = stored_ids_of(&server).await?;
    server.stop().await?;
    Ok(ids)
}

/// Every order id `server` holds, paging through its REST API.
pub async fn stored_ids_of(server: &Server) -> anyhow::Result<HashSet<String>> {
    let mut api = HttpApi::new(&format!("http://{}", server.http))?;
    let mut ids = HashSet::new();
    let mut page_token = None;
    loop {
        let query = ListArgs {
            limit: Some(1000),
            page_token: page_token.take(),
            ..ListArgs::default()
        };
        let page = api.list(&query).await.context("cannot list the stored orders")?;
        for order in page["orders"].as_array().into_iter().flatten() {
            if let Some(id) = order["id"].as_str() {
                ids.insert(id.to_owned());
            }
        }
        match page["next_page_token"].as_str() {
            Some(token) => page_token = Some(token.to_owned()),
            None => break,
        }
    }
    Ok(ids)
}
