//! Search routes:
//!
//! - `GET /v1/search/hotels?city=&check_in=&check_out=&account_id=` (`hotel=` instead of
//!   `city=` searches by hotel name);
//! - `GET /v1/search/flights?from=&to=&date=&return_date=&account_id=`.
//!
//! Dates are ISO `YYYY-MM-DD`. An unknown city is an empty result, not an error; an unknown
//! `account_id` is a 404.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::extract::{account_id, query};
use super::problem::Problem;
use super::AppState;
use crate::domain::account::AccountId;
use crate::domain::Invalid;
use crate::sellers::{FlightQuery, HotelQuery};

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/search/hotels", web::get().to(hotels))
        .route("/v1/search/flights", web::get().to(flights));
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

fn account(raw: Option<&str>) -> Result<Option<AccountId>, Problem> {
    raw.map(|raw| {
        account_id(raw).map_err(|p| Problem {
            field: Some("account_id".into()),
            ..p
        })
    })
    .transpose()
}

fn invalid(e: crate::sellers::QueryError) -> Problem {
    Invalid::new(e.field, e.problem).into()
}

async fn hotels(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let p: HotelParams = query(&req)?;
    let place = match (&p.city, &p.hotel) {
        (Some(city), None) => city,
        (None, Some(hotel)) => hotel,
        _ => return Err(Invalid::new("city", "give exactly one of city or hotel").into()),
    };
    let q = HotelQuery::parse(place, &p.check_in, &p.check_out).map_err(invalid)?;
    let account = account(p.account_id.as_deref())?;
    Ok(HttpResponse::Ok().json(state.runtime.search_hotels(q, account).await?))
}

async fn flights(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let p: FlightParams = query(&req)?;
    let q =
        FlightQuery::parse(&p.from, &p.to, &p.date, p.return_date.as_deref()).map_err(invalid)?;
    let account = account(p.account_id.as_deref())?;
    Ok(HttpResponse::Ok().json(state.runtime.search_flights(q, account).await?))
}
