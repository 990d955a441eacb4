//! `FaultySeller`: a [`SellerApi`] around another that fails, hangs or answers garbage on
//! purpose (`faults.seller_failure_rate`, `seller_hang_rate`, `seller_garbage_rate`).
//!
//! - **fail**: `Unavailable` before the call reaches the seller (nothing happened);
//! - **hang**: no answer ever (the adapter's call timeout ends the wait). A search or status
//!   lookup hangs before reaching the seller; a booking or cancellation hangs, at even odds,
//!   before or *after* the seller acted, so the saga meets both "request lost" and "reply
//!   lost" and must reconcile;
//! - **garbage**: the seller acts and answers, and the answer is garbled into something an
//!   HTTP seller could send (negative price, unknown currency, empty SKU or reservation
//!   id), then run through the same wire validation (`sellers::wire`) as a real HTTP reply,
//!   which refuses it with `InvalidReply` naming the field.

use std::sync::Arc;

use super::wire::{
    self, SearchReply, WireBookReply, WireCancelReply, WireDetails, WireMoney, WireOffer,
    WireStatusReply,
};
use super::{
    BookOutcome, BookRequest, CancelOutcome, FlightQuery, HotelQuery, Offer, ReservationStatus,
    SellerApi, SellerError, SellerFuture,
};
use crate::domain::money::Currency;
use crate::faults::{roll, Fault, FaultCounters};

/// How often a [`FaultySeller`] misbehaves; each rate within `0..=1`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SellerFaultRates {
    /// Probability a call fails with `Unavailable` before reaching the seller.
    pub failure_rate: f64,
    /// Probability a call never answers.
    pub hang_rate: f64,
    /// Probability a reply is garbled and refused by validation.
    pub garbage_rate: f64,
}

impl SellerFaultRates {
    /// Whether any fault can fire.
    pub fn any(&self) -> bool {
        self.failure_rate > 0.0 || self.hang_rate > 0.0 || self.garbage_rate > 0.0
    }
}

/// A seller that misbehaves on purpose; see the module docs.
pub struct FaultySeller {
    inner: Arc<dyn SellerApi>,
    rates: SellerFaultRates,
    /// The currency replies are validated against.
    currency: Currency,
    counters: Arc<FaultCounters>,
}

impl std::fmt::Debug for FaultySeller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultySeller")
            .field("seller", &self.inner.name())
            .field("rates", &self.rates)
            .finish()
    }
}

/// What the dice decided for one call.
enum Dice {
    Pass,
    Fail,
    Hang { after_effect: bool },
    Garbage,
}

impl FaultySeller {
    /// Wraps `inner`; replies are validated against `currency`; fired faults are counted.
    pub fn new(
        inner: Arc<dyn SellerApi>,
        rates: SellerFaultRates,
        currency: Currency,
        counters: Arc<FaultCounters>,
    ) -> Self {
        FaultySeller {
            inner,
            rates,
            currency,
            counters,
        }
    }

    fn draw(&self) -> Dice {
        if roll(self.rates.hang_rate) {
            self.counters.count(Fault::SellerHang);
            Dice::Hang {
                after_effect: roll(0.5),
            }
        } else if roll(self.rates.failure_rate) {
            self.counters.count(Fault::SellerFailure);
            Dice::Fail
        } else if roll(self.rates.garbage_rate) {
            self.counters.count(Fault::SellerGarbage);
            Dice::Garbage
        } else {
            Dice::Pass
        }
    }

    /// Runs `call` (made only if the seller is to be reached) under the drawn fault;
    /// `garble` turns a real answer into the error its garbled form is refused with.
    fn faulty<T: Send + 'static>(
        &self,
        effectful: bool,
        call: impl FnOnce() -> SellerFuture<T>,
        garble: impl FnOnce(T) -> SellerError + Send + 'static,
    ) -> SellerFuture<T> {
        match self.draw() {
            Dice::Pass => call(),
            Dice::Fail => {
                let name = self.inner.name().to_owned();
                Box::pin(async move {
                    Err(SellerError::Unavailable(format!(
                        "{name}: injected fault (faults.seller_failure_rate)"
                    )))
                })
            }
            Dice::Hang { after_effect } if effectful && after_effect => {
                let call = call();
                Box::pin(async move {
                    let _ = call.await;
                    std::future::pending().await
                })
            }
            Dice::Hang { .. } => Box::pin(std::future::pending()),
            Dice::Garbage => {
                let call = call();
                Box::pin(async move { Err(garble(call.await?)) })
            }
        }
    }
}

/// One of the ways an amount, a code or an id can be wrong, chosen at random.
#[derive(Clone, Copy)]
enum Corruption {
    NegativeAmount,
    UnknownCurrency,
    EmptyId,
}

impl Corruption {
    fn pick() -> Self {
        match rand::random::<u8>() % 3 {
            0 => Corruption::NegativeAmount,
            1 => Corruption::UnknownCurrency,
            _ => Corruption::EmptyId,
        }
    }

    /// Corrupts a money field and an id field (the id only for `EmptyId`).
    fn apply(self, money: &mut WireMoney, id: &mut String) {
        match self {
            Corruption::NegativeAmount => money.minor = -money.minor.abs().max(1),
            Corruption::UnknownCurrency => money.currency = "XQZ".into(),
            Corruption::EmptyId => id.clear(),
        }
    }
}

/// The refusal of a reply that validation should have refused but did not (a bug in the
/// garbling, reported rather than hidden).
fn slipped_through() -> SellerError {
    SellerError::InvalidReply("garbled reply passed validation (injected fault)".into())
}

fn garbled_search(
    offers: &[Offer],
    currency: Currency,
    validate: impl FnOnce(SearchReply) -> Result<Vec<Offer>, SellerError>,
) -> SellerError {
    let mut wire: Vec<WireOffer> = offers.iter().map(WireOffer::from).collect();
    if wire.is_empty() {
        // Nothing to garble: invent an offer; validation stops at its price or SKU.
        wire.push(WireOffer {
            sku: "garbage".into(),
            title: String::new(),
            price: WireMoney {
                minor: 1,
                currency: currency.code().into(),
            },
            details: WireDetails::Flight { legs: Vec::new() },
        });
    }
    let first = &mut wire[0];
    Corruption::pick().apply(&mut first.price, &mut first.sku);
    match validate(SearchReply { offers: wire }) {
        Err(e) => e,
        Ok(_) => slipped_through(),
    }
}

fn garbled_book(outcome: &BookOutcome, currency: Currency) -> SellerError {
    let mut reply = WireBookReply::from(outcome);
    let corruption = Corruption::pick();
    match &mut reply {
        WireBookReply::Confirmed {
            reservation_id,
            price,
        } => corruption.apply(price, reservation_id),
        WireBookReply::PriceChanged { current } => {
            Corruption::NegativeAmount.apply(current, &mut String::new())
        }
        // A refusal's reason is never refused by validation: garble it into a price change
        // with a negative price instead.
        WireBookReply::Rejected { .. } => {
            reply = WireBookReply::PriceChanged {
                current: WireMoney {
                    minor: -1,
                    currency: currency.code().into(),
                },
            }
        }
    }
    match wire::book_outcome(currency, reply) {
        Err(e) => e,
        Ok(_) => slipped_through(),
    }
}

fn garbled_cancel(outcome: &CancelOutcome, currency: Currency) -> SellerError {
    let reply = match WireCancelReply::from(outcome) {
        WireCancelReply::Cancelled {
            mut reservation_id,
            mut fee,
            refund,
        } => {
            Corruption::pick().apply(&mut fee, &mut reservation_id);
            WireCancelReply::Cancelled {
                reservation_id,
                fee,
                refund,
            }
        }
        WireCancelReply::NotBooked => WireCancelReply::Cancelled {
            reservation_id: String::new(),
            fee: WireMoney {
                minor: -1,
                currency: currency.code().into(),
            },
            refund: WireMoney {
                minor: 0,
                currency: currency.code().into(),
            },
        },
    };
    match wire::cancel_outcome(currency, reply) {
        Err(e) => e,
        Ok(_) => slipped_through(),
    }
}

fn garbled_status(status: Option<&ReservationStatus>, currency: Currency) -> SellerError {
    let reply = match WireStatusReply::from(status) {
        WireStatusReply::Booked {
            mut reservation_id,
            mut price,
        } => {
            Corruption::pick().apply(&mut price, &mut reservation_id);
            WireStatusReply::Booked {
                reservation_id,
                price,
            }
        }
        WireStatusReply::Cancelled {
            mut reservation_id,
            mut fee,
        } => {
            Corruption::pick().apply(&mut fee, &mut reservation_id);
            WireStatusReply::Cancelled {
                reservation_id,
                fee,
            }
        }
        WireStatusReply::Declined | WireStatusReply::Unknown => WireStatusReply::Booked {
            reservation_id: String::new(),
            price: WireMoney {
                minor: -1,
                currency: currency.code().into(),
            },
        },
    };
    match wire::reservation_status(currency, reply) {
        Err(e) => e,
        Ok(_) => slipped_through(),
    }
}

impl SellerApi for FaultySeller {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn search_hotels(&self, query: HotelQuery) -> SellerFuture<Vec<Offer>> {
        let (name, currency) = (self.inner.name().to_owned(), self.currency);
        let asked = query.clone();
        self.faulty(
            false,
            || self.inner.search_hotels(query),
            move |offers| {
                garbled_search(&offers, currency, |reply| {
                    wire::hotel_offers(&name, currency, &asked, reply)
                })
            },
        )
    }

    fn search_flights(&self, query: FlightQuery) -> SellerFuture<Vec<Offer>> {
        let (name, currency) = (self.inner.name().to_owned(), self.currency);
        let asked = query.clone();
        self.faulty(
            false,
            || self.inner.search_flights(query),
            move |offers| {
                garbled_search(&offers, currency, |reply| {
                    wire::flight_offers(&name, currency, &asked, reply)
                })
            },
        )
    }

    fn book(&self, req: BookRequest) -> SellerFuture<BookOutcome> {
        let currency = self.currency;
        self.faulty(
            true,
            || self.inner.book(req),
            move |outcome| garbled_book(&outcome, currency),
        )
    }

    fn cancel(&self, idempotency_key: String) -> SellerFuture<CancelOutcome> {
        let currency = self.currency;
        self.faulty(
            true,
            || self.inner.cancel(idempotency_key),
            move |outcome| garbled_cancel(&outcome, currency),
        )
    }

    fn booking_status(&self, idempotency_key: String) -> SellerFuture<Option<ReservationStatus>> {
        let currency = self.currency;
        self.faulty(
            false,
            || self.inner.booking_status(idempotency_key),
            move |status| garbled_status(status.as_ref(), currency),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sellers::simulated::{SimulatedSeller, SimulatedSellerConfig};
    use crate::sellers::SearchQuery;
    use chrono::{Days, Utc};

    fn simulated() -> SimulatedSeller {
        SimulatedSeller::new(SimulatedSellerConfig {
            latency_ms: (0, 0),
            coverage: 1.0,
            ..SimulatedSellerConfig::default()
        })
        .unwrap()
    }

    fn wrap(
        seller: &SimulatedSeller,
        rates: SellerFaultRates,
    ) -> (FaultySeller, Arc<FaultCounters>) {
        let counters = Arc::new(FaultCounters::default());
        let api: Arc<dyn SellerApi> = Arc::new(seller.clone());
        (
            FaultySeller::new(api, rates, Currency::EUR, counters.clone()),
            counters,
        )
    }

    fn lisbon() -> HotelQuery {
        let today = Utc::now().date_naive();
        HotelQuery {
            city_or_hotel: "Lisbon".into(),
            check_in: today.checked_add_days(Days::new(30)).unwrap(),
            check_out: today.checked_add_days(Days::new(32)).unwrap(),
        }
    }

    #[tokio::test]
    async fn garbage_is_refused_by_wire_validation_naming_the_field() {
        let seller = simulated();
        let (faulty, counters) = wrap(
            &seller,
            SellerFaultRates {
                garbage_rate: 1.0,
                ..Default::default()
            },
        );
        for _ in 0..20 {
            match faulty.search_hotels(lisbon()).await {
                Err(SellerError::InvalidReply(why)) => assert!(
                    why.starts_with("offers[0].price") || why.starts_with("offers[0].sku"),
                    "{why}"
                ),
                other => panic!("expected InvalidReply, got {other:?}"),
            }
        }
        // A garbled booking still landed at the seller: its outcome is unknown, not absent.
        let offer = seller.hotel_offers(&lisbon()).remove(0);
        let req = BookRequest {
            idempotency_key: "k1".into(),
            sku: offer.sku.clone(),
            query: SearchQuery::Hotel(lisbon()),
            expected_price: offer.price,
        };
        assert!(matches!(
            faulty.book(req).await,
            Err(SellerError::InvalidReply(_))
        ));
        assert_eq!(seller.reservations_made(), 1);
        assert!(matches!(
            faulty.booking_status("k1".into()).await,
            Err(SellerError::InvalidReply(_))
        ));
        assert!(matches!(
            faulty.cancel("k1".into()).await,
            Err(SellerError::InvalidReply(_))
        ));
        assert_eq!(counters.snapshot().seller_garbage, 23);
    }

    #[tokio::test]
    async fn failures_never_reach_the_seller_and_hangs_never_answer() {
        let seller = simulated();
        let (failing, counters) = wrap(
            &seller,
            SellerFaultRates {
                failure_rate: 1.0,
                ..Default::default()
            },
        );
        let offer = seller.hotel_offers(&lisbon()).remove(0);
        let req = BookRequest {
            idempotency_key: "k2".into(),
            sku: offer.sku.clone(),
            query: SearchQuery::Hotel(lisbon()),
            expected_price: offer.price,
        };
        assert!(matches!(
            failing.book(req).await,
            Err(SellerError::Unavailable(_))
        ));
        assert_eq!(seller.reservations_made(), 0);
        assert_eq!(counters.snapshot().seller_failures, 1);

        let (hanging, counters) = wrap(
            &seller,
            SellerFaultRates {
                hang_rate: 1.0,
                ..Default::default()
            },
        );
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            hanging.search_hotels(lisbon()),
        )
        .await;
        assert!(waited.is_err(), "a hung call answered");
        assert_eq!(counters.snapshot().seller_hangs, 1);

        let (fine, counters) = wrap(&seller, SellerFaultRates::default());
        assert!(!fine.search_hotels(lisbon()).await.unwrap().is_empty());
        assert_eq!(counters.snapshot().total(), 0);
    }
}
