//! Booking sagas survive `kill -9`. The real `wayfare` binary is started on an ephemeral
//! port with slow, lossy simulated sellers; each cycle fires a burst of concurrent bookings
//! over HTTP (approving, declining and failing-capture cards, with and without wallet
//! points, some cancelled right away, some earlier ones cancelled or resubmitted), then
//! SIGKILLs the server after a short random delay and starts it again on the same data
//! directory. After the last restart every booking must settle, and what is observable from
//! outside must be consistent:
//!
//! - every booking reaches a terminal state (`needs_attention` only with a reason);
//! - one booking per idempotency key: a key resubmitted after a crash returns the same id,
//!   and an account lists exactly the bookings its keys created;
//! - every wallet balance equals the sum of its ledger deltas, matches what the bookings'
//!   final states imply (points spent by confirmed bookings, given back by cancellations),
//!   and holds nothing once no booking of the account is in flight or parked;
//! - every confirmed booking has at least one `confirmed` email in `outbox.log` and no
//!   failed booking has one; duplicates (the mailer is at-least-once) are counted and
//!   reported, not failed.
//!
//! What it cannot check: the simulated sellers and payment gateway live inside the server
//! process and start empty after every kill, so "the seller holds exactly one reservation"
//! or "the card was captured once" are not observable across crashes from outside. The
//! in-process tests in `tests/booking.rs` check those against fakes the test holds.
//!
//! The run is seeded (`BOOKING_CRASH_SEED`, default below) so a failure can be replayed,
//! although thread scheduling still varies between runs. `BOOKING_CRASH_CYCLES` (default 4)
//! sets the number of kill -9 cycles: `scripts/reliability.sh --long` runs 20.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use futures_util::future::join_all;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use wayfare::domain::account::AccountId;

/// Demo accounts the bookings are spread over.
const ACCOUNTS: u64 = 20;
/// Wallet credit of each demo account, in minor units.
const CREDIT: i64 = 100_000;
/// Kill-and-restart cycles.
const CYCLES: usize = 4;

/// Kill -9 cycles of this run: `BOOKING_CRASH_CYCLES`, else [`CYCLES`].
fn cycles() -> usize {
    std::env::var("BOOKING_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| (1..=1000).contains(&n))
        .unwrap_or(CYCLES)
}
/// New bookings fired per cycle.
const BOOKINGS_PER_CYCLE: usize = 40;
/// Earlier keys resubmitted, and earlier bookings cancelled, at the start of a cycle.
const RESUBMITS_PER_CYCLE: usize = 8;
const LATE_CANCELS_PER_CYCLE: usize = 6;
/// The operator token the server runs with; the checks act as operator.
const OPERATOR_TOKEN: &str = "crash-test-operator-token-0123";
/// Bound of every HTTP request, so a hung server cannot hang the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of the final settling (bookings terminal, emails written).
const SETTLE_WITHIN: Duration = Duration::from_secs(60);
/// Bound of one server start, and start-ups tried before giving up.
const START_WITHIN: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 6;
/// Bound of everything after the last start (resubmits, settling, checks), so a server
/// that stops answering fails the test in bounded time instead of hanging it.
const CHECKS_WITHIN: Duration = Duration::from_secs(75);
static CHECKS_END: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
/// Default seed of the plan (card tokens, points, accounts, kill delays).
const DEFAULT_SEED: u64 = 0x5EED_2026;

/// Slow, lossy sellers and quick saga retries: a 1 s step timeout against seller calls of
/// up to 300 ms plus lost replies means reconciliation happens, and kills land mid-step.
const CONFIG: &str = r#"
[server]
workers = 2

[runtime]
arbiters = 2

[accounts]
shards = 4

[supervisor]
backoff_min_ms = 1
backoff_max_ms = 50

[demo]
accounts = 20
credit_minor = 100000

[log]
level = "warn"

[bookings]
step_timeout_ms = 1000

[bookings.saga]
backoff_base_ms = 10
backoff_max_ms = 100

[payments]
latency_min_ms = 1
latency_max_ms = 20

[[sellers]]
name = "alpha"
kind = "simulated"
verticals = ["hotel"]
[sellers.simulated]
seed = 1
coverage = 1.0
latency_ms = [50, 300]
reject_rate = 0.1
lost_reply_rate = 0.05

[[sellers]]
name = "bravo"
kind = "simulated"
verticals = ["hotel"]
[sellers.simulated]
seed = 2
coverage = 1.0
latency_ms = [50, 300]
reject_rate = 0.05
lost_reply_rate = 0.1

[[sellers]]
name = "charlie"
kind = "simulated"
verticals = ["hotel"]
[sellers.simulated]
seed = 3
coverage = 1.0
latency_ms = [80, 300]
lost_reply_rate = 0.05
"#;

/// The server process; killed and reaped when dropped, so a failing test leaves nothing
/// running.
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

impl Server {
    /// SIGKILL: no shutdown path runs, nothing is flushed beyond what was acknowledged.
    fn kill(mut self) {
        self.child.kill().expect("kill wayfare");
        self.child.wait().expect("reap wayfare");
    }
}

/// Starts the binary in `dir` with `dir/config.toml`, data in `dir/data` and its log in
/// `dir/server-{n}.log`, and waits for the line naming the port. `None` when the process
/// exits before listening (its log says why).
fn try_start(dir: &Path, n: &str) -> Option<Server> {
    let log_path = dir.join(format!("server-{n}.log"));
    let log = std::fs::File::create(&log_path).expect("server log");
    let child = Command::new(env!("CARGO_BIN_EXE_wayfare"))
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(dir.join("config.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .current_dir(dir)
        .env("RUST_LOG", "warn,wayfare=info")
        .env("WAYFARE__ADMIN__TOKEN", OPERATOR_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start wayfare");
    // Owned by `Server` at once, so a failed start still reaps the process.
    let mut server = Server {
        child,
        base: String::new(),
    };
    let stdout = server.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    // Keeps draining stdout after the port is known, so the server never writes to a
    // closed pipe; ends when the process does.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("wayfare listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(START_WITHIN) {
        Ok(base) => {
            server.base = base;
            Some(server)
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("server {n} did not start; see {}", log_path.display())
        }
    }
}

/// Starts the server, retrying (bounded) when a start-up fails, as an operator's process
/// supervisor would; failed start-ups are counted and reported.
fn start(dir: &Path, n: usize, failed_starts: &mut Vec<String>) -> Server {
    for attempt in 0..START_ATTEMPTS {
        let name = format!("{n}-{attempt}");
        if let Some(server) = try_start(dir, &name) {
            return server;
        }
        let log =
            std::fs::read_to_string(dir.join(format!("server-{name}.log"))).unwrap_or_default();
        let last = log.lines().last().unwrap_or("(empty log)").to_owned();
        println!("start {name} failed: {last}");
        failed_starts.push(last);
    }
    panic!(
        "server {n} failed to start {START_ATTEMPTS} times; logs in {}",
        dir.display()
    );
}

fn in_days(n: u64) -> NaiveDate {
    Utc::now()
        .date_naive()
        .checked_add_days(Days::new(n))
        .unwrap()
}

/// One offer from a search: what a booking body needs.
#[derive(Debug, Clone)]
struct Offer {
    seller: String,
    sku: String,
    price: i64,
}

/// Lisbon hotel offers 30 days ahead; the simulated catalogs are deterministic, so the
/// same offers (and prices) come back after every restart.
async fn search(http: &reqwest::Client, base: &str) -> Vec<Offer> {
    let url = format!(
        "{base}/v1/search/hotels?city=Lisbon&check_in={}&check_out={}",
        in_days(30),
        in_days(32)
    );
    for _ in 0..10 {
        if let Ok(res) = http.get(&url).send().await {
            if let Ok(body) = res.json::<Value>().await {
                let offers: Vec<Offer> = body["offers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| Offer {
                        seller: o["seller"].as_str().unwrap().to_owned(),
                        sku: o["sku"].as_str().unwrap().to_owned(),
                        price: o["price"]["minor"].as_i64().unwrap(),
                    })
                    .collect();
                if !offers.is_empty() {
                    return offers;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no Lisbon offers from {base}");
}

/// What the test knows about one idempotency key.
#[derive(Debug, Clone)]
struct KeyState {
    account: String,
    body: Value,
    /// The booking id, once a reply carried it.
    id: Option<String>,
}

/// What happened to one request: the key, and the status and body if a reply came.
type Reply = (String, Option<(u16, Value)>);

async fn post_booking(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    let res = http
        .post(format!("{base}/v1/bookings"))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .ok()?;
    let status = res.status().as_u16();
    Some((status, res.json::<Value>().await.ok()?))
}

async fn post_cancel(http: &reqwest::Client, base: &str, id: &str) -> Option<u16> {
    let res = http
        .post(format!("{base}/v1/bookings/{id}/cancel"))
        .send()
        .await
        .ok()?;
    Some(res.status().as_u16())
}

/// The state of a booking, if the server answers.
async fn booking_state(http: &reqwest::Client, base: &str, id: &str) -> Option<String> {
    let res = http
        .get(format!("{base}/v1/bookings/{id}"))
        .send()
        .await
        .ok()?;
    let body: Value = res.json().await.ok()?;
    body["state"].as_str().map(str::to_owned)
}

/// A GET that must succeed; transient refusals (5xx, no reply) are retried a bounded
/// number of times, and what is left is reported rather than panicking mid-check.
async fn get_json(http: &reqwest::Client, url: &str, problems: &mut Vec<String>) -> Value {
    if Instant::now() > *CHECKS_END.get().expect("checks deadline set") {
        return Value::Null; // reported once, by the caller's deadline check
    }
    let mut last = String::new();
    for _ in 0..10 {
        match http.get(url).send().await {
            Ok(res) if res.status().is_success() => match res.json().await {
                Ok(v) => return v,
                Err(e) => last = format!("bad JSON: {e}"),
            },
            Ok(res) => last = format!("status {}", res.status()),
            Err(e) => last = format!("no reply: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    problems.push(format!("GET {url}: {last}"));
    Value::Null
}

fn state_of(booking: &Value) -> &str {
    booking["state"].as_str().unwrap_or("?")
}

/// Terminal: the booking and its cancellation (if any) have finished, and a parked one
/// says why.
fn is_terminal(b: &Value) -> bool {
    let booking_done = match state_of(b) {
        "confirmed" | "failed" | "cancelled" => true,
        "needs_attention" => b["needs_attention"]
            .as_str()
            .is_some_and(|r| !r.trim().is_empty()),
        _ => false,
    };
    let cancellation_done = match b["cancellation"]["state"].as_str() {
        None => true,
        Some("cancelled" | "failed") => true,
        Some("needs_attention") => true,
        Some(_) => false,
    };
    booking_done && cancellation_done
}

fn is_parked(b: &Value) -> bool {
    state_of(b) == "needs_attention" || b["cancellation"]["state"] == "needs_attention"
}

/// Records a reply's booking id for its key; a key that maps to two ids is a double
/// booking.
fn record(keys: &mut BTreeMap<String, KeyState>, problems: &mut Vec<String>, reply: &Reply) {
    let (key, Some((status, body))) = reply else {
        return;
    };
    if !matches!(status, 200 | 202) {
        return;
    }
    let id = body["id"].as_str().expect("booking id").to_owned();
    let known = keys.get_mut(key).expect("planned key");
    match &known.id {
        Some(first) if *first != id => problems.push(format!(
            "idempotency key {key} returned booking {id} after {first}"
        )),
        Some(_) => {}
        None => known.id = Some(id),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_survive_repeated_kill_9() {
    let started = Instant::now();
    let seed = std::env::var("BOOKING_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut dir = tempfile::tempdir().unwrap();
    // Kept unless the test passes, with every server's log, for a post-mortem.
    dir.disable_cleanup(true);
    std::fs::write(dir.path().join("config.toml"), CONFIG).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {OPERATOR_TOKEN}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .default_headers(headers)
        .build()
        .unwrap();
    let accounts: Vec<String> = (0..ACCOUNTS)
        .map(|i| AccountId::demo(i).to_string())
        .collect();
    let mut keys: BTreeMap<String, KeyState> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut kills = 0;
    let mut cancel_replies: BTreeMap<String, usize> = BTreeMap::new();
    let mut starts = 0;
    let mut failed_starts: Vec<String> = Vec::new();

    for cycle in 0..cycles() {
        let server = start(dir.path(), starts, &mut failed_starts);
        starts += 1;
        let offers = search(&http, &server.base).await;
        let base = server.base.clone();
        let mut bookings = Vec::new();
        let mut cancels = Vec::new();

        // Earlier keys again (same body): those whose first reply was lost to a kill, and
        // some that got one. The server may be resuming their sagas at this moment.
        let mut earlier: Vec<&String> = keys.keys().collect();
        earlier.shuffle(&mut rng);
        for key in earlier.into_iter().take(RESUBMITS_PER_CYCLE) {
            let (http, base, key) = (http.clone(), base.clone(), key.clone());
            let body = keys[&key].body.clone();
            bookings.push(tokio::spawn(async move {
                let reply = post_booking(&http, &base, &key, &body).await;
                (key, reply)
            }));
        }
        // Earlier bookings that are confirmed by now get cancelled, so cancellation sagas
        // are in flight when the kill lands; a few others are cancelled in whatever state
        // they are in.
        let mut ids: Vec<String> = keys.values().filter_map(|k| k.id.clone()).collect();
        ids.shuffle(&mut rng);
        let mut to_cancel = Vec::new();
        for id in ids.iter().take(BOOKINGS_PER_CYCLE) {
            if to_cancel.len() == LATE_CANCELS_PER_CYCLE {
                break;
            }
            if booking_state(&http, &base, id).await.as_deref() == Some("confirmed") {
                to_cancel.push(id.clone());
            }
        }
        to_cancel.extend(ids.iter().rev().take(2).cloned());
        for id in to_cancel {
            let (http, base) = (http.clone(), base.clone());
            cancels.push(tokio::spawn(
                async move { post_cancel(&http, &base, &id).await },
            ));
        }
        // The new bookings of this cycle, planned up front so the seed decides them.
        for i in 0..BOOKINGS_PER_CYCLE {
            let key = format!("crash-{seed:x}-{cycle}-{i}");
            let account = accounts.choose(&mut rng).unwrap().clone();
            let offer = offers.choose(&mut rng).unwrap();
            let card = match rng.gen_range(0..10) {
                0..=5 => "tok_approve",
                6 | 7 => "tok_decline",
                _ => "tok_fail_capture",
            };
            let points = if rng.gen_bool(0.5) {
                rng.gen_range(100..=5_000).min(offer.price)
            } else {
                0
            };
            let cancel_after = rng
                .gen_bool(0.2)
                .then(|| Duration::from_millis(rng.gen_range(0..400)));
            let body = json!({
                "account_id": account,
                "seller": offer.seller,
                "sku": offer.sku,
                "start": in_days(30),
                "end": in_days(32),
                "offer_price": {"minor": offer.price, "currency": "EUR"},
                "wallet_points": {"minor": points, "currency": "EUR"},
                "card_token": card,
            });
            keys.insert(
                key.clone(),
                KeyState {
                    account,
                    body: body.clone(),
                    id: None,
                },
            );
            let (http, base) = (http.clone(), base.clone());
            let (tx, rx) = tokio::sync::oneshot::channel();
            bookings.push(tokio::spawn(async move {
                let reply = post_booking(&http, &base, &key, &body).await;
                let id = reply
                    .as_ref()
                    .filter(|(s, _)| *s == 202 || *s == 200)
                    .and_then(|(_, b)| b["id"].as_str().map(str::to_owned));
                match (cancel_after, id) {
                    (Some(after), Some(id)) => {
                        tokio::time::sleep(after).await;
                        let _ = tx.send(post_cancel(&http, &base, &id).await);
                    }
                    _ => drop(tx),
                }
                (key, reply)
            }));
            cancels.push(tokio::spawn(async move { rx.await.ok().flatten() }));
        }

        let delay = Duration::from_millis(rng.gen_range(50..=600));
        tokio::time::sleep(delay).await;
        server.kill();
        kills += 1;

        for task in bookings {
            let reply = tokio::time::timeout(REQUEST_TIMEOUT * 2, task)
                .await
                .expect("request bounded")
                .expect("request task");
            record(&mut keys, &mut problems, &reply);
        }
        for task in cancels {
            let status = tokio::time::timeout(REQUEST_TIMEOUT * 2, task)
                .await
                .expect("cancel bounded")
                .expect("cancel task");
            if let Some(status) = status {
                *cancel_replies.entry(status.to_string()).or_default() += 1;
            }
        }
        let acknowledged = keys.values().filter(|k| k.id.is_some()).count();
        println!(
            "cycle {cycle}: killed after {} ms; {acknowledged} of {} keys acknowledged so far",
            delay.as_millis(),
            keys.len()
        );
    }

    // The last start: nobody kills it.
    let mut server = start(dir.path(), starts, &mut failed_starts);
    CHECKS_END.get_or_init(|| Instant::now() + CHECKS_WITHIN);
    let base = server.base.clone();
    let data = dir.path().join("data");

    // Every key once more, with its first body. A key with a known booking must get that
    // booking back (200); a key whose every reply was lost is created now or found.
    let acknowledged_before = keys.values().filter(|k| k.id.is_some()).count();
    // Keys whose every reply was lost, but whose booking the server had recorded.
    let mut found_unacknowledged = 0;
    let all: Vec<(String, Value, bool)> = keys
        .iter()
        .map(|(k, s)| (k.clone(), s.body.clone(), s.id.is_some()))
        .collect();
    for chunk in all.chunks(BOOKINGS_PER_CYCLE) {
        let replies = join_all(chunk.iter().map(|(key, body, known)| {
            let (http, base) = (&http, &base);
            async move {
                let mut last = None;
                // Bounded retries of what the API says is transient (503, 409 while the
                // saga is being recovered).
                for _ in 0..20 {
                    if Instant::now() > *CHECKS_END.get().expect("checks deadline set") {
                        break;
                    }
                    last = post_booking(http, base, key, body).await;
                    match &last {
                        Some((200 | 202, _)) => break,
                        _ => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                (key.clone(), last, *known)
            }
        }))
        .await;
        for (key, reply, known) in replies {
            match &reply {
                Some((200, _)) if !known => found_unacknowledged += 1,
                Some((200, _)) => {}
                Some((202, _)) if !known => {}
                Some((status, body)) => problems.push(format!(
                    "resubmitting {key} (booking known: {known}) answered {status}: {body}"
                )),
                None => problems.push(format!("resubmitting {key}: no reply")),
            }
            record(&mut keys, &mut problems, &(key, reply));
        }
    }

    // Settle: every booking terminal.
    let ids: Vec<String> = keys.values().filter_map(|k| k.id.clone()).collect();
    let checks_end = *CHECKS_END.get().expect("checks deadline set");
    let settle_started = Instant::now();
    let settle_deadline = (settle_started + SETTLE_WITHIN).min(checks_end);
    let mut finals: HashMap<String, Value> = HashMap::new();
    loop {
        for id in &ids {
            if finals.contains_key(id) {
                continue;
            }
            let b = get_json(&http, &format!("{base}/v1/bookings/{id}"), &mut problems).await;
            if is_terminal(&b) {
                finals.insert(id.clone(), b);
            }
        }
        if finals.len() == ids.len() || Instant::now() > settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "settled {} of {} bookings within {:.1} s of the resubmits",
        finals.len(),
        ids.len(),
        settle_started.elapsed().as_secs_f64()
    );
    for id in ids.iter().filter(|id| !finals.contains_key(*id)) {
        let b = get_json(&http, &format!("{base}/v1/bookings/{id}"), &mut problems).await;
        problems.push(format!(
            "booking {id} not terminal after {SETTLE_WITHIN:?}: {} (cancellation {})",
            state_of(&b),
            b["cancellation"]["state"]
        ));
    }

    // One booking per key, seen from the accounts: each lists exactly its keys' bookings.
    let mut by_account: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for k in keys.values() {
        if let Some(id) = &k.id {
            by_account
                .entry(k.account.as_str())
                .or_default()
                .insert(id.as_str());
        }
    }
    for account in &accounts {
        let listed = get_json(
            &http,
            &format!("{base}/v1/accounts/{account}/bookings?limit=500"),
            &mut problems,
        )
        .await;
        let listed: BTreeSet<&str> = listed["bookings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| b["id"].as_str().unwrap())
            .collect();
        let expected = by_account.remove(account.as_str()).unwrap_or_default();
        if listed != expected {
            problems.push(format!(
                "account {account} lists bookings {listed:?}, its keys made {expected:?}"
            ));
        }
    }

    // Wallets: balance is the ledger's sum and what the final booking states imply.
    for account in &accounts {
        let acct = get_json(
            &http,
            &format!("{base}/v1/accounts/{account}"),
            &mut problems,
        )
        .await;
        let (Some(balance), Some(held)) = (
            acct["wallet"]["balance"]["minor"].as_i64(),
            acct["wallet"]["held"]["minor"].as_i64(),
        ) else {
            continue; // already reported by get_json
        };
        let (mut sum, mut after, mut entries) = (0i64, 0u64, 0usize);
        for _ in 0..1_000 {
            let page = get_json(
                &http,
                &format!("{base}/v1/accounts/{account}/wallet/ledger?after={after}&limit=500"),
                &mut problems,
            )
            .await;
            for e in page["entries"].as_array().into_iter().flatten() {
                sum += e["delta"].as_i64().unwrap();
                entries += 1;
            }
            match page["next_after"].as_u64() {
                Some(next) => after = next,
                None => break,
            }
        }
        if balance != sum {
            problems.push(format!(
                "account {account}: balance {balance} but its {entries} ledger entries sum to {sum}"
            ));
        }
        let mine: Vec<&Value> = finals
            .values()
            .filter(|b| b["account_id"] == account.as_str())
            .collect();
        if mine.iter().any(|b| is_parked(b)) {
            continue; // points of a parked booking are the operator's to settle
        }
        if held != 0 {
            problems.push(format!(
                "account {account}: {held} points held with no booking in flight"
            ));
        }
        let mut expected = CREDIT;
        for b in &mine {
            let points = b["wallet_points"]["minor"].as_i64().unwrap();
            let restored = b["cancellation"]["points_restored"]["minor"].as_i64();
            match (state_of(b), restored) {
                ("confirmed", None) => expected -= points,
                ("confirmed" | "cancelled", Some(r)) => expected -= points - r,
                _ => {}
            }
        }
        if balance != expected {
            problems.push(format!(
                "account {account}: balance {balance}, but its bookings' final states imply {expected}"
            ));
        }
    }

    // Emails: wait (bounded) until every confirmed booking has its confirmed email.
    let confirmed: Vec<&String> = finals
        .iter()
        .filter(|(_, b)| state_of(b) == "confirmed")
        .map(|(id, _)| id)
        .collect();
    let mut emails: HashMap<(String, String), usize>;
    let mut torn_lines;
    loop {
        emails = HashMap::new();
        torn_lines = 0;
        let log = std::fs::read_to_string(data.join("outbox.log")).unwrap_or_default();
        for line in log.lines() {
            match serde_json::from_str::<Value>(line) {
                Ok(e) => {
                    let booking = e["booking_id"].as_str().unwrap_or("").to_owned();
                    let kind = e["kind"].as_str().unwrap_or("").to_owned();
                    *emails.entry((booking, kind)).or_default() += 1;
                }
                // A kill in the middle of an append leaves a partial last line.
                Err(_) => torn_lines += 1,
            }
        }
        let missing = confirmed
            .iter()
            .filter(|id| !emails.contains_key(&((**id).clone(), "confirmed".into())))
            .count();
        if missing == 0 || Instant::now() > checks_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let email_count = |id: &str, kind: &str| {
        emails
            .get(&(id.to_owned(), kind.into()))
            .copied()
            .unwrap_or(0)
    };
    for id in &confirmed {
        if email_count(id, "confirmed") == 0 {
            problems.push(format!("confirmed booking {id} has no confirmed email"));
        }
    }
    for (id, b) in &finals {
        if state_of(b) == "failed" && email_count(id, "confirmed") > 0 {
            problems.push(format!("failed booking {id} has a confirmed email"));
        }
    }
    let duplicate_emails: usize = emails.values().map(|n| n.saturating_sub(1)).sum();

    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for b in finals.values() {
        *by_state.entry(state_of(b)).or_default() += 1;
    }
    let cancellations: BTreeMap<String, usize> =
        finals.values().fold(BTreeMap::new(), |mut m, b| {
            if let Some(s) = b["cancellation"]["state"].as_str() {
                *m.entry(s.to_owned()).or_default() += 1;
            }
            m
        });
    // Parked sagas are a legitimate outcome; their reasons and histories say why.
    let card_of: HashMap<&str, &str> = keys
        .values()
        .filter_map(|k| Some((k.id.as_deref()?, k.body["card_token"].as_str()?)))
        .collect();
    for (id, b) in finals.iter().filter(|(_, b)| is_parked(b)) {
        let history: Vec<String> = b["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| format!("{}: {}", h["state"].as_str().unwrap_or("?"), h["note"]))
            .collect();
        println!(
            "parked {id} ({}, {} points): {} / cancellation {}\n    {}",
            card_of.get(id.as_str()).unwrap_or(&"?"),
            b["wallet_points"]["minor"],
            b["needs_attention"],
            b["cancellation"]["state"],
            history.join("\n    ")
        );
    }
    println!(
        "summary: seed {seed:#x}, {} keys, {} bookings ({acknowledged_before} acknowledged before the last start, \
         {found_unacknowledged} recorded but unacknowledged), \
         {kills} kills, {} confirmed, {} failed, {} cancelled, {} needs_attention, \
         cancellation sagas {cancellations:?}, cancel replies {cancel_replies:?}, \
         {duplicate_emails} duplicate emails, {torn_lines} torn outbox lines, \
         {} failed start-ups, {:.1} s",
        keys.len(),
        ids.len(),
        by_state.get("confirmed").unwrap_or(&0),
        by_state.get("failed").unwrap_or(&0),
        by_state.get("cancelled").unwrap_or(&0),
        by_state.get("needs_attention").unwrap_or(&0),
        failed_starts.len(),
        started.elapsed().as_secs_f64()
    );
    if Instant::now() > checks_end {
        problems.push(format!(
            "the checks ran out of time ({CHECKS_WITHIN:?} after the last start); \
             some were skipped"
        ));
    }
    if let Ok(Some(status)) = server.child.try_wait() {
        problems.push(format!(
            "the server exited during the checks ({status}); see server-{starts}-*.log"
        ));
    }
    drop(server);
    // Secrets never reach a log: every server's log is searched for the operator token.
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if text.contains(OPERATOR_TOKEN) {
                problems.push(format!("{name} contains the operator token"));
            }
        }
    }
    if problems.is_empty() {
        let _ = std::fs::remove_dir_all(dir.path());
    }
    assert!(
        problems.is_empty(),
        "{} problems (server logs in {}):\n{}",
        problems.len(),
        dir.path().display(),
        problems
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
