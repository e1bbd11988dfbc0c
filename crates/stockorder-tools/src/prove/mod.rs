//! `stockorder-tools prove`: start a server, put load on it, signal it, and account for every request.
//!
//! A user should not have to trust that a shutdown is graceful. This starts the target itself
//! (`serve`, one of the demos, or any command) on free ports with a fresh database, drives
//! create-order load at it over HTTP or gRPC, sends the signal after `--signal-after` (and, if
//! asked, a second one), and classifies every request by what its client saw. Then it reads the
//! stored orders back, over the REST API of a `stockorder serve` started on the database the
//! target left: an acknowledged order that is missing is *lost*; a stored order no client saw
//! acknowledged is *unacknowledged*. The exit
//! code is 1 when anything accepted failed, was lost, or is unaccounted for, so CI can use it.

mod live;
mod running;
pub(crate) mod tally;
mod timeline;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::Value;
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::load::{Driver, LoadProtocol, Outcome};
use crate::service::event;
use tally::{Request, Tally};

/// Options of `stockorder-tools prove`.
#[derive(Debug, Clone, Args)]
pub struct ProveArgs {
    /// What to start and shut down.
    #[arg(long, value_enum, default_value_t = Target::Serve)]
    pub target: Target,

    /// Which API the clients place their orders through. gRPC needs a target that serves it
    /// (`serve`, `demo_3`, or a command).
    #[arg(long, value_enum, default_value_t = LoadProtocol::Http)]
    pub protocol: LoadProtocol,

    /// Clients creating orders back to back.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub concurrency: usize,

    /// When to send the signal, after the load starts (e.g. `2s`).
    #[arg(long, default_value = "2s", value_parser = crate::duration::parse)]
    pub signal_after: Duration,

    /// Which signal.
    #[arg(long, value_enum, default_value_t = SignalName::Term)]
    pub signal: SignalName,

    /// Send the signal again this long after the first, as an impatient operator would. A
    /// graceful server then exits at once with 128 + the signal's number (130 for SIGINT, 143
    /// for SIGTERM), abandoning what is in flight. Sooner than 200 ms after the first, a signal
    /// counts as the same request.
    #[arg(long, value_parser = crate::duration::parse)]
    pub second_signal_after: Option<Duration>,

    /// In-place upgrades instead of one shutdown: SIGHUP this often (`serve` only). Each
    /// upgrade hands the listening sockets to a new process; after `--upgrades` of them the
    /// last process gets the signal.
    #[arg(long, value_parser = crate::duration::parse)]
    pub upgrade_every: Option<Duration>,

    /// How many upgrades `--upgrade-every` makes.
    #[arg(long, default_value_t = 20)]
    pub upgrades: usize,

    /// `DEMO_SLEEP_SCALE` for the demos: 1 keeps the original's pauses (demo_2 then takes 10 s).
    #[arg(long, default_value_t = 0.2)]
    pub demo_sleep_scale: f64,

    /// A client gives up on a request after this long and counts it as timed out.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse)]
    pub request_timeout: Duration,

    /// Print the tally as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Also follow the order event stream with this many followers (REST, so with `--protocol
    /// http`): each resumes after the last event it got whenever its stream ends, and at the
    /// end is compared with the history the log holds. An event missing, repeated or out of
    /// order fails the verdict.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,

    /// Also draw the run as an SVG timeline: requests per second by outcome, with the signal,
    /// readiness off, listeners closed, database closed and exit marked.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Serve a web page that shows the run as it happens (requests per second by outcome, the
    /// shutdown's moments, the counters, then the verdict and the server's report), with a
    /// button that sends the signal. On ADDR (`host:port`), or a free port on 127.0.0.1; the
    /// URL is printed. The page stays up after the run until Ctrl+C. To decide the moment
    /// yourself, give a long `--signal-after` (e.g. `10m`) and press the button. Anyone who
    /// can reach ADDR can press it too: keep it on loopback unless the room is yours.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
    pub live: Option<String>,

    /// The lesson in one command: the same load and signal through demo_1, demo_2, demo_3 and
    /// serve, one after another, each tally printed. Exit code 0 when demo_2 broke requests
    /// and the other three broke none. With `--live`, the page stacks the four timelines.
    #[arg(long)]
    pub compare: bool,

    /// With `--target command`: where the command serves (host:port). Without it, `prove`
    /// picks a free port and passes it in `PORT` (or `GRPC_PORT` with `--protocol grpc`).
    #[arg(long)]
    pub addr: Option<String>,

    /// With `--target command`: the program and its arguments, after `--`. It gets the same
    /// environment as the built-in targets (`HOST`, `PORT`, `GRPC_PORT`, `DATABASE_URL` of a
    /// fresh SQLite file, `LOG_FORMAT=json`); it is ready when its port accepts connections.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The servers `prove` knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// `stockorder serve`, built beside this binary.
    Serve,
    /// `examples/demo_1`: server, then database.
    #[value(name = "demo_1")]
    Demo1,
    /// `examples/demo_2`: the database closed under a serving server.
    #[value(name = "demo_2")]
    Demo2,
    /// `examples/demo_3`: the generic pattern.
    #[value(name = "demo_3")]
    Demo3,
    /// Any server: the command given after `--`.
    Command,
}

/// The signal to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignalName {
    /// SIGTERM, what orchestrators send.
    Term,
    /// SIGINT, Ctrl+C.
    Int,
}

impl SignalName {
    fn signal(self) -> nix::sys::signal::Signal {
        match self {
            SignalName::Term => nix::sys::signal::Signal::SIGTERM,
            SignalName::Int => nix::sys::signal::Signal::SIGINT,
        }
    }
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Serve => "serve",
            Target::Demo1 => "demo_1",
            Target::Demo2 => "demo_2",
            Target::Demo3 => "demo_3",
            Target::Command => "command",
        }
    }

    /// The program and its arguments. Demos are the example binaries built beside this one.
    fn command(self, args: &ProveArgs) -> anyhow::Result<Command> {
        if self == Target::Command {
            let (program, rest) = args
                .command
                .split_first()
                .context("--target command needs the command after `--`, e.g. `-- ./server --port 8080`")?;
            let mut cmd = Command::new(program);
            cmd.args(rest);
            return Ok(cmd);
        }
        anyhow::ensure!(
            args.command.is_empty(),
            "a command after `--` is only run with `--target command`"
        );
        anyhow::ensure!(
            args.upgrade_every.is_none() || self == Target::Serve,
            "--upgrade-every needs --target serve (the demos do not upgrade in place)"
        );
        anyhow::ensure!(
            args.protocol == LoadProtocol::Http || matches!(self, Target::Serve | Target::Demo3),
            "{} serves HTTP only; gRPC load needs --target serve, demo_3 or command",
            self.name()
        );
        if self == Target::Serve {
            return crate::service::serve_command();
        }
        Ok(Command::new(crate::process::sibling(&format!(
            "examples/{}",
            self.name()
        ))?))
    }
}

/// Runs the proof and prints the tally; the exit code says whether it held.
pub async fn run(args: ProveArgs) -> anyhow::Result<std::process::ExitCode> {
    let live = match &args.live {
        Some(addr) => {
            let (live, url) = live::Live::serve(addr).await?;
            eprintln!("live page at {url}");
            Some((live, url))
        }
        None => None,
    };
    let held = if args.compare {
        // The lesson, in one command: the same load through each target, one after another.
        // It holds when demo_2 fails and the other three hold.
        anyhow::ensure!(
            args.target == Target::Serve && args.command.is_empty() && args.upgrade_every.is_none(),
            "--compare runs demo_1, demo_2, demo_3 and serve itself: leave out --target, --upgrade-every and a command"
        );
        let mut as_expected = true;
        for target in [Target::Demo1, Target::Demo2, Target::Demo3, Target::Serve] {
            let board = live.as_ref().map(|(l, _)| l.next_run());
            let held = run_one(&ProveArgs { target, ..args.clone() }, board).await?;
            as_expected &= held == (target != Target::Demo2);
            println!();
        }
        eprintln!(
            "{}",
            if as_expected {
                "as expected: demo_2 broke requests, demo_1, demo_3 and serve broke none"
            } else {
                "NOT as expected: see the tallies above"
            }
        );
        as_expected
    } else {
        run_one(&args, live.as_ref().map(|(l, _)| l.next_run())).await?
    };
    if let Some((_, url)) = live {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        eprintln!("the run is over; the live page stays at {url} until Ctrl+C");
        crate::process::terminated().await;
    }
    Ok(if held {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// One proof run: starts the target, loads it, signals it, prints the tally, and says whether
/// it held. `board` is the live page's, when there is one.
async fn run_one(args: &ProveArgs, board: Option<Arc<live::Board>>) -> anyhow::Result<bool> {
    let page = board.is_some();
    let board = board.unwrap_or_default();
    let mut target = running::Running::start(args, &board).await?;
    let addr = target.addr.clone();
    let watchers =
        (args.watchers > 0).then(|| crate::watchers::Watchers::start(args.watchers, &format!("http://{addr}")));
    if let Some(watchers) = &watchers {
        board.show_watchers(watchers.progress());
    }

    let started = Instant::now();
    let started_wall = time::OffsetDateTime::now_utc();
    let _ = target.load_started.set(started_wall);
    board.start(
        format!("prove {} ({} clients)", target.name, protocol_name(args.protocol)),
        started,
    );
    let exited = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    for _ in 0..args.concurrency {
        let driver = Driver::new(args.protocol, &addr)?;
        let (exited, timeout) = (Arc::clone(&exited), args.request_timeout);
        let board = page.then(|| Arc::clone(&board));
        clients.spawn(client(driver, started, exited, timeout, board));
    }

    let signalled = target.signal(args, &board, started, page).await?;
    let exit_after = started.elapsed();
    exited.store(true, Ordering::Release);
    board.mark(exit_after.as_secs_f64(), "exit");

    let mut requests = Vec::new();
    while let Some(done) = clients.join_next().await {
        requests.extend(done.context("a client task failed")?);
    }
    let log = target.log().await;
    let exit_code = signalled.exit_code.unwrap_or_else(|| last_report_exit_code(&log));
    let (stored, events) = read_back(&target.db, watchers).await?;
    let tally = Tally::new(
        &target.name,
        protocol_name(args.protocol),
        args.signal.signal(),
        args.second_signal_after.is_some(),
        signalled.at,
        exit_after,
        exit_code,
        signalled.upgrades.len(),
        &requests,
        stored.as_ref(),
        &log,
    )
    .with_events(events);
    if let Some(path) = &args.svg {
        let marks = timeline_marks(args, &log, started_wall, &signalled, exit_after);
        timeline::render(path, &timeline_title(args), &requests, &marks, exit_after)?;
        eprintln!("timeline written to {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tally)?);
    } else {
        print!("{tally}");
    }
    let mut verdict = serde_json::to_value(&tally)?;
    verdict["held"] = tally.held().into();
    board.finish(verdict);
    Ok(tally.held())
}

/// The orders stored in the target's file, and what each watcher received against the history,
/// read back through a fresh server on that file. `None` for a command that keeps its orders
/// elsewhere: nothing can be said about lost orders then.
async fn read_back(
    db: &std::path::Path,
    watchers: Option<crate::watchers::Watchers>,
) -> anyhow::Result<(
    Option<std::collections::HashSet<String>>,
    Option<crate::watchers::WatchTally>,
)> {
    if !db.exists() {
        return Ok((None, None));
    }
    eprintln!("reading the stored orders back over the API");
    let reader = crate::service::reader(&format!("sqlite://{}", db.display())).await?;
    let stored = crate::service::stored_ids_of(&reader).await?;
    let events = match watchers {
        Some(watchers) => {
            // The followers resume on the reader, as a client would on the next process.
            let http = format!("http://{}", reader.http);
            watchers.follow(&http);
            Some(watchers.finish(&http, Duration::from_secs(20)).await?)
        }
        None => None,
    };
    reader.stop().await?;
    Ok((Some(stored), events))
}

/// The marks on the timeline: the signal, the shutdown's steps from the log (or, with upgrades,
/// each SIGHUP: the log's steps are then the old processes'), and the exit.
fn timeline_marks(
    args: &ProveArgs,
    log: &[Value],
    started_wall: time::OffsetDateTime,
    signalled: &running::Signalled,
    exit_after: Duration,
) -> Vec<timeline::Mark> {
    let mut marks = if signalled.upgrades.is_empty() {
        timeline::marks_from_log(log, started_wall)
    } else {
        signalled
            .upgrades
            .iter()
            .map(|at| timeline::Mark {
                at: at.as_secs_f64(),
                label: "SIGHUP",
            })
            .collect()
    };
    marks.insert(
        0,
        timeline::Mark {
            at: signalled.at.as_secs_f64(),
            label: signal_label(args.signal),
        },
    );
    marks.push(timeline::Mark {
        at: exit_after.as_secs_f64(),
        label: "exit",
    });
    marks.sort_by(|a, b| a.at.total_cmp(&b.at));
    marks
}

/// The command line the timeline's title shows.
fn timeline_title(args: &ProveArgs) -> String {
    let mut title = match args.protocol {
        LoadProtocol::Http => format!("stockorder-tools prove --target {}", args.target.name()),
        LoadProtocol::Grpc => format!("stockorder-tools prove --target {} --protocol grpc", args.target.name()),
    };
    if let Some(every) = args.upgrade_every {
        title.push_str(&format!(" --upgrade-every {}ms", every.as_millis()));
    }
    title
}

fn signal_label(signal: SignalName) -> &'static str {
    match signal {
        SignalName::Term => "SIGTERM",
        SignalName::Int => "SIGINT",
    }
}

pub(crate) fn protocol_name(protocol: LoadProtocol) -> &'static str {
    match protocol {
        LoadProtocol::Http => "HTTP",
        LoadProtocol::Grpc => "gRPC",
    }
}

/// The exit code the last process's shutdown report gives (after in-place upgrades, that
/// process is not our child, so its status cannot be waited for).
fn last_report_exit_code(log: &[Value]) -> Option<i32> {
    log.iter()
        .rev()
        .find(|l| event(l) == "shutdown.complete")
        .and_then(|l| l["exit_code"].as_i64())
        .and_then(|code| i32::try_from(code).ok())
}

/// What a client does after a request.
pub(crate) enum Next {
    /// Send the next one.
    Send,
    /// Wait a moment first (the server refused the connection but may still be there).
    Pause(Duration),
    /// Stop.
    Stop,
}

/// One client: places orders through `driver` back to back, recording what it saw of each,
/// until `next` says stop.
pub(crate) async fn place_orders(
    mut driver: Driver,
    started: Instant,
    timeout: Duration,
    board: Option<Arc<live::Board>>,
    mut next: impl FnMut(Outcome) -> Next,
) -> Vec<Request> {
    let mut requests = Vec::new();
    loop {
        let sent = started.elapsed();
        if let Some(board) = &board {
            board.sending();
        }
        let (outcome, id) = tokio::time::timeout(timeout, driver.place_order())
            .await
            .unwrap_or((Outcome::TimedOut, None));
        let request = Request {
            sent,
            answered: started.elapsed(),
            outcome,
            id,
        };
        if let Some(board) = &board {
            board.answered(&request);
        }
        requests.push(request);
        match next(outcome) {
            Next::Send => {}
            Next::Pause(pause) => tokio::time::sleep(pause).await,
            Next::Stop => return requests,
        }
    }
}

/// `prove`'s client: places orders until, after the target has exited, its connection is
/// refused.
async fn client(
    driver: Driver,
    started: Instant,
    exited: Arc<AtomicBool>,
    timeout: Duration,
    board: Option<Arc<live::Board>>,
) -> Vec<Request> {
    place_orders(driver, started, timeout, board, move |outcome| match outcome {
        Outcome::Refused if exited.load(Ordering::Acquire) => Next::Stop,
        // Refused before the target is gone (it stopped listening first): try again shortly
        // rather than spin.
        Outcome::Refused => Next::Pause(Duration::from_millis(5)),
        _ => Next::Send,
    })
    .await
}
