//! Booking routes:
//!
//! - `POST /v1/bookings` (`Idempotency-Key` required) starts a booking saga: 202 with
//!   `Location`; the same key and body again returns the same booking (200), another body
//!   409;
//! - `GET /v1/bookings/{id}`: state and timed history;
//! - `POST /v1/bookings/{id}/cancel`: 202, the booking as it now stands;
//! - `GET /v1/accounts/{id}/bookings?after=&limit=` pages through an account's bookings;
//! - `POST /v1/admin/sagas/{id}/retry`: operator retry of a parked saga, with
//!   `Authorization: Bearer <admin.token>`.
//!
//! Every route but the last takes the API key of the booking's account, or the operator
//! token (see `domain::access`).

use actix_web::http::header::LOCATION;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::{Authenticated, Operator};
use super::extract::{account_id, path_id, AccountPath, IdempotencyKey, Json, Query};
use super::problem::Problem;
use super::reply::JsonReply;
use super::router::Router;
use super::AppState;
use crate::domain::money::Money;
use crate::domain::saga::{BookingId, SagaId, SagaState};
use crate::domain::Invalid;
use crate::runtime::{Booking, BookingPage};
use crate::BookingOrder;

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

/// A booking id (a UUID).
fn booking_id(raw: &str) -> Result<BookingId, Problem> {
    raw.parse()
        .map_err(|_| Invalid::new("id", "must be a booking id (a UUID)").into())
}

/// A saga id: a booking id, or `{uuid}:cancel` for a cancellation saga (admin routes).
fn saga_id(raw: &str) -> Result<SagaId, Problem> {
    raw.parse()
        .map_err(|_| Invalid::new("id", "must be a booking id (a UUID), or {uuid}:cancel").into())
}

/// Query of the account bookings route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct BookingsQuery {
    /// The previous page's `next_after`.
    after: Option<String>,
    /// Bookings per page, 1..=`accounts.max_page_size` (default 50).
    #[serde(default = "default_page")]
    limit: usize,
}

fn default_page() -> usize {
    50
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
            body = Booking,
            headers(("Location" = String, description = "URL of the booking")),
        ),
        (status = 200, description = "The booking made earlier with this key", body = Booking),
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
    let (booking, replayed) = state.runtime.book_as(caller, order).await?;
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
    params(("id" = uuid::Uuid, Path, description = "Booking id")),
    security(("apiKey" = []), ("operatorToken" = [])),
    responses((status = 200, description = "The booking", body = Booking)),
)]
async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, Problem> {
    let id = booking_id(&path_id(&req))?;
    Ok(HttpResponse::Ok().json_line(state.runtime.booking_as(caller, id).await?))
}

/// Cancel a booking.
#[utoipa::path(
    post,
    path = "/v1/bookings/{id}/cancel",
    tag = "bookings",
    operation_id = "cancelBooking",
    params(("id" = uuid::Uuid, Path, description = "Booking id")),
    security(("apiKey" = []), ("operatorToken" = [])),
    responses((status = 202, description = "The booking as it now stands", body = Booking)),
)]
async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, Problem> {
    let id = booking_id(&path_id(&req))?;
    let booking = state.runtime.cancel_booking_as(caller, id).await?;
    Ok(HttpResponse::Accepted().json_line(booking))
}

/// An account's bookings.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/bookings",
    tag = "bookings",
    operation_id = "accountBookings",
    params(("id" = uuid::Uuid, Path, description = "Account id"), BookingsQuery),
    security(("apiKey" = []), ("operatorToken" = [])),
    responses((
        status = 200,
        description = "One page: `bookings` (oldest first) and `next_after` (null on the last page)",
        body = BookingPage,
    )),
)]
async fn of_account(
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    AccountPath(id): AccountPath,
    Query(q): Query<BookingsQuery>,
) -> Result<HttpResponse, Problem> {
    let after =
        match q.after {
            Some(after) => Some(after.parse().map_err(|_| {
                Problem::from(Invalid::new("after", "must be a booking id (a UUID)"))
            })?),
            None => None,
        };
    let page = state
        .runtime
        .account_bookings_as(caller, id, after, q.limit)
        .await?;
    Ok(HttpResponse::Ok().json_line(page))
}

/// Reply of the saga retry route.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RetriedSaga {
    /// The saga: a booking id, or `{uuid}:cancel`.
    id: String,
    /// Its state after the retry.
    state: SagaState,
}

/// Retry a parked saga (operator only).
#[utoipa::path(
    post,
    path = "/v1/admin/sagas/{id}/retry",
    tag = "operator",
    operation_id = "retrySaga",
    params(("id" = String, Path, description = "Booking id, or `{uuid}:cancel` for a cancellation")),
    security(("operatorToken" = [])),
    responses((status = 202, description = "`id` and the saga's new `state`", body = RetriedSaga)),
)]
async fn retry(
    req: HttpRequest,
    state: web::Data<AppState>,
    _: Operator,
) -> Result<HttpResponse, Problem> {
    let id = saga_id(&path_id(&req))?;
    let record = state.runtime.retry_saga(id).await?;
    Ok(HttpResponse::Accepted().json_line(RetriedSaga {
        id: record.saga_id.to_string(),
        state: record.state,
    }))
}
