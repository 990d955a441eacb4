//! What the drill did and found, printable for a person.

use std::collections::BTreeMap;

use serde::Serialize;
use wayfare::faults::FaultCounts;

use crate::observations::{Observations, Violation};

/// Outcomes of one kind of operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpCount {
    /// Issued.
    pub attempted: u64,
    /// Answered with success.
    pub succeeded: u64,
    /// Answered with a business refusal (invalid, conflict, not found, wallet refused).
    pub refused: u64,
    /// Failed for want of an answer (crashed, timed out, overloaded, store error...).
    pub failed: u64,
}

/// What the drill did and found.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// Seed of the plan.
    pub seed: u64,
    /// Operations by kind (`search`, `book`, `resubmit`, `cancel`, `credit`, and after the
    /// restart `resubmit_after_restart`).
    pub ops: BTreeMap<&'static str, OpCount>,
    /// Faults fired, both runtimes together.
    pub faults: FaultCounts,
    /// Bookings by final state.
    pub bookings: BTreeMap<&'static str, usize>,
    /// Cancellation sagas by final state.
    pub cancellations: BTreeMap<&'static str, usize>,
    /// Bookings that had not settled when the settle time ran out.
    pub unsettled: usize,
    /// Parked sagas with their reasons (at most 10 shown).
    pub parked: Vec<(String, String)>,
    /// Saga actor crashes counted by the second runtime's coordinator.
    pub saga_crashes_after_restart: u64,
    /// What the checks found; must be empty.
    pub violations: Vec<Violation>,
    /// The histories of (at most five) bookings named by violations, and what the gateway
    /// and sellers recorded for them.
    pub evidence: Vec<String>,
    /// Seconds of traffic before the restart.
    pub drive_secs: f64,
    /// Seconds from stopping the first runtime to the second one answering.
    pub restart_secs: f64,
    /// Seconds until every booking settled (or the settle time ran out).
    pub settle_secs: f64,
    /// Seconds of the whole drill.
    pub total_secs: f64,
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "chaos drill, seed {:#x}", self.seed)?;
        writeln!(
            f,
            "  {:<24} {:>9} {:>9} {:>9} {:>9}",
            "operation", "attempted", "succeeded", "refused", "failed"
        )?;
        for (kind, n) in &self.ops {
            writeln!(
                f,
                "  {:<24} {:>9} {:>9} {:>9} {:>9}",
                kind, n.attempted, n.succeeded, n.refused, n.failed
            )?;
        }
        writeln!(f, "  faults fired: {} in all", self.faults.total())?;
        for (kind, n) in self.faults.rows() {
            writeln!(f, "    {kind:<22} {n:>7}")?;
        }
        writeln!(f, "  bookings by final state: {:?}", self.bookings)?;
        writeln!(
            f,
            "  cancellations by final state: {:?}",
            self.cancellations
        )?;
        writeln!(
            f,
            "  unsettled: {}, parked: {}, saga crashes after restart: {}",
            self.unsettled,
            self.parked.len(),
            self.saga_crashes_after_restart
        )?;
        for (id, reason) in self.parked.iter().take(10) {
            writeln!(f, "    parked {id}: {reason}")?;
        }
        writeln!(
            f,
            "  time: drive {:.1} s, restart {:.1} s, settle {:.1} s, total {:.1} s",
            self.drive_secs, self.restart_secs, self.settle_secs, self.total_secs
        )?;
        writeln!(f, "  invariant violations: {}", self.violations.len())?;
        for v in self.violations.iter().take(40) {
            writeln!(f, "    {}: {}", v.invariant, v.detail)?;
        }
        for line in &self.evidence {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What is known about the bookings that violations name (at most five).
pub(crate) fn evidence(seen: &Observations, violations: &[Violation]) -> Vec<String> {
    let mut out = Vec::new();
    let named = seen
        .bookings
        .iter()
        .filter(|b| violations.iter().any(|v| v.detail.contains(&b.id)))
        .take(5);
    for b in named {
        out.push(format!(
            "booking {} ({}, {} in points, seller {}):",
            b.id, b.offer_price, b.wallet_points, b.seller
        ));
        out.extend(b.history.iter().map(|h| format!("  {h}")));
        let g = seen
            .payments
            .as_ref()
            .map(|p| p.ledger.clone())
            .unwrap_or_default();
        let mine = |key: &str| key.starts_with(&format!("{}:", b.id));
        for a in g.authorizations.iter().filter(|a| mine(&a.key)) {
            out.push(format!(
                "  gateway: authorized {} as {} ({})",
                a.amount, a.authorization_id, a.key
            ));
        }
        for c in g.captures.iter().filter(|c| mine(&c.key)) {
            out.push(format!(
                "  gateway: captured {} of {} ({})",
                c.amount, c.authorization_id, c.key
            ));
        }
        for v in g.voids.iter().filter(|v| mine(&v.key)) {
            out.push(format!(
                "  gateway: voided {} ({})",
                v.authorization_id, v.key
            ));
        }
        for r in g.refunds.iter().filter(|r| mine(&r.key)) {
            out.push(format!(
                "  gateway: refunded {} of {} ({})",
                r.amount, r.capture_id, r.key
            ));
        }
        for s in seen.sellers.iter().flatten() {
            for (key, status) in s.reservations.iter().filter(|(k, _)| *k == b.id) {
                out.push(format!("  seller {}: {key} {status:?}", s.name));
            }
        }
    }
    out
}
