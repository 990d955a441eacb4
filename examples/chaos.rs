//! Chaos drill: drives bookings, cancellations, searches and wallet credits through the
//! embedded runtime while `[faults]` makes actors panic, store writes fail or lag, and the
//! simulated sellers and payment gateway fail, hang or answer garbage; stops the runtime
//! with sagas in flight and starts it again on the same data directory; waits for every booking to
//! settle; then checks the invariants of `wayfare_drill` (balances are ledgers, no capture
//! without confirmation, nothing booked twice, every saga terminal or `needs_attention`).
//! Prints operations and faults fired by kind, then the violations; exits non-zero if
//! there is any.
//!
//! Run with: cargo run --example chaos -- --quick
//! (or without `--quick` for a longer drill; `--help` lists the rates).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use wayfare::config::LogFormat;
use wayfare::faults::ActorKind;
use wayfare_drill::{ChaosPlan, ChaosWorld};

/// Chaos drill against the embedded wayfare runtime.
#[derive(Debug, Parser)]
#[command(name = "chaos")]
struct Args {
    /// A short drill (5 s of traffic, at most 1500 operations, 10 accounts).
    #[arg(long)]
    quick: bool,
    /// Seconds of traffic before the restart (default 30, or 5 with --quick).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Operations at most (default 20000, or 1500 with --quick).
    #[arg(long)]
    ops: Option<u64>,
    /// Clients issuing operations at once.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Accounts the traffic is spread over.
    #[arg(long)]
    accounts: Option<u64>,
    /// Seed of the plan (operations, accounts, cards, dates).
    #[arg(long)]
    seed: Option<u64>,
    /// Longest wait for bookings to settle after the restart, in seconds.
    #[arg(long)]
    settle_secs: Option<u64>,
    /// Probability that a handler of any actor kind panics.
    #[arg(long)]
    panic_rate: Option<f64>,
    /// Probability that a store write is refused.
    #[arg(long)]
    store_failure_rate: Option<f64>,
    /// Delay of every store flush, in ms.
    #[arg(long)]
    store_delay_ms: Option<u64>,
    /// Probability that a seller call fails.
    #[arg(long)]
    seller_failure_rate: Option<f64>,
    /// Probability that a seller call hangs.
    #[arg(long)]
    seller_hang_rate: Option<f64>,
    /// Probability that a seller answers garbage.
    #[arg(long)]
    seller_garbage_rate: Option<f64>,
    /// Probability that a payment gateway call fails.
    #[arg(long)]
    payment_failure_rate: Option<f64>,
    /// Probability that a payment gateway call hangs.
    #[arg(long)]
    payment_hang_rate: Option<f64>,
    /// Data directory (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log filter (panics are logged at error level; "off" keeps the report readable).
    #[arg(long, default_value = "off")]
    log: String,
}

impl Args {
    fn plan(&self, data_dir: PathBuf) -> ChaosPlan {
        let mut plan = if self.quick {
            ChaosPlan::quick(data_dir)
        } else {
            ChaosPlan::new(data_dir)
        };
        if let Some(s) = self.duration_secs {
            plan.duration = Duration::from_secs(s);
        }
        if let Some(s) = self.settle_secs {
            plan.settle_within = Duration::from_secs(s);
        }
        plan.max_ops = self.ops.unwrap_or(plan.max_ops);
        plan.concurrency = self.concurrency.unwrap_or(plan.concurrency);
        plan.accounts = self.accounts.unwrap_or(plan.accounts);
        plan.seed = self.seed.unwrap_or(plan.seed);
        let f = &mut plan.faults;
        if let Some(r) = self.panic_rate {
            f.panic_rate = r;
            f.panic_actors = ActorKind::ALL.to_vec();
        }
        f.store_write_failure_rate = self
            .store_failure_rate
            .unwrap_or(f.store_write_failure_rate);
        f.store_write_delay_ms = self.store_delay_ms.unwrap_or(f.store_write_delay_ms);
        f.seller_failure_rate = self.seller_failure_rate.unwrap_or(f.seller_failure_rate);
        f.seller_hang_rate = self.seller_hang_rate.unwrap_or(f.seller_hang_rate);
        f.seller_garbage_rate = self.seller_garbage_rate.unwrap_or(f.seller_garbage_rate);
        f.payment_failure_rate = self.payment_failure_rate.unwrap_or(f.payment_failure_rate);
        f.payment_hang_rate = self.payment_hang_rate.unwrap_or(f.payment_hang_rate);
        plan
    }
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    wayfare::telemetry::init(LogFormat::Human, &args.log);
    let temp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_owned());
    let plan = args.plan(data_dir);
    plan.faults.validate()?;
    println!(
        "driving {} clients for up to {:?} / {} operations over {} accounts in {}",
        plan.concurrency,
        plan.duration,
        plan.max_ops,
        plan.accounts,
        plan.data_dir.display()
    );
    let world = ChaosWorld::new(plan.seed);
    let report = wayfare_drill::run(&plan, &world).await?;
    print!("{report}");
    if !report.violations.is_empty() {
        anyhow::bail!(
            "{} invariant violations (seed {:#x})",
            report.violations.len(),
            plan.seed
        );
    }
    Ok(())
}
