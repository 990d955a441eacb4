//! The storage seam's behaviour, written once: each test below is a plain function taking
//! the trait objects (`AccountStore`, `SagaStore`, `Outbox`), and each backend's module at
//! the end runs every one of them against its implementation: sled in a temp dir, and
//! PostgreSQL on a throwaway server (tests/pg). A rule that holds on one backend and not
//! on the other fails here, whichever it is.

mod pg;

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use wayfare::domain::access::{AccessError, ApiKey, Caller};
use wayfare::domain::account::{AccountId, AccountRecord, NewAccount};
use wayfare::domain::money::{Currency, Money};
use wayfare::domain::outbox::{AfterFailure, EmailKind, MAX_DELIVERY_ATTEMPTS};
use wayfare::domain::saga::{
    email_for, new_booking, BookingId, BookingRequest, CallOutcome, PartnerCall, SagaRecord,
    SagaState, Step,
};
use wayfare::domain::wallet::{WalletError, WalletOp};
use wayfare::store::accounts::{AccountError, Taken};
use wayfare::store::sagas::{NewBooking, SagaWrite};
use wayfare::store::{AccountStore, Outbox, SagaStore};

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn record(id: AccountId, name: &str, email: &str) -> AccountRecord {
    let new = NewAccount::new(name, email).unwrap();
    AccountRecord::open(id, new, Currency::EUR, Utc::now())
}

fn booking(account: AccountId, key: &str, price: i64) -> SagaRecord {
    let request = BookingRequest {
        account_id: account,
        seller: "alpha".into(),
        sku: "hotel:test:h1:double".into(),
        start: NaiveDate::from_ymd_opt(2031, 5, 1).unwrap(),
        end: NaiveDate::from_ymd_opt(2031, 5, 3).unwrap(),
        wallet_points: eur(0),
        card_token: "tok_approve".into(),
        offer_price: eur(price),
        idempotency_key: key.into(),
    };
    new_booking(BookingId::new(), request, Utc::now()).unwrap()
}

/// An account opens once per id and once per email (whatever its case); its owner's key
/// reads it, another key is told apart from an unknown one.
async fn accounts_open_once_and_answer_their_owner(store: &dyn AccountStore) {
    let (id, key) = (AccountId::random(), ApiKey::generate());
    let opened = store
        .open(record(id, "Ada", "ada@example.com"), Some(key.digest()))
        .await
        .unwrap();
    assert_eq!(opened.account.email, "ada@example.com");
    let again = store
        .open(record(id, "Ada", "other@example.com"), None)
        .await;
    assert_eq!(
        again.unwrap_err(),
        AccountError::AlreadyExists(Taken::Id(id))
    );
    let same_email = store
        .open(record(AccountId::random(), "Eve", "ADA@example.com "), None)
        .await;
    assert_eq!(
        same_email.unwrap_err(),
        AccountError::AlreadyExists(Taken::Email)
    );

    let read = store
        .account(id, Caller::Customer(key.digest()))
        .await
        .unwrap();
    assert_eq!(read.account.name, "Ada");
    assert_eq!(read.key, Some(key.digest()));
    let (other, other_key) = (AccountId::random(), ApiKey::generate());
    store
        .open(
            record(other, "Bob", "bob@example.com"),
            Some(other_key.digest()),
        )
        .await
        .unwrap();
    let not_yours = store
        .account(id, Caller::Customer(other_key.digest()))
        .await;
    assert!(
        matches!(
            not_yours,
            Err(AccountError::Access(AccessError::NotYours { .. }))
        ),
        "{not_yours:?}"
    );
    let unknown = store
        .account(id, Caller::Customer(ApiKey::generate().digest()))
        .await;
    assert!(
        matches!(
            unknown,
            Err(AccountError::Access(AccessError::Unauthenticated(_)))
        ),
        "{unknown:?}"
    );
    let missing = store.account(AccountId::random(), Caller::Operator).await;
    assert!(
        matches!(missing, Err(AccountError::NotFound(_))),
        "{missing:?}"
    );
    assert!(store.key_known(&key.digest()).await.unwrap());
}

/// A wallet change happens once per idempotency key; a replay returns the first receipt,
/// the key with another operation is refused, and no hold exceeds the balance.
async fn wallet_changes_are_idempotent_and_never_overdraw(store: &dyn AccountStore) {
    let id = AccountId::random();
    store
        .open(record(id, "Ada", &format!("{}@example.com", id.0)), None)
        .await
        .unwrap();
    let credit = WalletOp::Credit { amount: eur(1_000) };
    let (first, _) = store.change_wallet(id, "c-1", &credit).await.unwrap();
    assert!(!first.replayed);
    assert_eq!(first.wallet.balance, eur(1_000));
    let (replay, _) = store.change_wallet(id, "c-1", &credit).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.entry.seq, first.entry.seq);
    let other = WalletOp::Credit { amount: eur(5) };
    let conflict = store.change_wallet(id, "c-1", &other).await.unwrap_err();
    assert_eq!(conflict, AccountError::KeyConflict("c-1".into()));
    let too_much = WalletOp::Hold {
        hold_id: "h-1".into(),
        amount: eur(1_001),
    };
    let refused = store.change_wallet(id, "h-1", &too_much).await.unwrap_err();
    assert!(
        matches!(
            refused,
            AccountError::Wallet(WalletError::InsufficientFunds { .. })
        ),
        "{refused:?}"
    );
    let hold = WalletOp::Hold {
        hold_id: "h-2".into(),
        amount: eur(400),
    };
    let (held, _) = store.change_wallet(id, "h-2", &hold).await.unwrap();
    assert_eq!(held.wallet.held, eur(400));
    let capture = WalletOp::Capture {
        hold_id: "h-2".into(),
    };
    let (captured, _) = store.change_wallet(id, "cap-2", &capture).await.unwrap();
    assert_eq!(captured.wallet.balance, eur(600));
    assert_eq!(captured.wallet.held, eur(0));

    let page = store.ledger_page(id, Caller::Operator, 0, 2).await.unwrap();
    assert_eq!(page.entries.len(), 2);
    let after = page.next_after.expect("a second page");
    let rest = store
        .ledger_page(id, Caller::Operator, after, 10)
        .await
        .unwrap();
    assert_eq!(rest.entries.len(), 1);
    assert_eq!(rest.next_after, None);
}

/// A key is replaced (the old one stops being known) or only added when missing.
async fn keys_are_replaced_or_added_once(store: &dyn AccountStore) {
    let id = AccountId::random();
    let (old, new) = (ApiKey::generate(), ApiKey::generate());
    store
        .open(
            record(id, "Ada", &format!("{}@example.com", id.0)),
            Some(old.digest()),
        )
        .await
        .unwrap();
    let (set, _) = store.set_key(id, new.digest(), true).await.unwrap();
    assert!(!set, "a key exists: left alone");
    let (set, _) = store.set_key(id, new.digest(), false).await.unwrap();
    assert!(set);
    assert!(store.key_known(&new.digest()).await.unwrap());
    assert!(!store.key_known(&old.digest()).await.unwrap());
    assert_eq!(store.demo_seeded().await.unwrap(), None);
    store.set_demo_seeded(5).await.unwrap();
    assert_eq!(store.demo_seeded().await.unwrap(), Some(5));
}

/// One booking per client key, through any caller; the account lists it; a step saved
/// with its email queues the email.
async fn bookings_are_created_once_per_key(sagas: &dyn SagaStore, outbox: &dyn Outbox) {
    let account = AccountId::random();
    let first = booking(account, "k-1", 20_000);
    let id = first.saga_id.to_string();
    let key = format!("{account}/k-1");
    assert_eq!(sagas.find_booking(&first, &key).await.unwrap(), None);
    assert_eq!(
        sagas.create_booking(&first, &key).await.unwrap(),
        NewBooking::Created
    );
    let replay = booking(account, "k-1", 20_000);
    assert_eq!(
        sagas.create_booking(&replay, &key).await.unwrap(),
        NewBooking::Existing(id.clone())
    );
    assert_eq!(
        sagas.find_booking(&replay, &key).await.unwrap(),
        Some(NewBooking::Existing(id.clone()))
    );
    let reused = booking(account, "k-1", 30_000);
    assert_eq!(
        sagas.find_booking(&reused, &key).await.unwrap(),
        Some(NewBooking::KeyReused)
    );
    assert_eq!(
        sagas.create_booking(&reused, &key).await.unwrap(),
        NewBooking::KeyReused
    );
    assert_eq!(sagas.load(&id).await.unwrap().as_ref(), Some(&first));
    assert_eq!(sagas.load("no-such-saga").await.unwrap(), None);
    assert_eq!(
        sagas.account_bookings(account, None, 10).await.unwrap(),
        vec![id.clone()]
    );
    assert!(sagas.may_drive(&id));

    let mut step = first.clone();
    step.state = SagaState::Confirmed;
    // The partner calls a step made are stored with it.
    for (outcome, status) in [(CallOutcome::Failed, 503), (CallOutcome::Ok, 201)] {
        step.calls.record(PartnerCall {
            partner: "alpha".into(),
            operation: "book".into(),
            step: Step::Reserve,
            attempt: 0,
            started_at: Utc::now(),
            duration_ms: 40,
            outcome,
            http_status: Some(status),
            detail: None,
        });
    }
    let email = email_for(&step, EmailKind::Confirmed, "ada@example.com", Utc::now());
    let saved = sagas
        .save(SagaWrite {
            record: &step,
            was: Some(first.state),
            email: Some(&email),
            finished: None,
        })
        .await
        .unwrap();
    assert!(!saved.cancel_requested);
    let loaded = sagas.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.state, SagaState::Confirmed);
    assert_eq!(loaded.calls, step.calls);
    assert_eq!(loaded.calls.calls[1].attempt, 2);
    let claimed = outbox.claim(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].email, email);
    assert_eq!(claimed[0].attempt, 1);
    outbox.mark_sent(claimed).await.unwrap();
    assert!(
        outbox.claim(10).await.unwrap().is_empty(),
        "sent emails stay sent"
    );
    sagas.refresh_counts().await.unwrap();
    assert!(
        sagas
            .counts(10)
            .by_state
            .get("confirmed")
            .copied()
            .unwrap_or(0)
            >= 1
    );
}

/// A cancel stored by anyone reaches the saga at its next save; a confirmed booking with
/// one reads as awaiting its cancellation.
async fn a_stored_cancel_reaches_the_next_save(sagas: &dyn SagaStore) {
    let account = AccountId::random();
    let first = booking(account, "k-cancel", 20_000);
    let id = first.saga_id.to_string();
    sagas
        .create_booking(&first, &format!("{account}/k-cancel"))
        .await
        .unwrap();
    sagas.request_cancel(&id).await.unwrap();
    let mut step = first.clone();
    step.state = SagaState::PaymentAuthorized;
    let saved = sagas
        .save(SagaWrite {
            record: &step,
            was: Some(first.state),
            email: None,
            finished: None,
        })
        .await
        .unwrap();
    assert!(saved.cancel_requested);
    let mut confirmed = step.clone();
    confirmed.state = SagaState::Confirmed;
    sagas
        .save(SagaWrite {
            record: &confirmed,
            was: Some(step.state),
            email: None,
            finished: None,
        })
        .await
        .unwrap();
    let read = sagas.load(&id).await.unwrap().unwrap();
    assert!(
        read.cancel_requested,
        "a confirmed booking awaits its cancellation"
    );
}

/// A failed email waits before its next attempt, counts it, and is parked with its reason
/// after the last one, never claimed again.
async fn failing_emails_back_off_and_park(sagas: &dyn SagaStore, outbox: &dyn Outbox) {
    let account = AccountId::random();
    let first = booking(account, "k-mail", 20_000);
    sagas
        .create_booking(&first, &format!("{account}/k-mail"))
        .await
        .unwrap();
    let mut step = first.clone();
    step.state = SagaState::Failed;
    let email = email_for(&step, EmailKind::Failed, "ada@example.com", Utc::now());
    sagas
        .save(SagaWrite {
            record: &step,
            was: Some(first.state),
            email: Some(&email),
            finished: None,
        })
        .await
        .unwrap();
    let mut claimed = outbox.claim(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let verdict = outbox.failed(claimed.remove(0), "smtp down").await.unwrap();
    let AfterFailure::RetryAfter(wait) = verdict else {
        panic!("the first failure is retried: {verdict:?}");
    };
    assert!(
        outbox.claim(10).await.unwrap().is_empty(),
        "waits out its retry first"
    );
    // Claimed again once the wait has passed (the deadline leaves room for a slow box).
    let mut again = common::wait_until(wait * 10, "the email is due again", async || {
        let claimed = outbox.claim(10).await.unwrap();
        (!claimed.is_empty()).then_some(claimed)
    })
    .await;
    assert_eq!(again[0].attempt, 2, "the failed attempt was counted");
    // Skip the waits in between: the last attempt fails too.
    let mut last = again.remove(0);
    last.attempt = MAX_DELIVERY_ATTEMPTS;
    assert_eq!(
        outbox.failed(last, "smtp down").await.unwrap(),
        AfterFailure::Park
    );
    outbox.refresh_counts().await.unwrap();
    let counts = outbox.counts();
    assert_eq!(counts.parked, 1);
    assert_eq!(counts.parked_listed[0].id, email.id);
    assert_eq!(counts.parked_listed[0].reason, "smtp down");
    // Parked for good: not claimed again, even after the longest wait.
    assert!(outbox.claim(10).await.unwrap().is_empty());
}

mod common {
    //! `wait_until` of tests/common, without the server helpers this suite does not use.
    use std::time::{Duration, Instant};

    pub async fn wait_until<T>(
        timeout: Duration,
        what: &str,
        mut look: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = look().await {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every behaviour above, on one backend's stores.
struct Backend {
    accounts: Arc<dyn AccountStore>,
    sagas: Arc<dyn SagaStore>,
    outbox: Arc<dyn Outbox>,
}

/// Each behaviour on fresh stores, opened as the runtime opens them: the saga store has
/// read what to resume (and installed its counts) before anything else.
async fn run_all(make: impl AsyncFn() -> Backend) {
    let make = async || {
        let b = make().await;
        b.sagas.resumable().await.unwrap();
        b
    };
    let b = make().await;
    accounts_open_once_and_answer_their_owner(&*b.accounts).await;
    let b = make().await;
    wallet_changes_are_idempotent_and_never_overdraw(&*b.accounts).await;
    let b = make().await;
    keys_are_replaced_or_added_once(&*b.accounts).await;
    let b = make().await;
    bookings_are_created_once_per_key(&*b.sagas, &*b.outbox).await;
    let b = make().await;
    a_stored_cancel_reaches_the_next_save(&*b.sagas).await;
    let b = make().await;
    failing_emails_back_off_and_park(&*b.sagas, &*b.outbox).await;
}

#[tokio::test]
async fn sled() {
    use wayfare::store::{SledAccounts, SledOutbox, SledSagas, SledStore, Store};
    let dirs = std::sync::Mutex::new(Vec::new());
    run_all(async || {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        dirs.lock().unwrap().push(dir);
        Backend {
            accounts: Arc::new(SledAccounts::new(store.clone(), 100)).for_shard(),
            sagas: Arc::new(SledSagas::new(store.clone())),
            outbox: Arc::new(SledOutbox::new(store)),
        }
    })
    .await;
}

#[tokio::test]
async fn postgres() {
    use wayfare::config::{Secret, StoreBackend, StoreConfig};
    use wayfare::store::postgres::{PgAccounts, PgNode, PgStore};
    let server = pg::TempPostgres::start();
    let n = std::sync::atomic::AtomicUsize::new(0);
    run_all(async || {
        let url = server.create_db(&format!(
            "contract{}",
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let config = StoreConfig {
            backend: StoreBackend::Postgres,
            url: Some(Secret::new(&url)),
            pool_size: 4,
            ..StoreConfig::default()
        };
        let db = PgStore::connect(&config).unwrap();
        db.migrate().await.unwrap();
        let node = Arc::new(PgNode::new(
            db.clone(),
            &url,
            "node-a",
            "127.0.0.1:0",
            Duration::from_secs(30),
        ));
        Backend {
            accounts: Arc::new(PgAccounts::new(db, 100)),
            sagas: node.clone(),
            outbox: node,
        }
    })
    .await;
}
