//! Search routes:
//!
//! - `GET /v1/search/hotels?city=&check_in=&check_out=&account_id=` (`hotel=` instead of
//!   `city=` searches by hotel name);
//! - `GET /v1/search/flights?from=&to=&date=&return_date=&account_id=`.
//!
//! Dates are ISO `YYYY-MM-DD`. An unknown city is an empty result, not an error; an unknown
//! `account_id` is a 404. Searching needs no credential; naming an `account_id` (for its
//! wallet markdown) takes that account's API key or the operator token.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::auth::Authenticated;
use super::extract::{account_id, Query};
use super::problem::Problem;
use super::reply::JsonReply;
use super::router::Router;
use super::AppState;
use crate::domain::account::AccountId;
use crate::domain::Invalid;
use crate::sellers::{FlightQuery, HotelQuery};

/// Registers the routes.
pub(crate) fn routes(r: &mut Router) {
    r.add(Method::GET, "/v1/search/hotels", web::to(hotels))
        .add(Method::GET, "/v1/search/flights", web::to(flights));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HotelParams {
    city: Option<String>,
    hotel: Option<String>,
    check_in: String,
    check_out: String,
    account_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlightParams {
    from: String,
    to: String,
    date: String,
    return_date: Option<String>,
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

fn invalid(e: crate::sellers::QueryError) -> Problem {
    Invalid::new(e.field, e.problem).into()
}

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
    Ok(HttpResponse::Ok().json_line(state.runtime.search_hotels(q, account).await?))
}

async fn flights(
    state: web::Data<AppState>,
    caller: Result<Authenticated, Problem>,
    Query(p): Query<FlightParams>,
) -> Result<HttpResponse, Problem> {
    let q =
        FlightQuery::parse(&p.from, &p.to, &p.date, p.return_date.as_deref()).map_err(invalid)?;
    let account = personal(&state, caller, p.account_id.as_deref()).await?;
    Ok(HttpResponse::Ok().json_line(state.runtime.search_flights(q, account).await?))
}
