//! Hostile clients, for `bench/hostile`: many connections that open and then send nothing or
//! one header byte at a time (slowloris), and clients that post 5 MB bodies over and over.
//! Reports what the server did to them and the server's peak memory.
//!
//!   hostile ADDR SERVER_PID [SLOW_CONNECTIONS] [UPLOADERS] [SECONDS]
//!
//! Well-behaved load runs beside it (`stockorder-tools load`), so the script can show that those
//! clients are still answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct Tally {
    /// Slow connections opened.
    opened: AtomicU64,
    /// Slow connections the server closed.
    closed_by_server: AtomicU64,
    /// Slow connections whose request was served: a trickler that finished its head in time
    /// (with the defaults, none do).
    served: AtomicU64,
    /// 5 MB uploads attempted, and how many got 413.
    uploads: AtomicU64,
    refused_413: AtomicU64,
    /// Uploads answered with anything but 413, or not answered.
    other: AtomicU64,
}

fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// One slow client, reconnecting whenever the server closes it: half send nothing, half send a
/// request head one byte per second.
async fn slow_client(addr: SocketAddr, trickle: bool, until: Instant, tally: Arc<Tally>) {
    let head = b"GET /health HTTP/1.1\r\nhost: hostile\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    while Instant::now() < until {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tally.opened.fetch_add(1, Ordering::Relaxed);
        let mut sent = 0;
        let mut buf = [0u8; 512];
        loop {
            if Instant::now() >= until {
                return;
            }
            if trickle && sent < head.len() && stream.write_all(&head[sent..=sent]).await.is_err() {
                break;
            }
            sent += 1;
            // A read that returns means the server answered or closed.
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Err(_) => continue,
                Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 200") => {
                    tally.served.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(_) => break,
            }
        }
        tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
    }
}

/// Posts 5 MB bodies in a loop and reads the answer.
async fn uploader(addr: SocketAddr, until: Instant, tally: Arc<Tally>) {
    const SIZE: usize = 5 * 1024 * 1024;
    let chunk = vec![b'a'; 64 * 1024];
    while Instant::now() < until {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tally.uploads.fetch_add(1, Ordering::Relaxed);
        let head = format!(
            "POST /api/orders HTTP/1.1\r\nhost: hostile\r\ncontent-type: application/json\r\ncontent-length: {SIZE}\r\n\r\n"
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let mut written = 0;
        while written < SIZE {
            // The server may answer and close before the whole body is sent.
            if stream.write_all(&chunk).await.is_err() {
                break;
            }
            written += chunk.len();
        }
        let mut answer = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await {
            Ok(Ok(n)) if answer[..n].starts_with(b"HTTP/1.1 413") => {
                tally.refused_413.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                tally.other.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let addr: SocketAddr = arg(1, "127.0.0.1:8082".parse().expect("a valid default address"));
    let pid: u32 = arg(2, 0);
    let slow: usize = arg(3, 1000);
    let uploaders: usize = arg(4, 8);
    let seconds: u64 = arg(5, 20);
    let until = Instant::now() + Duration::from_secs(seconds);
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for i in 0..slow {
        tasks.push(tokio::spawn(slow_client(addr, i % 2 == 1, until, Arc::clone(&tally))));
    }
    for _ in 0..uploaders {
        tasks.push(tokio::spawn(uploader(addr, until, Arc::clone(&tally))));
    }
    let mut peak = rss_mb(pid).unwrap_or(0.0);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_mb(pid).unwrap_or(0.0));
    }
    for t in tasks {
        let _ = t.await;
    }
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "{{\"slow_connections\":{slow},\"slow_opened\":{},\"slow_closed_by_server\":{},\"slow_served\":{},\
\"uploads\":{},\"uploads_413\":{},\"uploads_other\":{},\"peak_rss_mb\":{peak:.1},\"rss_after_mb\":{:.1}}}",
        get(&tally.opened),
        get(&tally.closed_by_server),
        get(&tally.served),
        get(&tally.uploads),
        get(&tally.refused_413),
        get(&tally.other),
        rss_mb(pid).unwrap_or(0.0),
    );
}
