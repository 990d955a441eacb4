//! Search routes:
//!
//! - `GET /v1/search/hotels?city=&check_in=&check_out=&account_id=` (`hotel=` instead of
//!   `city=` searches by hotel name);
//! - `GET /v1/search/flights?from=&to=&date=&return_date=&account_id=`.
//!
//! Dates are ISO `YYYY-MM-DD`. An unknown city is an empty result, not an error; an unknown
//! `account_id` is a 404. Searching needs no credential; naming an `account_id` (for its
//! wallet markdown) takes that account's API key or the operator token.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::auth::Authenticated;
use super::extract::{account_id, Query};
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
    Query(p): Query<HotelParams>,
) -> Result<HttpResponse, Problem> {
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
    Query(p): Query<FlightParams>,
) -> Result<HttpResponse, Problem> {
    let q =
        FlightQuery::parse(&p.from, &p.to, &p.date, p.return_date.as_deref()).map_err(invalid)?;
    let account = personal(&state, caller, p.account_id.as_deref()).await?;
    let body = state.runtime.search_flights_json(q, account).await?;
    Ok(json_body(body))
}
