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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{Datelike, NaiveDate, Weekday};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use super::{
    BookOutcome, BookRequest, CancelOutcome, FlightDetails, FlightLeg, FlightQuery, HotelDetails,
    HotelQuery, Offer, OfferDetails, ReservationStatus, SearchQuery, SellerApi, SellerError,
    SellerFuture,
};
use crate::domain::breaker::InvalidSetting;
use crate::domain::money::{Currency, Money};

/// Longest latency a simulated seller may be configured with; longer waits are what
/// `hang_rate` is for.
pub const MAX_SIMULATED_LATENCY_MS: u64 = 60_000;

/// Configuration of one simulated seller, as it appears in `config.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedSellerConfig {
    /// Seller name used in offers and logs. Default `"simulated"`.
    pub name: String,
    /// Seed for which SKUs are carried and how they are priced. Default 1.
    pub seed: u64,
    /// Currency of every price. Default EUR.
    pub currency: Currency,
    /// Each call waits a uniformly drawn latency in `[min, max]` milliseconds. Default
    /// `[20, 80]`.
    pub latency_ms: (u64, u64),
    /// Fraction of the base catalog this seller carries, in `0..=1`. Default 0.8.
    pub coverage: f64,
    /// Probability a call fails with `Unavailable`. Default 0.
    pub error_rate: f64,
    /// Probability a call never completes (until its future is dropped). Default 0.
    pub hang_rate: f64,
    /// Probability a booking is declined as sold out. Default 0.
    pub reject_rate: f64,
    /// Probability a booking or cancellation takes effect but its reply is lost (the call
    /// hangs): the case the saga must reconcile with `booking_status`. Default 0.
    pub lost_reply_rate: f64,
    /// Cancellation fee as a percentage of the booked price, `0..=100`. Default 10.
    pub cancel_fee_percent: u32,
}

impl Default for SimulatedSellerConfig {
    fn default() -> Self {
        SimulatedSellerConfig {
            name: "simulated".to_string(),
            seed: 1,
            currency: Currency::EUR,
            latency_ms: (20, 80),
            coverage: 0.8,
            error_rate: 0.0,
            hang_rate: 0.0,
            reject_rate: 0.0,
            lost_reply_rate: 0.0,
            cancel_fee_percent: 10,
        }
    }
}

impl SimulatedSellerConfig {
    /// Checks every key, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.name.trim().is_empty() {
            return Err(InvalidSetting::new("name", "must not be empty"));
        }
        let (min, max) = self.latency_ms;
        if min > max {
            return Err(InvalidSetting::new(
                "latency_ms",
                format!("min {min} is above max {max}"),
            ));
        }
        if max > MAX_SIMULATED_LATENCY_MS {
            return Err(InvalidSetting::new(
                "latency_ms",
                format!("max {max} is above {MAX_SIMULATED_LATENCY_MS}"),
            ));
        }
        InvalidSetting::check_fraction("coverage", self.coverage)?;
        self.faults().validate()?;
        if self.cancel_fee_percent > 100 {
            return Err(InvalidSetting::new(
                "cancel_fee_percent",
                "must be within 0..=100",
            ));
        }
        Ok(())
    }

    /// The fault rates of this config.
    pub fn faults(&self) -> FaultRates {
        FaultRates {
            error_rate: self.error_rate,
            hang_rate: self.hang_rate,
            reject_rate: self.reject_rate,
            lost_reply_rate: self.lost_reply_rate,
        }
    }
}

/// Fault probabilities, each within `0..=1`; see the fields of [`SimulatedSellerConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultRates {
    /// Probability a call fails with `Unavailable`.
    pub error_rate: f64,
    /// Probability a call never completes.
    pub hang_rate: f64,
    /// Probability a booking is declined.
    pub reject_rate: f64,
    /// Probability a booking or cancellation lands but its reply is lost.
    pub lost_reply_rate: f64,
}

impl FaultRates {
    /// No faults at all.
    pub const NONE: FaultRates = FaultRates {
        error_rate: 0.0,
        hang_rate: 0.0,
        reject_rate: 0.0,
        lost_reply_rate: 0.0,
    };

    /// Checks each rate is within `0..=1`, naming the first that is not.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        InvalidSetting::check_fraction("error_rate", self.error_rate)?;
        InvalidSetting::check_fraction("hang_rate", self.hang_rate)?;
        InvalidSetting::check_fraction("reject_rate", self.reject_rate)?;
        InvalidSetting::check_fraction("lost_reply_rate", self.lost_reply_rate)
    }
}

/// A simulated seller. Cloning gives another handle to the same seller, so a test can keep
/// one to turn fault knobs while an adapter owns `Arc<dyn SellerApi>` of another.
#[derive(Debug, Clone)]
pub struct SimulatedSeller {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    seed: u64,
    currency: Currency,
    coverage: f64,
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
                name: config.name,
                seed: config.seed,
                currency: config.currency,
                coverage: config.coverage,
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
        self.inner.quote(sku, query)
    }

    /// Hotel offers, immediately and without faults (the catalog view behind
    /// [`SellerApi::search_hotels`]).
    pub fn hotel_offers(&self, query: &HotelQuery) -> Vec<Offer> {
        self.inner.hotel_offers(query)
    }

    /// Flight offers, immediately and without faults.
    pub fn flight_offers(&self, query: &FlightQuery) -> Vec<Offer> {
        self.inner.flight_offers(query)
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
                self.name
            ))),
            Fault::Hang => std::future::pending().await,
        }
    }

    fn carries(&self, sku: &str) -> bool {
        unit(mix(self.seed, &[sku, "carried"])) < self.coverage
    }

    /// Seller's price level for a SKU, 85..=125 percent of the base price.
    fn markup_percent(&self, sku: &str) -> i64 {
        85 + (mix(self.seed, &[sku, "markup"]) % 41) as i64
    }

    /// Small per-day noise, 97..=103 percent, so the cheapest seller can differ by date.
    fn day_noise_percent(&self, sku: &str, day: NaiveDate) -> i64 {
        97 + (mix(self.seed, &[sku, &day.to_string(), "noise"]) % 7) as i64
    }

    fn sold_out(&self, sku: &str, day: NaiveDate) -> bool {
        mix(self.seed, &[sku, &day.to_string(), "sold-out"]) % 100 < 4
    }

    fn nightly_rate(&self, room: &HotelRoom, night: NaiveDate) -> Option<i64> {
        if self.sold_out(&room.sku, night) {
            return None;
        }
        let weekday = match night.weekday() {
            Weekday::Fri | Weekday::Sat => 125,
            Weekday::Sun => 90,
            _ => 100,
        };
        let rate = room.base_nightly_minor * weekday / 100 * self.markup_percent(&room.sku) / 100
            * self.day_noise_percent(&room.sku, night)
            / 100;
        Some(rate)
    }

    fn hotel_price(
        &self,
        room: &HotelRoom,
        check_in: NaiveDate,
        check_out: NaiveDate,
    ) -> Option<i64> {
        if !self.carries(&room.sku) || check_out <= check_in {
            return None;
        }
        check_in
            .iter_days()
            .take_while(|d| *d < check_out)
            .map(|night| self.nightly_rate(room, night))
            .sum()
    }

    fn leg_fare(&self, flight: &Flight, day: NaiveDate) -> Option<i64> {
        let sku = format!("flight:{}", flight.leg_key);
        if !self.carries(&sku) || self.sold_out(&sku, day) {
            return None;
        }
        let weekday = match day.weekday() {
            Weekday::Fri | Weekday::Sun => 115,
            Weekday::Tue | Weekday::Wed => 90,
            _ => 100,
        };
        Some(
            flight.base_fare_minor * weekday / 100 * self.markup_percent(&sku) / 100
                * self.day_noise_percent(&sku, day)
                / 100,
        )
    }

    fn money(&self, minor: i64) -> Money {
        Money::new(minor, self.currency)
    }

    fn hotel_offers(&self, query: &HotelQuery) -> Vec<Offer> {
        if query.validate().is_err() {
            return Vec::new();
        }
        let wanted = query.city_or_hotel.trim().to_lowercase();
        let nights = query.nights() as u32;
        catalog()
            .rooms
            .iter()
            .filter(|room| {
                room.city.to_lowercase() == wanted || room.hotel.to_lowercase().contains(&wanted)
            })
            .filter_map(|room| {
                let price = self.hotel_price(room, query.check_in, query.check_out)?;
                Some(Offer {
                    seller: self.name.clone(),
                    sku: room.sku.clone(),
                    title: format!(
                        "{}, {}: {} room, {} night(s)",
                        room.hotel, room.city, room.room, nights
                    ),
                    price: self.money(price),
                    details: OfferDetails::Hotel(HotelDetails {
                        city: room.city.to_string(),
                        hotel: room.hotel.to_string(),
                        room: room.room.to_string(),
                        check_in: query.check_in,
                        check_out: query.check_out,
                        nights,
                    }),
                })
            })
            .collect()
    }

    fn flight_offers(&self, query: &FlightQuery) -> Vec<Offer> {
        if query.validate().is_err() {
            return Vec::new();
        }
        let outbound: Vec<(&Flight, i64)> = catalog()
            .flights_between(&query.from, &query.to)
            .filter_map(|f| Some((f, self.leg_fare(f, query.date)?)))
            .collect();
        let Some(return_date) = query.return_date else {
            return outbound
                .into_iter()
                .map(|(f, fare)| self.flight_offer(vec![(f, query.date)], fare))
                .collect();
        };
        let inbound: Vec<(&Flight, i64)> = catalog()
            .flights_between(&query.to, &query.from)
            .filter_map(|f| Some((f, self.leg_fare(f, return_date)?)))
            .collect();
        let mut offers = Vec::with_capacity(outbound.len() * inbound.len());
        for (out, out_fare) in &outbound {
            for (back, back_fare) in &inbound {
                offers.push(self.flight_offer(
                    vec![(out, query.date), (back, return_date)],
                    out_fare + back_fare,
                ));
            }
        }
        offers
    }

    fn flight_offer(&self, legs: Vec<(&Flight, NaiveDate)>, fare: i64) -> Offer {
        let sku = format!(
            "flight:{}",
            legs.iter()
                .map(|(f, _)| f.leg_key.as_str())
                .collect::<Vec<_>>()
                .join("+")
        );
        let title = legs
            .iter()
            .map(|(f, d)| format!("{} {}->{} {} {}", f.flight, f.from, f.to, d, f.departs))
            .collect::<Vec<_>>()
            .join(", return ");
        Offer {
            seller: self.name.clone(),
            sku,
            title,
            price: self.money(fare),
            details: OfferDetails::Flight(FlightDetails {
                legs: legs
                    .iter()
                    .map(|(f, d)| FlightLeg {
                        flight: f.flight.clone(),
                        from: f.from.to_string(),
                        to: f.to.to_string(),
                        date: *d,
                    })
                    .collect(),
            }),
        }
    }

    /// Prices a SKU for a query straight from the catalog (no search needed), so a booking
    /// is priced exactly as the offer it came from.
    fn quote(&self, sku: &str, query: &SearchQuery) -> Option<Money> {
        query.validate().ok()?;
        match query {
            SearchQuery::Hotel(q) => {
                let room = catalog().room(sku)?;
                self.hotel_price(room, q.check_in, q.check_out)
                    .map(|p| self.money(p))
            }
            SearchQuery::Flight(q) => {
                let legs: Vec<&str> = sku.strip_prefix("flight:")?.split('+').collect();
                let dates: Vec<NaiveDate> = std::iter::once(q.date).chain(q.return_date).collect();
                if legs.len() != dates.len() {
                    return None;
                }
                let mut total = 0;
                for (i, (leg, day)) in legs.iter().zip(dates).enumerate() {
                    let flight = catalog().flight(leg)?;
                    let (from, to) = if i == 0 {
                        (&q.from, &q.to)
                    } else {
                        (&q.to, &q.from)
                    };
                    if flight.from != from || flight.to != to {
                        return None;
                    }
                    total += self.leg_fare(flight, day)?;
                }
                Some(self.money(total))
            }
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
        let outcome = match self.quote(&req.sku, &req.query) {
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
                    reservation_id: format!("{}-{n}", self.name),
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
        &self.inner.name
    }

    fn search_hotels(&self, query: HotelQuery) -> SellerFuture<Vec<Offer>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.simulate_call().await?;
            Ok(inner.hotel_offers(&query))
        })
    }

    fn search_flights(&self, query: FlightQuery) -> SellerFuture<Vec<Offer>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.simulate_call().await?;
            Ok(inner.flight_offers(&query))
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

// ---------------------------------------------------------------------------------------
// The base catalog, shared by every simulated seller.

/// City, its airport, its average nightly rate in minor units and its hotels.
const CITIES: &[(&str, &str, i64, &[&str])] = &[
    (
        "Lisbon",
        "LIS",
        9_000,
        &[
            "Alfama Terrace",
            "Baixa Grand",
            "Belem Riverside",
            "Chiado Rooms",
        ],
    ),
    (
        "Paris",
        "CDG",
        14_000,
        &[
            "Marais Lodge",
            "Rive Gauche",
            "Montmartre View",
            "Opera Palace",
        ],
    ),
    (
        "Berlin",
        "BER",
        10_000,
        &["Mitte Loft", "Kreuzberg Yard", "Tiergarten Park"],
    ),
    (
        "Rome",
        "FCO",
        12_000,
        &["Trastevere Inn", "Colosseo Suites", "Pantheon House"],
    ),
    (
        "Madrid",
        "MAD",
        9_500,
        &["Sol Central", "Retiro Garden", "Malasana Studios"],
    ),
    (
        "Amsterdam",
        "AMS",
        15_000,
        &["Canal House", "Jordaan Nest", "Museum Quarter"],
    ),
];

/// Room types and their price relative to the hotel's double room, in percent.
const ROOMS: &[(&str, i64)] = &[("single", 80), ("double", 100), ("suite", 220)];

/// Departure times of the flights on every route.
const DEPARTURES: &[&str] = &["07:10", "13:45", "19:30"];

#[derive(Debug)]
struct HotelRoom {
    sku: String,
    city: &'static str,
    hotel: &'static str,
    room: &'static str,
    base_nightly_minor: i64,
}

#[derive(Debug)]
struct Flight {
    /// `LIS-CDG:WF101`; the SKU of a one-way offer is `flight:` + this.
    leg_key: String,
    flight: String,
    from: &'static str,
    to: &'static str,
    departs: &'static str,
    base_fare_minor: i64,
}

#[derive(Debug)]
struct Catalog {
    rooms: Vec<HotelRoom>,
    rooms_by_sku: HashMap<String, usize>,
    flights: Vec<Flight>,
    flights_by_leg: HashMap<String, usize>,
}

impl Catalog {
    fn build() -> Catalog {
        let mut rooms = Vec::new();
        for (city, _, base, hotels) in CITIES {
            for (h, hotel) in hotels.iter().enumerate() {
                // Seed 0: the hotel's standing is part of the shared catalog, not of a seller.
                let standing = 70 + (mix(0, &[city, hotel]) % 70) as i64;
                for (room, room_percent) in ROOMS {
                    rooms.push(HotelRoom {
                        sku: format!("hotel:{}:h{}:{room}", city.to_lowercase(), h + 1),
                        city,
                        hotel,
                        room,
                        base_nightly_minor: base * standing / 100 * room_percent / 100,
                    });
                }
            }
        }
        let mut flights = Vec::new();
        let mut number = 100;
        for (_, from, _, _) in CITIES {
            for (_, to, _, _) in CITIES {
                if from == to {
                    continue;
                }
                let route_fare = 4_000 + (mix(0, &[from, to]) % 16_000) as i64;
                for (k, departs) in DEPARTURES.iter().enumerate() {
                    number += 1;
                    let flight = format!("WF{number}");
                    flights.push(Flight {
                        leg_key: format!("{from}-{to}:{flight}"),
                        flight,
                        from,
                        to,
                        departs,
                        // Early and late flights are cheaper than the midday one.
                        base_fare_minor: route_fare * [90, 115, 100][k] / 100,
                    });
                }
            }
        }
        let rooms_by_sku = rooms
            .iter()
            .enumerate()
            .map(|(i, r)| (r.sku.clone(), i))
            .collect();
        let flights_by_leg = flights
            .iter()
            .enumerate()
            .map(|(i, f)| (f.leg_key.clone(), i))
            .collect();
        Catalog {
            rooms,
            rooms_by_sku,
            flights,
            flights_by_leg,
        }
    }

    fn room(&self, sku: &str) -> Option<&HotelRoom> {
        self.rooms_by_sku.get(sku).map(|i| &self.rooms[*i])
    }

    fn flight(&self, leg_key: &str) -> Option<&Flight> {
        self.flights_by_leg.get(leg_key).map(|i| &self.flights[*i])
    }

    fn flights_between<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
    ) -> impl Iterator<Item = &'a Flight> + 'a {
        self.flights
            .iter()
            .filter(move |f| f.from == from && f.to == to)
    }
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(Catalog::build)
}

/// Cities of the base catalog with their airport codes, for demos and docs.
pub fn catalog_cities() -> impl Iterator<Item = (&'static str, &'static str)> {
    CITIES.iter().map(|(city, airport, _, _)| (*city, *airport))
}

/// A stable hash of a seed and some strings. Hand-written (FNV-1a then splitmix64) rather
/// than `DefaultHasher`, whose output may change between Rust releases: catalog prices must
/// not move when the toolchain does.
fn mix(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for part in parts {
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator, so ["ab", "c"] and ["a", "bc"] differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps a hash to `[0, 1)`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
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

    fn lis_cdg(ret: Option<&str>) -> FlightQuery {
        FlightQuery {
            from: "LIS".into(),
            to: "CDG".into(),
            date: date("2026-05-04"),
            return_date: ret.map(date),
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

    #[test]
    fn config_validation_names_the_key() {
        assert!(SimulatedSellerConfig::default().validate().is_ok());
        let bad = |c: SimulatedSellerConfig| c.validate().unwrap_err().key;
        assert_eq!(
            bad(SimulatedSellerConfig {
                error_rate: 1.5,
                ..Default::default()
            }),
            "error_rate"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                hang_rate: -0.1,
                ..Default::default()
            }),
            "hang_rate"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                reject_rate: f64::NAN,
                ..Default::default()
            }),
            "reject_rate"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                coverage: 2.0,
                ..Default::default()
            }),
            "coverage"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                latency_ms: (10, 5),
                ..Default::default()
            }),
            "latency_ms"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                cancel_fee_percent: 101,
                ..Default::default()
            }),
            "cancel_fee_percent"
        );
        assert_eq!(
            bad(SimulatedSellerConfig {
                name: " ".into(),
                ..Default::default()
            }),
            "name"
        );
    }

    #[test]
    fn config_deserializes_with_defaults_and_refuses_unknown_keys() {
        let c: SimulatedSellerConfig =
            serde_json::from_str(r#"{"name":"b","seed":7,"latency_ms":[1,2]}"#).unwrap();
        assert_eq!(
            (c.name.as_str(), c.seed, c.latency_ms, c.cancel_fee_percent),
            ("b", 7, (1, 2), 10)
        );
        let err =
            serde_json::from_str::<SimulatedSellerConfig>(r#"{"eror_rate":0.1}"#).unwrap_err();
        assert!(err.to_string().contains("eror_rate"), "{err}");
    }

    #[test]
    fn catalog_is_deterministic_and_prices_sum_nights() {
        let a = seller("a", 1);
        let q = lisbon("2026-05-04", "2026-05-07"); // Mon..Thu: three nights
        let offers = a.hotel_offers(&q);
        assert_eq!(
            offers,
            seller("a", 1).hotel_offers(&q),
            "same seed, same offers"
        );
        assert!(
            offers.len() >= 6,
            "lisbon has 4 hotels with three room types each, got {}",
            offers.len()
        );
        for offer in &offers {
            let room = catalog().room(&offer.sku).unwrap();
            let nights: i64 = [date("2026-05-04"), date("2026-05-05"), date("2026-05-06")]
                .iter()
                .map(|n| a.inner.nightly_rate(room, *n).unwrap())
                .sum();
            assert_eq!(offer.price.minor, nights);
            assert!(offer.sku.starts_with("hotel:lisbon:h"));
        }
        // The same SKU for a single night is cheaper than for three.
        let one = a.hotel_offers(&lisbon("2026-05-04", "2026-05-05"));
        let sku = &offers[0].sku;
        let single = one.iter().find(|o| &o.sku == sku).map(|o| o.price.minor);
        if let Some(single) = single {
            assert!(single < offers[0].price.minor);
        }
    }

    #[test]
    fn weekend_nights_cost_more_than_midweek() {
        let a = seller("a", 3);
        let room = catalog().room("hotel:paris:h1:double").unwrap();
        let wed = a.inner.nightly_rate(room, date("2026-05-06")).unwrap_or(0);
        let sat = a
            .inner
            .nightly_rate(room, date("2026-05-09"))
            .unwrap_or(i64::MAX);
        assert!(sat > wed, "saturday {sat} vs wednesday {wed}");
    }

    #[test]
    fn sellers_share_skus_but_price_differently() {
        let (a, b) = (seller("a", 1), seller("b", 2));
        let q = lisbon("2026-05-04", "2026-05-06");
        let pa: HashMap<String, i64> = a
            .hotel_offers(&q)
            .into_iter()
            .map(|o| (o.sku, o.price.minor))
            .collect();
        let pb: HashMap<String, i64> = b
            .hotel_offers(&q)
            .into_iter()
            .map(|o| (o.sku, o.price.minor))
            .collect();
        let shared: Vec<&String> = pa.keys().filter(|k| pb.contains_key(*k)).collect();
        assert!(shared.len() > 3, "sellers overlap");
        assert!(
            shared.iter().any(|k| pa[*k] != pb[*k]),
            "at different prices"
        );
    }

    #[test]
    fn coverage_limits_the_catalog_a_seller_carries() {
        let partial = SimulatedSeller::new(SimulatedSellerConfig {
            coverage: 0.5,
            latency_ms: (0, 0),
            ..Default::default()
        })
        .unwrap();
        let all = seller("all", 1);
        let q = lisbon("2026-05-04", "2026-05-06");
        assert!(partial.hotel_offers(&q).len() < all.hotel_offers(&q).len());
    }

    #[test]
    fn hotel_name_search_matches_case_insensitively() {
        let offers = seller("a", 1).hotel_offers(&HotelQuery {
            city_or_hotel: "  alfama ".into(),
            ..lisbon("2026-05-04", "2026-05-06")
        });
        assert!(!offers.is_empty());
        assert!(offers.iter().all(|o| o.title.starts_with("Alfama Terrace")));
        assert!(seller("a", 1)
            .hotel_offers(&HotelQuery {
                city_or_hotel: "Atlantis".into(),
                ..lisbon("2026-05-04", "2026-05-06")
            })
            .is_empty());
    }

    #[test]
    fn round_trip_is_two_legs_summed() {
        let a = seller("a", 1);
        let one_way = a.flight_offers(&lis_cdg(None));
        let back = a.flight_offers(&FlightQuery {
            from: "CDG".into(),
            to: "LIS".into(),
            date: date("2026-05-08"),
            return_date: None,
        });
        let round = a.flight_offers(&lis_cdg(Some("2026-05-08")));
        assert!(!round.is_empty());
        for offer in &round {
            let legs: Vec<&str> = offer
                .sku
                .strip_prefix("flight:")
                .unwrap()
                .split('+')
                .collect();
            assert_eq!(legs.len(), 2);
            let out = one_way
                .iter()
                .find(|o| o.sku == format!("flight:{}", legs[0]))
                .unwrap();
            let ret = back
                .iter()
                .find(|o| o.sku == format!("flight:{}", legs[1]))
                .unwrap();
            assert_eq!(offer.price.minor, out.price.minor + ret.price.minor);
            let q = SearchQuery::Flight(lis_cdg(Some("2026-05-08")));
            assert_eq!(a.quote(&offer.sku, &q), Some(offer.price));
        }
        assert!(a
            .flight_offers(&FlightQuery {
                from: "LIS".into(),
                to: "JFK".into(),
                date: date("2026-05-04"),
                return_date: None
            })
            .is_empty());
    }

    #[test]
    fn quote_refuses_legs_that_do_not_match_the_query() {
        let a = seller("a", 1);
        let offer = a.flight_offers(&lis_cdg(None)).remove(0);
        let reversed = SearchQuery::Flight(FlightQuery {
            from: "CDG".into(),
            to: "LIS".into(),
            ..lis_cdg(None)
        });
        assert_eq!(a.quote(&offer.sku, &reversed), None);
        assert_eq!(
            a.quote(
                &offer.sku,
                &SearchQuery::Flight(lis_cdg(Some("2026-05-09")))
            ),
            None
        );
        assert_eq!(
            a.quote(
                "hotel:nowhere:h1:double",
                &SearchQuery::Hotel(lisbon("2026-05-04", "2026-05-06"))
            ),
            None
        );
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
