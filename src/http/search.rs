//! Search routes:
//!
//! - `GET /v1/search/hotels?city=&check_in=&check_out=&account_id=` (`hotel=` instead of
//!   `city=` searches by hotel name);
//! - `GET /v1/search/flights?from=&to=&date=&return_date=&account_id=`.
//!
//! Dates are ISO `YYYY-MM-DD`. An unknown city is an empty result, not an error; an unknown
//! `account_id` is a 404. Searching needs no credential; naming an `account_id` (for its
//! wallet markdown) takes that account's API key or the operator token.

use std::borrow::Cow;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::Authenticated;
use super::extract::{account_id, parse_query, query_fields};
use super::problem::Problem;
use super::router::Router;
use super::AppState;
use crate::domain::account::AccountId;
use crate::domain::Invalid;
use crate::runtime::SearchResponse;
use crate::sellers::{FlightQuery, HotelQuery};

/// Registers the routes.
pub(crate) fn routes(r: &mut Router) {
    r.add::<__path_hotels>(web::to(hotels))
        .add::<__path_flights>(web::to(flights));
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HotelParams {
    /// City to search (give this or `hotel`).
    city: Option<String>,
    /// Hotel name to search (give this or `city`).
    hotel: Option<String>,
    /// `YYYY-MM-DD`.
    check_in: String,
    /// `YYYY-MM-DD`, after `check_in`.
    check_out: String,
    /// Prices marked down by this account's wallet (needs its key or the operator token).
    account_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FlightParams {
    /// IATA airport code.
    from: String,
    /// IATA airport code.
    to: String,
    /// `YYYY-MM-DD`.
    date: String,
    /// `YYYY-MM-DD`, for a round trip.
    return_date: Option<String>,
    /// Prices marked down by this account's wallet (needs its key or the operator token).
    account_id: Option<String>,
}

/// [`HotelParams`] as the handler reads them: borrowed from the query string on the usual
/// path (no allocation, no serde), or from the general parser, which words every refusal.
#[derive(Debug, PartialEq)]
struct HotelArgs<'q> {
    city: Option<Cow<'q, str>>,
    hotel: Option<Cow<'q, str>>,
    check_in: Cow<'q, str>,
    check_out: Cow<'q, str>,
    account_id: Option<Cow<'q, str>>,
}

impl<'q> HotelArgs<'q> {
    fn parse(query: &'q str) -> Result<Self, Problem> {
        let names = ["city", "hotel", "check_in", "check_out", "account_id"];
        if let Some([city, hotel, Some(check_in), Some(check_out), account_id]) =
            query_fields(query, names)
        {
            return Ok(HotelArgs {
                city,
                hotel,
                check_in,
                check_out,
                account_id,
            });
        }
        let p: HotelParams = parse_query(query)?;
        Ok(HotelArgs {
            city: p.city.map(Cow::Owned),
            hotel: p.hotel.map(Cow::Owned),
            check_in: Cow::Owned(p.check_in),
            check_out: Cow::Owned(p.check_out),
            account_id: p.account_id.map(Cow::Owned),
        })
    }
}

/// [`FlightParams`] as the handler reads them, like [`HotelArgs`].
#[derive(Debug, PartialEq)]
struct FlightArgs<'q> {
    from: Cow<'q, str>,
    to: Cow<'q, str>,
    date: Cow<'q, str>,
    return_date: Option<Cow<'q, str>>,
    account_id: Option<Cow<'q, str>>,
}

impl<'q> FlightArgs<'q> {
    fn parse(query: &'q str) -> Result<Self, Problem> {
        let names = ["from", "to", "date", "return_date", "account_id"];
        if let Some([Some(from), Some(to), Some(date), return_date, account_id]) =
            query_fields(query, names)
        {
            return Ok(FlightArgs {
                from,
                to,
                date,
                return_date,
                account_id,
            });
        }
        let p: FlightParams = parse_query(query)?;
        Ok(FlightArgs {
            from: Cow::Owned(p.from),
            to: Cow::Owned(p.to),
            date: Cow::Owned(p.date),
            return_date: p.return_date.map(Cow::Owned),
            account_id: p.account_id.map(Cow::Owned),
        })
    }
}

/// The account whose wallet marks prices down, if any: its balance is the account's own
/// business, so naming one takes that account's API key (or the operator token).
async fn personal(
    state: &AppState,
    caller: Result<Authenticated, Problem>,
    raw: Option<&str>,
) -> Result<Option<AccountId>, Problem> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let id = account_id(raw).map_err(|p| Problem {
        field: Some("account_id".into()),
        ..p
    })?;
    let Authenticated(caller) = caller?;
    state.runtime.authorize(caller, id).await?;
    Ok(Some(id))
}

/// A reply whose JSON the runtime wrote already.
fn json_body(body: actix_web::web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::HeaderValue::from_static("application/json"),
        ))
        .body(body)
}

fn invalid(e: crate::sellers::QueryError) -> Problem {
    Invalid::new(e.field, e.problem).into()
}

/// Search hotels across sellers.
#[utoipa::path(
    get,
    path = "/v1/search/hotels",
    tag = "search",
    operation_id = "searchHotels",
    params(HotelParams),
    security((), ("apiKey" = []), ("operatorToken" = [])),
    responses((status = 200, description = "Offers and per-seller outcomes", body = SearchResponse)),
)]
async fn hotels(
    state: web::Data<AppState>,
    caller: Result<Authenticated, Problem>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let p = HotelArgs::parse(req.query_string())?;
    let place = match (&p.city, &p.hotel) {
        (Some(city), None) => city,
        (None, Some(hotel)) => hotel,
        _ => return Err(Invalid::new("city", "give exactly one of city or hotel").into()),
    };
    let q = HotelQuery::parse(place, &p.check_in, &p.check_out).map_err(invalid)?;
    let account = personal(&state, caller, p.account_id.as_deref()).await?;
    let body = state.runtime.search_hotels_json(q, account).await?;
    Ok(json_body(body))
}

/// Search flights across sellers.
#[utoipa::path(
    get,
    path = "/v1/search/flights",
    tag = "search",
    operation_id = "searchFlights",
    params(FlightParams),
    security((), ("apiKey" = []), ("operatorToken" = [])),
    responses((status = 200, description = "Offers and per-seller outcomes", body = SearchResponse)),
)]
async fn flights(
    state: web::Data<AppState>,
    caller: Result<Authenticated, Problem>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let p = FlightArgs::parse(req.query_string())?;
    let q =
        FlightQuery::parse(&p.from, &p.to, &p.date, p.return_date.as_deref()).map_err(invalid)?;
    let account = personal(&state, caller, p.account_id.as_deref()).await?;
    let body = state.runtime.search_flights_json(q, account).await?;
    Ok(json_body(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Query strings made of the routes' parameters, near misses of them (unknown,
    /// encoded, repeated, without `=`) and values that need decoding.
    fn query() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("city"),
            Just("hotel"),
            Just("check_in"),
            Just("check_out"),
            Just("account_id"),
            Just("from"),
            Just("to"),
            Just("date"),
            Just("return_date"),
            Just("ci%74y"),
            Just("CITY"),
            Just("x"),
            Just(""),
        ];
        let value = prop_oneof![
            Just(""),
            Just("=Lisbon"),
            Just("=S%C3%A3o+Paulo"),
            Just("=%zz"),
            Just("=2027-01-01"),
            Just("=a=b"),
            Just("=%FF"),
        ];
        proptest::collection::vec((name, value), 0..7).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(n, v)| format!("{n}{v}"))
                .collect::<Vec<_>>()
                .join("&")
        })
    }

    fn same_refusal(a: &Problem, b: &Problem) -> bool {
        (a.status, &a.kind, &a.detail, &a.field) == (b.status, &b.kind, &b.detail, &b.field)
    }

    proptest! {
        /// The borrowed parse reads every query exactly as the general parser does:
        /// the same values, or the same refusal naming the same parameter.
        #[test]
        fn the_quick_parse_reads_what_the_general_parser_reads(q in query()) {
            match (HotelArgs::parse(&q), parse_query::<HotelParams>(&q)) {
                (Ok(a), Ok(p)) => {
                    prop_assert_eq!(a.city.as_deref(), p.city.as_deref());
                    prop_assert_eq!(a.hotel.as_deref(), p.hotel.as_deref());
                    prop_assert_eq!(&*a.check_in, &p.check_in);
                    prop_assert_eq!(&*a.check_out, &p.check_out);
                    prop_assert_eq!(a.account_id.as_deref(), p.account_id.as_deref());
                }
                (Err(a), Err(b)) => prop_assert!(same_refusal(&a, &b), "{a:?} vs {b:?}"),
                (a, b) => prop_assert!(false, "{q:?}: {a:?} vs {b:?}"),
            }
            match (FlightArgs::parse(&q), parse_query::<FlightParams>(&q)) {
                (Ok(a), Ok(p)) => {
                    prop_assert_eq!(&*a.from, &p.from);
                    prop_assert_eq!(&*a.to, &p.to);
                    prop_assert_eq!(&*a.date, &p.date);
                    prop_assert_eq!(a.return_date.as_deref(), p.return_date.as_deref());
                    prop_assert_eq!(a.account_id.as_deref(), p.account_id.as_deref());
                }
                (Err(a), Err(b)) => prop_assert!(same_refusal(&a, &b), "{a:?} vs {b:?}"),
                (a, b) => prop_assert!(false, "{q:?}: {a:?} vs {b:?}"),
            }
        }
    }

    #[test]
    fn refusals_name_the_parameter() {
        let field = |q: &str| HotelArgs::parse(q).unwrap_err().field;
        let dates = "check_in=2027-01-01&check_out=2027-01-03";
        assert_eq!(field(&format!("city=a&{dates}&x=1")).as_deref(), Some("x"));
        assert_eq!(
            field("city=a&check_in=2027-01-01").as_deref(),
            Some("check_out")
        );
        assert_eq!(
            field(&format!("city=a&city=b&{dates}")).as_deref(),
            Some("city")
        );
        let encoded = format!("city=S%C3%A3o+Paulo&{dates}");
        let ok = HotelArgs::parse(&encoded).unwrap();
        assert_eq!(ok.city.as_deref(), Some("São Paulo"));
        let plain = format!("city=Lisbon&{dates}");
        let plain = HotelArgs::parse(&plain).unwrap();
        assert!(
            matches!(plain.city, Some(Cow::Borrowed("Lisbon"))),
            "borrowed, not copied"
        );
    }
}
