//! Node-kill drill of a wayfare cluster behind HAProxy (`scripts/cluster.sh`; run it with
//! `scripts/cluster-drill.sh`). Drives a fixed-rate mixed load through the front URL —
//! bookings (each with its own `Idempotency-Key`), hotel searches and account reads, as the
//! demo customers — SIGKILLs one node (its pid from `$NODE_PIDS/node-N.pid`) at a given
//! second, restarts it later with `$RESTART_NODE N`, resubmits every booking key (a key whose
//! reply was lost learns its booking, or creates it now), waits for every booking to be
//! terminal, then reports and checks:
//!
//! - requests by kind and by the node that answered (HAProxy's `X-Served-By`), latencies;
//! - client-visible failures: transport errors and non-2xx answers other than the expected
//!   business refusals (409 insufficient points / wallet conflict), with examples;
//! - sagas taken over: bookings started before the kill and unfinished at it (from their
//!   history), the killed node's `sagas_held` in the last `/v1/system/cluster` snapshot
//!   before the kill, and how long after the kill the last of them finished;
//! - lost and doubled: one booking per key; at the fake sellers (`GET /_fake/ledger`) one
//!   reservation per confirmed booking and none without a booking; at the fake gateway no
//!   capture without a confirmed booking, one per confirmed booking (`wayfare_drill::check`);
//! - parked sagas (`needs_attention`): each is a violation (no fault is injected here);
//! - wallets: every demo account's balance equals its ledger's sum and what its bookings imply.
//!
//! Exits non-zero on any violation. With `--allow-outage` (the one-node sled plumbing check,
//! where killing the only node is an outage), failures between the kill and the node's
//! return are reported but not violations.
//!
//! Run: scripts/cluster.sh -- target/debug/examples/cluster_drill --duration-secs 20
//! (every address and credential comes from the variables cluster.sh exports; --help).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::{DateTime, Days, NaiveDate, Utc};
use clap::Parser;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use wayfare::domain::access::ApiKey;
use wayfare::domain::account::AccountId;
use wayfare::domain::saga::SagaState;
use wayfare_drill::fakes::ledgers;
use wayfare_drill::{booking_from_json, check, BookingSeen, HttpObserver, KeySeen, Observations};

/// Node-kill drill through a load balancer: load, SIGKILL, restart, settle, check.
#[derive(Debug, Parser)]
#[command(name = "cluster_drill")]
struct Args {
    /// The load balancer's URL (http://127.0.0.1:PORT).
    #[arg(long, env = "FRONT_URL")]
    front: String,
    /// The nodes' URLs, node 1 first (comma-separated).
    #[arg(long, env = "NODE_URLS", value_delimiter = ',')]
    nodes: Vec<String>,
    /// Directory of the nodes' pid files (node-N.pid).
    #[arg(long, env = "NODE_PIDS")]
    pid_dir: Option<PathBuf>,
    /// Command restarting node N (given N as its argument) and returning once it is healthy.
    #[arg(long, env = "RESTART_NODE")]
    restart_cmd: Option<String>,
    /// The operator token (reads every account and booking, the cluster membership).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// The fake sellers' base URLs (comma-separated; each serves GET {url}_fake/ledger).
    #[arg(long, env = "SELLER_URLS", value_delimiter = ',')]
    sellers: Vec<String>,
    /// The fake gateway's base URL.
    #[arg(long, env = "GATEWAY_URL")]
    gateway: String,
    /// Seconds of load.
    #[arg(long, default_value_t = 20.0)]
    duration_secs: f64,
    /// Requests per second, all kinds together (fixed rate, open loop).
    #[arg(long, default_value_t = 120.0)]
    rate: f64,
    /// Share of bookings among the requests; searches take as much, account reads the rest.
    #[arg(long, default_value_t = 0.2)]
    booking_share: f64,
    /// Second of the load at which a node is SIGKILLed.
    #[arg(long, default_value_t = 6.0)]
    kill_at: f64,
    /// Second of the load at which it is restarted (it may be past the load's end).
    #[arg(long, default_value_t = 14.0)]
    restart_at: f64,
    /// Node to kill (1-based); default: the one holding the most sagas in the last
    /// membership snapshot, else the last node.
    #[arg(long)]
    kill_node: Option<usize>,
    /// No kill, no restart: a baseline run.
    #[arg(long)]
    no_kill: bool,
    /// Longest wait for every booking to be terminal after the load, in seconds.
    #[arg(long, default_value_t = 90)]
    settle_secs: u64,
    /// A saga unfinished at the kill that finishes later than this after it is a violation
    /// (the cluster's promise: lease_ms + about 1 s, plus the saga's remaining steps).
    #[arg(long)]
    max_takeover_secs: Option<f64>,
    /// Demo accounts (Person_0..N-1) the load is spread over.
    #[arg(long, env = "DEMO_ACCOUNTS", default_value_t = 20)]
    accounts: u64,
    /// Their seed credit in minor units (the nodes' demo.credit_minor).
    #[arg(long, env = "DEMO_CREDIT", default_value_t = 100_000)]
    credit: i64,
    /// Failures between the kill and the restarted node's health are expected (one node).
    #[arg(long)]
    allow_outage: bool,
    /// A missing /v1/system/cluster (404) is a violation, not a note.
    #[arg(long)]
    require_cluster_api: bool,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// Requests in flight at most; past it a request waits and is counted late.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// HAProxy's stats page (its CSV gives retries and redispatches per node).
    #[arg(long, env = "HAPROXY_STATS_URL")]
    haproxy_stats: Option<String>,
    /// Seed of the plan (kinds, accounts, offers, cards, points).
    #[arg(long, default_value_t = 0x5EED_C1)]
    seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Booking,
    Search,
    AccountRead,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Booking => "booking",
            Kind::Search => "hotel_search",
            Kind::AccountRead => "account_read",
        }
    }
}

/// One request's outcome.
#[derive(Debug, Clone)]
struct Record {
    kind: Kind,
    /// Seconds into the load it was meant to go out.
    at: f64,
    /// The status, or the transport error.
    outcome: Result<u16, String>,
    latency: Duration,
    served_by: Option<String>,
    /// Problem type and detail of a refusal or failure.
    problem: Option<String>,
}

impl Record {
    fn ok(&self) -> bool {
        matches!(self.outcome, Ok(s) if (200..300).contains(&s))
    }

    /// A business refusal the drill expects now and then (not a failure).
    fn refusal(&self) -> bool {
        matches!(self.outcome, Ok(409))
            && self
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("insufficient-points") || p.contains("wallet-conflict"))
    }

    fn label(&self) -> String {
        match &self.outcome {
            Ok(s) => s.to_string(),
            Err(e) => e.clone(),
        }
    }
}

/// What the drill knows of one booking key.
#[derive(Debug, Clone)]
struct KeyState {
    account: String,
    body: Value,
    /// Every booking id a reply carried for it (more than one is a double booking).
    ids: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct Offer {
    seller: String,
    sku: String,
    price: i64,
}

/// What the chaos task did, for the report.
#[derive(Debug, Default)]
struct Chaos {
    victim: Option<usize>,
    pid: Option<i32>,
    killed_at: Option<(f64, DateTime<Utc>)>,
    restarted_at: Option<(f64, DateTime<Utc>)>,
    restart_problem: Option<String>,
    /// The last membership snapshot taken before the kill.
    before_kill: Option<Value>,
}

/// Membership snapshots: (seconds into the load, body or why none).
type Snapshots = Vec<(f64, Result<Value, String>)>;

fn dates() -> (NaiveDate, NaiveDate) {
    let day = Utc::now().date_naive() + Days::new(30);
    (day, day + Days::new(2))
}

struct Drill {
    args: Args,
    http: reqwest::Client,
    operator: reqwest::Client,
    start: Instant,
    records: Mutex<Vec<Record>>,
    keys: Mutex<BTreeMap<String, KeyState>>,
}

impl Drill {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.args.front.trim_end_matches('/'))
    }

    fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Sends one request and records it; returns the reply body (JSON) when it has one.
    async fn send(&self, kind: Kind, at: f64, req: reqwest::RequestBuilder) -> Option<Value> {
        let sent = Instant::now();
        let (outcome, served_by, body) = match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                let served_by = res
                    .headers()
                    .get("x-served-by")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match res.bytes().await {
                    Ok(bytes) => (
                        Ok(status),
                        served_by,
                        serde_json::from_slice::<Value>(&bytes).ok(),
                    ),
                    Err(e) => (Err(format!("body: {}", error_kind(&e))), served_by, None),
                }
            }
            Err(e) => (Err(error_kind(&e)), None, None),
        };
        let problem = match (&outcome, &body) {
            (Ok(s), Some(b)) if !(200..300).contains(s) => Some(format!(
                "{} {}",
                b["type"].as_str().unwrap_or(""),
                b["detail"].as_str().unwrap_or("")
            )),
            _ => None,
        };
        self.records.lock().unwrap().push(Record {
            kind,
            at,
            outcome,
            latency: sent.elapsed(),
            served_by,
            problem,
        });
        body
    }

    async fn book(&self, at: f64, key: String, account: u64, body: Value) {
        let req = self
            .http
            .post(self.url("/v1/bookings"))
            .bearer_auth(ApiKey::demo(account).reveal())
            .header("Idempotency-Key", &key)
            .json(&body);
        let reply = self.send(Kind::Booking, at, req).await;
        self.note_booking(&key, reply.as_ref());
    }

    /// Records the booking id a reply carried for `key`.
    fn note_booking(&self, key: &str, reply: Option<&Value>) {
        if let Some(id) = reply.and_then(|b| b["id"].as_str()) {
            if let Some(k) = self.keys.lock().unwrap().get_mut(key) {
                k.ids.insert(id.to_owned());
            }
        }
    }
}

/// A short name for a transport error (HAProxy or the node went away, or too slow).
fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else if e.is_body() || e.is_decode() {
        "torn body".into()
    } else {
        // The innermost cause says what happened ("connection closed before message
        // completed"); the outer ones repeat the URL.
        let mut s = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            s = inner.to_string();
            source = inner.source();
        }
        format!("transport ({s})")
    }
}

/// The cheapest offers per seller for the drill's dates, from the front (bounded retries).
async fn offers(drill: &Drill) -> anyhow::Result<Vec<Offer>> {
    let (check_in, check_out) = dates();
    let url = drill.url(&format!(
        "/v1/search/hotels?city=Lisbon&check_in={check_in}&check_out={check_out}"
    ));
    let mut last = String::new();
    for _ in 0..50 {
        match drill.operator.get(&url).send().await {
            Ok(res) if res.status().is_success() => {
                let body: Value = res.json().await?;
                let offers: Vec<Offer> = body["offers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| {
                        Some(Offer {
                            seller: o["seller"].as_str()?.to_owned(),
                            sku: o["sku"].as_str()?.to_owned(),
                            price: o["price"]["minor"].as_i64()?,
                        })
                    })
                    .collect();
                if !offers.is_empty() {
                    return Ok(offers);
                }
                last = format!("no offers in {body}");
            }
            Ok(res) => last = format!("status {}", res.status()),
            Err(e) => last = error_kind(&e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no Lisbon hotel offers from {url}: {last}")
}

/// `GET /v1/system/cluster` through the front, as operator.
async fn membership(drill: &Drill) -> Result<Value, String> {
    let res = drill
        .operator
        .get(drill.url("/v1/system/cluster"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map_err(|e| error_kind(&e))?;
    let status = res.status();
    if !status.is_success() {
        return Err(format!("status {}", status.as_u16()));
    }
    res.json().await.map_err(|e| format!("bad JSON: {e}"))
}

/// One line per member: id, heartbeat age, sagas held.
fn members_line(body: &Value) -> String {
    let members = body["members"].as_array().cloned().unwrap_or_default();
    let parts: Vec<String> = members
        .iter()
        .map(|m| {
            format!(
                "{} (heartbeat {} ms, {} sagas)",
                m["id"].as_str().unwrap_or("?"),
                m["heartbeat_age_ms"],
                m["sagas_held"]
            )
        })
        .collect();
    format!(
        "answered by {}: {}",
        body["node"].as_str().unwrap_or("?"),
        parts.join(", ")
    )
}

fn sagas_held(body: &Value, node: &str) -> Option<i64> {
    body["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"].as_str() == Some(node))?["sagas_held"]
        .as_i64()
}

/// The node holding the most sagas in `body`, by number (`node-N`).
fn busiest(body: &Value) -> Option<usize> {
    body["members"]
        .as_array()?
        .iter()
        .filter_map(|m| {
            let n = m["id"].as_str()?.strip_prefix("node-")?.parse().ok()?;
            Some((m["sagas_held"].as_i64().unwrap_or(0), n))
        })
        .max()
        .map(|(_, n)| n)
}

/// The fixed-rate load: one request every 1/rate s, each its own task, at most
/// max_in_flight at once (a request that had to wait for a slot is counted late).
async fn load(drill: Arc<Drill>, offers: Vec<Offer>, late: Arc<Mutex<u64>>) {
    let args = &drill.args;
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let run: u32 = rand::random();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let total = (args.duration_secs * args.rate).floor() as u64;
    let slots = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let (check_in, check_out) = dates();
    for k in 0..total {
        let intended = drill.start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(intended.into()).await;
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                *late.lock().unwrap() += 1;
                slots.clone().acquire_owned().await.expect("never closed")
            }
        };
        let at = (intended - drill.start).as_secs_f64();
        let account = rng.gen_range(0..args.accounts);
        let account_id = AccountId::demo(account).to_string();
        let x: f64 = rng.gen();
        let drill = drill.clone();
        if x < args.booking_share {
            let offer = offers.choose(&mut rng).expect("offers").clone();
            let card = match rng.gen_range(0..10) {
                0..=7 => "tok_approve",
                8 => "tok_decline",
                _ => "tok_fail_capture",
            };
            let points = if rng.gen_bool(0.25) {
                rng.gen_range(100..=2_000).min(offer.price)
            } else {
                0
            };
            let key = format!("cluster-drill-{run:08x}-{k}");
            let body = json!({
                "account_id": account_id,
                "seller": offer.seller,
                "sku": offer.sku,
                "start": check_in,
                "end": check_out,
                "offer_price": {"minor": offer.price, "currency": "EUR"},
                "wallet_points": {"minor": points, "currency": "EUR"},
                "card_token": card,
            });
            drill.keys.lock().unwrap().insert(
                key.clone(),
                KeyState {
                    account: account_id,
                    body: body.clone(),
                    ids: BTreeSet::new(),
                },
            );
            tasks.spawn(async move {
                drill.book(at, key, account, body).await;
                drop(permit);
            });
        } else if x < 2.0 * args.booking_share {
            tasks.spawn(async move {
                let req = drill
                    .http
                    .get(drill.url(&format!(
                        "/v1/search/hotels?city=Lisbon&check_in={check_in}&check_out={check_out}&account_id={account_id}"
                    )))
                    .bearer_auth(ApiKey::demo(account).reveal());
                drill.send(Kind::Search, at, req).await;
                drop(permit);
            });
        } else {
            tasks.spawn(async move {
                let req = drill
                    .http
                    .get(drill.url(&format!("/v1/accounts/{account_id}")))
                    .bearer_auth(ApiKey::demo(account).reveal());
                drill.send(Kind::AccountRead, at, req).await;
                drop(permit);
            });
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Kills the victim at kill_at and restarts it at restart_at.
async fn chaos(drill: Arc<Drill>, snapshots: Arc<Mutex<Snapshots>>) -> Chaos {
    let args = &drill.args;
    let mut out = Chaos::default();
    if args.no_kill {
        return out;
    }
    tokio::time::sleep_until((drill.start + Duration::from_secs_f64(args.kill_at)).into()).await;
    // The membership just before the kill.
    let snapshot = membership(&drill).await;
    snapshots
        .lock()
        .unwrap()
        .push((drill.secs(), snapshot.clone()));
    let before = snapshot.ok().or_else(|| {
        snapshots
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|(_, s)| s.as_ref().ok().cloned())
    });
    let victim = args
        .kill_node
        .or_else(|| before.as_ref().and_then(busiest))
        .unwrap_or(args.nodes.len().max(1));
    out.victim = Some(victim);
    out.before_kill = before;
    let Some(pid_dir) = &args.pid_dir else {
        out.restart_problem = Some("no --pid-dir (NODE_PIDS): nothing killed".into());
        return out;
    };
    let pid_file = pid_dir.join(format!("node-{victim}.pid"));
    let pid: Option<i32> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let Some(pid) = pid.filter(|p| *p > 1) else {
        out.restart_problem = Some(format!("no pid in {}: nothing killed", pid_file.display()));
        return out;
    };
    // SAFETY: kill(2) with a pid read from the cluster's own pid file.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    if rc != 0 {
        out.restart_problem = Some(format!(
            "kill -9 {pid} (node-{victim}): {}",
            std::io::Error::last_os_error()
        ));
        return out;
    }
    out.pid = Some(pid);
    out.killed_at = Some((drill.secs(), Utc::now()));
    println!("{:6.2} s  SIGKILL node-{victim} (pid {pid})", drill.secs());
    tokio::time::sleep_until((drill.start + Duration::from_secs_f64(args.restart_at)).into()).await;
    let Some(cmd) = args.restart_cmd.clone() else {
        out.restart_problem = Some("no --restart-cmd (RESTART_NODE): not restarted".into());
        return out;
    };
    println!("{:6.2} s  restarting node-{victim}", drill.secs());
    let result = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&cmd)
            .arg(victim.to_string())
            .stdout(std::process::Stdio::null())
            .output()
    })
    .await
    .expect("restart task");
    match result {
        Ok(o) if o.status.success() => {
            out.restarted_at = Some((drill.secs(), Utc::now()));
            println!("{:6.2} s  node-{victim} healthy again", drill.secs());
        }
        Ok(o) => {
            out.restart_problem = Some(format!(
                "restart of node-{victim} failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => out.restart_problem = Some(format!("cannot run the restart command: {e}")),
    }
    out
}

/// Membership snapshots once a second until `stop`.
async fn watch(drill: Arc<Drill>, snapshots: Arc<Mutex<Snapshots>>, stop: Instant) {
    while Instant::now() < stop {
        let s = membership(&drill).await;
        snapshots.lock().unwrap().push((drill.secs(), s));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every key once more with its first body: a key whose reply was lost learns its booking
/// (200) or creates it now (202); a key with a known booking must get that one back.
/// Bounded retries of what is transient. Returns problems and how many were recorded but
/// unacknowledged (200 for a key with no id seen yet).
async fn resubmit(drill: &Drill) -> (Vec<String>, usize, usize) {
    let all: Vec<(String, Value, bool, u64)> = drill
        .keys
        .lock()
        .unwrap()
        .iter()
        .map(|(k, s)| {
            let n = (0..drill.args.accounts)
                .find(|n| AccountId::demo(*n).to_string() == s.account)
                .unwrap_or(0);
            (k.clone(), s.body.clone(), !s.ids.is_empty(), n)
        })
        .collect();
    let mut problems = Vec::new();
    let mut found_unacknowledged = 0;
    let mut created_now = 0;
    for chunk in all.chunks(32) {
        let replies = futures_util::future::join_all(chunk.iter().map(
            |(key, body, known, account)| async move {
                let mut last = String::new();
                for _ in 0..20 {
                    let res = drill
                        .http
                        .post(drill.url("/v1/bookings"))
                        .bearer_auth(ApiKey::demo(*account).reveal())
                        .header("Idempotency-Key", key)
                        .json(body)
                        .send()
                        .await;
                    match res {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            if status == 200 || status == 202 {
                                return (key, *known, Ok((status, v)));
                            }
                            last = format!("{status}: {v}");
                            if status == 409 && !v.to_string().contains("recover") {
                                // A refusal for good (e.g. insufficient points): no id.
                                return (key, *known, Err(last));
                            }
                        }
                        Err(e) => last = error_kind(&e),
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                (key, *known, Err(last))
            },
        ))
        .await;
        for (key, known, reply) in replies {
            match reply {
                Ok((status, body)) => {
                    match (status, known) {
                        (200, false) => found_unacknowledged += 1,
                        (202, true) => problems.push(format!(
                            "resubmitting {key}: a new booking (202) although one was acknowledged"
                        )),
                        (202, false) => created_now += 1,
                        _ => {}
                    }
                    drill.note_booking(key, Some(&body));
                }
                Err(last) if known => problems.push(format!(
                    "resubmitting {key} (booking acknowledged before): {last}"
                )),
                // Never created (refused for good, e.g. insufficient points): nothing to settle.
                Err(_) => {}
            }
        }
    }
    (problems, found_unacknowledged, created_now)
}

/// A booking as last read: the checker's view and its history's times.
struct Seen {
    booking: BookingSeen,
    created: Option<DateTime<Utc>>,
    /// When its last history entry was written (its end, once settled).
    last_at: Option<DateTime<Utc>>,
}

fn seen_from(body: &Value) -> Result<Seen, String> {
    let booking = booking_from_json(body)?;
    let times: Vec<DateTime<Utc>> = body["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["at"].as_str()?.parse().ok())
        .collect();
    Ok(Seen {
        booking,
        created: times.first().copied(),
        last_at: times.last().copied(),
    })
}

/// Per backend server, from HAProxy's stats CSV: sessions, connection and response
/// errors, retries and redispatches (what HAProxy hid from the clients).
async fn haproxy_counters(http: &reqwest::Client, url: &str) -> Vec<String> {
    let csv = match http.get(format!("{url};csv")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => return vec![format!("stats unreadable: {}", error_kind(&e))],
    };
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| names.iter().position(|n| *n == name);
    let (Some(px), Some(sv), Some(stot), Some(econ), Some(eresp), Some(wretr), Some(wredis)) = (
        col("pxname"),
        col("svname"),
        col("stot"),
        col("econ"),
        col("eresp"),
        col("wretr"),
        col("wredis"),
    ) else {
        return vec![format!("stats CSV without the expected columns: {header}")];
    };
    lines
        .map(|l| l.split(',').collect::<Vec<&str>>())
        .filter(|f| f.get(px) == Some(&"nodes"))
        .map(|f| {
            let v = |i: usize| f.get(i).copied().unwrap_or("?");
            format!(
                "{}: {} sessions, {} connection errors, {} response errors, {} retries, {} redispatches",
                v(sv),
                v(stot),
                v(econ),
                v(eresp),
                v(wretr),
                v(wredis)
            )
        })
        .collect()
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        bail!("--rate must be in (0, 10000]");
    }
    if !(args.duration_secs > 0.0 && args.duration_secs <= 3600.0) {
        bail!("--duration-secs must be in (0, 3600]");
    }
    if !args.no_kill && args.restart_at <= args.kill_at {
        bail!("--restart-at must come after --kill-at");
    }
    if !(0.0..=0.5).contains(&args.booking_share) {
        bail!("--booking-share must be in 0..=0.5");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let violations = rt.block_on(run(args))?;
    if violations > 0 {
        eprintln!("cluster drill: {violations} violation(s)");
        std::process::exit(1);
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<usize> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(args.max_in_flight)
        .build()?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", args.token)
            .parse()
            .context("bad token")?,
    );
    let operator = reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .build()?;
    let mut drill = Drill {
        args,
        http,
        operator,
        start: Instant::now(),
        records: Mutex::new(Vec::new()),
        keys: Mutex::new(BTreeMap::new()),
    };
    let health = drill
        .http
        .get(drill.url("/health"))
        .send()
        .await
        .with_context(|| format!("cannot reach {}", drill.args.front))?;
    if !health.status().is_success() {
        bail!("{}/health answered {}", drill.args.front, health.status());
    }
    let offers = offers(&drill).await?;
    let first = membership(&drill).await;
    let cluster_api = match &first {
        Ok(body) => {
            println!("membership at start: {}", members_line(body));
            true
        }
        Err(e) => {
            println!("membership: GET /v1/system/cluster: {e} (no cluster API on these nodes)");
            false
        }
    };
    println!(
        "load: {} req/s for {} s through {} ({:.0}% bookings, {:.0}% searches, the rest account reads) over {} accounts; {} offers from {:?}",
        drill.args.rate,
        drill.args.duration_secs,
        drill.args.front,
        drill.args.booking_share * 100.0,
        drill.args.booking_share * 100.0,
        drill.args.accounts,
        offers.len(),
        offers.iter().map(|o| o.seller.as_str()).collect::<BTreeSet<_>>()
    );
    if drill.args.no_kill {
        println!("no kill (baseline)");
    } else {
        println!(
            "kill at {} s, restart at {} s",
            drill.args.kill_at, drill.args.restart_at
        );
    }

    drill.start = Instant::now();
    let load_start_wall = Utc::now();
    let drill = Arc::new(drill);
    let snapshots: Arc<Mutex<Snapshots>> = Arc::new(Mutex::new(Vec::new()));
    let late = Arc::new(Mutex::new(0u64));
    let end = drill.start
        + Duration::from_secs_f64(drill.args.duration_secs.max(if drill.args.no_kill {
            0.0
        } else {
            drill.args.restart_at
        }));
    let watcher = tokio::spawn(watch(drill.clone(), snapshots.clone(), end));
    let chaos_task = tokio::spawn(chaos(drill.clone(), snapshots.clone()));
    load(drill.clone(), offers, late.clone()).await;
    let load_secs = drill.secs();
    let chaos = chaos_task.await?;
    watcher.await?;
    println!("{:6.2} s  load done", drill.secs());

    // Every key again, then every booking to a terminal state.
    let acked = drill
        .keys
        .lock()
        .unwrap()
        .values()
        .filter(|k| !k.ids.is_empty())
        .count();
    let (mut problems, found_unacknowledged, created_now) = resubmit(&drill).await;
    let ids: BTreeSet<String> = drill
        .keys
        .lock()
        .unwrap()
        .values()
        .flat_map(|k| k.ids.iter().cloned())
        .collect();
    let settle_deadline = Instant::now() + Duration::from_secs(drill.args.settle_secs);
    let mut observer = HttpObserver::new(
        drill.operator.clone(),
        drill.args.front.trim_end_matches('/').to_owned(),
        settle_deadline + Duration::from_secs(60),
    );
    let mut last: HashMap<String, Seen> = HashMap::new();
    let settle_started = Instant::now();
    loop {
        for id in &ids {
            if last.get(id).is_some_and(|s| s.booking.is_settled()) {
                continue;
            }
            if let Some(body) = observer.get_json(&format!("/v1/bookings/{id}")).await {
                match seen_from(&body) {
                    Ok(s) => {
                        last.insert(id.clone(), s);
                    }
                    Err(e) => problems.push(format!("booking {id}: unexpected body ({e})")),
                }
            }
        }
        let settled = ids
            .iter()
            .all(|id| last.get(id).is_some_and(|s| s.booking.is_settled()));
        if settled || Instant::now() > settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let settled = last.values().filter(|s| s.booking.is_settled()).count();
    println!(
        "settled {settled} of {} bookings within {:.1} s after the load",
        ids.len(),
        settle_started.elapsed().as_secs_f64()
    );

    // The partners' books and every demo account.
    let mut partner_problems = Vec::new();
    let payments = match ledgers::fetch_gateway(&drill.operator, &drill.args.gateway).await {
        Ok(l) => match l.seen() {
            Ok(p) => Some(p),
            Err(e) => {
                partner_problems.push(e);
                None
            }
        },
        Err(e) => {
            partner_problems.push(format!("the gateway's ledger: {e}"));
            None
        }
    };
    let mut sellers = Vec::new();
    for url in &drill.args.sellers {
        let url = if url.ends_with('/') {
            url.clone()
        } else {
            format!("{url}/")
        };
        match ledgers::fetch_seller(&drill.operator, &url).await {
            Ok(l) => sellers.push(l.seen(&l.name)),
            Err(e) => partner_problems.push(format!("seller ledger: {e}")),
        }
    }
    let mut accounts = Vec::new();
    for n in 0..drill.args.accounts {
        accounts.push(
            observer
                .account(&AccountId::demo(n).to_string(), Some(drill.args.credit))
                .await,
        );
    }
    let keys: Vec<KeySeen> = drill
        .keys
        .lock()
        .unwrap()
        .iter()
        .map(|(key, k)| KeySeen {
            key: key.clone(),
            account: k.account.clone(),
            ids: k.ids.clone(),
        })
        .collect();
    let observations = Observations {
        accounts,
        bookings: last.values().map(|s| s.booking.clone()).collect(),
        keys: keys.clone(),
        payments: payments.clone(),
        sellers: (partner_problems.is_empty() && !drill.args.sellers.is_empty())
            .then(|| sellers.clone()),
    };
    let checked = check(&observations);
    problems.extend(observer.take_problems());
    let end_snapshot = membership(&drill).await;
    let haproxy = match &drill.args.haproxy_stats {
        Some(url) => haproxy_counters(&drill.http, url).await,
        None => Vec::new(),
    };

    // ---- report
    let records = drill.records.lock().unwrap().clone();
    let mut violations: Vec<String> = Vec::new();
    println!();
    println!(
        "== requests ({:.1} s of load, {} sent late for want of a slot)",
        load_secs,
        late.lock().unwrap()
    );
    println!(
        "{:<14} {:>7} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "kind", "sent", "ok", "refused", "failed", "p50 ms", "p99 ms", "max ms"
    );
    let mut by_kind: BTreeMap<Kind, Vec<&Record>> = BTreeMap::new();
    for r in &records {
        by_kind.entry(r.kind).or_default().push(r);
    }
    for (kind, rs) in &by_kind {
        let mut lat: Vec<Duration> = rs.iter().map(|r| r.latency).collect();
        lat.sort();
        println!(
            "{:<14} {:>7} {:>7} {:>9} {:>9} {:>8.1} {:>8.1} {:>8.1}",
            kind.name(),
            rs.len(),
            rs.iter().filter(|r| r.ok()).count(),
            rs.iter().filter(|r| r.refusal()).count(),
            rs.iter().filter(|r| !r.ok() && !r.refusal()).count(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
        );
    }
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *by_node
            .entry(r.served_by.clone().unwrap_or_else(|| "(none)".into()))
            .or_default() += 1;
    }
    println!("answered by: {by_node:?}");
    for line in &haproxy {
        println!("haproxy {line}");
    }

    // Failures: in the outage window (allowed with --allow-outage) or not.
    let kill_s = chaos.killed_at.map(|(s, _)| s);
    let back_s = chaos.restarted_at.map(|(s, _)| s + 1.0);
    let in_outage = |r: &Record| {
        kill_s.is_some_and(|k| {
            // A request sent up to its timeout before the kill can fail with it.
            r.at + timeout.as_secs_f64() >= k && back_s.is_none_or(|b| r.at <= b)
        })
    };
    let failures: Vec<&Record> = records.iter().filter(|r| !r.ok() && !r.refusal()).collect();
    let (allowed, counted): (Vec<&Record>, Vec<&Record>) = failures
        .iter()
        .copied()
        .partition(|r| drill.args.allow_outage && in_outage(r));
    let mut by_label: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    for r in &failures {
        *by_label.entry((r.kind, r.label())).or_default() += 1;
    }
    if drill.args.allow_outage {
        println!(
            "client-visible failures: {} ({} in the outage window, allowed in this mode)",
            failures.len(),
            allowed.len()
        );
    } else {
        println!("client-visible failures: {}", failures.len());
    }
    for ((kind, label), n) in &by_label {
        println!("  {:<14} {label}: {n}", kind.name());
    }
    for r in counted.iter().chain(allowed.iter()).take(8) {
        println!(
            "  e.g. {:6.2} s {} -> {} via {} after {:.0} ms {}",
            r.at,
            r.kind.name(),
            r.label(),
            r.served_by.as_deref().unwrap_or("-"),
            r.latency.as_secs_f64() * 1000.0,
            r.problem.as_deref().unwrap_or("")
        );
    }
    if !counted.is_empty() {
        violations.push(format!(
            "{} client-visible failures (transport errors or non-2xx other than business refusals)",
            counted.len()
        ));
    }
    // Failures per second around the events.
    let mut per_sec: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for r in &records {
        let e = per_sec.entry(r.at as u64).or_default();
        e.0 += 1;
        if !r.ok() && !r.refusal() {
            e.1 += 1;
        }
    }
    let near = |s: u64| {
        [kill_s, chaos.restarted_at.map(|(s, _)| s)]
            .into_iter()
            .flatten()
            .any(|t| (s as f64 - t).abs() <= 3.0)
    };
    let timeline: Vec<String> = per_sec
        .iter()
        .filter(|(s, (_, f))| *f > 0 || near(**s))
        .map(|(s, (n, f))| format!("{s}s {n}/{f}"))
        .collect();
    println!(
        "per second around the kill and restart (sent/failed): {}",
        timeline.join("  ")
    );

    // Kill, take-over.
    println!();
    println!("== kill and take-over");
    if let Some(p) = &chaos.restart_problem {
        violations.push(p.clone());
        println!("{p}");
    }
    if let (Some(victim), Some((kill_s, kill_wall))) = (chaos.victim, chaos.killed_at) {
        let victim_id = format!("node-{victim}");
        println!(
            "killed {victim_id} (pid {}) at {kill_s:.2} s; restarted and healthy at {}",
            chaos.pid.unwrap_or(0),
            chaos
                .restarted_at
                .map(|(s, _)| format!("{s:.2} s"))
                .unwrap_or_else(|| "(never)".into())
        );
        match &chaos.before_kill {
            Some(b) => println!(
                "just before the kill: {}; {victim_id} held {} sagas",
                members_line(b),
                sagas_held(b, &victim_id)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into())
            ),
            None if cluster_api => println!("no membership snapshot before the kill"),
            None => {}
        }
        // Bookings that had started and were unfinished at the kill (by their history).
        let in_flight: Vec<&Seen> = last
            .values()
            .filter(|s| s.created.is_some_and(|c| c < kill_wall))
            .filter(|s| !s.booking.is_settled() || s.last_at.is_some_and(|t| t > kill_wall))
            .collect();
        let unfinished = in_flight.iter().filter(|s| !s.booking.is_settled()).count();
        // Those finished within a second of the kill were driven by live nodes; the later
        // ones waited for the dead node's lease to run out and were taken over.
        let after_kill = |s: &&Seen| {
            s.last_at
                .map(|t| (t - kill_wall).num_milliseconds() as f64 / 1000.0)
        };
        let mut late: Vec<f64> = in_flight
            .iter()
            .filter(|s| s.booking.is_settled())
            .filter_map(after_kill)
            .filter(|secs| *secs > 1.0)
            .collect();
        late.sort_by(f64::total_cmp);
        let lease = chaos
            .before_kill
            .as_ref()
            .and_then(|b| b["lease_ms"].as_u64())
            .map(|ms| format!(" (lease_ms {ms})"))
            .unwrap_or_default();
        let latest = in_flight
            .iter()
            .filter_map(|s| s.last_at)
            .max()
            .map(|t| (t - kill_wall).num_milliseconds() as f64 / 1000.0);
        println!(
            "bookings unfinished at the kill (cluster-wide): {}; all finished {} after the kill{}",
            in_flight.len(),
            latest
                .map(|s| format!("{s:.2} s"))
                .unwrap_or_else(|| "-".into()),
            if unfinished > 0 {
                format!(" ({unfinished} never did)")
            } else {
                String::new()
            }
        );
        // Finished before the killed node was back: another node took them over. After
        // it: taken over late, or resumed by the restarted node itself (one node, sled).
        let back = chaos
            .restarted_at
            .map(|(_, wall)| (wall - kill_wall).num_milliseconds() as f64 / 1000.0);
        let (taken, after_restart): (Vec<f64>, Vec<f64>) = late
            .iter()
            .partition(|secs| back.is_none_or(|b| **secs < b));
        let span = |v: &[f64]| match (v.first(), v.last()) {
            (Some(a), Some(b)) => format!(" ({a:.2}-{b:.2} s after the kill)"),
            _ => String::new(),
        };
        println!(
            "of those, {} finished within 1 s of the kill (live nodes); {} taken over by \
             another node{lease}{}; {} finished only after the killed node was back{}",
            in_flight.len() - unfinished - late.len(),
            taken.len(),
            span(&taken),
            after_restart.len(),
            span(&after_restart),
        );
        if let (Some(max), Some(latest)) = (drill.args.max_takeover_secs, latest) {
            if latest > max || unfinished > 0 {
                violations.push(format!(
                    "sagas in flight at the kill took {latest:.2} s to finish (more than {max} s)"
                ));
            }
        }
        // Membership after the kill: when the victim dropped out, and whether it came back.
        let snaps = snapshots.lock().unwrap();
        let gone = snaps.iter().find(|(s, body)| {
            *s > kill_s
                && body.as_ref().is_ok_and(|b| {
                    b["members"].as_array().is_some_and(|m| {
                        !m.iter().any(|x| {
                            x["id"].as_str() == Some(victim_id.as_str())
                                && x["heartbeat_age_ms"].as_i64().unwrap_or(i64::MAX) < 2_000
                        })
                    })
                })
        });
        if let Some((s, _)) = gone {
            println!(
                "membership showed {victim_id} gone or its heartbeat older than 2 s {:.1} s after the kill",
                s - kill_s
            );
        }
    }
    match &end_snapshot {
        Ok(b) => println!("membership at the end: {}", members_line(b)),
        Err(e) if drill.args.require_cluster_api => {
            violations.push(format!("GET /v1/system/cluster: {e}"))
        }
        Err(e) => println!("membership at the end: {e}"),
    }
    if drill.args.require_cluster_api {
        if let (Ok(b), Some(v)) = (&end_snapshot, chaos.victim) {
            if chaos.restarted_at.is_some() && sagas_held(b, &format!("node-{v}")).is_none() {
                violations.push(format!("node-{v} is not a member after its restart"));
            }
        }
    }

    // Bookings, partners, invariants.
    println!();
    println!("== bookings and invariants");
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for s in last.values() {
        *by_state.entry(s.booking.state.as_str()).or_default() += 1;
    }
    println!(
        "{} keys, {} bookings {by_state:?}; resubmitting every key: {found_unacknowledged} \
         recorded but unacknowledged, {created_now} created only then",
        keys.len(),
        ids.len()
    );
    let lost = ids.iter().filter(|id| !last.contains_key(*id)).count()
        + checked
            .iter()
            .filter(|v| v.detail.contains("of no known booking"))
            .count();
    let doubled = keys.iter().filter(|k| k.ids.len() > 1).count()
        + checked
            .iter()
            .filter(|v| {
                v.detail.contains("captured") && v.detail.contains("times")
                    || v.detail.contains("reservations for")
            })
            .count();
    let parked: Vec<(&String, &str)> = last
        .iter()
        .filter_map(|(id, s)| Some((id, s.booking.parked_reason()?)))
        .collect();
    if let Some(p) = &payments {
        println!(
            "gateway: {} authorizations, {} captures, {} voids, {} refunds, {} open",
            p.ledger.authorizations.len(),
            p.ledger.captures.len(),
            p.ledger.voids.len(),
            p.ledger.refunds.len(),
            p.open_authorizations.len()
        );
    }
    for s in &sellers {
        let live = s
            .reservations
            .iter()
            .filter(|(_, r)| matches!(r, wayfare::sellers::ReservationStatus::Booked { .. }))
            .count();
        println!(
            "seller {}: {} reservations made, {live} live",
            s.name, s.reservations_made
        );
    }
    let confirmed = by_state
        .get(SagaState::Confirmed.as_str())
        .copied()
        .unwrap_or(0);
    println!(
        "{acked} keys acknowledged during the load; {confirmed} confirmed; lost {lost}, doubled {doubled}, parked {}",
        parked.len()
    );
    for (id, reason) in parked.iter().take(10) {
        println!("  parked {id}: {reason}");
    }
    if !parked.is_empty() {
        violations.push(format!("{} sagas parked (needs_attention)", parked.len()));
    }
    if settled < ids.len() {
        violations.push(format!(
            "{} bookings not terminal within {} s",
            ids.len() - settled,
            drill.args.settle_secs
        ));
    }
    for p in &partner_problems {
        violations.push(format!("partner books unreadable: {p}"));
    }
    let mut by_invariant: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for v in &checked {
        by_invariant
            .entry(v.invariant)
            .or_default()
            .push(v.detail.clone());
    }
    for (invariant, details) in &by_invariant {
        println!("VIOLATED {invariant}: {} cases", details.len());
        for d in details.iter().take(5) {
            println!("  {d}");
        }
        violations.push(format!("{invariant}: {} cases", details.len()));
    }
    if checked.is_empty() {
        println!(
            "invariants hold: one booking per key, reservations and captures match bookings, \
             every balance is its ledger ({} accounts)",
            drill.args.accounts
        );
    }
    for p in problems.iter().take(10) {
        println!("problem: {p}");
    }
    if !problems.is_empty() {
        violations.push(format!(
            "{} reads or resubmits failed for good",
            problems.len()
        ));
    }
    println!();
    println!(
        "load started {load_start_wall}; seed {:#x}",
        drill.args.seed
    );
    if violations.is_empty() {
        println!("RESULT: no violations");
    } else {
        println!("RESULT: {} violation(s):", violations.len());
        for v in &violations {
            println!("  - {v}");
        }
    }
    Ok(violations.len())
}
