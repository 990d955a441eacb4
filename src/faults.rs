//! Fault injection for tests and chaos drills: what `[faults]` can break, and counters of
//! the faults that actually fired.
//!
//! The injectors live next to what they break, each a thin wrapper or one call:
//! panics in actor handlers (`actors::PanicFaults`), store writes
//! ([`crate::store::FaultyStore`]), sellers ([`crate::sellers::faulty::FaultySeller`]) and
//! the payment gateway ([`crate::payments::faulty::FaultyGateway`]). They all count into one
//! [`FaultCounters`] per runtime, read with `Runtime::fault_counts`, so a chaos run can say
//! how much went wrong on purpose next to what it then found.
//!
//! Everything here is off unless `faults.enabled` is true, and `wayfare serve --production`
//! refuses to start when it is.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// An actor kind whose handlers `faults.panic_rate` can make panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// `AccountShard`.
    Account,
    /// `SellerAdapter`.
    Seller,
    /// `SearchAggregator`.
    Search,
    /// `BookingSaga` (bookings and cancellations).
    Saga,
    /// `Mailer`.
    Mailer,
    /// The cluster duties (heartbeat, lease renewals, take-overs) of a shared store.
    Cluster,
}

impl ActorKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ActorKind; 6] = [
        ActorKind::Account,
        ActorKind::Seller,
        ActorKind::Search,
        ActorKind::Saga,
        ActorKind::Mailer,
        ActorKind::Cluster,
    ];

    /// Name as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Account => "account",
            ActorKind::Seller => "seller",
            ActorKind::Search => "search",
            ActorKind::Saga => "saga",
            ActorKind::Mailer => "mailer",
            ActorKind::Cluster => "cluster",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// True with probability `p` (never for `p <= 0`, always for `p >= 1`).
pub(crate) fn roll(p: f64) -> bool {
    // `gen::<f64>() < p` never panics, unlike `gen_bool`, and is exactly 0% at p = 0.
    p > 0.0 && rand::random::<f64>() < p
}

/// Faults fired since the runtime started, by kind. Written by the injectors only.
#[derive(Debug, Default)]
pub struct FaultCounters {
    panics: [AtomicU64; ActorKind::ALL.len()],
    store_write_delays: AtomicU64,
    store_write_failures: AtomicU64,
    seller_failures: AtomicU64,
    seller_hangs: AtomicU64,
    seller_garbage: AtomicU64,
    payment_failures: AtomicU64,
    payment_hangs: AtomicU64,
}

/// Which fault fired, for [`FaultCounters::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An injected panic in a handler of this actor kind.
    Panic(ActorKind),
    /// A store flush held back by `faults.store_write_delay_ms`.
    StoreWriteDelay,
    /// A store write refused by `faults.store_write_failure_rate`.
    StoreWriteFailure,
    /// A seller call failed by `faults.seller_failure_rate`.
    SellerFailure,
    /// A seller call hung by `faults.seller_hang_rate`.
    SellerHang,
    /// A seller reply garbled by `faults.seller_garbage_rate`.
    SellerGarbage,
    /// A gateway call failed by `faults.payment_failure_rate`.
    PaymentFailure,
    /// A gateway call hung by `faults.payment_hang_rate`.
    PaymentHang,
}

impl FaultCounters {
    /// Records one fired fault.
    pub fn count(&self, fault: Fault) {
        let counter = match fault {
            Fault::Panic(kind) => &self.panics[kind.index()],
            Fault::StoreWriteDelay => &self.store_write_delays,
            Fault::StoreWriteFailure => &self.store_write_failures,
            Fault::SellerFailure => &self.seller_failures,
            Fault::SellerHang => &self.seller_hangs,
            Fault::SellerGarbage => &self.seller_garbage,
            Fault::PaymentFailure => &self.payment_failures,
            Fault::PaymentHang => &self.payment_hangs,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures now.
    pub fn snapshot(&self) -> FaultCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FaultCounts {
            account_panics: get(&self.panics[ActorKind::Account.index()]),
            seller_panics: get(&self.panics[ActorKind::Seller.index()]),
            search_panics: get(&self.panics[ActorKind::Search.index()]),
            saga_panics: get(&self.panics[ActorKind::Saga.index()]),
            mailer_panics: get(&self.panics[ActorKind::Mailer.index()]),
            cluster_panics: get(&self.panics[ActorKind::Cluster.index()]),
            store_write_delays: get(&self.store_write_delays),
            store_write_failures: get(&self.store_write_failures),
            seller_failures: get(&self.seller_failures),
            seller_hangs: get(&self.seller_hangs),
            seller_garbage: get(&self.seller_garbage),
            payment_failures: get(&self.payment_failures),
            payment_hangs: get(&self.payment_hangs),
        }
    }
}

/// A snapshot of [`FaultCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FaultCounts {
    /// Injected panics in account shards.
    pub account_panics: u64,
    /// Injected panics in seller adapters.
    pub seller_panics: u64,
    /// Injected panics in search aggregators.
    pub search_panics: u64,
    /// Injected panics in booking sagas.
    pub saga_panics: u64,
    /// Injected panics in the mailer.
    pub mailer_panics: u64,
    /// Injected panics in the cluster duties.
    pub cluster_panics: u64,
    /// Store flushes held back.
    pub store_write_delays: u64,
    /// Store writes refused (nothing written).
    pub store_write_failures: u64,
    /// Seller calls failed.
    pub seller_failures: u64,
    /// Seller calls hung.
    pub seller_hangs: u64,
    /// Seller replies garbled.
    pub seller_garbage: u64,
    /// Gateway calls failed.
    pub payment_failures: u64,
    /// Gateway calls hung.
    pub payment_hangs: u64,
}

impl FaultCounts {
    /// Name and count of every kind, in a fixed order (for reports).
    pub fn rows(&self) -> [(&'static str, u64); 13] {
        [
            ("account_panics", self.account_panics),
            ("seller_panics", self.seller_panics),
            ("search_panics", self.search_panics),
            ("saga_panics", self.saga_panics),
            ("mailer_panics", self.mailer_panics),
            ("cluster_panics", self.cluster_panics),
            ("store_write_delays", self.store_write_delays),
            ("store_write_failures", self.store_write_failures),
            ("seller_failures", self.seller_failures),
            ("seller_hangs", self.seller_hangs),
            ("seller_garbage", self.seller_garbage),
            ("payment_failures", self.payment_failures),
            ("payment_hangs", self.payment_hangs),
        ]
    }

    /// Every fault fired.
    pub fn total(&self) -> u64 {
        self.rows().iter().map(|(_, n)| n).sum()
    }

    /// The sum of two snapshots (e.g. of a runtime and of its restart).
    pub fn plus(&self, other: &FaultCounts) -> FaultCounts {
        FaultCounts {
            account_panics: self.account_panics + other.account_panics,
            seller_panics: self.seller_panics + other.seller_panics,
            search_panics: self.search_panics + other.search_panics,
            saga_panics: self.saga_panics + other.saga_panics,
            mailer_panics: self.mailer_panics + other.mailer_panics,
            cluster_panics: self.cluster_panics + other.cluster_panics,
            store_write_delays: self.store_write_delays + other.store_write_delays,
            store_write_failures: self.store_write_failures + other.store_write_failures,
            seller_failures: self.seller_failures + other.seller_failures,
            seller_hangs: self.seller_hangs + other.seller_hangs,
            seller_garbage: self.seller_garbage + other.seller_garbage,
            payment_failures: self.payment_failures + other.payment_failures,
            payment_hangs: self.payment_hangs + other.payment_hangs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_by_kind_and_add_up() {
        let c = FaultCounters::default();
        c.count(Fault::Panic(ActorKind::Saga));
        c.count(Fault::Panic(ActorKind::Saga));
        c.count(Fault::StoreWriteFailure);
        c.count(Fault::PaymentHang);
        let s = c.snapshot();
        assert_eq!(s.saga_panics, 2);
        assert_eq!(s.account_panics, 0);
        assert_eq!(s.store_write_failures, 1);
        assert_eq!(s.payment_hangs, 1);
        assert_eq!(s.total(), 4);
        assert_eq!(s.plus(&s).total(), 8);
    }

    #[test]
    fn roll_is_exact_at_the_ends() {
        assert!((0..1000).all(|_| !roll(0.0)));
        assert!((0..1000).all(|_| roll(1.0)));
        assert!(!roll(f64::NAN));
    }
}
