//! What every partner adapter (a seller's, the payment gateway's) wraps around its calls:
//! a circuit breaker and a bulkhead, with the figures they publish. The adapter actor owns
//! its `CallGuard`, so breaker and bulkhead need no locks; the figures go to a shared
//! [`PartnerStats`] that outlives restarts of the adapter.
//!
//! A call is admitted (bulkhead first, then the breaker's permit), made by the adapter,
//! then settled with its outcome: the bulkhead slot comes back, the breaker learns the
//! outcome and latency, and the figures move.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::breaker::{
    BreakerConfig, BreakerSnapshot, BreakerState, BreakerTimeline, CallOutcome, CircuitBreaker,
    Permit,
};
use crate::domain::latency::LatencyHistogram;

/// Why a call was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The breaker is open (or its half-open probes are taken).
    CircuitOpen,
    /// The bulkhead is full.
    BulkheadFull,
}

/// Breaker and bulkhead of one adapter.
#[derive(Debug)]
pub struct CallGuard {
    breaker: CircuitBreaker,
    in_flight: u32,
    max_concurrent: u32,
    stats: Arc<PartnerStats>,
}

impl CallGuard {
    /// A closed breaker and an empty bulkhead of `max_concurrent` slots.
    pub fn new(breaker: BreakerConfig, max_concurrent: u32, stats: Arc<PartnerStats>) -> Self {
        CallGuard {
            breaker: CircuitBreaker::new(breaker),
            in_flight: 0,
            max_concurrent,
            stats,
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Publishes the bulkhead bound and the breaker (when the adapter starts).
    pub fn publish(&self) {
        self.stats
            .bulkhead_limit
            .store(u64::from(self.max_concurrent), Ordering::Relaxed);
        self.publish_breaker(Instant::now());
    }

    fn publish_breaker(&self, now: Instant) {
        let snapshot = self.breaker.snapshot(now);
        let previous = self
            .stats
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(snapshot);
        // Most calls change nothing: the timeline (and the clock) only on a change.
        if previous.map(|p| p.state) != Some(snapshot.state) {
            self.stats
                .breaker_timeline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .note(snapshot.state, chrono::Utc::now());
        }
    }

    /// Admission: bulkhead, then breaker. The permit must be settled.
    pub fn admit(&mut self, now: Instant) -> Result<Permit, Refused> {
        if self.in_flight >= self.max_concurrent {
            self.stats.bulkhead_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::BulkheadFull);
        }
        let permit = self.breaker.try_acquire(now).map_err(|_| {
            self.stats.short_circuited.fetch_add(1, Ordering::Relaxed);
            Refused::CircuitOpen
        })?;
        self.in_flight += 1;
        self.stats
            .in_flight
            .store(u64::from(self.in_flight), Ordering::Relaxed);
        self.publish_breaker(now);
        Ok(permit)
    }

    /// Settles an admitted call: slot back, breaker told, figures updated.
    pub fn settle(&mut self, permit: Permit, failed: bool, timed_out: bool, started: Instant) {
        let now = Instant::now();
        self.in_flight -= 1;
        self.stats
            .in_flight
            .store(u64::from(self.in_flight), Ordering::Relaxed);
        let outcome = if failed {
            CallOutcome::Failure
        } else {
            CallOutcome::Success
        };
        self.breaker.record(permit, outcome, now - started, now);
        self.publish_breaker(now);
        if failed {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        if timed_out {
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Figures of one partner adapter, published for `/metrics`, the console and the
/// supervision snapshot. Written only by the adapter; survives adapter restarts (the
/// breaker itself starts closed again). The look-to-book fields stay zero for partners
/// other than sellers.
#[derive(Debug, Default)]
pub struct PartnerStats {
    /// Calls made to the partner (attempts, retries included).
    pub calls: AtomicU64,
    /// Calls that failed (error or timeout).
    pub failures: AtomicU64,
    /// Calls that timed out.
    pub timeouts: AtomicU64,
    /// Calls refused without calling: breaker open.
    pub short_circuited: AtomicU64,
    /// Calls refused without calling: bulkhead full.
    pub bulkhead_rejected: AtomicU64,
    /// Searches refused without calling: look-to-book.
    pub throttled: AtomicU64,
    /// Searches sent (look-to-book numerator).
    pub searches: AtomicU64,
    /// Bookings confirmed (look-to-book denominator).
    pub bookings: AtomicU64,
    /// Calls in flight now.
    pub in_flight: AtomicU64,
    /// Sum of call latencies, microseconds.
    pub latency_us_sum: AtomicU64,
    /// Latency histogram: counts per [`LATENCY_BUCKETS_MS`] bucket (cumulative at render).
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    /// Last breaker snapshot.
    pub breaker: Mutex<Option<BreakerSnapshot>>,
    /// The breaker's last transitions with their times (it survives adapter restarts, so a
    /// restart that closes an open breaker shows as a transition too).
    pub breaker_timeline: Mutex<BreakerTimeline>,
    /// Fine-grained call latencies, for percentiles over a recent window.
    pub latency: LatencyHistogram,
    /// The bulkhead's bound (`max_concurrent_calls`), published when the adapter starts.
    pub bulkhead_limit: AtomicU64,
}

/// Upper bounds of the partner latency histogram buckets, in ms (plus +Inf).
pub const LATENCY_BUCKETS_MS: [u64; 10] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

impl PartnerStats {
    /// Records one call's latency.
    pub(crate) fn observe(&self, elapsed: Duration) {
        self.latency.record(elapsed);
        self.latency_us_sum
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        let ms = elapsed.as_millis() as u64;
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The breaker state last published.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(BreakerState::Closed, |s| s.state)
    }

    /// A JSON view for the supervision snapshot.
    pub fn to_json(&self) -> serde_json::Value {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "breaker": *self.breaker.lock().unwrap_or_else(|p| p.into_inner()),
            "calls": get(&self.calls),
            "failures": get(&self.failures),
            "timeouts": get(&self.timeouts),
            "short_circuited": get(&self.short_circuited),
            "bulkhead_rejected": get(&self.bulkhead_rejected),
            "throttled": get(&self.throttled),
            "in_flight": get(&self.in_flight),
            "look_to_book": {"searches": get(&self.searches), "bookings": get(&self.bookings)},
        })
    }
}
