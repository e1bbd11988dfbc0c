//! Zero dropped requests on a stock axum `Router`: 32 keep-alive HTTP/1.1 clients post back to
//! back to `examples/axum.rs` (a real process), SIGTERM mid-load. Every request that got a
//! connection must be answered 2xx: none broken, reset, or closed without an answer. The control
//! is the same load against stock `axum::serve(..).with_graceful_shutdown(..)`, which does break
//! requests (the idle keep-alive close race), so the test is shown able to fail.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What the clients saw.
#[derive(Debug, Default)]
struct Tally {
    answered: usize,
    /// A request written (or being written) on an open connection that got no answer.
    broken: usize,
    /// Connections refused: never accepted, safe to retry, not a failure.
    refused: usize,
    slowest: Duration,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.answered += other.answered;
        self.broken += other.broken;
        self.refused += other.refused;
        self.slowest = self.slowest.max(other.slowest);
    }
}

/// One request on a kept connection: `Some(close)` for a 2xx (and whether the server asked to
/// close), `None` when the connection broke before a whole answer.
async fn exchange(stream: &mut BufReader<TcpStream>) -> Option<bool> {
    let body = b"hello";
    let head = format!(
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.get_mut().write_all(head.as_bytes()).await.ok()?;
    stream.get_mut().write_all(body).await.ok()?;
    let mut line = String::new();
    if stream.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let ok = line.split_whitespace().nth(1)?.starts_with('2');
    let (mut length, mut close) = (0, false);
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
        close |= header == "connection: close";
    }
    let mut answer = vec![0; length];
    stream.read_exact(&mut answer).await.ok()?;
    ok.then_some(close)
}

/// Between two requests of client `i` (its own work): a kept connection is idle meanwhile, which
/// is when a careless shutdown closes it under the next request. 2 to 18 ms, different per
/// client: with one think time for all, the clients run in lock step (the handler's delay
/// synchronises them), and a shutdown finds either every connection idle or none.
fn think(i: u64) -> Duration {
    Duration::from_millis(2 + (i * 7) % 17)
}

/// 32 clients posting back to back, each with its [`think`] time between requests, until the
/// server is gone (their connections refused).
async fn load(addr: SocketAddr, until: Arc<AtomicBool>) -> Tally {
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..32 {
        let until = Arc::clone(&until);
        clients.spawn(async move {
            let mut tally = Tally::default();
            'connections: loop {
                let mut stream = match TcpStream::connect(addr).await {
                    Ok(s) => BufReader::new(s),
                    Err(_) => {
                        tally.refused += 1;
                        if until.load(Ordering::Relaxed) {
                            return tally;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                loop {
                    let sent = Instant::now();
                    match exchange(&mut stream).await {
                        Some(close) => {
                            tally.answered += 1;
                            tally.slowest = tally.slowest.max(sent.elapsed());
                            tokio::time::sleep(think(i)).await;
                            if close {
                                continue 'connections;
                            }
                        }
                        None => {
                            tally.broken += 1;
                            continue 'connections;
                        }
                    }
                }
            }
        });
    }
    let mut tally = Tally::default();
    while let Some(t) = clients.join_next().await {
        tally.add(t.unwrap());
    }
    tally
}

fn example(name: &str) -> std::path::PathBuf {
    // cargo test builds the examples beside the test binaries.
    std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("examples")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_axum_answers_every_request_through_a_sigterm() {
    let mut child = tokio::process::Command::new(example("axum"))
        .env("PORT", "0")
        .env("DELAY_MS", "20")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("examples/axum (cargo test builds it)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .next_line()
        .await
        .unwrap()
        .expect("the example says where it listens");
    let addr: SocketAddr = line.trim_start_matches("listening on ").parse().unwrap();

    let gone = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(load(addr, Arc::clone(&gone)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    let took = signalled.elapsed();
    gone.store(true, Ordering::Relaxed);
    let tally = clients.await.unwrap();
    let mut report = String::new();
    child.stderr.take().unwrap().read_to_string(&mut report).await.unwrap();
    eprintln!("serve_axum: {tally:?}; exit {status} {took:?} after SIGTERM\n{report}");
    assert_eq!(tally.broken, 0, "{tally:?}");
    assert!(tally.answered > 100, "{tally:?}");
    assert_eq!(status.code(), Some(0), "{report}");
    assert!(
        took <= tally.slowest + Duration::from_millis(100),
        "exit {took:?} after SIGTERM; slowest request {:?}",
        tally.slowest
    );
}

/// The control: stock axum with its own graceful shutdown, same load, same trigger mid-load.
/// It breaks requests in most shutdowns; up to ten rounds make the test certain to see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_axum_graceful_shutdown_breaks_keep_alive_requests() {
    for round in 1..=10 {
        let router = axum::Router::new().route(
            "/echo",
            axum::routing::post(|body: axum::body::Bytes| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                body
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let gone = Arc::new(AtomicBool::new(false));
        let clients = tokio::spawn(load(addr, Arc::clone(&gone)));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        gone.store(true, Ordering::Relaxed);
        let tally = clients.await.unwrap();
        eprintln!("stock axum, round {round}: {tally:?}");
        if tally.broken > 0 {
            return;
        }
    }
    panic!("stock axum broke no request in 10 shutdowns: the load no longer shows the race");
}
