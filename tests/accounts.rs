//! Accounts over real HTTP: one email address opens one account (a unique index written
//! with the account), demo seeding stays idempotent, and reads answered from the read
//! model follow every acknowledged change, also when the cache (and with it the read
//! model) is smaller than the number of accounts.

mod common;

use std::sync::Arc;

use common::{assert_problem, client_with, FetchJson, TestServer};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use wayfare::domain::account::AccountId;
use wayfare::store::{Entry, Op, Store, StoreError, StoreFuture, Tree};

async fn open(s: &TestServer, name: &str, email: &str) -> reqwest::Response {
    s.anonymous
        .post(s.url("/v1/accounts"))
        .json(&json!({"name": name, "email": email}))
        .send()
        .await
        .unwrap()
}

#[actix_rt::test]
async fn one_email_address_opens_one_account() {
    let s = TestServer::start().await;
    let res = open(&s, "Ann", "Ann@Example.com").await;
    assert_eq!(res.status(), 201);
    // The same address, in another case and with spaces around it: 409, naming `email`.
    for again in ["Ann@Example.com", " ann@example.com ", "ANN@EXAMPLE.COM"] {
        let res = open(&s, "Ann again", again).await;
        let body = assert_problem(res, 409, "conflict", None).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.starts_with("email"), "{detail}");
    }
    // Another address is fine.
    assert_eq!(open(&s, "Ann", "ann@example.org").await.status(), 201);
    // The embedding API says the same.
    let new = wayfare::domain::account::NewAccount::new("Kim", "ann@EXAMPLE.com").unwrap();
    let refused = s.runtime.create_account(new).await.unwrap_err();
    assert!(
        matches!(&refused, wayfare::Error::Conflict(d) if d.starts_with("email")),
        "{refused:?}"
    );
    s.stop().await;
}

/// Racing opens with one address land on different shards (random ids); the store's
/// unique index lets exactly one through.
#[actix_rt::test]
async fn racing_opens_with_one_address_open_one_account() {
    let s = TestServer::start_with(|c| c.accounts.shards = 4).await;
    let tries = 12;
    let mut racing = Vec::new();
    for i in 0..tries {
        let req = s
            .anonymous
            .post(s.url("/v1/accounts"))
            .json(&json!({"name": format!("Racer {i}"), "email": "race@example.com"}))
            .send();
        racing.push(actix_rt::spawn(req));
    }
    let mut codes = Vec::new();
    for r in racing {
        codes.push(r.await.unwrap().unwrap().status().as_u16());
    }
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 1, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == 409).count(),
        tries - 1,
        "{codes:?}"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn demo_seeding_stays_idempotent() {
    let s = TestServer::start_with(|c| c.demo.accounts = 3).await;
    // Seeding again creates nothing and fails nothing (ids are checked before emails).
    assert_eq!(s.runtime.seed_demo(3, 500).await.unwrap(), 0);
    assert_eq!(s.runtime.seed_demo(5, 0).await.unwrap(), 2);
    assert_eq!(s.runtime.seed_demo(5, 0).await.unwrap(), 0);
    // A demo account's address is taken like any other.
    let res = open(&s, "Copycat", "person1@example.com").await;
    assert_problem(res, 409, "conflict", None).await;
    // Demo keys work on their accounts.
    let demo = client_with(wayfare::domain::access::ApiKey::demo(4).reveal());
    let url = s.url(&format!("/v1/accounts/{}", AccountId::demo(4)));
    let account: Value = demo.get(&url).fetch_json().await;
    assert_eq!(account["name"], "Person_4");
    s.stop().await;
}

/// Ten accounts through a cache of two per shard: every read, by the owner, shows the
/// last acknowledged credit, though accounts keep being evicted and loaded again.
#[actix_rt::test]
async fn reads_follow_acknowledged_changes_through_evictions() {
    let s = TestServer::start_with(|c| c.accounts.cache_capacity = 2).await;
    let mut customers = Vec::new();
    for i in 0..10 {
        customers.push(s.create_customer(&format!("C{i}")).await);
    }
    for round in 1..=3_i64 {
        for (i, (id, owner)) in customers.iter().enumerate() {
            let url = s.url(&format!("/v1/accounts/{id}/wallet/credits"));
            let res = s
                .http
                .post(&url)
                .header("Idempotency-Key", format!("r{round}-{i}"))
                .json(&json!({"amount": {"currency": "EUR", "minor": 10}}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
            let account: Value = owner
                .get(s.url(&format!("/v1/accounts/{id}")))
                .fetch_json()
                .await;
            assert_eq!(
                account["wallet"]["balance"]["minor"],
                10 * round,
                "{account}"
            );
        }
    }
    s.stop().await;
}

/// A store whose flushes wait while the test holds them, and say so: the test knows a
/// write is applied but not yet durable, without a sleep.
struct GatedStore {
    inner: Arc<dyn Store>,
    held: watch::Receiver<bool>,
    waiting: mpsc::UnboundedSender<()>,
}

impl Store for GatedStore {
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
        self.inner.write(ops)
    }

    fn flush(&self) -> StoreFuture<()> {
        let (mut held, waiting, inner) =
            (self.held.clone(), self.waiting.clone(), self.inner.clone());
        Box::pin(async move {
            if *held.borrow_and_update() {
                let _ = waiting.send(());
                while *held.borrow_and_update() {
                    if held.changed().await.is_err() {
                        break;
                    }
                }
            }
            // Flushing later covers at least every write made before this call.
            inner.flush().await
        })
    }
}

/// While a credit's flush is held, the credit is applied in the shard but not durable:
/// every read (the owner's, the operator's, the embedding API's) shows the old balance;
/// once the flush completes and the credit is acknowledged, the new one.
#[actix_rt::test]
async fn a_credit_in_flight_is_invisible_until_acknowledged() {
    let (hold, held) = watch::channel(false);
    let (waiting, mut flush_waits) = mpsc::unbounded_channel();
    let s = TestServer::start_built(
        |_| {},
        move |builder| {
            builder.store_layer(move |inner| {
                Arc::new(GatedStore {
                    inner,
                    held,
                    waiting,
                })
            })
        },
    )
    .await;
    let (id, owner) = s.create_customer("Patient").await;
    let account = s.url(&format!("/v1/accounts/{id}"));
    let before: Value = owner.get(&account).fetch_json().await;
    assert_eq!(before["wallet"]["balance"]["minor"], 0);

    hold.send(true).unwrap();
    let credit = s
        .http
        .post(s.url(&format!("/v1/accounts/{id}/wallet/credits")))
        .header("Idempotency-Key", "held-credit")
        .json(&json!({"amount": {"currency": "EUR", "minor": 700}}))
        .send();
    let credit = actix_rt::spawn(credit);
    flush_waits.recv().await.expect("the credit's flush waits");
    for client in [&owner, &s.http] {
        let read: Value = client.get(&account).fetch_json().await;
        assert_eq!(read["wallet"]["balance"]["minor"], 0, "{read}");
    }
    let id: AccountId = id.parse().unwrap();
    let read = s.runtime.account(id).await.unwrap();
    let wallet = serde_json::to_value(read.wallet).unwrap();
    assert_eq!(wallet["balance"]["minor"], 0, "the embedding API: {wallet}");
    assert!(!credit.is_finished(), "acknowledged before its flush");

    hold.send(false).unwrap();
    assert_eq!(credit.await.unwrap().unwrap().status(), 201);
    let after: Value = owner.get(&account).fetch_json().await;
    assert_eq!(after["wallet"]["balance"]["minor"], 700, "{after}");
    s.stop().await;
}

/// Counts scans of one account's ledger: each is a cold load folding it.
struct LedgerScans {
    inner: Arc<dyn Store>,
    of: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    scans: Arc<std::sync::atomic::AtomicUsize>,
}

impl Store for LedgerScans {
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
        if tree == Tree::Ledger && self.of.lock().unwrap().as_deref() == Some(prefix) {
            self.scans.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.scan(tree, prefix, after, limit)
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.inner.write(ops)
    }

    fn flush(&self) -> StoreFuture<()> {
        self.inner.flush()
    }
}

/// Loading an account that is not in memory folds its whole ledger on its shard's thread:
/// only its owner (or the operator) can make the shard do that. Anyone else is answered
/// from the stored key digest, with the answer the loaded account would give.
#[actix_rt::test]
async fn only_the_owner_can_make_a_shard_load_a_cold_account() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let of = Arc::new(std::sync::Mutex::new(None));
    let scans = Arc::new(AtomicUsize::new(0));
    let (of_layer, scans_layer) = (of.clone(), scans.clone());
    // One cached account per shard, one shard: opening another account evicts the first.
    let s = TestServer::start_built(
        |c| {
            c.accounts.shards = 1;
            c.accounts.cache_capacity = 1;
        },
        move |builder| {
            builder.store_layer(move |inner| {
                Arc::new(LedgerScans {
                    inner,
                    of: of_layer,
                    scans: scans_layer,
                })
            })
        },
    )
    .await;
    let (victim, owner) = s.create_customer("Victim").await;
    let victim_id: AccountId = victim.parse().unwrap();
    *of.lock().unwrap() = Some(victim_id.as_bytes().to_vec());
    let (_, stranger) = s.create_customer("Stranger").await;
    let account = s.url(&format!("/v1/accounts/{victim}"));

    // Another customer's key, an unknown key, no key: refused without a load.
    let res = stranger.get(&account).send().await.unwrap();
    assert_problem(res, 404, "not-found", None).await;
    let unknown = client_with(&format!("wf_{}", "ab".repeat(32)));
    let res = unknown.get(&account).send().await.unwrap();
    assert_problem(res, 401, "unauthorized", None).await;
    let res = s.anonymous.get(&account).send().await.unwrap();
    assert_problem(res, 401, "unauthorized", None).await;
    assert_eq!(
        scans.load(Ordering::SeqCst),
        0,
        "nobody but the owner loads it"
    );

    // The owner does load it, once.
    let mine: Value = owner.get(&account).fetch_json().await;
    assert_eq!(mine["id"], victim);
    assert_eq!(scans.load(Ordering::SeqCst), 1);
    s.stop().await;
}
