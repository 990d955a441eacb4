//! Booking routes:
//!
//! - `POST /v1/bookings` (`Idempotency-Key` required) starts a booking saga: 202 with
//!   `Location`; the same key and body again returns the same booking (200), another body
//!   409;
//! - `GET /v1/bookings/{id}`: state and timed history;
//! - `POST /v1/bookings/{id}/cancel`: 202, the booking as it now stands;
//! - `GET /v1/accounts/{id}/bookings`;
//! - `POST /v1/admin/sagas/{id}/retry`: operator retry of a parked saga, with
//!   `Authorization: Bearer <admin.token>`.
//!
//! Every route but the last takes the API key of the booking's account, or the operator
//! token (see `domain::access`).

use actix_web::http::header::LOCATION;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{Authenticated, Operator};
use super::extract::{account_id, path_id, AccountPath, IdempotencyKey, Json};
use super::problem::Problem;
use super::reply::JsonReply;
use super::router::Router;
use super::AppState;
use crate::domain::access::Caller;
use crate::domain::money::Money;
use crate::domain::Invalid;
use crate::error::Error;
use crate::{Booking, BookingOrder};

/// Registers the routes.
pub(crate) fn routes(r: &mut Router) {
    r.add::<__path_create>(web::to(create))
        .add::<__path_get>(web::to(get))
        .add::<__path_cancel>(web::to(cancel))
        .add::<__path_of_account>(web::to(of_account))
        .add::<__path_retry>(web::to(retry));
}

/// Body of `POST /v1/bookings`: an offer from a search.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBooking {
    #[schema(format = "uuid")]
    account_id: String,
    seller: String,
    sku: String,
    start: chrono::NaiveDate,
    end: chrono::NaiveDate,
    offer_price: Money,
    /// Points to use; zero when absent.
    wallet_points: Option<Money>,
    /// The payment card's token; empty when the wallet pays it all.
    #[serde(default)]
    card_token: String,
}

/// A booking id: a UUID, or `{uuid}:cancel` for a cancellation saga (admin routes).
fn saga_id(raw: &str, allow_cancel: bool) -> Result<String, Problem> {
    let base = match raw.strip_suffix(":cancel") {
        Some(base) if allow_cancel => base,
        _ => raw,
    };
    uuid::Uuid::try_parse(base)
        .map(|_| raw.to_owned())
        .map_err(|_| Invalid::new("id", "must be a booking id (a UUID)").into())
}

/// Book an offer from a search: starts a booking saga. The same `Idempotency-Key` and
/// body again returns the same booking (200); another body is a 409.
#[utoipa::path(
    post,
    path = "/v1/bookings",
    tag = "bookings",
    operation_id = "createBooking",
    params(("Idempotency-Key" = String, Header, description = "Names this booking for replays")),
    security(("apiKey" = []), ("operatorToken" = [])),
    request_body = CreateBooking,
    responses(
        (
            status = 202,
            description = "The booking, as its saga starts",
            body = Object,
            headers(("Location" = String, description = "URL of the booking")),
        ),
        (status = 200, description = "The booking made earlier with this key", body = Object),
    ),
)]
async fn create(
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    IdempotencyKey(key): IdempotencyKey,
    Json(body): Json<CreateBooking>,
) -> Result<HttpResponse, Problem> {
    let account = account_id(&body.account_id).map_err(|p| Problem {
        field: Some("account_id".into()),
        ..p
    })?;
    state.runtime.authorize(caller, account).await?;
    let currency = state.runtime.config().accounts.currency;
    let order = BookingOrder {
        account_id: account,
        seller: body.seller,
        sku: body.sku,
        start: body.start,
        end: body.end,
        offer_price: body.offer_price,
        wallet_points: body.wallet_points.unwrap_or(Money::zero(currency)),
        card_token: body.card_token,
        idempotency_key: key,
    };
    let (booking, replayed) = state.runtime.book(order).await?;
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(HttpResponse::build(status)
        .insert_header((LOCATION, format!("/v1/bookings/{}", booking.id)))
        .json_line(booking))
}

/// A booking's state and timed history.
#[utoipa::path(
    get,
    path = "/v1/bookings/{id}",
    tag = "bookings",
    operation_id = "getBooking",
    params(("id" = String, Path, description = "Booking id (a UUID)")),
    security(("apiKey" = []), ("operatorToken" = [])),
    responses((status = 200, description = "The booking", body = Object)),
)]
async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, Problem> {
    let id = saga_id(&path_id(&req), false)?;
    let booking = state.runtime.booking(&id).await?;
    authorize_booking(&state, caller, &booking).await?;
    Ok(HttpResponse::Ok().json_line(booking))
}

/// Cancel a booking.
#[utoipa::path(
    post,
    path = "/v1/bookings/{id}/cancel",
    tag = "bookings",
    operation_id = "cancelBooking",
    params(("id" = String, Path, description = "Booking id (a UUID)")),
    security(("apiKey" = []), ("operatorToken" = [])),
    responses((status = 202, description = "The booking as it now stands", body = Object)),
)]
async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, Problem> {
    let id = saga_id(&path_id(&req), false)?;
    let booking = state.runtime.booking(&id).await?;
    authorize_booking(&state, caller, &booking).await?;
    Ok(HttpResponse::Accepted().json_line(state.runtime.cancel_booking(&id).await?))
}

/// An account's bookings.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/bookings",
    tag = "bookings",
    operation_id = "accountBookings",
    params(("id" = String, Path, description = "Account id")),
    security(("apiKey" = []), ("operatorToken" = [])),
    responses((status = 200, description = "The account's bookings", body = Object)),
)]
async fn of_account(
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    AccountPath(id): AccountPath,
) -> Result<HttpResponse, Problem> {
    state.runtime.authorize(caller, id).await?;
    Ok(HttpResponse::Ok().json_line(state.runtime.account_bookings(id).await?))
}

/// A booking is its account's: only that account's key (or the operator) may see or
/// cancel it.
async fn authorize_booking(
    state: &AppState,
    caller: Caller,
    booking: &Booking,
) -> Result<(), Problem> {
    let account = booking
        .account_id
        .parse()
        .map_err(|_| Problem::from(Error::Forbidden("booking has no valid account".into())))?;
    Ok(state.runtime.authorize(caller, account).await?)
}

/// Retry a parked saga (operator only).
#[utoipa::path(
    post,
    path = "/v1/admin/sagas/{id}/retry",
    tag = "operator",
    operation_id = "retrySaga",
    params(("id" = String, Path, description = "Booking id, or `{uuid}:cancel` for a cancellation")),
    security(("operatorToken" = [])),
    responses((status = 202, description = "`id` and the saga's new `state`", body = Object)),
)]
async fn retry(
    req: HttpRequest,
    state: web::Data<AppState>,
    _: Operator,
) -> Result<HttpResponse, Problem> {
    let id = saga_id(&path_id(&req), true)?;
    let record = state.runtime.retry_saga(&id).await?;
    Ok(HttpResponse::Accepted().json_line(serde_json::json!({
        "id": record.saga_id,
        "state": record.state,
    })))
}
