//! Storage faults against the real `wayfare` binary: a data dir that cannot be written or
//! a disk that is full, at start and in the middle of a run.
//!
//! How the faults are made (the tests run as root, which ignores file modes):
//! - **read-only**: `chattr +i` on the data dir and every file in it. The kernel then
//!   refuses every write with `EPERM`, even through descriptors sled already holds, until
//!   `chattr -i`. Needs `CAP_LINUX_IMMUTABLE` and a file system with the flag (ext2/3/4,
//!   xfs, btrfs; not tmpfs), so the data lives under `target/` (`CARGO_TARGET_TMPDIR`),
//!   not under a possibly-tmpfs `/tmp`.
//! - **disk full**: a small tmpfs mounted for the test (`mount -t tmpfs -o size=...`),
//!   filled by a filler file; deleting the filler lifts the fault. Needs `CAP_SYS_ADMIN`.
//!   A read-only tmpfs mount also covers "read-only at start" with a real `EROFS`.
//!
//! These tests need root, so a plain `cargo test` leaves them out (`#[ignore]`) and
//! `.ci/run` runs them as root: `cargo test --test storage_faults -- --ignored`. When a
//! mechanism is not available (not root, no capability, unsupported file system) the case
//! fails naming what is missing; it never passes without having run.
//!
//! What the server promises, and these tests check:
//! - start-up on an unwritable or full data dir exits non-zero within seconds, naming the
//!   data dir and the OS cause, without a panic;
//! - mid-run, writes answer 503 `store-unavailable` problems (never 500, never a hang),
//!   already stored accounts stay readable (the account shards hold them), ledger pages
//!   answer 200 when sled has them in memory and a clean 503 when it would have to go to
//!   its broken log, and `/health` turns 503 naming the store;
//! - the store is fail-stop (see `src/store/sled/kv.rs`): after the first I/O error it
//!   refuses writes until the process is restarted, because sled 0.34 keeps the error
//!   sticky. Recovery is therefore: lift the fault, restart on the same dir;
//! - after recovery every record is readable, every balance equals its ledger, every
//!   acknowledged credit is there, and replaying the refused credits lands each once.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const OPERATOR_TOKEN: &str = "storage-faults-operator-token-01";

fn operator_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {OPERATOR_TOKEN}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

fn wayfare(data: &Path, log: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wayfare"));
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .current_dir(data.parent().unwrap())
        .env("RUST_LOG", "warn")
        .env("WAYFARE__ADMIN__TOKEN", OPERATOR_TOKEN)
        .env("WAYFARE__SERVER__WORKERS", "1")
        .env("WAYFARE__RUNTIME__ARBITERS", "1")
        .env("WAYFARE__ACCOUNTS__SHARDS", "2")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
    cmd
}

struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path, log: &Path) -> Server {
        let child = wayfare(data, log).spawn().expect("start wayfare");
        let mut server = Server {
            child,
            base: String::new(),
            log: log.to_owned(),
        };
        let stdout = server.child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "server did not start");
            let Some(Ok(line)) = lines.next() else {
                panic!("server exited early:\n{}", server.log_text());
            };
            if let Some(addr) = line.strip_prefix("wayfare listening on ") {
                server.base = addr.trim().to_owned();
                return server;
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (bounded); the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                eprintln!("server stopped on SIGTERM: {status}");
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server ignored SIGTERM:\n{}", self.log_text());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary on `data`, expects it to exit non-zero within 20 s, returns stderr.
fn expect_start_failure(data: &Path, log: &Path) -> String {
    let started = Instant::now();
    let mut child = wayfare(data, log).spawn().expect("start wayfare");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server kept running on a broken data dir:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(log).unwrap();
    eprintln!(
        "start-up refused after {:?} with {status}: {}",
        started.elapsed(),
        stderr.trim()
    );
    assert!(!status.success(), "exit status is non-zero");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert!(
        stderr.contains(&data.display().to_string()),
        "the error names the data dir {}: {stderr}",
        data.display()
    );
    stderr
}

/// A scratch dir on the build's file system (which supports `chattr`), not `/tmp`.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("storage-faults-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// `chattr +i` / `-i` on `path` and (when `deep`) everything under it. Files first on
/// lift, the dir last on set, so a partial set never leaves files unlocked behind a
/// locked dir.
fn immutable(path: &Path, on: bool) -> Result<(), String> {
    let flag = if on { "+i" } else { "-i" };
    let out = Command::new("chattr")
        .args(["-R", flag])
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run chattr: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Lifts `chattr +i` when dropped, so a failed assertion never leaves an undeletable dir.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Result<Immutable, String> {
        immutable(path, true)?;
        Ok(Immutable(path.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = immutable(&self.0, false);
    }
}

/// A tmpfs mounted for the test; unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(at.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The case cannot make its fault here: it fails naming what is missing, because a
/// skipped body must never count as a pass.
fn missing(case: &str, why: &str) -> ! {
    panic!(
        "storage fault case `{case}` cannot run: {why} (it needs root with CAP_SYS_ADMIN and \
         CAP_LINUX_IMMUTABLE, and a file system with `chattr +i` under target/; .ci/run \
         runs these tests as root)"
    )
}

/// Writes zeros to `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filled until ENOSPC: {e}");
                break;
            }
        }
    }
    // Smaller writes take the last partial page.
    for size in [4096usize, 512, 1] {
        while file.write(&chunk[..size]).map(|n| n > 0).unwrap_or(false) {
            written += size as u64;
        }
    }
    written
}

#[test]
#[ignore = "mounts a tmpfs and sets chattr +i on the machine (so root only, never by default); .ci/run runs it with --ignored"]
fn read_only_data_dir_fails_start_up() {
    let dir = scratch();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let _lock = match Immutable::set(&data) {
        Ok(lock) => lock,
        Err(why) => missing("read-only at start (chattr +i)", &why),
    };
    let stderr = expect_start_failure(&data, &dir.path().join("wayfare.log"));
    assert!(
        stderr.contains("Operation not permitted"),
        "the OS cause is named: {stderr}"
    );
}

#[test]
#[ignore = "mounts a tmpfs and sets chattr +i on the machine (so root only, never by default); .ci/run runs it with --ignored"]
fn read_only_mount_fails_start_up() {
    let dir = scratch();
    let data = dir.path().join("data");
    let _mount = match Tmpfs::mount(&data, "ro,size=1m") {
        Ok(mount) => mount,
        Err(why) => missing("read-only mount at start", &why),
    };
    let stderr = expect_start_failure(&data, &dir.path().join("wayfare.log"));
    assert!(
        stderr.contains("Read-only file system"),
        "the OS cause is named: {stderr}"
    );
}

#[test]
#[ignore = "mounts a tmpfs and sets chattr +i on the machine (so root only, never by default); .ci/run runs it with --ignored"]
fn full_disk_fails_start_up() {
    let dir = scratch();
    let disk = dir.path().join("disk");
    let _mount = match Tmpfs::mount(&disk, "size=1m") {
        Ok(mount) => mount,
        Err(why) => missing("full disk at start", &why),
    };
    fill(&disk.join("filler"));
    let data = disk.join("data");
    let stderr = expect_start_failure(&data, &dir.path().join("wayfare.log"));
    assert!(
        stderr.contains("No space left on device"),
        "the OS cause is named: {stderr}"
    );
}

/// A data dir that already holds a database opens without writing anything, so only a
/// write probe at start-up notices the disk is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "mounts a tmpfs and sets chattr +i on the machine (so root only, never by default); .ci/run runs it with --ignored"]
async fn full_disk_under_existing_data_fails_start_up() {
    let dir = scratch();
    let disk = dir.path().join("disk");
    let _mount = match Tmpfs::mount(&disk, "size=8m") {
        Ok(mount) => mount,
        Err(why) => missing("full disk at start, existing data", &why),
    };
    let data = disk.join("data");
    let http = operator_client();
    let server = Server::start(&data, &dir.path().join("run-1.log"));
    let accounts = open_accounts(&http, &server, 2).await;
    server.stop();
    fill(&disk.join("filler"));
    let stderr = expect_start_failure(&data, &dir.path().join("run-2.log"));
    assert!(
        stderr.contains("No space left on device"),
        "the OS cause is named: {stderr}"
    );
    std::fs::remove_file(disk.join("filler")).unwrap();
    let server = Server::start(&data, &dir.path().join("run-3.log"));
    verify(&http, &server, &accounts).await;
    server.stop();
}

/// One account and the credits sent to it.
struct Ledger {
    id: String,
    acknowledged: Vec<(String, i64)>,
    refused: Vec<(String, i64)>,
}

async fn open_accounts(http: &reqwest::Client, server: &Server, n: usize) -> Vec<Ledger> {
    let mut out = Vec::new();
    for i in 0..n {
        let res = http
            .post(server.url("/v1/accounts"))
            .json(&json!({"name": format!("Faulty {i}"), "email": format!("f{i}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let id = res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        out.push(Ledger {
            id,
            acknowledged: Vec::new(),
            refused: Vec::new(),
        });
    }
    out
}

/// Sends one credit per account concurrently; records acknowledged (201) and refused
/// (503 store-unavailable) ones; anything else fails the test. Returns how many were
/// refused.
async fn credit_round(
    http: &reqwest::Client,
    server: &Server,
    accounts: &mut [Ledger],
    round: usize,
) -> usize {
    let sends = accounts.iter().enumerate().map(|(i, acct)| {
        let key = format!("r{round}-a{i}");
        let amount = 100 + (round * 7 + i) as i64;
        let req = http
            .post(server.url(&format!("/v1/accounts/{}/wallet/credits", acct.id)))
            .header("Idempotency-Key", key.clone())
            .json(&json!({"amount": {"minor": amount, "currency": "EUR"}}))
            .send();
        async move {
            let started = Instant::now();
            let res = req.await.expect("an answer, not a hang");
            let status = res.status().as_u16();
            let ct = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = res.json().await.unwrap_or(Value::Null);
            (key, amount, status, ct, body, started.elapsed())
        }
    });
    let results = futures_util::future::join_all(sends).await;
    let mut refused = 0;
    for (acct, (key, amount, status, ct, body, took)) in accounts.iter_mut().zip(results) {
        assert!(
            took < Duration::from_secs(10),
            "a credit took {took:?} during a storage fault"
        );
        match status {
            201 => acct.acknowledged.push((key, amount)),
            503 => {
                assert_eq!(ct.as_deref(), Some("application/problem+json"), "{body}");
                assert_eq!(body["type"], "/problems/store-unavailable", "{body}");
                assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
                acct.refused.push((key, amount));
                refused += 1;
            }
            other => panic!("credit during a storage fault answered {other}: {body}"),
        }
    }
    refused
}

async fn health(http: &reqwest::Client, server: &Server) -> (u16, Value) {
    let res = http.get(server.url("/health")).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// Reads every account and its whole ledger; checks balance = ledger sum, every
/// acknowledged credit present once, nothing that was never sent. Returns the balances.
async fn verify(http: &reqwest::Client, server: &Server, accounts: &[Ledger]) {
    for acct in accounts {
        let res = http
            .get(server.url(&format!("/v1/accounts/{}", acct.id)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "account {} readable", acct.id);
        let account: Value = res.json().await.unwrap();
        let page: Value = http
            .get(server.url(&format!("/v1/accounts/{}/wallet/ledger?limit=500", acct.id)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entries = page["entries"].as_array().expect("ledger page");
        let sum: i64 = entries.iter().map(|e| e["delta"].as_i64().unwrap()).sum();
        assert_eq!(
            account["wallet"]["balance"]["minor"], sum,
            "balance of {} equals its ledger",
            acct.id
        );
        let keys: Vec<&str> = entries.iter().map(|e| e["key"].as_str().unwrap()).collect();
        for (key, amount) in &acct.acknowledged {
            let hits: Vec<&Value> = entries.iter().filter(|e| e["key"] == *key).collect();
            assert_eq!(hits.len(), 1, "acknowledged credit {key} present once");
            assert_eq!(hits[0]["delta"], *amount);
        }
        for key in &keys {
            assert!(
                acct.acknowledged.iter().any(|(k, _)| k == key)
                    || acct.refused.iter().any(|(k, _)| k == key),
                "ledger entry {key} was sent by the test"
            );
        }
    }
}

/// The mid-run scenario shared by both faults: stored data, fault, refused writes and
/// readable reads, unhealthy, fault lifted, restart, healthy, consistent.
async fn mid_run(
    data: &Path,
    dir: &Path,
    case: &str,
    cause: &str,
    set: impl FnOnce() -> Box<dyn std::any::Any>,
) {
    let http = operator_client();
    let server = Server::start(data, &dir.join("run-1.log"));
    let mut accounts = open_accounts(&http, &server, 8).await;
    for round in 0..3 {
        let refused = credit_round(&http, &server, &mut accounts, round).await;
        assert_eq!(refused, 0, "healthy store acknowledges every credit");
    }
    assert_eq!(health(&http, &server).await.0, 200);

    let fault = set();
    let faulted = Instant::now();
    let mut round = 3;
    let mut refused = 0;
    while refused == 0 {
        assert!(round < 40, "writes kept succeeding after the fault");
        refused += credit_round(&http, &server, &mut accounts, round).await;
        round += 1;
    }
    // Once one write failed, the store refuses all of them.
    let again = credit_round(&http, &server, &mut accounts, round).await;
    round += 1;
    assert_eq!(
        again,
        accounts.len(),
        "every write refused after the first failure"
    );
    let (status, body) = health(&http, &server).await;
    eprintln!(
        "{case}: first refusal after {:?}; /health {status}: {body}",
        faulted.elapsed()
    );
    assert_eq!(status, 503, "{body}");
    let detail = body["store"]["detail"].as_str().unwrap_or_default();
    assert_eq!(body["store"]["ok"], false, "{body}");
    assert!(
        detail.contains(&data.display().to_string()) && detail.contains(cause),
        "the health detail names the store and the cause: {detail}"
    );
    // Without the operator token, /health still says 503 but keeps paths and causes back.
    let (status, body) = health(&reqwest::Client::new(), &server).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        !body.to_string().contains(&data.display().to_string()),
        "anonymous health shows the data dir: {body}"
    );
    // Stored accounts stay readable (the shards hold them); ledgers as far as sled can.
    let mut ledgers_read = 0;
    for acct in &accounts {
        let res = http
            .get(server.url(&format!("/v1/accounts/{}", acct.id)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "stored account readable during the fault"
        );
        let res = http
            .get(server.url(&format!("/v1/accounts/{}/wallet/ledger", acct.id)))
            .send()
            .await
            .unwrap();
        // sled serves a read from memory when it can; one that must go to its log first
        // waits for durability, which fails once the log is broken: a clean 503 then.
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        match status {
            200 => ledgers_read += 1,
            503 => assert_eq!(body["type"], "/problems/store-unavailable", "{body}"),
            other => panic!("ledger read during the fault answered {other}: {body}"),
        }
    }
    eprintln!(
        "{case}: during the fault, {} of {} accounts and {ledgers_read} ledgers read",
        accounts.len(),
        accounts.len()
    );
    // Opening an account is a write too.
    let res = http
        .post(server.url("/v1/accounts"))
        .json(&json!({"name": "Too late", "email": "late@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        503,
        "account opening refused during the fault"
    );
    assert!(res.headers().contains_key("retry-after"));
    assert!(
        server.log_text().contains("Store failed"),
        "the failure is logged:\n{}",
        server.log_text()
    );

    drop(fault); // lifted
    let (status, _) = health(&http, &server).await;
    assert_eq!(status, 503, "fail-stop: still refusing until restarted");
    let lifted = Instant::now();
    let log = server.log.clone();
    // The store failed, so the process says so in its exit status.
    let stopped = server.stop();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !stopped.success(),
        "exit after a store failure: {stopped}\n{text}"
    );
    assert!(text.contains("the store failed before shutdown"), "{text}");
    let server = Server::start(data, &dir.join("run-2.log"));
    let (status, body) = health(&http, &server).await;
    eprintln!(
        "{case}: after lifting the fault and restarting ({:?}): /health {status}",
        lifted.elapsed()
    );
    assert_eq!(status, 200, "{body}");
    verify(&http, &server, &accounts).await;
    // Replaying every refused credit with its key lands it exactly once.
    let mut replay = 0;
    for acct in &mut accounts {
        for (key, amount) in std::mem::take(&mut acct.refused) {
            let res = http
                .post(server.url(&format!("/v1/accounts/{}/wallet/credits", acct.id)))
                .header("Idempotency-Key", key.clone())
                .json(&json!({"amount": {"minor": amount, "currency": "EUR"}}))
                .send()
                .await
                .unwrap();
            assert!(
                [200, 201].contains(&res.status().as_u16()),
                "replayed credit lands: {}",
                res.status()
            );
            acct.acknowledged.push((key, amount));
            replay += 1;
        }
    }
    let fresh = credit_round(&http, &server, &mut accounts, round).await;
    assert_eq!(fresh, 0, "new writes succeed after recovery");
    verify(&http, &server, &accounts).await;
    for acct in &accounts {
        let account: Value = http
            .get(server.url(&format!("/v1/accounts/{}", acct.id)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let expected: i64 = acct.acknowledged.iter().map(|(_, a)| a).sum();
        assert_eq!(account["wallet"]["balance"]["minor"], expected);
    }
    eprintln!(
        "{case}: {} accounts consistent; {replay} refused credits replayed once each",
        accounts.len()
    );
    let stopped = server.stop();
    assert!(stopped.success(), "a clean stop exits 0: {stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "mounts a tmpfs and sets chattr +i on the machine (so root only, never by default); .ci/run runs it with --ignored"]
async fn disk_fills_mid_run_then_recovers_on_restart() {
    let dir = scratch();
    let disk = dir.path().join("disk");
    let mount = match Tmpfs::mount(&disk, "size=64m") {
        Ok(mount) => mount,
        Err(why) => missing("disk full mid-run", &why),
    };
    let data = disk.join("data");
    let filler = disk.join("filler");
    mid_run(
        &data,
        dir.path(),
        "disk full mid-run",
        "No space left on device",
        || {
            let bytes = fill(&filler);
            eprintln!("disk full mid-run: filler took {bytes} bytes");
            struct Lift(PathBuf);
            impl Drop for Lift {
                fn drop(&mut self) {
                    std::fs::remove_file(&self.0).unwrap();
                }
            }
            Box::new(Lift(filler.clone()))
        },
    )
    .await;
    drop(mount);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "mounts a tmpfs and sets chattr +i on the machine (so root only, never by default); .ci/run runs it with --ignored"]
async fn data_dir_turns_read_only_mid_run_then_recovers_on_restart() {
    let dir = scratch();
    let data = dir.path().join("data");
    let probe = dir.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    if let Err(why) = Immutable::set(&probe) {
        missing("read-only mid-run (chattr +i)", &why);
    }
    let _ = immutable(&probe, false);
    mid_run(
        &data,
        dir.path(),
        "read-only mid-run",
        "Operation not permitted",
        || Box::new(Immutable::set(&data).expect("chattr +i")),
    )
    .await;
}
