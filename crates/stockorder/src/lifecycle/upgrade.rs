//! In-place upgrade on one host: on SIGHUP the running process starts the new binary with its
//! listening sockets, waits until the new process says it is ready, and then shuts itself down
//! gracefully. Nothing is refused and nothing is reset, because the listening sockets never
//! close: both processes accept from them during the overlap, the old one finishes what it
//! accepted, and connections still in the backlog are taken by whichever accepts them.
//!
//! The hand-over speaks systemd's protocols, so the new process needs nothing special: the
//! sockets arrive as fds 3 and 4 with `LISTEN_FDS=2` and `LISTEN_FDNAMES=http:grpc` (socket
//! activation), and readiness comes back as `READY=1` on a `NOTIFY_SOCKET` the old process
//! listens on (`sd_notify`). `LISTEN_PID` cannot be known before the child exists, so the child
//! sets it itself at start-up when `STOCKORDER_UPGRADE_FROM` names its parent
//! ([`adopt_upgrade_env`]).
//!
//! If the new process exits or is not ready within [`READY_TIMEOUT`], the old one logs why,
//! stops the new one, and keeps serving.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use phased_shutdown::{Readiness, ShutdownHandle};
use tokio::net::UnixDatagram;

/// How long the new process may take to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Set in the new process's environment to the old process's pid.
const UPGRADE_FROM: &str = "STOCKORDER_UPGRADE_FROM";

/// Set in the new process's environment when the old one passes its database lock (a SQLite
/// file's, see `adapter::outbound::sqlite`): the fd it is at.
const DATABASE_LOCK_FD: &str = "STOCKORDER_DATABASE_LOCK_FD";

/// The database lock the old process passed, claimed by [`adopt_upgrade_env`] before anything
/// else could open a file at its number.
static HANDED_LOCK: std::sync::Mutex<Option<std::os::fd::OwnedFd>> = std::sync::Mutex::new(None);

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The new process could not be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The readiness socket could not be made.
    #[error("cannot listen for the new process's readiness: {0}")]
    Notify(#[source] std::io::Error),
    /// The new process exited before reporting ready.
    #[error("the new process exited before it was ready ({0})")]
    Exited(std::process::ExitStatus),
    /// The new process did not report ready in time.
    #[error("the new process was not ready within {0:?}; stopped it")]
    NotReady(Duration),
}

/// In the new process of an upgrade, before any thread starts: completes systemd's socket
/// activation protocol by setting `LISTEN_PID` to this process, which the old process could
/// not know when it started us.
///
/// # Safety
///
/// Modifies the environment: call it first thing in `main`, before the runtime or any other
/// thread exists.
pub unsafe fn adopt_upgrade_env() {
    if std::env::var_os(UPGRADE_FROM).is_none() {
        return;
    }
    if let Some(fd) = std::env::var(DATABASE_LOCK_FD)
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
    {
        // SAFETY: nothing in this process has opened a file yet, so an open fd at this number
        // was inherited: the lock the old process passed. Checked to be a regular file before
        // it is owned (and made close-on-exec, so only an explicit hand-over passes it on).
        unsafe {
            let is_file = nix::sys::stat::fstat(std::os::fd::BorrowedFd::borrow_raw(fd))
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
            if is_file {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                if let Ok(mut slot) = HANDED_LOCK.lock() {
                    *slot = Some(std::os::fd::FromRawFd::from_raw_fd(fd));
                }
            }
            std::env::remove_var(DATABASE_LOCK_FD);
        }
    }
    if std::env::var_os("LISTEN_FDS").is_some() {
        // SAFETY: the caller guarantees no other thread exists yet.
        unsafe { std::env::set_var("LISTEN_PID", std::process::id().to_string()) };
    }
    // The old process's readiness socket is for READY=1 only, and it is gone once the old
    // process exits: keep it out of NOTIFY_SOCKET, where later notifications (STOPPING=1)
    // and a future upgrade's child would look for a service manager.
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let _ = UPGRADE_NOTIFY.set(PathBuf::from(path));
        // SAFETY: as above.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    }
}

/// Where to send READY=1 when this process was started by an upgrade.
static UPGRADE_NOTIFY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Tells the old process of an upgrade that this one is ready; a no-op otherwise.
pub fn notify_old_process_ready() {
    if let Some(path) = UPGRADE_NOTIFY.get() {
        let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.send_to(b"READY=1\n", path));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot tell the previous process this one is ready");
        }
    }
}

/// The database lock the old process of an upgrade passed on, once (later calls: `None`).
pub fn handed_database_lock() -> Option<std::os::fd::OwnedFd> {
    HANDED_LOCK.lock().ok()?.take()
}

/// The old process's pid, when this process was started by an upgrade.
pub fn upgraded_from() -> Option<nix::unistd::Pid> {
    let pid: i32 = std::env::var(UPGRADE_FROM).ok()?.parse().ok()?;
    Some(nix::unistd::Pid::from_raw(pid))
}

/// Resolves when process `pid` has exited (checked every 50 ms). A zombie counts as exited:
/// the old process is reparented when its own parent is gone, and whoever reaps it may be slow.
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

/// What an upgrade needs from the running service.
pub struct Upgrader {
    /// The binary to start: the one this process was started from (a deploy replaces the file
    /// at that path), or `UPGRADE_BINARY`.
    pub binary: PathBuf,
    /// The listening sockets, as fds of this process. They stay open for as long as the servers
    /// serve, and upgrades happen only then (not once the shutdown has begun).
    pub http_fd: RawFd,
    /// The gRPC listening socket.
    pub grpc_fd: RawFd,
    /// The database's lock (a SQLite file's), passed to the new process so the file is never
    /// unlocked between the two.
    pub database_lock_fd: Option<RawFd>,
    /// Called with `true` when the new process may start writing to the same database, and
    /// with `false` if the upgrade failed: the store then knows its snapshots may go stale.
    pub overlap: Box<dyn Fn(bool) + Send + Sync>,
}

impl Upgrader {
    /// Installs the SIGHUP handler now (so a SIGHUP from here on upgrades rather than kills
    /// the process), and returns the task that upgrades on every SIGHUP until one succeeds
    /// (then triggers this process's shutdown through `shutdown`) or the shutdown begins for
    /// another reason.
    pub fn listen(
        self,
        readiness: Readiness,
        shutdown: ShutdownHandle,
    ) -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        Ok(self.run(hangup, readiness, shutdown))
    }

    async fn run(self, mut hangup: tokio::signal::unix::Signal, readiness: Readiness, shutdown: ShutdownHandle) {
        loop {
            tokio::select! {
                () = readiness.draining() => return,
                Some(()) = hangup.recv() => {}
            }
            if std::env::var_os("NOTIFY_SOCKET").is_some() {
                // systemd tracks this process as the service's main one: it would stop the unit
                // (and kill the new process) when this one exits. There, restarts belong to
                // systemd, with the sockets of stockorder.socket.
                tracing::error!(
                    "SIGHUP ignored: under systemd, restart with `systemctl restart` and socket activation instead"
                );
                continue;
            }
            tracing::info!(binary = %self.binary.display(), "SIGHUP: starting the new process");
            // From the moment the new process may write, this one's reads must not reuse a
            // snapshot its own commit count says is current.
            (self.overlap)(true);
            match self.start_successor().await {
                Ok(pid) => {
                    tracing::info!(
                        event = "upgrade.handover",
                        new_pid = pid,
                        "upgrade: the new process is ready; this one stops"
                    );
                    shutdown.shutdown("upgrade");
                    return;
                }
                Err(e) => {
                    (self.overlap)(false);
                    tracing::error!(event = "upgrade.failed", error = %e, "upgrade failed; this process keeps serving");
                }
            }
        }
    }

    /// Starts the new process with the listening sockets and waits for its `READY=1`; its pid.
    async fn start_successor(&self) -> Result<u32, UpgradeError> {
        let dir = tempfile::tempdir().map_err(UpgradeError::Notify)?;
        let notify_path = dir.path().join("notify");
        let notify = UnixDatagram::bind(&notify_path).map_err(UpgradeError::Notify)?;
        let mut child = self
            .command(&notify_path)
            .spawn()
            .map_err(|source| UpgradeError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        let mut buf = [0u8; 512];
        let ready = async {
            loop {
                let n = notify.recv(&mut buf).await?;
                if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                    return std::io::Result::Ok(());
                }
            }
        };
        let failure = tokio::select! {
            ready = tokio::time::timeout(READY_TIMEOUT, ready) => match ready {
                Ok(Ok(())) => return Ok(pid),
                Ok(Err(e)) => UpgradeError::Notify(e),
                Err(_) => UpgradeError::NotReady(READY_TIMEOUT),
            },
            status = child.wait() => match status {
                Ok(status) => return Err(UpgradeError::Exited(status)),
                Err(e) => UpgradeError::Notify(e),
            },
        };
        // Not ready: the old process stays; the new one must not half-serve beside it.
        let _ = child.kill().await;
        Err(failure)
    }

    fn command(&self, notify: &Path) -> tokio::process::Command {
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.args(std::env::args_os().skip(1).collect::<Vec<OsString>>())
            .env(UPGRADE_FROM, std::process::id().to_string())
            .env("NOTIFY_SOCKET", notify);
        if self.database_lock_fd.is_some() {
            cmd.env(DATABASE_LOCK_FD, super::activation::EXTRA_FD.to_string());
        }
        super::activation::pass_listeners(&mut cmd, self.http_fd, self.grpc_fd, self.database_lock_fd);
        // The new process outlives this one: not killed on drop.
        tokio::process::Command::from(cmd)
    }
}

/// The path this process was started from, for upgrades: after a deploy has replaced the file,
/// `/proc/self/exe` reads `… (deleted)`, and the path without that suffix is the new binary.
pub fn own_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let text = exe.to_str()?;
    Some(PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(text)))
}
