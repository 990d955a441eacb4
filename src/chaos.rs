//! The chaos drill: drive bookings, cancellations, searches and wallet credits through the
//! embedded [`Runtime`] while `[faults]` makes actors panic, store writes fail and sellers
//! and the payment gateway fail, hang or answer garbage; stop the runtime while sagas are
//! in flight and start it again on the same data directory (they resume); resubmit every
//! booking key; let every booking settle; then check what must hold whatever went wrong:
//!
//! - **balances are ledgers**: every wallet balance is the sum of its ledger entries, holds
//!   nothing once its bookings have settled, and matches what those bookings imply (credits
//!   minus points spent by confirmed bookings plus points restored by cancellations);
//! - **no capture without confirmation**: every card capture belongs to a booking that is
//!   confirmed, or was refunded when it was cancelled (in full when it failed); a
//!   confirmed booking with a card part is captured exactly once; no authorization of a
//!   settled booking is left open;
//! - **nothing confirmed twice**: one booking per client idempotency key (before and after
//!   the restart, and as each account lists them); at each seller, at most one reservation
//!   per booking, none under a key no booking made, a live one for every confirmed booking
//!   and none for a failed or cancelled one;
//! - **sagas settle**: every booking and cancellation ends `confirmed`, `failed`,
//!   `cancelled` or `needs_attention` (with a reason).
//!
//! The sellers and the gateway are [`SimulatedSeller`]s and a [`SimulatedGateway`] held by
//! the drill ([`ChaosWorld`]), outside the runtime, so they outlive its restart like real
//! ones would and their books can be read afterwards. The checker ([`check`]) is a plain
//! function of what was observed ([`Observations`]), so tests can plant violations in it.
//!
//! The plan (which operations, accounts, cards, dates) is seeded; fault dice and thread
//! scheduling are not, so two runs with one seed differ in detail.
//!
//! Used by `examples/chaos.rs` (figures for a person) and `tests/chaos.rs` (a short run
//! that must find no violation).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::actors::seller::AdapterConfig;
use crate::config::FaultsConfig;
use crate::domain::account::{AccountId, NewAccount};
use crate::domain::money::{Currency, Money};
use crate::domain::saga::SagaState;
use crate::domain::wallet::LedgerEntry;
use crate::faults::{ActorKind, FaultCounts};
use crate::payments::{GatewayLedger, SimulatedGateway, SimulatedGatewayConfig};
use crate::sellers::simulated::{catalog_cities, SimulatedSeller, SimulatedSellerConfig};
use crate::sellers::{FlightQuery, HotelQuery, ReservationStatus, Vertical};
use crate::{Booking, BookingOrder, Config, CustomSeller, Error, OfferView, Runtime};

/// Ledger keys of the drill's own wallet credits (saga credits use saga keys).
pub const CREDIT_KEY_PREFIX: &str = "chaos-credit-";
/// Bound of one runtime call made by the drill, so a hung runtime fails the drill instead
/// of hanging it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of each read or resubmission after the restart (faults still fire).
const READ_ATTEMPTS: usize = 10;
/// Pause between those attempts and between settle polls.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Longest wait for the data directory's lock after the first runtime stopped.
const RESTART_WITHIN: Duration = Duration::from_secs(10);
/// Cards the drill pays with, weighted towards approval.
const CARDS: [&str; 9] = [
    "tok_approve",
    "tok_approve",
    "tok_approve",
    "tok_approve",
    "tok_approve",
    "tok_approve",
    "tok_decline",
    "tok_fail_capture",
    "tok_flaky",
];

/// What to drive and for how long.
#[derive(Debug, Clone)]
pub struct ChaosPlan {
    /// Data directory of the runtime (both starts); should be empty.
    pub data_dir: PathBuf,
    /// Longest the traffic phase runs before the restart.
    pub duration: Duration,
    /// Operations (searches, bookings, resubmissions, cancellations, credits) at most.
    pub max_ops: u64,
    /// Clients issuing operations at once.
    pub concurrency: usize,
    /// Accounts the traffic is spread over.
    pub accounts: u64,
    /// Seed of the plan (operations, accounts, cards, dates).
    pub seed: u64,
    /// The faults (`enabled` is forced on).
    pub faults: FaultsConfig,
    /// Longest wait for every booking to settle after the restart.
    pub settle_within: Duration,
}

impl ChaosPlan {
    /// A drill of up to thirty seconds of traffic with [`default_faults`].
    pub fn new(data_dir: PathBuf) -> Self {
        ChaosPlan {
            data_dir,
            duration: Duration::from_secs(30),
            max_ops: 20_000,
            concurrency: 8,
            accounts: 20,
            seed: 0xC4A0_5EED,
            faults: default_faults(),
            settle_within: Duration::from_secs(60),
        }
    }

    /// A short drill (a few seconds of traffic), for tests and `--quick`.
    pub fn quick(data_dir: PathBuf) -> Self {
        ChaosPlan {
            duration: Duration::from_secs(5),
            max_ops: 1_500,
            concurrency: 6,
            accounts: 10,
            settle_within: Duration::from_secs(30),
            ..ChaosPlan::new(data_dir)
        }
    }
}

/// Every kind of fault at a low rate: enough to fire hundreds of times in a drill, low
/// enough that retry budgets usually win (what is left is parked, which is allowed).
pub fn default_faults() -> FaultsConfig {
    FaultsConfig {
        enabled: true,
        account_reply_delay_ms: 0,
        account_panic_rate: 0.0,
        panic_rate: 0.01,
        panic_actors: ActorKind::ALL.to_vec(),
        store_write_delay_ms: 2,
        store_write_failure_rate: 0.02,
        seller_failure_rate: 0.05,
        seller_hang_rate: 0.02,
        seller_garbage_rate: 0.03,
        payment_failure_rate: 0.05,
        payment_hang_rate: 0.02,
    }
}

/// The outside world of the drill: sellers and a payment gateway that outlive runtime
/// restarts and whose books are read by the checks.
#[derive(Debug, Clone)]
pub struct ChaosWorld {
    /// Simulated sellers of hotels and flights.
    pub sellers: Vec<SimulatedSeller>,
    /// The simulated card gateway.
    pub gateway: SimulatedGateway,
}

impl ChaosWorld {
    /// Two sellers with the whole catalog and quick answers, and a quick gateway.
    pub fn new(seed: u64) -> Self {
        let seller = |name: &str, n: u64| {
            SimulatedSeller::new(SimulatedSellerConfig {
                name: name.into(),
                seed: seed.wrapping_add(n),
                latency_ms: (2, 20),
                coverage: 1.0,
                // A business refusal now and then; the faults come from `[faults]`.
                reject_rate: 0.05,
                ..SimulatedSellerConfig::default()
            })
            .expect("valid simulated seller config")
        };
        ChaosWorld {
            sellers: vec![seller("alpha", 1), seller("bravo", 2)],
            gateway: SimulatedGateway::new(SimulatedGatewayConfig {
                latency_min_ms: 1,
                latency_max_ms: 5,
                seed,
                ..SimulatedGatewayConfig::default()
            }),
        }
    }
}

/// The runtime configuration of the drill: short timeouts and backoffs so sagas retry
/// quickly, and restart intensity high enough that injected panics are restarted rather
/// than escalated (the drill is about consistency under crashes, not the intensity limit).
pub fn drill_config(plan: &ChaosPlan) -> Config {
    let mut config = Config::default();
    config.store.data_dir = plan.data_dir.clone();
    config.runtime.arbiters = 2;
    config.accounts.shards = 4;
    config.search.aggregators = 2;
    config.search.deadline_ms = 400;
    config.supervisor.max_restarts = 100_000;
    config.supervisor.backoff_min_ms = 1;
    config.supervisor.backoff_max_ms = 50;
    config.bookings.step_timeout_ms = 500;
    config.bookings.saga.backoff_base_ms = 10;
    config.bookings.saga.backoff_max_ms = 200;
    config.log.level = "warn".into();
    config.faults = FaultsConfig {
        enabled: true,
        ..plan.faults.clone()
    };
    config
}

fn adapter_config() -> AdapterConfig {
    let mut adapter = AdapterConfig {
        call_timeout_ms: 200,
        ..AdapterConfig::default()
    };
    adapter.breaker.open_ms = 300;
    adapter
}

/// Starts a runtime of the drill over `world`, waiting (bounded) for the data directory
/// of a runtime that just stopped to be released.
pub async fn start_runtime(plan: &ChaosPlan, world: &ChaosWorld) -> Result<Runtime, Error> {
    let deadline = Instant::now() + RESTART_WITHIN;
    loop {
        let mut builder =
            Runtime::builder(drill_config(plan)).payment_gateway(Arc::new(world.gateway.clone()));
        for seller in &world.sellers {
            builder = builder.seller(CustomSeller {
                api: Arc::new(seller.clone()),
                verticals: vec![Vertical::Hotel, Vertical::Flight],
                adapter: adapter_config(),
            });
        }
        match builder.start().await {
            Ok(runtime) => return Ok(runtime),
            // sled's file lock is released once the last handle of the old store drops.
            Err(Error::Store(e)) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "Data directory not released yet; retrying.");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Outcomes of one kind of operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpCount {
    /// Issued.
    pub attempted: u64,
    /// Answered with success.
    pub succeeded: u64,
    /// Answered with a business refusal (invalid, conflict, not found, wallet refused).
    pub refused: u64,
    /// Failed for want of an answer (crashed, timed out, overloaded, store error...).
    pub failed: u64,
}

/// What the drill did and found.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// Seed of the plan.
    pub seed: u64,
    /// Operations by kind (`search`, `book`, `resubmit`, `cancel`, `credit`, and after the
    /// restart `resubmit_after_restart`).
    pub ops: BTreeMap<&'static str, OpCount>,
    /// Faults fired, both runtimes together.
    pub faults: FaultCounts,
    /// Bookings by final state.
    pub bookings: BTreeMap<&'static str, usize>,
    /// Cancellation sagas by final state.
    pub cancellations: BTreeMap<&'static str, usize>,
    /// Bookings that had not settled when the settle time ran out.
    pub unsettled: usize,
    /// Parked sagas with their reasons (at most 10 shown).
    pub parked: Vec<(String, String)>,
    /// Saga actor crashes counted by the second runtime's coordinator.
    pub saga_crashes_after_restart: u64,
    /// What the checks found; must be empty.
    pub violations: Vec<Violation>,
    /// The histories of (at most five) bookings named by violations, and what the gateway
    /// and sellers recorded for them.
    pub evidence: Vec<String>,
    /// Seconds of traffic before the restart.
    pub drive_secs: f64,
    /// Seconds from stopping the first runtime to the second one answering.
    pub restart_secs: f64,
    /// Seconds until every booking settled (or the settle time ran out).
    pub settle_secs: f64,
    /// Seconds of the whole drill.
    pub total_secs: f64,
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "chaos drill, seed {:#x}", self.seed)?;
        writeln!(
            f,
            "  {:<24} {:>9} {:>9} {:>9} {:>9}",
            "operation", "attempted", "succeeded", "refused", "failed"
        )?;
        for (kind, n) in &self.ops {
            writeln!(
                f,
                "  {:<24} {:>9} {:>9} {:>9} {:>9}",
                kind, n.attempted, n.succeeded, n.refused, n.failed
            )?;
        }
        writeln!(f, "  faults fired: {} in all", self.faults.total())?;
        for (kind, n) in self.faults.rows() {
            writeln!(f, "    {kind:<22} {n:>7}")?;
        }
        writeln!(f, "  bookings by final state: {:?}", self.bookings)?;
        writeln!(
            f,
            "  cancellations by final state: {:?}",
            self.cancellations
        )?;
        writeln!(
            f,
            "  unsettled: {}, parked: {}, saga crashes after restart: {}",
            self.unsettled,
            self.parked.len(),
            self.saga_crashes_after_restart
        )?;
        for (id, reason) in self.parked.iter().take(10) {
            writeln!(f, "    parked {id}: {reason}")?;
        }
        writeln!(
            f,
            "  time: drive {:.1} s, restart {:.1} s, settle {:.1} s, total {:.1} s",
            self.drive_secs, self.restart_secs, self.settle_secs, self.total_secs
        )?;
        writeln!(f, "  invariant violations: {}", self.violations.len())?;
        for v in self.violations.iter().take(40) {
            writeln!(f, "    {}: {}", v.invariant, v.detail)?;
        }
        for line in &self.evidence {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Runs the whole drill: traffic under faults, a restart, settling, checks. `Err` only when
/// the drill itself cannot run (the runtime does not start); what it finds is in the
/// report's `violations`.
pub async fn run(plan: &ChaosPlan, world: &ChaosWorld) -> Result<ChaosReport, Error> {
    let started = Instant::now();
    let runtime = start_runtime(plan, world).await?;
    let currency = runtime.config().accounts.currency;
    let accounts = open_accounts(&runtime, plan, currency).await?;
    let shared = Shared {
        plan: plan.clone(),
        accounts,
        currency,
        deadline: Instant::now() + plan.duration,
        ops_left: AtomicU64::new(plan.max_ops),
        next_key: AtomicU64::new(0),
        book: Mutex::new(Tally::default()),
    };

    // Traffic, then a stop in the middle of it (sagas in flight are resumed later).
    let drive_started = Instant::now();
    let workers = (0..plan.concurrency.max(1)).map(|i| {
        let rng = SmallRng::seed_from_u64(plan.seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
        worker(&runtime, &shared, rng)
    });
    futures_util::future::join_all(workers).await;
    let drive_secs = drive_started.elapsed().as_secs_f64();
    let faults_before = runtime.fault_counts();
    let restart_started = Instant::now();
    runtime.shutdown().await?;
    drop(runtime);
    let runtime = start_runtime(plan, world).await?;
    let restart_secs = restart_started.elapsed().as_secs_f64();

    // Every key again: unknown outcomes learn their booking, known ones must replay.
    resubmit_all(&runtime, &shared).await;

    let settle_started = Instant::now();
    let ids = shared.known_ids();
    let finals = settle(&runtime, &ids, plan.settle_within).await;
    let settle_secs = settle_started.elapsed().as_secs_f64();

    let observations = observe(&runtime, world, &shared, &finals).await;
    let violations = check(&observations);
    let saga_crashes_after_restart = runtime.saga_counts().await.map_or(0, |c| c.crashes);
    let faults = faults_before.plus(&runtime.fault_counts());
    runtime.shutdown().await?;

    let mut bookings = BTreeMap::new();
    let mut cancellations = BTreeMap::new();
    let mut parked = Vec::new();
    for b in &observations.bookings {
        *bookings.entry(b.state.as_str()).or_default() += 1;
        if let Some(c) = &b.cancellation {
            *cancellations.entry(c.state.as_str()).or_default() += 1;
        }
        if let Some(reason) = b.parked_reason() {
            let what = if b.state == SagaState::NeedsAttention {
                "booking"
            } else {
                "cancellation"
            };
            parked.push((b.id.clone(), format!("{what}: {reason}")));
        }
    }
    let unsettled = observations
        .bookings
        .iter()
        .filter(|b| !b.is_settled())
        .count();
    let evidence = evidence(&observations, &violations);
    let ops = shared
        .book
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .ops;
    Ok(ChaosReport {
        seed: plan.seed,
        ops,
        faults,
        bookings,
        cancellations,
        unsettled,
        parked,
        saga_crashes_after_restart,
        violations,
        evidence,
        drive_secs,
        restart_secs,
        settle_secs,
        total_secs: started.elapsed().as_secs_f64(),
    })
}

/// What is known about the bookings that violations name (at most five).
fn evidence(seen: &Observations, violations: &[Violation]) -> Vec<String> {
    let mut out = Vec::new();
    let named = seen
        .bookings
        .iter()
        .filter(|b| violations.iter().any(|v| v.detail.contains(&b.id)))
        .take(5);
    for b in named {
        out.push(format!(
            "booking {} ({}, {} in points, seller {}):",
            b.id, b.offer_price, b.wallet_points, b.seller
        ));
        out.extend(b.history.iter().map(|h| format!("  {h}")));
        let g = &seen.gateway;
        let mine = |key: &str| key.starts_with(&format!("{}:", b.id));
        for a in g.authorizations.iter().filter(|a| mine(&a.key)) {
            out.push(format!(
                "  gateway: authorized {} as {} ({})",
                a.amount, a.authorization_id, a.key
            ));
        }
        for c in g.captures.iter().filter(|c| mine(&c.key)) {
            out.push(format!(
                "  gateway: captured {} of {} ({})",
                c.amount, c.authorization_id, c.key
            ));
        }
        for v in g.voids.iter().filter(|v| mine(&v.key)) {
            out.push(format!(
                "  gateway: voided {} ({})",
                v.authorization_id, v.key
            ));
        }
        for r in g.refunds.iter().filter(|r| mine(&r.key)) {
            out.push(format!(
                "  gateway: refunded {} of {} ({})",
                r.amount, r.capture_id, r.key
            ));
        }
        for s in &seen.sellers {
            for (key, status) in s.reservations.iter().filter(|(k, _)| *k == b.id) {
                out.push(format!("  seller {}: {key} {status:?}", s.name));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Traffic.

/// A booking order the drill placed, and every booking id its key was answered with.
#[derive(Debug, Clone)]
struct Placed {
    order: BookingOrder,
    ids: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Tally {
    ops: BTreeMap<&'static str, OpCount>,
    placed: Vec<Placed>,
    /// Credits issued: account, key, amount (replayed now and then).
    credits: Vec<(AccountId, String, Money)>,
}

#[derive(Debug)]
struct Shared {
    plan: ChaosPlan,
    accounts: Vec<AccountId>,
    currency: Currency,
    deadline: Instant,
    ops_left: AtomicU64,
    next_key: AtomicU64,
    book: Mutex<Tally>,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Refused,
    Failed,
}

fn outcome_of<T>(result: &Result<T, Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Succeeded,
        Err(Error::Invalid(_) | Error::NotFound { .. } | Error::Conflict(_) | Error::Wallet(_)) => {
            Outcome::Refused
        }
        Err(_) => Outcome::Failed,
    }
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, kind: &'static str, outcome: Outcome) {
        let mut tally = self.tally();
        let n = tally.ops.entry(kind).or_default();
        n.attempted += 1;
        match outcome {
            Outcome::Succeeded => n.succeeded += 1,
            Outcome::Refused => n.refused += 1,
            Outcome::Failed => n.failed += 1,
        }
    }

    /// Takes one operation from the budget; false when it is spent or time is up.
    fn take_op(&self) -> bool {
        Instant::now() < self.deadline
            && self
                .ops_left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
    }

    fn key(&self, prefix: &str) -> String {
        let n = self.next_key.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:x}-{n}", self.plan.seed)
    }

    fn record_booking(&self, index: usize, result: &Result<(Booking, bool), Error>) {
        if let Ok((booking, _)) = result {
            self.tally().placed[index].ids.insert(booking.id.clone());
        }
    }

    /// Every booking id any key was answered with.
    fn known_ids(&self) -> BTreeSet<String> {
        self.tally()
            .placed
            .iter()
            .flat_map(|p| p.ids.iter().cloned())
            .collect()
    }
}

/// A runtime call bounded by [`CALL_TIMEOUT`].
async fn bounded<T>(call: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            actor: "chaos drill call".into(),
            after: CALL_TIMEOUT,
        }),
    }
}

/// Retries `call` (faults keep firing) until it answers other than a failure.
async fn retried<T, F, Fut>(call: F) -> Result<T, Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut last = None;
    for _ in 0..READ_ATTEMPTS {
        let result = bounded(call()).await;
        if outcome_of(&result) != Outcome::Failed {
            return result;
        }
        last = Some(result);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    last.expect("at least one attempt")
}

/// Opens the drill's accounts (or finds them) with a first credit each.
async fn open_accounts(
    runtime: &Runtime,
    plan: &ChaosPlan,
    currency: Currency,
) -> Result<Vec<AccountId>, Error> {
    let mut ids = Vec::new();
    for i in 0..plan.accounts {
        let id = AccountId::demo(1_000_000 + i);
        let new = NewAccount::new(&format!("Chaos_{i}"), &format!("chaos{i}@example.com"))?;
        match retried(|| runtime.create_account_with_id(id, new.clone())).await {
            Ok(_) | Err(Error::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let key = format!("{CREDIT_KEY_PREFIX}opening-{i}");
        retried(|| runtime.credit_wallet(id, &key, Money::new(50_000, currency))).await?;
        ids.push(id);
    }
    Ok(ids)
}

/// One client: a loop of random operations until the budget or the time is spent.
async fn worker(runtime: &Runtime, shared: &Shared, mut rng: SmallRng) {
    let cities: Vec<(&str, &str)> = catalog_cities().collect();
    let mut offers: Vec<(OfferView, NaiveDate, NaiveDate)> = Vec::new();
    let today = Utc::now().date_naive();
    while shared.take_op() {
        let account = *shared.accounts.choose(&mut rng).expect("accounts");
        match rng.gen_range(0..100) {
            0..=39 => {
                let start = today + Days::new(rng.gen_range(20..60));
                let for_account = rng.gen_bool(0.5).then_some(account);
                let (result, end) = if rng.gen_bool(0.7) {
                    let (city, _) = cities.choose(&mut rng).expect("cities");
                    let end = start + Days::new(rng.gen_range(1..4));
                    let query = HotelQuery {
                        city_or_hotel: (*city).to_owned(),
                        check_in: start,
                        check_out: end,
                    };
                    (
                        bounded(runtime.search_hotels(query, for_account)).await,
                        end,
                    )
                } else {
                    let pair: Vec<_> = cities.choose_multiple(&mut rng, 2).collect();
                    let query = FlightQuery {
                        from: pair[0].1.to_owned(),
                        to: pair[1].1.to_owned(),
                        date: start,
                        return_date: None,
                    };
                    (
                        bounded(runtime.search_flights(query, for_account)).await,
                        start,
                    )
                };
                shared.count("search", outcome_of(&result));
                if let Ok(found) = result {
                    if !found.offers.is_empty() {
                        offers = found.offers.into_iter().map(|o| (o, start, end)).collect();
                    }
                }
            }
            40..=64 => {
                let Some((offer, start, end)) = offers.choose(&mut rng).cloned() else {
                    continue;
                };
                let points = if rng.gen_bool(0.4) {
                    rng.gen_range(0..=offer.price.minor / 2)
                } else {
                    0
                };
                let order = BookingOrder {
                    account_id: account,
                    seller: offer.seller.clone(),
                    sku: offer.sku.clone(),
                    start,
                    end,
                    offer_price: offer.price,
                    wallet_points: Money::new(points, shared.currency),
                    card_token: (*CARDS.choose(&mut rng).expect("cards")).to_owned(),
                    idempotency_key: shared.key("chaos-booking-"),
                };
                // Placed before the call: an unanswered key is resubmitted after the restart.
                let index = {
                    let mut tally = shared.tally();
                    tally.placed.push(Placed {
                        order: order.clone(),
                        ids: BTreeSet::new(),
                    });
                    tally.placed.len() - 1
                };
                let result = bounded(runtime.book(order)).await;
                shared.record_booking(index, &result);
                shared.count("book", outcome_of(&result));
            }
            65..=69 => {
                let picked = {
                    let tally = shared.tally();
                    let n = tally.placed.len();
                    (n > 0).then(|| {
                        let i = rng.gen_range(0..n);
                        (i, tally.placed[i].order.clone())
                    })
                };
                let Some((index, order)) = picked else {
                    continue;
                };
                let result = bounded(runtime.book(order)).await;
                shared.record_booking(index, &result);
                shared.count("resubmit", outcome_of(&result));
            }
            70..=79 => {
                let id = {
                    let tally = shared.tally();
                    let known: Vec<&String> =
                        tally.placed.iter().flat_map(|p| p.ids.iter()).collect();
                    known.choose(&mut rng).map(|id| (*id).clone())
                };
                let Some(Ok(id)) = id.map(|id| id.parse()) else {
                    continue;
                };
                let result = bounded(runtime.cancel_booking(id)).await;
                shared.count("cancel", outcome_of(&result));
            }
            _ => {
                let replay = {
                    let tally = shared.tally();
                    (rng.gen_bool(0.15) && !tally.credits.is_empty())
                        .then(|| tally.credits[rng.gen_range(0..tally.credits.len())].clone())
                };
                let (id, key, amount) = match replay {
                    Some(credit) => credit,
                    None => {
                        let amount = Money::new(rng.gen_range(100..=5_000), shared.currency);
                        let credit = (account, shared.key(CREDIT_KEY_PREFIX), amount);
                        shared.tally().credits.push(credit.clone());
                        credit
                    }
                };
                let result = bounded(runtime.credit_wallet(id, &key, amount)).await;
                shared.count("credit", outcome_of(&result));
            }
        }
    }
}

/// Resubmits every placed key (a few at a time), retrying failures.
async fn resubmit_all(runtime: &Runtime, shared: &Shared) {
    let placed: Vec<(usize, BookingOrder)> = shared
        .tally()
        .placed
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.order.clone()))
        .collect();
    for chunk in placed.chunks(16) {
        let calls = chunk.iter().map(|(index, order)| async move {
            let result = retried(|| runtime.book(order.clone())).await;
            shared.record_booking(*index, &result);
            shared.count("resubmit_after_restart", outcome_of(&result));
        });
        futures_util::future::join_all(calls).await;
    }
}

/// Polls every booking until all are settled and no saga actor is running (a confirmed
/// booking may still start its cancellation saga), or `within` has passed; returns the
/// last view of each booking that could be read.
async fn settle(runtime: &Runtime, ids: &BTreeSet<String>, within: Duration) -> Vec<Booking> {
    let deadline = Instant::now() + within;
    let mut last: HashMap<String, Booking> = HashMap::new();
    let settled = |b: Option<&Booking>| b.is_some_and(|b| BookingSeen::from(b).is_settled());
    let mut reread_all = false;
    loop {
        for id in ids {
            if !reread_all && settled(last.get(id)) {
                continue;
            }
            let Ok(booking) = id.parse() else {
                continue;
            };
            if let Ok(b) = bounded(runtime.booking(booking)).await {
                last.insert(id.clone(), b);
            }
        }
        let all_settled = ids.iter().all(|id| settled(last.get(id)));
        if (all_settled && reread_all) || Instant::now() >= deadline {
            break;
        }
        // Once everything looks settled and nothing runs, read everything once more.
        reread_all = all_settled
            && bounded(runtime.saga_counts())
                .await
                .is_ok_and(|c| c.running == 0);
        if !reread_all {
            tokio::time::sleep(RETRY_PAUSE * 2).await;
        }
    }
    last.into_values().collect()
}

/// Reads what the checks need, from the runtime (retrying reads hit by faults) and from
/// the world.
async fn observe(
    runtime: &Runtime,
    world: &ChaosWorld,
    shared: &Shared,
    finals: &[Booking],
) -> Observations {
    let mut accounts = Vec::new();
    for &id in &shared.accounts {
        let Ok(account) = retried(|| runtime.account(id)).await else {
            accounts.push(AccountSeen::unreadable(id));
            continue;
        };
        let mut ledger = Vec::new();
        let mut after = 0;
        let mut complete = false;
        for _ in 0..10_000 {
            let Ok(page) = retried(|| runtime.ledger(id, after, 500)).await else {
                break;
            };
            ledger.extend(page.entries);
            match page.next_after {
                Some(next) => after = next,
                None => {
                    complete = true;
                    break;
                }
            }
        }
        let mut listed = Some(Vec::new());
        let mut after = None;
        while let Some(ids) = listed.as_mut() {
            let Ok(page) = retried(|| runtime.account_bookings(id, after, 500)).await else {
                listed = None;
                break;
            };
            ids.extend(page.bookings.into_iter().map(|b| b.id));
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        accounts.push(AccountSeen {
            id: id.to_string(),
            balance: Some(account.wallet.balance.minor),
            held: account.wallet.held.minor,
            ledger: complete.then_some(ledger),
            listed,
        });
    }
    let keys = shared
        .tally()
        .placed
        .iter()
        .map(|p| KeySeen {
            key: p.order.idempotency_key.clone(),
            account: p.order.account_id.to_string(),
            ids: p.ids.clone(),
        })
        .collect();
    Observations {
        accounts,
        bookings: finals.iter().map(BookingSeen::from).collect(),
        keys,
        gateway: world.gateway.ledger(),
        open_authorizations: world.gateway.open_authorizations(),
        sellers: world
            .sellers
            .iter()
            .map(|s| SellerSeen {
                name: crate::sellers::SellerApi::name(s).to_owned(),
                reservations: s.reservations(),
                reservations_made: s.reservations_made(),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------
// Observations and the checker.

/// Everything the checks look at, read after the bookings settled.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Every account of the drill.
    pub accounts: Vec<AccountSeen>,
    /// The last view of every booking a key was answered with.
    pub bookings: Vec<BookingSeen>,
    /// Every client idempotency key the drill used.
    pub keys: Vec<KeySeen>,
    /// What the gateway really did.
    pub gateway: GatewayLedger,
    /// Authorizations neither captured nor voided.
    pub open_authorizations: Vec<String>,
    /// What each seller holds.
    pub sellers: Vec<SellerSeen>,
}

/// An account as read at the end.
#[derive(Debug, Clone, Default)]
pub struct AccountSeen {
    /// Account id.
    pub id: String,
    /// Wallet balance in minor units; `None` when the account could not be read.
    pub balance: Option<i64>,
    /// Points held, in minor units.
    pub held: i64,
    /// The whole ledger; `None` when it could not be read to the end.
    pub ledger: Option<Vec<LedgerEntry>>,
    /// Booking ids the account lists (at most 100); `None` when unreadable.
    pub listed: Option<Vec<String>>,
}

impl AccountSeen {
    fn unreadable(id: AccountId) -> Self {
        AccountSeen {
            id: id.to_string(),
            ..AccountSeen::default()
        }
    }
}

/// A booking as the checks need it.
#[derive(Debug, Clone)]
pub struct BookingSeen {
    /// Booking (saga) id.
    pub id: String,
    /// Account id.
    pub account: String,
    /// Seller name.
    pub seller: String,
    /// State.
    pub state: SagaState,
    /// Why it is parked.
    pub needs_attention: Option<String>,
    /// Offer price.
    pub offer_price: Money,
    /// Wallet points used.
    pub wallet_points: Money,
    /// Its cancellation saga, if one was started.
    pub cancellation: Option<CancellationSeen>,
    /// Its history and its cancellation's, one line per entry (evidence for reports).
    pub history: Vec<String>,
}

/// A cancellation saga as the checks need it.
#[derive(Debug, Clone)]
pub struct CancellationSeen {
    /// State.
    pub state: SagaState,
    /// Points given back.
    pub points_restored: Option<Money>,
    /// Its last history note (why it is parked, when it is).
    pub last_note: Option<String>,
}

impl From<&Booking> for BookingSeen {
    fn from(b: &Booking) -> Self {
        BookingSeen {
            id: b.id.clone(),
            account: b.account_id.clone(),
            seller: b.seller.clone(),
            state: b.state,
            needs_attention: b.needs_attention.clone(),
            offer_price: b.offer_price,
            wallet_points: b.wallet_points,
            cancellation: b.cancellation.as_ref().map(|c| CancellationSeen {
                state: c.state,
                points_restored: c.points_restored,
                last_note: c.history.last().map(|h| h.note.clone()),
            }),
            history: b
                .history
                .iter()
                .chain(b.cancellation.iter().flat_map(|c| c.history.iter()))
                .map(|h| {
                    let step = h.step.map(|s| format!("{s:?}")).unwrap_or_default();
                    format!(
                        "{} {:<18} {step:<22} {}",
                        h.at.format("%H:%M:%S%.3f"),
                        h.state.as_str(),
                        h.note
                    )
                })
                .collect(),
        }
    }
}

impl BookingSeen {
    /// The booking, and its cancellation if any, have finished or are parked.
    pub fn is_settled(&self) -> bool {
        let booking = matches!(
            self.state,
            SagaState::Confirmed | SagaState::Failed | SagaState::Cancelled
        ) || self.state == SagaState::NeedsAttention
            && self
                .needs_attention
                .as_deref()
                .is_some_and(|r| !r.trim().is_empty());
        let cancellation = self.cancellation.as_ref().is_none_or(|c| {
            matches!(
                c.state,
                SagaState::Cancelled | SagaState::Failed | SagaState::NeedsAttention
            )
        });
        booking && cancellation
    }

    /// Why the booking or its cancellation is parked, if it is.
    pub fn parked_reason(&self) -> Option<&str> {
        if self.state == SagaState::NeedsAttention {
            return Some(self.needs_attention.as_deref().unwrap_or("(no reason)"));
        }
        match &self.cancellation {
            Some(c) if c.state == SagaState::NeedsAttention => Some(
                c.last_note
                    .as_deref()
                    .unwrap_or("cancellation parked (no reason)"),
            ),
            _ => None,
        }
    }

    /// The part paid by card.
    fn card_minor(&self) -> i64 {
        self.offer_price.minor - self.wallet_points.minor
    }
}

/// A client idempotency key and every booking id it was answered with.
#[derive(Debug, Clone, Default)]
pub struct KeySeen {
    /// The key.
    pub key: String,
    /// Its account.
    pub account: String,
    /// Booking ids seen for it (more than one is a double booking).
    pub ids: BTreeSet<String>,
}

/// A seller's book.
#[derive(Debug, Clone, Default)]
pub struct SellerSeen {
    /// Seller name.
    pub name: String,
    /// Every key it has seen, with what became of it.
    pub reservations: Vec<(String, ReservationStatus)>,
    /// Reservations it made, by its own count.
    pub reservations_made: u64,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which invariant (`balance_is_ledger`, `capture_only_when_confirmed`, ...).
    pub invariant: &'static str,
    /// What exactly.
    pub detail: String,
}

/// Checks every invariant of the module docs against `seen`; empty means all hold.
pub fn check(seen: &Observations) -> Vec<Violation> {
    let mut checker = Checker {
        seen,
        bookings: seen.bookings.iter().map(|b| (b.id.as_str(), b)).collect(),
        known_ids: seen
            .keys
            .iter()
            .flat_map(|k| k.ids.iter().map(String::as_str))
            .collect(),
        out: Vec::new(),
    };
    checker.sagas_settle();
    checker.one_booking_per_key();
    checker.balance_is_ledger();
    checker.capture_only_when_confirmed();
    checker.reserved_once();
    checker.out
}

/// The checks, one method per invariant, over one set of observations.
struct Checker<'a> {
    seen: &'a Observations,
    /// Bookings by id.
    bookings: HashMap<&'a str, &'a BookingSeen>,
    /// Every booking id a key was answered with.
    known_ids: BTreeSet<&'a str>,
    out: Vec<Violation>,
}

impl<'a> Checker<'a> {
    fn violation(&mut self, invariant: &'static str, detail: String) {
        self.out.push(Violation { invariant, detail });
    }

    fn booking(&self, id: &str) -> Option<&'a BookingSeen> {
        self.bookings.get(id).copied()
    }

    /// Every booking and cancellation terminal or parked with a reason.
    fn sagas_settle(&mut self) {
        let seen = self.seen;
        for b in &seen.bookings {
            if !b.is_settled() {
                self.violation(
                    "sagas_settle",
                    format!(
                        "booking {} is {} (cancellation {:?})",
                        b.id,
                        b.state.as_str(),
                        b.cancellation.as_ref().map(|c| c.state.as_str())
                    ),
                );
            }
        }
        for id in self.known_ids.clone() {
            if !self.bookings.contains_key(id) {
                self.violation(
                    "sagas_settle",
                    format!("booking {id} could not be read at the end"),
                );
            }
        }
    }

    /// One booking per key, and accounts list exactly their keys' bookings.
    fn one_booking_per_key(&mut self) {
        let seen = self.seen;
        let mut by_account: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for k in &seen.keys {
            if k.ids.len() > 1 {
                self.violation(
                    "one_booking_per_key",
                    format!(
                        "idempotency key {} answered with bookings {:?}",
                        k.key, k.ids
                    ),
                );
            }
            by_account
                .entry(k.account.as_str())
                .or_default()
                .extend(k.ids.iter().map(String::as_str));
        }
        for a in &seen.accounts {
            let Some(listed) = &a.listed else {
                self.violation(
                    "one_booking_per_key",
                    format!("account {} bookings could not be listed", a.id),
                );
                continue;
            };
            // The listing stops at 100; past that it cannot be compared.
            if listed.len() >= 100 {
                continue;
            }
            let listed: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
            let expected = by_account.get(a.id.as_str()).cloned().unwrap_or_default();
            if listed != expected {
                let extra: Vec<&&str> = listed.difference(&expected).collect();
                let missing: Vec<&&str> = expected.difference(&listed).collect();
                self.violation(
                    "one_booking_per_key",
                    format!(
                        "account {} lists bookings no key was answered with {extra:?}, \
                         and lacks {missing:?}",
                        a.id
                    ),
                );
            }
        }
    }

    /// Balances are ledgers, hold nothing once settled, and match what bookings imply.
    fn balance_is_ledger(&mut self) {
        let seen = self.seen;
        for a in &seen.accounts {
            let (Some(balance), Some(ledger)) = (a.balance, &a.ledger) else {
                self.violation(
                    "balance_is_ledger",
                    format!("account {} or its ledger could not be read", a.id),
                );
                continue;
            };
            let sum: i64 = ledger.iter().map(|e| e.delta).sum();
            if sum != balance {
                self.violation(
                    "balance_is_ledger",
                    format!(
                        "account {}: balance {balance} but its {} ledger entries sum to {sum}",
                        a.id,
                        ledger.len()
                    ),
                );
            }
            let mine: Vec<&BookingSeen> =
                seen.bookings.iter().filter(|b| b.account == a.id).collect();
            if mine
                .iter()
                .any(|b| !b.is_settled() || b.parked_reason().is_some())
            {
                continue; // in flight or the operator's to settle
            }
            if a.held != 0 {
                self.violation(
                    "balance_is_ledger",
                    format!(
                        "account {}: {} points held with no booking in flight",
                        a.id, a.held
                    ),
                );
            }
            let mut expected: i64 = ledger
                .iter()
                .filter(|e| e.key.starts_with(CREDIT_KEY_PREFIX))
                .map(|e| e.delta)
                .sum();
            for b in &mine {
                let points = b.wallet_points.minor;
                let restored = b
                    .cancellation
                    .as_ref()
                    .and_then(|c| c.points_restored)
                    .map(|m| m.minor);
                match (b.state, restored) {
                    (SagaState::Confirmed, None) => expected -= points,
                    (SagaState::Confirmed | SagaState::Cancelled, Some(r)) => {
                        expected -= points - r
                    }
                    _ => {}
                }
            }
            if balance != expected {
                self.violation(
                    "balance_is_ledger",
                    format!(
                        "account {}: balance {balance}, but its credits and its bookings' final \
                         states imply {expected}",
                        a.id
                    ),
                );
            }
        }
    }

    /// No capture without confirmation; confirmed bookings are paid once; no
    /// authorization of a settled booking left open.
    fn capture_only_when_confirmed(&mut self) {
        let seen = self.seen;
        let booking_of_key = |key: &str| key.split(':').next().unwrap_or("").to_owned();
        let mut refunded: HashMap<&str, i64> = HashMap::new();
        for r in &seen.gateway.refunds {
            *refunded.entry(r.capture_id.as_str()).or_default() += r.amount.minor;
        }
        let mut captures_of_booking: HashMap<String, usize> = HashMap::new();
        let mut captures_of_auth: HashMap<&str, usize> = HashMap::new();
        for c in &seen.gateway.captures {
            let id = booking_of_key(&c.key);
            *captures_of_booking.entry(id.clone()).or_default() += 1;
            *captures_of_auth
                .entry(c.authorization_id.as_str())
                .or_default() += 1;
            let Some(b) = self.booking(id.as_str()) else {
                self.violation(
                    "capture_only_when_confirmed",
                    format!(
                        "capture {} under key {} of no known booking",
                        c.capture_id, c.key
                    ),
                );
                continue;
            };
            if b.parked_reason().is_some() || !b.is_settled() {
                continue;
            }
            let back = refunded.get(c.capture_id.as_str()).copied().unwrap_or(0);
            let fine = match b.state {
                SagaState::Confirmed => true,
                SagaState::Cancelled => back > 0,
                _ => back >= c.amount.minor,
            };
            if !fine {
                self.violation(
                    "capture_only_when_confirmed",
                    format!(
                        "booking {} is {} but {} was captured ({}) and {back} refunded",
                        b.id,
                        b.state.as_str(),
                        c.amount,
                        c.capture_id
                    ),
                );
            }
        }
        for (auth, n) in &captures_of_auth {
            if *n > 1 {
                self.violation(
                    "capture_only_when_confirmed",
                    format!("authorization {auth} captured {n} times"),
                );
            }
        }
        for b in &seen.bookings {
            if b.state != SagaState::Confirmed || b.parked_reason().is_some() || b.card_minor() <= 0
            {
                continue;
            }
            let n = captures_of_booking.get(&b.id).copied().unwrap_or(0);
            if n != 1 {
                self.violation(
                    "capture_only_when_confirmed",
                    format!(
                        "confirmed booking {} with {} to pay by card has {n} captures",
                        b.id,
                        b.card_minor()
                    ),
                );
            }
        }
        let auth_keys: HashMap<&str, &str> = seen
            .gateway
            .authorizations
            .iter()
            .map(|a| (a.authorization_id.as_str(), a.key.as_str()))
            .collect();
        for auth in &seen.open_authorizations {
            let id = auth_keys.get(auth.as_str()).map(|k| booking_of_key(k));
            let settled = id
                .as_deref()
                .and_then(|id| self.booking(id))
                .is_some_and(|b| b.is_settled() && b.parked_reason().is_none());
            if settled {
                self.violation(
                    "capture_only_when_confirmed",
                    format!(
                        "authorization {auth} of settled booking {} is still open",
                        id.unwrap_or_default()
                    ),
                );
            }
        }
    }

    /// At most one reservation per booking, none orphaned, a live one per confirmed booking.
    fn reserved_once(&mut self) {
        let seen = self.seen;
        let all_ids: BTreeSet<&str> = self
            .known_ids
            .iter()
            .copied()
            .chain(
                seen.accounts
                    .iter()
                    .flat_map(|a| a.listed.iter().flatten().map(String::as_str)),
            )
            .collect();
        let mut live: BTreeSet<(&str, &str)> = BTreeSet::new();
        for s in &seen.sellers {
            let mut made = 0;
            for (key, status) in &s.reservations {
                if matches!(
                    status,
                    ReservationStatus::Booked { .. } | ReservationStatus::Cancelled { .. }
                ) {
                    made += 1;
                }
                if !all_ids.contains(key.as_str()) {
                    self.violation(
                        "reserved_once",
                        format!("seller {} holds key {key} of no known booking", s.name),
                    );
                    continue;
                }
                let Some(b) = self.booking(key.as_str()) else {
                    continue; // reported as unreadable above
                };
                if b.seller != s.name {
                    self.violation(
                        "reserved_once",
                        format!(
                            "booking {key} of seller {} was sent to seller {}",
                            b.seller, s.name
                        ),
                    );
                }
                if let ReservationStatus::Booked { .. } = status {
                    live.insert((s.name.as_str(), key.as_str()));
                    let settled = b.is_settled() && b.parked_reason().is_none();
                    if settled && b.state != SagaState::Confirmed {
                        self.violation(
                            "reserved_once",
                            format!(
                                "seller {} holds a live reservation of {} booking {key}",
                                s.name,
                                b.state.as_str()
                            ),
                        );
                    }
                }
            }
            if made != s.reservations_made {
                self.violation(
                    "reserved_once",
                    format!(
                        "seller {} made {} reservations for {made} keys",
                        s.name, s.reservations_made
                    ),
                );
            }
        }
        for b in &seen.bookings {
            let cancelling = b.cancellation.is_some();
            if b.state == SagaState::Confirmed
                && !cancelling
                && b.parked_reason().is_none()
                && !live.contains(&(b.seller.as_str(), b.id.as_str()))
            {
                self.violation(
                    "reserved_once",
                    format!(
                        "confirmed booking {} has no live reservation at {}",
                        b.id, b.seller
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::wallet::WalletOp;
    use crate::payments::simulated::{LedgerAuthorization, LedgerCapture};

    const EUR: Currency = Currency::EUR;

    fn entry(seq: u64, key: &str, delta: i64, op: WalletOp) -> LedgerEntry {
        LedgerEntry {
            seq,
            key: key.into(),
            op,
            delta,
            balance_after: 0,
            held_after: 0,
            at: Utc::now(),
        }
    }

    /// One account credited 10000 that booked 1000 with 300 in points: all consistent.
    fn clean() -> Observations {
        let credit = format!("{CREDIT_KEY_PREFIX}1");
        Observations {
            accounts: vec![AccountSeen {
                id: "acct".into(),
                balance: Some(9_700),
                held: 0,
                ledger: Some(vec![
                    entry(
                        1,
                        &credit,
                        10_000,
                        WalletOp::Credit {
                            amount: Money::new(10_000, EUR),
                        },
                    ),
                    entry(
                        2,
                        "b1:capture-wallet",
                        -300,
                        WalletOp::Capture {
                            hold_id: "b1:hold".into(),
                        },
                    ),
                ]),
                listed: Some(vec!["b1".into()]),
            }],
            bookings: vec![BookingSeen {
                id: "b1".into(),
                account: "acct".into(),
                seller: "alpha".into(),
                state: SagaState::Confirmed,
                needs_attention: None,
                offer_price: Money::new(1_000, EUR),
                wallet_points: Money::new(300, EUR),
                cancellation: None,
                history: vec![],
            }],
            keys: vec![KeySeen {
                key: "k1".into(),
                account: "acct".into(),
                ids: ["b1".to_owned()].into(),
            }],
            gateway: GatewayLedger {
                authorizations: vec![LedgerAuthorization {
                    key: "b1:authorize".into(),
                    authorization_id: "auth-1".into(),
                    card_token: "tok_approve".into(),
                    amount: Money::new(700, EUR),
                }],
                captures: vec![LedgerCapture {
                    key: "b1:capture".into(),
                    capture_id: "cap-1".into(),
                    authorization_id: "auth-1".into(),
                    amount: Money::new(700, EUR),
                }],
                ..GatewayLedger::default()
            },
            open_authorizations: vec![],
            sellers: vec![SellerSeen {
                name: "alpha".into(),
                reservations: vec![(
                    "b1".into(),
                    ReservationStatus::Booked {
                        reservation_id: "alpha-1".into(),
                        price: Money::new(1_000, EUR),
                    },
                )],
                reservations_made: 1,
            }],
        }
    }

    fn found(seen: &Observations) -> Vec<&'static str> {
        check(seen).into_iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn a_consistent_world_has_no_violations() {
        assert_eq!(check(&clean()), vec![]);
    }

    #[test]
    fn a_balance_off_its_ledger_is_found() {
        let mut seen = clean();
        seen.accounts[0].balance = Some(9_000);
        assert!(
            found(&seen).contains(&"balance_is_ledger"),
            "{:?}",
            check(&seen)
        );
    }

    #[test]
    fn a_capture_of_a_failed_booking_is_found() {
        let mut seen = clean();
        seen.bookings[0].state = SagaState::Failed;
        let v = check(&seen);
        assert!(
            v.iter()
                .any(|v| v.invariant == "capture_only_when_confirmed"
                    && v.detail.contains("b1 is failed")),
            "{v:?}"
        );
    }

    #[test]
    fn a_double_capture_and_an_unpaid_confirmation_are_found() {
        let mut seen = clean();
        let again = seen.gateway.captures[0].clone();
        seen.gateway.captures.push(again);
        assert!(found(&seen).contains(&"capture_only_when_confirmed"));
        let mut seen = clean();
        seen.gateway.captures.clear();
        assert!(found(&seen).contains(&"capture_only_when_confirmed"));
    }

    #[test]
    fn two_bookings_for_one_key_are_found() {
        let mut seen = clean();
        seen.keys[0].ids.insert("b2".into());
        assert!(found(&seen).contains(&"one_booking_per_key"));
        let mut seen = clean();
        seen.accounts[0].listed = Some(vec!["b1".into(), "b9".into()]);
        assert!(found(&seen).contains(&"one_booking_per_key"));
    }

    #[test]
    fn orphan_and_missing_reservations_are_found() {
        let mut seen = clean();
        seen.sellers[0].reservations.push((
            "stray".into(),
            ReservationStatus::Booked {
                reservation_id: "alpha-2".into(),
                price: Money::new(1, EUR),
            },
        ));
        seen.sellers[0].reservations_made = 2;
        assert!(found(&seen).contains(&"reserved_once"));
        let mut seen = clean();
        seen.sellers[0].reservations.clear();
        seen.sellers[0].reservations_made = 0;
        assert!(found(&seen).contains(&"reserved_once"));
    }

    #[test]
    fn an_unsettled_saga_is_found_and_a_parked_one_is_not() {
        let mut seen = clean();
        seen.bookings[0].state = SagaState::SellerConfirmed;
        assert!(found(&seen).contains(&"sagas_settle"));
        let mut seen = clean();
        seen.bookings[0].state = SagaState::NeedsAttention;
        seen.bookings[0].needs_attention = Some("capture kept failing".into());
        assert!(
            !found(&seen).contains(&"sagas_settle"),
            "{:?}",
            check(&seen)
        );
    }
}
