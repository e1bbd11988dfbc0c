//! Restarts without a refused connection: socket activation, and the in-place upgrade.
//!
//! A graceful shutdown alone leaves a gap at every restart: between the old process closing its
//! listener and the new one binding its port, connections are refused. Two ways close it, and
//! both keep the listening socket open across the change of process:
//!
//! - **Socket activation.** A service manager (systemd's `.socket` units) owns the listening
//!   sockets and passes them to each process it starts, as fds 3, 4, … with `LISTEN_FDS`,
//!   `LISTEN_FDNAMES` and `LISTEN_PID`. [`inherited_listeners`] takes them.
//! - **The in-place upgrade**, on one host without a service manager
//!   ([`Shutdown::upgrade_on_sighup`](crate::Shutdown::upgrade_on_sighup)): on SIGHUP the
//!   running process starts its binary again with its listening sockets, passed the same way,
//!   and waits until the new process says it is ready ([`ready`], which speaks systemd's
//!   `READY=1` on a socket the old process listens on). Then the old process's shutdown starts:
//!   it finishes what it accepted while the new one accepts from the same sockets. If the new
//!   process exits, or is not ready within its timeout, the old one stops it and keeps serving.
//!
//! The new process needs nothing special beyond calling [`adopt_env`] first thing in `main`
//! (`LISTEN_PID` cannot be known before the process exists, so it sets it itself) and
//! [`ready`] once it serves. Other descriptors a service needs to hand on (a database file's
//! lock, say) travel the same way, by name ([`Upgrade::pass_fd`], [`handed_fd`]).
//!
//! Under systemd a SIGHUP does not upgrade: systemd tracks the first process as the service's
//! main one and would stop the unit when it exits. There, restarts belong to systemd and its
//! socket units.

use std::ffi::OsString;
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Readiness, Shutdown, ShutdownHandle};

/// How long a new process may take to say it is ready, by default.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Set in the new process's environment to the old process's pid.
const UPGRADE_FROM: &str = "PHASED_SHUTDOWN_UPGRADE_FROM";

/// Set in the new process's environment to the descriptors passed besides the listeners:
/// `name=fd` pairs, comma-separated.
const HANDED_FDS: &str = "PHASED_SHUTDOWN_FDS";

/// Where passed descriptors start in the new process, as in systemd's protocol.
const FIRST_FD: RawFd = 3;

/// The descriptors besides the listeners the old process passed, claimed by [`adopt_env`].
static HANDED: Mutex<Vec<(String, OwnedFd)>> = Mutex::new(Vec::new());

/// Where to send `READY=1` when this process was started by an upgrade.
static OLD_PROCESS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Why passed sockets cannot be used, or an upgrade did not happen.
#[derive(Debug)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The passed descriptors could not be read, or one is not a listening TCP socket.
    Inherited(String),
    /// The new process could not be started.
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The socket the new process reports readiness on could not be made or read.
    Notify(std::io::Error),
    /// The new process exited before it was ready.
    Exited(std::process::ExitStatus),
    /// The new process was not ready in time; it was stopped.
    NotReady(Duration),
    /// This process's shutdown began while the new one was starting; it was stopped.
    ShutdownBegan,
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inherited(why) => write!(f, "cannot use the sockets passed to this process: {why}"),
            Self::Spawn { binary, source } => write!(f, "cannot start {}: {source}", binary.display()),
            Self::Notify(e) => write!(f, "cannot hear the new process's readiness: {e}"),
            Self::Exited(status) => write!(f, "the new process exited before it was ready ({status})"),
            Self::NotReady(after) => write!(f, "the new process was not ready within {after:?}; stopped it"),
            Self::ShutdownBegan => f.write_str("this process began its shutdown while the new one started; stopped it"),
        }
    }
}

impl std::error::Error for UpgradeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn { source, .. } | Self::Notify(source) => Some(source),
            _ => None,
        }
    }
}

/// Completes the hand-over in a process started by an upgrade; does nothing otherwise. Sets
/// `LISTEN_PID` (so the listeners are recognised as this process's), claims the descriptors
/// passed by name (see [`handed_fd`]), and keeps the old process's readiness socket out of
/// `NOTIFY_SOCKET`, where a service manager would be looked for.
///
/// # Safety
/// Modifies the environment: call it first thing in `main`, before the runtime or any other
/// thread exists.
pub unsafe fn adopt_env() {
    if std::env::var_os(UPGRADE_FROM).is_none() {
        return;
    }
    if let Ok(pairs) = std::env::var(HANDED_FDS) {
        let mut handed = HANDED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, fd) in pairs.split(',').filter_map(|p| p.split_once('=')) {
            let Ok(fd) = fd.parse::<RawFd>() else { continue };
            // SAFETY: nothing in this process has opened a descriptor yet, so an open one at
            // this number was inherited: the one the old process passed. Checked open, made
            // close-on-exec (only an explicit hand-over passes it on), then owned once.
            unsafe {
                if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == 0 {
                    handed.push((name.to_owned(), OwnedFd::from_raw_fd(fd)));
                }
            }
        }
        // SAFETY: the caller guarantees no other thread exists yet.
        unsafe { std::env::remove_var(HANDED_FDS) };
    }
    if std::env::var_os("LISTEN_FDS").is_some() {
        // SAFETY: as above.
        unsafe { std::env::set_var("LISTEN_PID", std::process::id().to_string()) };
    }
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let _ = OLD_PROCESS.set(PathBuf::from(path));
        // SAFETY: as above.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    }
}

/// The pid of the process that started this one in an upgrade, if it did.
pub fn upgraded_from() -> Option<u32> {
    std::env::var(UPGRADE_FROM).ok()?.parse().ok()
}

/// A descriptor the old process passed by `name` ([`Upgrade::pass_fd`]), once; `None` if none
/// was passed (or it was taken already). [`adopt_env`] must have run.
pub fn handed_fd(name: &str) -> Option<OwnedFd> {
    let mut handed = HANDED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let at = handed.iter().position(|(n, _)| n == name)?;
    Some(handed.remove(at).1)
}

/// The listening sockets passed to this process (by a service manager or an upgrade), by
/// name.
#[derive(Debug, Default)]
pub struct Listeners(Vec<(String, Option<std::net::TcpListener>)>);

impl Listeners {
    /// The socket named `name` (`FileDescriptorName=` in a systemd socket unit; the names an
    /// upgrade passes), or, when the sockets came unnamed, the one at `index` in the order
    /// passed. Non-blocking, ready for `tokio::net::TcpListener::from_std`. Each is taken once.
    pub fn take(&mut self, name: &str, index: usize) -> Option<std::net::TcpListener> {
        let unnamed = self.0.iter().all(|(n, _)| n == "unknown" || n.is_empty());
        let at = match self.0.iter().position(|(n, _)| n == name) {
            Some(at) => at,
            None if unnamed => index,
            None => return None,
        };
        self.0.get_mut(at)?.1.take()
    }

    /// How many sockets were passed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none was: the process binds its own.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names of the sockets passed, in order (`unknown` for unnamed ones).
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Takes the listening sockets passed to this process (`LISTEN_FDS`, checked against
/// `LISTEN_PID`); empty when none were. Each is checked to be a TCP socket and made
/// non-blocking. Call it once: the descriptors are owned from then on.
pub fn inherited_listeners() -> Result<Listeners, UpgradeError> {
    let fds = sd_notify::listen_fds_with_names().map_err(|e| UpgradeError::Inherited(e.to_string()))?;
    let mut listeners = Vec::new();
    for (fd, name) in fds {
        // SAFETY: `fd` is one the service manager (or the old process) passed to this process
        // (LISTEN_PID matched); nothing else in the process owns it, and it is taken once.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        let addr = listener
            .local_addr()
            .map_err(|e| UpgradeError::Inherited(format!("fd {fd} ({name}) is not a TCP socket: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| UpgradeError::Inherited(format!("fd {fd} ({name}, {addr}): {e}")))?;
        listeners.push((name, Some(listener)));
    }
    Ok(Listeners(listeners))
}

/// Says this process is ready: to the old process of an upgrade (which then stops), and to the
/// service manager (`READY=1`, a no-op outside systemd). Call it once the servers serve.
pub fn ready() {
    if let Some(path) = OLD_PROCESS.get() {
        let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.send_to(b"READY=1\n", path));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot tell the previous process this one is ready");
        }
    }
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// What an upgrade starts, and hands over: see the module's documentation.
pub struct Upgrade {
    binary: PathBuf,
    args: Vec<OsString>,
    handover: Handover,
    ready_timeout: Duration,
    overlap: Option<Box<dyn Fn(bool) + Send + Sync>>,
}

/// The descriptors an upgrade passes on: second handles on the listeners and the other
/// descriptors, held only until the shutdown begins. A second handle on a listening socket
/// keeps it listening after the server has closed its own: connections would then queue where
/// nobody accepts them, and be reset when the handle closes. So the coordinator lets them go
/// the moment its shutdown begins, before any server takes its backlog and closes.
#[derive(Default)]
struct Handover {
    listeners: Vec<(String, OwnedFd)>,
    fds: Vec<(String, OwnedFd)>,
}

impl fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgrade")
            .field("binary", &self.binary)
            .field(
                "listeners",
                &self.handover.listeners.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("fds", &self.handover.fds.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("ready_timeout", &self.ready_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for Upgrade {
    fn default() -> Self {
        Self::new()
    }
}

impl Upgrade {
    /// An upgrade to the binary this process was started from (the file at that path, which a
    /// deploy replaces), with this process's arguments, nothing passed yet, and
    /// [`READY_TIMEOUT`].
    pub fn new() -> Self {
        Self {
            binary: own_binary().unwrap_or_else(|| PathBuf::from(std::env::args_os().next().unwrap_or_default())),
            args: std::env::args_os().skip(1).collect(),
            handover: Handover::default(),
            ready_timeout: READY_TIMEOUT,
            overlap: None,
        }
    }

    /// Starts `binary` instead.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = binary.into();
        self
    }

    /// Passes the listening socket `listener` as `name` (in the order added: fds 3, 4, …). A
    /// second descriptor is kept for the hand-over, and let go the moment the shutdown begins,
    /// so the socket still closes with the server's.
    ///
    /// # Errors
    /// If the process is out of descriptors.
    pub fn listener(mut self, name: impl Into<String>, listener: &impl AsRawFd) -> std::io::Result<Self> {
        self.handover.listeners.push((name.into(), dup(listener.as_raw_fd())?));
        Ok(self)
    }

    /// Passes another descriptor (a file's lock, say) as `name`; the new process takes it with
    /// [`handed_fd`].
    ///
    /// # Errors
    /// If the process is out of descriptors.
    pub fn pass_fd(mut self, name: impl Into<String>, fd: &impl AsRawFd) -> std::io::Result<Self> {
        self.handover.fds.push((name.into(), dup(fd.as_raw_fd())?));
        Ok(self)
    }

    /// How long the new process may take to call [`ready`].
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Called with `true` just before the new process starts (from then on both may serve), and
    /// with `false` if the upgrade then fails: for state that assumes it is the only process,
    /// such as a cache of a database file both will write.
    pub fn on_overlap(mut self, overlap: impl Fn(bool) + Send + Sync + 'static) -> Self {
        self.overlap = Some(Box::new(overlap));
        self
    }

    /// Upgrades on every SIGHUP until one succeeds (then starts `shutdown`) or the shutdown
    /// begins for another reason (then returns, letting the sockets go).
    async fn run(
        self,
        handover: HandoverSlot,
        mut hangup: tokio::signal::unix::Signal,
        readiness: Readiness,
        shutdown: ShutdownHandle,
    ) {
        loop {
            tokio::select! {
                () = readiness.draining() => return,
                Some(()) = hangup.recv() => {}
            }
            if std::env::var_os("NOTIFY_SOCKET").is_some() {
                tracing::error!(
                    "SIGHUP ignored: under systemd, restart with `systemctl restart` and socket activation instead"
                );
                continue;
            }
            tracing::info!(binary = %self.binary.display(), "SIGHUP: starting the new process");
            self.overlapping(true);
            match self.start_successor(&handover, &readiness).await {
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
                    self.overlapping(false);
                    tracing::error!(event = "upgrade.failed", error = %e, "upgrade failed; this process keeps serving");
                }
            }
        }
    }

    fn overlapping(&self, yes: bool) {
        if let Some(overlap) = &self.overlap {
            overlap(yes);
        }
    }

    /// Starts the new process and waits for its `READY=1`; its pid.
    async fn start_successor(&self, handover: &HandoverSlot, readiness: &Readiness) -> Result<u32, UpgradeError> {
        let notify = ReadySocket::bind().map_err(UpgradeError::Notify)?;
        let mut child = {
            // Held while the process starts: the descriptors stay open until it has them.
            let held = handover.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(held) = held.as_ref() else {
                return Err(UpgradeError::ShutdownBegan);
            };
            tokio::process::Command::from(self.command(held, &notify.path))
                .spawn()
                .map_err(|source| UpgradeError::Spawn {
                    binary: self.binary.clone(),
                    source,
                })?
        };
        let pid = child.id().unwrap_or_default();
        let failure = tokio::select! {
            ready = tokio::time::timeout(self.ready_timeout, notify.ready()) => match ready {
                Ok(Ok(())) => return Ok(pid),
                Ok(Err(e)) => UpgradeError::Notify(e),
                Err(_) => UpgradeError::NotReady(self.ready_timeout),
            },
            status = child.wait() => match status {
                Ok(status) => return Err(UpgradeError::Exited(status)),
                Err(e) => UpgradeError::Notify(e),
            },
            () = readiness.draining() => UpgradeError::ShutdownBegan,
        };
        // Not ready: this process stays; the new one must not half-serve beside it.
        let _ = child.kill().await;
        Err(failure)
    }

    /// The new process: this binary and arguments, the listeners at fds 3, 4, … as systemd
    /// passes them, the other descriptors after them, named in the environment.
    fn command(&self, handover: &Handover, notify: &std::path::Path) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.binary);
        let names: Vec<&str> = handover.listeners.iter().map(|(n, _)| n.as_str()).collect();
        let count = handover.listeners.len() as RawFd;
        let handed: Vec<String> = handover
            .fds
            .iter()
            .enumerate()
            .map(|(i, (name, _))| format!("{name}={}", FIRST_FD + count + i as RawFd))
            .collect();
        cmd.args(&self.args)
            .env(UPGRADE_FROM, std::process::id().to_string())
            .env("NOTIFY_SOCKET", notify)
            .env("LISTEN_FDS", count.to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env(HANDED_FDS, handed.join(","))
            .env_remove("LISTEN_PID");
        let fds: Vec<RawFd> = handover
            .listeners
            .iter()
            .chain(&handover.fds)
            .map(|(_, fd)| fd.as_raw_fd())
            .collect();
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2), on a vector
        // allocated before the fork. Each descriptor is first copied above every target number,
        // so moving one to 3 + i cannot overwrite another still to be moved; dup2 leaves the
        // targets open across exec.
        unsafe {
            cmd.pre_exec(move || {
                let above = FIRST_FD + fds.len() as RawFd + 16;
                let mut copies = [0 as RawFd; 64];
                if fds.len() > copies.len() {
                    return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
                }
                for (i, fd) in fds.iter().enumerate() {
                    copies[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above);
                    if copies[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, copy) in copies[..fds.len()].iter().enumerate() {
                    if libc::dup2(*copy, FIRST_FD + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd
    }
}

/// The descriptors of an upgrade, emptied when the shutdown begins.
type HandoverSlot = Arc<Mutex<Option<Handover>>>;

/// A second descriptor on `fd`, close-on-exec.
fn dup(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: `fd` comes from a live `AsRawFd` borrowed by the caller: open for this call.
    unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
}

/// The socket the new process says `READY=1` on, removed when dropped.
struct ReadySocket {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
}

impl ReadySocket {
    fn bind() -> std::io::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("phased-shutdown-ready-{}-{n}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = tokio::net::UnixDatagram::bind(&path)?;
        Ok(Self { socket, path })
    }

    async fn ready(&self) -> std::io::Result<()> {
        let mut buf = [0u8; 512];
        loop {
            let n = self.socket.recv(&mut buf).await?;
            if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                return Ok(());
            }
        }
    }
}

impl Drop for ReadySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The path this process was started from: after a deploy has replaced the file,
/// `/proc/self/exe` reads `… (deleted)`, and the path without that suffix is the new binary.
fn own_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let text = exe.to_str()?;
    Some(PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(text)))
}

impl Shutdown {
    /// Upgrades this process in place on SIGHUP (see [`upgrade`](crate::upgrade)): starts
    /// `upgrade`'s binary with its sockets, and once the new process is ready starts this
    /// shutdown (reason `upgrade`), within this coordinator's deadline like any other. A failed
    /// upgrade is logged, and this process keeps serving. The SIGHUP handler is installed when
    /// this returns, so a SIGHUP from then on upgrades rather than kills the process; the
    /// upgrades stop, and the sockets' second descriptors are let go, when the shutdown begins.
    /// Must be called inside a runtime.
    ///
    /// # Errors
    /// If the SIGHUP handler cannot be installed.
    pub fn upgrade_on_sighup(&mut self, mut upgrade: Upgrade) -> std::io::Result<()> {
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let handover: HandoverSlot = Arc::new(Mutex::new(Some(std::mem::take(&mut upgrade.handover))));
        let released = Arc::clone(&handover);
        self.at_begin(move || {
            drop(
                released
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take(),
            );
        });
        tokio::spawn(upgrade.run(handover, hangup, self.readiness(), self.handle()));
        Ok(())
    }
}
