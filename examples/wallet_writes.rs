//! Wallet changes per second on either store, through the same domain rule: the sled
//! runtime (its account shards: one node) or PostgreSQL (`PgStore::change_wallet`, the
//! path a cluster takes; `--nodes N` opens N pools on one database, as N nodes would).
//! Each of `--concurrency` workers credits one point to a random one of `--accounts`
//! accounts under a fresh idempotency key, as fast as it is answered, for `--seconds`.
//! Prints changes/s, p50/p99 latency and that every balance still equals its ledger.
//!
//! Run with:
//!   cargo run --release --features postgres --example wallet_writes -- --backend sled
//!   scripts/pg.sh -- cargo run --release --features postgres --example wallet_writes -- \
//!       --backend postgres --nodes 2
//! (scripts/pg.sh sets WAYFARE__STORE__URL; this applies the schema itself.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::Rng;
use wayfare::config::{Secret, StoreBackend};
use wayfare::domain::account::AccountId;
use wayfare::domain::wallet::WalletOp;
use wayfare::store::postgres::wallet::NewAccountRow;
use wayfare::store::postgres::PgStore;
use wayfare::{Config, Money, NewAccount, Runtime};

#[derive(Debug, Parser)]
struct Args {
    /// sled or postgres.
    #[arg(long, default_value = "sled")]
    backend: String,
    /// PostgreSQL pools ("nodes") sharing the database.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    #[arg(long, default_value_t = 200)]
    accounts: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

#[derive(Clone)]
enum Target {
    Sled(Runtime),
    Pg(Vec<PgStore>),
}

impl Target {
    async fn credit(&self, worker: usize, id: AccountId, key: &str) -> Result<(), String> {
        let currency = wayfare::domain::money::Currency::EUR;
        let op = WalletOp::Credit {
            amount: Money::new(1, currency),
        };
        match self {
            Target::Sled(rt) => rt
                .change_wallet(id, key, op)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::Pg(nodes) => nodes[worker % nodes.len()]
                .change_wallet(id, key, &op)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data = tempfile::tempdir()?;
    let mut ids = Vec::new();
    let target = match args.backend.as_str() {
        "sled" => {
            let mut config = Config::default();
            config.store.data_dir = data.path().to_owned();
            config.demo.accounts = 0;
            config.accounts.currency = wayfare::domain::money::Currency::EUR;
            let rt = Runtime::start(config).await?;
            for i in 0..args.accounts {
                let a = rt
                    .create_account(NewAccount::new(
                        &format!("A {i}"),
                        &format!("a{i}@example.com"),
                    )?)
                    .await?;
                ids.push(a.id);
            }
            Target::Sled(rt)
        }
        "postgres" => {
            let url = std::env::var("WAYFARE__STORE__URL").map_err(|_| {
                anyhow::anyhow!("set WAYFARE__STORE__URL (scripts/pg.sh -- ... does)")
            })?;
            let mut config = Config::default();
            config.store.backend = StoreBackend::Postgres;
            config.store.url = Some(Secret::new(url));
            config.store.pool_size = args.concurrency.div_ceil(args.nodes).max(1);
            let nodes: Vec<PgStore> = (0..args.nodes)
                .map(|_| PgStore::connect(&config.store))
                .collect::<Result<_, _>>()?;
            nodes[0].migrate().await?;
            for i in 0..args.accounts {
                let id = AccountId(uuid::Uuid::new_v4());
                nodes[0]
                    .open_account(&NewAccountRow {
                        id,
                        name: format!("A {i}"),
                        email: format!("{}@example.com", id.0),
                        currency: wayfare::domain::money::Currency::EUR,
                        created_at: chrono::Utc::now(),
                    })
                    .await?;
                ids.push(id);
            }
            Target::Pg(nodes)
        }
        other => anyhow::bail!("--backend must be sled or postgres, got {other:?}"),
    };
    let ids = Arc::new(ids);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (target, ids) = (target.clone(), ids.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let id = ids[rand::thread_rng().gen_range(0..ids.len())];
                    let t = Instant::now();
                    target
                        .credit(w, id, &format!("w{w}-{n}"))
                        .await
                        .map_err(|e| anyhow::anyhow!(e))?;
                    latencies.push(t.elapsed());
                    n += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    let consistent = match &target {
        Target::Pg(nodes) => nodes[0].wallet_violations().await?.is_empty().to_string(),
        Target::Sled(_) => "checked by the shard on every load".into(),
    };
    println!(
        "WALLET_RESULT backend={} nodes={} concurrency={} changes={} secs={secs:.2} per_s={:.0} p50_ms={:.2} p99_ms={:.2} balances_equal_ledgers={consistent}",
        args.backend,
        if args.backend == "sled" { 1 } else { args.nodes },
        args.concurrency,
        all.len(),
        all.len() as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
    if let Target::Sled(rt) = target {
        rt.shutdown().await?;
    }
    Ok(())
}
