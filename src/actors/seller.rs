//! `SellerAdapter`: one per configured seller. Wraps that seller's [`SellerApi`] behind the
//! same contract for everyone, and owns the protections around it: a per-call timeout,
//! retries with exponential backoff and jitter (searches only: they are the only calls
//! safe to repeat blindly), a circuit breaker, a bulkhead (at most N calls in flight,
//! excess refused at once) and a look-to-book meter (searches vs bookings).
//!
//! Sent to by the `SearchAggregator` (searches) and by booking sagas (book, cancel,
//! status). Calls run as futures of the actor's context, so the mailbox keeps moving while
//! a seller is slow; their outcomes come back to the actor to update the breaker and meter.
//! Figures for metrics are published in a shared [`PartnerStats`] that only this actor
//! writes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::Rng;
use tracing::Instrument as _;

use super::guard::{CallGuard, PartnerStats, Refused};
use super::PanicFaults;
use crate::call_log::{self, Attempt, CallSink};
pub use crate::config::AdapterConfig;
use crate::domain::backoff::equal_jitter;
use crate::domain::look_to_book::LookToBookMeter;
use crate::domain::saga::CallOutcome;
use crate::sellers::{
    BookOutcome, BookRequest, CancelOutcome, Offer, ReservationStatus, SearchQuery, SellerApi,
    SellerError,
};
use crate::telemetry::{Origin, TracedExt as _};

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

/// The adapter actor.
pub struct SellerAdapter {
    api: Arc<dyn SellerApi>,
    config: AdapterConfig,
    guard: CallGuard,
    /// The seller's look-to-book history. It outlives a crash of this actor: the
    /// supervisor's factory hands every incarnation the same meter ([`Self::with_meter`]),
    /// so a restart cannot reset what the seller bills for. Only the running incarnation
    /// touches it, so the lock is never contended.
    meter: Arc<Mutex<LookToBookMeter>>,
    stats: Arc<PartnerStats>,
    panics: PanicFaults,
}

impl std::fmt::Debug for SellerAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SellerAdapter")
            .field("seller", &self.api.name())
            .field("in_flight", &self.guard.in_flight())
            .finish()
    }
}

impl SellerAdapter {
    /// A fresh adapter: breaker closed, meter empty.
    pub fn new(api: Arc<dyn SellerApi>, config: AdapterConfig, stats: Arc<PartnerStats>) -> Self {
        SellerAdapter {
            guard: CallGuard::new(
                config.breaker.clone(),
                config.max_concurrent_calls,
                stats.clone(),
            ),
            meter: Self::new_meter(&config),
            api,
            config,
            stats,
            panics: PanicFaults::default(),
        }
    }

    /// Makes handlers panic now and then (`[faults]`), to exercise restarts.
    pub(crate) fn with_panic_faults(mut self, panics: PanicFaults) -> Self {
        self.panics = panics;
        self
    }

    /// Uses `meter` (kept by the supervisor across restarts) instead of a fresh one.
    pub(crate) fn with_meter(mut self, meter: Arc<Mutex<LookToBookMeter>>) -> Self {
        self.meter = meter;
        self
    }

    /// A meter for [`Self::with_meter`].
    pub(crate) fn new_meter(config: &AdapterConfig) -> Arc<Mutex<LookToBookMeter>> {
        Arc::new(Mutex::new(LookToBookMeter::new(
            config.look_to_book.clone(),
            Instant::now(),
        )))
    }

    fn meter(&self) -> std::sync::MutexGuard<'_, LookToBookMeter> {
        self.meter.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn maybe_panic(&self) {
        self.panics
            .maybe_panic(&format_args!("seller adapter {}", self.api.name()));
    }

    /// Runs `call` with the adapter's protections; `retries` extra attempts on failure.
    /// Traced, the call is a span (child of the sender's) with the breaker's and
    /// bulkhead's decisions as events and one child span per attempt. Each attempt, and a
    /// refusal by the guard, goes to `calls`; `refusal` tells an answer that is a refusal
    /// (sold out, price changed) from one that did what was asked.
    #[allow(clippy::too_many_arguments)]
    fn protected<T, F>(
        &mut self,
        retries: u32,
        budget: Duration,
        origin: &Origin,
        operation: &'static str,
        calls: CallSink,
        refusal: fn(&T) -> bool,
        call: F,
    ) -> ResponseActFuture<Self, Result<T, SellerCallError>>
    where
        T: Send + 'static,
        F: Fn(Arc<dyn SellerApi>) -> crate::sellers::SellerFuture<T> + Send + 'static,
    {
        // Searches pass no sink: their hot path pays nothing for the saga's record.
        let recording = calls.is_active();
        let partner = if recording {
            self.api.name().to_owned()
        } else {
            String::new()
        };
        let span = match origin.span() {
            Some(parent) => tracing::info_span!(
                parent: parent,
                "seller.call",
                otel.name = format!("seller {operation}"),
                seller = self.api.name(),
                operation,
                actor.mailbox_wait_us = origin.waited_us(),
            ),
            None => tracing::Span::none(),
        };
        let started = Instant::now();
        let permit = match self.guard.admit(started) {
            Ok(p) => p,
            Err(Refused::CircuitOpen) => {
                calls.push(Attempt::refused(
                    &partner,
                    operation,
                    CallOutcome::CircuitOpen,
                ));
                span.in_scope(|| {
                    tracing::info!(
                        decision = "circuit_open",
                        "Seller not called: its circuit is open."
                    )
                });
                return Box::pin(actix::fut::ready(Err(SellerCallError::CircuitOpen)));
            }
            Err(Refused::BulkheadFull) => {
                calls.push(Attempt::refused(
                    &partner,
                    operation,
                    CallOutcome::BulkheadFull,
                ));
                span.in_scope(|| {
                    tracing::info!(
                        decision = "bulkhead_full",
                        "Seller not called: too many calls in flight."
                    )
                });
                return Box::pin(actix::fut::ready(Err(SellerCallError::BulkheadFull)));
            }
        };
        if !span.is_none() {
            span.in_scope(|| {
                tracing::debug!(
                    decision = "admitted",
                    "Seller call admitted by the breaker and bulkhead."
                )
            });
        }
        let api = self.api.clone();
        let stats = self.stats.clone();
        let per_call = Duration::from_millis(self.config.call_timeout_ms);
        let backoff = Duration::from_millis(self.config.retry_backoff_ms);
        let deadline = started + budget;
        let traced = !span.is_none();
        let attempts = async move {
            let mut attempt = 0;
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let call_started = Instant::now();
                stats.calls.fetch_add(1, Ordering::Relaxed);
                let attempt_span = if traced {
                    tracing::info_span!("seller.attempt", attempt = attempt + 1)
                } else {
                    tracing::Span::none()
                };
                let once = tokio::time::timeout(per_call.min(remaining), call(api.clone()))
                    .instrument(attempt_span);
                let result = if recording {
                    let wall = chrono::Utc::now();
                    let (result, seen) = call_log::watch(once).await;
                    let result = result.unwrap_or(Err(SellerError::Timeout));
                    let (outcome, detail) = match &result {
                        Ok(v) if refusal(v) => (CallOutcome::Refused, None),
                        Ok(_) => (CallOutcome::Ok, None),
                        Err(SellerError::Timeout) => (CallOutcome::Timeout, None),
                        Err(e) => (CallOutcome::Failed, Some(e.to_string())),
                    };
                    let started = (wall, call_started);
                    calls.push(Attempt::ended(
                        &partner, operation, started, seen, outcome, detail,
                    ));
                    result
                } else {
                    once.await.unwrap_or(Err(SellerError::Timeout))
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
        Box::pin(attempts.traced(origin.scope(span)).into_actor(self).map(
            move |result: Result<T, SellerError>, act, _| {
                let timed_out = matches!(result, Err(SellerError::Timeout));
                act.guard
                    .settle(permit, result.is_err(), timed_out, started);
                result.map_err(SellerCallError::Failed)
            },
        ))
    }
}

impl Actor for SellerAdapter {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.guard.publish();
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
    /// The sender's span.
    pub origin: Origin,
}

/// Reserves with the seller under an idempotency key (the saga id). Never retried here.
#[derive(Debug, Message)]
#[rtype(result = "Result<BookOutcome, SellerCallError>")]
pub struct BookWithSeller {
    /// The booking.
    pub request: BookRequest,
    /// The sender's span.
    pub origin: Origin,
    /// Where the attempts go (the saga's record of partner calls).
    pub calls: CallSink,
}

/// Cancels the reservation made under an idempotency key.
#[derive(Debug, Message)]
#[rtype(result = "Result<CancelOutcome, SellerCallError>")]
pub struct CancelWithSeller {
    /// The key the booking was made with.
    pub idempotency_key: String,
    /// The sender's span.
    pub origin: Origin,
    /// Where the attempts go (the saga's record of partner calls).
    pub calls: CallSink,
}

/// Asks the seller what became of a booking key (reconciliation after a lost reply).
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<ReservationStatus>, SellerCallError>")]
pub struct BookingStatusAtSeller {
    /// The key the booking was made with.
    pub idempotency_key: String,
    /// The sender's span.
    pub origin: Origin,
    /// Where the attempts go (the saga's record of partner calls).
    pub calls: CallSink,
}

/// Searches with retries, unless the look-to-book meter says stop.
impl Handler<SearchSeller> for SellerAdapter {
    type Result = ResponseActFuture<Self, Result<Vec<Offer>, SellerCallError>>;

    fn handle(&mut self, msg: SearchSeller, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        let now = Instant::now();
        {
            let mut meter = self.meter();
            if !meter.allow_search(now) {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                return Box::pin(actix::fut::ready(Err(SellerCallError::Throttled)));
            }
            meter.record_search(now);
        }
        self.stats.searches.fetch_add(1, Ordering::Relaxed);
        let query = msg.query;
        self.protected(
            self.config.search_retries,
            msg.budget,
            &msg.origin,
            "search",
            CallSink::default(),
            |_| false,
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
            self.protected(
                0,
                budget,
                &msg.origin,
                "book",
                msg.calls,
                |o| !matches!(o, BookOutcome::Confirmed { .. }),
                move |api| api.book(request.clone()),
            )
            .map(|result, act, _| {
                if let Ok(BookOutcome::Confirmed { .. }) = &result {
                    act.meter().record_booking(Instant::now());
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
        self.protected(
            0,
            budget,
            &msg.origin,
            "cancel",
            msg.calls,
            |o| matches!(o, CancelOutcome::NotBooked),
            move |api| api.cancel(key.clone()),
        )
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
        let retries = self.config.search_retries;
        self.protected(
            retries,
            budget,
            &msg.origin,
            "status",
            msg.calls,
            |_| false,
            move |api| api.booking_status(key.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sellers::simulated::{SimulatedSeller, SimulatedSellerConfig};
    use crate::sellers::HotelQuery;

    fn search() -> SearchSeller {
        let day = chrono::Utc::now().date_naive() + chrono::Days::new(30);
        SearchSeller {
            query: SearchQuery::Hotel(HotelQuery {
                city_or_hotel: "Lisbon".into(),
                check_in: day,
                check_out: day + chrono::Days::new(2),
            }),
            budget: Duration::from_secs(5),
            origin: Origin::default(),
        }
    }

    /// The supervisor's factory hands each incarnation the same meter: a crash followed by
    /// a restart does not give the seller a fresh look-to-book allowance.
    #[actix_rt::test]
    async fn the_look_to_book_meter_outlives_an_incarnation_of_the_adapter() {
        let api: Arc<dyn SellerApi> = Arc::new(
            SimulatedSeller::new(SimulatedSellerConfig {
                latency_ms: (0, 0),
                ..SimulatedSellerConfig::default()
            })
            .unwrap(),
        );
        let mut config = AdapterConfig::default();
        config.look_to_book.min_searches = 3;
        config.look_to_book.max_searches_per_booking = 3;
        let meter = SellerAdapter::new_meter(&config);
        let incarnation = || {
            SellerAdapter::new(api.clone(), config.clone(), Arc::default())
                .with_meter(meter.clone())
                .start()
        };

        let first = incarnation();
        for _ in 0..3 {
            assert!(first.send(search()).await.unwrap().is_ok());
        }
        assert_eq!(
            first.send(search()).await.unwrap(),
            Err(SellerCallError::Throttled)
        );
        drop(first);

        let second = incarnation();
        assert_eq!(
            second.send(search()).await.unwrap(),
            Err(SellerCallError::Throttled),
            "a restarted adapter keeps the seller's look-to-book history"
        );
        // Without the hand-over, a fresh adapter starts with an empty meter.
        let fresh = SellerAdapter::new(api.clone(), config.clone(), Arc::default()).start();
        assert!(fresh.send(search()).await.unwrap().is_ok());
    }
}
