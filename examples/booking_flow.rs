//! A whole booking through the embedded runtime, no HTTP: open an account, credit its
//! wallet, search hotels in Lisbon a month ahead over two simulated sellers, book the
//! cheapest offer with some wallet points and an approving test card, watch the booking
//! saga move through its states, then cancel it and watch the cancellation saga (seller
//! fee, refund, points restored), with the wallet balance before and after.
//!
//! Run with: cargo run --example booking_flow

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::{Days, Utc};
use wayfare::config::{SellerEntry, SellerKind};
use wayfare::sellers::simulated::SimulatedSellerConfig;
use wayfare::{
    AdapterConfig, Booking, BookingOrder, Config, HotelQuery, Money, NewAccount, Runtime,
    SagaState, Vertical,
};

/// How long the example waits for a saga before giving up (the simulated parts answer in
/// milliseconds, so this only trips when something is wrong).
const SAGA_DEADLINE: Duration = Duration::from_secs(30);
/// How often the booking is read while waiting.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// An in-process simulated seller of hotels and flights.
fn simulated(name: &str, seed: u64, latency_ms: (u64, u64)) -> SellerEntry {
    SellerEntry {
        name: name.into(),
        kind: SellerKind::Simulated,
        verticals: vec![Vertical::Hotel, Vertical::Flight],
        simulated: SimulatedSellerConfig {
            seed,
            latency_ms,
            // Every hotel in the catalog, so Lisbon always has offers.
            coverage: 1.0,
            ..SimulatedSellerConfig::default()
        },
        http: Default::default(),
        adapter: AdapterConfig::default(),
    }
}

fn is_terminal(state: SagaState) -> bool {
    matches!(
        state,
        SagaState::Confirmed | SagaState::Failed | SagaState::Cancelled | SagaState::NeedsAttention
    )
}

/// Polls the booking until it (or, with `cancellation`, its cancellation) is terminal,
/// printing each state change as its timed history records it, so a state that lasted
/// less than a poll interval is still shown.
async fn follow(runtime: &Runtime, id: &str, cancellation: bool) -> anyhow::Result<Booking> {
    let started = Instant::now();
    let mut printed = 0;
    let mut last: Option<SagaState> = None;
    loop {
        let booking = runtime.booking(id.parse()?).await?;
        let (state, history) = if cancellation {
            match &booking.cancellation {
                Some(c) => (Some(c.state), c.history.as_slice()),
                None => (None, &[][..]),
            }
        } else {
            (Some(booking.state), booking.history.as_slice())
        };
        for entry in history.iter().skip(printed) {
            if last != Some(entry.state) {
                println!(
                    "  {}  {:<18}  {}",
                    entry.at.format("%H:%M:%S%.3f"),
                    entry.state.as_str(),
                    entry.note
                );
                last = Some(entry.state);
            }
        }
        printed = history.len();
        if let Some(state) = state.filter(|s| is_terminal(*s)) {
            if last != Some(state) {
                println!("  {}", state.as_str());
            }
            return Ok(booking);
        }
        if started.elapsed() > SAGA_DEADLINE {
            bail!("booking {id} still not settled after {SAGA_DEADLINE:?} (last state {last:?})");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut config = Config::default();
    config.store.data_dir = data.path().to_owned();
    config.sellers.extend([
        simulated("alpha", 1, (5, 30)),
        simulated("bravo", 2, (10, 60)),
    ]);
    let runtime = Runtime::start(config).await?;
    let result = run(&runtime).await;
    runtime.shutdown().await?;
    result
}

async fn run(runtime: &Runtime) -> anyhow::Result<()> {
    let currency = runtime.config().accounts.currency;
    let account = runtime
        .create_account(NewAccount::new("Grace Hopper", "grace@example.com")?)
        .await?;
    runtime
        .credit_wallet(account.id, "welcome-bonus", Money::new(20_000, currency))
        .await?;
    let before = runtime.account(account.id).await?.wallet;
    println!("account {} wallet: {}", account.id, before.balance);

    let today = Utc::now().date_naive();
    let query = HotelQuery {
        city_or_hotel: "Lisbon".into(),
        check_in: today.checked_add_days(Days::new(30)).context("date")?,
        check_out: today.checked_add_days(Days::new(32)).context("date")?,
    };
    let found = runtime
        .search_hotels(query.clone(), Some(account.id))
        .await?;
    for s in &found.sellers {
        println!("seller {}: {:?}", s.seller, s.status);
    }
    // Offers come cheapest first.
    let offer = found
        .offers
        .first()
        .context("no hotel offers in Lisbon")?
        .clone();
    println!(
        "{} offers; cheapest: {} from {} at {} ({} to pay if the whole wallet is used)",
        found.offers.len(),
        offer.title,
        offer.seller,
        offer.price,
        offer.price_to_pay
    );

    // Pay part with points (at most half the price, at most what the wallet holds).
    let points = (offer.price.minor / 2).min(before.available.minor).max(0);
    let order = BookingOrder {
        account_id: account.id,
        seller: offer.seller.clone(),
        sku: offer.sku.clone(),
        start: query.check_in,
        end: query.check_out,
        offer_price: offer.price,
        wallet_points: Money::new(points, currency),
        card_token: "tok_approve".into(),
        idempotency_key: "booking-flow-1".into(),
    };
    let (booking, _) = runtime.book(order).await?;
    println!(
        "booking {} with {} in points:",
        booking.id,
        Money::new(points, currency)
    );
    let booking = follow(runtime, &booking.id, false).await?;
    if booking.state != SagaState::Confirmed {
        bail!(
            "booking ended {} ({:?})",
            booking.state.as_str(),
            booking.failure.or(booking.needs_attention)
        );
    }
    let booked = runtime.account(account.id).await?.wallet;
    println!("wallet after booking: {}", booked.balance);

    println!("cancelling:");
    runtime.cancel_booking(booking.id.parse()?).await?;
    let booking = follow(runtime, &booking.id, true).await?;
    let c = booking
        .cancellation
        .context("a cancelled booking has its cancellation")?;
    let show = |m: Option<Money>| m.map_or_else(|| "-".to_owned(), |m| m.to_string());
    println!(
        "cancellation {}: seller fee {}, refund {}, points restored {}",
        c.state.as_str(),
        show(c.seller_fee),
        show(c.refund),
        show(c.points_restored)
    );
    let after = runtime.account(account.id).await?.wallet;
    println!(
        "wallet before: {}, after: {} (held {})",
        before.balance, after.balance, after.held
    );
    Ok(())
}
