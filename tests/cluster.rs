//! Several `wayfare serve` processes on one real PostgreSQL (tests/pg), with the partner
//! fakes as shared services outside them, as in a cluster: the nodes start together and
//! migrate once, agree on idempotency keys, wallet reads and search caches, a node SIGKILLed
//! with sagas in flight has them finished by another node once their leases run out, and a
//! node frozen with SIGSTOP cannot write once woken.
//!
//! Needs the `postgres` feature (scripts/test.sh turns it on); without it this suite is
//! empty, never passed.

#![cfg(feature = "postgres")]

mod common;
mod fakes;
mod pg;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use serde_json::{json, Value};
use wayfare::config::{Secret, StoreBackend, StoreConfig};
use wayfare::domain::account::AccountId;
use wayfare::store::postgres::{PgStore, MIGRATIONS};
use wayfare_drill::fakes::ledgers;

use common::wait_until;
use fakes::Process;
use pg::TempPostgres;

const OPERATOR_TOKEN: &str = "cluster-test-operator-token-0123456789";
/// A saga's lease in these tests: short, so a takeover is quick.
const LEASE_MS: u64 = 1_000;

/// One node: `wayfare serve` on the shared database, in its own directory.
fn start_node(root: &Path, name: &str, db_url: &str, config: &Path, lease_ms: u64) -> Process {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = fakes::wayfare_command(
        &dir,
        config,
        &root.join(format!("{name}.log")),
        OPERATOR_TOKEN,
    );
    command
        .env("WAYFARE__STORE__BACKEND", "postgres")
        .env("WAYFARE__STORE__URL", db_url)
        .env("WAYFARE__CLUSTER__NODE_ID", name)
        .env("WAYFARE__CLUSTER__LEASE_MS", lease_ms.to_string())
        .env("WAYFARE__LIMITS__ENABLED", "false");
    fakes::spawn_listening(command, "wayfare listening on ").unwrap_or_else(|| {
        panic!(
            "node {name} exited at start: {}",
            std::fs::read_to_string(root.join(format!("{name}.log"))).unwrap_or_default()
        )
    })
}

/// examples/partners.toml pointed at these fakes.
fn partners_config(
    root: &Path,
    alpha: &Process,
    bravo: &Process,
    gateway: &Process,
) -> std::path::PathBuf {
    let mut config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/partners.toml"
    ))
    .unwrap();
    for (port, fake) in [("9001", alpha), ("9002", bravo), ("9100", gateway)] {
        config = config.replace(&format!("http://127.0.0.1:{port}/"), &fake.url());
    }
    let path = root.join("partners.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn day(n: u64) -> chrono::NaiveDate {
    Utc::now()
        .date_naive()
        .checked_add_days(Days::new(n))
        .unwrap()
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    let reply = http.get(&url).send().await.unwrap();
    let status = reply.status();
    let body = reply.text().await.unwrap();
    assert!(status.is_success(), "GET {url}: {status} {body}");
    serde_json::from_str(&body).unwrap()
}

/// Two nodes on a fresh database with the partner fakes; every card call takes 700 ms, so
/// sagas are mid-flight when a node is killed or frozen.
struct TwoNodes {
    a: Process,
    b: Process,
    bravo: Process,
    gateway: Process,
    db: PgStore,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    _alpha: Process,
    _pg: TempPostgres,
}

impl TwoNodes {
    /// Starts both nodes at once on an empty database.
    fn start(db_name: &str) -> TwoNodes {
        Self::start_with_lease(db_name, LEASE_MS)
    }

    /// [`TwoNodes::start`] with leases of `lease_ms`.
    fn start_with_lease(db_name: &str, lease_ms: u64) -> TwoNodes {
        let pg = TempPostgres::start();
        let db_url = pg.create_db(db_name);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let alpha = fakes::fake_seller(&d.join("alpha"), &d.join("alpha.log"), &[]);
        let bravo = fakes::fake_seller(&d.join("bravo"), &d.join("bravo.log"), &[]);
        let gateway = fakes::fake_gateway(
            &d.join("gateway"),
            &d.join("gateway.log"),
            &["--latency-ms", "700"],
        );
        let config = partners_config(d, &alpha, &bravo, &gateway);
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| start_node(d, "node-a", &db_url, &config, lease_ms));
            let b = s.spawn(|| start_node(d, "node-b", &db_url, &config, lease_ms));
            (a.join().unwrap(), b.join().unwrap())
        });
        let db = PgStore::connect(&StoreConfig {
            backend: StoreBackend::Postgres,
            url: Some(Secret::new(&db_url)),
            pool_size: 2,
            ..StoreConfig::default()
        })
        .unwrap();
        TwoNodes {
            a,
            b,
            bravo,
            gateway,
            db,
            http: fakes::operator_client(OPERATOR_TOKEN, Duration::from_secs(10)),
            dir,
            _alpha: alpha,
            _pg: pg,
        }
    }

    /// The search URL of Lisbon hotels `from` days ahead, two nights, at node `base`.
    fn search(base: &str, from: u64) -> String {
        format!(
            "{base}/v1/search/hotels?city=Lisbon&check_in={}&check_out={}",
            day(from),
            day(from + 2)
        )
    }

    /// A bravo offer `from` days ahead, asked of node `base`.
    async fn bravo_offer(&self, base: &str, from: u64) -> Value {
        let search = Self::search(base, from);
        wait_until(Duration::from_secs(20), "a bravo offer", async || {
            let body: Value = self
                .http
                .get(&search)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            body["offers"]
                .as_array()?
                .iter()
                .find(|o| o["seller"] == "bravo")
                .cloned()
        })
        .await
    }

    /// Books through node `base` under `key`; the booking's id.
    async fn book(&self, base: &str, key: &str, body: &Value) -> String {
        let reply = self
            .http
            .post(format!("{base}/v1/bookings"))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        // 202 for a new booking, 200 for the same key's booking again.
        assert!(
            [200, 202].contains(&reply.status().as_u16()),
            "{}",
            reply.text().await.unwrap()
        );
        let body: Value = reply.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Waits until booking `id`, read through node `base`, is no longer in flight; its state.
    async fn settled(&self, base: &str, id: &str) -> String {
        wait_until(
            Duration::from_millis(LEASE_MS) + Duration::from_secs(20),
            format_args!("booking {id} settles (read through {base})"),
            async || {
                let body: Value = self
                    .http
                    .get(format!("{base}/v1/bookings/{id}"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let state = body["state"].as_str()?.to_owned();
                ["confirmed", "failed", "cancelled", "needs_attention"]
                    .contains(&state.as_str())
                    .then_some(state)
            },
        )
        .await
    }

    /// Each booking reserved once at bravo, authorized once and captured once at the
    /// gateway, and bravo holds no other reservation.
    async fn assert_once_at_partners(&self, ids: &[String]) {
        let seller = ledgers::fetch_seller(&self.http, &self.bravo.url())
            .await
            .unwrap();
        let paid = ledgers::fetch_gateway(&self.http, &self.gateway.url())
            .await
            .unwrap()
            .seen()
            .unwrap();
        for id in ids {
            let reservations = seller.reservations.iter().filter(|r| &r.key == id).count();
            assert_eq!(reservations, 1, "booking {id} reserved once: {seller:?}");
            let auths: Vec<_> = paid
                .ledger
                .authorizations
                .iter()
                .filter(|a| a.key == format!("{id}:authorize"))
                .collect();
            assert_eq!(auths.len(), 1, "booking {id} authorized once");
            let captures = paid
                .ledger
                .captures
                .iter()
                .filter(|c| c.authorization_id == auths[0].authorization_id)
                .count();
            assert_eq!(captures, 1, "booking {id} captured once");
        }
        assert_eq!(
            seller.reservations.len(),
            ids.len(),
            "no reservation without a booking"
        );
    }

    /// One figure from the database.
    async fn count(&self, sql: &str) -> i64 {
        self.db
            .client()
            .await
            .unwrap()
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// A booking of `offer` (`from` days ahead) for `account` with `points` of its wallet.
fn booking_of(offer: &Value, account: &str, from: u64, points: i64) -> Value {
    json!({
        "account_id": account,
        "seller": "bravo",
        "sku": offer["sku"],
        "start": day(from),
        "end": day(from + 2),
        "offer_price": offer["price"],
        "wallet_points": {"minor": points, "currency": "EUR"},
        "card_token": "tok_approve",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_saga_has_its_sagas_finished_by_another_node() {
    // Two nodes starting together on an empty database migrate it once.
    let c = TwoNodes::start("cluster");
    let applied = c.count("SELECT count(*) FROM schema_migrations").await;
    assert_eq!(
        applied as usize,
        MIGRATIONS.len(),
        "each migration applied once"
    );
    let (base_a, base_b) = (c.a.addr.clone(), c.b.addr.clone());
    let http = &c.http;

    // Both nodes see each other; /health says the database answers.
    let cluster: Value = wait_until(
        Duration::from_secs(10),
        "both nodes heartbeat",
        async || {
            let view: Value = http
                .get(format!("{base_b}/v1/system/cluster"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (view["members"].as_array()?.len() == 2).then_some(view)
        },
    )
    .await;
    assert_eq!(cluster["backend"], "postgres");
    assert_eq!(cluster["node"], "node-b");
    let health = get(http, format!("{base_a}/health")).await;
    assert_eq!(health["backend"], "postgres");
    assert_eq!(health["store"]["ok"], true, "{health}");

    // A wallet credit acknowledged by one node is read by the other once the staleness
    // bound has passed (node b may serve its view from memory until then, never longer).
    let account = AccountId::demo(3).to_string();
    let before = get(http, format!("{base_b}/v1/accounts/{account}")).await;
    let credited = http
        .post(format!("{base_a}/v1/accounts/{account}/wallet/credits"))
        .header("Idempotency-Key", "cluster-credit-1")
        .json(&json!({"amount": {"minor": 100_000, "currency": "EUR"}}))
        .send()
        .await
        .unwrap();
    assert!(
        credited.status().is_success(),
        "{}",
        credited.text().await.unwrap()
    );
    tokio::time::sleep(wayfare::store::postgres::views::STALENESS_BOUND).await;
    let after = get(http, format!("{base_b}/v1/accounts/{account}")).await;
    assert_eq!(
        after["wallet"]["balance"]["minor"].as_i64().unwrap(),
        before["wallet"]["balance"]["minor"].as_i64().unwrap() + 100_000,
        "node b reads node a's acknowledged credit"
    );

    // The same Idempotency-Key sent to both nodes at once makes one booking.
    let offer = c.bravo_offer(&base_a, 40).await;
    let booking = |points: i64| booking_of(&offer, &account, 40, points);
    let same = booking(100);
    let (r1, r2) = tokio::join!(
        c.book(&base_a, "cluster-same-key", &same),
        c.book(&base_b, "cluster-same-key", &same),
    );
    assert_eq!(r1, r2, "one booking for one key");
    let mut ids = vec![r1];

    // Node b's search cache holds the offer; a booking of it confirmed by node a drops it
    // there too (NOTIFY from a, LISTEN on b).
    let search_b = TwoNodes::search(&base_b, 40);
    wait_until(
        Duration::from_secs(10),
        "node b answers the search from its cache",
        async || {
            let body: Value = http.get(&search_b).send().await.ok()?.json().await.ok()?;
            (body["cached"] == true).then_some(())
        },
    )
    .await;
    let invalidating = c.book(&base_a, "cluster-invalidate", &booking(150)).await;
    assert_eq!(c.settled(&base_a, &invalidating).await, "confirmed");
    let body = get(http, search_b.clone()).await;
    assert_eq!(
        body["cached"], false,
        "node b dropped the booked SKU's cached search: {body}"
    );
    ids.push(invalidating);

    // Bookings through node a, then node a is killed while they wait on the card.
    for i in 0..6 {
        ids.push(
            c.book(&base_a, &format!("cluster-kill-{i}"), &booking(200 + i))
                .await,
        );
    }
    let held = c
        .count("SELECT count(*) FROM sagas WHERE owner_node = 'node-a' AND NOT terminal")
        .await;
    assert!(held > 0, "node a holds unfinished sagas when it is killed");
    signal(&c.a, libc::SIGKILL);
    let killed = Instant::now();

    // Node b takes them over once their leases run out, and finishes every one.
    for id in &ids {
        assert_eq!(c.settled(&base_b, id).await, "confirmed", "booking {id}");
    }
    eprintln!(
        "{held} sagas of the killed node finished by node b {:.1} s after the kill (lease {LEASE_MS} ms)",
        killed.elapsed().as_secs_f64(),
    );
    let taken = c
        .count("SELECT count(*) FROM sagas WHERE owner_node = 'node-b'")
        .await;
    assert!(taken > 0, "node b took sagas over");

    // Nothing lost or doubled at the partners; wallets equal their ledgers.
    c.assert_once_at_partners(&ids).await;
    assert_eq!(c.db.wallet_violations().await.unwrap(), vec![]);
    let ledger = get(
        http,
        format!("{base_b}/v1/accounts/{account}/wallet/ledger?limit=100"),
    )
    .await;
    let captures = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["key"].as_str().unwrap_or("").ends_with(":capture-wallet"))
        .count();
    assert_eq!(
        captures,
        ids.len(),
        "each booking's points captured once: {ledger}"
    );

    // Every customer email leaves the shared outbox once (claimed by one node's mailer).
    wait_until(Duration::from_secs(10), "the outbox drains", async || {
        let pending = c
            .count("SELECT count(*) FROM outbox WHERE status = 'pending'")
            .await;
        (pending == 0).then_some(())
    })
    .await;
    let sent = c
        .count("SELECT count(*) FROM outbox WHERE status = 'sent'")
        .await;
    assert_eq!(
        sent as usize,
        ids.len(),
        "one confirmation email per booking"
    );

    // The cluster view lists the dead node with an old heartbeat and no live leases.
    let (view, dead) = wait_until(
        Duration::from_secs(20),
        "the dead node's heartbeat is a second old",
        async || {
            let view = get(http, format!("{base_b}/v1/system/cluster")).await;
            let dead = view["members"]
                .as_array()?
                .iter()
                .find(|m| m["id"] == "node-a")
                .cloned()?;
            (dead["heartbeat_age_ms"].as_i64()? >= 1_000).then_some((view, dead))
        },
    )
    .await;
    assert_eq!(dead["sagas_held"], 0, "{view}");
}

/// Sends `signal` to a node's process.
fn signal(node: &Process, signal: libc::c_int) {
    let pid = node.child.id() as libc::pid_t;
    // SAFETY: kill(2) on a child this test started and has not reaped.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_loses_its_sagas_and_its_late_writes_are_refused() {
    let c = TwoNodes::start("paused");
    let (base_a, base_b) = (c.a.addr.clone(), c.b.addr.clone());
    let account = AccountId::demo(4).to_string();
    let offer = c.bravo_offer(&base_b, 50).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let body = booking_of(&offer, &account, 50, 100 + i);
        ids.push(c.book(&base_a, &format!("paused-{i}"), &body).await);
    }

    // Node a freezes (as a VM pause would) while its sagas wait on the card gateway.
    signal(&c.a, libc::SIGSTOP);
    for id in &ids {
        assert_eq!(c.settled(&base_b, id).await, "confirmed", "booking {id}");
    }
    let confirmed: Vec<Value> = futures_util::future::join_all(
        ids.iter()
            .map(|id| get(&c.http, format!("{base_b}/v1/bookings/{id}"))),
    )
    .await;

    // Node a wakes with its steps answered and its leases gone: its writes are fenced.
    signal(&c.a, libc::SIGCONT);
    wait_until(
        Duration::from_secs(20),
        "node a notices it was taken over",
        async || {
            let log = std::fs::read_to_string(c.dir.path().join("node-a.log")).ok()?;
            (log.contains("Saga taken over") || log.contains("lease lost")).then_some(())
        },
    )
    .await;
    // Proving that nothing happens needs a wait: one more lease length, in which node a,
    // awake and with its steps answered, would have written any step it still held (its
    // writes go out within a round trip of waking); each was refused instead.
    tokio::time::sleep(Duration::from_millis(LEASE_MS)).await;
    for (id, before) in ids.iter().zip(&confirmed) {
        let now = get(&c.http, format!("{base_a}/v1/bookings/{id}")).await;
        assert_eq!(&now, before, "node a's late write changed nothing of {id}");
    }
    c.assert_once_at_partners(&ids).await;
    assert_eq!(c.db.wallet_violations().await.unwrap(), vec![]);
    // And node a serves on, as a member again.
    let health = get(&c.http, format!("{base_a}/health")).await;
    assert_eq!(health["status"], "ok", "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_cleanly_gives_its_sagas_up_at_once() {
    // Leases far longer than the test waits: only a release lets node b take over.
    const LONG_LEASE_MS: u64 = 30_000;
    let c = TwoNodes::start_with_lease("stopped", LONG_LEASE_MS);
    let (base_a, base_b) = (c.a.addr.clone(), c.b.addr.clone());
    let account = AccountId::demo(5).to_string();
    let offer = c.bravo_offer(&base_b, 60).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = booking_of(&offer, &account, 60, 100 + i);
        ids.push(c.book(&base_a, &format!("stopped-{i}"), &body).await);
    }
    let held = c
        .count("SELECT count(*) FROM sagas WHERE owner_node = 'node-a' AND NOT terminal")
        .await;
    assert!(held > 0, "node a holds unfinished sagas when it is stopped");
    let stopped = Instant::now();
    signal(&c.a, libc::SIGTERM);
    for id in &ids {
        let state = wait_until(
            Duration::from_millis(LONG_LEASE_MS / 2),
            format_args!("booking {id} finishes on node b well before the lease runs out"),
            async || {
                let body: Value = c
                    .http
                    .get(format!("{base_b}/v1/bookings/{id}"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let state = body["state"].as_str()?.to_owned();
                ["confirmed", "failed", "cancelled", "needs_attention"]
                    .contains(&state.as_str())
                    .then_some(state)
            },
        )
        .await;
        assert_eq!(state, "confirmed", "booking {id}");
    }
    eprintln!(
        "{held} sagas of the stopped node finished by node b {:.1} s after SIGTERM (lease {LONG_LEASE_MS} ms)",
        stopped.elapsed().as_secs_f64()
    );
    let log = std::fs::read_to_string(c.dir.path().join("node-a.log")).unwrap();
    assert!(log.contains("Saga leases released"), "{log}");
    c.assert_once_at_partners(&ids).await;
    assert_eq!(c.db.wallet_violations().await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_the_node_not_driving_the_booking_is_accepted_and_taken() {
    let c = TwoNodes::start("cancels");
    let (base_a, base_b) = (c.a.addr.clone(), c.b.addr.clone());
    let account = AccountId::demo(6).to_string();
    let offer = c.bravo_offer(&base_b, 70).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = booking_of(&offer, &account, 70, 100 + i);
        ids.push(c.book(&base_a, &format!("cancel-{i}"), &body).await);
    }
    // Node a drives them (the card gateway answers after 0.7 s); node b takes the cancels.
    for id in &ids {
        let reply = c
            .http
            .post(format!("{base_b}/v1/bookings/{id}/cancel"))
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        assert_eq!(status, 202, "{}", reply.text().await.unwrap());
    }
    for id in &ids {
        wait_until(
            Duration::from_secs(30),
            format_args!("booking {id} ends cancelled"),
            async || {
                let body = get(&c.http, format!("{base_a}/v1/bookings/{id}")).await;
                let state = body["state"].as_str()?.to_owned();
                assert!(
                    !["failed", "needs_attention"].contains(&state.as_str()),
                    "booking {id}: {body}"
                );
                (state == "cancelled").then_some(())
            },
        )
        .await;
    }
    // Node b wrote none of these sagas, yet its /health counts them: the counts are the
    // cluster's, aggregated in the database every few seconds.
    wait_until(
        Duration::from_secs(20),
        "node b's /health counts the bookings node a drove",
        async || {
            let health = get(&c.http, format!("{base_b}/health")).await;
            let cancelled = health["sagas"]["by_state"]["cancelled"].as_u64()?;
            (cancelled >= ids.len() as u64).then_some(())
        },
    )
    .await;
    assert_eq!(c.db.wallet_violations().await.unwrap(), vec![]);
}
