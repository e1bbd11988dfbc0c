//! The command outputs in README.md and docs/*.md, checked against a real run so they cannot go
//! stale. `docs/generate` runs this test with `STOCKORDER_DOCS=write`, which rewrites them.
//!
//! A block this test owns is a fenced block right after a marker line:
//!
//! ```text
//! <!-- docs/generate: run -->            each `$ command` runs against one fresh server
//! <!-- docs/generate: run, figures -->   the same, but numbers are compared as "a number"
//! <!-- docs/generate: no server -->      the commands run with the clients pointed at a port
//!                                        where nothing listens
//! <!-- docs/generate: run, figures, postgres, haproxy -->
//!                                        needs PostgreSQL and HAProxy (see [`Kind`])
//! ```
//!
//! Commands run through `sh` in an empty directory, with `stockorder-tools` of this build (or of
//! `STOCKORDER_BIN_DIR`) first on `PATH`, `target/release/` meaning those binaries, `grpcurl` standing for the
//! Python work-alike when the real one is absent, `PORT=0 GRPC_PORT=0` (a server a command
//! starts takes free ports), and `localhost:8082` / `localhost:50051` (or `127.0.0.1:…`)
//! meaning the test's server. Every
//! file gets one server, so an id printed by one command can be used by the next: ids in the
//! text are mapped to the ids of the run in the order they appear. Ids, timestamps, clock times,
//! page tokens and latencies are masked before comparing, and so are all numbers in a
//! `figures` block (a load's rate is not a fact about the code), whose lines are compared in
//! any order (concurrent tasks log in either order). A read that shows an order
//! the processor has not reached yet is read again for up to 2 s; anything else that differs
//! fails, naming the file and line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use regex::Regex;
use stockorder_tools::service::Server;

/// What a marker asks for: `run` or `no server`, then any of `figures`, `postgres` (the
/// commands get `TEST_DATABASE_URL` or `DATABASE_URL` for any `postgres://…` they name, and the
/// block is skipped without one) and `haproxy` (skipped without it).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Kind {
    no_server: bool,
    figures: bool,
    postgres: bool,
    haproxy: bool,
}

impl Kind {
    fn parse(marker: &str) -> Option<Kind> {
        let args = marker
            .trim()
            .strip_prefix("<!-- docs/generate:")?
            .strip_suffix("-->")?
            .trim();
        let mut words = args.split(',').map(str::trim);
        let mut kind = match words.next() {
            Some("run") => Kind::default(),
            Some("no server") => Kind {
                no_server: true,
                ..Kind::default()
            },
            other => panic!("a docs/generate marker starts with `run` or `no server`, not {other:?}"),
        };
        for word in words {
            match word {
                "figures" => kind.figures = true,
                "postgres" => kind.postgres = true,
                "haproxy" => kind.haproxy = true,
                other => panic!("unknown docs/generate option {other:?}"),
            }
        }
        Some(kind)
    }

    /// Why the block cannot run here, if it cannot.
    fn missing(self) -> Option<String> {
        if self.postgres && crate::postgres_url().is_none() {
            return Some("set TEST_DATABASE_URL (or DATABASE_URL) to postgres://… to run it".into());
        }
        if self.haproxy && crate::installed("haproxy").is_none() {
            return Some("haproxy is not installed (apt-get install haproxy)".into());
        }
        None
    }
}

/// One generated block: where its body starts and ends (line indexes, fences excluded).
struct Block {
    kind: Kind,
    body: std::ops::Range<usize>,
}

fn blocks(lines: &[&str], file: &Path) -> Vec<Block> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(kind) = Kind::parse(lines[i]) {
            let fence = lines.get(i + 1).copied().unwrap_or_default();
            assert!(
                fence.starts_with("```"),
                "{}:{}: a marker must be followed by a fence",
                file.display(),
                i + 2
            );
            let start = i + 2;
            let end = (start..lines.len())
                .find(|&j| lines[j].trim() == "```")
                .unwrap_or_else(|| panic!("{}:{}: unclosed block", file.display(), i + 2));
            found.push(Block { kind, body: start..end });
            i = end;
        }
        i += 1;
    }
    found
}

/// A `$ command` and the output under it, as written in the docs.
struct Step {
    command: String,
    output: String,
}

/// Splits a console block into its commands and their outputs. A command goes on over several
/// lines while a single quote is open or a line ends with a backslash.
fn steps(body: &[&str]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = body.iter();
    while let Some(line) = lines.next() {
        if let Some(first) = line.strip_prefix("$ ") {
            let mut command = first.to_owned();
            while command.matches('\'').count() % 2 == 1 || command.ends_with('\\') {
                let Some(more) = lines.next() else { break };
                command.push('\n');
                command.push_str(more);
            }
            steps.push(Step {
                command,
                output: String::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.output.push_str(line);
            step.output.push('\n');
        }
    }
    for step in &mut steps {
        step.output = step.output.trim_end().to_owned();
    }
    steps
}

static UUID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap());

/// The output with what differs from run to run replaced by placeholders.
fn mask(text: &str, figures: bool) -> String {
    static RULES: LazyLock<Vec<(Regex, &str)>> = LazyLock::new(|| {
        [
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>"),
            (r"\b[0-9a-f]{32}\b", "<token>"),
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "<time>"),
            (r"\b\d\d:\d\d:\d\d\.\d+Z", "<clock>"),
            (r"\(\d+(\.\d+)? ms\)", "(<ms>)"),
            (r"127\.0\.0\.1:\d+", "<addr>"),
        ]
        .into_iter()
        .map(|(re, to)| (Regex::new(re).unwrap(), to))
        .collect()
    });
    static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d+(\.\d+)?").unwrap());
    static SPACE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[ \t]+").unwrap());
    let mut text = text.to_owned();
    for (re, to) in RULES.iter() {
        text = re.replace_all(&text, *to).into_owned();
    }
    if figures {
        text = NUMBER.replace_all(&text, "N").into_owned();
        text = SPACE.replace_all(&text, " ").into_owned();
    }
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    if figures {
        // Where a blank line falls between lines printed by two threads is not a fact either.
        lines.retain(|l| !l.is_empty());
        // Logs of concurrent tasks (two servers stopping together) interleave differently
        // from run to run: what must match is which lines there are.
        lines.sort_unstable();
    }
    lines.join("\n")
}

/// Whether a run's output matches the documented one. Exactly, once masked; in a figures block
/// of 8 lines or more, up to two lines may differ (be missing, extra or changed), since the tools print some counts only
/// when they are not zero ("turned away unprocessed 1") and a component racing its phase may
/// report either outcome: what the check must catch there is a changed layout or wording,
/// which changes more lines than that, or the line that changed in a block of two.
fn matches(documented: &str, actual: &str, figures: bool) -> bool {
    let (documented, actual) = (mask(documented, figures), mask(actual, figures));
    if !figures || documented == actual {
        return documented == actual;
    }
    let mut missing: Vec<&str> = documented.lines().collect();
    let mut extra = 0;
    for line in actual.lines() {
        match missing.iter().position(|l| *l == line) {
            Some(i) => {
                missing.swap_remove(i);
            }
            None => extra += 1,
        }
    }
    // A line that changed is one missing and one extra: count it once.
    let lines = documented.lines().count();
    missing.len().max(extra) <= 2.min(lines / 4)
}

/// A read whose answer may change while the processor works through what was just placed.
fn is_read(command: &str) -> bool {
    let writes = [
        "-X POST",
        " create",
        " cancel",
        "CreateOrder",
        "CancelOrder",
        " load",
        " prove",
    ];
    !writes.iter().any(|w| command.contains(w))
}

/// Where the commands of one file run.
struct Context {
    /// `PATH` with this build's binaries and the grpcurl stand-in first.
    path: String,
    /// This build's binaries (`target/debug` under `cargo test`).
    bin: PathBuf,
    /// Where commands run: an empty directory of this file's own.
    cwd: tempfile::TempDir,
    http: String,
    grpc: String,
    /// Ids as written in the docs → ids of this run.
    ids: HashMap<String, String>,
    _shims: tempfile::TempDir,
}

impl Context {
    fn new(http: String, grpc: String) -> Self {
        let shims = tempfile::tempdir().unwrap();
        if crate::installed("grpcurl").is_none() {
            let script = crate::repo_root().join("crates/stockorder/tests/interop/grpcurl.py");
            let shim = shims.path().join("grpcurl");
            std::fs::write(&shim, format!("#!/bin/sh\nexec python3 {} \"$@\"\n", script.display())).unwrap();
            let mut permissions = std::fs::metadata(&shim).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
            std::fs::set_permissions(&shim, permissions).unwrap();
        }
        // curl shows a progress meter on stderr when its output is not a terminal; at a
        // terminal, where the docs' reader runs it, it does not.
        std::fs::write(shims.path().join(".curlrc"), "--silent\n--show-error\n").unwrap();
        let bin = bin_dir();
        let path = std::env::join_paths(
            [bin.clone(), shims.path().to_owned()]
                .into_iter()
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .unwrap()
        .into_string()
        .unwrap();
        let cwd = tempfile::tempdir().unwrap();
        // What the tools read relative to the repository's root (rolling-restart's HAProxy
        // configuration), as a reader running the commands there has it.
        std::os::unix::fs::symlink(crate::repo_root().join("deploy"), cwd.path().join("deploy")).unwrap();
        Self {
            path,
            bin,
            cwd,
            http,
            grpc,
            ids: HashMap::new(),
            _shims: shims,
        }
    }

    /// The command as it runs here: this run's ids and this server's addresses.
    fn localise(&self, command: &str) -> String {
        static POSTGRES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"postgres(ql)?://\S+").unwrap());
        let mut command = self
            .with_ids(command)
            .replace("target/release/", &format!("{}/", self.bin.display()));
        if let Some(url) = crate::postgres_url() {
            command = POSTGRES.replace_all(&command, regex::NoExpand(&url)).into_owned();
        }
        for (port, addr) in [("8082", &self.http), ("50051", &self.grpc)] {
            for host in ["localhost", "127.0.0.1"] {
                command = command.replace(&format!("{host}:{port}"), addr);
            }
        }
        command
    }

    fn with_ids(&self, text: &str) -> String {
        UUID.replace_all(text, |c: &regex::Captures| {
            self.ids.get(&c[0]).cloned().unwrap_or_else(|| c[0].to_owned())
        })
        .into_owned()
    }

    /// The output as a terminal shows it, with the test's ports written as the defaults: the
    /// test server's addresses, and the free ports a server started by a command listens on
    /// (its `listening` log lines). A line redrawn with `\r` (a progress line) shows its last
    /// state.
    fn globalise(&self, output: &str) -> String {
        static LISTENING: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r#"(protocol="?(http|grpc)"? addr=[0-9.]+:)\d+"#).unwrap());
        let output = output
            .replace(&self.http, "localhost:8082")
            .replace(&self.grpc, "localhost:50051");
        let output = LISTENING.replace_all(&output, |c: &regex::Captures| {
            format!("{}{}", &c[1], if &c[2] == "http" { 8082 } else { 50051 })
        });
        output
            .lines()
            .map(|l| l.rsplit('\r').next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn run(&self, command: &str) -> String {
        let out = tokio::time::timeout(
            Duration::from_secs(180),
            tokio::process::Command::new("sh")
                .arg("-c")
                .arg(format!("exec 2>&1\n{command}"))
                .current_dir(self.cwd.path())
                // What the docs show is what a default environment gives.
                .env_clear()
                .env("HOME", std::env::var_os("HOME").unwrap_or_default())
                .env("LANG", "C.UTF-8")
                .env("CURL_HOME", self._shims.path())
                .env("PATH", &self.path)
                .env("PORT", "0")
                .env("GRPC_PORT", "0")
                .env("STOCKORDER_HTTP_ADDR", format!("http://{}", self.http))
                .env("STOCKORDER_GRPC_ADDR", format!("http://{}", self.grpc))
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("`{command}` ran for 3 minutes"))
        .unwrap();
        self.globalise(String::from_utf8_lossy(&out.stdout).trim_end())
    }

    /// Learns which id of this run each id of the docs' output stands for.
    fn learn_ids(&mut self, documented: &str, actual: &str) {
        for (old, new) in UUID.find_iter(documented).zip(UUID.find_iter(actual)) {
            self.ids
                .entry(old.as_str().to_owned())
                .or_insert_with(|| new.as_str().to_owned());
        }
    }
}

/// The binaries the commands run: `STOCKORDER_BIN_DIR` (docs/generate points it at a release
/// build, so figures in the docs are release figures), else this test's own build.
fn bin_dir() -> PathBuf {
    std::env::var_os("STOCKORDER_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_BIN_EXE_stockorder-tools"))
                .parent()
                .unwrap()
                .to_owned()
        })
}

/// A block's body as it should read, and the differences found against what it reads now.
async fn regenerate(kind: Kind, body: &[&str], cx: &mut Context) -> (Vec<String>, Vec<String>) {
    let mut written = Vec::new();
    let mut problems = Vec::new();
    for (n, step) in steps(body).into_iter().enumerate() {
        let command = cx.localise(&step.command);
        let started = Instant::now();
        let mut actual = cx.run(&command).await;
        while !matches(&step.output, &actual, kind.figures)
            && is_read(&step.command)
            && started.elapsed() < Duration::from_secs(2)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            actual = cx.run(&command).await;
        }
        cx.learn_ids(&step.output, &actual);
        if !matches(&step.output, &actual, kind.figures) {
            problems.push(diff(&format!("`{}`", step.command), &step.output, &actual));
        }
        if n > 0 {
            written.push(String::new());
        }
        written.extend(format!("$ {}", cx.with_ids(&step.command)).lines().map(str::to_owned));
        written.extend(actual.lines().map(str::to_owned));
    }
    (written, problems)
}

fn diff(what: &str, documented: &str, actual: &str) -> String {
    format!(
        "{what}\n  the docs say:\n{}\n  a run says:\n{}",
        indent(documented),
        indent(actual)
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_outputs_in_the_docs_match_a_real_run() {
    let write = std::env::var("STOCKORDER_DOCS").is_ok_and(|v| v == "write");
    let root = crate::repo_root();
    let mut files = vec![root.join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    files.extend(pages);

    let mut problems = Vec::new();
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let found = blocks(&lines, &file);
        if found.is_empty() {
            continue;
        }
        if !can_run_grpcurl(&lines) {
            crate::skip(format!(
                "{} runs grpcurl, and neither grpcurl nor Python's grpcio-reflection is here (pip install grpcio-reflection)",
                file.display()
            ));
            continue;
        }
        let db = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", db.path().join("orders.db").display());
        let server = Server::start(&url, &[]).await.unwrap();
        let mut cx = Context::new(server.http.clone(), server.grpc.clone());
        let mut out: Vec<String> = Vec::new();
        let mut next = 0;
        for block in &found {
            out.extend(lines[next..block.body.start].iter().map(|l| l.to_string()));
            let body = &lines[block.body.clone()];
            if let Some(why) = block.kind.missing() {
                crate::skip(format!("{}:{}: {why}", file.display(), block.body.start));
                out.extend(body.iter().map(|l| l.to_string()));
            } else if block.kind.no_server {
                let nobody = format!("127.0.0.1:{}", stockorder_tools::process::free_port().unwrap());
                let mut elsewhere = Context::new(nobody.clone(), nobody);
                elsewhere.ids = std::mem::take(&mut cx.ids);
                let (written, found_problems) = regenerate(block.kind, body, &mut elsewhere).await;
                cx.ids = elsewhere.ids;
                out.extend(written);
                problems.extend(
                    found_problems
                        .into_iter()
                        .map(|p| format!("{}:{}: {p}", file.display(), block.body.start)),
                );
            } else {
                let (written, found_problems) = regenerate(block.kind, body, &mut cx).await;
                out.extend(written);
                problems.extend(
                    found_problems
                        .into_iter()
                        .map(|p| format!("{}:{}: {p}", file.display(), block.body.start)),
                );
            }
            checked += 1;
            next = block.body.end;
        }
        out.extend(lines[next..].iter().map(|l| l.to_string()));
        let _ = server.stop().await;
        if write {
            let mut new = out.join("\n");
            new.push('\n');
            if new != text {
                std::fs::write(&file, new).unwrap();
                eprintln!("rewrote {}", file.display());
            }
        }
    }
    if write {
        eprintln!("{checked} blocks regenerated");
        return;
    }
    assert!(
        problems.is_empty(),
        "{} of {checked} generated blocks in the docs no longer match a real run (ids, times and, in figures blocks, numbers are masked); run docs/generate to rewrite them, and read the change:\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

/// Whether the file's grpcurl commands (if any) can run here.
fn can_run_grpcurl(lines: &[&str]) -> bool {
    if !lines.iter().any(|l| l.starts_with("$ grpcurl")) || crate::installed("grpcurl").is_some() {
        return true;
    }
    std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_reflection"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
