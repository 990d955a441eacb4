//! Overload against the real `wayfare` binary: many more concurrent clients than the
//! server has room for, for a bounded time.
//!
//! The server is made small on purpose (a config file in a temp dir): one HTTP worker,
//! one actor thread, two account shards with 16-slot mailboxes, a 20 ms injected reply
//! delay on every account shard (`[faults]`), one search aggregator with a 16-slot
//! mailbox. Then `CLIENTS` connections (default 384) loop on account reads, wallet
//! credits and hotel searches for `WAYFARE_OVERLOAD_SECS` seconds (default 6).
//!
//! Checked:
//! - the server sheds: more than zero 503 `overloaded` answers, each with `Retry-After`;
//! - nothing else fails: no 5xx other than 503/504, no 4xx, no transport error;
//! - p99 latency of admitted (2xx) requests stays within the longest configured deadline
//!   plus a generous slack for a shared, noisy machine;
//! - resident memory (sampled from `/proc/<pid>/status`) stays under a bound;
//! - afterwards the server recovers: `/health` 200, plain requests answer quickly, and
//!   every acknowledged credit is in its ledger once, with balance = ledger sum (a 504 is
//!   an unknown outcome and may or may not have landed; a 503 never lands).
//!
//! A client's first request also opens its connection; under a connection storm that
//! waits in the kernel's accept backlog (SYN retries) before the server admitted anything,
//! so it is reported apart ("slowest first request") and left out of the percentiles.
//!
//! No HTTP-level admission layer is needed for this: the actors shed in microseconds, and
//! what grows with the number of connections is the time a request waits to be *read*
//! (each connection holds one request; Little's law: connections / throughput), which an
//! in-handler concurrency limit cannot shorten. Measured on 2 shared cores, debug build:
//! 384 clients, admitted p99 ~0.3 s; 1024, ~0.4 s; 4096, ~0.9 s (search p99 above its
//! 400 ms deadline, all of it outside the actors) and ~17 kB of RSS per connection. The
//! bound on that is `server.max_connections` per worker.
//!
//! It loads a shared machine for seconds, so a plain `cargo test` leaves it out
//! (`#[ignore]`); `.ci/run` and `scripts/reliability.sh` run it with `--ignored`.
//!
//! Figures (requests by status, p50/p99, peak RSS, recovery time) are printed on stderr:
//! `cargo test --test overload -- --ignored --nocapture`.
//!
//! Longer run: `WAYFARE_OVERLOAD_SECS=60 cargo test --test overload -- --ignored --nocapture`
//! (`WAYFARE_OVERLOAD_CLIENTS=512` changes the number of connections).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::wait_until;

const OPERATOR_TOKEN: &str = "overload-operator-token-0123456";

/// Deadline of account asks and of searches (ms), as configured below.
const ACCOUNT_DEADLINE_MS: u64 = 1000;
const SEARCH_DEADLINE_MS: u64 = 400;

/// Slack on top of the deadline for an admitted request's p99: the client, the server and
/// other builds share two cores.
const P99_SLACK: Duration = Duration::from_millis(1500);

/// Resident memory bound, generous: the design target is 20 MB at 1,000 req/s.
const RSS_BOUND_KB: u64 = 256 * 1024;

const ACCOUNTS: usize = 16;

fn config_toml(data: &std::path::Path) -> String {
    format!(
        r#"
[server]
bind = "127.0.0.1:0"
workers = 1
[store]
data_dir = "{data}"
[runtime]
arbiters = 1
[accounts]
shards = 2
mailbox_capacity = 16
deadline_ms = {ACCOUNT_DEADLINE_MS}
[faults]
enabled = true
account_reply_delay_ms = 20
[search]
aggregators = 1
mailbox_capacity = 16
deadline_ms = {SEARCH_DEADLINE_MS}
[[sellers]]
name = "alpha"
kind = "simulated"
[sellers.simulated]
seed = 1
latency_ms = [20, 60]
[[sellers]]
name = "bravo"
kind = "simulated"
[sellers.simulated]
seed = 2
latency_ms = [40, 120]
"#,
        data = data.display()
    )
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Server {
    let config = dir.join("overload.toml");
    std::fs::write(&config, config_toml(&dir.join("data"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wayfare"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .env("WAYFARE__ADMIN__TOKEN", OPERATOR_TOKEN)
        // Floods on purpose: what sheds load here must be the mailboxes, not the rate
        // limits (which the operator token it sends is exempt from anyway).
        .env("WAYFARE__LIMITS__ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wayfare");
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

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {OPERATOR_TOKEN}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    by_status: HashMap<u16, u64>,
    /// Requests by kind and status.
    by_kind: HashMap<(&'static str, u16), u64>,
    /// Latency of admitted (2xx) requests, microseconds.
    admitted_us: Vec<u64>,
    /// The same by kind.
    admitted_by_kind: HashMap<&'static str, Vec<u64>>,
    /// Slowest first request of a client (connection set-up included), microseconds.
    first_us: u64,
    transport_errors: u64,
    /// 503s without `Retry-After` or not of type overloaded / actor-crashed.
    bad_sheds: Vec<String>,
    /// Unexpected answers (status, body), first few.
    unexpected: Vec<String>,
    /// Acknowledged credits: account index -> (key, amount).
    acknowledged: Vec<(usize, String, i64)>,
    /// Credits with an unknown outcome (504): may or may not have landed.
    unknown: Vec<(usize, String, i64)>,
}

#[derive(Clone, Copy)]
enum Kind {
    Read,
    Credit,
    Search,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Credit => "credit",
            Kind::Search => "search",
        }
    }
}

async fn one_client(
    n: usize,
    http: reqwest::Client,
    base: Arc<String>,
    ids: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
) -> Tally {
    let mut tally = Tally::default();
    let mut i = n;
    // The first request of a client also opens its connection; under a connection storm
    // that waits in the kernel's accept backlog (SYN retries), before the server has
    // admitted anything, so it is timed apart.
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        i = i.wrapping_mul(31).wrapping_add(7);
        let acct = i % ids.len();
        let kind = match i % 10 {
            0..=4 => Kind::Read,
            5..=7 => Kind::Credit,
            _ => Kind::Search,
        };
        let mut credit = None;
        let req = match kind {
            Kind::Read => http.get(format!("{base}/v1/accounts/{}", ids[acct])),
            Kind::Credit => {
                let s = seq.fetch_add(1, Ordering::Relaxed);
                let key = format!("load-{s}");
                let amount = 1 + (s % 97) as i64;
                credit = Some((acct, key.clone(), amount));
                http.post(format!("{base}/v1/accounts/{}/wallet/credits", ids[acct]))
                    .header("Idempotency-Key", key)
                    .json(&json!({"amount": {"minor": amount, "currency": "EUR"}}))
            }
            Kind::Search => {
                // Spread over dates so most searches miss the cache and fan out.
                let day = 10 + (i % 200) as i64;
                let check_in = chrono::Utc::now().date_naive() + chrono::Days::new(day as u64);
                let check_out = check_in + chrono::Days::new(2);
                http.get(format!(
                    "{base}/v1/search/hotels?city=Lisbon&check_in={check_in}&check_out={check_out}"
                ))
            }
        };
        let started = Instant::now();
        let res = match req.send().await {
            Ok(res) => res,
            Err(_) => {
                tally.transport_errors += 1;
                continue;
            }
        };
        let status = res.status().as_u16();
        let retry_after = res.headers().contains_key("retry-after");
        let body = res.bytes().await.unwrap_or_default();
        let took = started.elapsed();
        if first && status >= 300 {
            tally.first_us = tally.first_us.max(took.as_micros() as u64);
        }
        *tally.by_status.entry(status).or_default() += 1;
        *tally.by_kind.entry((kind.name(), status)).or_default() += 1;
        match status {
            200..=299 => {
                if let (Some(c), 201) = (credit.clone(), status) {
                    tally.acknowledged.push(c);
                }
                if first {
                    tally.first_us = tally.first_us.max(took.as_micros() as u64);
                } else {
                    tally.admitted_us.push(took.as_micros() as u64);
                    tally
                        .admitted_by_kind
                        .entry(kind.name())
                        .or_default()
                        .push(took.as_micros() as u64);
                }
            }
            503 => {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let kind = body["type"].as_str().unwrap_or_default();
                if !retry_after
                    || !["/problems/overloaded", "/problems/actor-crashed"].contains(&kind)
                {
                    tally.bad_sheds.push(format!("{retry_after} {body}"));
                }
                // Shed before anything was queued: the credit never lands.
            }
            504 => {
                if let Some(c) = credit {
                    tally.unknown.push(c);
                }
            }
            _ => {
                if tally.unexpected.len() < 5 {
                    tally
                        .unexpected
                        .push(format!("{status} {}", String::from_utf8_lossy(&body)));
                }
            }
        }
        first = false;
        // A shed client backs off a little, as a well-behaved one would (Retry-After is
        // 1 s; a tight loop would only measure the client).
        if status == 503 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tally
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    Duration::from_micros(sorted[i])
}

/// Every ledger entry of an account (all pages).
async fn ledger(http: &reqwest::Client, base: &str, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let url = match after {
            Some(a) => format!("{base}/v1/accounts/{id}/wallet/ledger?limit=500&after={a}"),
            None => format!("{base}/v1/accounts/{id}/wallet/ledger?limit=500"),
        };
        let res = http.get(url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        out.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_u64() {
            Some(a) => after = Some(a),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "loads the machine for seconds with hundreds of connections; run by .ci/run"]
async fn sheds_under_overload_and_recovers() {
    let secs = env_or("WAYFARE_OVERLOAD_SECS", 6);
    let clients = env_or("WAYFARE_OVERLOAD_CLIENTS", 384) as usize;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let pid = server.child.id();
    let base = Arc::new(server.base.clone());
    let http = client();

    let mut ids = Vec::new();
    for i in 0..ACCOUNTS {
        let res = http
            .post(format!("{base}/v1/accounts"))
            .json(&json!({"name": format!("Load {i}"), "email": format!("l{i}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        ids.push(
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let ids = Arc::new(ids);
    let idle_rss = rss_kb(pid).unwrap_or(0);

    // Sample RSS every 100 ms while the load runs.
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(Mutex::new(0u64));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some(kb) = rss_kb(pid) {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(kb);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    // Own connection pool per group of clients, so connections are really concurrent.
    let tasks: Vec<_> = (0..clients)
        .map(|n| {
            tokio::spawn(one_client(
                n,
                client(),
                base.clone(),
                ids.clone(),
                stop.clone(),
                seq.clone(),
            ))
        })
        .collect();
    let load_started = Instant::now();
    // The load lasts `secs`: a duration of the scenario, not a wait for some state.
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let mut tally = Tally::default();
    for task in tasks {
        let t = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("clients finish once stopped (no request hangs)")
            .unwrap();
        for (s, n) in t.by_status {
            *tally.by_status.entry(s).or_default() += n;
        }
        for (k, n) in t.by_kind {
            *tally.by_kind.entry(k).or_default() += n;
        }
        for (k, v) in t.admitted_by_kind {
            tally.admitted_by_kind.entry(k).or_default().extend(v);
        }
        tally.admitted_us.extend(t.admitted_us);
        tally.first_us = tally.first_us.max(t.first_us);
        tally.transport_errors += t.transport_errors;
        tally.bad_sheds.extend(t.bad_sheds);
        tally.unexpected.extend(t.unexpected);
        tally.acknowledged.extend(t.acknowledged);
        tally.unknown.extend(t.unknown);
    }
    let drained = stopped.elapsed();
    let elapsed = load_started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak_rss = *peak.lock().unwrap();

    // Recovery: healthy, and plain requests answer quickly.
    let recovery_started = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "/health answers 200 again",
        async || {
            let res = http.get(format!("{base}/health")).send().await.unwrap();
            (res.status() == 200).then_some(())
        },
    )
    .await;
    let healthy_after = recovery_started.elapsed();
    let mut slowest = Duration::ZERO;
    for id in ids.iter() {
        let t = Instant::now();
        let res = http
            .get(format!("{base}/v1/accounts/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "plain read after the load");
        slowest = slowest.max(t.elapsed());
        let t = Instant::now();
        let res = http
            .post(format!("{base}/v1/accounts/{id}/wallet/credits"))
            .header("Idempotency-Key", format!("after-{id}"))
            .json(&json!({"amount": {"minor": 1, "currency": "EUR"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "plain credit after the load");
        slowest = slowest.max(t.elapsed());
    }

    // No acknowledged write lost; balances equal ledgers.
    let mut by_account: Vec<Vec<(String, i64)>> = vec![Vec::new(); ids.len()];
    for (a, key, amount) in &tally.acknowledged {
        by_account[*a].push((key.clone(), *amount));
    }
    let mut unknown_landed = 0;
    for (a, id) in ids.iter().enumerate() {
        by_account[a].push((format!("after-{id}"), 1));
        let entries = ledger(&http, &base, id).await;
        let account: Value = http
            .get(format!("{base}/v1/accounts/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sum: i64 = entries.iter().map(|e| e["delta"].as_i64().unwrap()).sum();
        assert_eq!(
            account["wallet"]["balance"]["minor"], sum,
            "balance = ledger"
        );
        let landed: HashMap<&str, i64> = entries
            .iter()
            .map(|e| (e["key"].as_str().unwrap(), e["delta"].as_i64().unwrap()))
            .collect();
        assert_eq!(landed.len(), entries.len(), "each key once");
        for (key, amount) in &by_account[a] {
            assert_eq!(landed.get(key.as_str()), Some(amount), "acknowledged {key}");
        }
        let unknown: Vec<&str> = tally
            .unknown
            .iter()
            .filter(|(u, _, _)| *u == a)
            .map(|(_, k, _)| k.as_str())
            .collect();
        for key in landed.keys() {
            let acked = by_account[a].iter().any(|(k, _)| k == key);
            assert!(acked || unknown.contains(key), "{key} landed but was shed");
            if !acked {
                unknown_landed += 1;
            }
        }
    }

    tally.admitted_us.sort_unstable();
    let total: u64 = tally.by_status.values().sum();
    let mut statuses: Vec<_> = tally.by_status.iter().collect();
    statuses.sort();
    let p50 = percentile(&tally.admitted_us, 0.50);
    let p99 = percentile(&tally.admitted_us, 0.99);
    let max = percentile(&tally.admitted_us, 1.0);
    let shed = tally.by_status.get(&503).copied().unwrap_or(0);
    eprintln!(
        "overload: {clients} clients for {secs} s ({elapsed:.1?}, drained in {drained:.1?}): \
         {total} requests ({:.0}/s), by status {statuses:?}, transport errors {}",
        total as f64 / elapsed.as_secs_f64(),
        tally.transport_errors
    );
    eprintln!(
        "overload: admitted p50 {p50:.1?} p99 {p99:.1?} max {max:.1?} (deadlines: accounts \
         {ACCOUNT_DEADLINE_MS} ms, search {SEARCH_DEADLINE_MS} ms; bound deadline + {P99_SLACK:?})"
    );
    let mut by_kind: Vec<_> = tally.by_kind.iter().collect();
    by_kind.sort();
    eprintln!("overload: by kind and status {by_kind:?}");
    eprintln!(
        "overload: slowest first request of a client (connection set-up included, not in \
         the percentiles) {:.1?}",
        Duration::from_micros(tally.first_us)
    );
    let mut kinds: Vec<_> = tally.admitted_by_kind.iter_mut().collect();
    kinds.sort_by_key(|(k, _)| *k);
    for (kind, lat) in kinds {
        lat.sort_unstable();
        eprintln!(
            "overload: admitted {kind}: p50 {:.1?} p99 {:.1?}",
            percentile(lat, 0.50),
            percentile(lat, 0.99)
        );
    }
    eprintln!(
        "overload: RSS idle {idle_rss} kB, peak {peak_rss} kB (bound {RSS_BOUND_KB} kB); \
         /health 200 {healthy_after:.1?} after the load, slowest plain request after {slowest:.1?}"
    );
    eprintln!(
        "overload: {} credits acknowledged, all in their ledgers; {} with unknown outcome \
         (504), {unknown_landed} of them landed",
        tally.acknowledged.len(),
        tally.unknown.len()
    );

    assert!(shed > 0, "the server shed load with 503: {statuses:?}");
    assert!(
        tally.bad_sheds.is_empty(),
        "every 503 is an overloaded problem with Retry-After: {:?}",
        &tally.bad_sheds[..tally.bad_sheds.len().min(3)]
    );
    assert!(
        tally.unexpected.is_empty(),
        "only 2xx, 503 and 504: {:?}",
        tally.unexpected
    );
    assert_eq!(tally.transport_errors, 0, "no connection failed");
    assert!(
        tally.by_status.get(&200).copied().unwrap_or(0) > 0
            && tally.by_status.get(&201).copied().unwrap_or(0) > 0,
        "some reads and credits were admitted: {statuses:?}"
    );
    let bound = Duration::from_millis(ACCOUNT_DEADLINE_MS) + P99_SLACK;
    assert!(p99 <= bound, "admitted p99 {p99:?} over {bound:?}");
    assert!(peak_rss < RSS_BOUND_KB, "peak RSS {peak_rss} kB");
    assert!(
        healthy_after < Duration::from_secs(10),
        "healthy again quickly"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "plain requests after the load answer quickly: {slowest:?}"
    );
    drop(server);
}
