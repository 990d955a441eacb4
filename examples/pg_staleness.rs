//! How stale can an account read on one PostgreSQL node be after another node changed the
//! account? Node A (its own pool) credits random accounts as fast as `--writers` workers
//! are answered; node B (its own pool, its listener, its account views) serves
//! `--readers` workers reading random accounts. Every `--sample-every`-th credit is
//! followed from A's reply until B answers with that credit's balance or a later one;
//! the p50/p99/max of that time is the staleness window, against the bound B enforces
//! (`views::STALENESS_BOUND`: past it, B falls back to the database rather than serve a
//! view). Also prints B's reads/s and how many it answered from memory.
//!
//! Run with:
//!   scripts/pg.sh -- cargo run --release --example pg_staleness -- --seconds 20
//! (scripts/pg.sh sets WAYFARE__STORE__URL; this applies the schema itself.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::Rng;
use wayfare::config::{Secret, StoreBackend, StoreConfig};
use wayfare::domain::access::Caller;
use wayfare::domain::account::AccountId;
use wayfare::domain::money::Currency;
use wayfare::domain::wallet::WalletOp;
use wayfare::store::postgres::invalidate::Invalidations;
use wayfare::store::postgres::views::STALENESS_BOUND;
use wayfare::store::postgres::wallet::NewAccountRow;
use wayfare::store::postgres::{PgAccounts, PgStore};
use wayfare::store::AccountStore;
use wayfare::Money;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 200)]
    accounts: usize,
    /// Workers crediting on node A.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Workers reading on node B.
    #[arg(long, default_value_t = 16)]
    readers: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Follow every n-th credit until B shows it.
    #[arg(long, default_value_t = 5)]
    sample_every: u64,
}

fn pool(url: &str, size: usize) -> anyhow::Result<PgStore> {
    Ok(PgStore::connect(&StoreConfig {
        backend: StoreBackend::Postgres,
        url: Some(Secret::new(url)),
        pool_size: size.max(1),
        ..StoreConfig::default()
    })?)
}

/// B's balance of `id` (from its memory when it may, else its database read).
async fn balance_on(b: &PgAccounts, id: AccountId) -> anyhow::Result<i64> {
    let state = b
        .account(id, Caller::Operator)
        .await
        .map_err(|e| anyhow::anyhow!("read on B: {e}"))?;
    Ok(state.account.wallet.balance.minor)
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.accounts > 0, "--accounts must be at least 1");
    anyhow::ensure!(args.sample_every > 0, "--sample-every must be at least 1");
    let url = std::env::var("WAYFARE__STORE__URL")
        .map_err(|_| anyhow::anyhow!("set WAYFARE__STORE__URL (scripts/pg.sh -- ... does)"))?;
    let a = pool(&url, args.writers)?;
    let b_db = pool(&url, args.readers)?;
    a.migrate().await?;
    let b = Arc::new(PgAccounts::new(b_db.clone(), args.accounts));
    let _listener = Invalidations::listen(&url, b_db.views().clone()).await?;
    let mut ids = Vec::new();
    for i in 0..args.accounts {
        let id = AccountId(uuid::Uuid::new_v4());
        a.open_account(&NewAccountRow {
            id,
            name: format!("A {i}"),
            email: format!("{}@example.com", id.0),
            currency: Currency::EUR,
            created_at: chrono::Utc::now(),
        })
        .await?;
        ids.push(id);
    }
    let ids = Arc::new(ids);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let (reads, from_memory, writes) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let readers: Vec<_> = (0..args.readers)
        .map(|_| {
            let (b, ids, reads, from_memory) =
                (b.clone(), ids.clone(), reads.clone(), from_memory.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let id = ids[rand::thread_rng().gen_range(0..ids.len())];
                    if b.view_now(id).is_some() {
                        from_memory.fetch_add(1, Ordering::Relaxed);
                    }
                    balance_on(&b, id).await?;
                    reads.fetch_add(1, Ordering::Relaxed);
                    // A read from memory never waits: let the listener and the writers run
                    // (one thread here, as one arbiter in a node).
                    tokio::task::yield_now().await;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let writers: Vec<_> = (0..args.writers)
        .map(|w| {
            let (a, b, ids, writes) = (a.clone(), b.clone(), ids.clone(), writes.clone());
            let every = args.sample_every;
            tokio::spawn(async move {
                let mut windows = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let id = ids[rand::thread_rng().gen_range(0..ids.len())];
                    let op = WalletOp::Credit {
                        amount: Money::new(1, Currency::EUR),
                    };
                    let receipt = a
                        .change_wallet(id, &format!("w{w}-{n}"), &op)
                        .await
                        .map_err(|e| anyhow::anyhow!("credit on A: {e}"))?;
                    let acknowledged = Instant::now();
                    writes.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                    if n.is_multiple_of(every) {
                        let balance = receipt.wallet.balance.minor;
                        while balance_on(&b, id).await? < balance {
                            tokio::task::yield_now().await;
                        }
                        windows.push(acknowledged.elapsed());
                    }
                }
                anyhow::Ok(windows)
            })
        })
        .collect();
    let mut windows = Vec::new();
    for w in writers {
        windows.extend(w.await??);
    }
    for r in readers {
        r.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(!windows.is_empty(), "no credit was sampled: run longer");
    windows.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |p: f64| ms(windows[((windows.len() as f64 * p) as usize).min(windows.len() - 1)]);
    let (reads, from_memory) = (
        reads.load(Ordering::Relaxed),
        from_memory.load(Ordering::Relaxed),
    );
    println!(
        "STALENESS_RESULT samples={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} bound_ms={} \
         writes_per_s={:.0} reads_per_s={:.0} reads_from_memory={:.1}% \
         balances_equal_ledgers={}",
        windows.len(),
        pct(0.5),
        pct(0.99),
        ms(*windows.last().unwrap()),
        STALENESS_BOUND.as_millis(),
        writes.load(Ordering::Relaxed) as f64 / secs,
        reads as f64 / secs,
        100.0 * from_memory as f64 / reads.max(1) as f64,
        a.wallet_violations().await?.is_empty(),
    );
    Ok(())
}
