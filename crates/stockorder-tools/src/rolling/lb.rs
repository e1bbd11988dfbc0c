//! HAProxy, started with `deploy/haproxy.cfg`, and what its stats page says about each
//! replica.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// The ports HAProxy listens on.
#[derive(Debug, Clone, Copy)]
pub(super) struct LbPorts {
    /// REST.
    pub http: u16,
    /// gRPC (HTTP/2).
    pub grpc: u16,
    /// The stats page.
    pub stats: u16,
}

/// A running HAProxy; killed when dropped.
pub(super) struct LoadBalancer {
    _child: Child,
    stats_url: String,
    client: reqwest::Client,
}

/// Whether HAProxy routes to a server, by `backend/server`.
pub(super) type Rotation = HashMap<String, bool>;

impl LoadBalancer {
    /// Starts `haproxy` in the foreground with `config`, replicas' ports in the environment
    /// (`STOCKORDER_R1_HTTP`, …), and waits until its stats page answers.
    pub(super) async fn start(
        haproxy: &str,
        config: &Path,
        ports: LbPorts,
        replicas: &[(u16, u16)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log).with_context(|| format!("cannot write {}", log.display()))?;
        let mut cmd = Command::new(haproxy);
        cmd.arg("-db")
            .arg("-f")
            .arg(config)
            .env("STOCKORDER_LB_HOST", "127.0.0.1")
            .env("STOCKORDER_LB_HTTP_PORT", ports.http.to_string())
            .env("STOCKORDER_LB_GRPC_PORT", ports.grpc.to_string())
            .env("STOCKORDER_LB_STATS_PORT", ports.stats.to_string());
        for (i, (http, grpc)) in replicas.iter().enumerate() {
            cmd.env(format!("STOCKORDER_R{}_HTTP", i + 1), http.to_string())
                .env(format!("STOCKORDER_R{}_GRPC", i + 1), grpc.to_string());
        }
        let mut child = cmd
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {haproxy} (install it: apt-get install haproxy)"))?;
        // Fail fast on a config error instead of waiting for a stats page that never comes.
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_millis(200), child.wait()).await {
            anyhow::bail!("{haproxy} exited at once ({status}); is {} valid?", config.display());
        }
        let lb = Self {
            _child: child,
            stats_url: format!("http://127.0.0.1:{}/stats;csv", ports.stats),
            client: reqwest::Client::new(),
        };
        let up = async {
            while lb.rotation().await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), up)
            .await
            .context("HAProxy's stats page did not answer within 10 s")?;
        Ok(lb)
    }

    /// Which servers are in rotation now (status UP, including "going down" while checks are
    /// still failing below `fall`).
    pub(super) async fn rotation(&self) -> anyhow::Result<Rotation> {
        let csv = self.client.get(&self.stats_url).send().await?.text().await?;
        parse_rotation(&csv)
    }

    /// Waits until `server` (e.g. `r2`) is in (or out of) rotation in every backend listed.
    pub(super) async fn wait_for(&self, backends: &[&str], server: &str, in_rotation: bool) -> anyhow::Result<()> {
        loop {
            let rotation = self.rotation().await?;
            if backends
                .iter()
                .all(|b| rotation.get(&format!("{b}/{server}")) == Some(&in_rotation))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads HAProxy's CSV stats: `# pxname,svname,…,status,…`, one line per frontend, server and
/// backend.
fn parse_rotation(csv: &str) -> anyhow::Result<Rotation> {
    let mut lines = csv.lines();
    let header = lines.next().context("empty stats")?;
    let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| columns.iter().position(|c| *c == name);
    let (px, sv, status) = (col("pxname"), col("svname"), col("status"));
    let (Some(px), Some(sv), Some(status)) = (px, sv, status) else {
        anyhow::bail!("unexpected stats header: {header}");
    };
    let mut rotation = Rotation::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(p), Some(s), Some(st)) = (fields.get(px), fields.get(sv), fields.get(status)) else {
            continue;
        };
        if *s == "FRONTEND" || *s == "BACKEND" {
            continue;
        }
        rotation.insert(format!("{p}/{s}"), st.starts_with("UP"));
    }
    Ok(rotation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_csv_says_who_is_in_rotation() {
        let csv = "# pxname,svname,qcur,status,weight\n\
                   rest_in,FRONTEND,,OPEN,\n\
                   rest,r1,0,UP,1\n\
                   rest,r2,0,DOWN,1\n\
                   rest,r3,0,UP 1/2,1\n\
                   rest,BACKEND,0,UP,2\n";
        let r = parse_rotation(csv).unwrap();
        assert_eq!(r.get("rest/r1"), Some(&true));
        assert_eq!(r.get("rest/r2"), Some(&false));
        assert_eq!(
            r.get("rest/r3"),
            Some(&true),
            "still in rotation while checks fail below `fall`"
        );
        assert_eq!(r.len(), 3);
    }
}
