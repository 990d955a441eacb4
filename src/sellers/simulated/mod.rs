//! An in-process simulated seller: a deterministic hotel and flight catalog, priced per
//! seller from a seed, with latency and fault knobs that tests can turn at runtime.
//!
//! Every simulated seller shares one base catalog (cities, hotels, rooms, routes, flights),
//! so SKUs such as `hotel:lisbon:h3:double` or `flight:LIS-CDG:WF101` mean the same product
//! at every seller; the seed only decides which SKUs a seller carries, its price level per
//! SKU and its per-day price noise. That overlap is what makes merging offers meaningful.
//!
//! Bookings are kept in memory by idempotency key, so the same key always gets the first
//! answer, and [`SimulatedSeller::reservations_made`] counts real reservations for tests
//! that check nothing was booked twice. That record is the simulated seller's own database
//! and grows by one entry per booking key, as a real seller's would; a process running
//! millions of bookings against one simulated seller should restart it between runs.
//!
//! Invalid queries find nothing rather than erroring: validation is the caller's job (the
//! fake server answers 400 before asking the seller).
//!
//! Layout: `catalog.rs` holds the shared catalog and a seller's deterministic prices
//! (pure functions of the seed); `settings.rs` the `[sellers.simulated]` settings and
//! fault rates; this file the seller itself (latency, faults, bookings, [`SellerApi`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{
    BookOutcome, BookRequest, CancelOutcome, FlightQuery, HotelQuery, Offer, ReservationStatus,
    SearchQuery, SellerApi, SellerError, SellerFuture,
};
use crate::domain::breaker::InvalidSetting;
use crate::domain::money::Money;

mod catalog;
mod settings;

pub use catalog::catalog_cities;
use catalog::PriceList;
pub use settings::{FaultRates, SimulatedSellerConfig, MAX_SIMULATED_LATENCY_MS};

/// A simulated seller. Cloning gives another handle to the same seller, so a test can keep
/// one to turn fault knobs while an adapter owns `Arc<dyn SellerApi>` of another.
#[derive(Debug, Clone)]
pub struct SimulatedSeller {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The seller's deterministic catalog and prices (its name too).
    prices: PriceList,
    cancel_fee_percent: u32,
    /// Faults and latency change at runtime; kept apart from the bookings lock so knob
    /// turning never waits on booking traffic.
    knobs: Mutex<Knobs>,
    rng: Mutex<SmallRng>,
    bookings: Mutex<HashMap<String, BookingRecord>>,
    reservations_made: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Knobs {
    faults: FaultRates,
    latency_ms: (u64, u64),
}

#[derive(Debug, Clone)]
struct BookingRecord {
    /// The request first seen under this key: a different request with the same key is
    /// refused instead of silently answered with another booking's result.
    request: BookRequest,
    outcome: BookOutcome,
    /// Set once cancelled; replayed to later cancels.
    cancellation: Option<CancelOutcome>,
}

/// What the dice decided for one call.
enum Fault {
    None,
    Error,
    Hang,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the data consistent between statements, so the value is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SimulatedSeller {
    /// Builds a seller after validating `config`.
    pub fn new(config: SimulatedSellerConfig) -> Result<Self, InvalidSetting> {
        config.validate()?;
        Ok(SimulatedSeller {
            inner: Arc::new(Inner {
                rng: Mutex::new(SmallRng::seed_from_u64(config.seed ^ 0x5EED_FA17)),
                knobs: Mutex::new(Knobs {
                    faults: config.faults(),
                    latency_ms: config.latency_ms,
                }),
                prices: PriceList::new(&config),
                cancel_fee_percent: config.cancel_fee_percent,
                bookings: Mutex::new(HashMap::new()),
                reservations_made: AtomicU64::new(0),
            }),
        })
    }

    /// Replaces the fault rates; takes effect for calls that start afterwards.
    pub fn set_faults(&self, faults: FaultRates) -> Result<(), InvalidSetting> {
        faults.validate()?;
        lock(&self.inner.knobs).faults = faults;
        Ok(())
    }

    /// Current fault rates.
    pub fn faults(&self) -> FaultRates {
        lock(&self.inner.knobs).faults
    }

    /// Replaces the latency range in milliseconds.
    pub fn set_latency_ms(&self, min: u64, max: u64) -> Result<(), InvalidSetting> {
        if min > max || max > MAX_SIMULATED_LATENCY_MS {
            return Err(InvalidSetting::new(
                "latency_ms",
                format!("need min <= max <= {MAX_SIMULATED_LATENCY_MS}, got [{min}, {max}]"),
            ));
        }
        lock(&self.inner.knobs).latency_ms = (min, max);
        Ok(())
    }

    /// Number of reservations actually made (idempotent replays do not count).
    pub fn reservations_made(&self) -> u64 {
        self.inner.reservations_made.load(Ordering::SeqCst)
    }

    /// What this seller knows about every idempotency key it has seen, immediately and
    /// without faults (its own database, for invariant checks), in key order.
    pub fn reservations(&self) -> Vec<(String, ReservationStatus)> {
        let keys: Vec<String> = lock(&self.inner.bookings).keys().cloned().collect();
        let mut seen: Vec<(String, ReservationStatus)> = keys
            .into_iter()
            .filter_map(|k| {
                let status = self.inner.status_now(&k)?;
                Some((k, status))
            })
            .collect();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        seen
    }

    /// Current price of `sku` for `query`, without latency or faults; `None` when this
    /// seller does not sell it for those dates.
    pub fn quote(&self, sku: &str, query: &SearchQuery) -> Option<Money> {
        self.inner.prices.quote(sku, query)
    }

    /// Hotel offers, immediately and without faults (the catalog view behind
    /// [`SellerApi::search_hotels`]).
    pub fn hotel_offers(&self, query: &HotelQuery) -> Vec<Offer> {
        self.inner.prices.hotel_offers(query)
    }

    /// Flight offers, immediately and without faults.
    pub fn flight_offers(&self, query: &FlightQuery) -> Vec<Offer> {
        self.inner.prices.flight_offers(query)
    }
}

impl Inner {
    /// Draws latency and fault for one call.
    fn plan(&self) -> (Duration, Fault) {
        let knobs = *lock(&self.knobs);
        let mut rng = lock(&self.rng);
        let (min, max) = knobs.latency_ms;
        let latency = Duration::from_millis(if min == max {
            min
        } else {
            rng.gen_range(min..=max)
        });
        // `gen::<f64>() < p` never panics, unlike `gen_bool`, and is exactly 0% at p = 0.
        let fault = if rng.gen::<f64>() < knobs.faults.hang_rate {
            Fault::Hang
        } else if rng.gen::<f64>() < knobs.faults.error_rate {
            Fault::Error
        } else {
            Fault::None
        };
        (latency, fault)
    }

    fn roll(&self, probability: f64) -> bool {
        lock(&self.rng).gen::<f64>() < probability
    }

    /// Waits the drawn latency and applies the drawn fault; `Ok` means "go ahead".
    async fn simulate_call(&self) -> Result<(), SellerError> {
        let (latency, fault) = self.plan();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            Fault::None => Ok(()),
            Fault::Error => Err(SellerError::Unavailable(format!(
                "{} failed (simulated)",
                self.prices.name
            ))),
            Fault::Hang => std::future::pending().await,
        }
    }

    /// Books under the bookings lock, so two concurrent calls with one key reserve once.
    fn book_now(&self, req: &BookRequest) -> BookOutcome {
        let mut bookings = lock(&self.bookings);
        if let Some(record) = bookings.get(&req.idempotency_key) {
            return if record.request == *req {
                record.outcome.clone()
            } else {
                BookOutcome::Rejected {
                    reason: "idempotency key already used for a different booking".to_string(),
                }
            };
        }
        let outcome = match self.prices.quote(&req.sku, &req.query) {
            None => BookOutcome::Rejected {
                reason: format!("{} is not sold for these dates", req.sku),
            },
            Some(_) if self.roll(lock(&self.knobs).faults.reject_rate) => BookOutcome::Rejected {
                reason: "sold out (simulated)".to_string(),
            },
            Some(current) if current != req.expected_price => BookOutcome::PriceChanged { current },
            Some(price) => {
                let n = self.reservations_made.fetch_add(1, Ordering::SeqCst) + 1;
                BookOutcome::Confirmed {
                    reservation_id: format!("{}-{n}", self.prices.name),
                    price,
                }
            }
        };
        bookings.insert(
            req.idempotency_key.clone(),
            BookingRecord {
                request: req.clone(),
                outcome: outcome.clone(),
                cancellation: None,
            },
        );
        outcome
    }

    fn cancel_now(&self, key: &str) -> CancelOutcome {
        let mut bookings = lock(&self.bookings);
        let Some(record) = bookings.get_mut(key) else {
            return CancelOutcome::NotBooked;
        };
        if let Some(done) = &record.cancellation {
            return done.clone();
        }
        let BookOutcome::Confirmed {
            reservation_id,
            price,
        } = &record.outcome
        else {
            return CancelOutcome::NotBooked;
        };
        let fee_minor =
            (i128::from(price.minor) * i128::from(self.cancel_fee_percent) / 100) as i64;
        let fee = Money::new(fee_minor, price.currency);
        let refund = Money::new(price.minor - fee_minor, price.currency);
        let outcome = CancelOutcome::Cancelled {
            reservation_id: reservation_id.clone(),
            fee,
            refund,
        };
        record.cancellation = Some(outcome.clone());
        outcome
    }

    fn status_now(&self, key: &str) -> Option<ReservationStatus> {
        let bookings = lock(&self.bookings);
        let record = bookings.get(key)?;
        Some(match (&record.outcome, &record.cancellation) {
            (
                _,
                Some(CancelOutcome::Cancelled {
                    reservation_id,
                    fee,
                    ..
                }),
            ) => ReservationStatus::Cancelled {
                reservation_id: reservation_id.clone(),
                fee: *fee,
            },
            (
                BookOutcome::Confirmed {
                    reservation_id,
                    price,
                },
                _,
            ) => ReservationStatus::Booked {
                reservation_id: reservation_id.clone(),
                price: *price,
            },
            _ => ReservationStatus::Declined,
        })
    }

    /// After an effect has landed: maybe lose the reply, which looks like a hang to the caller.
    async fn maybe_lose_reply(&self) {
        if self.roll(lock(&self.knobs).faults.lost_reply_rate) {
            std::future::pending::<()>().await;
        }
    }
}

impl SellerApi for SimulatedSeller {
    fn name(&self) -> &str {
        &self.inner.prices.name
    }

    fn search_hotels(&self, query: HotelQuery) -> SellerFuture<Vec<Offer>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.simulate_call().await?;
            Ok(inner.prices.hotel_offers(&query))
        })
    }

    fn search_flights(&self, query: FlightQuery) -> SellerFuture<Vec<Offer>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.simulate_call().await?;
            Ok(inner.prices.flight_offers(&query))
        })
    }

    fn book(&self, req: BookRequest) -> SellerFuture<BookOutcome> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.simulate_call().await?;
            let outcome = inner.book_now(&req);
            inner.maybe_lose_reply().await;
            Ok(outcome)
        })
    }

    fn cancel(&self, idempotency_key: String) -> SellerFuture<CancelOutcome> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.simulate_call().await?;
            let outcome = inner.cancel_now(&idempotency_key);
            inner.maybe_lose_reply().await;
            Ok(outcome)
        })
    }

    fn booking_status(&self, idempotency_key: String) -> SellerFuture<Option<ReservationStatus>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.simulate_call().await?;
            Ok(inner.status_now(&idempotency_key))
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn seller(name: &str, seed: u64) -> SimulatedSeller {
        SimulatedSeller::new(SimulatedSellerConfig {
            name: name.into(),
            seed,
            latency_ms: (0, 0),
            coverage: 1.0,
            ..Default::default()
        })
        .unwrap()
    }

    fn lisbon(check_in: &str, check_out: &str) -> HotelQuery {
        HotelQuery {
            city_or_hotel: "Lisbon".into(),
            check_in: date(check_in),
            check_out: date(check_out),
        }
    }

    fn book_req(s: &SimulatedSeller, key: &str) -> BookRequest {
        let q = lisbon("2026-05-04", "2026-05-06");
        let offer = s.hotel_offers(&q).into_iter().next().expect("an offer");
        BookRequest {
            idempotency_key: key.into(),
            sku: offer.sku,
            query: SearchQuery::Hotel(q),
            expected_price: offer.price,
        }
    }

    #[tokio::test]
    async fn booking_is_idempotent_and_counted_once() {
        let a = seller("a", 1);
        let req = book_req(&a, "saga-1");
        let first = a.book(req.clone()).await.unwrap();
        assert!(matches!(first, BookOutcome::Confirmed { .. }), "{first:?}");
        assert_eq!(a.book(req.clone()).await.unwrap(), first);
        assert_eq!(a.reservations_made(), 1);
        let reused = BookRequest {
            sku: "hotel:paris:h1:double".into(),
            ..req.clone()
        };
        assert!(matches!(
            a.book(reused).await.unwrap(),
            BookOutcome::Rejected { .. }
        ));
        assert_eq!(a.reservations_made(), 1);
    }

    #[tokio::test]
    async fn price_change_and_unknown_sku_are_values_not_errors() {
        let a = seller("a", 1);
        let mut req = book_req(&a, "k1");
        let real = req.expected_price;
        req.expected_price.minor -= 1;
        assert_eq!(
            a.book(req).await.unwrap(),
            BookOutcome::PriceChanged { current: real }
        );
        let mut req = book_req(&a, "k2");
        req.sku = "hotel:lisbon:h99:double".into();
        assert!(matches!(
            a.book(req).await.unwrap(),
            BookOutcome::Rejected { .. }
        ));
        assert_eq!(a.reservations_made(), 0);
        assert_eq!(
            a.booking_status("k1".into()).await.unwrap(),
            Some(ReservationStatus::Declined)
        );
        assert_eq!(
            a.cancel("k1".into()).await.unwrap(),
            CancelOutcome::NotBooked
        );
    }

    #[tokio::test]
    async fn cancel_charges_the_fee_once_and_status_follows() {
        let a = seller("a", 1);
        assert_eq!(a.booking_status("k".into()).await.unwrap(), None);
        assert_eq!(
            a.cancel("k".into()).await.unwrap(),
            CancelOutcome::NotBooked
        );
        let req = book_req(&a, "k");
        let BookOutcome::Confirmed {
            reservation_id,
            price,
        } = a.book(req).await.unwrap()
        else {
            panic!("not confirmed")
        };
        assert_eq!(
            a.booking_status("k".into()).await.unwrap(),
            Some(ReservationStatus::Booked {
                reservation_id: reservation_id.clone(),
                price
            })
        );
        let cancelled = a.cancel("k".into()).await.unwrap();
        let CancelOutcome::Cancelled { fee, refund, .. } = cancelled.clone() else {
            panic!("not cancelled")
        };
        assert_eq!(fee.minor, price.minor / 10);
        assert_eq!(fee.minor + refund.minor, price.minor);
        assert_eq!(a.cancel("k".into()).await.unwrap(), cancelled);
        assert_eq!(
            a.booking_status("k".into()).await.unwrap(),
            Some(ReservationStatus::Cancelled {
                reservation_id,
                fee
            })
        );
    }

    #[tokio::test]
    async fn fault_knobs_change_behaviour_at_runtime() {
        let a = seller("a", 1);
        let q = lisbon("2026-05-04", "2026-05-06");
        a.set_faults(FaultRates {
            error_rate: 1.0,
            ..FaultRates::NONE
        })
        .unwrap();
        assert!(matches!(
            a.search_hotels(q.clone()).await,
            Err(SellerError::Unavailable(_))
        ));
        a.set_faults(FaultRates {
            reject_rate: 1.0,
            ..FaultRates::NONE
        })
        .unwrap();
        assert!(matches!(
            a.book(book_req(&a, "r")).await.unwrap(),
            BookOutcome::Rejected { .. }
        ));
        a.set_faults(FaultRates::NONE).unwrap();
        assert!(!a.search_hotels(q.clone()).await.unwrap().is_empty());
        assert_eq!(
            a.set_faults(FaultRates {
                hang_rate: 2.0,
                ..FaultRates::NONE
            })
            .unwrap_err()
            .key,
            "hang_rate"
        );
        assert!(a.set_latency_ms(5, 1).is_err());
    }

    #[tokio::test]
    async fn hang_never_completes_and_lost_reply_still_books() {
        use std::task::Poll;
        let a = seller("a", 1);
        a.set_faults(FaultRates {
            hang_rate: 1.0,
            ..FaultRates::NONE
        })
        .unwrap();
        let mut search = a.search_hotels(lisbon("2026-05-04", "2026-05-06"));
        for _ in 0..3 {
            let polled =
                futures_util::future::poll_fn(|cx| Poll::Ready(search.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
            tokio::task::yield_now().await;
        }
        a.set_faults(FaultRates {
            lost_reply_rate: 1.0,
            ..FaultRates::NONE
        })
        .unwrap();
        let mut book = a.book(book_req(&a, "lost"));
        let polled = futures_util::future::poll_fn(|cx| Poll::Ready(book.as_mut().poll(cx))).await;
        assert!(polled.is_pending());
        drop(book);
        assert_eq!(
            a.reservations_made(),
            1,
            "the booking landed although the reply was lost"
        );
        a.set_faults(FaultRates::NONE).unwrap();
        assert!(matches!(
            a.booking_status("lost".into()).await.unwrap(),
            Some(ReservationStatus::Booked { .. })
        ));
    }
}
