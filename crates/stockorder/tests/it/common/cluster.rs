//! A private PostgreSQL cluster for one test, so the test can restart, stop or partition it
//! without disturbing any other test's database. Optionally inside a network namespace (a test
//! host of its own).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// `initdb` + `postgres` under the `postgres` user.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The `postgres` user's uid and gid: the server refuses to run as root.
    user: (u32, u32),
    /// Where it listens: 127.0.0.1, or its namespace's address.
    pub host: String,
    pub port: u16,
    /// The network namespace it runs in, if any.
    netns: Option<String>,
    server: Option<std::process::Child>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Cluster {
    /// On a free port of 127.0.0.1. `None`, with the reason printed, without root or the
    /// server binaries.
    pub fn create() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        Self::create_in(None, "127.0.0.1", port)
    }

    /// In network namespace `netns` (when given), listening on `host:port`.
    pub fn create_in(netns: Option<&str>, host: &str, port: u16) -> Option<Self> {
        if !is_root() {
            super::skip(format_args!(
                "a private PostgreSQL cluster needs root (to run it as `postgres`)"
            ));
            return None;
        }
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists());
        let Some(bin) = bin else {
            super::skip(format_args!(
                "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
            ));
            return None;
        };
        let id = |flag: &str| {
            std::process::Command::new("id")
                .args([flag, "postgres"])
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        };
        let (Some(uid), Some(gid)) = (id("-u"), id("-g")) else {
            super::skip(format_args!("no `postgres` user to run a cluster as"));
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let owner = std::process::Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir.path())
            .status();
        if !owner.is_ok_and(|s| s.success()) {
            super::skip(format_args!("cannot hand a directory to the `postgres` user"));
            return None;
        }
        let ok = std::process::Command::new(bin.join("initdb"))
            .uid(uid)
            .gid(gid)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            super::skip(format_args!("initdb failed"));
            return None;
        }
        // initdb trusts loopback only; a namespace's neighbours connect from the test subnet.
        let hba = dir.path().join("data/pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).unwrap();
        rules.push_str("host all all 0.0.0.0/0 trust\n");
        std::fs::write(&hba, rules).unwrap();
        let mut cluster = Self {
            dir,
            bin,
            user: (uid, gid),
            host: host.to_owned(),
            port,
            netns: netns.map(str::to_owned),
            server: None,
        };
        cluster.start();
        Some(cluster)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@{}:{}/postgres", self.host, self.port)
    }

    pub fn start(&mut self) {
        let (uid, gid) = self.user;
        let mut command = match &self.netns {
            // `ip netns exec` and `setpriv` both exec: the child's pid is the server's, so a
            // signal to it reaches postgres itself.
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns, "setpriv"])
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(self.bin.join("postgres"));
                c
            }
            None => {
                let mut c = std::process::Command::new(self.bin.join("postgres"));
                c.uid(uid).gid(gid);
                c
            }
        };
        let child = command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                &format!("listen_addresses={}", self.host),
            ])
            .args(["-c", "fsync=off", "-k"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            let ready = std::process::Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", &self.host, "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private PostgreSQL did not start");
    }

    /// A fast shutdown: sessions are terminated (57P01), as `pg_ctl restart` does.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGINT);
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
