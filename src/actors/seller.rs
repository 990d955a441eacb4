//! `SellerAdapter`: one per configured seller. Wraps that seller's [`SellerApi`] behind the
//! same contract for everyone, and owns the protections around it: a per-call timeout,
//! retries with exponential backoff and jitter (searches only: they are the only calls
//! safe to repeat blindly), a circuit breaker, a bulkhead (at most N calls in flight,
//! excess refused at once) and a look-to-book meter (searches vs bookings).
//!
//! Sent to by the `SearchAggregator` (searches) and by booking sagas (book, cancel,
//! status). Calls run as futures of the actor's context, so the mailbox keeps moving while
//! a seller is slow; their outcomes come back to the actor to update the breaker and meter.
//! Figures for metrics are published in a shared [`SellerStats`] that only this actor
//! writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::PanicFaults;
use crate::domain::backoff::equal_jitter;
use crate::domain::breaker::{
    BreakerConfig, BreakerSnapshot, BreakerState, BreakerTimeline, CallOutcome, CircuitBreaker,
    InvalidSetting, Permit,
};
use crate::domain::latency::LatencyHistogram;
use crate::domain::look_to_book::{LookToBookConfig, LookToBookMeter};
use crate::sellers::{
    BookOutcome, BookRequest, CancelOutcome, Offer, ReservationStatus, SearchQuery, SellerApi,
    SellerError,
};

/// Per-seller protections, `[sellers.adapter]` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdapterConfig {
    /// Timeout of one call to the seller, in ms.
    pub call_timeout_ms: u64,
    /// Extra attempts of a failed search (never of book or cancel).
    pub search_retries: u32,
    /// First retry backoff in ms; doubles per attempt, with jitter.
    pub retry_backoff_ms: u64,
    /// Bulkhead: calls in flight at once; more are refused at once.
    pub max_concurrent_calls: u32,
    /// Requests queued or in flight in the adapter's mailbox.
    pub mailbox_capacity: usize,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Look-to-book meter.
    pub look_to_book: LookToBookConfig,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig {
            call_timeout_ms: 1000,
            search_retries: 1,
            retry_backoff_ms: 50,
            max_concurrent_calls: 64,
            mailbox_capacity: 1024,
            breaker: BreakerConfig::default(),
            look_to_book: LookToBookConfig::default(),
        }
    }
}

impl AdapterConfig {
    /// Range checks; keys are relative to `[sellers.adapter]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1..=600_000).contains(&self.call_timeout_ms) {
            return Err(InvalidSetting::new(
                "call_timeout_ms",
                "must be within 1..=600000",
            ));
        }
        if self.search_retries > 10 {
            return Err(InvalidSetting::new("search_retries", "must be at most 10"));
        }
        if self.retry_backoff_ms > 60_000 {
            return Err(InvalidSetting::new(
                "retry_backoff_ms",
                "must be at most 60000",
            ));
        }
        if !(1..=10_000).contains(&self.max_concurrent_calls) {
            return Err(InvalidSetting::new(
                "max_concurrent_calls",
                "must be within 1..=10000",
            ));
        }
        if !(1..=1_000_000).contains(&self.mailbox_capacity) {
            return Err(InvalidSetting::new(
                "mailbox_capacity",
                "must be within 1..=1000000",
            ));
        }
        self.breaker.validate().map_err(|e| e.within("breaker"))?;
        self.look_to_book
            .validate()
            .map_err(|e| e.within("look_to_book"))
    }
}

/// Why a seller call was not made or gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SellerCallError {
    /// The breaker is open: the seller was not called.
    #[error("circuit open")]
    CircuitOpen,
    /// Past the look-to-book ratio: the seller was not called.
    #[error("throttled by the look-to-book meter")]
    Throttled,
    /// The bulkhead is full: the seller was not called.
    #[error("too many calls in flight")]
    BulkheadFull,
    /// The call was made and failed (after retries, for searches).
    #[error(transparent)]
    Failed(#[from] SellerError),
}

/// Counters published for `/metrics` and the supervision snapshot. Written only by the
/// adapter; survives adapter restarts (the breaker itself starts closed again).
#[derive(Debug, Default)]
pub struct SellerStats {
    /// Calls made to the seller (attempts, retries included).
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

/// Upper bounds of the seller latency histogram buckets, in ms (plus +Inf).
pub const LATENCY_BUCKETS_MS: [u64; 10] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

impl SellerStats {
    fn observe(&self, elapsed: Duration) {
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

/// The adapter actor.
pub struct SellerAdapter {
    api: Arc<dyn SellerApi>,
    config: AdapterConfig,
    breaker: CircuitBreaker,
    meter: LookToBookMeter,
    in_flight: u32,
    stats: Arc<SellerStats>,
    panics: PanicFaults,
}

impl std::fmt::Debug for SellerAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SellerAdapter")
            .field("seller", &self.api.name())
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl SellerAdapter {
    /// A fresh adapter: breaker closed, meter empty.
    pub fn new(api: Arc<dyn SellerApi>, config: AdapterConfig, stats: Arc<SellerStats>) -> Self {
        let now = Instant::now();
        SellerAdapter {
            breaker: CircuitBreaker::new(config.breaker.clone()),
            meter: LookToBookMeter::new(config.look_to_book.clone(), now),
            api,
            config,
            in_flight: 0,
            stats,
            panics: PanicFaults::default(),
        }
    }

    /// Makes handlers panic now and then (`[faults]`), to exercise restarts.
    pub fn with_panic_faults(mut self, panics: PanicFaults) -> Self {
        self.panics = panics;
        self
    }

    fn maybe_panic(&self) {
        self.panics
            .maybe_panic(&format_args!("seller adapter {}", self.api.name()));
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

    /// Admission: breaker, then bulkhead. Returns the breaker permit.
    fn admit(&mut self, now: Instant) -> Result<Permit, SellerCallError> {
        if self.in_flight >= self.config.max_concurrent_calls {
            self.stats.bulkhead_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(SellerCallError::BulkheadFull);
        }
        let permit = self.breaker.try_acquire(now).map_err(|_| {
            self.stats.short_circuited.fetch_add(1, Ordering::Relaxed);
            SellerCallError::CircuitOpen
        })?;
        self.in_flight += 1;
        self.stats
            .in_flight
            .store(self.in_flight as u64, Ordering::Relaxed);
        self.publish_breaker(now);
        Ok(permit)
    }

    /// Settles a finished call: bulkhead slot back, breaker told, stats updated.
    fn settle(&mut self, permit: Permit, failed: bool, timed_out: bool, started: Instant) {
        let now = Instant::now();
        let elapsed = now - started;
        self.in_flight -= 1;
        self.stats
            .in_flight
            .store(self.in_flight as u64, Ordering::Relaxed);
        let outcome = if failed {
            CallOutcome::Failure
        } else {
            CallOutcome::Success
        };
        self.breaker.record(permit, outcome, elapsed, now);
        self.publish_breaker(now);
        if failed {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        if timed_out {
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs `call` with the adapter's protections; `retries` extra attempts on failure.
    fn protected<T, F>(
        &mut self,
        retries: u32,
        budget: Duration,
        call: F,
    ) -> ResponseActFuture<Self, Result<T, SellerCallError>>
    where
        T: Send + 'static,
        F: Fn(Arc<dyn SellerApi>) -> crate::sellers::SellerFuture<T> + Send + 'static,
    {
        let started = Instant::now();
        let permit = match self.admit(started) {
            Ok(p) => p,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let api = self.api.clone();
        let stats = self.stats.clone();
        let per_call = Duration::from_millis(self.config.call_timeout_ms);
        let backoff = Duration::from_millis(self.config.retry_backoff_ms);
        let deadline = started + budget;
        let attempts = async move {
            let mut attempt = 0;
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let call_started = Instant::now();
                stats.calls.fetch_add(1, Ordering::Relaxed);
                let result =
                    match tokio::time::timeout(per_call.min(remaining), call(api.clone())).await {
                        Ok(r) => r,
                        Err(_) => Err(SellerError::Timeout),
                    };
                stats.observe(call_started.elapsed());
                match result {
                    Ok(v) => return Ok(v),
                    Err(e) if attempt >= retries => return Err(e),
                    Err(_) => {
                        let delay = equal_jitter(
                            backoff,
                            Duration::MAX,
                            attempt,
                            rand::thread_rng().gen::<f64>(),
                        );
                        // A retry that cannot finish before the caller's deadline is pointless.
                        if Instant::now() + delay >= deadline {
                            return Err(SellerError::Timeout);
                        }
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                }
            }
        };
        Box::pin(
            attempts
                .into_actor(self)
                .map(move |result: Result<T, SellerError>, act, _| {
                    let timed_out = matches!(result, Err(SellerError::Timeout));
                    act.settle(permit, result.is_err(), timed_out, started);
                    result.map_err(SellerCallError::Failed)
                }),
        )
    }
}

impl Actor for SellerAdapter {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.stats.bulkhead_limit.store(
            u64::from(self.config.max_concurrent_calls),
            Ordering::Relaxed,
        );
        self.publish_breaker(Instant::now());
    }
}

/// Searches this seller (hotel or flight, by the query).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Offer>, SellerCallError>")]
pub struct SearchSeller {
    /// The validated query.
    pub query: SearchQuery,
    /// Time the caller will wait; retries are not started past it.
    pub budget: Duration,
}

/// Reserves with the seller under an idempotency key (the saga id). Never retried here.
#[derive(Debug, Message)]
#[rtype(result = "Result<BookOutcome, SellerCallError>")]
pub struct BookWithSeller {
    /// The booking.
    pub request: BookRequest,
}

/// Cancels the reservation made under an idempotency key.
#[derive(Debug, Message)]
#[rtype(result = "Result<CancelOutcome, SellerCallError>")]
pub struct CancelWithSeller {
    /// The key the booking was made with.
    pub idempotency_key: String,
}

/// Asks the seller what became of a booking key (reconciliation after a lost reply).
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<ReservationStatus>, SellerCallError>")]
pub struct BookingStatusAtSeller {
    /// The key the booking was made with.
    pub idempotency_key: String,
}

/// Searches with retries, unless the look-to-book meter says stop.
impl Handler<SearchSeller> for SellerAdapter {
    type Result = ResponseActFuture<Self, Result<Vec<Offer>, SellerCallError>>;

    fn handle(&mut self, msg: SearchSeller, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        let now = Instant::now();
        if !self.meter.allow_search(now) {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            return Box::pin(actix::fut::ready(Err(SellerCallError::Throttled)));
        }
        self.meter.record_search(now);
        self.stats.searches.fetch_add(1, Ordering::Relaxed);
        let query = msg.query;
        self.protected(
            self.config.search_retries,
            msg.budget,
            move |api| match query.clone() {
                SearchQuery::Hotel(q) => api.search_hotels(q),
                SearchQuery::Flight(q) => api.search_flights(q),
            },
        )
    }
}

/// Books once; a confirmed booking counts for the look-to-book meter.
impl Handler<BookWithSeller> for SellerAdapter {
    type Result = ResponseActFuture<Self, Result<BookOutcome, SellerCallError>>;

    fn handle(&mut self, msg: BookWithSeller, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        let budget = Duration::from_millis(self.config.call_timeout_ms);
        let request = msg.request;
        Box::pin(
            self.protected(0, budget, move |api| api.book(request.clone()))
                .map(|result, act, _| {
                    if let Ok(BookOutcome::Confirmed { .. }) = &result {
                        act.meter.record_booking(Instant::now());
                        act.stats.bookings.fetch_add(1, Ordering::Relaxed);
                    }
                    result
                }),
        )
    }
}

/// Cancels once.
impl Handler<CancelWithSeller> for SellerAdapter {
    type Result = ResponseActFuture<Self, Result<CancelOutcome, SellerCallError>>;

    fn handle(&mut self, msg: CancelWithSeller, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        let budget = Duration::from_millis(self.config.call_timeout_ms);
        let key = msg.idempotency_key;
        self.protected(0, budget, move |api| api.cancel(key.clone()))
    }
}

/// Status lookups are reads: retried like searches.
impl Handler<BookingStatusAtSeller> for SellerAdapter {
    type Result = ResponseActFuture<Self, Result<Option<ReservationStatus>, SellerCallError>>;

    fn handle(&mut self, msg: BookingStatusAtSeller, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        let budget = Duration::from_millis(self.config.call_timeout_ms)
            .saturating_mul(self.config.search_retries + 1);
        let key = msg.idempotency_key;
        self.protected(self.config.search_retries, budget, move |api| {
            api.booking_status(key.clone())
        })
    }
}
