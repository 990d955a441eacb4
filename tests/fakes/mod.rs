//! Test support: the fake partners (`examples/fake_seller.rs`, `examples/fake_gateway.rs`)
//! and the real `wayfare` binary, each run as its own process.
//!
//! `cargo test` builds the examples before it runs tests; run alone, a test using this
//! needs `cargo build --examples` first (the failure says so if a binary is missing).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Bound of a process start (the line naming its port).
pub const START_WITHIN: Duration = Duration::from_secs(30);

/// An example binary that `cargo test` built next to this test's own binary.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --examples` (plain `cargo test` builds it)",
        bin.display()
    );
    // `cargo test --test NAME` does not rebuild examples: refuse to test an old fake.
    let built = modified(&bin);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fakes_dir = root.join("wayfare-drill/src/fakes");
    let sources = std::iter::once(root.join("examples").join(format!("{name}.rs"))).chain(
        std::fs::read_dir(&fakes_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    for source in sources {
        assert!(
            modified(&source) <= built,
            "{} is older than {}: run `cargo build --examples` (plain `cargo test` does)",
            bin.display(),
            source.display()
        );
    }
    bin
}

/// When `path` was last modified (the epoch when unreadable).
fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// A child process listening on `addr`; killed and reaped when dropped, so a failing test
/// leaves nothing running.
pub struct Process {
    /// The process.
    pub child: Child,
    /// `IP:PORT` it listens on.
    pub addr: String,
}

impl Process {
    /// `http://IP:PORT/`
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// SIGKILL and reap: no shutdown path runs.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` (stdout piped) and waits for its stdout line starting with `prefix`,
/// the rest of which is its address. Stdout keeps being drained afterwards, so the process
/// never writes to a closed pipe. `None` when the process exits before printing it.
pub fn spawn_listening(mut command: Command, prefix: &'static str) -> Option<Process> {
    let child = command
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    // Owned by `Process` at once, so a failed start still reaps it.
    let mut process = Process {
        child,
        addr: String::new(),
    };
    let stdout = process.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix(prefix) {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(START_WITHIN) {
        Ok(addr) => {
            process.addr = addr;
            Some(process)
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{command:?} printed no {prefix:?} line within {START_WITHIN:?}")
        }
    }
}

/// Starts `examples/fake_seller` on an ephemeral port with its journal in `data`, and
/// `extra` flags; its log goes to `log`.
pub fn fake_seller(data: &Path, log: &Path, extra: &[&str]) -> Process {
    fake("fake_seller", data, log, extra)
}

/// Starts `examples/fake_gateway` on an ephemeral port with its journal in `data`.
pub fn fake_gateway(data: &Path, log: &Path, extra: &[&str]) -> Process {
    fake("fake_gateway", data, log, extra)
}

fn fake(name: &'static str, data: &Path, log: &Path, extra: &[&str]) -> Process {
    let mut command = Command::new(example_binary(name));
    command
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .stderr(Stdio::from(std::fs::File::create(log).expect("fake log")));
    let prefix = match name {
        "fake_seller" => "fake_seller listening on ",
        _ => "fake_gateway listening on ",
    };
    spawn_listening(command, prefix)
        .unwrap_or_else(|| panic!("{name} exited at start; see {}", log.display()))
}

/// The `wayfare serve` command on an ephemeral port with `config`, run in `dir` (so
/// relative data directories land there), logging to `log`, with `operator_token`.
pub fn wayfare_command(dir: &Path, config: &Path, log: &Path, operator_token: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wayfare"));
    // A caller's own OpenTelemetry setup must not redirect a test's spans.
    for (name, _) in wayfare::config::OTEL_VARIABLES {
        command.env_remove(name);
    }
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(config)
        .current_dir(dir)
        .env("RUST_LOG", "warn,wayfare=info")
        .env("WAYFARE__ADMIN__TOKEN", operator_token)
        .stderr(Stdio::from(std::fs::File::create(log).expect("server log")));
    command
}

/// A reqwest client sending the operator token, each request bounded by `timeout`.
pub fn operator_client(token: &str, timeout: Duration) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {token}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .build()
        .unwrap()
}
