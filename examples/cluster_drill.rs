//! Node-kill drill of a wayfare cluster behind HAProxy (`scripts/cluster.sh`): fixed-rate
//! mixed load through the front URL, one node SIGKILLed and restarted, every booking
//! settled, then the partners' books, the bookings and the wallets checked. The drill
//! itself lives in `wayfare_drill::cluster`; this driver parses the flags and exits non-zero
//! on any violation.
//!
//! Run with: scripts/cluster-drill.sh (or, inside `scripts/cluster.sh --`,
//! `target/debug/examples/cluster_drill --duration-secs 20`; `--help` lists the flags).

use clap::Parser;
use wayfare_drill::cluster::{run_blocking, Args};

fn main() -> anyhow::Result<()> {
    let violations = run_blocking(Args::parse())?;
    if violations > 0 {
        eprintln!("cluster drill: {violations} violation(s)");
        std::process::exit(1);
    }
    Ok(())
}
