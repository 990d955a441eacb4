//! The drill itself: traffic under faults, a stop with sagas in flight, a restart on the
//! same data directory, every key resubmitted, settling, then observation for the checker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use wayfare::domain::account::{AccountId, NewAccount};
use wayfare::domain::money::{Currency, Money};
use wayfare::domain::saga::SagaState;
use wayfare::sellers::simulated::catalog_cities;
use wayfare::sellers::{FlightQuery, HotelQuery, SellerApi};
use wayfare::{Booking, BookingOrder, Error, OfferView, Runtime};

use crate::check::check;
use crate::observations::{
    AccountSeen, BookingSeen, KeySeen, LedgerLine, Observations, PaymentsSeen, SellerSeen,
    CREDIT_KEY_PREFIX,
};
use crate::plan::{start_runtime, ChaosPlan, ChaosWorld};
use crate::report::{evidence, ChaosReport, OpCount};

/// Bound of one runtime call made by the drill, so a hung runtime fails the drill instead
/// of hanging it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of each read or resubmission after the restart (faults still fire).
const READ_ATTEMPTS: usize = 10;
/// Pause between those attempts and between settle polls.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
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
    let saga_crashes_after_restart = runtime.saga_counts(0).crashes;
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
    fn tally(&self) -> MutexGuard<'_, Tally> {
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
        reread_all = all_settled && runtime.saga_counts(0).running == 0;
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
            ledger.extend(page.entries.into_iter().map(|e| LedgerLine {
                key: e.key,
                delta: e.delta,
            }));
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
            credited: None,
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
        payments: Some(PaymentsSeen {
            ledger: world.gateway.ledger(),
            open_authorizations: world.gateway.open_authorizations(),
        }),
        sellers: Some(
            world
                .sellers
                .iter()
                .map(|s| SellerSeen {
                    name: SellerApi::name(s).to_owned(),
                    reservations: s.reservations(),
                    reservations_made: s.reservations_made(),
                })
                .collect(),
        ),
    }
}
