//! Socket activation as systemd does it: this test holds the listening sockets (as
//! `stockorder.socket` would), passes them to one `stockorder serve` after another (fds 3 and
//! 4, `LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`), and restarts the service under load.
//! Between one generation's exit and the next one's start, connections wait in the socket's
//! backlog: nothing is refused, nothing is reset, and every acknowledged order is stored.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Hands `http` and `grpc` to the program `cmd` starts as systemd does: fds 3 and 4, with
/// `LISTEN_FDS=2` and `LISTEN_FDNAMES=http:grpc` (`LISTEN_PID` is set by the shell `cmd` runs).
fn pass_listeners(cmd: &mut std::process::Command, http: i32, grpc: i32) {
    use std::os::unix::process::CommandExt;
    cmd.env("LISTEN_FDS", "2").env("LISTEN_FDNAMES", "http:grpc");
    // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2). Both fds are
    // first copied above 3 and 4, so neither move overwrites the other.
    unsafe {
        cmd.pre_exec(move || {
            let h = libc::fcntl(http, libc::F_DUPFD_CLOEXEC, 10);
            let g = libc::fcntl(grpc, libc::F_DUPFD_CLOEXEC, 10);
            if h < 0 || g < 0 || libc::dup2(h, 3) < 0 || libc::dup2(g, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Starts `stockorder serve` on the held sockets, as systemd starts a socket-activated
/// service, and waits until it answers `/ready`.
async fn start(http: &TcpListener, grpc: &TcpListener, db: &Path, log: &Path) -> Child {
    let (h, g) = (http.as_raw_fd(), grpc.as_raw_fd());
    let mut cmd = std::process::Command::new("sh");
    // LISTEN_PID must be the service's own pid: the shell's, which `exec` keeps.
    cmd.args([
        "-c",
        r#"LISTEN_PID=$$ exec "$0" serve"#,
        env!("CARGO_BIN_EXE_stockorder"),
    ])
    .env("DATABASE_URL", db)
    .env("LOG_FORMAT", "json")
    .env("RUST_LOG", "info")
    .stdout(Stdio::from(
        std::fs::File::options().create(true).append(true).open(log).unwrap(),
    ))
    .stderr(Stdio::null());
    pass_listeners(&mut cmd, h, g);
    let child = Command::from(cmd).kill_on_drop(true).spawn().unwrap();
    let url = format!("http://{}/ready", http.local_addr().unwrap());
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_on_held_sockets_refuse_nothing_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = (dir.path().join("orders.db"), dir.path().join("serve.log"));
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").unwrap();
    let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
    let mut server = start(&http, &grpc, &db, &log).await;

    // 24 clients, a third of them gRPC, placing orders back to back through every restart.
    let clients = crate::common::OrderClients::start(24, 3, &http_addr.to_string(), &grpc_addr.to_string());

    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.id().unwrap() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert_eq!(server.wait().await.unwrap().code(), Some(0));
        // The gap: no process accepts now, and clients keep connecting into the backlog.
        tokio::time::sleep(Duration::from_millis(100)).await;
        server = start(&http, &grpc, &db, &log).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // `other` leaves out gRPC calls a GOAWAY turned away unprocessed (see `finish`).
    let crate::common::Seen { acked, other } = clients.finish().await;
    assert!(other.is_empty(), "refused, reset, closed or failed: {other:?}");
    assert!(acked.len() > 500, "{} acknowledged", acked.len());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(server.wait().await.unwrap().code(), Some(0));
    let check = start(&http, &grpc, &db, &log).await;
    let stored = crate::common::ServerProcess::all_orders_at(&format!("http://{http_addr}")).await;
    for id in &acked {
        assert!(stored.contains_key(id), "acknowledged order {id} is missing");
    }
    drop(check);
}
