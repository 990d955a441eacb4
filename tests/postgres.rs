//! The PostgreSQL store against a real PostgreSQL (tests/pg: a throwaway server per test,
//! from Debian's `postgresql` package; a test fails naming the package when it is missing).
//!
//! Nodes are simulated the way they meet in a cluster: separate connection pools (or
//! separate `wayfare` processes for migrations) on one database.
//!
//! Needs the `postgres` feature (scripts/test.sh turns it on); without it this suite is
//! empty, never passed.

#![cfg(feature = "postgres")]

mod common;
mod fakes;
mod pg;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use pg::TempPostgres;
use uuid::Uuid;
use wayfare::config::{Secret, StoreBackend, StoreConfig};
use wayfare::domain::account::{AccountId, NewAccount};
use wayfare::domain::money::{Currency, Money};
use wayfare::domain::wallet::{WalletError, WalletOp};
use wayfare::store::postgres::sagas::{Created, Lease, OutboxEmail, SagaRow, SagaWriteError};
use wayfare::store::postgres::wallet::{NewAccountRow, WalletFailure};
use wayfare::store::postgres::{PgStore, MIGRATIONS};

fn store_config(url: &str) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Postgres,
        url: Some(Secret::new(url)),
        pool_size: 8,
        ..StoreConfig::default()
    }
}

/// A node's view of the database: its own pool, schema applied.
async fn node(url: &str) -> PgStore {
    let store = PgStore::connect(&store_config(url)).unwrap();
    store.migrate().await.unwrap();
    store
}

async fn account_with(store: &PgStore, credit: i64) -> AccountId {
    let id = AccountId(Uuid::new_v4());
    let opened = store
        .open_account(&NewAccountRow {
            id,
            name: "Ada".into(),
            email: format!("{}@example.com", id.0),
            currency: Currency::EUR,
            created_at: Utc::now(),
        })
        .await
        .unwrap();
    assert!(opened);
    if credit > 0 {
        let op = WalletOp::Credit {
            amount: Money::new(credit, Currency::EUR),
        };
        store.change_wallet(id, "credit-1", &op).await.unwrap();
    }
    id
}

/// Sagas whose lease has not run out yet, by the database's clock.
async fn live_leases(store: &PgStore) -> i64 {
    let client = store.client().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM sagas WHERE lease_expires_at > now()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits until the lease of saga `id` has run out, by the database's clock.
async fn lease_run_out(store: &PgStore, id: &str) {
    common::wait_until(
        Duration::from_secs(10),
        format!("the lease of {id} ran out"),
        async || {
            let client = store.client().await.unwrap();
            let live: bool = client
                .query_one(
                    "SELECT coalesce(lease_expires_at > now(), false) FROM sagas WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get(0);
            (!live).then_some(())
        },
    )
    .await;
}

fn saga_row(id: &str, state: &str) -> SagaRow {
    SagaRow {
        id: id.into(),
        account_id: None,
        state: state.into(),
        terminal: false,
        record: state.as_bytes().to_vec(),
        trace_parent: Some(format!("00-{:032x}-00f067aa0ba902b7-01", id.len() + 1)),
    }
}

/// `wayfare migrate` against `url`, as a node would run it.
fn migrate(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wayfare"));
    cmd.arg("migrate")
        .env("WAYFARE__STORE__BACKEND", "postgres")
        .env("WAYFARE__STORE__URL", url)
        .current_dir(std::env::temp_dir());
    cmd
}

#[test]
fn three_nodes_starting_together_apply_the_migrations_once() {
    let pg = TempPostgres::start();
    let url = pg.create_db("cluster");
    // One after another, then three at once.
    let migrators: Vec<_> = (0..3).map(|_| migrate(&url).output().unwrap()).collect();
    let url2 = pg.create_db("cluster_parallel");
    let children: Vec<_> = (0..3)
        .map(|_| {
            migrate(&url2)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let parallel: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let latest = MIGRATIONS.last().unwrap().0;
    for outputs in [&migrators, &parallel] {
        let stdout: Vec<String> = outputs
            .iter()
            .map(|o| {
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                String::from_utf8_lossy(&o.stdout).trim().to_owned()
            })
            .collect();
        let applied = stdout.iter().filter(|s| s.contains("(applied 1")).count();
        let current = stdout
            .iter()
            .filter(|s| *s == &format!("schema at version {latest} (already current)"))
            .count();
        assert_eq!((applied, current), (1, 2), "{stdout:?}");
    }
    // And the database agrees: one row per migration.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = PgStore::connect(&store_config(&url2)).unwrap();
        let client = store.client().await.unwrap();
        let n: i64 = client
            .query_one("SELECT count(*) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, MIGRATIONS.len() as i64);
    });
}

#[test]
fn migrate_refuses_a_sled_store_and_serve_names_an_unreachable_database() {
    let out = Command::new(env!("CARGO_BIN_EXE_wayfare"))
        .arg("migrate")
        .env("WAYFARE__DEMO__ACCOUNTS", "0")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store.backend is \"sled\""), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wayfare"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("WAYFARE__STORE__BACKEND", "postgres")
        .env(
            "WAYFARE__STORE__URL",
            "postgres://wayfare:s3cret-pw@127.0.0.1:1/wayfare",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the PostgreSQL database") && err.contains("unreachable"),
        "{err}"
    );
    assert!(
        !err.contains("s3cret-pw"),
        "the URL's password leaked: {err}"
    );
}

#[test]
fn store_config_is_checked_and_its_url_redacted() {
    let check = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wayfare"));
        cmd.arg("check-config").current_dir(std::env::temp_dir());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = check(&[("WAYFARE__STORE__BACKEND", "postgres")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("store.url"));
    let out = check(&[
        ("WAYFARE__STORE__BACKEND", "postgres"),
        ("WAYFARE__STORE__URL", "mysql://root:pw@db/x"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("store.url") && err.contains("postgres://"),
        "{err}"
    );
    assert!(!err.contains("root:pw"), "{err}");
    let out = check(&[("WAYFARE__STORE__URL", "postgres://u@h/db")]);
    assert!(
        !out.status.success(),
        "a URL with the sled backend is refused"
    );
    let out = check(&[
        ("WAYFARE__STORE__BACKEND", "postgres"),
        (
            "WAYFARE__STORE__URL",
            "postgres://wayfare:s3cret-pw@db.internal:5432/wayfare",
        ),
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("backend = \"postgres\""), "{printed}");
    assert!(printed.contains("url = \"<redacted>\""), "{printed}");
    assert!(!printed.contains("s3cret-pw"));
}

#[actix_rt::test]
async fn concurrent_holds_through_two_nodes_never_overdraw() {
    let pg = TempPostgres::start();
    let url = pg.create_db("wallets");
    let (a, b) = (node(&url).await, node(&url).await);
    let id = account_with(&a, 1_000).await;
    // 40 holds of 100 against 1,000 points, half through each node, all at once.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let op = WalletOp::Hold {
                    hold_id: format!("h{i}"),
                    amount: Money::new(100, Currency::EUR),
                };
                store.change_wallet(id, &format!("hold-{i}"), &op).await
            })
        })
        .collect();
    let mut held = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(receipt) => {
                assert!(!receipt.replayed);
                held += 1;
            }
            Err(WalletFailure::Refused(WalletError::InsufficientFunds { .. })) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert_eq!(held, 10, "exactly the points there were");
    let wallet = b.wallet(id).await.unwrap().unwrap().wallet;
    assert_eq!((wallet.balance, wallet.held()), (1_000, 1_000));
    assert!(a.wallet_violations().await.unwrap().is_empty());
    // The database refuses an overdraw even when asked directly.
    let client = a.client().await.unwrap();
    let refused = client
        .execute(
            "UPDATE accounts SET held = balance + 1 WHERE id = $1",
            &[&id.0],
        )
        .await;
    assert!(refused.is_err(), "CHECK (held <= balance) must refuse");
}

#[actix_rt::test]
async fn a_replay_through_another_node_returns_the_stored_receipt() {
    let pg = TempPostgres::start();
    let url = pg.create_db("replays");
    let (a, b) = (node(&url).await, node(&url).await);
    let id = account_with(&a, 500).await;
    let hold = WalletOp::Hold {
        hold_id: "booking-1".into(),
        amount: Money::new(200, Currency::EUR),
    };
    let first = a.change_wallet(id, "hold-booking-1", &hold).await.unwrap();
    let again = b.change_wallet(id, "hold-booking-1", &hold).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.entry, first.entry);
    assert_eq!(b.wallet(id).await.unwrap().unwrap().wallet.held(), 200);
    // The same key for another operation is a conflict, not a second change.
    let other = WalletOp::Hold {
        hold_id: "booking-2".into(),
        amount: Money::new(10, Currency::EUR),
    };
    assert!(matches!(
        b.change_wallet(id, "hold-booking-1", &other).await,
        Err(WalletFailure::KeyConflict(_))
    ));
    // A release of a hold that never landed leaves a tombstone: the late hold is refused.
    let release = WalletOp::Release {
        hold_id: "booking-3".into(),
    };
    assert!(matches!(
        a.change_wallet(id, "release-booking-3", &release).await,
        Err(WalletFailure::Refused(WalletError::UnknownHold(_)))
    ));
    let late = WalletOp::Hold {
        hold_id: "booking-3".into(),
        amount: Money::new(10, Currency::EUR),
    };
    assert!(b.change_wallet(id, "booking-3", &late).await.is_err());
    let capture = WalletOp::Capture {
        hold_id: "booking-1".into(),
    };
    let captured = b
        .change_wallet(id, "capture-booking-1", &capture)
        .await
        .unwrap();
    assert_eq!(
        (captured.entry.delta, captured.entry.balance_after),
        (-200, 300)
    );
    let ledger = a.ledger(id).await.unwrap();
    assert_eq!(
        ledger.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(a.wallet_violations().await.unwrap().is_empty());
}

/// One wallet contract, two instantiations: the same operations on the sled runtime (its
/// account actors) and on PostgreSQL give the same ledger, field by field.
#[actix_rt::test]
async fn the_wallet_rules_are_the_same_on_sled_and_postgres() {
    let ops: Vec<(&str, WalletOp)> = vec![
        (
            "c1",
            WalletOp::Credit {
                amount: Money::new(700, Currency::EUR),
            },
        ),
        (
            "h1",
            WalletOp::Hold {
                hold_id: "b1".into(),
                amount: Money::new(300, Currency::EUR),
            },
        ),
        (
            "h2",
            WalletOp::Hold {
                hold_id: "b2".into(),
                amount: Money::new(500, Currency::EUR),
            },
        ),
        (
            "h1",
            WalletOp::Hold {
                hold_id: "b1".into(),
                amount: Money::new(300, Currency::EUR),
            },
        ),
        (
            "h3",
            WalletOp::Hold {
                hold_id: "b1".into(),
                amount: Money::new(1, Currency::EUR),
            },
        ),
        (
            "x1",
            WalletOp::Capture {
                hold_id: "b1".into(),
            },
        ),
        (
            "x2",
            WalletOp::Capture {
                hold_id: "nope".into(),
            },
        ),
        (
            "r1",
            WalletOp::Release {
                hold_id: "b9".into(),
            },
        ),
        (
            "h9",
            WalletOp::Hold {
                hold_id: "b9".into(),
                amount: Money::new(5, Currency::EUR),
            },
        ),
        (
            "c2",
            WalletOp::Credit {
                amount: Money::new(0, Currency::EUR),
            },
        ),
        (
            "c3",
            WalletOp::Credit {
                amount: Money::new(5, Currency::USD),
            },
        ),
        (
            "h4",
            WalletOp::Hold {
                hold_id: "b4".into(),
                amount: Money::new(400, Currency::EUR),
            },
        ),
        (
            "l4",
            WalletOp::Release {
                hold_id: "b4".into(),
            },
        ),
    ];
    // What each side answered: Ok(seq, delta, balance, held, replayed) or the error text.
    type Outcome = Result<(u64, i64, i64, i64, bool), String>;
    let outcome = |r: &wayfare::WalletReceipt| {
        let w = &r.wallet;
        (
            r.entry.seq,
            r.entry.delta,
            w.balance.minor,
            w.held.minor,
            r.replayed,
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = wayfare::Runtime::start(common::test_config(dir.path()))
        .await
        .unwrap();
    let account = runtime
        .create_account(NewAccount {
            name: "Ada".into(),
            email: "ada@example.com".into(),
        })
        .await
        .unwrap();
    let mut on_sled: Vec<Outcome> = Vec::new();
    for (key, op) in &ops {
        on_sled.push(
            runtime
                .change_wallet(account.id, key, op.clone())
                .await
                .map(|r| outcome(&r))
                .map_err(|e| e.to_string()),
        );
    }
    let sled_ledger = runtime.ledger(account.id, 0, 100).await.unwrap().entries;
    runtime.shutdown().await.unwrap();

    let pg = TempPostgres::start();
    let store = node(&pg.create_db("contract")).await;
    let id = account_with(&store, 0).await;
    let mut on_pg: Vec<Outcome> = Vec::new();
    for (key, op) in &ops {
        on_pg.push(
            store
                .change_wallet(id, key, op)
                .await
                .map(|r| outcome(&r))
                .map_err(|e| e.to_string()),
        );
    }
    let pg_ledger = store.ledger(id).await.unwrap();
    // Successes must match exactly; refusals must be refusals on both sides.
    for (i, (s, p)) in on_sled.iter().zip(&on_pg).enumerate() {
        match (s, p) {
            (Ok(s), Ok(p)) => assert_eq!(s, p, "op {i} ({:?})", ops[i]),
            (Err(_), Err(_)) => {}
            _ => panic!("op {i} ({:?}): sled {s:?}, postgres {p:?}", ops[i]),
        }
    }
    let strip = |l: &[wayfare::domain::wallet::LedgerEntry]| {
        l.iter()
            .map(|e| {
                (
                    e.seq,
                    e.key.clone(),
                    e.op.clone(),
                    e.delta,
                    e.balance_after,
                    e.held_after,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&sled_ledger), strip(&pg_ledger));
    assert!(store.wallet_violations().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn the_same_booking_key_sent_to_two_nodes_makes_one_saga() {
    let pg = TempPostgres::start();
    let url = pg.create_db("keys");
    let (a, b) = (node(&url).await, node(&url).await);
    let lease = Duration::from_secs(10);
    for round in 0..20 {
        let key = format!("idem-{round}");
        let (ra, rb) = (
            saga_row(&format!("s{round}a"), "pending"),
            saga_row(&format!("s{round}b"), "pending"),
        );
        let (ka, kb) = (key.clone(), key.clone());
        let (na, nb) = (a.clone(), b.clone());
        let ta = tokio::spawn(async move {
            na.create_saga("node-a", lease, &ra, Some((&ka, b"request-1")))
                .await
        });
        let tb = tokio::spawn(async move {
            nb.create_saga("node-b", lease, &rb, Some((&kb, b"request-1")))
                .await
        });
        let (x, y) = (ta.await.unwrap().unwrap(), tb.await.unwrap().unwrap());
        let ids: Vec<String> = [&x, &y]
            .iter()
            .map(|c| match c {
                Created::New(l) => l.saga_id.clone(),
                Created::Existing { saga_id } => saga_id.clone(),
            })
            .collect();
        assert_eq!(ids[0], ids[1], "round {round}: {x:?} / {y:?}");
        let new = [&x, &y]
            .iter()
            .filter(|c| matches!(c, Created::New(_)))
            .count();
        assert_eq!(new, 1, "round {round}");
    }
    let client = a.client().await.unwrap();
    let sagas: i64 = client
        .query_one("SELECT count(*) FROM sagas", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sagas, 20, "the loser's saga row was rolled back");
    // The key with another request is refused.
    let reused = b
        .create_saga(
            "node-b",
            lease,
            &saga_row("other", "pending"),
            Some(("idem-0", b"request-2")),
        )
        .await;
    assert!(
        matches!(reused, Err(SagaWriteError::KeyReused(_))),
        "{reused:?}"
    );
}

#[actix_rt::test]
async fn a_paused_node_loses_its_lease_and_its_late_write_is_refused() {
    let pg = TempPostgres::start();
    let url = pg.create_db("leases");
    let (a, b) = (node(&url).await, node(&url).await);
    let short = Duration::from_millis(300);
    let Created::New(lease_a) = a
        .create_saga("node-a", short, &saga_row("saga-1", "pending"), None)
        .await
        .unwrap()
    else {
        panic!("new saga expected")
    };
    // While A holds the lease, B claims nothing.
    assert!(b
        .claim_expired_sagas("node-b", 10, short)
        .await
        .unwrap()
        .is_empty());
    a.save_saga(
        &lease_a,
        short,
        &saga_row("saga-1", "payment_authorized"),
        None,
    )
    .await
    .unwrap();
    // A pauses past its lease; B claims the saga under a higher epoch as soon as it runs
    // out (B keeps trying, as its duties would).
    let claimed = common::wait_until(
        Duration::from_secs(10),
        "B claims the saga whose lease ran out",
        async || {
            let claimed = b
                .claim_expired_sagas("node-b", 10, Duration::from_secs(10))
                .await
                .unwrap();
            (!claimed.is_empty()).then_some(claimed)
        },
    )
    .await;
    assert_eq!(claimed.len(), 1);
    let (lease_b, row) = &claimed[0];
    assert_eq!(
        row.state, "payment_authorized",
        "B resumes from A's last write"
    );
    assert_eq!(lease_b.epoch, lease_a.epoch + 1);
    // A wakes up and writes late: fenced, nothing changes; renewing finds nothing held.
    let late = a
        .save_saga(
            &lease_a,
            short,
            &saga_row("saga-1", "seller_confirmed"),
            None,
        )
        .await;
    assert!(
        matches!(late, Err(SagaWriteError::Fenced { .. })),
        "{late:?}"
    );
    assert!(a
        .renew_leases(std::slice::from_ref(&lease_a), short)
        .await
        .unwrap()
        .is_empty());
    let stored = b.saga("saga-1").await.unwrap().unwrap();
    assert_eq!(stored.row.state, "payment_authorized");
    assert_eq!(stored.owner_node.as_deref(), Some("node-b"));
    // The creating request's trace stays with the row across the take-over.
    assert_eq!(
        stored.row.trace_parent,
        saga_row("saga-1", "x").trace_parent
    );
    // B carries on, renews, and ends the saga with its email in the same transaction.
    assert_eq!(
        b.renew_leases(std::slice::from_ref(lease_b), short)
            .await
            .unwrap()
            .len(),
        1
    );
    let mut done = saga_row("saga-1", "confirmed");
    done.terminal = true;
    let email = OutboxEmail {
        id: Uuid::new_v4(),
        email: b"confirmation".to_vec(),
    };
    b.save_saga(lease_b, short, &done, Some(&email))
        .await
        .unwrap();
    // A terminal saga is never claimed again, even after its lease runs out (waited for
    // on the database's clock).
    lease_run_out(&b, "saga-1").await;
    assert!(a
        .claim_expired_sagas("node-a", 10, short)
        .await
        .unwrap()
        .is_empty());
    // The email is claimed by one node; a stale claim cannot mark it sent.
    let mine = a.claim_emails("node-a", 10, short).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert!(
        !mine[0].0.unresolved_before,
        "a first claim repeats nothing"
    );
    assert!(b
        .claim_emails("node-b", 10, short)
        .await
        .unwrap()
        .is_empty());
    let theirs = common::wait_until(
        Duration::from_secs(10),
        "B claims the email whose lease ran out",
        async || {
            let claimed = b
                .claim_emails("node-b", 10, Duration::from_secs(10))
                .await
                .unwrap();
            (!claimed.is_empty()).then_some(claimed)
        },
    )
    .await;
    assert_eq!(theirs.len(), 1);
    // A's claim ran out unrecorded: B's send may repeat A's (counted, Message-ID kept).
    assert!(theirs[0].0.unresolved_before);
    assert!(
        a.mark_email_sent(&mine[0].0).await.is_err(),
        "A's email lease was taken over"
    );
    b.mark_email_sent(&theirs[0].0).await.unwrap();
    assert!(a
        .claim_emails("node-a", 10, short)
        .await
        .unwrap()
        .is_empty());
}

#[actix_rt::test]
async fn expired_sagas_are_claimed_by_exactly_one_node() {
    let pg = TempPostgres::start();
    let url = pg.create_db("claims");
    let (a, b) = (node(&url).await, node(&url).await);
    let gone = Duration::from_millis(1);
    for i in 0..200 {
        a.create_saga(
            "node-dead",
            gone,
            &saga_row(&format!("saga-{i:03}"), "pending"),
            None,
        )
        .await
        .unwrap();
    }
    common::wait_until(
        Duration::from_secs(10),
        "every lease of the dead node ran out",
        async || (live_leases(&a).await == 0).then_some(()),
    )
    .await;
    let long = Duration::from_secs(30);
    let mut mine: Vec<Lease> = Vec::new();
    let mut theirs: Vec<Lease> = Vec::new();
    // Both claim in batches of 25 at the same time until nothing is left.
    loop {
        let (x, y) = tokio::join!(
            a.claim_expired_sagas("node-a", 25, long),
            b.claim_expired_sagas("node-b", 25, long)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        if x.is_empty() && y.is_empty() {
            break;
        }
        mine.extend(x.into_iter().map(|c| c.0));
        theirs.extend(y.into_iter().map(|c| c.0));
    }
    let a_ids: HashSet<_> = mine.iter().map(|l| l.saga_id.clone()).collect();
    let b_ids: HashSet<_> = theirs.iter().map(|l| l.saga_id.clone()).collect();
    assert!(a_ids.is_disjoint(&b_ids));
    assert_eq!(a_ids.len() + b_ids.len(), 200);
    assert!(mine.iter().chain(&theirs).all(|l| l.epoch == 2));
    // Membership: both heartbeat; each is listed with the sagas it holds.
    a.heartbeat("node-a", "127.0.0.1:8081", "0.1.0")
        .await
        .unwrap();
    b.heartbeat("node-b", "127.0.0.1:8082", "0.1.0")
        .await
        .unwrap();
    let members = a.members().await.unwrap();
    let held: Vec<(String, i64)> = members
        .iter()
        .map(|m| (m.id.clone(), m.sagas_held))
        .collect();
    assert!(
        held.contains(&("node-a".into(), mine.len() as i64)),
        "{held:?}"
    );
    assert!(
        held.contains(&("node-b".into(), theirs.len() as i64)),
        "{held:?}"
    );
    assert!(members
        .iter()
        .all(|m| (0..5_000).contains(&m.heartbeat_age_ms)));
}

#[actix_rt::test]
async fn a_booked_sku_reaches_every_listening_node() {
    use wayfare::store::postgres::invalidate::Invalidations;
    let pg = TempPostgres::start();
    let url = pg.create_db("notify");
    let announcer = node(&url).await;
    let mut one = Invalidations::listen(&url, node(&url).await.views().clone())
        .await
        .unwrap();
    let mut two = Invalidations::listen(&url, node(&url).await.views().clone())
        .await
        .unwrap();
    announcer
        .announce_booked("hotel:lisbon-1:2027-03-01")
        .await
        .unwrap();
    for listener in [&mut one, &mut two] {
        let sku = tokio::time::timeout(Duration::from_secs(10), listener.next())
            .await
            .expect("notification within 10 s");
        assert_eq!(sku.as_deref(), Some("hotel:lisbon-1:2027-03-01"));
    }
}

/// The cluster duties (heartbeat, lease renewals, take-overs) run as a supervised child.
/// Made to panic on half of its passes, it is restarted every time and a saga in flight
/// keeps its owner and epoch while another node keeps trying to take expired sagas over:
/// the renewals go on. On sled the `cluster` supervisor does not exist (one process has
/// nobody to renew leases against).
#[actix_rt::test]
async fn a_panicking_duty_child_is_restarted_and_no_saga_changes_owner() {
    use common::fake::FixedSeller;
    use std::sync::atomic::Ordering;
    use wayfare::faults::ActorKind;
    use wayfare::BookingOrder;

    const LEASE_MS: u64 = 1_000;
    let pg = TempPostgres::start();
    let url = pg.create_db("duties");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.store = StoreConfig {
        data_dir: dir.path().to_owned(),
        ..store_config(&url)
    };
    config.cluster.node_id = "node-a".into();
    config.cluster.lease_ms = LEASE_MS;
    config.faults.enabled = true;
    config.faults.panic_rate = 0.5;
    config.faults.panic_actors = vec![ActorKind::Cluster];
    config.supervisor.max_restarts = 10_000;
    config.supervisor.within_secs = 60;
    // The step waits on the seller for longer than the test: only the duties renew.
    config.bookings.step_timeout_ms = 60_000;
    let (seller, knobs) = FixedSeller::new("fixed", 20_000);
    // The seller never answers: the saga stays in flight, holding its lease.
    knobs.delay_ms.store(u64::MAX, Ordering::SeqCst);
    let runtime = wayfare::Runtime::builder(config)
        .seller(seller.into_custom(wayfare::AdapterConfig {
            call_timeout_ms: 60_000,
            ..Default::default()
        }))
        .start()
        .await
        .unwrap();
    let account = runtime
        .create_account(NewAccount::new("Ada", "ada@example.com").unwrap())
        .await
        .unwrap();
    let day = |n| Utc::now().date_naive() + chrono::Days::new(n);
    let (booking, _) = runtime
        .book(BookingOrder {
            account_id: account.id,
            seller: "fixed".into(),
            sku: "hotel:test:h1:double".into(),
            start: day(10),
            end: day(12),
            offer_price: Money::new(20_000, Currency::EUR),
            wallet_points: Money::new(0, Currency::EUR),
            card_token: "tok_approve".into(),
            idempotency_key: "k-duties".into(),
        })
        .await
        .unwrap();
    // Another node, trying to take over expired sagas all along.
    let db = node(&url).await;
    let first = db.saga(&booking.id).await.unwrap().expect("the saga row");
    assert_eq!(first.owner_node.as_deref(), Some("node-a"));

    let restarts = |runtime: &wayfare::Runtime| {
        let mut n = 0;
        runtime.supervision_tree().for_each_child(&mut |_, c| {
            if c.name == "cluster-duties" {
                n = c.restarts;
            }
        });
        n
    };
    // Long enough for the lease to run out four times over had renewals stopped (node-b
    // would then claim the saga under a higher epoch), and for the duty child to have been
    // restarted a few times.
    let watch = Duration::from_millis(4 * LEASE_MS);
    let started = std::time::Instant::now();
    let mut last_expiry = first.lease_expires_at;
    while started.elapsed() < watch {
        let taken = db
            .claim_expired_sagas("node-b", 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(taken.is_empty(), "node-b took sagas over: {taken:?}");
        let now = db.saga(&booking.id).await.unwrap().unwrap();
        assert_eq!(
            now.owner_node.as_deref(),
            Some("node-a"),
            "the owner changed"
        );
        assert_eq!(now.epoch, first.epoch, "the saga was claimed again");
        assert!(!now.row.terminal);
        assert!(now.lease_expires_at >= last_expiry);
        last_expiry = now.lease_expires_at;
        tokio::time::sleep(Duration::from_millis(LEASE_MS / 4)).await;
    }
    assert!(
        last_expiry > first.lease_expires_at,
        "the lease was never renewed"
    );
    let restarted = common::wait_until(
        Duration::from_secs(10),
        "the duty child was restarted after injected panics",
        async || (restarts(&runtime) >= 2).then_some(restarts(&runtime)),
    )
    .await;
    assert!(
        runtime.supervision_tree().is_healthy(),
        "restarts stay within the intensity"
    );
    assert!(runtime.fault_counts().cluster_panics >= restarted);
    runtime.shutdown().await.unwrap();

    // One process on sled: no cluster duties at all.
    let dir = tempfile::tempdir().unwrap();
    let solo = wayfare::Runtime::start(common::test_config(dir.path()))
        .await
        .unwrap();
    let mut supervisors = Vec::new();
    solo.supervision_tree()
        .for_each_supervisor(&mut |s| supervisors.push(s.name.clone()));
    assert!(
        !supervisors.contains(&"cluster".to_owned()),
        "{supervisors:?}"
    );
    solo.shutdown().await.unwrap();
}

/// `/health` follows the pool's live state, not a probe every few seconds: once the
/// database is gone, a request that needed it has its 503 and `/health` is red at once;
/// once the database is back, the first good request turns it green with it.
#[actix_rt::test]
async fn health_follows_the_pools_live_state() {
    let mut pg = TempPostgres::start();
    let url = pg.create_db("live");
    let server = common::TestServer::start_with(|config| {
        config.store = StoreConfig {
            data_dir: config.store.data_dir.clone(),
            ..store_config(&url)
        };
        config.cluster.node_id = "node-live".into();
    })
    .await;
    let account = server.create_account("Ada").await;
    let read = || {
        server
            .http
            .get(server.url(&format!("/v1/accounts/{account}")))
            .send()
    };
    let health = || server.http.get(server.url("/health")).send();
    assert_eq!(read().await.unwrap().status(), 200);
    assert_eq!(health().await.unwrap().status(), 200);

    pg.stop();
    assert_eq!(read().await.unwrap().status(), 503);
    let red = health().await.unwrap();
    assert_eq!(
        red.status(),
        503,
        "health stayed green after a failed request"
    );
    let body: serde_json::Value = red.json().await.unwrap();
    assert_eq!(body["store"]["ok"], false, "{body}");

    pg.restart();
    let back = read().await.unwrap();
    assert_eq!(back.status(), 200, "{}", back.text().await.unwrap());
    assert_eq!(
        health().await.unwrap().status(),
        200,
        "health stayed red after a good request"
    );
    server.stop().await;
}

/// A server that stops taking writes (a demoted primary) keeps its sessions open: those
/// pooled connections are dropped, not reused, and the next statement reaches the server
/// that takes writes now, through the multi-host URL.
#[actix_rt::test]
async fn pooled_connections_to_a_server_that_turned_read_only_are_dropped() {
    let (a, b) = (TempPostgres::start(), TempPostgres::start());
    for server in [&a, &b] {
        node(&server.create_db("ro")).await;
    }
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/ro?target_session_attrs=read-write",
        a.port(),
        b.port()
    );
    let db = node(&url).await;
    // Several pooled connections, all to the first server (it takes writes).
    let keys: Vec<String> = (0..4).map(|i| format!("warm-{i}")).collect();
    let writes = keys.iter().map(|k| db.set_meta(k, b"a"));
    for written in futures_util::future::join_all(writes).await {
        written.unwrap();
    }
    assert_eq!(a.psql("ro", "SELECT count(*) FROM meta").trim(), "4");
    assert!(db.live().await.is_ok());

    a.psql(
        "postgres",
        "ALTER SYSTEM SET default_transaction_read_only = on",
    );
    a.psql("postgres", "SELECT pg_reload_conf()");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Each old connection may fail one statement (the server says it is read-only with
    // its answer); none is reused after that.
    let mut failed = 0;
    let mut n = 0;
    while db
        .set_meta("after", format!("{n}").as_bytes())
        .await
        .is_err()
    {
        failed += 1;
        n += 1;
        assert!(failed <= 4, "writes kept failing on the read-only server");
    }
    for i in 0..10 {
        db.set_meta(&format!("more-{i}"), b"b").await.unwrap();
    }
    assert_eq!(
        b.psql("ro", "SELECT count(*) FROM meta WHERE key LIKE 'more-%'")
            .trim(),
        "10",
        "the writes did not reach the server that takes writes"
    );
    assert!(db.live().await.is_ok());
}

/// Node B keeps account views in memory, fed by its listener: once node A has acknowledged
/// a credit, B never shows the old balance after the staleness bound (a read on B right
/// after A's reply may, within it), and B serves the new one from memory once it has read
/// it. A listener session killed on the server makes B stop serving views at once (reads go
/// to the database and stay right); a new listener brings the views back.
#[actix_rt::test]
async fn views_on_another_node_follow_its_changes_within_the_bound() {
    use wayfare::domain::access::Caller;
    use wayfare::store::postgres::invalidate::{Invalidations, LISTENER_NAME};
    use wayfare::store::postgres::views::STALENESS_BOUND;
    use wayfare::store::postgres::PgAccounts;
    use wayfare::store::AccountStore;

    let pg = TempPostgres::start();
    let url = pg.create_db("views");
    let (db_a, db_b) = (node(&url).await, node(&url).await);
    let (a, b) = (
        PgAccounts::new(db_a.clone(), 100),
        PgAccounts::new(db_b.clone(), 100),
    );
    let listener = Invalidations::listen(&url, db_b.views().clone())
        .await
        .unwrap();
    let id = account_with(&db_a, 0).await;
    let balance_on_b = || async {
        b.account(id, Caller::Operator)
            .await
            .unwrap()
            .account
            .wallet
            .balance
            .minor
    };
    assert_eq!(balance_on_b().await, 0);
    common::wait_until(Duration::from_secs(5), "B serves the view", async || {
        b.view_now(id).map(|_| ())
    })
    .await;

    let mut stale_within_bound = 0;
    for n in 1..=40i64 {
        let credit = WalletOp::Credit {
            amount: Money::new(1, Currency::EUR),
        };
        a.change_wallet(id, &format!("c{n}"), &credit)
            .await
            .unwrap();
        let acknowledged = std::time::Instant::now();
        // Within the bound B may still show the old balance, never an older one.
        let early = balance_on_b().await;
        assert!(
            early == n || early == n - 1,
            "B read {early} after credit {n}"
        );
        if early != n {
            stale_within_bound += 1;
        }
        tokio::time::sleep(STALENESS_BOUND.saturating_sub(acknowledged.elapsed())).await;
        assert_eq!(
            balance_on_b().await,
            n,
            "B read an old balance past the bound"
        );
        // ... and from memory: B keeps what it read.
        let view = b.view_now(id).expect("B serves the account from memory");
        assert_eq!(view.account.wallet.balance.minor, n);
    }
    eprintln!("reads on B within the bound that were stale: {stale_within_bound} of 40");

    // The listener's session ends: no view is served (the heartbeat or the connection
    // notices within the bound), and reads go to the database, still right.
    pg.psql(
        "views",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{LISTENER_NAME}'"
        ),
    );
    common::wait_until(STALENESS_BOUND * 2, "B stops serving views", async || {
        b.view_now(id).is_none().then_some(())
    })
    .await;
    for n in 41..=45i64 {
        let credit = WalletOp::Credit {
            amount: Money::new(1, Currency::EUR),
        };
        a.change_wallet(id, &format!("c{n}"), &credit)
            .await
            .unwrap();
        assert_eq!(
            balance_on_b().await,
            n,
            "B read an old balance without a listener"
        );
        assert!(
            b.view_now(id).is_none(),
            "B served a view without a listener"
        );
    }
    drop(listener);

    // A new listener (the node's listener actor reconnects): views are served again once
    // read anew, never one read before it listened.
    let _listener = Invalidations::listen(&url, db_b.views().clone())
        .await
        .unwrap();
    assert_eq!(balance_on_b().await, 45);
    common::wait_until(Duration::from_secs(5), "B serves the view", async || {
        b.view_now(id).map(|_| ())
    })
    .await;
    assert_eq!(b.view_now(id).unwrap().account.wallet.balance.minor, 45);
}

/// The wallet rule runs in two places: `Wallet::apply` (the sled actors, and the words of
/// every refusal) and the database's `wayfare_wallet_change`, which makes a change in one
/// round trip. Random operation sequences (credits, holds, captures, releases; amounts
/// out of range or in the wrong currency; bad hold ids; idempotency keys replayed with
/// their operation, reused for another, or colliding with a release's tombstone) get the
/// same answer from the database as from the domain rule with today's replay rules, field
/// by field, step by step.
#[actix_rt::test]
async fn the_database_wallet_rule_matches_the_domain_rule_on_random_sequences() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;
    use wayfare::domain::wallet::{Wallet, MAX_AMOUNT_MINOR};
    use wayfare::store::postgres::PgError;

    type Answer = Result<(u64, i64, i64, i64, bool, i64, i64), WalletFailure>;
    let pg = TempPostgres::start();
    let store = node(&pg.create_db("rule")).await;
    let random_op = |rng: &mut SmallRng| {
        let hold_id = match rng.gen_range(0..20) {
            0 => "no spaces allowed".to_owned(),
            _ => format!("h{}", rng.gen_range(0..4)),
        };
        let minor = match rng.gen_range(0..12) {
            0 => 0,
            1 => -5,
            2 => MAX_AMOUNT_MINOR + 1,
            // Few, small amounts: holds of exactly what is available come up often.
            _ => [1, 2, 3, 5, 10][rng.gen_range(0..5)],
        };
        let currency = if rng.gen_range(0..12) == 0 {
            Currency::USD
        } else {
            Currency::EUR
        };
        let amount = Money::new(minor, currency);
        match rng.gen_range(0..4) {
            0 => WalletOp::Credit { amount },
            1 => WalletOp::Hold { hold_id, amount },
            2 => WalletOp::Capture { hold_id },
            _ => WalletOp::Release { hold_id },
        }
    };
    let mut steps = 0;
    for seed in 0..10u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let id = account_with(&store, 0).await;
        // The model: the domain rule, and the keys and ledger as the store keeps them.
        let mut wallet = Wallet::new(Currency::EUR);
        let mut keys: HashMap<String, (WalletOp, u64)> = HashMap::new();
        let mut ledger: Vec<(i64, i64, i64)> = Vec::new();
        let mut sent: Vec<(String, WalletOp)> = Vec::new();
        for step in 0..80 {
            let (key, op) = match rng.gen_range(0..20) {
                0..=1 if !sent.is_empty() => sent[rng.gen_range(0..sent.len())].clone(),
                2 if !sent.is_empty() => {
                    let key = sent[rng.gen_range(0..sent.len())].0.clone();
                    (key, random_op(&mut rng))
                }
                3 => (format!("h{}", rng.gen_range(0..4)), random_op(&mut rng)),
                _ => (format!("k{step}"), random_op(&mut rng)),
            };
            let expected: Answer = match keys.get(&key) {
                Some((seen, _)) if *seen != op => Err(WalletFailure::KeyConflict(key.clone())),
                Some((_, 0)) => Err(WalletFailure::Store(PgError::Corrupt {
                    what: format!("wallet key of account {id}"),
                    reason: "it points at ledger entry 0, which is missing".into(),
                })),
                Some((_, seq)) => {
                    let (delta, balance, held) = ledger[*seq as usize - 1];
                    Ok((
                        *seq,
                        delta,
                        balance,
                        held,
                        true,
                        wallet.balance,
                        wallet.held(),
                    ))
                }
                None => match wallet.apply(&op) {
                    Ok((next, delta)) => {
                        wallet = next;
                        ledger.push((delta, wallet.balance, wallet.held()));
                        let seq = ledger.len() as u64;
                        keys.insert(key.clone(), (op.clone(), seq));
                        let (b, h) = (wallet.balance, wallet.held());
                        Ok((seq, delta, b, h, false, b, h))
                    }
                    Err(WalletError::UnknownHold(hold)) => {
                        if let WalletOp::Release { .. } = op {
                            keys.entry(hold.clone()).or_insert((op.clone(), 0));
                        }
                        Err(WalletFailure::Refused(WalletError::UnknownHold(hold)))
                    }
                    Err(e) => Err(WalletFailure::Refused(e)),
                },
            };
            let answered: Answer = store.change_wallet(id, &key, &op).await.map(|r| {
                (
                    r.entry.seq,
                    r.entry.delta,
                    r.entry.balance_after,
                    r.entry.held_after,
                    r.replayed,
                    r.wallet.balance.minor,
                    r.wallet.held.minor,
                )
            });
            assert_eq!(
                answered, expected,
                "seed {seed}, step {step}: {key:?} {op:?}"
            );
            sent.push((key, op));
            steps += 1;
        }
        let stored = store.wallet(id).await.unwrap().unwrap();
        assert_eq!(stored.wallet, wallet, "seed {seed}: the wallets differ");
    }
    assert_eq!(steps, 800);
    assert!(store.wallet_violations().await.unwrap().is_empty());
}

/// The same through a node's HTTP API and its listener actor: node B (a server) answers an
/// account read from memory (it answers while the accounts table is locked by another
/// session, which any database read would wait on), never past the staleness bound after
/// node A's change; with its listener session killed its listener actor listens again (a
/// new session, within about 0.1 s), B never reads past the bound meanwhile, and it
/// answers from memory again. (While no listener is subscribed B reads the database; the
/// actor reconnects too fast to catch that window here, so
/// `views_on_another_node_follow_its_changes_within_the_bound` shows it with a listener
/// the test owns.)
#[actix_rt::test]
async fn a_node_reads_from_memory_falls_back_when_its_listener_is_lost_and_recovers() {
    use wayfare::store::postgres::invalidate::LISTENER_NAME;
    use wayfare::store::postgres::views::STALENESS_BOUND;

    let pg = TempPostgres::start();
    let url = pg.create_db("recover");
    let server = common::TestServer::start_with(|config| {
        config.store = StoreConfig {
            data_dir: config.store.data_dir.clone(),
            ..store_config(&url)
        };
        config.cluster.node_id = "node-b".into();
    })
    .await;
    let db_a = node(&url).await;
    let id = account_with(&db_a, 0).await;
    let read_url = server.url(&format!("/v1/accounts/{id}"));
    let balance_on_b = async || -> i64 {
        let body: serde_json::Value = server
            .http
            .get(&read_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["wallet"]["balance"]["minor"].as_i64().unwrap()
    };
    // Whether B answers while every database read of an account would wait on a lock.
    let from_memory = async || -> bool {
        let locker = db_a.client().await.unwrap();
        locker
            .batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let answered = server
            .http
            .get(&read_url)
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        locker.batch_execute("ROLLBACK").await.unwrap();
        answered
    };
    assert_eq!(balance_on_b().await, 0);
    common::wait_until(
        Duration::from_secs(10),
        "B answers from memory",
        async || {
            balance_on_b().await;
            from_memory().await.then_some(())
        },
    )
    .await;

    let credit = |n: i64| WalletOp::Credit {
        amount: Money::new(n, Currency::EUR),
    };
    db_a.change_wallet(id, "a-1", &credit(7)).await.unwrap();
    tokio::time::sleep(STALENESS_BOUND).await;
    assert_eq!(
        balance_on_b().await,
        7,
        "B read an old balance past the bound"
    );

    let listener_pid = || {
        pg.psql(
            "recover",
            &format!("SELECT pid FROM pg_stat_activity WHERE application_name = '{LISTENER_NAME}'"),
        )
        .trim()
        .to_owned()
    };
    let killed = listener_pid();
    assert!(!killed.is_empty(), "B has no listener session");
    pg.psql("recover", &format!("SELECT pg_terminate_backend({killed})"));
    db_a.change_wallet(id, "a-2", &credit(5)).await.unwrap();
    tokio::time::sleep(STALENESS_BOUND).await;
    assert_eq!(
        balance_on_b().await,
        12,
        "B read an old balance past the bound with its listener lost"
    );

    // The listener actor listens again (a new session), and B answers from memory again.
    common::wait_until(
        Duration::from_secs(10),
        "B's listener actor listens again",
        async || {
            let now = listener_pid();
            (!now.is_empty() && now != killed).then_some(())
        },
    )
    .await;
    common::wait_until(
        Duration::from_secs(10),
        "B answers from memory again",
        async || {
            balance_on_b().await;
            from_memory().await.then_some(())
        },
    )
    .await;
    let listeners = pg.psql(
        "recover",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{LISTENER_NAME}'"
        ),
    );
    assert_eq!(listeners.trim(), "1");
    db_a.change_wallet(id, "a-3", &credit(1)).await.unwrap();
    tokio::time::sleep(STALENESS_BOUND).await;
    assert_eq!(balance_on_b().await, 13);
    server.stop().await;
}

/// A batch of saga writes is one statement, yet each saga keeps its own fence: the saga
/// whose lease another node took is refused alone, and nothing it caused is written (its
/// email, its booked SKU's announcement), while the rest of the batch is written with
/// theirs; a booked SKU reaches the listeners with the write's commit.
#[actix_rt::test]
async fn a_batched_write_whose_one_saga_lost_its_lease_fails_only_that_saga() {
    use wayfare::store::postgres::invalidate::Invalidations;
    use wayfare::store::postgres::sagas::FencedWrite;
    let pg = TempPostgres::start();
    let url = pg.create_db("batch");
    let (a, b) = (node(&url).await, node(&url).await);
    let short = Duration::from_millis(300);
    let mut leases = Vec::new();
    for id in ["saga-1", "saga-2", "saga-3"] {
        let lease_for = if id == "saga-2" {
            short
        } else {
            Duration::from_secs(30)
        };
        match a
            .create_saga("node-a", lease_for, &saga_row(id, "pending"), None)
            .await
            .unwrap()
        {
            Created::New(lease) => leases.push(lease),
            other => panic!("new saga expected: {other:?}"),
        }
    }
    // saga-2's lease runs out and node B takes it over.
    lease_run_out(&a, "saga-2").await;
    let claimed = b
        .claim_expired_sagas("node-b", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].0.saga_id, "saga-2");
    let mut listener = Invalidations::listen(&url, node(&url).await.views().clone())
        .await
        .unwrap();
    let email = |n: u128| OutboxEmail {
        id: Uuid::from_u128(n),
        email: format!("email {n}").into_bytes(),
    };
    // Sent in another order than the sagas' ids: each answer, email and SKU stays its own.
    let writes: Vec<FencedWrite> = leases
        .iter()
        .enumerate()
        .rev()
        .map(|(i, lease)| FencedWrite {
            lease: lease.clone(),
            row: saga_row(&lease.saga_id, "confirmed"),
            email: Some(email(i as u128 + 1)),
            finished: None,
            booked_sku: Some(format!("sku-of-{}", lease.saga_id)),
        })
        .collect();
    let answers = a
        .save_sagas(Duration::from_secs(30), &writes)
        .await
        .unwrap();
    assert_eq!(answers.len(), 3);
    assert!(matches!(answers[2], Ok(false)), "{:?}", answers[2]);
    assert!(
        matches!(&answers[1], Err(SagaWriteError::Fenced { saga_id, epoch: 1, .. }) if saga_id == "saga-2"),
        "{:?}",
        answers[1]
    );
    assert!(matches!(answers[0], Ok(false)), "{:?}", answers[0]);
    for (id, state, owner) in [
        ("saga-1", "confirmed", "node-a"),
        ("saga-2", "pending", "node-b"),
        ("saga-3", "confirmed", "node-a"),
    ] {
        let stored = a.saga(id).await.unwrap().unwrap();
        assert_eq!(stored.row.state, state, "{id}");
        assert_eq!(stored.owner_node.as_deref(), Some(owner), "{id}");
    }
    let client = a.client().await.unwrap();
    let emailed: Vec<(String, Uuid, Vec<u8>)> = client
        .query(
            "SELECT saga_id, id, email FROM outbox ORDER BY saga_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: Vec<(String, Uuid, Vec<u8>)> = [("saga-1", 1), ("saga-3", 3)]
        .iter()
        .map(|(id, n)| (id.to_string(), email(*n).id, email(*n).email))
        .collect();
    assert_eq!(emailed, expected, "the fenced saga's email is not written");
    let mut heard = Vec::new();
    for _ in 0..2 {
        let sku = tokio::time::timeout(Duration::from_secs(10), listener.next())
            .await
            .expect("notification within 10 s");
        heard.push(sku.unwrap());
    }
    heard.sort();
    assert_eq!(heard, ["sku-of-saga-1", "sku-of-saga-3"]);
    // The fenced saga's SKU was never announced: nothing more arrives.
    let more = tokio::time::timeout(Duration::from_millis(500), listener.next()).await;
    assert!(more.is_err(), "unexpected announcement: {more:?}");
    // A retry of the same batch (an answer lost with the connection) changes nothing more:
    // the emails stay one row each.
    let again = a
        .save_sagas(
            Duration::from_secs(30),
            &[writes[0].clone(), writes[2].clone()],
        )
        .await
        .unwrap();
    assert!(again.iter().all(|r| matches!(r, Ok(false))), "{again:?}");
    let emails: i64 = client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(emails, 2);
}

/// Sagas created in one batch keep the booking keys' rules one by one: a new key makes its
/// saga, a key used before (by an earlier request, or by another saga of the same batch)
/// answers that saga for the same request and is refused for another, and a saga without
/// a key is simply created.
#[actix_rt::test]
async fn a_batch_of_new_sagas_keeps_each_booking_key_rule() {
    use wayfare::store::postgres::sagas::NewSaga;
    let pg = TempPostgres::start();
    let url = pg.create_db("creations");
    let a = node(&url).await;
    let lease = Duration::from_secs(30);
    let earlier = a
        .create_saga(
            "node-a",
            lease,
            &saga_row("saga-0", "pending"),
            Some(("k-0", b"request-0")),
        )
        .await
        .unwrap();
    assert!(matches!(earlier, Created::New(_)), "{earlier:?}");
    let new = |id: &str, key: Option<(&str, &[u8])>| NewSaga {
        node: "node-a".into(),
        row: saga_row(id, "pending"),
        key: key.map(|(k, d)| (k.to_owned(), d.to_vec())),
    };
    let batch = [
        new("saga-1", Some(("k-1", b"request-1"))),
        new("saga-2", Some(("k-2", b"request-2"))),
        new("saga-3", Some(("k-1", b"request-1"))),
        new("saga-4", Some(("k-0", b"another request"))),
        new("saga-5", Some(("k-0", b"request-0"))),
        new("saga-6", None),
    ];
    let answers = a.create_sagas(lease, &batch).await.unwrap();
    assert_eq!(answers.len(), batch.len());
    for (i, id) in [(0, "saga-1"), (1, "saga-2"), (5, "saga-6")] {
        match &answers[i] {
            Ok(Created::New(l)) => {
                assert_eq!(
                    (l.saga_id.as_str(), l.node.as_str(), l.epoch),
                    (id, "node-a", 1)
                )
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(
        answers[2],
        Ok(Created::Existing {
            saga_id: "saga-1".into()
        }),
        "the batch's own key twice makes one saga"
    );
    assert!(
        matches!(&answers[3], Err(SagaWriteError::KeyReused(k)) if k == "k-0"),
        "{:?}",
        answers[3]
    );
    assert_eq!(
        answers[4],
        Ok(Created::Existing {
            saga_id: "saga-0".into()
        })
    );
    let client = a.client().await.unwrap();
    let ids: Vec<String> = client
        .query("SELECT id FROM sagas ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, ["saga-0", "saga-1", "saga-2", "saga-6"]);
    let leased: i64 = client
        .query_one(
            "SELECT count(*) FROM sagas WHERE owner_node = 'node-a' AND epoch = 1
                AND lease_expires_at > now()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leased, 4);
}

/// Bookings the statement count below drives through one node, after
/// [`WARM_UP_BOOKINGS`] that are not counted.
const COUNTED_BOOKINGS: usize = 200;
const WARM_UP_BOOKINGS: usize = 80;
/// Bookings paying with wallet points, counted after those.
const WALLET_BOOKINGS: usize = 100;

/// CPU time (ms) each of the processes `pids` used so far (user and system, from /proc).
fn server_cpu(pids: &[i32]) -> std::collections::HashMap<i32, f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .filter_map(|pid| {
            Some((
                *pid,
                std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
            ))
        })
        .map(|(pid, stat)| {
            // Field 2 may hold spaces: count the fields after its closing parenthesis.
            let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let used = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            (pid, (used(11) + used(12)) * 1000.0 / ticks)
        })
        .collect()
}

/// One statement as pg_stat_statements summed it over [`COUNTED_BOOKINGS`] bookings.
struct Counted {
    calls: i64,
    exec_ms: f64,
    plan_ms: f64,
    query: String,
}

/// What the database did for whole bookings on one PostgreSQL node: `wayfare serve` with
/// simulated sellers and gateway answering at once, [`COUNTED_BOOKINGS`] bookings through
/// HTTP, 8 at a time, every saga finished and every email sent; every statement the node
/// sent meanwhile (pg_stat_statements, top level: one call is one round trip) and the
/// transactions it committed. Prints the table BENCHMARKS.md keeps, and fails when a booking
/// costs more round trips than the budget: the cut of issue 22 must not creep back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_costs_the_database_a_bounded_number_of_round_trips() {
    let mut pg = TempPostgres::start();
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
    );
    pg.stop();
    pg.restart();
    // Planning is the database's work too (a statement planned per call costs it there).
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET pg_stat_statements.track_planning = on",
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let url = pg.create_db("counted");
    pg.psql("counted", "CREATE EXTENSION pg_stat_statements");
    // The test's own queries run as another role, so they are told apart from the node's.
    pg.psql("counted", "CREATE ROLE observer SUPERUSER LOGIN");
    let observer = format!("postgres://observer@127.0.0.1:{}/counted", pg.port());
    let observe = PgStore::connect(&StoreConfig {
        pool_size: 1,
        ..store_config(&observer)
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("[demo]\naccounts = 10\n");
    for (name, seed) in [("alpha", 1), ("bravo", 2), ("charlie", 3)] {
        config += &format!(
            "[[sellers]]\nname = \"{name}\"\nkind = \"simulated\"\n[sellers.simulated]\n\
             seed = {seed}\nlatency_ms = [0, 0]\ncoverage = 1.0\n"
        );
    }
    config += "[payments.simulated]\nlatency_min_ms = 0\nlatency_max_ms = 0\n";
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let mut command = fakes::wayfare_command(
        dir.path(),
        &dir.path().join("config.toml"),
        &dir.path().join("node.log"),
        "counted-test-operator-token-0123456789",
    );
    command
        .args(["--data-dir", "data"])
        .env("WAYFARE__STORE__BACKEND", "postgres")
        .env("WAYFARE__STORE__URL", &url)
        .env("WAYFARE__CLUSTER__NODE_ID", "counted")
        .env("WAYFARE__LIMITS__ENABLED", "false");
    let node = fakes::spawn_listening(command, "wayfare listening on ").unwrap_or_else(|| {
        panic!(
            "the node exited at start: {}",
            std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
        )
    });
    let base = format!("{}/", node.addr);
    let http = reqwest::Client::new();
    let check_in = Utc::now().date_naive() + chrono::Days::new(30);
    let check_out = check_in + chrono::Days::new(2);
    let offers: serde_json::Value = http
        .get(format!(
            "{base}v1/search/hotels?city=Lisbon&check_in={check_in}&check_out={check_out}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let offer = offers["offers"][0].clone();
    assert!(offer.is_object(), "no offer to book: {offers}");
    let scalar = |sql: &'static str| {
        let observe = observe.clone();
        async move {
            let client = observe.client().await.unwrap();
            let n: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
            n
        }
    };
    let book = async |from: usize, to: usize, points: i64| {
        let bookings: Vec<usize> = (from..to).collect();
        for chunk in bookings.chunks(8) {
            let posts = chunk.iter().map(|i| {
                let account = AccountId::demo((*i % 10) as u64);
                let body = serde_json::json!({
                    "account_id": account.0.to_string(),
                    "seller": offer["seller"],
                    "sku": offer["sku"],
                    "start": check_in,
                    "end": check_out,
                    "offer_price": offer["price"],
                    "wallet_points": {"minor": points, "currency": "EUR"},
                    "card_token": "tok_approve",
                });
                http.post(format!("{base}v1/bookings"))
                    .bearer_auth(wayfare::domain::access::ApiKey::demo((*i % 10) as u64).reveal())
                    .header("Idempotency-Key", format!("counted-{i}"))
                    .json(&body)
                    .send()
            });
            for reply in futures_util::future::join_all(posts).await {
                let reply = reply.unwrap();
                assert_eq!(
                    reply.status().as_u16(),
                    202,
                    "{}",
                    reply.text().await.unwrap()
                );
            }
        }
        common::wait_until(
            Duration::from_secs(60),
            "every saga finished and every email sent",
            async || {
                let done =
                    scalar("SELECT count(*) FROM sagas WHERE terminal AND state = 'confirmed'")
                        .await;
                let unsent = scalar("SELECT count(*) FROM outbox WHERE status <> 'sent'").await;
                (done == to as i64 && unsent == 0).then_some(())
            },
        )
        .await;
    };
    // A first round, half of it paying with wallet points, warms every pooled connection
    // (prepared statements, the wallet function compiled and planned):
    // what a booking costs a node that has been serving, not one that just started.
    book(0, WARM_UP_BOOKINGS / 2, 0).await;
    book(WARM_UP_BOOKINGS / 2, WARM_UP_BOOKINGS, 100).await;
    let server_pids = |client: deadpool_postgres::Object| async move {
        client
            .query("SELECT pid FROM pg_stat_activity", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i32>(0))
            .collect::<Vec<_>>()
    };
    // Counts what `count` bookings from booking number `from`, each paying `points` from
    // its wallet, cost the database: per booking, round trips and writing transactions.
    let measure = async |from: usize, count: usize, points: i64| {
        let before_cpu = server_cpu(&server_pids(observe.client().await.unwrap()).await);
        let xid = "SELECT pg_current_xact_id()::text::bigint";
        pg.psql("counted", "SELECT pg_stat_statements_reset()");
        let xid_before = scalar(xid).await;
        let started = std::time::Instant::now();
        book(from, from + count, points).await;
        let elapsed = started.elapsed();
        // Transactions that wrote (each one commit and WAL flush with synchronous_commit on):
        // every one took a transaction id; the observer's two reads took one each.
        let writing = scalar(xid).await - xid_before - 1;
        // A server process started meanwhile counts whole; one gone meanwhile is missed.
        let server_ms: f64 = server_cpu(&server_pids(observe.client().await.unwrap()).await)
            .iter()
            .map(|(pid, ms)| ms - before_cpu.get(pid).copied().unwrap_or(0.0))
            .sum();
        let client = observe.client().await.unwrap();
        let counted: Vec<Counted> = client
            .query(
                "SELECT calls, total_exec_time + total_plan_time, query, total_plan_time
                 FROM pg_stat_statements s
                 JOIN pg_roles r ON r.oid = s.userid
                 WHERE r.rolname = 'postgres' AND s.toplevel AND s.dbid =
                       (SELECT oid FROM pg_database WHERE datname = current_database())
                 ORDER BY calls DESC, query",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| Counted {
                calls: r.get(0),
                exec_ms: r.get(1),
                plan_ms: r.get(3),
                query: r
                    .get::<_, String>(2)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            })
            .collect();
        let sizes: (f64, f64) = client
            .query_one(
                "SELECT avg(length(record))::float8, avg(pg_column_size(record))::float8 FROM sagas",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        let hot: (i64, i64) = client
            .query_one(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'sagas'",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        println!(
            "saga records: {:.0} bytes, {:.0} stored; saga updates so far: {}, of which HOT: {}",
            sizes.0, sizes.1, hot.0, hot.1
        );
        let n = count as f64;
        let round_trips: i64 = counted.iter().map(|c| c.calls).sum();
        let exec_ms: f64 = counted.iter().map(|c| c.exec_ms).sum();
        println!(
            "{count} bookings paying {points} points from the wallet, in {:.1} s; per booking: {:.2} round trips, {:.2} writing transactions, {:.3} ms of statement planning and execution, {:.2} ms of database server CPU",
            elapsed.as_secs_f64(),
            round_trips as f64 / n,
            writing as f64 / n,
            exec_ms / n,
            server_ms / n
        );
        println!("| calls per booking | µs per call (planning) | µs per booking | statement |");
        println!("|---:|---:|---:|---|");
        for c in &counted {
            let mut query = c.query.clone();
            query.truncate(150);
            println!(
                "| {:.2} | {:.1} ({:.1}) | {:.1} | `{}` |",
                c.calls as f64 / n,
                c.exec_ms * 1000.0 / c.calls.max(1) as f64,
                c.plan_ms * 1000.0 / c.calls.max(1) as f64,
                c.exec_ms * 1000.0 / n,
                query
            );
        }
        (round_trips as f64 / n, writing as f64 / n)
    };
    // As load.rs books (no wallet points): the budget is for this one.
    let (round_trips, writing) = measure(WARM_UP_BOOKINGS, COUNTED_BOOKINGS, 0).await;
    // With wallet points the saga also holds and captures them: two wallet changes, each
    // one statement (`wayfare_wallet_change`), reported alongside.
    measure(WARM_UP_BOOKINGS + COUNTED_BOOKINGS, WALLET_BOOKINGS, 100).await;
    // Before issue 22's cut a booking took 16 round trips and 6 writing transactions
    // (BENCHMARKS.md); the bound leaves room for the mailer's and timers' timing, not
    // for a step's write going back to several statements.
    assert!(
        round_trips <= 8.5,
        "a booking costs {round_trips:.2} round trips"
    );
    assert!(
        writing <= 5.5,
        "a booking costs {writing:.2} writing transactions"
    );
    drop(node);
}
