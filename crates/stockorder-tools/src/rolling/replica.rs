//! One replica of the service: a `stockorder serve` process on fixed loopback ports, which a
//! rolling restart stops and starts again on the same ports.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::Child;

/// Where a replica listens, and how it is started.
#[derive(Debug, Clone)]
pub(super) struct ReplicaSpec {
    /// `r1`, `r2`, … as in `deploy/haproxy.cfg`.
    pub name: String,
    /// HTTP port.
    pub http_port: u16,
    /// gRPC port.
    pub grpc_port: u16,
    /// `DATABASE_URL` of every replica.
    pub database_url: String,
    /// `SHUTDOWN_DRAIN_DELAY`.
    pub drain_delay: Duration,
    /// Where its log goes (appended to by each generation).
    pub log: PathBuf,
}

/// A running replica.
pub(super) struct Replica {
    child: Child,
    pid: nix::unistd::Pid,
}

impl ReplicaSpec {
    /// Starts `stockorder serve` and waits until its `/ready` answers 200.
    pub(super) async fn start(&self) -> anyhow::Result<Replica> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot write {}", self.log.display()))?;
        let mut child = crate::service::serve_command()?
            .env("HOST", "127.0.0.1")
            .env("PORT", self.http_port.to_string())
            .env("GRPC_PORT", self.grpc_port.to_string())
            .env("DATABASE_URL", &self.database_url)
            .env("DATABASE_POOL_SIZE", "8")
            .env("SHUTDOWN_DRAIN_DELAY", format!("{}ms", self.drain_delay.as_millis()))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,stockorder=info")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start replica {}", self.name))?;
        let pid = child.id().context("the replica exited at once")?;
        let ready = wait_ready(self.http_port);
        tokio::select! {
            ready = tokio::time::timeout(Duration::from_secs(30), ready) => {
                ready.with_context(|| format!("replica {} was not ready within 30 s; see {}", self.name, self.log.display()))?;
            }
            status = child.wait() => {
                anyhow::bail!("replica {} exited before it was ready ({}); see {}", self.name, status?, self.log.display());
            }
        }
        Ok(Replica {
            child,
            pid: nix::unistd::Pid::from_raw(pid as i32),
        })
    }

    /// The replica's log file.
    pub(super) fn log(&self) -> &Path {
        &self.log
    }
}

impl Replica {
    /// Sends SIGTERM: the start of its graceful shutdown.
    pub(super) fn terminate(&self) -> anyhow::Result<()> {
        nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGTERM).context("cannot signal the replica")
    }

    /// Waits for the process to exit; its exit code.
    pub(super) async fn wait(mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .context("the replica did not exit in time")??;
        Ok(status.code())
    }
}

/// Polls `GET /ready` on the replica's HTTP port until it answers 200.
async fn wait_ready(port: u16) {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/ready");
    loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
