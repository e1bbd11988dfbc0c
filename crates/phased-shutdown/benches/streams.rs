//! What ending long-lived connections costs and how it scales, printed as figures (nothing here
//! fails on a slow machine):
//!
//! 1. **10,000 open connections through a SIGTERM**: idle keep-alive connections, SSE streams
//!    and WebSockets on `examples/streams.rs` (release build, a process of its own), then
//!    SIGTERM. Prints how many of each ended cleanly (idle: closed by the server with no
//!    request lost; SSE: terminating chunk; WebSocket: Close 1001 and a clean end) and how long
//!    the process took to exit, against the jitter window + 1 s.
//! 2. **Memory**: the server's resident set before and after each kind is opened, per
//!    connection.
//! 3. **Throughput**: `POST /echo` at 64 keep-alive connections on the same example served by
//!    `Shutdown::serve_axum` and by stock `axum::serve` (`SERVE=stock`), in alternating rounds,
//!    and the median ratio.
//! 4. **Instructions per request** (when valgrind is installed): the same load, 20,000 requests
//!    over 64 connections, against each server run under callgrind. Unlike the rates, this
//!    does not move with the machine's load.
//!
//! ```text
//! cargo bench -p phased-shutdown --bench streams                 # about 1 minute
//! STREAMS_CONNECTIONS=3000 cargo bench -p phased-shutdown --bench streams
//! STREAMS_ONLY=throughput STREAMS_ROUNDS=9 cargo bench -p phased-shutdown --bench streams
//! STREAMS_ONLY=instructions cargo bench -p phased-shutdown --bench streams   # needs valgrind
//! ```
//!
//! The load runs on the same cores as the server. The file-descriptor limit is raised to the
//! hard limit (each side holds one socket per connection).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// The example's jitter window (the library's default).
const JITTER: Duration = Duration::from_millis(500);

fn main() {
    let total: usize = std::env::var("STREAMS_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    raise_fd_limit(total);
    let example = build_example();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("STREAMS_ONLY").unwrap_or_default();
    runtime.block_on(async {
        if only.is_empty() || only == "scale" {
            scale(&example, total).await;
        }
        if only.is_empty() || only == "throughput" {
            throughput(&example).await;
        }
        if only.is_empty() || only == "instructions" {
            instructions(&example).await;
        }
    });
}

fn raise_fd_limit(total: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        println!("file descriptors: limit raised from {soft} to {hard}");
    }
    if (hard as usize) < total + 1000 {
        println!("warning: the hard limit {hard} is below {total} connections + 1000; expect refused connections");
    }
}

/// The release build of `examples/streams.rs`, built now so the bench measures the code as it is.
fn build_example() -> std::path::PathBuf {
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "phased-shutdown",
            "--features",
            "axum,tonic",
            "--example",
            "streams",
        ])
        .status()
        .expect("cargo");
    assert!(status.success(), "building the example failed");
    let exe = std::env::current_exe().unwrap();
    // target/release/deps/streams-… → target/release/examples/streams
    exe.parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("examples")
        .join("streams")
}

/// The example, started, and its HTTP address.
async fn start(example: &std::path::Path, env: &[(&str, &str)]) -> (tokio::process::Child, SocketAddr) {
    let mut child = tokio::process::Command::new(example)
        .envs([("PORT", "0"), ("GRPC_PORT", "0")])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the example");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let http = line.trim_start_matches("listening on ").split(' ').next().unwrap();
    (child, http.parse().unwrap())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

const ECHO: &[u8] = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello";

/// One `POST /echo` on a kept connection: whether a whole 200 came back.
async fn echo(stream: &mut BufReader<TcpStream>) -> bool {
    if stream.get_mut().write_all(ECHO).await.is_err() {
        return false;
    }
    let mut line = String::new();
    if stream.read_line(&mut line).await.unwrap_or(0) == 0 || !line.starts_with("HTTP/1.1 200") {
        return false;
    }
    let mut length = 0;
    loop {
        line.clear();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return false;
        }
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.is_ok()
}

/// An idle keep-alive connection after one request: clean when the server closes it (EOF) and
/// no error came first.
async fn idle(addr: SocketAddr) -> Option<tokio::task::JoinHandle<bool>> {
    let mut stream = BufReader::new(TcpStream::connect(addr).await.ok()?);
    echo(&mut stream).await.then_some(())?;
    Some(tokio::spawn(async move {
        let mut buf = [0u8; 64];
        matches!(stream.read(&mut buf).await, Ok(0))
    }))
}

/// An SSE stream after its first event: clean when the terminating chunk comes.
async fn sse(addr: SocketAddr) -> Option<tokio::task::JoinHandle<bool>> {
    let mut stream = BufReader::new(TcpStream::connect(addr).await.ok()?);
    stream
        .get_mut()
        .write_all(b"GET /sse HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .ok()?;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
    }
    Some(tokio::spawn(async move {
        loop {
            line.clear();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return false;
            }
            let Ok(size) = usize::from_str_radix(line.trim_end(), 16) else {
                return false;
            };
            let mut data = vec![0; size + 2];
            if stream.read_exact(&mut data).await.is_err() {
                return false;
            }
            if size == 0 {
                return true;
            }
        }
    }))
}

/// A WebSocket after one echo: clean with the server's Close 1001 and an orderly end.
async fn websocket(addr: SocketAddr) -> Option<tokio::task::JoinHandle<bool>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .ok()?;
    ws.send(Message::text("hello")).await.ok()?;
    ws.next().await?.ok()?;
    Some(tokio::spawn(async move {
        let mut code = None;
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => code = frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                None | Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => return code == Some(1001),
                Some(Err(_)) => return false,
            }
        }
    }))
}

/// Opens `n` connections of one kind, 64 at a time; returns their ends and how many failed to open.
async fn open<F, Fut>(n: usize, addr: SocketAddr, connect: F) -> (Vec<tokio::task::JoinHandle<bool>>, usize)
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Option<tokio::task::JoinHandle<bool>>>,
{
    let mut ends = Vec::with_capacity(n);
    let mut failed = 0;
    let mut left = n;
    while left > 0 {
        let batch = left.min(64);
        let opened = futures_util::future::join_all((0..batch).map(|_| connect(addr))).await;
        for end in opened {
            match end {
                Some(end) => ends.push(end),
                None => failed += 1,
            }
        }
        left -= batch;
    }
    (ends, failed)
}

async fn clean(ends: Vec<tokio::task::JoinHandle<bool>>) -> usize {
    let mut clean = 0;
    for end in ends {
        if matches!(tokio::time::timeout(Duration::from_secs(10), end).await, Ok(Ok(true))) {
            clean += 1;
        }
    }
    clean
}

async fn scale(example: &std::path::Path, total: usize) {
    let (n_idle, n_sse) = (total * 4 / 10, total * 3 / 10);
    let n_ws = total - n_idle - n_sse;
    println!(
        "\n== {total} open connections through a SIGTERM ({n_idle} idle keep-alive, {n_sse} SSE, {n_ws} WebSocket)"
    );
    let (mut child, addr) = start(example, &[]).await;
    let pid = child.id().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = rss_kib(pid);
    let (idle_ends, idle_failed) = open(n_idle, addr, idle).await;
    let rss1 = rss_kib(pid);
    let (sse_ends, sse_failed) = open(n_sse, addr, sse).await;
    let rss2 = rss_kib(pid);
    let (ws_ends, ws_failed) = open(n_ws, addr, websocket).await;
    let rss3 = rss_kib(pid);
    let per = |after: u64, before: u64, n: usize| (after.saturating_sub(before)) as f64 * 1024.0 / n.max(1) as f64;
    println!("server resident memory: {rss0} KiB at rest, {rss3} KiB with every connection open");
    println!(
        "memory per connection: idle keep-alive {:.1} KiB, SSE stream {:.1} KiB, WebSocket {:.1} KiB",
        per(rss1, rss0, n_idle) / 1024.0,
        per(rss2, rss1, n_sse) / 1024.0,
        per(rss3, rss2, n_ws) / 1024.0
    );
    if idle_failed + sse_failed + ws_failed > 0 {
        println!("could not open: {idle_failed} idle, {sse_failed} SSE, {ws_failed} WebSocket");
    }

    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    let exit = signalled.elapsed();
    let mut report = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut report).await;
    let (idle_clean, sse_clean, ws_clean) = (clean(idle_ends).await, clean(sse_ends).await, clean(ws_ends).await);
    println!(
        "closed cleanly: idle {idle_clean}/{}, SSE {sse_clean}/{}, WebSocket {ws_clean}/{}",
        n_idle - idle_failed,
        n_sse - sse_failed,
        n_ws - ws_failed
    );
    println!(
        "exit {:?} {:.0} ms after SIGTERM (jitter window + 1 s = {} ms)",
        status.code(),
        exit.as_secs_f64() * 1000.0,
        (JITTER + Duration::from_secs(1)).as_millis()
    );
    print!("{report}");
}

/// `POST /echo` from 64 keep-alive connections for `secs`: requests per second.
async fn load(addr: SocketAddr, secs: Duration) -> f64 {
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (done, count) = (Arc::clone(&done), Arc::clone(&count));
        clients.spawn(async move {
            let Ok(stream) = TcpStream::connect(addr).await else {
                return;
            };
            let mut stream = BufReader::new(stream);
            while !done.load(Ordering::Relaxed) && echo(&mut stream).await {
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    tokio::time::sleep(secs).await;
    let n = count.load(Ordering::Relaxed);
    let rate = n as f64 / started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    rate
}

async fn throughput(example: &std::path::Path) {
    let rounds: usize = std::env::var("STREAMS_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let secs = Duration::from_secs(3);
    println!("\n== POST /echo, 64 keep-alive connections, {rounds} rounds of {secs:?} each, alternating");
    let (_ours, ours_addr) = start(example, &[]).await;
    let (_stock, stock_addr) = start(example, &[("SERVE", "stock")]).await;
    load(ours_addr, Duration::from_millis(500)).await; // warm-up
    load(stock_addr, Duration::from_millis(500)).await;
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (ours, stock) = if round % 2 == 0 {
            let o = load(ours_addr, secs).await;
            (o, load(stock_addr, secs).await)
        } else {
            let s = load(stock_addr, secs).await;
            (load(ours_addr, secs).await, s)
        };
        println!(
            "round {}: serve_axum {ours:.0}/s, stock axum::serve {stock:.0}/s, ratio {:.3}",
            round + 1,
            ours / stock
        );
        ratios.push(ours / stock);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "serve_axum / stock axum::serve: median {:.3} (range {:.3}–{:.3})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

/// `total` `POST /echo` requests over `connections` keep-alive connections.
async fn requests(addr: SocketAddr, total: u64, connections: u64) {
    let left = Arc::new(AtomicU64::new(total));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let left = Arc::clone(&left);
        clients.spawn(async move {
            let mut stream = BufReader::new(TcpStream::connect(addr).await.unwrap());
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                assert!(echo(&mut stream).await, "an echo failed");
            }
        });
    }
    while clients.join_next().await.is_some() {}
}

/// Instructions the server ran from start to exit, with `n` requests in between (callgrind).
async fn counted(example: &std::path::Path, env: &[(&str, &str)], n: u64) -> Option<u64> {
    let dir = tempfile_dir();
    let out = dir.join("callgrind.out");
    let mut child = tokio::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(example)
        .envs([("PORT", "0"), ("GRPC_PORT", "0")])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut lines = BufReader::new(child.stdout.take()?).lines();
    let line = lines.next_line().await.ok()??;
    let addr: SocketAddr = line
        .trim_start_matches("listening on ")
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    requests(addr, n, 64).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id()? as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .ok()?;
    child.wait().await.ok()?;
    let text = std::fs::read_to_string(&out).ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    text.lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .and_then(|n| n.trim().parse().ok())
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "phased-shutdown-bench-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(Instant::now())
}

async fn instructions(example: &std::path::Path) {
    const N: u64 = 20_000;
    println!("\n== instructions per POST /echo (callgrind, {N} requests over 64 connections, start-up subtracted)");
    if std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("valgrind is not installed: skipped (apt-get install valgrind)");
        return;
    }
    let mut per = Vec::new();
    for (name, env) in [
        ("serve_axum", &[][..]),
        ("stock axum::serve", &[("SERVE", "stock")][..]),
    ] {
        let (Some(idle), Some(loaded)) = (counted(example, env, 0).await, counted(example, env, N).await) else {
            println!("{name}: the run under valgrind failed");
            return;
        };
        let each = loaded.saturating_sub(idle) as f64 / N as f64;
        println!("{name}: {each:.0} instructions per request");
        per.push(each);
    }
    println!("stock / serve_axum: {:.3}", per[1] / per[0]);
}
