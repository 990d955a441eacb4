//! What a seller is asked and what it answers, as plain values: the search queries (with
//! their validation) and the offers. They live in the domain because the domain's search
//! rules (merging, markdown, the booking query of a SKU) are about them; the seller
//! contract (`sellers`) re-exports them.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::money::Money;

/// Longest hotel stay a single search or booking may cover.
pub const MAX_STAY_NIGHTS: i64 = 30;

/// Longest accepted hotel name or city query, in characters; longer input is refused
/// rather than truncated so a caller never silently searches for something else.
pub const MAX_PLACE_QUERY_CHARS: usize = 100;

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
    if let Some(date) = plain_date(value.trim()) {
        return Ok(date);
    }
    NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(|_| {
        let shown: String = value.chars().take(32).collect();
        QueryError::new(
            field,
            format!("expected an ISO date like 2026-05-01, got {shown:?}"),
        )
    })
}

/// A valid date written exactly `YYYY-MM-DD`, as clients send it, read without interpreting
/// a format string (every search parses two); anything else is left to the general parser.
fn plain_date(value: &str) -> Option<NaiveDate> {
    let b = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = i32::try_from(digits(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(5..7)?, digits(8..10)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The quick reading of a plain date agrees with the general parser on every input
        /// of that shape, and leaves every other input to it.
        #[test]
        fn a_plain_date_reads_as_the_general_parser_reads_it(
            value in "[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9+ -]{0,12}|[ -~]{0,12}",
        ) {
            let general = NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").ok();
            if let Some(quick) = plain_date(value.trim()) {
                proptest::prop_assert_eq!(Some(quick), general);
            }
            proptest::prop_assert_eq!(parse_date("date", &value).ok(), general);
        }
    }

    #[test]
    fn dates_are_read_or_refused_with_what_was_sent() {
        let d = |s: &str| parse_date("check_in", s);
        assert_eq!(d(" 2027-02-28 ").unwrap().to_string(), "2027-02-28");
        assert_eq!(
            d("2027-2-8").unwrap().to_string(),
            "2027-02-08",
            "general parser"
        );
        let e = d("2027-02-29").unwrap_err();
        assert_eq!(e.field, "check_in");
        assert!(e.problem.contains("\"2027-02-29\""), "{}", e.problem);
        assert!(d("2027-13-01").is_err());
    }
}
