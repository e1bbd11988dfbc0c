//! The process `prove` runs: started with a fresh database, its log read as it comes, and
//! signalled (after in-place upgrades, when asked) until it exits.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ProveArgs, Target, live, signal_label, timeline};
use crate::load::LoadProtocol;
use crate::process::{accepting, free_port};
use crate::service::{event, listening_on};

/// A target that is listening, with its log being read.
pub(super) struct Running {
    /// What the tally calls it.
    pub(super) name: String,
    /// Where its clients connect.
    pub(super) addr: String,
    /// Its database file (in `_dir`), read back after it exits.
    pub(super) db: PathBuf,
    /// When the load started, on the wall clock: the log's timestamps are placed on the load's
    /// clock with it. Set by the caller once the load starts.
    pub(super) load_started: Arc<std::sync::OnceLock<time::OffsetDateTime>>,
    child: Child,
    pid: Pid,
    reader: JoinHandle<Vec<Value>>,
    upgraded: UnboundedReceiver<Pid>,
    _dir: tempfile::TempDir,
}

/// When the target was signalled, and what that led to.
pub(super) struct Signalled {
    /// When the stopping signal went, since the load started.
    pub(super) at: Duration,
    /// The exit status of our child; `None` after upgrades (the last process is not our child:
    /// its report says its exit code).
    pub(super) exit_code: Option<Option<i32>>,
    /// When each SIGHUP went, since the load started.
    pub(super) upgrades: Vec<Duration>,
}

impl Running {
    /// Starts the target on a fresh database and waits until it listens (30 s at most).
    pub(super) async fn start(args: &ProveArgs, board: &Arc<live::Board>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let db = dir.path().join("orders.db");
        let name = match args.target {
            Target::Command => args.command.join(" "),
            target => target.name().to_owned(),
        };
        let (mut child, fixed_addr) = spawn(args, &db, &name)?;
        let pid = child.id().context("the target exited at once")?;
        let stdout = child.stdout.take().context("no stdout from the target")?;
        let announcement = match args.protocol {
            LoadProtocol::Http => "http",
            LoadProtocol::Grpc => "grpc",
        };
        let load_started = Arc::new(std::sync::OnceLock::new());
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (upgraded_tx, upgraded) = tokio::sync::mpsc::unbounded_channel();
        let log = LogReader {
            addr_tx: Some(addr_tx),
            upgraded_tx,
            announcement,
            board: Arc::clone(board),
            load_started: Arc::clone(&load_started),
        };
        let reader = tokio::spawn(log.read(stdout));
        let ready = async {
            match &fixed_addr {
                Some(addr) => accepting(addr).await.map(|()| addr.clone()),
                None => addr_rx.await.context("the target exited before listening"),
            }
        };
        let addr = tokio::select! {
            addr = tokio::time::timeout(Duration::from_secs(30), ready) => {
                let hint = match (&args.addr, args.target) {
                    (None, Target::Command) => {
                        " (a command is told its port in PORT, or GRPC_PORT for gRPC; give --addr if it listens elsewhere)"
                    }
                    _ => "",
                };
                addr.map_err(|_| anyhow::anyhow!("{name} did not start listening within 30 s{hint}"))??
            }
            status = child.wait() => anyhow::bail!("{name} exited before it was ready: {}", status?),
        };
        eprintln!(
            "{name} listening on {addr} (pid {pid}); {} {} clients",
            args.concurrency,
            super::protocol_name(args.protocol)
        );
        Ok(Self {
            name,
            addr,
            db,
            load_started,
            child,
            pid: Pid::from_raw(pid as i32),
            reader,
            upgraded,
            _dir: dir,
        })
    }

    /// Signals the target as `args` say (after `--upgrade-every` upgrades, when asked) and
    /// waits until it has exited (120 s at most).
    pub(super) async fn signal(
        &mut self,
        args: &ProveArgs,
        board: &live::Board,
        started: Instant,
        page: bool,
    ) -> anyhow::Result<Signalled> {
        match args.upgrade_every {
            Some(every) => self.upgrade_then_stop(args, board, started, every).await,
            None => self.stop(args, board, started, page).await,
        }
    }

    /// In-place upgrades: each SIGHUP goes to the process now serving, which names its
    /// successor in the log; then the stopping signal goes to the last one.
    async fn upgrade_then_stop(
        &mut self,
        args: &ProveArgs,
        board: &live::Board,
        started: Instant,
        every: Duration,
    ) -> anyhow::Result<Signalled> {
        let mut upgrades = Vec::new();
        let mut current = self.pid;
        for i in 1..=args.upgrades {
            tokio::time::sleep(every).await;
            let at = started.elapsed();
            kill(current, Signal::SIGHUP).context("cannot signal the target")?;
            let next = tokio::time::timeout(Duration::from_secs(60), self.upgraded.recv())
                .await
                .with_context(|| format!("upgrade {i}: no new process within 60 s"))?
                .context("the target exited during an upgrade")?;
            eprintln!(
                "upgrade {i}: SIGHUP at {:.2}s; pid {current} → {next}",
                at.as_secs_f64()
            );
            board.mark(at.as_secs_f64(), "SIGHUP");
            upgrades.push(at);
            current = next;
        }
        tokio::time::sleep(every).await;
        let at = started.elapsed();
        kill(current, args.signal.signal()).context("cannot signal the target")?;
        board.mark(at.as_secs_f64(), signal_label(args.signal));
        eprintln!(
            "sent {:?} to pid {current} at {:.2}s",
            args.signal.signal(),
            at.as_secs_f64()
        );
        tokio::time::timeout(Duration::from_secs(120), crate::process::exited(current))
            .await
            .context("the target did not exit within 120 s of the signal")?;
        // The first process, long gone: reap it.
        let _ = self.child.wait().await;
        Ok(Signalled {
            at,
            exit_code: None,
            upgrades,
        })
    }

    /// The stopping signal at `--signal-after` (or when the live page's button asks), and a
    /// second one later when `--second-signal-after` is given: the impatient operator.
    async fn stop(
        &mut self,
        args: &ProveArgs,
        board: &live::Board,
        started: Instant,
        page: bool,
    ) -> anyhow::Result<Signalled> {
        tokio::select! {
            () = tokio::time::sleep(args.signal_after) => {}
            () = board.signal_requested(), if page => eprintln!("the live page asked for the signal"),
        }
        let at = started.elapsed();
        let (target, signal) = (self.pid, args.signal.signal());
        kill(target, signal).context("cannot signal the target")?;
        board.mark(at.as_secs_f64(), signal_label(args.signal));
        eprintln!("sent {signal:?} at {:.2}s", at.as_secs_f64());
        let second = args.second_signal_after.map(|after| {
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                if kill(target, signal).is_ok() {
                    eprintln!("sent {signal:?} again at {:.2}s", started.elapsed().as_secs_f64());
                }
            })
        });
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .context("the target did not exit within 120 s of the signal")??;
        if let Some(second) = second {
            second.abort();
        }
        Ok(Signalled {
            at,
            exit_code: Some(status.code()),
            upgrades: Vec::new(),
        })
    }

    /// Every line the target (and its successors) logged, once it has exited.
    pub(super) async fn log(&mut self) -> Vec<Value> {
        (&mut self.reader).await.unwrap_or_default()
    }
}

/// Starts the target on `db`. A command is told a free port in advance (unless it was given
/// its address), returned as where it will listen; ours bind port 0 and announce the port in
/// their log.
fn spawn(args: &ProveArgs, db: &std::path::Path, name: &str) -> anyhow::Result<(Child, Option<String>)> {
    let (mut http_port, mut grpc_port) = (0, 0);
    let mut fixed_addr = args.addr.clone();
    if args.target == Target::Command && fixed_addr.is_none() {
        let port = free_port()?;
        match args.protocol {
            LoadProtocol::Http => http_port = port,
            LoadProtocol::Grpc => grpc_port = port,
        }
        fixed_addr = Some(format!("127.0.0.1:{port}"));
    }
    let child = args
        .target
        .command(args)?
        .env("HOST", "127.0.0.1")
        .env("PORT", http_port.to_string())
        .env("GRPC_PORT", grpc_port.to_string())
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("DEMO_SLEEP_SCALE", args.demo_sleep_scale.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok((child, fixed_addr))
}

/// Reads the target's JSON log: its address first, then every line, kept for the server-side
/// counts and shown on the live page.
struct LogReader {
    addr_tx: Option<tokio::sync::oneshot::Sender<String>>,
    upgraded_tx: tokio::sync::mpsc::UnboundedSender<Pid>,
    announcement: &'static str,
    board: Arc<live::Board>,
    load_started: Arc<std::sync::OnceLock<time::OffsetDateTime>>,
}

impl LogReader {
    async fn read(mut self, stdout: ChildStdout) -> Vec<Value> {
        let mut lines = BufReader::new(stdout).lines();
        let mut log = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(addr) = listening_on(&v, self.announcement)
                && let Some(tx) = self.addr_tx.take()
            {
                let _ = tx.send(addr.to_owned());
            }
            if event(&v) == "upgrade.handover"
                && let Some(pid) = v["new_pid"].as_i64()
            {
                let _ = self.upgraded_tx.send(Pid::from_raw(pid as i32));
            }
            let at = self
                .load_started
                .get()
                .and_then(|started| timeline::seconds_since(&v, *started));
            self.board.log_line(&v, at);
            log.push(v);
        }
        log
    }
}
