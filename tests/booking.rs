//! Booking sagas end to end against real actors, the simulated gateway and sellers whose
//! knobs the tests hold: every forward path and every compensation, idempotency, the
//! unknown outcome of a lost seller reply, parking and operator retry, and cancellation
//! arithmetic.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use common::fake::FixedSeller;
use common::{poll_until, wait_until, FetchJson, TestServer};
use serde_json::{json, Value};
use wayfare::actors::notify::MailTransport;
use wayfare::actors::seller::AdapterConfig;
use wayfare::domain::account::{AccountId, NewAccount};
use wayfare::domain::money::{Currency, Money};
use wayfare::domain::outbox::OutboxEmail;
use wayfare::domain::saga::SagaState;
use wayfare::payments::simulated::{SimulatedGateway, SimulatedGatewayConfig};
use wayfare::sellers::simulated::{SimulatedSeller, SimulatedSellerConfig};
use wayfare::sellers::{HotelQuery, Vertical};
use wayfare::store::{Entry, Op, Store, StoreError, StoreFuture, Tree};
use wayfare::{Booking, BookingOrder, CustomSeller, Runtime};

const TOKEN: &str = common::OPERATOR_TOKEN;

/// A store whose writes the test can switch off (reads always work).
struct SwitchableStore {
    inner: Arc<dyn Store>,
    refuse_writes: Arc<AtomicBool>,
}

impl Store for SwitchableStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(tree, key)
    }

    fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan(tree, prefix, after, limit)
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        if self.refuse_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Io("writes switched off by the test".into()));
        }
        self.inner.write(ops)
    }

    fn flush(&self) -> StoreFuture<()> {
        self.inner.flush()
    }
}

/// Collects emails instead of writing a file.
#[derive(Default)]
struct Inbox(Mutex<Vec<OutboxEmail>>);

impl MailTransport for Inbox {
    fn send(&self, email: &OutboxEmail) -> Result<(), String> {
        self.0.lock().unwrap().push(email.clone());
        Ok(())
    }
}

impl Inbox {
    fn count(&self, booking: &str, kind: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.booking_id == booking && e.kind.as_str() == kind)
            .count()
    }
}

struct World {
    s: TestServer,
    seller: SimulatedSeller,
    gateway: SimulatedGateway,
    inbox: Arc<Inbox>,
    account: AccountId,
}

fn in_days(n: u64) -> NaiveDate {
    Utc::now()
        .date_naive()
        .checked_add_days(Days::new(n))
        .unwrap()
}

fn quick(c: &mut wayfare::Config) {
    c.bookings.step_timeout_ms = 500;
    c.bookings.saga.backoff_base_ms = 1;
    c.bookings.saga.backoff_max_ms = 5;
}

/// The simulated seller the tests start from: answers within 2 ms.
fn fast_seller() -> SimulatedSellerConfig {
    SimulatedSellerConfig {
        latency_ms: (0, 2),
        ..SimulatedSellerConfig::default()
    }
}

async fn world(seller_cfg: SimulatedSellerConfig) -> World {
    world_built(seller_cfg, |b| b).await
}

/// `world`, with `more` completing the runtime builder.
async fn world_built(
    seller_cfg: SimulatedSellerConfig,
    more: impl FnOnce(wayfare::RuntimeBuilder) -> wayfare::RuntimeBuilder,
) -> World {
    world_configured(seller_cfg, |_| {}, more).await
}

/// `world_built`, with `tweak` completing the config after [`quick`].
async fn world_configured(
    seller_cfg: SimulatedSellerConfig,
    tweak: impl FnOnce(&mut wayfare::Config),
    more: impl FnOnce(wayfare::RuntimeBuilder) -> wayfare::RuntimeBuilder,
) -> World {
    let seller = SimulatedSeller::new(SimulatedSellerConfig {
        name: "sim".into(),
        coverage: 1.0,
        ..seller_cfg
    })
    .unwrap();
    let gateway = SimulatedGateway::new(SimulatedGatewayConfig {
        latency_min_ms: 0,
        latency_max_ms: 1,
        ..SimulatedGatewayConfig::default()
    });
    let inbox = Arc::new(Inbox::default());
    let custom = CustomSeller {
        api: Arc::new(seller.clone()),
        verticals: vec![Vertical::Hotel, Vertical::Flight],
        adapter: AdapterConfig::default(),
    };
    let (g, i) = (gateway.clone(), inbox.clone());
    let configure = |c: &mut wayfare::Config| {
        quick(c);
        tweak(c);
    };
    let s = TestServer::start_built(configure, move |b| {
        more(
            b.seller(custom)
                .payment_gateway(Arc::new(g))
                .mail_transport(i),
        )
    })
    .await;
    let account = s
        .runtime
        .create_account(NewAccount::new("Booker", "booker@example.com").unwrap())
        .await
        .unwrap()
        .id;
    s.runtime
        .credit_wallet(account, "welcome", eur(10_000))
        .await
        .unwrap();
    World {
        s,
        seller,
        gateway,
        inbox,
        account,
    }
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

/// An order for the first hotel offer in Lisbon, paying `points` with the wallet.
async fn order(
    rt: &Runtime,
    account: AccountId,
    points: i64,
    card: &str,
    key: &str,
) -> BookingOrder {
    let q = HotelQuery {
        city_or_hotel: "Lisbon".into(),
        check_in: in_days(30),
        check_out: in_days(32),
    };
    let resp = rt.search_hotels(q.clone(), None).await.unwrap();
    let offer = resp.offers.first().expect("an offer").clone();
    BookingOrder {
        account_id: account,
        seller: offer.seller,
        sku: offer.sku,
        start: q.check_in,
        end: q.check_out,
        offer_price: offer.price,
        wallet_points: eur(points),
        card_token: card.into(),
        idempotency_key: key.into(),
    }
}

/// Waits until the booking and its cancellation, if any, leave the in-flight states.
async fn settled(rt: &Runtime, id: &str) -> Booking {
    let mut last = None;
    let found = poll_until(Duration::from_secs(20), async || {
        let b = rt.booking(id.parse().unwrap()).await.unwrap();
        let done = matches!(
            b.state,
            SagaState::Confirmed
                | SagaState::Failed
                | SagaState::Cancelled
                | SagaState::NeedsAttention
        ) && b.cancellation.as_ref().is_none_or(|c| {
            matches!(
                c.state,
                SagaState::Cancelled | SagaState::Failed | SagaState::NeedsAttention
            )
        }) && (
            // A finished cancellation marks its booking cancelled in the same store write,
            // but `Runtime::booking` reads the two records one after the other, so a view
            // can catch the cancellation done and the booking not yet: look again.
            b.state == SagaState::Cancelled
                || b.cancellation
                    .as_ref()
                    .is_none_or(|c| c.state != SagaState::Cancelled)
        );
        last = Some((b.state, b.cancellation.as_ref().map(|c| c.state)));
        done.then_some(b)
    })
    .await;
    found.unwrap_or_else(|| panic!("booking {id} stuck in {last:?} (booking, cancellation)"))
}

async fn balance(rt: &Runtime, id: AccountId) -> (i64, i64) {
    let a = rt.account(id).await.unwrap();
    (a.wallet.balance.minor, a.wallet.held.minor)
}

async fn wait_for_email(inbox: &Inbox, booking: &str, kind: &str) {
    wait_until(
        Duration::from_secs(10),
        format_args!("a {kind} email for {booking} arrives"),
        async || (inbox.count(booking, kind) > 0).then_some(()),
    )
    .await;
}

#[actix_rt::test]
async fn happy_path_captures_once_books_once_emails_once() {
    // The store behind the runtime, to see the outbox drain.
    let store: Arc<Mutex<Option<Arc<dyn Store>>>> = Arc::default();
    let slot = store.clone();
    let w = world_built(fast_seller(), move |b| {
        b.store_layer(move |inner| {
            *slot.lock().unwrap() = Some(inner.clone());
            inner
        })
    })
    .await;
    let o = order(&w.s.runtime, w.account, 3_000, "tok_approve", "k-happy").await;
    let price = o.offer_price;
    let (b, replayed) = w.s.runtime.book(o).await.unwrap();
    assert!(!replayed);
    let b = settled(&w.s.runtime, &b.id).await;
    assert_eq!(b.state, SagaState::Confirmed, "{:#?}", b.history);
    let states: Vec<SagaState> = b.history.iter().map(|h| h.state).collect();
    for s in [
        SagaState::Pending,
        SagaState::PaymentAuthorized,
        SagaState::SellerConfirmed,
        SagaState::Confirmed,
    ] {
        assert!(states.contains(&s), "history has {s:?}");
    }
    assert_eq!(
        balance(&w.s.runtime, w.account).await,
        (7_000, 0),
        "3000 points captured"
    );
    let ledger = w.gateway.ledger();
    assert_eq!(ledger.captures.len(), 1);
    assert_eq!(ledger.captures[0].amount.minor, price.minor - 3_000);
    assert_eq!(w.seller.reservations_made(), 1);
    wait_for_email(&w.inbox, &b.id, "confirmed").await;
    // The mailer deletes an email from the outbox only once the transport took it, and
    // sends only what is there: once the outbox is empty no duplicate can follow.
    let store = store.lock().unwrap().clone().expect("the store layer ran");
    wait_until(
        Duration::from_secs(10),
        "the mailer empties the outbox",
        async || {
            let left = store.scan(Tree::Outbox, b"", None, 1).unwrap();
            left.is_empty().then_some(())
        },
    )
    .await;
    assert_eq!(w.inbox.count(&b.id, "confirmed"), 1);
    // Ledger: credit, hold, capture; balance equals the sum of deltas.
    let page = w.s.runtime.ledger(w.account, 0, 100).await.unwrap();
    let sum: i64 = page.entries.iter().map(|e| e.delta).sum();
    assert_eq!(sum, 7_000);
    w.s.stop().await;
}

#[actix_rt::test]
async fn a_declined_card_releases_the_hold_and_fails() {
    let w = world(fast_seller()).await;
    let o = order(&w.s.runtime, w.account, 2_000, "tok_decline", "k-decline").await;
    let (b, _) = w.s.runtime.book(o).await.unwrap();
    let b = settled(&w.s.runtime, &b.id).await;
    assert_eq!(b.state, SagaState::Failed);
    assert!(b.failure.is_some());
    assert_eq!(
        balance(&w.s.runtime, w.account).await,
        (10_000, 0),
        "hold released"
    );
    assert_eq!(w.seller.reservations_made(), 0);
    assert!(w.gateway.ledger().captures.is_empty());
    wait_for_email(&w.inbox, &b.id, "failed").await;
    w.s.stop().await;
}

#[actix_rt::test]
async fn a_seller_rejection_after_authorization_voids_and_releases() {
    let w = world(SimulatedSellerConfig {
        reject_rate: 1.0,
        ..fast_seller()
    })
    .await;
    let o = order(&w.s.runtime, w.account, 1_000, "tok_approve", "k-reject").await;
    let (b, _) = w.s.runtime.book(o).await.unwrap();
    let b = settled(&w.s.runtime, &b.id).await;
    assert_eq!(b.state, SagaState::Failed, "{:#?}", b.history);
    let ledger = w.gateway.ledger();
    assert_eq!(ledger.authorizations.len(), 1);
    assert_eq!(ledger.voids.len(), 1, "authorization voided");
    assert!(ledger.captures.is_empty());
    assert!(w.gateway.open_authorizations().is_empty());
    assert_eq!(balance(&w.s.runtime, w.account).await, (10_000, 0));
    w.s.stop().await;
}

#[actix_rt::test]
async fn a_price_change_fails_clearly_instead_of_charging_a_new_price() {
    let w = world(fast_seller()).await;
    let mut o = order(&w.s.runtime, w.account, 0, "tok_approve", "k-price").await;
    o.offer_price = Money::new(o.offer_price.minor - 1, Currency::EUR);
    let (b, _) = w.s.runtime.book(o).await.unwrap();
    let b = settled(&w.s.runtime, &b.id).await;
    assert_eq!(b.state, SagaState::Failed);
    assert!(
        b.history.iter().any(|h| h.note.contains("price changed")),
        "{:#?}",
        b.history
    );
    assert!(w.gateway.ledger().captures.is_empty());
    assert_eq!(w.seller.reservations_made(), 0);
    w.s.stop().await;
}

#[actix_rt::test]
async fn a_capture_failure_cancels_the_reservation_and_releases_points() {
    let w = world(SimulatedSellerConfig {
        cancel_fee_percent: 0,
        ..fast_seller()
    })
    .await;
    let o = order(
        &w.s.runtime,
        w.account,
        1_500,
        "tok_fail_capture",
        "k-capture",
    )
    .await;
    let (b, _) = w.s.runtime.book(o).await.unwrap();
    let b = settled(&w.s.runtime, &b.id).await;
    assert_eq!(b.state, SagaState::Failed, "{:#?}", b.history);
    assert_eq!(w.seller.reservations_made(), 1);
    let status = wayfare::sellers::SellerApi::booking_status(&w.seller, b.id.clone())
        .await
        .unwrap();
    assert!(
        matches!(
            status,
            Some(wayfare::sellers::ReservationStatus::Cancelled { .. })
        ),
        "{status:?}"
    );
    assert!(w.gateway.ledger().captures.is_empty());
    assert_eq!(balance(&w.s.runtime, w.account).await, (10_000, 0));
    w.s.stop().await;
}

#[actix_rt::test]
async fn a_lost_seller_reply_is_reconciled_to_confirmed_with_one_reservation() {
    let w = world(SimulatedSellerConfig {
        lost_reply_rate: 1.0,
        ..fast_seller()
    })
    .await;
    let o = order(&w.s.runtime, w.account, 0, "tok_approve", "k-lost").await;
    let (b, _) = w.s.runtime.book(o).await.unwrap();
    let b = settled(&w.s.runtime, &b.id).await;
    assert_eq!(b.state, SagaState::Confirmed, "{:#?}", b.history);
    assert_eq!(
        w.seller.reservations_made(),
        1,
        "reconciled, not booked twice"
    );
    assert_eq!(w.gateway.ledger().captures.len(), 1);
    w.s.stop().await;
}

#[actix_rt::test]
async fn a_compensation_that_keeps_failing_parks_the_saga_until_an_operator_retries() {
    let (fixed, knobs) = FixedSeller::new("fixed", 20_000);
    let gateway = SimulatedGateway::new(SimulatedGatewayConfig::default());
    let g = gateway.clone();
    let s = TestServer::start_built(quick, move |b| {
        b.seller(fixed.into_custom(AdapterConfig::default()))
            .payment_gateway(Arc::new(g))
    })
    .await;
    let (account, key) = s
        .runtime
        .create_customer(NewAccount::new("P", "p@example.com").unwrap())
        .await
        .unwrap();
    let account = account.id;
    let order = BookingOrder {
        account_id: account,
        seller: "fixed".into(),
        sku: "hotel:test:h1:double".into(),
        start: in_days(10),
        end: in_days(12),
        offer_price: eur(20_000),
        wallet_points: eur(0),
        card_token: "tok_fail_capture".into(),
        idempotency_key: "k-park".into(),
    };
    // The seller books, capture fails for good, and cancelling the reservation fails too.
    knobs.cancel_failing.store(true, Ordering::SeqCst);
    let (b, _) = s.runtime.book(order).await.unwrap();
    let b = settled(&s.runtime, &b.id).await;
    assert_eq!(b.state, SagaState::NeedsAttention, "{:#?}", b.history);
    assert!(b.needs_attention.as_deref().is_some_and(|r| !r.is_empty()));
    assert!(
        b.history.iter().any(|e| e.note.contains("attempt")),
        "the operator's view keeps every attempt: {:#?}",
        b.history
    );
    // The customer sees a stable code and fixed sentences: no partner error text, no
    // internal reason, no attempt-by-attempt detail.
    let mine: Value = s
        .anonymous
        .get(s.url(&format!("/v1/bookings/{}", b.id)))
        .bearer_auth(key.reveal())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["state"], "needs_attention", "{mine}");
    assert_eq!(
        mine["needs_attention"],
        "held for review by our staff; we will contact you about it"
    );
    assert_eq!(mine["failure_code"], b.failure_code.unwrap(), "{mine}");
    let notes: Vec<&str> = mine["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["note"].as_str().unwrap())
        .collect();
    let operator_reason = b.needs_attention.as_deref().unwrap();
    for note in &notes {
        assert!(
            !note.contains("attempt") && *note != operator_reason,
            "{notes:?}"
        );
    }
    assert_eq!(notes.first(), Some(&"booking requested"), "{notes:?}");
    // Visible to operators.
    let health: Value = s.http.get(s.url("/health")).fetch_json().await;
    assert_eq!(health["sagas"]["needs_attention"], 1, "{health}");
    let metrics = s.http.get(s.url("/metrics")).fetch_text().await;
    assert!(
        metrics.contains("wayfare_sagas{state=\"needs_attention\"} 1"),
        "{metrics}"
    );
    // The retry route refuses without the token, and with any other credential.
    let retry = s.url(&format!("/v1/admin/sagas/{}/retry", b.id));
    let res = s.anonymous.post(&retry).send().await.unwrap();
    common::assert_problem(res, 401, "unauthorized", None).await;
    let res = s
        .anonymous
        .post(&retry)
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    // A mistyped operator token is an unknown credential: 401 (issue 11).
    common::assert_problem(res, 401, "unauthorized", None).await;
    // Fixed on the seller's side; the operator retries and the saga compensates.
    knobs.cancel_failing.store(false, Ordering::SeqCst);
    let res = s.http.post(&retry).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 202);
    let b = settled(&s.runtime, &b.id).await;
    assert_eq!(b.state, SagaState::Failed, "{:#?}", b.history);
    assert!(gateway.ledger().captures.is_empty());
    assert!(
        gateway.open_authorizations().is_empty(),
        "authorization voided"
    );
    // The counts kept by the writers followed the park and the retry.
    let counts = s.runtime.saga_counts(10);
    assert_eq!(counts.needs_attention, 0, "{counts:?}");
    assert!(counts.parked.is_empty(), "{counts:?}");
    assert_eq!(counts.by_state.get("failed"), Some(&1), "{counts:?}");
    assert_eq!(counts.by_state.get("needs_attention"), None, "{counts:?}");
    assert_eq!(counts.parks, 1, "{counts:?}");
    s.stop().await;
}

#[actix_rt::test]
async fn operator_routes_are_closed_without_a_configured_token() {
    let s = TestServer::start_with(|c| c.admin.token = None).await;
    let res = s
        .http
        .post(s.url("/v1/admin/sagas/00000000-0000-4000-8000-000000000001/retry"))
        .bearer_auth("anything-at-all-here")
        .send()
        .await
        .unwrap();
    common::assert_problem(res, 403, "forbidden", None).await;
    s.stop().await;
}

#[actix_rt::test]
async fn idempotency_key_replays_and_conflicts_over_http() {
    let w = world(fast_seller()).await;
    let o = order(&w.s.runtime, w.account, 0, "tok_approve", "unused").await;
    let body = json!({
        "account_id": w.account.to_string(),
        "seller": o.seller,
        "sku": o.sku,
        "start": o.start,
        "end": o.end,
        "offer_price": o.offer_price,
        "card_token": "tok_approve",
    });
    let post = |body: &Value, key: Option<&str>| {
        let mut r = w.s.http.post(w.s.url("/v1/bookings")).json(body);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        r.send()
    };
    let first = post(&body, Some("http-key-1")).await.unwrap();
    assert_eq!(first.status(), 202);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/bookings/{}", first["id"].as_str().unwrap())
    );
    let again = post(&body, Some("http-key-1")).await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let mut other = body.clone();
    other["card_token"] = json!("tok_slow");
    common::assert_problem(
        post(&other, Some("http-key-1")).await.unwrap(),
        409,
        "conflict",
        None,
    )
    .await;
    common::assert_problem(
        post(&body, None).await.unwrap(),
        400,
        "invalid-input",
        Some("Idempotency-Key"),
    )
    .await;
    let mut bad = body.clone();
    bad["seller"] = json!("nobody");
    common::assert_problem(
        post(&bad, Some("k2")).await.unwrap(),
        400,
        "invalid-input",
        Some("seller"),
    )
    .await;
    let mut bad = body.clone();
    bad["account_id"] = json!("00000000-0000-4000-8000-00000000dead");
    common::assert_problem(
        post(&bad, Some("k3")).await.unwrap(),
        404,
        "not-found",
        None,
    )
    .await;
    let mut bad = body.clone();
    bad["wallet_points"] = json!({"minor": 999_999, "currency": "EUR"});
    let res = post(&bad, Some("k4")).await.unwrap();
    common::assert_problem(res, 400, "invalid-input", Some("wallet_points")).await;
    let res =
        w.s.http
            .get(w.s.url("/v1/bookings/not-an-id"))
            .send()
            .await
            .unwrap();
    common::assert_problem(res, 400, "invalid-input", Some("id")).await;
    let res =
        w.s.http
            .get(w.s.url("/v1/bookings/00000000-0000-4000-8000-000000000000"))
            .send()
            .await
            .unwrap();
    common::assert_problem(res, 404, "not-found", None).await;
    let id = first["id"].as_str().unwrap();
    let b = settled(&w.s.runtime, id).await;
    assert_eq!(b.state, SagaState::Confirmed);
    let list: Value =
        w.s.http
            .get(w.s.url(&format!("/v1/accounts/{}/bookings", w.account)))
            .fetch_json()
            .await;
    assert_eq!(list["bookings"].as_array().unwrap().len(), 1, "{list}");
    w.s.stop().await;
}

#[actix_rt::test]
async fn cancelling_a_confirmed_booking_refunds_minus_the_fee_and_restores_points() {
    let w = world(SimulatedSellerConfig {
        cancel_fee_percent: 10,
        ..fast_seller()
    })
    .await;
    let o = order(&w.s.runtime, w.account, 4_000, "tok_approve", "k-cancel").await;
    let price = o.offer_price.minor;
    let (b, _) = w.s.runtime.book(o).await.unwrap();
    assert_eq!(
        settled(&w.s.runtime, &b.id).await.state,
        SagaState::Confirmed
    );
    assert_eq!(balance(&w.s.runtime, w.account).await, (6_000, 0));
    let res =
        w.s.http
            .post(w.s.url(&format!("/v1/bookings/{}/cancel", b.id)))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 202);
    let b = settled(&w.s.runtime, &b.id).await;
    assert_eq!(b.state, SagaState::Cancelled, "{b:#?}");
    let c = b.cancellation.expect("cancellation");
    let fee = price * 10 / 100;
    let card = price - 4_000;
    assert_eq!(c.seller_fee.unwrap().minor, fee);
    // The fee comes out of the card part first; the points come back whole.
    assert_eq!(c.refund.unwrap().minor, card - fee);
    assert_eq!(c.points_restored.unwrap().minor, 4_000);
    assert_eq!(balance(&w.s.runtime, w.account).await, (10_000, 0));
    assert_eq!(
        w.gateway.refunded_total(Currency::EUR).unwrap().minor,
        card - fee
    );
    wait_for_email(&w.inbox, &b.id, "cancelled").await;
    // Cancelling again changes nothing.
    let again =
        w.s.runtime
            .cancel_booking(b.id.parse().unwrap())
            .await
            .unwrap();
    assert_eq!(again.state, SagaState::Cancelled);
    assert_eq!(w.gateway.ledger().refunds.len(), 1);
    w.s.stop().await;
}

#[actix_rt::test]
async fn a_cancel_that_cannot_be_stored_is_refused_and_changes_nothing() {
    let refuse_writes = Arc::new(AtomicBool::new(false));
    let switch = refuse_writes.clone();
    let w = world_built(
        SimulatedSellerConfig {
            latency_ms: (400, 400),
            ..fast_seller()
        },
        move |b| {
            b.store_layer(move |inner| {
                Arc::new(SwitchableStore {
                    inner,
                    refuse_writes: switch,
                })
            })
        },
    )
    .await;
    let o = order(&w.s.runtime, w.account, 0, "tok_approve", "k-unstored").await;
    let (b, _) = w.s.runtime.book(o).await.unwrap();
    // Wait for the authorization to be stored: the saga then waits on the slow seller
    // and writes nothing until it answers.
    wait_until(
        Duration::from_secs(5),
        format_args!("booking {} is payment_authorized", b.id),
        async || {
            let state =
                w.s.runtime
                    .booking(b.id.parse().unwrap())
                    .await
                    .unwrap()
                    .state;
            (state == SagaState::PaymentAuthorized).then_some(())
        },
    )
    .await;
    let url = w.s.url(&format!("/v1/bookings/{}/cancel", b.id));
    refuse_writes.store(true, Ordering::SeqCst);
    let refused = w.s.http.post(&url).send().await.unwrap();
    refuse_writes.store(false, Ordering::SeqCst);
    assert_eq!(refused.status(), 503, "{}", refused.text().await.unwrap());

    // The refused cancel left no trace: the booking goes on and is confirmed.
    let done = settled(&w.s.runtime, &b.id).await;
    assert_eq!(done.state, SagaState::Confirmed, "{:#?}", done.history);
    assert!(done.cancellation.is_none(), "{:#?}", done.cancellation);
    assert!(w.gateway.ledger().refunds.is_empty());

    // The customer retries and this time it is taken.
    let taken = w.s.http.post(&url).send().await.unwrap();
    assert_eq!(taken.status(), 202);
    let done = settled(&w.s.runtime, &b.id).await;
    assert_eq!(done.state, SagaState::Cancelled, "{:#?}", done.history);
    w.s.stop().await;
}

#[actix_rt::test]
async fn cancelling_in_flight_ends_cancelled_without_charges() {
    let w = world(SimulatedSellerConfig {
        latency_ms: (300, 300),
        ..fast_seller()
    })
    .await;
    let o = order(&w.s.runtime, w.account, 0, "tok_approve", "k-inflight").await;
    let (b, _) = w.s.runtime.book(o).await.unwrap();
    // Cancel right away: before the pivot it compensates now; after it, the booking is
    // cancelled once confirmed. Either way it ends cancelled and nothing stays charged.
    let _ =
        w.s.runtime
            .cancel_booking(b.id.parse().unwrap())
            .await
            .unwrap();
    let b = settled(&w.s.runtime, &b.id).await;
    assert_eq!(b.state, SagaState::Cancelled, "{:#?}", b.history);
    let ledger = w.gateway.ledger();
    let captured: i64 = ledger.captures.iter().map(|c| c.amount.minor).sum();
    let refunded: i64 = ledger.refunds.iter().map(|r| r.amount.minor).sum();
    let fee = b
        .cancellation
        .as_ref()
        .and_then(|c| c.seller_fee)
        .map_or(0, |f| f.minor);
    assert_eq!(captured - refunded, fee.min(captured));
    w.s.stop().await;
}

/// The saga children listed under the `sagas` supervisor of the tree.
fn saga_children(rt: &Runtime) -> Vec<String> {
    let mut names = Vec::new();
    rt.supervision_tree().for_each_child(&mut |sup, c| {
        if sup == "sagas" {
            names.push(c.name.clone());
        }
    });
    names
}

#[actix_rt::test]
async fn a_saga_whose_actor_panics_on_every_run_is_parked_with_the_panic_as_reason() {
    let w = world_configured(
        fast_seller(),
        |c| {
            c.faults.enabled = true;
            c.faults.panic_rate = 1.0;
            c.faults.panic_actors = vec![wayfare::faults::ActorKind::Saga];
            c.supervisor.max_restarts = 2;
            c.supervisor.backoff_min_ms = 1;
            c.supervisor.backoff_max_ms = 5;
        },
        |b| b,
    )
    .await;
    let rt = &w.s.runtime;
    let o = order(rt, w.account, 0, "tok_ok", "k-crashing").await;
    let (b, _) = rt.book(o).await.unwrap();
    let b = settled(rt, &b.id).await;
    assert_eq!(b.state, SagaState::NeedsAttention, "{:#?}", b.history);
    let reason = b.needs_attention.clone().unwrap_or_default();
    assert!(
        reason.contains("kept crashing") && reason.contains("injected fault"),
        "{reason}"
    );
    // Nothing was charged: the actor died before its first step each time.
    assert!(w.gateway.ledger().captures.is_empty());
    let counts = rt.saga_counts(10);
    assert_eq!(counts.needs_attention, 1);
    assert_eq!(counts.parked[0].reason, reason);
    assert_eq!(counts.crashes, 3);
    assert!(
        saga_children(rt).is_empty(),
        "the given-up saga left the tree"
    );
    let health: Value = w.s.http.get(w.s.url("/health")).fetch_json().await;
    assert_eq!(health["sagas"]["needs_attention"], 1, "{health}");
    w.s.stop().await;
}

#[actix_rt::test]
async fn the_supervision_tree_lists_saga_actors_while_their_bookings_run() {
    let w = world(SimulatedSellerConfig {
        latency_ms: (300, 300),
        ..SimulatedSellerConfig::default()
    })
    .await;
    let rt = &w.s.runtime;
    let o = order(rt, w.account, 0, "tok_ok", "k-slow").await;
    let (b, _) = rt.book(o).await.unwrap();
    // Started before the reply, and the seller takes 300 ms: still running now.
    assert_eq!(saga_children(rt), [format!("saga-{}", b.id)]);
    let tree: Value =
        w.s.http
            .get(w.s.url("/v1/system/supervisors"))
            .fetch_json()
            .await;
    assert!(
        tree.to_string().contains(&format!("saga-{}", b.id)),
        "{tree}"
    );
    let b = settled(rt, &b.id).await;
    assert_eq!(b.state, SagaState::Confirmed, "{:#?}", b.history);
    // Finished: removed from the tree once the actor stops.
    wait_until(
        Duration::from_secs(5),
        "the finished saga leaves the tree",
        async || saga_children(rt).is_empty().then_some(()),
    )
    .await;
    w.s.stop().await;
}

#[actix_rt::test]
async fn an_accounts_bookings_are_paged_with_next_after() {
    let w = world(fast_seller()).await;
    let rt = &w.s.runtime;
    let mut ids = Vec::new();
    for key in ["k-page-1", "k-page-2", "k-page-3"] {
        let o = order(rt, w.account, 0, "tok_ok", key).await;
        ids.push(rt.book(o).await.unwrap().0.id);
    }
    ids.sort();
    let list = |query: &str| {
        w.s.url(&format!("/v1/accounts/{}/bookings{query}", w.account))
    };
    let first: Value = w.s.http.get(list("?limit=2")).fetch_json().await;
    let page_ids = |page: &Value| -> Vec<String> {
        page["bookings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(page_ids(&first), ids[..2], "{first}");
    assert_eq!(first["next_after"], ids[1].as_str(), "{first}");
    let second: Value =
        w.s.http
            .get(list(&format!("?limit=2&after={}", ids[1])))
            .fetch_json()
            .await;
    assert_eq!(page_ids(&second), ids[2..], "{second}");
    assert!(second["next_after"].is_null(), "{second}");
    // The same pages from the runtime.
    let page = rt
        .account_bookings(w.account, Some(ids[0].parse().unwrap()), 5)
        .await
        .unwrap();
    assert_eq!(page.bookings.len(), 2);
    assert_eq!(page.next_after, None);
    // Bad pages are refused, naming the parameter.
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?after=nope", "after"),
    ] {
        let res = w.s.http.get(list(query)).send().await.unwrap();
        common::assert_problem(res, 400, "invalid-input", Some(field)).await;
    }
    w.s.stop().await;
}

/// With every saga slot taken (`bookings.max_in_flight`), a new booking is refused as
/// overloaded, but a replay of a booking's key is still answered with that booking.
#[actix_rt::test]
async fn a_replay_is_answered_when_no_new_booking_may_start() {
    let (fixed, knobs) = FixedSeller::new("fixed", 20_000);
    // The seller never answers: the first booking holds the only slot.
    knobs.delay_ms.store(u64::MAX, Ordering::SeqCst);
    let s = TestServer::start_built(
        |c| {
            c.bookings.max_in_flight = 1;
            c.bookings.step_timeout_ms = 60_000;
        },
        move |b| {
            b.seller(fixed.into_custom(AdapterConfig {
                call_timeout_ms: 60_000,
                ..AdapterConfig::default()
            }))
        },
    )
    .await;
    let account = s
        .runtime
        .create_account(NewAccount::new("Q", "q@example.com").unwrap())
        .await
        .unwrap()
        .id;
    let order = |key: &str| BookingOrder {
        account_id: account,
        seller: "fixed".into(),
        sku: "hotel:test:h1:double".into(),
        start: in_days(10),
        end: in_days(12),
        offer_price: eur(20_000),
        wallet_points: eur(0),
        card_token: "tok_approve".into(),
        idempotency_key: key.into(),
    };
    let (first, replayed) = s.runtime.book(order("k-slot")).await.unwrap();
    assert!(!replayed);
    let refused = s.runtime.book(order("k-other")).await.unwrap_err();
    assert!(
        matches!(refused, wayfare::Error::Overloaded { .. }),
        "{refused:?}"
    );
    let (again, replayed) = s.runtime.book(order("k-slot")).await.unwrap();
    assert!(replayed);
    assert_eq!(again.id, first.id);
    s.stop().await;
}

/// A reservation the seller's open breaker refuses is in the booking's partner calls as
/// `circuit_open`, not sent (no time, no status), attempt after attempt; so are the
/// lookups the saga then makes before undoing anything, until it parks.
#[actix_rt::test]
async fn calls_refused_by_an_open_breaker_are_in_the_partner_calls() {
    use wayfare::domain::breaker::{BreakerConfig, BreakerState};
    use wayfare::domain::saga::{CallOutcome, Step};

    let (seller, knobs) = FixedSeller::new("shaky", 20_000);
    let adapter = AdapterConfig {
        search_retries: 0,
        breaker: BreakerConfig {
            window: 2,
            minimum_calls: 2,
            open_ms: 600_000,
            ..BreakerConfig::default()
        },
        ..AdapterConfig::default()
    };
    let s = TestServer::start_built(quick, move |b| b.seller(seller.into_custom(adapter))).await;
    let rt = &s.runtime;
    knobs.failing.store(true, Ordering::SeqCst);
    let opened = poll_until(Duration::from_secs(20), async || {
        let open = rt
            .seller_stats()
            .iter()
            .any(|(name, st)| name == "shaky" && st.breaker_state() == BreakerState::Open);
        if !open {
            let day = 10 + knobs.searches.load(Ordering::SeqCst);
            let q = HotelQuery {
                city_or_hotel: "Testville".into(),
                check_in: in_days(day),
                check_out: in_days(day + 1),
            };
            let _ = rt.search_hotels(q, None).await;
        }
        open.then_some(())
    })
    .await;
    assert!(opened.is_some(), "the breaker did not open");

    let account = rt
        .create_account(NewAccount::new("Open", "open@example.com").unwrap())
        .await
        .unwrap()
        .id;
    let (b, _) = rt
        .book(BookingOrder {
            account_id: account,
            seller: "shaky".into(),
            sku: "hotel:test:h1:double".into(),
            start: in_days(40),
            end: in_days(42),
            offer_price: eur(20_000),
            wallet_points: eur(0),
            card_token: "tok_approve".into(),
            idempotency_key: "k-open".into(),
        })
        .await
        .unwrap();
    let done = settled(rt, &b.id).await;
    assert_eq!(done.state, SagaState::NeedsAttention, "{done:?}");
    assert_eq!(knobs.books.load(Ordering::SeqCst), 0, "never sent");
    let calls = done.partner_calls.expect("the operator sees them").calls;
    let seen: Vec<_> = calls
        .iter()
        .map(|c| {
            (
                c.partner.as_str(),
                c.operation.as_str(),
                c.step,
                c.attempt,
                c.outcome,
            )
        })
        .collect();
    let book = |n| ("shaky", "book", Step::Reserve, n, CallOutcome::CircuitOpen);
    let lookup = |n| {
        let step = Step::ReconcileReservation;
        ("shaky", "status", step, n, CallOutcome::CircuitOpen)
    };
    let mut expected = vec![("gateway", "authorize", Step::Authorize, 1, CallOutcome::Ok)];
    let budget = &rt.config().bookings.saga;
    expected.extend((1..=budget.max_attempts_before_pivot).map(book));
    expected.extend((1..=budget.max_reconcile_attempts).map(lookup));
    assert_eq!(seen, expected, "{calls:#?}");
    for c in calls
        .iter()
        .filter(|c| c.outcome == CallOutcome::CircuitOpen)
    {
        assert_eq!((c.duration_ms, c.http_status), (0, None), "{c:?}");
    }
    s.stop().await;
}
