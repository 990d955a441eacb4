//! Acknowledged writes survive `kill -9`: the real `wayfare` binary is started on an
//! ephemeral port, sent wallet credits, killed with SIGKILL, and started again on the same
//! data directory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::wait_until;

struct Server {
    child: Child,
    base: String,
}

/// The operator token the server is started with; every request here acts as operator.
const OPERATOR_TOKEN: &str = "durability-operator-token-0123";

fn operator_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {OPERATOR_TOKEN}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Starts the binary in `dir` (no config.toml there, so built-in defaults) and waits for
/// the "listening" line that names the port.
fn start(dir: &std::path::Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_wayfare"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("WAYFARE__ADMIN__TOKEN", OPERATOR_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wayfare");
    // Owned by `Server` at once, so a failed start still reaps the process.
    let mut server = Server {
        child,
        base: String::new(),
    };
    let stdout = server.child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "server did not start");
        let line = lines.next().expect("server exited early").unwrap();
        if let Some(addr) = line.strip_prefix("wayfare listening on ") {
            server.base = addr.trim().to_owned();
            return server;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let http = operator_client();
    let mut server = start(dir.path());
    let res = http
        .post(format!("{}/v1/accounts", server.base))
        .json(&json!({"name": "Durable", "email": "d@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let credits = 25;
    for i in 0..credits {
        let res = http
            .post(format!("{}/v1/accounts/{id}/wallet/credits", server.base))
            .header("Idempotency-Key", format!("credit-{i}"))
            .json(&json!({"amount": {"minor": 100 + i, "currency": "EUR"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "credit {i} acknowledged");
    }
    server.child.kill().unwrap(); // SIGKILL: no shutdown path runs
    server.child.wait().unwrap();

    let mut server = start(dir.path());
    let acct: Value = http
        .get(format!("{}/v1/accounts/{id}", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected: i64 = (0..credits).map(|i| 100 + i).sum();
    assert_eq!(acct["wallet"]["balance"]["minor"], expected);
    let page: Value = http
        .get(format!(
            "{}/v1/accounts/{id}/wallet/ledger?limit=100",
            server.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), credits as usize);
    let sum: i64 = entries.iter().map(|e| e["delta"].as_i64().unwrap()).sum();
    assert_eq!(sum, expected, "balance equals the sum of the ledger");
    // A replay after the crash returns the first result, not a second credit.
    let res = http
        .post(format!("{}/v1/accounts/{id}/wallet/credits", server.base))
        .header("Idempotency-Key", "credit-0")
        .json(&json!({"amount": {"minor": 100, "currency": "EUR"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["replayed"], true);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Reads are answered from the read model the account shards publish into, but only with
/// durable states: what a read shows right after a credit is acknowledged, a `kill -9`
/// cannot take back. Each round: credit, read (by the owner's key and by the operator),
/// kill -9 at once, restart, and the first read after the restart equals the last before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_never_shows_what_a_crash_could_take_back() {
    let dir = tempfile::tempdir().unwrap();
    let http = operator_client();
    let mut server = start(dir.path());
    let res = http
        .post(format!("{}/v1/accounts", server.base))
        .json(&json!({"name": "Reader", "email": "reader@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    let key = body["api_key"].as_str().unwrap().to_owned();
    let mut owner_headers = reqwest::header::HeaderMap::new();
    owner_headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    let owner = reqwest::Client::builder()
        .default_headers(owner_headers)
        .build()
        .unwrap();
    let read = |client: &reqwest::Client, base: &str| {
        let req = client.get(format!("{base}/v1/accounts/{id}"));
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    };
    let mut expected = 0;
    for round in 0..3_i64 {
        // Warm: the account is published (read model hit) before the credit.
        read(&owner, &server.base).await;
        let amount = 1000 + round;
        let res = http
            .post(format!("{}/v1/accounts/{id}/wallet/credits", server.base))
            .header("Idempotency-Key", format!("read-credit-{round}"))
            .json(&json!({"amount": {"minor": amount, "currency": "EUR"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "credit {round} acknowledged");
        expected += amount;
        let before = read(&owner, &server.base).await;
        assert_eq!(before, read(&http, &server.base).await);
        assert_eq!(
            before["wallet"]["balance"]["minor"], expected,
            "the acknowledged credit is visible at once"
        );
        server.child.kill().unwrap(); // SIGKILL right after the read
        server.child.wait().unwrap();
        server = start(dir.path());
        let after = read(&owner, &server.base).await;
        assert_eq!(
            after, before,
            "round {round}: the read after restart differs"
        );
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_until(
        Duration::from_secs(30),
        "the server exits after SIGTERM",
        async || server.child.try_wait().unwrap(),
    )
    .await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}
