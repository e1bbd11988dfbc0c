//! In-place upgrades driven by the library (`Shutdown::upgrade_on_sighup`): `examples/upgrade.rs`
//! under 32 keep-alive HTTP/1.1 clients, upgraded twenty times by SIGHUP, each new process
//! taking over once ready while the old one drains, then stopped by SIGTERM. No request may be
//! broken, and no connection refused while a process serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::drain::{ONE_AT_A_TIME, example, load};

/// Whether `pid` is gone (or a zombie: the old processes are reparented, and whoever reaps
/// them may be slow).
fn gone(pid: Pid) -> bool {
    kill(pid, None).is_err()
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            })
            .unwrap_or(true)
}

async fn until_gone(pid: Pid) {
    while !gone(pid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_upgrades_under_keep_alive_load_break_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut child = tokio::process::Command::new(example("upgrade"))
        .env("PORT", "0")
        .env("DELAY_MS", "20")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the example (cargo test builds it)");
    // Every process of the chain writes to the same stdout: `listening on ADDR (pid PID)`.
    let (serving, mut announced) = tokio::sync::mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let Some((addr, pid)) = line
                .strip_prefix("listening on ")
                .and_then(|rest| rest.trim_end_matches(')').split_once(" (pid "))
            else {
                continue;
            };
            let _ = serving.send((
                addr.parse::<std::net::SocketAddr>().unwrap(),
                pid.parse::<i32>().unwrap(),
            ));
        }
    });
    let next = async |announced: &mut tokio::sync::mpsc::UnboundedReceiver<(std::net::SocketAddr, i32)>| {
        tokio::time::timeout(Duration::from_secs(30), announced.recv())
            .await
            .expect("a process announces itself within 30 s")
            .expect("stdout open")
    };
    let (addr, first) = next(&mut announced).await;
    let stopped = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(load(addr, Arc::clone(&stopped)));
    // New connections all along the upgrades: the socket never closes, so none is refused.
    let upgrading = Arc::new(AtomicBool::new(true));
    let probe = {
        let upgrading = Arc::clone(&upgrading);
        tokio::spawn(async move {
            let (mut made, mut refused) = (0, 0);
            while upgrading.load(Ordering::Relaxed) {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(_) => made += 1,
                    Err(_) => refused += 1,
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (made, refused)
        })
    };

    let mut current = Pid::from_raw(first);
    let mut old = Vec::new();
    for upgrade in 1..=20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        kill(current, Signal::SIGHUP).unwrap();
        let (same_addr, pid) = next(&mut announced).await;
        assert_eq!(same_addr, addr, "upgrade {upgrade}: the same socket");
        assert_ne!(pid, current.as_raw(), "upgrade {upgrade}: a new process");
        old.push(current);
        current = Pid::from_raw(pid);
    }
    for pid in &old {
        tokio::time::timeout(Duration::from_secs(15), until_gone(*pid))
            .await
            .expect("each old process drains and exits");
    }
    upgrading.store(false, Ordering::Relaxed);
    let (made, refused) = probe.await.unwrap();
    assert_eq!(refused, 0, "connections refused during the upgrades ({made} made)");
    let first_status = child.wait().await.unwrap();
    assert_eq!(
        first_status.code(),
        Some(0),
        "the first process exits 0 after its upgrade"
    );

    tokio::time::sleep(Duration::from_millis(150)).await;
    kill(current, Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(15), until_gone(current))
        .await
        .expect("the last process drains and exits on SIGTERM");
    stopped.store(true, Ordering::Relaxed);
    let tally = clients.await.unwrap();
    eprintln!("20 upgrades: {tally:?}");
    assert_eq!(tally.broken, 0, "{tally:?}");
    assert!(tally.answered > 1000, "{tally:?}");
}
