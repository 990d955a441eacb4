//! Wayfare as an embedded library: start the runtime in-process (no HTTP), open an
//! account, credit its wallet, and read it back.
//!
//! Run with: cargo run --example embedded

use wayfare::{Config, Money, NewAccount, Runtime};

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut config = Config::default();
    config.store.data_dir = data.path().to_owned();

    let runtime = Runtime::start(config).await?;
    let account = runtime
        .create_account(NewAccount::new("Ada Lovelace", "ada@example.com")?)
        .await?;
    println!("opened account {} for {}", account.id, account.name);

    let currency = runtime.config().accounts.currency;
    let receipt = runtime
        .credit_wallet(account.id, "welcome-bonus", Money::new(10_000, currency))
        .await?;
    println!(
        "credited {} (ledger entry #{})",
        Money::new(receipt.entry.delta, currency),
        receipt.entry.seq
    );

    // The same idempotency key again: the first result, not a second credit.
    let replay = runtime
        .credit_wallet(account.id, "welcome-bonus", Money::new(10_000, currency))
        .await?;
    println!("replayed: {}", replay.replayed);

    let account = runtime.account(account.id).await?;
    println!("wallet balance: {}", account.wallet.balance);
    runtime.shutdown().await?;
    Ok(())
}
