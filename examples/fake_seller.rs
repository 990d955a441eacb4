//! A fake hotel and flight seller speaking wayfare's seller wire format
//! (`docs/seller-wire-format.md`), backed by the simulated seller, with its latency and fault
//! knobs on the command line. Point an `http` seller of wayfare's config at it to exercise
//! the HTTP adapter, its timeouts and its circuit breaker.
//!
//! Run with: cargo run --example fake_seller -- --bind 127.0.0.1:9001
//!
//! Then, for example:
//! `curl -s -XPOST localhost:9001/search/hotels -H 'content-type: application/json'
//!  -d '{"city_or_hotel":"Lisbon","check_in":"2026-05-01","check_out":"2026-05-03"}'`

use std::net::TcpListener;

use anyhow::{bail, Context};
use clap::Parser;
use wayfare::sellers::simulated::{SimulatedSeller, SimulatedSellerConfig};
use wayfare_drill::fakes;

/// Command line of the fake seller.
#[derive(Debug, Parser)]
#[command(about = "A fake seller serving wayfare's seller wire format")]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:9001")]
    bind: String,
    /// Seller name.
    #[arg(long, default_value = "fake")]
    name: String,
    /// Catalog seed: sellers with different seeds price the same SKUs differently.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Latency range in milliseconds, `MIN,MAX` (or one number for a fixed latency).
    #[arg(long, default_value = "20,80")]
    latency_ms: String,
    /// Share of the base catalog this seller carries, 0..=1.
    #[arg(long, default_value_t = 0.8)]
    coverage: f64,
    /// Probability a request fails with 503.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Probability a request never gets a reply.
    #[arg(long, default_value_t = 0.0)]
    hang_rate: f64,
    /// Probability a booking is declined.
    #[arg(long, default_value_t = 0.0)]
    reject_rate: f64,
    /// Probability a booking or cancellation lands but its reply is never sent.
    #[arg(long, default_value_t = 0.0)]
    lost_reply_rate: f64,
    /// Cancellation fee, percent of the booked price.
    #[arg(long, default_value_t = 10)]
    cancel_fee_percent: u32,
}

fn parse_latency(text: &str) -> anyhow::Result<(u64, u64)> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let number = |s: &str| {
        s.parse::<u64>()
            .with_context(|| format!("--latency-ms: {s:?} is not a number of milliseconds"))
    };
    match parts.as_slice() {
        [fixed] => Ok((number(fixed)?, number(fixed)?)),
        [min, max] => Ok((number(min)?, number(max)?)),
        _ => bail!("--latency-ms: expected MIN,MAX, got {text:?}"),
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    // Info by default so the start and stop lines show; RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let args = Args::parse();
    let config = SimulatedSellerConfig {
        name: args.name,
        seed: args.seed,
        latency_ms: parse_latency(&args.latency_ms)?,
        coverage: args.coverage,
        error_rate: args.error_rate,
        hang_rate: args.hang_rate,
        reject_rate: args.reject_rate,
        lost_reply_rate: args.lost_reply_rate,
        cancel_fee_percent: args.cancel_fee_percent,
        ..SimulatedSellerConfig::default()
    };
    let seller = SimulatedSeller::new(config.clone()).context("invalid fake seller settings")?;
    let listener =
        TcpListener::bind(&args.bind).with_context(|| format!("cannot listen on {}", args.bind))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, name = %config.name, seed = config.seed, "Fake seller listening.");
    println!("fake seller {} listening on http://{addr}/", config.name);
    let shutdown = async {
        // If the signal handler cannot be installed, stop rather than run unstoppable.
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "Cannot listen for Ctrl-C; stopping.");
        }
    };
    fakes::seller::serve(listener, seller, shutdown).await?;
    tracing::info!("Fake seller stopped.");
    Ok(())
}
