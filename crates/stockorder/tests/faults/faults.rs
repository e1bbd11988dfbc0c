//! Faults without outages or losses: the real binary over real sockets, each fault injected for
//! real (a full tmpfs, another process's lock, a private PostgreSQL cluster restarted and
//! stopped, a corrupted page, bytes no gRPC client would send), and the same accounting as
//! `prove`: what every client saw, and every acknowledged order read back.
//!
//! Tests that need root (mounts, a private PostgreSQL run as the `postgres` user) print why
//! they skip without it. The slow ones (a 15 s lock, a 10 s PostgreSQL stop) say so; the file
//! takes about a minute.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Answer, Creators, ServerProcess, assert_only_allowed, ready_becomes, recovered_after, status_mix};
use nix::sys::signal::Signal;

use crate::heavy;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A tmpfs of its own, unmounted when dropped. `None` (with the reason printed) where mounting
/// is not allowed.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        if !is_root() {
            crate::common::skip(format_args!("mounting a small tmpfs to fill needs root"));
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            crate::common::skip(format_args!("cannot mount a tmpfs here"));
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system to the last byte.
    fn fill(&self) {
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.path().join("filler").display()))
            .stderr(Stdio::null())
            .status();
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }

    fn remount(&self, mode: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {mode}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn base(server: &ServerProcess) -> String {
    format!("http://{}", server.addr)
}

/// Every acknowledged order is there: read back over the API, by id.
async fn assert_none_lost(answers: &[Answer], base: &str) {
    let stored = ServerProcess::all_orders_at(base).await;
    let acked: HashSet<&str> = answers.iter().filter_map(|a| a.id.as_deref()).collect();
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains_key(**id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged orders lost",
        lost.len(),
        acked.len()
    );
    eprintln!("{} acknowledged, 0 lost", acked.len());
}

/// SIGTERM, and a clean exit; on failure, the log's warnings and errors say why.
async fn stop_cleanly(server: &mut ServerProcess) {
    server.signal(Signal::SIGTERM);
    let log = server.rest_of_log().await;
    let code = server.wait().await;
    let trouble: Vec<String> = log
        .iter()
        .filter(|l| l["level"] != "INFO" && l["level"] != "DEBUG")
        .map(|l| l.to_string())
        .collect();
    assert_eq!(code, Some(0), "{trouble:#?}");
}

fn still_running(server: &mut ServerProcess) {
    assert_eq!(
        server.child.try_wait().unwrap(),
        None,
        "the service exited during the fault"
    );
}

/// The whole lifetime of one fault: load, the fault for `hold`, the cure, load after; what the
/// clients saw and how long recovery took.
struct Run {
    answers: Vec<Answer>,
    cured_at: Duration,
}

impl Run {
    fn report(&self, fault: &str) {
        let during = self.answers.iter().filter(|a| a.at < self.cured_at).count();
        eprintln!(
            "{fault}: status mix {:?} ({during} answers before the cure); first create acknowledged {:?} after the cure",
            status_mix(&self.answers),
            recovered_after(&self.answers, self.cured_at),
        );
    }

    fn assert_recovered_within(&self, limit: Duration) {
        let took = recovered_after(&self.answers, self.cured_at).expect("no create succeeded after the cure");
        assert!(took <= limit, "creates came back {took:?} after the cure");
    }
}

#[tokio::test]
async fn a_full_disk_is_survived_and_nothing_acknowledged_is_lost() {
    let _alone = heavy().await;
    // Room for the WAL to reach its checkpoint size (4 MiB) once space is back.
    let Some(fs) = Tmpfs::mount("16m") else { return };
    let mut server = ServerProcess::start(&fs.path().join("orders.db"), &[]).await;
    let base = base(&server);
    let clients = Creators::start(8, std::slice::from_ref(&base));
    tokio::time::sleep(Duration::from_millis(300)).await;
    fs.fill();
    assert!(
        ready_becomes(&base, 503, Duration::from_secs(5)).await,
        "/ready stayed 200 while the disk was full"
    );
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 200, "liveness must not fail for storage");
    tokio::time::sleep(Duration::from_secs(1)).await;
    still_running(&mut server);
    fs.free();
    let cured_at = clients.started.elapsed();
    assert!(
        ready_becomes(&base, 200, Duration::from_secs(2)).await,
        "/ready did not come back"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = Run {
        answers: clients.finish().await,
        cured_at,
    };
    run.report("disk full");
    assert_only_allowed(&run.answers);
    assert!(
        run.answers
            .iter()
            .any(|a| a.status == Some(503) && a.error.contains("storage is full")),
        "no 503 named the cause"
    );
    run.assert_recovered_within(Duration::from_secs(1));
    still_running(&mut server);
    assert_none_lost(&run.answers, &base).await;
    stop_cleanly(&mut server).await;
}

/// Slow: another process holds the database's write lock for 15 s.
#[tokio::test]
async fn an_external_lock_for_15_s_is_survived() {
    let _alone = heavy().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let mut server = ServerProcess::start(&db, &[]).await;
    let base = base(&server);
    let clients = Creators::start(8, std::slice::from_ref(&base));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert!(
        ready_becomes(&base, 503, Duration::from_secs(8)).await,
        "/ready stayed 200 while writes were locked out"
    );
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(Duration::from_secs(6))).await;
    still_running(&mut server);
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    let cured_at = clients.started.elapsed();
    assert!(
        ready_becomes(&base, 200, Duration::from_secs(3)).await,
        "/ready did not come back"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = Run {
        answers: clients.finish().await,
        cured_at,
    };
    run.report("15 s external lock");
    assert_only_allowed(&run.answers);
    assert!(
        run.answers
            .iter()
            .any(|a| a.status == Some(503) && a.error.contains("locked")),
        "no 503 named the cause"
    );
    run.assert_recovered_within(Duration::from_secs(1));
    assert_none_lost(&run.answers, &base).await;
    stop_cleanly(&mut server).await;
}

/// A damaged file cannot heal: the service stops with the cause in its log and a non-zero exit
/// (before, it exited 1 a millisecond after "database ready" without saying why).
#[tokio::test]
async fn a_corrupt_database_ends_the_service_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let mut server = ServerProcess::start(&db, &[("PROCESSOR_WORKERS", "0")]).await;
    let client = reqwest::Client::new();
    for _ in 0..300 {
        let resp = client
            .post(server.url("/api/orders"))
            .json(&crate::common::market_order())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
    // Every page but the first (the header and the schema) overwritten.
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "the file is too small to corrupt a page");
    bytes[4096..].iter_mut().for_each(|b| *b = 0xA5);
    std::fs::write(&db, bytes).unwrap();

    let mut server = ServerProcess::start(&db, &[]).await;
    let code = server.wait().await;
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    let log = server.rest_of_log().await;
    let said = log.iter().any(|l| {
        let text = l.to_string();
        text.contains("corrupt") && text.contains("malformed")
    });
    assert!(said, "the cause is not in the log: {log:#?}");
}

/// The binary on `db` with `env`, run to its exit: the code and what it printed on stderr.
async fn run_to_exit(db: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder"))
        .env("PORT", "0")
        .env("GRPC_PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("DATABASE_URL", db)
        .env_remove("LISTEN_FDS")
        .envs(env.iter().copied())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("did not exit")
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.code(), text)
}

#[tokio::test]
async fn starting_on_a_full_disk_says_the_disk_is_full() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let db = fs.path().join("orders.db");
    let server = ServerProcess::start(&db, &[]).await;
    server.signal(Signal::SIGTERM);
    let mut server = server;
    assert_eq!(server.wait().await, Some(0));
    fs.fill();
    let (code, said) = run_to_exit(db.to_str().unwrap(), &[]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("the disk is full"), "{said}");
}

#[tokio::test]
async fn a_read_only_database_is_refused_at_start() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let db = fs.path().join("orders.db");
    let mut server = ServerProcess::start(&db, &[]).await;
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
    fs.remount("ro");
    let (code, said) = run_to_exit(db.to_str().unwrap(), &[]).await;
    fs.remount("rw");
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("read-only"), "{said}");
}

/// A database that does not exist yet, in a directory that cannot be written: the directory is
/// what is named, by its absolute path, not the file.
#[tokio::test]
async fn a_read_only_directory_is_named_at_start() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    fs.remount("ro");
    let db = fs.path().join("new.db");
    let (code, said) = run_to_exit(db.to_str().unwrap(), &[]).await;
    fs.remount("rw");
    assert_eq!(code, Some(1), "{said}");
    let dir = fs.path().display().to_string();
    assert!(said.contains(&format!("its directory {dir} is read-only")), "{said}");
    assert!(!db.exists(), "nothing created");
}

#[tokio::test]
async fn another_applications_file_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("theirs.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ada');")
            .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let (code, said) = run_to_exit(db.to_str().unwrap(), &[]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("another application"), "{said}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file was changed");
    assert!(!dir.path().join("theirs.db-wal").exists(), "switched to WAL");
}

/// A database path whose directory is missing, or is a file, is refused with what is wrong
/// with the path, not SQLite's "unable to open database file" (error code 14) twice over.
#[tokio::test]
async fn a_bad_database_path_says_what_is_wrong_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let missing = dir.path().join("missing");
    for (db, says) in [
        (
            missing.join("orders.db"),
            format!("the directory {} does not exist", missing.display()),
        ),
        (
            file.join("orders.db"),
            format!("{} is a file, not a directory", file.display()),
        ),
    ] {
        let (code, said) = run_to_exit(db.to_str().unwrap(), &[]).await;
        assert_eq!(code, Some(1), "{said}");
        assert!(said.contains(&says) && said.contains("DATABASE_URL"), "{said}");
        assert!(!said.contains("Error code 14"), "{said}");
    }
}

/// A second server on a port in use says which port and how to change it, and fails before it
/// has created (or migrated) a database.
#[tokio::test]
async fn a_port_in_use_is_named_and_no_database_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    for (setting, protocol, hint) in [
        ("PORT", "HTTP", "PORT (or --port)"),
        ("GRPC_PORT", "gRPC", "GRPC_PORT (or --grpc-port)"),
    ] {
        let (code, said) = run_to_exit(db.to_str().unwrap(), &[(setting, &port)]).await;
        assert_eq!(code, Some(1), "{said}");
        assert!(
            said.contains(&format!("cannot listen for {protocol} on 127.0.0.1:{port}")),
            "{said}"
        );
        assert!(said.contains("in use") && said.contains(hint), "{said}");
        assert!(!db.exists(), "the database was created before the bind failed: {said}");
    }
}

#[tokio::test]
async fn an_unknown_url_scheme_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = "mysql:orders.db";
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder"))
        .current_dir(dir.path())
        .env("PORT", "0")
        .env("GRPC_PORT", "0")
        .env("DATABASE_URL", url)
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("unknown database URL scheme"), "{said}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a file was created");
}

/// A listener that accepts connections and never says a word: a PostgreSQL that hangs.
async fn silent_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_database_that_never_answers_bounds_start_up_and_says_what_it_waits_for() {
    let (addr, _silent) = silent_server().await;
    let url = format!("postgres://postgres@{addr}/test");
    let started = Instant::now();
    let (code, said) = run_to_exit(&url, &[("STARTUP_TIMEOUT", "2s"), ("REQUEST_TIMEOUT", "1s")]).await;
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("waiting for PostgreSQL"), "{said}");
    assert!(said.contains(&addr.to_string()), "{said}");
    // STARTUP_TIMEOUT plus one connect timeout, and process start.
    assert!(took < Duration::from_secs(6), "start-up took {took:?}");
    eprintln!("gave up after {took:?}");
}

#[tokio::test]
async fn sigterm_while_waiting_for_the_database_exits_promptly() {
    let (addr, _silent) = silent_server().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder"))
        .env("PORT", "0")
        .env("GRPC_PORT", "0")
        .env("DATABASE_URL", format!("postgres://postgres@{addr}/test"))
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    // Readiness to be signalled: the line saying it opens the database.
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("opening the database") {
            break;
        }
    }
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    let signalled = Instant::now();
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("did not exit")
        .unwrap();
    assert_eq!(status.code(), Some(0), "killed by the signal's default action?");
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
    }
    assert!(rest.contains("stopped during start-up"), "{rest}");
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
}

/// SIGTERM a few milliseconds after exec, before any handler could exist: it waits, held,
/// until start-up has installed the handlers, and then stops the process cleanly. (The
/// dynamic loader's first fraction of a millisecond is before any code of the program runs:
/// only a supervisor that spawns with the signal blocked can cover that.)
#[tokio::test]
async fn sigterm_right_after_exec_is_handled_not_fatal() {
    for delay_ms in [0u64, 2, 4, 6, 8, 10, 12] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockorder"))
            .env("PORT", "0")
            .env("GRPC_PORT", "0")
            .env("DATABASE_URL", dir.path().join("orders.db"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        // The program's first line holds the signal, and start-up later catches it; wait until
        // the kernel shows either (the loader before main is not the program's to cover), then
        // signal after `delay_ms`.
        let until = Instant::now() + Duration::from_secs(5);
        while !main_has_run(pid) {
            assert!(Instant::now() < until, "SIGTERM never held");
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("did not exit")
            .unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM {delay_ms} ms into main: {status:?} (None: killed by the default action)"
        );
    }
}

/// Whether the process's main thread holds SIGTERM (`SigBlk`) or has a handler for it
/// (`SigCgt`): signal 15 is bit 14 of either mask.
fn main_has_run(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let has_sigterm = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
    };
    has_sigterm("SigBlk:") || has_sigterm("SigCgt:")
}

#[tokio::test]
async fn listeners_take_the_systems_backlog() {
    let Ok(somaxconn) = std::fs::read_to_string("/proc/sys/net/core/somaxconn") else {
        crate::common::skip(format_args!("no /proc/sys/net/core/somaxconn"));
        return;
    };
    let Ok(ss) = std::process::Command::new("ss").arg("-V").output() else {
        crate::common::skip(format_args!("`ss` (iproute2) is not installed"));
        return;
    };
    drop(ss);
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("orders.db"), &[]).await;
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", server.addr.port())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // For a listener, ss shows the backlog as Send-Q (the third column).
    let backlog: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert_eq!(backlog, [somaxconn.trim()], "{text}");
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
}

/// A second signal during the drain delay ends the process at once, saying so.
#[tokio::test]
async fn a_second_signal_during_the_drain_delay_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        &dir.path().join("orders.db"),
        &[("SHUTDOWN_DRAIN_DELAY", "5s"), ("SHUTDOWN_TIMEOUT", "20s")],
    )
    .await;
    server.signal(Signal::SIGTERM);
    server.wait_for_event("drain.started").await;
    tokio::time::sleep(phased_shutdown::DUPLICATE_WINDOW + Duration::from_millis(100)).await;
    let second = Instant::now();
    server.signal(Signal::SIGINT);
    let code = server.wait().await;
    assert!(second.elapsed() < Duration::from_secs(2), "{:?}", second.elapsed());
    assert_eq!(code, Some(130), "128 + SIGINT");
    let log = server.rest_of_log().await;
    assert!(log.iter().any(|l| l["event"] == "shutdown.interrupted"));
}

/// A client half-way through sending its body when SIGTERM comes: its request was accepted, so
/// it is finished and answered, and the shutdown is clean.
#[tokio::test]
async fn a_slow_client_mid_body_at_sigterm_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("orders.db"), &[]).await;
    let body = br#"{"symbol":"AAPL","order_type":"MARKET","order_side":"BUY","quantity":5}"#;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.signal(Signal::SIGTERM);
    server.wait_for_event("shutdown.started").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body[20..]).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert_eq!(server.wait().await, Some(0));
}

mod grpc_framing {
    //! Requests no well-behaved client sends, written byte by byte over HTTP/2.

    use super::*;

    /// Sends one gRPC request to `path` with `body` as the whole request body; the answer's
    /// `grpc-status` and `grpc-message`.
    async fn call(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (i32, String) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let mut request = axum::http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let (response, mut send) = client.send_request(request.body(()).unwrap(), false).unwrap();
        send.send_data(body.into(), true).unwrap();
        let response = response.await.unwrap();
        let status_of = |h: &axum::http::HeaderMap| {
            h.get("grpc-status").map(|v| {
                (
                    v.to_str().unwrap().parse().unwrap(),
                    h.get("grpc-message")
                        .map(|m| m.to_str().unwrap().to_owned())
                        .unwrap_or_default(),
                )
            })
        };
        if let Some(status) = status_of(response.headers()) {
            return status; // trailers-only
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let _ = chunk.unwrap();
        }
        let trailers = body.trailers().await.unwrap().expect("trailers");
        status_of(&trailers).expect("a grpc-status")
    }

    fn frame(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    const CREATE: &str = "/stockorder.StockOrderService/CreateOrder";
    const GET: &str = "/stockorder.StockOrderService/GetOrder";

    #[tokio::test]
    async fn each_malformed_request_has_the_code_of_its_mistake() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = ServerProcess::start(&dir.path().join("orders.db"), &[]).await;
        let addr = server.grpc_addr;
        // GetOrderRequest { order_id: "…" }: field 1, length-delimited.
        let get = |id: &str| {
            let mut m = vec![0x0a, id.len() as u8];
            m.extend_from_slice(id.as_bytes());
            m
        };
        let unknown = get("0190b2f4-0000-7000-8000-000000000000");
        assert_eq!(
            call(addr, GET, &[], frame(0, &unknown)).await.0,
            5,
            "well formed: NOT_FOUND"
        );

        let cases: Vec<(&str, Vec<u8>, i32)> = vec![
            ("not protobuf", frame(0, &[0xff, 0xff, 0xff]), 3),
            ("a truncated message", frame(0, &unknown)[..9].to_vec(), 3),
            ("a prefix cut short", vec![0, 0, 0], 3),
            ("flag byte 2", frame(2, &unknown), 3),
            ("compressed without grpc-encoding", frame(1, &unknown), 3),
            ("no message", Vec::new(), 12),
            ("two messages", [frame(0, &unknown), frame(0, &unknown)].concat(), 12),
        ];
        for (what, body, code) in cases {
            let (got, message) = call(addr, GET, &[], body).await;
            assert_eq!(got, code, "{what}: {message}");
        }
        // 5 MB: over the 4 MiB limit.
        let big = vec![0u8; 5 * 1024 * 1024];
        let (got, message) = call(addr, CREATE, &[], frame(0, &big)).await;
        assert_eq!(got, 8, "oversize: RESOURCE_EXHAUSTED, got {got}: {message}");
        // Nothing above was a storage failure, and the service still serves.
        assert_eq!(call(addr, GET, &[], frame(0, &unknown)).await.0, 5);
        server.signal(Signal::SIGTERM);
        assert_eq!(server.wait().await, Some(0));
    }
}

mod postgres {
    //! A private PostgreSQL cluster, so a test can restart and stop it without disturbing any
    //! other test's database.

    use super::*;
    use crate::common::cluster::Cluster;

    /// Makes the database read-only (or writable again) for new sessions, and ends the
    /// current ones so the replicas' pools reconnect under the new default.
    async fn read_only(url: &str, on: bool) {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let value = if on { "on" } else { "off" };
        // One statement per call: a multi-statement query is one transaction, begun read-only.
        for sql in [
            "SET default_transaction_read_only = off".to_owned(),
            format!("ALTER DATABASE postgres SET default_transaction_read_only = {value}"),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = 'postgres'"
                .to_owned(),
        ] {
            client.batch_execute(&sql).await.unwrap();
        }
    }

    /// Creates an order at `base` until the status and body satisfy `wanted` (at most 5 s); the
    /// body.
    async fn poll_create(base: &str, wanted: impl Fn(u16, &str) -> bool) -> String {
        let client = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let resp = client
                .post(format!("{base}/api/orders"))
                .json(&crate::common::market_order())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            if wanted(status, &body) {
                return body;
            }
            assert!(Instant::now() < until, "still {status}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Slow (≈ 20 s): two replicas on one database through a restart (a fast shutdown and
    /// start) and a 10 s stop of PostgreSQL.
    // Several threads: the cluster's start and stop block, and the clients must go on meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_ride_out_a_postgres_restart_and_a_10_s_stop() {
        let _alone = heavy().await;
        let Some(mut pg) = Cluster::create() else { return };
        let url = pg.url();
        let env = [("DATABASE_URL", url.as_str()), ("REQUEST_TIMEOUT", "3s")];
        let nowhere = Path::new("unused");
        let mut a = ServerProcess::start(nowhere, &env).await;
        let mut b = ServerProcess::start(nowhere, &env).await;
        let bases = [base(&a), base(&b)];
        let clients = Creators::start(8, &bases);
        tokio::time::sleep(Duration::from_millis(500)).await;

        // A restart.
        let restart_at = clients.started.elapsed();
        pg.stop();
        let down = Instant::now();
        for base in &bases {
            assert!(
                ready_becomes(base, 503, Duration::from_millis(1400)).await,
                "{base}: /ready stayed 200 while PostgreSQL restarted"
            );
        }
        tokio::time::sleep(Duration::from_millis(1500).saturating_sub(down.elapsed())).await;
        pg.start();
        let restarted_at = clients.started.elapsed();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        still_running(&mut a);
        still_running(&mut b);

        // A 10 s stop.
        let stop_at = clients.started.elapsed();
        pg.stop();
        for base in &bases {
            assert!(
                ready_becomes(base, 503, Duration::from_secs(5)).await,
                "{base}: /ready stayed 200 while PostgreSQL was down"
            );
        }
        tokio::time::sleep(Duration::from_secs(9)).await;
        still_running(&mut a);
        still_running(&mut b);
        pg.start();
        let cured_at = clients.started.elapsed();
        for base in &bases {
            assert!(
                ready_becomes(base, 200, Duration::from_secs(5)).await,
                "{base}: /ready did not return"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let answers = clients.finish().await;
        let restart = Run {
            answers: answers.iter().filter(|x| x.at < stop_at).cloned().collect(),
            cured_at: restarted_at,
        };
        restart.report("PostgreSQL restart");
        eprintln!("restart began at {restart_at:?}, PostgreSQL back at {restarted_at:?}");
        restart.assert_recovered_within(Duration::from_secs(1));
        let stop = Run {
            answers: answers.iter().filter(|x| x.at >= stop_at).cloned().collect(),
            cured_at,
        };
        stop.report("PostgreSQL stopped 10 s");
        assert_only_allowed(&answers);
        stop.assert_recovered_within(Duration::from_secs(1));
        still_running(&mut a);
        still_running(&mut b);
        assert_none_lost(&answers, &bases[0]).await;
        // A failover to a standby, or an operator's read-only switch: writes fail with the
        // server's own words in the log, and come back when it is undone.
        read_only(&pg.url(), true).await;
        // The switch ends every session, so a create may first meet a pooled connection that
        // is gone ("unreachable", also a 503); the read-only refusal follows.
        let resp = poll_create(&bases[0], |s, body| s == 503 && body.contains("read-only")).await;
        assert!(resp.contains("nothing was changed"), "{resp}");
        assert!(ready_becomes(&bases[0], 503, Duration::from_secs(5)).await);
        read_only(&pg.url(), false).await;
        poll_create(&bases[0], |s, _| s == 201).await;
        a.signal(Signal::SIGTERM);
        let log = a.rest_of_log().await;
        assert_eq!(a.wait().await, Some(0));
        let sqlstate = log.iter().any(|l| l.to_string().contains("SQLSTATE 25006"));
        assert!(sqlstate, "the server's own message (SQLSTATE) is not in the log");
        b.signal(Signal::SIGTERM);
        assert_eq!(b.wait().await, Some(0));
    }
}

mod burst {
    //! More connections than the server admits requests: excess is shed, probes still answer.

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    use super::*;

    /// One HTTP/1.1 exchange on a kept-alive connection: the status, and whether Retry-After
    /// came. `None` when the connection broke.
    async fn exchange(stream: &mut BufReader<tokio::net::TcpStream>, request: &[u8]) -> Option<(u16, bool, bool)> {
        stream.get_mut().write_all(request).await.ok()?;
        let mut line = String::new();
        stream.read_line(&mut line).await.ok()?;
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        let (mut length, mut retry_after, mut close) = (0usize, false, false);
        loop {
            line.clear();
            stream.read_line(&mut line).await.ok()?;
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse().ok()?;
            }
            retry_after |= header.starts_with("retry-after:");
            close |= header == "connection: close";
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.ok()?;
        Some((status, retry_after, close))
    }

    /// Slow (≈ 25 s): 2000 connections posting orders back to back for 20 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_thousand_connections_are_shed_not_dropped_and_health_answers() {
        let _alone = heavy().await;
        const CONNECTIONS: usize = 2000;
        const FOR: Duration = Duration::from_secs(20);
        // Client and server each hold 2000 sockets.
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        if hard < 4 * CONNECTIONS as u64 {
            crate::common::skip(format_args!(
                "the open-file limit ({hard}) is below what 2000 connections need"
            ));
            return;
        }
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut server =
            ServerProcess::start(&dir.path().join("orders.db"), &[("RUST_LOG", "info,tower_http=warn")]).await;
        let addr = server.addr;
        let body = br#"{"symbol":"AAPL","order_type":"LIMIT","order_side":"BUY","quantity":1,"price":1.0}"#;
        let request = [
            format!(
                "POST /api/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            body.to_vec(),
        ]
        .concat();
        let request = std::sync::Arc::new(request);
        let until = Instant::now() + FOR;
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..CONNECTIONS {
            let request = std::sync::Arc::clone(&request);
            clients.spawn(async move {
                let mut tally = std::collections::BTreeMap::<String, usize>::new();
                let mut stream = match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => BufReader::new(s),
                    Err(e) => {
                        *tally.entry(format!("connect: {e}")).or_default() += 1;
                        return tally;
                    }
                };
                while Instant::now() < until {
                    let key = match exchange(&mut stream, &request).await {
                        Some((503, true, close)) => {
                            if close {
                                match tokio::net::TcpStream::connect(addr).await {
                                    Ok(s) => stream = BufReader::new(s),
                                    Err(_) => return tally,
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            "503".to_owned()
                        }
                        Some((status, _, _)) => status.to_string(),
                        None => "broken".to_owned(),
                    };
                    let broken = key == "broken";
                    *tally.entry(key).or_default() += 1;
                    if broken {
                        match tokio::net::TcpStream::connect(addr).await {
                            Ok(s) => stream = BufReader::new(s),
                            Err(_) => return tally,
                        }
                    }
                }
                tally
            });
        }
        // A probe on a fresh connection every 200 ms, as a load balancer's health check.
        let mut slowest_probe = Duration::ZERO;
        let mut probes = 0;
        while Instant::now() < until {
            let asked = Instant::now();
            let mut stream = BufReader::new(tokio::net::TcpStream::connect(addr).await.expect("probe connect"));
            let answer = exchange(&mut stream, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await;
            assert_eq!(answer.map(|a| a.0), Some(200), "/health under load");
            slowest_probe = slowest_probe.max(asked.elapsed());
            probes += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut tally = std::collections::BTreeMap::<String, usize>::new();
        while let Some(t) = clients.join_next().await {
            for (k, n) in t.unwrap() {
                *tally.entry(k).or_default() += n;
            }
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id().unwrap())).unwrap();
        let peak = status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: ?");
        eprintln!(
            "{CONNECTIONS} connections for {FOR:?}: {tally:?}; {probes} /health probes, slowest {slowest_probe:?}; server RSS peak {peak}"
        );
        let unexpected: Vec<_> = tally.keys().filter(|k| !["201", "503"].contains(&k.as_str())).collect();
        assert!(unexpected.is_empty(), "{tally:?}");
        assert!(tally.get("201").copied().unwrap_or(0) > 0, "{tally:?}");
        stop_cleanly(&mut server).await;
    }
}
