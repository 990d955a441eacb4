//! Load driver for a wayfare server (or the bare baseline): a closed loop of `--connections`
//! keep-alive HTTP/1.1 connections, or an open loop at a fixed `--rate` whose latencies are
//! measured from each request's *intended* send time when it went out late because every
//! connection was busy, so a stalled server cannot hide its queueing delay (no coordinated
//! omission); a request sent on time is measured from its send, so the client's own timer
//! slack (about 1 ms) is not charged to the server. It only ever connects to the `--target` given.
//!
//! Operations (`--mix name=weight,...`): `account_read` (`GET /v1/accounts/{id}`),
//! `wallet_credit` (`POST /v1/accounts/{id}/wallet/credits`, a fresh `Idempotency-Key`
//! each), `hotel_search`, `flight_search` and `booking` (the HTTP API routes; a
//! server without them answers 404, reported by status). Account ids are the demo ids
//! `AccountId::demo(0..accounts)`.
//!
//! Ends with a table per operation: count, errors by status, req/s, p50/p90/p99/max; and
//! writes the same as JSON with `--json PATH`.
//!
//! Each demo key is sent far past its rate limit (`[limits]`), so load a wayfare started
//! with `WAYFARE__LIMITS__ENABLED=false` (the benchmark scripts do), or the table shows 429s.
//!
//! Run with: cargo run --release --example load -- --target http://127.0.0.1:8080 --duration 10s --connections 64

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use wayfare::domain::access::ApiKey;
use wayfare::domain::account::AccountId;

/// Longest run accepted, so a typo cannot start an all-day load.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most connections accepted.
const MAX_CONNECTIONS: usize = 10_000;
/// Pause of a connection after a failed connect, before its next request.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Largest latency the histograms hold (longer ones are clamped and still counted).
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Parser, Debug)]
#[command(about = "HTTP load driver for wayfare: closed loop or fixed rate, latency histograms")]
struct Args {
    /// Server to load: http://HOST:PORT (plain HTTP only; nothing else is ever contacted).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// How long to send, e.g. 10s, 500ms, 2m (at most 1h).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Connections, each one request at a time. Closed loop unless --rate is given; with
    /// --rate it bounds the requests in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Fixed request rate per second (open loop) instead of a closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Operation weights, e.g. account_read=90,wallet_credit=10.
    #[arg(long, default_value = "account_read=100")]
    mix: String,
    /// Operator token, sent with wallet credits (customers cannot credit themselves);
    /// every other request sends the demo account's own API key, as a customer would.
    #[arg(long, env = "WAYFARE_OPERATOR_TOKEN")]
    operator_token: Option<String>,
    /// Demo account ids to spread requests over (AccountId::demo(0..N)).
    #[arg(long, default_value_t = 10)]
    accounts: u64,
    /// Stop after this many requests in total, even before --duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Per-request timeout; a request past it counts as a `timeout` error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Worker threads of the driver's own runtime (the server shares the machine).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Hide the live progress line.
    #[arg(long)]
    quiet: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` needs a unit: ms, s or m"))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("`{s}` is not a duration"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit `{unit}` (use ms, s or m)")),
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())?;
    if d.is_zero() || d > MAX_DURATION {
        return Err(format!("must be between 1ms and {MAX_DURATION:?}"));
    }
    Ok(d)
}

/// The operations the driver knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    AccountRead,
    WalletCredit,
    HotelSearch,
    FlightSearch,
    Booking,
}

impl Operation {
    const ALL: [Operation; 5] = [
        Operation::AccountRead,
        Operation::WalletCredit,
        Operation::HotelSearch,
        Operation::FlightSearch,
        Operation::Booking,
    ];

    fn name(self) -> &'static str {
        match self {
            Operation::AccountRead => "account_read",
            Operation::WalletCredit => "wallet_credit",
            Operation::HotelSearch => "hotel_search",
            Operation::FlightSearch => "flight_search",
            Operation::Booking => "booking",
        }
    }
}

/// Weighted choice of operations.
#[derive(Debug, Clone)]
struct Mix {
    /// Cumulative weights, in `Operation::ALL` order.
    cumulative: Vec<(u32, Operation)>,
    total: u32,
}

impl Mix {
    /// Whether `op` has a weight in the mix.
    fn includes(&self, op: Operation) -> bool {
        self.cumulative.iter().any(|(_, o)| *o == op)
    }

    fn parse(s: &str) -> anyhow::Result<Mix> {
        let mut cumulative = Vec::new();
        let mut total = 0u32;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry `{part}` is not name=weight"))?;
            let op = Operation::ALL
                .into_iter()
                .find(|o| o.name() == name.trim())
                .with_context(|| {
                    format!(
                        "unknown operation `{name}` (known: {})",
                        Operation::ALL.map(Operation::name).join(", ")
                    )
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("weight of `{name}` is not a whole number"))?;
            if weight > 0 {
                total = total.checked_add(weight).context("mix weights overflow")?;
                cumulative.push((total, op));
            }
        }
        if total == 0 {
            bail!("the mix gives every operation weight 0");
        }
        Ok(Mix { cumulative, total })
    }

    fn pick(&self, rng: &mut SmallRng) -> Operation {
        let x = rng.gen_range(0..self.total);
        self.cumulative
            .iter()
            .find(|(upto, _)| x < *upto)
            .map(|(_, op)| *op)
            .expect("x is below the total")
    }
}

/// Where to connect and what to put in `Host`.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    authority: String,
}

impl Target {
    fn parse(s: &str) -> anyhow::Result<Target> {
        let uri: hyper::Uri = s.parse().with_context(|| format!("bad --target `{s}`"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--target must be a plain http:// URL, got `{s}`");
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            bail!("--target is a server address without a path, got `{s}`");
        }
        let host = uri.host().context("--target has no host")?.to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let authority = uri.authority().context("--target has no host")?.to_string();
        Ok(Target {
            host,
            port,
            authority,
        })
    }
}

/// Per-worker results, merged at the end.
struct Results {
    latency: BTreeMap<Operation, Histogram<u64>>,
    statuses: BTreeMap<Operation, BTreeMap<String, u64>>,
}

impl Results {
    fn new() -> Results {
        Results {
            latency: BTreeMap::new(),
            statuses: BTreeMap::new(),
        }
    }

    fn record(&mut self, op: Operation, outcome: &str, latency: Duration) {
        let h = self.latency.entry(op).or_insert_with(|| {
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
        });
        h.saturating_record((latency.as_micros() as u64).max(1));
        *self
            .statuses
            .entry(op)
            .or_default()
            .entry(outcome.to_owned())
            .or_default() += 1;
    }

    fn merge(&mut self, other: Results) {
        for (op, h) in other.latency {
            match self.latency.get_mut(&op) {
                Some(mine) => mine.add(&h).expect("same bounds"),
                None => {
                    self.latency.insert(op, h);
                }
            }
        }
        for (op, counts) in other.statuses {
            let mine = self.statuses.entry(op).or_default();
            for (k, n) in counts {
                *mine.entry(k).or_default() += n;
            }
        }
    }
}

/// Live counters for the progress line.
#[derive(Default)]
struct Live {
    done: AtomicU64,
    errors: AtomicU64,
}

/// What every worker shares.
struct Plan {
    target: Target,
    mix: Mix,
    accounts: u64,
    operator_token: Option<String>,
    timeout: Duration,
    start: Instant,
    end: Instant,
    /// Open loop: time between intended sends.
    interval: Option<Duration>,
    /// Next request slot (open loop) or request count (closed loop).
    next: AtomicU64,
    max_requests: u64,
    run_id: String,
    live: Live,
    /// The offer bookings take: seller, SKU and price, read from a real search first so
    /// bookings exercise the whole saga instead of failing as "price changed".
    offer: Option<(String, String, i64)>,
}

impl Plan {
    /// Claims the next request; returns when it is meant to be sent, or None when the run
    /// is over.
    fn claim(&self) -> Option<Instant> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        if k >= self.max_requests {
            return None;
        }
        let intended = match self.interval {
            Some(interval) => self.start + interval.mul_f64(k as f64),
            None => Instant::now(),
        };
        (intended < self.end).then_some(intended)
    }
}

fn dates() -> (String, String) {
    let day = chrono::Utc::now().date_naive() + chrono::Days::new(30);
    let next = day + chrono::Days::new(2);
    (day.to_string(), next.to_string())
}

/// Builds one request of `op`.
fn build(
    plan: &Plan,
    op: Operation,
    rng: &mut SmallRng,
    seq: u64,
    worker: usize,
) -> Request<Full<Bytes>> {
    let n = rng.gen_range(0..plan.accounts);
    let account = AccountId::demo(n).0;
    let (check_in, check_out) = dates();
    let key = format!("load-{}-{worker}-{seq}", plan.run_id);
    let (method, path, body) = match op {
        Operation::AccountRead => (Method::GET, format!("/v1/accounts/{account}"), None),
        Operation::WalletCredit => (
            Method::POST,
            format!("/v1/accounts/{account}/wallet/credits"),
            Some(r#"{"amount":{"minor":1,"currency":"EUR"}}"#.to_owned()),
        ),
        Operation::HotelSearch => (
            Method::GET,
            format!(
                "/v1/search/hotels?city=Lisbon&check_in={check_in}&check_out={check_out}&account_id={account}"
            ),
            None,
        ),
        Operation::FlightSearch => (
            Method::GET,
            format!("/v1/search/flights?from=LIS&to=CDG&date={check_in}&account_id={account}"),
            None,
        ),
        Operation::Booking => (
            Method::POST,
            "/v1/bookings".to_owned(),
            Some(
                {
                    let (seller, sku, price) = plan.offer.clone().unwrap_or_else(|| {
                        ("alpha".into(), "hotel:lisbon:h1:double".into(), 20_000)
                    });
                    serde_json::json!({
                        "account_id": account.to_string(),
                        "seller": seller,
                        "sku": sku,
                        "start": check_in,
                        "end": check_out,
                        "wallet_points": {"minor": 0, "currency": "EUR"},
                        "card_token": "tok_approve",
                        "offer_price": {"minor": price, "currency": "EUR"},
                    })
                }
                .to_string(),
            ),
        ),
    };
    let credential = match (op, &plan.operator_token) {
        (Operation::WalletCredit, Some(token)) => token.clone(),
        _ => ApiKey::demo(n).reveal().to_owned(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, &plan.target.authority)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {credential}"));
    if body.is_some() {
        req = req
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key);
    }
    req.body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request parts are valid")
}

/// The cheapest hotel offer for the booking dates, from the server's own search.
async fn first_offer(target: &Target) -> Option<(String, String, i64)> {
    let (check_in, check_out) = dates();
    let url = format!(
        "http://{}/v1/search/hotels?city=Lisbon&check_in={check_in}&check_out={check_out}",
        target.authority
    );
    let body: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
    let o = body["offers"].get(0)?;
    Some((
        o["seller"].as_str()?.to_owned(),
        o["sku"].as_str()?.to_owned(),
        o["price"]["minor"].as_i64()?,
    ))
}

async fn connect(target: &Target) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request on `conn` (reconnecting first if needed) and reads the whole body.
/// Returns the outcome label: the status code, or `connect`, `io`, `timeout`.
async fn send(
    plan: &Plan,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    req: Request<Full<Bytes>>,
) -> String {
    let exchange = async {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = Some(connect(&plan.target).await.map_err(|_| "connect")?);
        }
        let sender = conn.as_mut().expect("connected above");
        sender.ready().await.map_err(|_| "io")?;
        let res = sender.send_request(req).await.map_err(|_| "io")?;
        let status = res.status();
        res.into_body().collect().await.map_err(|_| "io")?;
        Ok::<StatusCode, &'static str>(status)
    };
    match tokio::time::timeout(plan.timeout, exchange).await {
        Ok(Ok(status)) => status.as_u16().to_string(),
        Ok(Err(kind)) => {
            *conn = None;
            kind.to_owned()
        }
        Err(_) => {
            // The connection may still carry the late answer: start a fresh one.
            *conn = None;
            "timeout".to_owned()
        }
    }
}

async fn worker(plan: Arc<Plan>, index: usize) -> Results {
    let mut rng = SmallRng::seed_from_u64(0x5eed ^ index as u64);
    let mut results = Results::new();
    let mut conn = None;
    let mut seq = 0u64;
    while let Some(intended) = plan.claim() {
        // Where latency is measured from. A slot claimed after its time was due while
        // every connection was busy: the wait is the server's doing, so count it (no
        // coordinated omission). A slot claimed early: this connection was idle, and any
        // lateness is the client's timer slack (about 1 ms in tokio), so start at the send.
        let origin = if Instant::now() < intended {
            tokio::time::sleep_until(intended.into()).await;
            Instant::now()
        } else {
            intended
        };
        let op = plan.mix.pick(&mut rng);
        seq += 1;
        let req = build(&plan, op, &mut rng, seq, index);
        let outcome = send(&plan, &mut conn, req).await;
        let latency = origin.elapsed();
        let ok = outcome.starts_with('2');
        results.record(op, &outcome, latency);
        plan.live.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            plan.live.errors.fetch_add(1, Ordering::Relaxed);
        }
        if outcome == "connect" {
            // Nothing listens (the server died or is restarting): do not spin on it.
            tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
        }
    }
    results
}

/// One operation's figures, as printed and written to JSON.
#[derive(Debug, Serialize)]
struct OpReport {
    operation: &'static str,
    count: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    req_per_s: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    mean_us: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    target: String,
    mode: &'static str,
    connections: usize,
    rate: Option<f64>,
    duration_s: f64,
    elapsed_s: f64,
    operations: Vec<OpReport>,
}

fn report(args: &Args, results: &Results, elapsed: Duration) -> Report {
    let secs = elapsed.as_secs_f64();
    let operations = results
        .latency
        .iter()
        .map(|(op, h)| {
            let statuses = &results.statuses[op];
            let ok = statuses
                .iter()
                .filter(|(k, _)| k.starts_with('2'))
                .map(|(_, n)| n)
                .sum();
            let errors = statuses
                .iter()
                .filter(|(k, _)| !k.starts_with('2'))
                .map(|(k, n)| (k.clone(), *n))
                .collect();
            OpReport {
                operation: op.name(),
                count: h.len(),
                ok,
                errors,
                req_per_s: h.len() as f64 / secs,
                p50_us: h.value_at_quantile(0.50),
                p90_us: h.value_at_quantile(0.90),
                p99_us: h.value_at_quantile(0.99),
                p999_us: h.value_at_quantile(0.999),
                max_us: h.max(),
                mean_us: h.mean(),
            }
        })
        .collect();
    Report {
        target: args.target.clone(),
        mode: if args.rate.is_some() {
            "fixed_rate"
        } else {
            "closed_loop"
        },
        connections: args.connections,
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        elapsed_s: secs,
        operations,
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn print_table(r: &Report) {
    println!(
        "{} against {}: {} connections{}, {:.1} s",
        r.mode,
        r.target,
        r.connections,
        r.rate
            .map(|x| format!(", {x} req/s intended"))
            .unwrap_or_default(),
        r.elapsed_s
    );
    println!(
        "{:<14} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9}  errors by status",
        "operation", "count", "ok", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for o in &r.operations {
        let errors = if o.errors.is_empty() {
            "-".to_owned()
        } else {
            o.errors
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{:<14} {:>9} {:>9} {:>10.0} {:>9} {:>9} {:>9} {:>9}  {errors}",
            o.operation,
            o.count,
            o.ok,
            o.req_per_s,
            ms(o.p50_us),
            ms(o.p90_us),
            ms(o.p99_us),
            ms(o.max_us)
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = Target::parse(&args.target)?;
    let mix = Mix::parse(&args.mix)?;
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        bail!("--connections must be between 1 and {MAX_CONNECTIONS}");
    }
    if args.accounts == 0 {
        bail!("--accounts must be at least 1");
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let interval = match args.rate {
        Some(r) if !(r.is_finite() && r > 0.0 && r <= 1_000_000.0) => {
            bail!("--rate must be between 0 and 1,000,000 requests per second")
        }
        Some(r) => Some(Duration::from_secs_f64(1.0 / r)),
        None => None,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Fail fast, before any load, when nothing listens at the target.
        connect(&target)
            .await
            .with_context(|| format!("cannot connect to {}", args.target))?;

        let offer = if mix.includes(Operation::Booking) {
            first_offer(&target).await
        } else {
            None
        };
        let start = Instant::now();
        let plan = Arc::new(Plan {
            offer,
            target,
            mix,
            accounts: args.accounts,
            operator_token: args.operator_token.clone(),
            timeout: args.timeout,
            start,
            end: start + args.duration,
            interval,
            next: AtomicU64::new(0),
            max_requests: args.requests.unwrap_or(u64::MAX),
            run_id: format!("{:x}", rand::random::<u64>()),
            live: Live::default(),
        });
        let workers: Vec<_> = (0..args.connections)
            .map(|i| tokio::spawn(worker(plan.clone(), i)))
            .collect();

        let bar = if args.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(args.duration.as_millis() as u64)
        };
        bar.set_style(
            ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let ticker = {
            let plan = plan.clone();
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let secs = plan.start.elapsed().as_secs_f64().max(1e-3);
                    let done = plan.live.done.load(Ordering::Relaxed);
                    bar.set_position(plan.start.elapsed().as_millis() as u64);
                    bar.set_message(format!(
                        "{done} requests, {:.0} req/s, {} errors",
                        done as f64 / secs,
                        plan.live.errors.load(Ordering::Relaxed)
                    ));
                }
            })
        };
        let mut results = Results::new();
        for w in workers {
            results.merge(w.await?);
        }
        let elapsed = start.elapsed();
        ticker.abort();
        bar.finish_and_clear();

        let report = report(&args, &results, elapsed);
        print_table(&report);
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    })
}
