//! Process-wide counts of partner replies wayfare would not take at their word: a
//! redirect (partner clients never follow one) and an amount other than the one asked (a
//! seller's confirmed price, a gateway's authorized, captured or refunded amount). Kept
//! here, outside any actor, because they are counted where the reply is read (the HTTP
//! clients, the saga actor) and read by `/metrics`; they only grow, so several runtimes in
//! one process (tests) each see at least their own.

use std::sync::atomic::{AtomicU64, Ordering};

/// Which partner sent the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Partner {
    /// A seller.
    Seller,
    /// The payment gateway.
    Gateway,
}

/// What was wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Untrusted {
    /// A 3xx answer: refused, never followed.
    Redirect,
    /// An amount other than the one asked.
    AmountMismatch,
}

static COUNTS: [[AtomicU64; 2]; 2] = [
    [AtomicU64::new(0), AtomicU64::new(0)],
    [AtomicU64::new(0), AtomicU64::new(0)],
];

fn slot(partner: Partner, what: Untrusted) -> &'static AtomicU64 {
    &COUNTS[partner as usize][what as usize]
}

/// Counts one untrusted reply.
pub(crate) fn record(partner: Partner, what: Untrusted) {
    slot(partner, what).fetch_add(1, Ordering::Relaxed);
}

/// How many untrusted replies of this kind were seen since the process started.
pub(crate) fn count(partner: Partner, what: Untrusted) -> u64 {
    slot(partner, what).load(Ordering::Relaxed)
}

impl Partner {
    /// Label value: `seller` or `gateway`.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Partner::Seller => "seller",
            Partner::Gateway => "gateway",
        }
    }
}

impl Untrusted {
    /// Label value: `redirect` or `amount_mismatch`.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Untrusted::Redirect => "redirect",
            Untrusted::AmountMismatch => "amount_mismatch",
        }
    }
}

/// Every (partner, kind) pair, for rendering.
pub(crate) const ALL: [(Partner, Untrusted); 4] = [
    (Partner::Seller, Untrusted::Redirect),
    (Partner::Seller, Untrusted::AmountMismatch),
    (Partner::Gateway, Untrusted::Redirect),
    (Partner::Gateway, Untrusted::AmountMismatch),
];
