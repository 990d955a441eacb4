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
//! The driver is `examples/cluster_drill.rs`; run it with
//! `scripts/cluster.sh -- target/debug/examples/cluster_drill --duration-secs 20` (every
//! address and credential comes from the variables cluster.sh exports; `--help`).
//!
//! Layout: this file holds the arguments, the shared state and the run; `traffic.rs` the
//! load, the kill and restart and the resubmission; `report.rs` the report and its checks.

mod observe;
mod report;
mod traffic;

use observe::*;
use traffic::*;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fakes::ledgers;
use crate::{
    booking_from_json, check, BookingSeen, HttpObserver, KeySeen, Observations, PaymentsSeen,
    SellerSeen, Violation,
};
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

/// Node-kill drill through a load balancer: load, SIGKILL, restart, settle, check.
#[derive(Debug, Parser)]
#[command(name = "cluster_drill", args_override_self = true)]
pub struct Args {
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
    /// What is killed at --kill-at: a wayfare node (restarted at --restart-at), or the
    /// database's primary (`db`: --db-kill-cmd; pg_auto_failover promotes the standby and
    /// rejoins the old primary as the new standby by itself).
    #[arg(long, value_enum, default_value_t = KillTarget::Node)]
    kill_target: KillTarget,
    /// Shell command that SIGKILLs the database primary (scripts/cluster.sh with
    /// CLUSTER_DB=ha exports it), or makes an outage (`$DB_STOP_ALL`).
    #[arg(long, env = "DB_KILL_PRIMARY")]
    db_kill_cmd: Option<String>,
    /// With --kill-target db: a command run at --restart-at (e.g. one starting every
    /// database server again after an outage made by --db-kill-cmd).
    #[arg(long)]
    db_restore_cmd: Option<String>,
    /// With --kill-target db: writes may fail for this long after the kill (the failover
    /// window); a failure later, or writes still failing then, is a violation.
    #[arg(long, default_value_t = 10.0)]
    max_write_outage_secs: f64,
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

impl Args {
    /// Refuses arguments out of their ranges, naming the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.rate > 0.0 && self.rate <= 10_000.0) {
            bail!("--rate must be in (0, 10000]");
        }
        if !(self.duration_secs > 0.0 && self.duration_secs <= 3600.0) {
            bail!("--duration-secs must be in (0, 3600]");
        }
        if !self.no_kill && self.restart_at <= self.kill_at {
            bail!("--restart-at must come after --kill-at");
        }
        if !(0.0..=0.5).contains(&self.booking_share) {
            bail!("--booking-share must be in 0..=0.5");
        }
        if self.kill_target == KillTarget::Db && !self.no_kill && self.db_kill_cmd.is_none() {
            bail!("--kill-target db needs --db-kill-cmd (or DB_KILL_PRIMARY from scripts/cluster.sh with CLUSTER_DB=ha)");
        }
        if !(self.max_write_outage_secs > 0.0 && self.max_write_outage_secs <= 600.0) {
            bail!("--max-write-outage-secs must be in (0, 600]");
        }
        Ok(())
    }
}

/// Runs the drill on its own runtime and returns the number of violations found.
pub fn run_blocking(args: Args) -> anyhow::Result<usize> {
    args.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// What the drill kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KillTarget {
    /// A wayfare node (SIGKILL, then restarted).
    Node,
    /// The database's primary (SIGKILL of its postmaster).
    Db,
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
    /// When the database primary was killed (--kill-target db), and what the command said.
    db_killed_at: Option<(f64, String)>,
    /// When --db-restore-cmd ran, and what it said.
    db_restored_at: Option<(f64, String)>,
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

/// What the run gathered, for the report.
struct Gathered {
    drill: Arc<Drill>,
    chaos: Chaos,
    load_secs: f64,
    load_start_wall: DateTime<Utc>,
    late: u64,
    snapshots: Snapshots,
    cluster_api: bool,
    end_snapshot: Result<Value, String>,
    haproxy: Vec<String>,
    ids: BTreeSet<String>,
    last: HashMap<String, Seen>,
    acked: usize,
    found_unacknowledged: usize,
    created_now: usize,
    problems: Vec<String>,
    partner_problems: Vec<String>,
    keys: Vec<KeySeen>,
    payments: Option<PaymentsSeen>,
    sellers: Vec<SellerSeen>,
    settled: usize,
    checked: Vec<Violation>,
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
    // A node may answer an account read from its views for up to the staleness bound
    // (250 ms, docs/cluster.md) after another node changed the account: the last captures
    // and releases must be past it before balances are compared with ledgers.
    tokio::time::sleep(Duration::from_millis(500)).await;
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

    let late = *late.lock().unwrap();
    let snapshots = std::mem::take(&mut *snapshots.lock().unwrap());
    Ok(report::report(Gathered {
        drill,
        chaos,
        load_secs,
        load_start_wall,
        late,
        snapshots,
        cluster_api,
        end_snapshot,
        haproxy,
        ids,
        last,
        acked,
        found_unacknowledged,
        created_now,
        problems,
        partner_problems,
        keys,
        payments,
        sellers,
        settled,
        checked,
    }))
}
