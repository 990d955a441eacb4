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

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::domain::money::Money;

/// The future every seller call returns: boxed so the trait stays object-safe, `'static` so
/// an actor can move it into a spawned task and drop it on timeout.
pub type SellerFuture<T> = Pin<Box<dyn Future<Output = Result<T, SellerError>> + Send + 'static>>;

/// Longest hotel stay a single search or booking may cover.
pub const MAX_STAY_NIGHTS: i64 = 30;

/// Longest accepted hotel name or city query, in characters; longer input is refused
/// rather than truncated so a caller never silently searches for something else.
pub const MAX_PLACE_QUERY_CHARS: usize = 100;

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

/// The two things wayfare sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vertical {
    /// Hotel rooms for a stay.
    Hotel,
    /// Flights, one way or round trip.
    Flight,
}

/// A hotel search: a city or hotel name and a stay.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HotelQuery {
    /// City name ("Lisbon") or part of a hotel name; matched case-insensitively.
    pub city_or_hotel: String,
    /// First night.
    pub check_in: NaiveDate,
    /// Departure day; the last night is the day before.
    pub check_out: NaiveDate,
}

/// A flight search: one way, or a round trip when `return_date` is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlightQuery {
    /// IATA airport code of departure, three uppercase letters.
    pub from: String,
    /// IATA airport code of arrival.
    pub to: String,
    /// Outbound date.
    pub date: NaiveDate,
    /// Return date of a round trip.
    pub return_date: Option<NaiveDate>,
}

/// Either kind of search; also the pricing context of a booking.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "vertical", rename_all = "snake_case")]
pub enum SearchQuery {
    /// A hotel stay.
    Hotel(HotelQuery),
    /// A flight trip.
    Flight(FlightQuery),
}

impl SearchQuery {
    /// Which vertical this query searches.
    pub fn vertical(&self) -> Vertical {
        match self {
            SearchQuery::Hotel(_) => Vertical::Hotel,
            SearchQuery::Flight(_) => Vertical::Flight,
        }
    }

    /// First day of travel (check-in or outbound date).
    pub fn travel_date(&self) -> NaiveDate {
        match self {
            SearchQuery::Hotel(q) => q.check_in,
            SearchQuery::Flight(q) => q.date,
        }
    }

    /// Checks the query; see [`HotelQuery::validate`] and [`FlightQuery::validate`].
    pub fn validate(&self) -> Result<(), QueryError> {
        match self {
            SearchQuery::Hotel(q) => q.validate(),
            SearchQuery::Flight(q) => q.validate(),
        }
    }
}

/// A query field that failed validation, named so the HTTP layer can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct QueryError {
    /// Field name as the client spells it (`check_in`, `from`, ...).
    pub field: &'static str,
    /// What is wrong, in words a client can act on.
    pub problem: String,
}

impl QueryError {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        QueryError {
            field,
            problem: problem.into(),
        }
    }
}

/// Parses an ISO 8601 calendar date (`2026-05-01`), naming `field` on failure.
pub fn parse_date(field: &'static str, value: &str) -> Result<NaiveDate, QueryError> {
    NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(|_| {
        let shown: String = value.chars().take(32).collect();
        QueryError::new(
            field,
            format!("expected an ISO date like 2026-05-01, got {shown:?}"),
        )
    })
}

/// Checks an IATA airport code: exactly three uppercase ASCII letters.
pub fn validate_airport(field: &'static str, code: &str) -> Result<(), QueryError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        let shown: String = code.chars().take(16).collect();
        Err(QueryError::new(
            field,
            format!("expected a 3-letter uppercase airport code like LIS, got {shown:?}"),
        ))
    }
}

impl HotelQuery {
    /// Builds and validates a query from raw request strings.
    pub fn parse(city_or_hotel: &str, check_in: &str, check_out: &str) -> Result<Self, QueryError> {
        let query = HotelQuery {
            city_or_hotel: city_or_hotel.trim().to_string(),
            check_in: parse_date("check_in", check_in)?,
            check_out: parse_date("check_out", check_out)?,
        };
        query.validate()?;
        Ok(query)
    }

    /// Checks the place is given and bounded, check-out follows check-in, and the stay is at
    /// most [`MAX_STAY_NIGHTS`] nights.
    pub fn validate(&self) -> Result<(), QueryError> {
        let place = self.city_or_hotel.trim();
        if place.is_empty() {
            return Err(QueryError::new("city", "must name a city or hotel"));
        }
        if place.chars().count() > MAX_PLACE_QUERY_CHARS {
            return Err(QueryError::new(
                "city",
                format!("must be at most {MAX_PLACE_QUERY_CHARS} characters"),
            ));
        }
        let nights = self.nights();
        if nights < 1 {
            return Err(QueryError::new("check_out", "must be after check_in"));
        }
        if nights > MAX_STAY_NIGHTS {
            return Err(QueryError::new(
                "check_out",
                format!("stay is {nights} nights; at most {MAX_STAY_NIGHTS} are allowed"),
            ));
        }
        Ok(())
    }

    /// Number of nights (may be zero or negative on an unvalidated query).
    pub fn nights(&self) -> i64 {
        (self.check_out - self.check_in).num_days()
    }
}

impl FlightQuery {
    /// Builds and validates a query from raw request strings; an empty return date means
    /// one way.
    pub fn parse(
        from: &str,
        to: &str,
        date: &str,
        return_date: Option<&str>,
    ) -> Result<Self, QueryError> {
        let return_date = match return_date.map(str::trim) {
            None | Some("") => None,
            Some(d) => Some(parse_date("return_date", d)?),
        };
        let query = FlightQuery {
            from: from.trim().to_string(),
            to: to.trim().to_string(),
            date: parse_date("date", date)?,
            return_date,
        };
        query.validate()?;
        Ok(query)
    }

    /// Checks airport codes, that origin and destination differ, and that a return is not
    /// before the outbound flight.
    pub fn validate(&self) -> Result<(), QueryError> {
        validate_airport("from", &self.from)?;
        validate_airport("to", &self.to)?;
        if self.from == self.to {
            return Err(QueryError::new("to", "must differ from `from`"));
        }
        if let Some(ret) = self.return_date {
            if ret < self.date {
                return Err(QueryError::new("return_date", "must not be before date"));
            }
        }
        Ok(())
    }
}

/// One thing a seller offers for a query, at the seller's price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Name of the seller quoting this price.
    pub seller: String,
    /// Stable identifier of the underlying product, shared across sellers
    /// (`hotel:lisbon:h3:double`, `flight:LIS-CDG:WF101`), so offers can be merged.
    pub sku: String,
    /// Human-readable summary.
    pub title: String,
    /// Total for the whole query: all nights, or both legs.
    pub price: Money,
    /// Vertical-specific facts.
    pub details: OfferDetails,
}

impl Offer {
    /// Which vertical this offer belongs to.
    pub fn vertical(&self) -> Vertical {
        match self.details {
            OfferDetails::Hotel(_) => Vertical::Hotel,
            OfferDetails::Flight(_) => Vertical::Flight,
        }
    }
}

/// Vertical-specific part of an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "vertical", rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum OfferDetails {
    /// A room for a stay.
    Hotel(HotelDetails),
    /// One or two flight legs.
    Flight(FlightDetails),
}

/// A hotel room for a stay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HotelDetails {
    /// City the hotel is in.
    pub city: String,
    /// Hotel name.
    pub hotel: String,
    /// Room type (`single`, `double`, `suite`, ...).
    pub room: String,
    /// First night.
    pub check_in: NaiveDate,
    /// Departure day.
    pub check_out: NaiveDate,
    /// Nights priced.
    pub nights: u32,
}

/// A one-way or round-trip flight offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlightDetails {
    /// Outbound leg first, then the return leg of a round trip.
    pub legs: Vec<FlightLeg>,
}

/// One flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlightLeg {
    /// Flight number (`WF101`).
    pub flight: String,
    /// Departure airport.
    pub from: String,
    /// Arrival airport.
    pub to: String,
    /// Departure date.
    pub date: NaiveDate,
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
