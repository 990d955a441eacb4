//! A durable fake hotel and flight seller speaking wayfare's seller wire format
//! (`docs/seller-wire-format.md`), for demos, drills and crash tests: it runs as its own
//! process, serves the simulated catalog, keeps its reservations and cancellations in
//! `--data-dir` (so they survive its own restart and wayfare's crashes), and shows
//! everything it did at `GET /_fake/ledger` (with every call received and its W3C
//! `traceparent`, under `calls`).
//!
//! Run with: `cargo run --example fake_seller -- --bind 127.0.0.1:9001 --data-dir /tmp/s1`
//!
//! Name and catalog seed, when not given: on ports 9001 to 9026 the seller is the demo
//! seller of that rank, `alpha` (seed 1), `bravo` (seed 2), `charlie` (seed 3) and so on
//! through the NATO alphabet, so it prices like the built-in demo seller of that name; on
//! any other port it is `seller-PORT` with seed PORT. `examples/partners.toml` relies on
//! this for its sellers on 9001 and 9002.
//!
//! With `--tls-cert cert.pem --tls-key key.pem` it serves `https://` (wayfare trusts a
//! self-signed certificate through the seller's `ca_cert` key); the listening line is the
//! same.
//!
//! Then, for example:
//! `curl -s -XPOST localhost:9001/search/hotels -H 'content-type: application/json'
//!  -d '{"city_or_hotel":"Lisbon","check_in":"2026-05-01","check_out":"2026-05-03"}'`

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use wayfare::sellers::simulated::{SimulatedSeller, SimulatedSellerConfig};
use wayfare_drill::fakes::journaled::{identity_of_port, JournalFaults, JournaledSeller};
use wayfare_drill::fakes::{seller, tls};

/// Command line of the fake seller.
#[derive(Debug, Parser)]
#[command(about = "A durable fake seller serving wayfare's seller wire format")]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:9001")]
    bind: String,
    /// Directory of the journal (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Seller name; default from the port (see the file's docs).
    #[arg(long)]
    name: Option<String>,
    /// Catalog seed: sellers with different seeds price the same SKUs differently;
    /// default from the port (see the file's docs).
    #[arg(long)]
    seed: Option<u64>,
    /// Latency added to every call, in ms.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of the base catalog this seller carries, 0..=1 (0.8, as the demo sellers).
    #[arg(long, default_value_t = 0.8)]
    coverage: f64,
    /// Required `Authorization: Bearer` key; none means any caller is accepted.
    #[arg(long, env = "FAKE_SELLER_API_KEY")]
    api_key: Option<String>,
    /// Probability of a 503 before acting (nothing happens).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Probability of hanging before acting (the caller times out; nothing happens).
    #[arg(long, default_value_t = 0.0)]
    hang_rate: f64,
    /// Probability of acting, then never answering (the caller times out although the
    /// booking or cancellation landed: an unknown outcome it must reconcile by key).
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Probability that a booking is declined (`sold out`).
    #[arg(long, default_value_t = 0.0)]
    reject_rate: f64,
    /// Cancellation fee, percent of the booked price.
    #[arg(long, default_value_t = 10)]
    cancel_fee_percent: u32,
    /// Seed of the fault dice.
    #[arg(long, default_value_t = 11)]
    fault_seed: u64,
    /// PEM certificate chain (leaf first): serve https:// with it (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    // Warnings by default: the first stdout line is the listening line; RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let listener =
        TcpListener::bind(&args.bind).with_context(|| format!("cannot listen on {}", args.bind))?;
    let addr = listener.local_addr()?;
    let (port_name, port_seed) = identity_of_port(addr.port());
    let name = args.name.unwrap_or(port_name);
    let seed = args.seed.unwrap_or(port_seed);
    let catalog = SimulatedSeller::new(SimulatedSellerConfig {
        name: name.clone(),
        seed,
        latency_ms: (0, 0),
        coverage: args.coverage,
        cancel_fee_percent: args.cancel_fee_percent,
        ..SimulatedSellerConfig::default()
    })
    .context("invalid fake seller settings")?;
    let faults = JournalFaults {
        latency_ms: args.latency_ms,
        error_rate: args.error_rate,
        hang_rate: args.hang_rate,
        drop_rate: args.drop_rate,
        reject_rate: args.reject_rate,
        seed: args.fault_seed,
    };
    faults.validate().map_err(anyhow::Error::msg)?;
    let journaled = JournaledSeller::open(
        &name,
        catalog,
        args.cancel_fee_percent,
        faults,
        &args.data_dir,
    )
    .with_context(|| format!("cannot open the journal in {}", args.data_dir.display()))?;
    // Scripts and tests wait for this line to know the port is open.
    println!("fake_seller listening on {addr}");
    tracing::info!(%addr, %name, seed, "Fake seller listening.");
    let shutdown = async {
        // If the signal handler cannot be installed, stop rather than run unstoppable.
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "Cannot listen for Ctrl-C; stopping.");
        }
    };
    seller::serve_journaled(listener, journaled, args.api_key, tls, shutdown).await?;
    tracing::info!("Fake seller stopped.");
    Ok(())
}
