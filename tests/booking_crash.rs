//! Booking sagas survive `kill -9`, with their partners outside the killed process. The
//! fake gateway and three fake sellers (`examples/fake_gateway.rs`, `examples/fake_seller.rs`)
//! run as their own processes with their books journaled in the test's temp dir; the real
//! `wayfare` binary is started on an ephemeral port, configured with them as HTTP partners.
//! Each cycle fires a burst of concurrent bookings over HTTP (approving, declining and
//! failing-capture cards, with and without wallet points, some cancelled right away, some
//! earlier ones cancelled or resubmitted), then SIGKILLs wayfare after a short random delay
//! and starts it again on the same data directory; the partners keep running, as real ones
//! would, with slow replies, declines and replies dropped after acting. After the last
//! restart every booking must settle, and what is observable from outside must be
//! consistent:
//!
//! - every booking ends `confirmed`, `failed` or `cancelled`; none is parked
//!   (`needs_attention`), except when injected faults failed every attempt of a step's
//!   retry budget after the pivot or in compensation (the one way the faults injected here
//!   make a compensation impossible): those are counted and named, and fail the test only
//!   when more than chance explains;
//! - one booking per idempotency key: a key resubmitted after a crash returns the same id,
//!   and an account lists exactly the bookings its keys created;
//! - every wallet balance equals the sum of its ledger deltas, matches what the bookings'
//!   final states imply (points spent by confirmed bookings, given back by cancellations),
//!   and holds nothing once no booking of the account is in flight or parked;
//! - from the gateway's own ledger: no capture without a confirmed booking (or its
//!   refund), a confirmed booking captured exactly once, every other authorization voided,
//!   none captured twice;
//! - from each seller's own ledger: every reservation belongs to one known booking of that
//!   seller, is live for a confirmed booking and cancelled otherwise; one per booking.
//!
//! Those are the invariants of the chaos drill, checked by the same checker
//! (`wayfare_drill::check`) over what `wayfare_drill::HttpObserver` reads from the API and
//! what the fakes list at `GET /_fake/ledger`.
//!
//! - every confirmed booking has at least one `confirmed` email in `outbox.log` and no
//!   failed booking has one; duplicates (the mailer is at-least-once) are counted and
//!   reported, not failed.
//!
//! The run is seeded (`BOOKING_CRASH_SEED`, default below) so a failure can be replayed,
//! although thread scheduling still varies between runs. `BOOKING_CRASH_CYCLES`
//! sets the number of kill -9 cycles (default 8) and `BOOKING_CRASH_BOOKINGS` (default 40) the new
//! bookings per cycle; the `#[ignore]`d long variant runs 25 cycles of 50
//! (`scripts/reliability.sh`).

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
use wayfare::domain::saga::SagaState;
use wayfare_drill::fakes::ledgers;
use wayfare_drill::{check, BookingSeen, HttpObserver, KeySeen, Observations};

mod common;
mod fakes;
use common::{poll_until, wait_until};

/// Demo accounts the bookings are spread over.
const ACCOUNTS: u64 = 20;
/// Wallet credit of each demo account, in minor units.
const CREDIT: i64 = 100_000;
/// Kill-and-restart cycles.
const CYCLES: usize = 8;

/// New bookings fired per cycle.
const BOOKINGS_PER_CYCLE: usize = 40;
/// Cycles and bookings per cycle of the long variant.
const LONG_CYCLES: usize = 25;
const LONG_BOOKINGS_PER_CYCLE: usize = 50;

/// A positive number from the environment variable `name`, else `default`; a value that is
/// set but not a number in 1..=1000 stops the test naming it.
fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .unwrap_or_else(|| panic!("{name}={v:?}: expected a number in 1..=1000")),
    }
}
/// Earlier keys resubmitted, and earlier bookings cancelled, at the start of a cycle.
const RESUBMITS_PER_CYCLE: usize = 8;
const LATE_CANCELS_PER_CYCLE: usize = 6;
/// The operator token the server runs with; the checks act as operator.
const OPERATOR_TOKEN: &str = "crash-test-operator-token-0123";
/// Bound of every HTTP request, so a hung server cannot hang the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of the first search after a start (the sellers answer within 300 ms).
const SEARCH_WITHIN: Duration = Duration::from_secs(10);
/// Bound of the final settling (bookings terminal, emails written).
const SETTLE_WITHIN: Duration = Duration::from_secs(60);
/// Bound of one server start, and start-ups tried before giving up.
const START_WITHIN: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 6;
/// Bound of everything after the last start (resubmits, settling, checks), so a server
/// that stops answering fails the test in bounded time instead of hanging it.
const CHECKS_WITHIN: Duration = Duration::from_secs(75);
/// Default seed of the plan (card tokens, points, accounts, kill delays).
const DEFAULT_SEED: u64 = 0x5EED_2026;

/// Quick saga retries against slow, lossy partners: a 1 s step timeout against seller
/// calls of 150 ms and gateway calls of 5 ms, plus replies dropped after acting, means
/// reconciliation by key happens, and kills land mid-step. `{alpha}`, `{bravo}`,
/// `{charlie}` and `{gateway}` are the fakes' URLs.
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
kind = "http"
[payments.http]
base_url = "{gateway}"
request_timeout_ms = 1000

[[sellers]]
name = "alpha"
kind = "http"
verticals = ["hotel"]
[sellers.http]
base_url = "{alpha}"

[[sellers]]
name = "bravo"
kind = "http"
verticals = ["hotel"]
[sellers.http]
base_url = "{bravo}"

[[sellers]]
name = "charlie"
kind = "http"
verticals = ["hotel"]
[sellers.http]
base_url = "{charlie}"
"#;

/// The fake sellers: name, catalog seed, reject rate, drop rate (act, never answer).
/// Every seller also fails [`ERROR_RATE`] of calls with a 503 and hangs [`HANG_RATE`] of
/// them, both before acting.
const SELLERS: [(&str, &str, &str, &str); 3] = [
    ("alpha", "1", "0.1", "0.05"),
    ("bravo", "2", "0.05", "0.1"),
    ("charlie", "3", "0", "0.05"),
];
/// Share of gateway calls that act and never answer.
const GATEWAY_DROP_RATE: &str = "0.03";
/// Share of every partner's calls answered 503, and hung, before acting.
const ERROR_RATE: &str = "0.05";
const HANG_RATE: &str = "0.02";

/// The partners, running as their own processes for the whole test.
struct Partners {
    sellers: Vec<(String, fakes::Process)>,
    gateway: fakes::Process,
}

/// Starts the fakes with their journals and logs in `dir`, and writes `dir/config.toml`
/// pointing wayfare at them.
fn start_partners(dir: &Path, seed: u64) -> Partners {
    let mut config = CONFIG.to_owned();
    let mut sellers = Vec::new();
    for (i, (name, catalog_seed, reject, drop)) in SELLERS.into_iter().enumerate() {
        let fault_seed = (seed + i as u64).to_string();
        let fake = fakes::fake_seller(
            &dir.join(format!("seller-{name}")),
            &dir.join(format!("seller-{name}.log")),
            &[
                "--name",
                name,
                "--seed",
                catalog_seed,
                "--coverage",
                "1.0",
                "--latency-ms",
                "150",
                "--reject-rate",
                reject,
                "--drop-rate",
                drop,
                "--error-rate",
                ERROR_RATE,
                "--hang-rate",
                HANG_RATE,
                "--fault-seed",
                &fault_seed,
            ],
        );
        config = config.replace(&format!("{{{name}}}"), &fake.url());
        sellers.push((name.to_owned(), fake));
    }
    let fault_seed = seed.to_string();
    let gateway = fakes::fake_gateway(
        &dir.join("gateway"),
        &dir.join("gateway.log"),
        &[
            "--latency-ms",
            "5",
            "--drop-rate",
            GATEWAY_DROP_RATE,
            "--error-rate",
            ERROR_RATE,
            "--hang-rate",
            HANG_RATE,
            "--seed",
            &fault_seed,
        ],
    );
    config = config.replace("{gateway}", &gateway.url());
    std::fs::write(dir.join("config.toml"), config).unwrap();
    Partners { sellers, gateway }
}

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
    wait_until(
        SEARCH_WITHIN,
        format_args!("{base} returns Lisbon offers"),
        async || {
            let body = http
                .get(&url)
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()?;
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
            (!offers.is_empty()).then_some(offers)
        },
    )
    .await
}

/// A parking reason saying a step failed on every attempt of its budget (the saga's
/// `"{step} failed after {n} attempts: {reason}"`).
fn retry_budget_exhausted(reason: &str) -> bool {
    reason
        .split_once(" failed after ")
        .is_some_and(|(_, rest)| rest.contains(" attempts: "))
}

/// What the test knows about one idempotency key.
#[derive(Debug, Clone)]
struct KeyState {
    account: String,
    body: Value,
    /// The booking id, once a reply carried it (the first, if there were several).
    id: Option<String>,
    /// Every booking id a reply carried (more than one is a double booking).
    ids: BTreeSet<String>,
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

/// Records a reply's booking id for its key; a key that maps to two ids is a double
/// booking (found by the checker's `one_booking_per_key`).
fn record(keys: &mut BTreeMap<String, KeyState>, reply: &Reply) {
    let (key, Some((status, body))) = reply else {
        return;
    };
    if !matches!(status, 200 | 202) {
        return;
    }
    let id = body["id"].as_str().expect("booking id").to_owned();
    let known = keys.get_mut(key).expect("planned key");
    known.id.get_or_insert_with(|| id.clone());
    known.ids.insert(id);
}

/// Emails in the outbox, counted by (booking id, kind).
type Emails = HashMap<(String, String), usize>;

/// The emails `outbox.log` holds, and how many of its lines are torn.
fn read_outbox(path: &Path) -> (Emails, usize) {
    let mut emails = Emails::new();
    let mut torn_lines = 0;
    let log = std::fs::read_to_string(path).unwrap_or_default();
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
    (emails, torn_lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_survive_repeated_kill_9() {
    let cycles = env_count("BOOKING_CRASH_CYCLES", CYCLES);
    let per_cycle = env_count("BOOKING_CRASH_BOOKINGS", BOOKINGS_PER_CYCLE);
    run(cycles, per_cycle).await;
}

/// The long version: at least 20 kills over at least 1,000 bookings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long (minutes): run by scripts/reliability.sh"]
async fn bookings_survive_repeated_kill_9_long() {
    run(LONG_CYCLES, LONG_BOOKINGS_PER_CYCLE).await;
}

async fn run(cycles: usize, per_cycle: usize) {
    let started = Instant::now();
    let seed = std::env::var("BOOKING_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut dir = tempfile::tempdir().unwrap();
    // Kept unless the test passes, with every server's log, for a post-mortem.
    dir.disable_cleanup(true);
    let partners = start_partners(dir.path(), seed);
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

    for cycle in 0..cycles {
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
        for id in ids.iter().take(per_cycle) {
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
        for i in 0..per_cycle {
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
                    ids: BTreeSet::new(),
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
                        // A seeded random moment into the saga: part of the scenario.
                        tokio::time::sleep(after).await;
                        let _ = tx.send(post_cancel(&http, &base, &id).await);
                    }
                    _ => drop(tx),
                }
                (key, reply)
            }));
            cancels.push(tokio::spawn(async move { rx.await.ok().flatten() }));
        }

        // The kill lands at a seeded random moment of the burst: part of the scenario,
        // not a wait for some state.
        let delay = Duration::from_millis(rng.gen_range(50..=600));
        tokio::time::sleep(delay).await;
        server.kill();
        kills += 1;

        for task in bookings {
            let reply = tokio::time::timeout(REQUEST_TIMEOUT * 2, task)
                .await
                .expect("request bounded")
                .expect("request task");
            record(&mut keys, &reply);
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
    let checks_end = Instant::now() + CHECKS_WITHIN;
    let base = server.base.clone();
    let mut observer = HttpObserver::new(http.clone(), base.clone(), checks_end);
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
    for chunk in all.chunks(per_cycle) {
        let replies = join_all(chunk.iter().map(|(key, body, known)| {
            let (http, base) = (&http, &base);
            async move {
                let mut last = None;
                // Bounded retries of what the API says is transient (503, 409 while the
                // saga is being recovered); the pause is a retry backoff, not a wait for
                // some state.
                for _ in 0..20 {
                    if Instant::now() > checks_end {
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
            record(&mut keys, &(key, reply));
        }
    }

    // Settle: every booking terminal. The last view of each readable booking is kept,
    // settled or not, so the checker can name what did not settle and in what state.
    let ids: Vec<String> = keys.values().filter_map(|k| k.id.clone()).collect();
    let settle_started = Instant::now();
    let settle_within = SETTLE_WITHIN.min(checks_end.saturating_duration_since(settle_started));
    let mut last: HashMap<String, BookingSeen> = HashMap::new();
    let all_settled = poll_until(settle_within, async || {
        for id in &ids {
            if last.get(id).is_some_and(BookingSeen::is_settled) {
                continue;
            }
            if let Some(b) = observer.booking(id).await {
                last.insert(id.clone(), b);
            }
        }
        ids.iter()
            .all(|id| last.get(id).is_some_and(BookingSeen::is_settled))
            .then_some(())
    })
    .await;
    let finals: HashMap<&String, &BookingSeen> =
        last.iter().filter(|(_, b)| b.is_settled()).collect();
    println!(
        "settled {} of {} bookings within {:.1} s of the resubmits{}",
        finals.len(),
        ids.len(),
        settle_started.elapsed().as_secs_f64(),
        if all_settled.is_some() {
            ""
        } else {
            " (gave up waiting)"
        }
    );

    // The drill's invariants: sagas settle, one booking per key (also as each account
    // lists them), balances are ledgers and match the bookings' final states, and the
    // partners' own books agree with the bookings.
    let payments = match ledgers::fetch_gateway(&http, &partners.gateway.url()).await {
        Ok(ledger) => ledger.seen().unwrap_or_else(|e| panic!("{e}")),
        Err(e) => panic!("the gateway's ledger: {e}"),
    };
    let mut sellers_seen = Vec::new();
    for (name, fake) in &partners.sellers {
        match ledgers::fetch_seller(&http, &fake.url()).await {
            Ok(ledger) => sellers_seen.push(ledger.seen(name)),
            Err(e) => panic!("seller {name}'s ledger: {e}"),
        }
    }
    let mut accounts_seen = Vec::new();
    for account in &accounts {
        accounts_seen.push(observer.account(account, Some(CREDIT)).await);
    }
    let observations = Observations {
        accounts: accounts_seen,
        bookings: last.values().cloned().collect(),
        keys: keys
            .iter()
            .map(|(key, k)| KeySeen {
                key: key.clone(),
                account: k.account.clone(),
                ids: k.ids.clone(),
            })
            .collect(),
        payments: Some(payments.clone()),
        sellers: Some(sellers_seen.clone()),
    };
    let violations = check(&observations);
    problems.extend(violations.iter().map(ToString::to_string));
    problems.extend(observer.take_problems());

    // Emails: wait (bounded) until every confirmed booking has its confirmed email.
    let confirmed: Vec<&String> = finals
        .iter()
        .filter(|(_, b)| b.state == SagaState::Confirmed)
        .map(|(id, _)| *id)
        .collect();
    let outbox = data.join("outbox.log");
    let has_all_emails = |emails: &Emails| {
        confirmed
            .iter()
            .all(|id| emails.contains_key(&((*id).clone(), "confirmed".into())))
    };
    let emails_within = checks_end.saturating_duration_since(Instant::now());
    // On a timeout the outbox is read once more and what is missing is reported below.
    let (emails, torn_lines) = poll_until(emails_within, async || {
        let read = read_outbox(&outbox);
        has_all_emails(&read.0).then_some(read)
    })
    .await
    .unwrap_or_else(|| read_outbox(&outbox));
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
        if b.state == SagaState::Failed && email_count(id, "confirmed") > 0 {
            problems.push(format!("failed booking {id} has a confirmed email"));
        }
    }
    let duplicate_emails: usize = emails.values().map(|n| n.saturating_sub(1)).sum();

    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    let mut cancellations: BTreeMap<&str, usize> = BTreeMap::new();
    for b in finals.values() {
        *by_state.entry(b.state.as_str()).or_default() += 1;
        if let Some(c) = &b.cancellation {
            *cancellations.entry(c.state.as_str()).or_default() += 1;
        }
    }
    // No fault injected here makes a compensation impossible (the partners keep their
    // books, and every injected fault is transient or a clean decline), so a parked booking
    // or cancellation is a problem; its reason and history say why.
    let card_of: HashMap<&str, &str> = keys
        .values()
        .filter_map(|k| Some((k.id.as_deref()?, k.body["card_token"].as_str()?)))
        .collect();
    let mut parked = 0;
    // Parked because a step after the pivot or in compensation met injected faults (503s,
    // hangs, dropped replies) on every attempt of its retry budget: the one way the faults
    // injected here can make a compensation impossible. Counted and named, not failed,
    // unless more than a few: each attempt fails with odds of about 1 in 6, so a whole
    // budget failing is rare.
    let mut parked_by_faults = 0;
    for (id, b) in finals.iter() {
        let Some(reason) = b.parked_reason() else {
            continue;
        };
        parked += 1;
        if retry_budget_exhausted(reason) {
            parked_by_faults += 1;
        } else {
            problems.push(format!("booking {id} is parked: {reason}"));
        }
        println!(
            "parked {id} ({}, {} points): {reason} / cancellation {:?}\n    {}",
            card_of.get(id.as_str()).unwrap_or(&"?"),
            b.wallet_points.minor,
            b.cancellation.as_ref().map(|c| c.state.as_str()),
            b.history.join("\n    ")
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
    if parked_by_faults > (ids.len() / 200).max(1) {
        problems.push(format!(
            "{parked_by_faults} bookings parked with their retry budget exhausted by injected \
             faults: more than chance explains"
        ));
    }
    // Lost: an acknowledged booking the server no longer knows, or a partner's effect of
    // no known booking. Doubled: a key answered with two bookings, a reservation or a
    // capture made twice for one booking.
    let lost = keys
        .values()
        .filter_map(|k| k.id.as_ref())
        .filter(|id| !last.contains_key(*id))
        .count()
        + violations
            .iter()
            .filter(|v| v.detail.contains("of no known booking"))
            .count();
    let doubled = keys.values().filter(|k| k.ids.len() > 1).count()
        + violations
            .iter()
            .filter(|v| {
                v.detail.contains("captured") && v.detail.contains("times")
                    || v.detail.contains("reservations for")
            })
            .count();
    let reservations: u64 = sellers_seen.iter().map(|s| s.reservations_made).sum();
    let live = sellers_seen
        .iter()
        .flat_map(|s| &s.reservations)
        .filter(|(_, r)| matches!(r, wayfare::sellers::ReservationStatus::Booked { .. }))
        .count();
    println!(
        "partners: gateway {} authorizations, {} captures, {} voids, {} refunds, \
         {} open; sellers {reservations} reservations ({live} live)",
        payments.ledger.authorizations.len(),
        payments.ledger.captures.len(),
        payments.ledger.voids.len(),
        payments.ledger.refunds.len(),
        payments.open_authorizations.len(),
    );
    println!(
        "figures: {kills} kills, {} bookings, {lost} lost, {doubled} doubled, {parked} parked \
         ({parked_by_faults} by injected faults: retry budget exhausted by 503s, hangs and \
         dropped replies), \
         {} invariant violations",
        ids.len(),
        violations.len()
    );
    if observer.out_of_time() || Instant::now() > checks_end {
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
