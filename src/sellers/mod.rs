//! The seller contract: what wayfare asks of a hotel or flight seller, and the value types
//! that cross that boundary.
//!
//! A `SellerAdapter` actor wraps one `Arc<dyn SellerApi>` and adds timeouts, retries, a
//! circuit breaker and a bulkhead around it; implementations here only speak to the seller.
//! Two implementations ship: [`simulated::SimulatedSeller`] (in-process, deterministic
//! catalog, fault knobs) and [`http::HttpSeller`] (JSON over HTTP, see
//! `docs/seller-wire-format.md`). The `wayfare-drill` crate serves the wire format from a
//! simulated seller so the HTTP adapter can be exercised end to end.
//!
//! Expected business outcomes (a booking declined, a price that moved) are values of
//! [`BookOutcome`]; [`SellerError`] is reserved for "we could not get an answer".

pub mod faulty;
pub mod http;
pub mod simulated;
pub mod wire;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::domain::money::Money;
pub use crate::domain::query::{
    parse_date, validate_airport, FlightDetails, FlightLeg, FlightQuery, HotelDetails, HotelQuery,
    Offer, OfferDetails, QueryError, SearchQuery, Vertical, MAX_PLACE_QUERY_CHARS, MAX_STAY_NIGHTS,
};

/// The future every seller call returns: boxed so the trait stays object-safe, `'static` so
/// an actor can move it into a spawned task and drop it on timeout.
pub type SellerFuture<T> = Pin<Box<dyn Future<Output = Result<T, SellerError>> + Send + 'static>>;

/// A seller: searches, books, cancels and reports on bookings.
///
/// Implementations must be idempotent on `idempotency_key`: booking or cancelling twice with
/// the same key returns the first result and never reserves twice.
///
/// For `book` and `cancel`, any error leaves the outcome **unknown**: a timeout, a dropped
/// connection, a garbled reply or even a 5xx may come after the seller acted. Callers
/// reconcile with `booking_status`, or retry with the same key (always safe), before
/// compensating.
pub trait SellerApi: Send + Sync + 'static {
    /// Stable name used in offers, logs, metrics and config.
    fn name(&self) -> &str;

    /// Hotel offers for a stay; prices are the sum of the per-night rates.
    fn search_hotels(&self, query: HotelQuery) -> SellerFuture<Vec<Offer>>;

    /// Flight offers; a round trip is priced as both legs summed.
    fn search_flights(&self, query: FlightQuery) -> SellerFuture<Vec<Offer>>;

    /// Reserve `req.sku` at `req.expected_price`, idempotently on `req.idempotency_key`.
    fn book(&self, req: BookRequest) -> SellerFuture<BookOutcome>;

    /// Cancel the reservation made under `idempotency_key`; idempotent.
    fn cancel(&self, idempotency_key: String) -> SellerFuture<CancelOutcome>;

    /// What the seller knows about a booking key; `None` when it has never seen the key.
    /// The booking saga uses this to reconcile a booking whose reply never arrived.
    fn booking_status(&self, idempotency_key: String) -> SellerFuture<Option<ReservationStatus>>;
}

/// Why a seller call produced no usable answer. Business refusals are not errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SellerError {
    /// No reply in time; for a booking the outcome is unknown and must be reconciled.
    #[error("seller did not answer in time")]
    Timeout,
    /// The seller answered that it cannot serve now (overloaded, maintenance, 5xx).
    #[error("seller unavailable: {0}")]
    Unavailable(String),
    /// The seller answered something we refuse to trust; the text names the problem.
    #[error("invalid reply from seller: {0}")]
    InvalidReply(String),
    /// The request did not get through (connection refused, reset, DNS).
    #[error("transport error: {0}")]
    Transport(String),
}

/// A reservation request. The query gives the dates needed to price the SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookRequest {
    /// Key that makes the booking idempotent (the saga id).
    pub idempotency_key: String,
    /// What to book.
    pub sku: String,
    /// The search the offer came from: its dates price the SKU.
    pub query: SearchQuery,
    /// The price the customer agreed to; any other current price is reported, not booked.
    pub expected_price: Money,
}

/// How a booking attempt ended, as far as the seller is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BookOutcome {
    /// Reserved.
    Confirmed {
        /// The seller's reference.
        reservation_id: String,
        /// Price charged by the seller.
        price: Money,
    },
    /// The seller declined (sold out, unknown SKU, key reused for another request...).
    Rejected {
        /// Why, in the seller's words.
        reason: String,
    },
    /// The price is no longer `expected_price`; nothing was reserved.
    PriceChanged {
        /// The seller's current price.
        current: Money,
    },
}

/// How a cancellation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The reservation is cancelled (now or by an earlier call with the same key).
    Cancelled {
        /// The seller's reference of the cancelled reservation.
        reservation_id: String,
        /// Cancellation fee kept by the seller.
        fee: Money,
        /// What the seller refunds: price minus fee.
        refund: Money,
    },
    /// Nothing was reserved under this key, so there is nothing to cancel.
    NotBooked,
}

/// What a seller knows about an idempotency key it has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Reserved and not cancelled.
    Booked {
        /// The seller's reference.
        reservation_id: String,
        /// Price charged.
        price: Money,
    },
    /// Reserved, then cancelled.
    Cancelled {
        /// The seller's reference.
        reservation_id: String,
        /// Fee kept.
        fee: Money,
    },
    /// The seller saw the request and declined it (rejected or price changed): nothing is
    /// reserved and retrying the key returns the same answer.
    Declined,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn hotel_query_validation_names_the_field() {
        assert!(HotelQuery::parse(" Lisbon ", "2026-05-01", "2026-05-03").is_ok());
        assert_eq!(
            HotelQuery::parse("Lisbon", "2026-05-01", "2026-05-03")
                .unwrap()
                .city_or_hotel,
            "Lisbon"
        );
        assert_eq!(
            HotelQuery::parse("Lisbon", "01/05/2026", "2026-05-03")
                .unwrap_err()
                .field,
            "check_in"
        );
        assert_eq!(
            HotelQuery::parse("Lisbon", "2026-05-01", "2026-02-30")
                .unwrap_err()
                .field,
            "check_out"
        );
        assert_eq!(
            HotelQuery::parse("Lisbon", "2026-05-03", "2026-05-03")
                .unwrap_err()
                .field,
            "check_out"
        );
        assert_eq!(
            HotelQuery::parse("Lisbon", "2026-05-03", "2026-05-01")
                .unwrap_err()
                .field,
            "check_out"
        );
        assert_eq!(
            HotelQuery::parse("  ", "2026-05-01", "2026-05-03")
                .unwrap_err()
                .field,
            "city"
        );
        assert_eq!(
            HotelQuery::parse(&"x".repeat(101), "2026-05-01", "2026-05-03")
                .unwrap_err()
                .field,
            "city"
        );
    }

    #[test]
    fn stay_length_is_bounded_at_thirty_nights() {
        assert!(HotelQuery::parse("Paris", "2026-05-01", "2026-05-31").is_ok());
        let err = HotelQuery::parse("Paris", "2026-05-01", "2026-06-01").unwrap_err();
        assert_eq!(err.field, "check_out");
        assert!(err.problem.contains("31 nights"), "{err}");
    }

    #[test]
    fn flight_query_validation_names_the_field() {
        assert!(FlightQuery::parse("LIS", "CDG", "2026-05-01", None).is_ok());
        assert!(FlightQuery::parse("LIS", "CDG", "2026-05-01", Some(""))
            .unwrap()
            .return_date
            .is_none());
        assert!(FlightQuery::parse("LIS", "CDG", "2026-05-01", Some("2026-05-01")).is_ok());
        assert_eq!(
            FlightQuery::parse("lis", "CDG", "2026-05-01", None)
                .unwrap_err()
                .field,
            "from"
        );
        assert_eq!(
            FlightQuery::parse("LIS", "CDGX", "2026-05-01", None)
                .unwrap_err()
                .field,
            "to"
        );
        assert_eq!(
            FlightQuery::parse("LIS", "LIS", "2026-05-01", None)
                .unwrap_err()
                .field,
            "to"
        );
        assert_eq!(
            FlightQuery::parse("LIS", "CDG", "tomorrow", None)
                .unwrap_err()
                .field,
            "date"
        );
        assert_eq!(
            FlightQuery::parse("LIS", "CDG", "2026-05-02", Some("2026-05-01"))
                .unwrap_err()
                .field,
            "return_date"
        );
        assert_eq!(
            FlightQuery::parse("LIS", "CDG", "2026-05-02", Some("x"))
                .unwrap_err()
                .field,
            "return_date"
        );
        assert_eq!(
            FlightQuery::parse("LİS", "CDG", "2026-05-02", None)
                .unwrap_err()
                .field,
            "from"
        );
    }

    #[test]
    fn search_query_reports_vertical_and_travel_date() {
        let q = SearchQuery::Flight(FlightQuery {
            from: "LIS".into(),
            to: "CDG".into(),
            date: date("2026-05-01"),
            return_date: None,
        });
        assert_eq!(q.vertical(), Vertical::Flight);
        assert_eq!(q.travel_date(), date("2026-05-01"));
        assert!(q.validate().is_ok());
    }
}
