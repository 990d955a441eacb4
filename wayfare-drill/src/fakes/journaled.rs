//! A durable fake seller: the simulated catalog (search and prices) with its bookings and
//! cancellations kept in an append-only journal, so they survive the fake's own restart and
//! every crash of wayfare, and can be listed afterwards ([`JournaledSeller::ledger`]).
//!
//! Faults are drawn here, per call, like `examples/fake_gateway.rs` does: an error (503)
//! or a hang before acting, a reject instead of a reservation, a drop (act, then never
//! answer). Idempotency comes from the journal: a key always gets its first answer, a key
//! reused for another request is answered `rejected` and nothing is journaled.
//!
//! Durability: every reservation, decline and cancellation is appended to
//! `journal.jsonl` before its reply is sent, and the book is rebuilt from it at start. The
//! file is written, not fsynced: it survives the process being killed, not a power cut.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use wayfare::domain::money::Money;
use wayfare::sellers::simulated::SimulatedSeller;
use wayfare::sellers::{
    BookOutcome, BookRequest, CancelOutcome, FlightQuery, HotelQuery, Offer, ReservationStatus,
    SellerApi, SellerError, SellerFuture,
};

/// How long a hang or a dropped reply lasts: longer than any sane client timeout.
const HANG: Duration = Duration::from_secs(120);

/// Latency and fault knobs of a [`JournaledSeller`]; every rate is a probability in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JournalFaults {
    /// Latency added to every call, in ms.
    pub latency_ms: u64,
    /// A 503 before acting (nothing happens).
    pub error_rate: f64,
    /// A hang before acting (the caller times out; nothing happens).
    pub hang_rate: f64,
    /// Act, then never answer (the caller times out although the effect landed).
    pub drop_rate: f64,
    /// A booking is declined (`sold out`) instead of reserved.
    pub reject_rate: f64,
    /// Seed of the fault dice.
    pub seed: u64,
}

impl Default for JournalFaults {
    fn default() -> Self {
        JournalFaults {
            latency_ms: 0,
            error_rate: 0.0,
            hang_rate: 0.0,
            drop_rate: 0.0,
            reject_rate: 0.0,
            seed: 11,
        }
    }
}

impl JournalFaults {
    /// The first rate outside 0..=1, named as its command-line flag.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, rate) in [
            ("--error-rate", self.error_rate),
            ("--hang-rate", self.hang_rate),
            ("--drop-rate", self.drop_rate),
            ("--reject-rate", self.reject_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{flag} must be within [0, 1], got {rate}"));
            }
        }
        Ok(())
    }
}

/// The demo sellers' names, by rank: port 9001 is the first.
const NATO: [&str; 26] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
];

/// Name and catalog seed of a fake seller listening on `port` that was given neither:
/// ports 9001 to 9026 are the demo sellers of that rank (`alpha` seed 1, `bravo` seed 2,
/// ... `zulu` seed 26, pricing like the built-in demo sellers of those names); any other
/// port is `seller-PORT` with seed PORT.
pub fn identity_of_port(port: u16) -> (String, u64) {
    match port.checked_sub(9001).map(usize::from) {
        Some(rank) if rank < NATO.len() => (NATO[rank].to_owned(), rank as u64 + 1),
        _ => (format!("seller-{port}"), u64::from(port)),
    }
}

/// One journaled effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Entry {
    /// The first answer to a booking key (reserved or declined), with its request.
    Booked {
        request: BookRequest,
        outcome: BookOutcome,
    },
    /// A reservation was cancelled.
    Cancelled { key: String, outcome: CancelOutcome },
}

#[derive(Debug, Clone)]
struct Record {
    request: BookRequest,
    outcome: BookOutcome,
    cancellation: Option<CancelOutcome>,
}

/// The book, rebuilt from the journal, in journal order.
#[derive(Debug, Default)]
struct Book {
    order: Vec<String>,
    by_key: HashMap<String, Record>,
    reservations_made: u64,
}

impl Book {
    fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Booked { request, outcome } => {
                if matches!(outcome, BookOutcome::Confirmed { .. }) {
                    self.reservations_made += 1;
                }
                self.order.push(request.idempotency_key.clone());
                self.by_key.insert(
                    request.idempotency_key.clone(),
                    Record {
                        request,
                        outcome,
                        cancellation: None,
                    },
                );
            }
            Entry::Cancelled { key, outcome } => {
                if let Some(r) = self.by_key.get_mut(&key) {
                    r.cancellation = Some(outcome);
                }
            }
        }
    }

    fn status(&self, key: &str) -> Option<ReservationStatus> {
        let r = self.by_key.get(key)?;
        Some(match (&r.outcome, &r.cancellation) {
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
}

/// Everything a [`JournaledSeller`] did, as `GET /_fake/ledger` serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellerLedger {
    /// The seller's name.
    pub name: String,
    /// Every reservation made, in order (cancelled ones included).
    pub reservations: Vec<LedgerReservation>,
    /// Every cancellation of a reservation.
    pub cancellations: Vec<LedgerCancellation>,
    /// Every booking key declined (rejected or price changed): nothing was reserved.
    pub declines: Vec<LedgerDecline>,
}

/// One reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerReservation {
    /// The booking's idempotency key.
    pub key: String,
    /// The seller's reference.
    pub reservation_id: String,
    /// What was booked.
    pub sku: String,
    /// Price charged.
    pub price: Money,
    /// Fee kept, once cancelled; `None` while live.
    pub fee: Option<Money>,
}

/// One cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCancellation {
    /// The booking's idempotency key.
    pub key: String,
    /// The cancelled reservation.
    pub reservation_id: String,
    /// Price it was booked at.
    pub price: Money,
    /// Fee kept.
    pub fee: Money,
    /// Amount refunded.
    pub refund: Money,
}

/// One declined booking key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerDecline {
    /// The booking's idempotency key.
    pub key: String,
    /// Why (the seller's words, or the changed price).
    pub reason: String,
}

impl SellerLedger {
    /// The book as the invariant checker reads it, under `name` (wayfare's name of the
    /// seller, which need not be the fake's own).
    pub fn seen(&self, name: &str) -> crate::SellerSeen {
        let cancelled: HashMap<&str, &LedgerCancellation> = self
            .cancellations
            .iter()
            .map(|c| (c.key.as_str(), c))
            .collect();
        let mut reservations: Vec<(String, ReservationStatus)> = self
            .reservations
            .iter()
            .map(|r| {
                let status = match cancelled.get(r.key.as_str()) {
                    Some(c) => ReservationStatus::Cancelled {
                        reservation_id: c.reservation_id.clone(),
                        fee: c.fee,
                    },
                    None => ReservationStatus::Booked {
                        reservation_id: r.reservation_id.clone(),
                        price: r.price,
                    },
                };
                (r.key.clone(), status)
            })
            .chain(
                self.declines
                    .iter()
                    .map(|d| (d.key.clone(), ReservationStatus::Declined)),
            )
            .collect();
        reservations.sort_by(|a, b| a.0.cmp(&b.0));
        crate::SellerSeen {
            name: name.to_owned(),
            reservations,
            reservations_made: self.reservations.len() as u64,
        }
    }
}

/// A seller whose bookings live in a journal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JournaledSeller {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    /// Catalog and prices only: built with no latency and no faults.
    catalog: SimulatedSeller,
    cancel_fee_percent: u32,
    faults: JournalFaults,
    book: Mutex<(Book, File)>,
    dice: Mutex<SmallRng>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl JournaledSeller {
    /// Opens (or creates) the journal in `data_dir` and rebuilds the book from it. A torn
    /// last line (killed mid-write) is dropped; any other unreadable line is an error
    /// naming the file and line.
    pub fn open(
        name: &str,
        catalog: SimulatedSeller,
        cancel_fee_percent: u32,
        faults: JournalFaults,
        data_dir: &Path,
    ) -> io::Result<Self> {
        faults.validate().map_err(io::Error::other)?;
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("journal.jsonl");
        let mut book = Book::default();
        if let Ok(file) = File::open(&path) {
            let lines: Vec<String> = BufReader::new(file).lines().collect::<Result<_, _>>()?;
            let last = lines.len().saturating_sub(1);
            for (i, line) in lines.iter().enumerate() {
                match serde_json::from_str::<Entry>(line) {
                    Ok(entry) => book.apply(entry),
                    Err(_) if i == last => {
                        tracing::warn!(path = %path.display(), "Dropping a torn last journal line.");
                    }
                    Err(e) => {
                        return Err(io::Error::other(format!(
                            "{}: line {}: {e}",
                            path.display(),
                            i + 1
                        )))
                    }
                }
            }
        }
        let journal = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(JournaledSeller {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                catalog,
                cancel_fee_percent,
                dice: Mutex::new(SmallRng::seed_from_u64(faults.seed)),
                faults,
                book: Mutex::new((book, journal)),
            }),
        })
    }

    /// Everything this seller did, in journal order.
    pub fn ledger(&self) -> SellerLedger {
        let guard = lock(&self.inner.book);
        let book = &guard.0;
        let mut out = SellerLedger {
            name: self.inner.name.clone(),
            ..SellerLedger::default()
        };
        for key in &book.order {
            let r = &book.by_key[key];
            match &r.outcome {
                BookOutcome::Confirmed {
                    reservation_id,
                    price,
                } => {
                    let fee = match &r.cancellation {
                        Some(CancelOutcome::Cancelled { fee, refund, .. }) => {
                            out.cancellations.push(LedgerCancellation {
                                key: key.clone(),
                                reservation_id: reservation_id.clone(),
                                price: *price,
                                fee: *fee,
                                refund: *refund,
                            });
                            Some(*fee)
                        }
                        _ => None,
                    };
                    out.reservations.push(LedgerReservation {
                        key: key.clone(),
                        reservation_id: reservation_id.clone(),
                        sku: r.request.sku.clone(),
                        price: *price,
                        fee,
                    });
                }
                BookOutcome::Rejected { reason } => out.declines.push(LedgerDecline {
                    key: key.clone(),
                    reason: reason.clone(),
                }),
                BookOutcome::PriceChanged { current } => out.declines.push(LedgerDecline {
                    key: key.clone(),
                    reason: format!("price changed to {current}"),
                }),
            }
        }
        out
    }
}

impl Inner {
    fn roll(&self, rate: f64) -> bool {
        rate > 0.0 && lock(&self.dice).gen::<f64>() < rate
    }

    /// Latency, then the before-acting faults; `Ok` means "go ahead".
    async fn admit(&self) -> Result<(), SellerError> {
        if self.faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.faults.latency_ms)).await;
        }
        if self.roll(self.faults.hang_rate) {
            tokio::time::sleep(HANG).await;
        }
        if self.roll(self.faults.error_rate) {
            return Err(SellerError::Unavailable(format!(
                "{} failed (injected)",
                self.name
            )));
        }
        Ok(())
    }

    /// After an effect landed: maybe never answer.
    async fn maybe_drop(&self) {
        if self.roll(self.faults.drop_rate) {
            tokio::time::sleep(HANG).await;
        }
    }

    fn append(journal: &mut File, entry: &Entry) -> Result<(), SellerError> {
        let line = serde_json::to_string(entry).expect("journal entries serialize");
        writeln!(journal, "{line}")
            .map_err(|e| SellerError::Unavailable(format!("cannot write the journal: {e}")))
    }

    fn book_now(&self, req: &BookRequest) -> Result<BookOutcome, SellerError> {
        let mut guard = lock(&self.book);
        let (book, journal) = &mut *guard;
        if let Some(record) = book.by_key.get(&req.idempotency_key) {
            return Ok(if record.request == *req {
                record.outcome.clone()
            } else {
                BookOutcome::Rejected {
                    reason: "idempotency key already used for a different booking".to_string(),
                }
            });
        }
        let outcome = match self.catalog.quote(&req.sku, &req.query) {
            None => BookOutcome::Rejected {
                reason: format!("{} is not sold for these dates", req.sku),
            },
            Some(_) if self.roll(self.faults.reject_rate) => BookOutcome::Rejected {
                reason: "sold out (injected)".to_string(),
            },
            Some(current) if current != req.expected_price => BookOutcome::PriceChanged { current },
            Some(price) => BookOutcome::Confirmed {
                reservation_id: format!("{}-{}", self.name, book.reservations_made + 1),
                price,
            },
        };
        let entry = Entry::Booked {
            request: req.clone(),
            outcome: outcome.clone(),
        };
        Self::append(journal, &entry)?;
        book.apply(entry);
        Ok(outcome)
    }

    fn cancel_now(&self, key: &str) -> Result<CancelOutcome, SellerError> {
        let mut guard = lock(&self.book);
        let (book, journal) = &mut *guard;
        let Some(record) = book.by_key.get(key) else {
            return Ok(CancelOutcome::NotBooked);
        };
        if let Some(done) = &record.cancellation {
            return Ok(done.clone());
        }
        let BookOutcome::Confirmed {
            reservation_id,
            price,
        } = &record.outcome
        else {
            return Ok(CancelOutcome::NotBooked);
        };
        let fee_minor =
            (i128::from(price.minor) * i128::from(self.cancel_fee_percent) / 100) as i64;
        let outcome = CancelOutcome::Cancelled {
            reservation_id: reservation_id.clone(),
            fee: Money::new(fee_minor, price.currency),
            refund: Money::new(price.minor - fee_minor, price.currency),
        };
        let entry = Entry::Cancelled {
            key: key.to_owned(),
            outcome: outcome.clone(),
        };
        Self::append(journal, &entry)?;
        book.apply(entry);
        Ok(outcome)
    }
}

impl SellerApi for JournaledSeller {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn search_hotels(&self, query: HotelQuery) -> SellerFuture<Vec<Offer>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.admit().await?;
            Ok(inner.catalog.hotel_offers(&query))
        })
    }

    fn search_flights(&self, query: FlightQuery) -> SellerFuture<Vec<Offer>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.admit().await?;
            Ok(inner.catalog.flight_offers(&query))
        })
    }

    fn book(&self, req: BookRequest) -> SellerFuture<BookOutcome> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.admit().await?;
            let outcome = inner.book_now(&req)?;
            inner.maybe_drop().await;
            Ok(outcome)
        })
    }

    fn cancel(&self, idempotency_key: String) -> SellerFuture<CancelOutcome> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.admit().await?;
            let outcome = inner.cancel_now(&idempotency_key)?;
            inner.maybe_drop().await;
            Ok(outcome)
        })
    }

    fn booking_status(&self, idempotency_key: String) -> SellerFuture<Option<ReservationStatus>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.admit().await?;
            Ok(lock(&inner.book).0.status(&idempotency_key))
        })
    }
}

#[cfg(test)]
mod tests {
    use wayfare::sellers::simulated::SimulatedSellerConfig;
    use wayfare::sellers::SearchQuery;

    use super::*;

    fn catalog() -> SimulatedSeller {
        SimulatedSeller::new(SimulatedSellerConfig {
            name: "t".into(),
            seed: 1,
            latency_ms: (0, 0),
            coverage: 1.0,
            ..Default::default()
        })
        .unwrap()
    }

    fn request(s: &SimulatedSeller, key: &str) -> BookRequest {
        let q = HotelQuery {
            city_or_hotel: "Lisbon".into(),
            check_in: "2026-05-04".parse().unwrap(),
            check_out: "2026-05-06".parse().unwrap(),
        };
        let offer = s.hotel_offers(&q).into_iter().next().unwrap();
        BookRequest {
            idempotency_key: key.into(),
            sku: offer.sku,
            query: SearchQuery::Hotel(q),
            expected_price: offer.price,
        }
    }

    #[tokio::test]
    async fn bookings_and_cancellations_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            JournaledSeller::open("t", catalog(), 10, JournalFaults::default(), dir.path()).unwrap()
        };
        let s = open();
        let first = s.book(request(&catalog(), "k1")).await.unwrap();
        assert!(matches!(first, BookOutcome::Confirmed { .. }), "{first:?}");
        s.book(request(&catalog(), "k2")).await.unwrap();
        let cancelled = s.cancel("k2".into()).await.unwrap();
        drop(s);
        let s = open();
        assert_eq!(s.book(request(&catalog(), "k1")).await.unwrap(), first);
        assert_eq!(s.cancel("k2".into()).await.unwrap(), cancelled);
        let mut other = request(&catalog(), "k1");
        other.expected_price.minor += 1;
        assert!(matches!(
            s.book(other).await.unwrap(),
            BookOutcome::Rejected { .. }
        ));
        let ledger = s.ledger();
        assert_eq!(ledger.reservations.len(), 2);
        assert_eq!(ledger.cancellations.len(), 1);
        assert_eq!(ledger.cancellations[0].key, "k2");
        let seen = ledger.seen("t");
        assert_eq!(seen.reservations_made, 2);
        assert!(matches!(
            seen.reservations[1].1,
            ReservationStatus::Cancelled { .. }
        ));
    }

    #[test]
    fn ports_name_the_demo_sellers() {
        assert_eq!(identity_of_port(9001), ("alpha".into(), 1));
        assert_eq!(identity_of_port(9002), ("bravo".into(), 2));
        assert_eq!(identity_of_port(9026), ("zulu".into(), 26));
        assert_eq!(identity_of_port(9027), ("seller-9027".into(), 9027));
        assert_eq!(identity_of_port(8999), ("seller-8999".into(), 8999));
    }

    #[test]
    fn rates_outside_zero_one_are_named() {
        let bad = JournalFaults {
            drop_rate: 1.5,
            ..JournalFaults::default()
        };
        assert!(bad.validate().unwrap_err().contains("--drop-rate"));
    }
}
