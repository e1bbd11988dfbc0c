//! A rolling restart across test hosts: PostgreSQL and three replicas, each in a network
//! namespace of its own (veth pairs on a bridge, `tc netem` 10 ms each way, so 20 ms between any
//! two hosts), HAProxy in front; while the second replica restarts, the first loses PostgreSQL
//! for 5 s. Clients follow the service's contract: a 503 was not processed and a 504 may have
//! been, so both are retried with the same `client_order_id`. The promise: every client request
//! ends acknowledged (0 failed), every acknowledged order is stored (0 lost), one order per key.
//!
//! Where the kernel has no netem qdisc (this project's CI machines: a VM kernel without
//! `sch_netem`), the hosts run without the delay and the test says so.
//!
//! Needs root, iproute2, HAProxy and the PostgreSQL server binaries (`.ci/run` installs
//! HAProxy); prints why it skips otherwise. Takes about 30 s. The namespaces, the bridge and
//! every process are removed when the test ends, pass or fail. Traffic stays on the bridge's
//! private subnet, which exists only inside this test.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::ServerProcess;
use crate::common::cluster::Cluster;
use nix::sys::signal::Signal;
use serde_json::Value;

/// The test subnet: the bridge is .1, PostgreSQL .10, replica N is .10+N.
const SUBNET: &str = "10.213.7";

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(program: &str, args: &[&str]) {
    let ok = std::process::Command::new(program)
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{program} {args:?}");
}

/// The bridge and the namespaces, deleted on drop.
struct Hosts {
    bridge: String,
    namespaces: Vec<String>,
    /// The kernel could not add the delay.
    undelayed: bool,
}

impl Hosts {
    /// `None`, with the reason printed, where namespaces cannot be made.
    fn create(tag: &str, names: &[(&str, u8)]) -> Option<Self> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            crate::common::skip(format_args!("network namespaces need root"));
            return None;
        }
        let bridge = format!("sobr{tag}");
        if !ip(&["link", "add", &bridge, "type", "bridge"]) {
            crate::common::skip(format_args!(
                "cannot create a bridge (iproute2 missing, or not allowed here)"
            ));
            return None;
        }
        let mut hosts = Self {
            bridge: bridge.clone(),
            namespaces: Vec::new(),
            undelayed: false,
        };
        run("ip", &["addr", "add", &format!("{SUBNET}.1/24"), "dev", &bridge]);
        run("ip", &["link", "set", &bridge, "up"]);
        for (name, octet) in names {
            let ns = format!("so{tag}{name}");
            run("ip", &["netns", "add", &ns]);
            hosts.namespaces.push(ns.clone());
            let outside = format!("sv{tag}{name}");
            run(
                "ip",
                &[
                    "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            );
            run("ip", &["link", "set", &outside, "master", &bridge, "up"]);
            run(
                "ip",
                &["-n", &ns, "addr", "add", &format!("{SUBNET}.{octet}/24"), "dev", "eth0"],
            );
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            // 10 ms out of every host: 20 ms between any two of them.
            let delayed = std::process::Command::new("tc")
                .args([
                    "-n", &ns, "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "10ms",
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !delayed && !hosts.undelayed {
                eprintln!("note: this kernel has no netem qdisc (sch_netem); the hosts run without the 20 ms delay");
                hosts.undelayed = true;
            }
        }
        Some(hosts)
    }

    fn ns(&self, name: &str) -> String {
        self.namespaces.iter().find(|n| n.ends_with(name)).unwrap().clone()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            ip(&["netns", "del", ns]); // its end of each veth goes with it, and so the pair
        }
        ip(&["link", "del", &self.bridge]);
    }
}

/// A replica in its namespace, on the standard ports of its own address.
async fn replica(hosts: &Hosts, n: u8, url: &str) -> ServerProcess {
    let mut command = tokio::process::Command::new("ip");
    command.args(["netns", "exec", &hosts.ns(&format!("r{n}"))]);
    command.arg(env!("CARGO_BIN_EXE_stockorder")).arg("serve");
    let host = format!("{SUBNET}.{}", 10 + n);
    let env = [
        ("DATABASE_URL", url),
        ("HOST", host.as_str()),
        ("PORT", "8082"),
        ("GRPC_PORT", "50051"),
        // Long enough for HAProxy (checks every 250 ms, 2 failures) to stop routing here.
        ("SHUTDOWN_DRAIN_DELAY", "1s"),
        // Bounds a statement stuck behind the partition (and the TCP timeout of its socket).
        ("REQUEST_TIMEOUT", "2s"),
        ("RUST_LOG", "info,tower_http=warn"),
    ];
    ServerProcess::start_command(command, std::path::Path::new("unused"), &env).await
}

/// HAProxy in the root namespace, in front of the three replicas: health checks on `/ready`,
/// and retries of what the service answers only for requests it did not process (a refused
/// connection, a 503). A 504 is never retried by the balancer: only the client can, with its
/// key.
fn haproxy(dir: &std::path::Path, port: u16) -> std::process::Child {
    let config = format!(
        "global\n    maxconn 4096\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response 503\n    option http-buffer-request\n    default-server inter 250ms fall 2 rise 1\nfrontend rest_in\n    bind 127.0.0.1:{port}\n    default_backend rest\nbackend rest\n    balance roundrobin\n    option httpchk GET /ready\n    http-check expect status 200\n    server r1 {SUBNET}.11:8082 check\n    server r2 {SUBNET}.12:8082 check\n    server r3 {SUBNET}.13:8082 check\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    std::process::Command::new("haproxy")
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// What one client key went through: each answer's status (`None`: no answer), in order.
type Attempts = Vec<Option<u16>>;

/// Clients through the balancer; each create is retried with its key until acknowledged.
async fn clients(
    n: usize,
    base: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> HashMap<String, (Attempts, Option<String>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let base = base.clone();
        let stop = std::sync::Arc::clone(&stop);
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut keys = HashMap::new();
            let mut seq = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seq += 1;
                let key = format!("h{i}-{seq}");
                let body = serde_json::json!({"symbol": "AAPL", "order_type": "LIMIT", "order_side": "BUY",
                    "quantity": 1, "price": 1.0, "client_order_id": key});
                let mut attempts = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                let id = loop {
                    let sent = client.post(format!("{base}/api/orders")).json(&body).send().await;
                    match sent {
                        Ok(resp) if resp.status().is_success() => {
                            attempts.push(Some(resp.status().as_u16()));
                            let v: Value = resp.json().await.unwrap();
                            break v["id"].as_str().map(str::to_owned);
                        }
                        Ok(resp) => attempts.push(Some(resp.status().as_u16())),
                        Err(_) => attempts.push(None),
                    }
                    if Instant::now() > deadline {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                keys.insert(key, (attempts, id));
            }
            keys
        });
    }
    let mut all = HashMap::new();
    while let Some(keys) = tasks.join_next().await {
        all.extend(keys.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_across_hosts_with_a_partition_fails_and_loses_nothing() {
    let _alone = crate::heavy().await;
    if std::process::Command::new("haproxy").arg("-v").output().is_err() {
        crate::common::skip(format_args!(
            "haproxy is not installed (apt-get install haproxy; .ci/run does it)"
        ));
        return;
    }
    let tag = format!("{}", std::process::id() % 10_000);
    let Some(hosts) = Hosts::create(&tag, &[("db", 10), ("r1", 11), ("r2", 12), ("r3", 13)]) else {
        return;
    };
    let Some(pg) = Cluster::create_in(Some(&hosts.ns("db")), &format!("{SUBNET}.10"), 5432) else {
        return;
    };
    let url = pg.url();
    let mut replicas = Vec::new();
    for n in 1..=3 {
        replicas.push(replica(&hosts, n, &url).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let lb_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut lb = haproxy(dir.path(), lb_port);
    let base = format!("http://127.0.0.1:{lb_port}");
    assert!(
        crate::common::ready_becomes(&base, 200, Duration::from_secs(10)).await,
        "HAProxy never served"
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(clients(16, base.clone(), std::sync::Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut exit_codes = Vec::new();
    for (n, slot) in replicas.iter_mut().enumerate() {
        let started = Instant::now();
        slot.signal(Signal::SIGTERM);
        // While the second replica restarts, the first loses PostgreSQL for 5 s.
        let partition = (n == 1).then(|| {
            let r1 = hosts.ns("r1");
            let db = format!("{SUBNET}.10");
            ip(&["-n", &r1, "route", "add", "blackhole", &db]);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                ip(&["-n", &r1, "route", "del", "blackhole", &db]);
            })
        });
        exit_codes.push(slot.wait().await);
        *slot = replica(&hosts, n as u8 + 1, &url).await;
        // Back in rotation: HAProxy's next check (rise 1, every 250 ms) finds it ready.
        let own = format!("http://{}", slot.addr);
        assert!(crate::common::ready_becomes(&own, 200, Duration::from_secs(10)).await);
        tokio::time::sleep(Duration::from_millis(600)).await;
        if let Some(healed) = partition {
            healed.await.unwrap();
        }
        eprintln!("replica {} restarted in {:?}", n + 1, started.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let keys = load.await.unwrap();

    let mut first_answers = std::collections::BTreeMap::<String, usize>::new();
    let mut retried = 0;
    for (attempts, _) in keys.values() {
        let first = attempts[0].map_or("no answer".to_owned(), |s| s.to_string());
        *first_answers.entry(first).or_default() += 1;
        retried += usize::from(attempts.len() > 1);
    }
    let failed: Vec<_> = keys.iter().filter(|(_, (_, id))| id.is_none()).collect();
    let stored = ServerProcess::all_orders_at(&base).await;
    let lost: Vec<_> = keys
        .values()
        .filter_map(|(_, id)| id.as_ref())
        .filter(|id| !stored.contains_key(*id))
        .collect();
    let mut per_key = HashMap::<&str, usize>::new();
    for order in stored.values() {
        if let Some(key) = order["client_order_id"].as_str() {
            *per_key.entry(key).or_default() += 1;
        }
    }
    let doubled = per_key.values().filter(|&&n| n > 1).count();
    eprintln!(
        "{} creates through HAProxy: first answers {first_answers:?}, {retried} needed a retry with their key; failed {}, lost {}, keys with two orders {doubled}",
        keys.len(),
        failed.len(),
        lost.len()
    );
    assert_eq!(exit_codes, [Some(0); 3], "every replica stopped cleanly");
    assert!(failed.is_empty(), "{} requests never acknowledged", failed.len());
    assert!(lost.is_empty(), "{} acknowledged orders lost", lost.len());
    assert_eq!(doubled, 0);
    assert!(keys.len() > 500, "too little load to mean anything: {}", keys.len());
    for mut r in replicas {
        r.signal(Signal::SIGTERM);
        assert_eq!(r.wait().await, Some(0));
    }
    let _ = lb.kill();
    let _ = lb.wait();
}
