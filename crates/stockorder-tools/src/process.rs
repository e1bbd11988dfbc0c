//! Processes the tools start, signal and wait for, and where to find the service's binaries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// Resolves when `pid` (not necessarily a child of ours) has exited: the process of an
/// in-place upgrade was started by the service, so it cannot be waited for.
pub async fn exited(pid: nix::unistd::Pid) {
    let alive = || {
        nix::sys::signal::kill(pid, None).is_ok()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
                })
                .is_none_or(|dead| !dead)
    };
    while alive() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resolves at the first SIGINT or SIGTERM (Ctrl+C only, if the handlers cannot be installed).
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A server address as a person types it, `host:port` or `http://host:port` (a trailing `/`
/// allowed), as `host:port`. The clients and `load` both take either form.
pub fn host_port(raw: &str) -> Result<String, String> {
    let rest = match raw.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return Err(format!("{raw:?}: only http:// is served (plaintext)")),
        None => raw,
    };
    let addr = rest.trim_end_matches('/');
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok() => {
            Ok(addr.to_owned())
        }
        _ => Err(format!(
            "{raw:?} is not a server address (e.g. http://localhost:8082 or localhost:8082)"
        )),
    }
}

/// A port nothing listens on now, for a command that must be told its port. (Another process
/// could take it before the command binds; the command then fails to start, and says so.)
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `addr` accepts a connection: the readiness of a command that does not announce
/// itself in a log the tools can read.
pub async fn accepting(addr: &str) -> anyhow::Result<()> {
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot connect to {addr}")),
        }
    }
}

/// A binary of the workspace built beside this one: `stockorder`, or `examples/demo_2`.
/// `STOCKORDER_BIN_DIR` overrides where to look (an installed service, say). Cargo puts
/// binaries in `target/<profile>/` and test binaries one level deeper, in `deps/`, so both are
/// tried.
pub fn sibling(relative: &str) -> anyhow::Result<PathBuf> {
    let dirs: Vec<PathBuf> = match std::env::var_os("STOCKORDER_BIN_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let me = std::env::current_exe().context("cannot find this executable")?;
            let dir = me.parent().map(Path::to_path_buf).unwrap_or_default();
            [Some(dir.clone()), dir.parent().map(Path::to_path_buf)]
                .into_iter()
                .flatten()
                .collect()
        }
    };
    let candidates: Vec<PathBuf> = dirs.iter().map(|d| d.join(relative)).collect();
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        format!(
            "{relative} is not built; run `cargo build --release --workspace --examples` (looked in {}; STOCKORDER_BIN_DIR overrides)",
            candidates[0].display()
        )
    })
}
