//! Routes for accounts and wallets:
//!
//! - `POST /v1/accounts` opens an account;
//! - `GET /v1/accounts/{id}` reads it with its wallet;
//! - `POST /v1/accounts/{id}/wallet/credits` credits points (needs `Idempotency-Key`);
//! - `GET /v1/accounts/{id}/wallet/ledger?after=&limit=` pages through the ledger.

use actix_web::http::header::LOCATION;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::extract::{account_id, json_body, query};
use super::problem::Problem;
use super::AppState;
use crate::domain::account::NewAccount;
use crate::domain::money::Money;
use crate::domain::wallet::validate_key;
use crate::domain::Invalid;

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/accounts", web::post().to(create))
        .route("/v1/accounts/{id}", web::get().to(get))
        .route("/v1/accounts/{id}/wallet/credits", web::post().to(credit))
        .route("/v1/accounts/{id}/wallet/ledger", web::get().to(ledger));
}

/// Body of `POST /v1/accounts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    name: String,
    email: String,
}

async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let body: CreateAccount = json_body(&req, payload, state.max_body).await?;
    let new = NewAccount::new(&body.name, &body.email)?;
    let account = state.runtime.create_account(new).await?;
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, format!("/v1/accounts/{}", account.id)))
        .json(account))
}

async fn get(path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let id = account_id(&path)?;
    Ok(HttpResponse::Ok().json(state.runtime.account(id).await?))
}

/// Body of `POST /v1/accounts/{id}/wallet/credits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credit {
    amount: Money,
}

/// The `Idempotency-Key` header, required and validated.
pub(crate) fn idempotency_key(req: &HttpRequest) -> Result<String, Problem> {
    let key = req
        .headers()
        .get("Idempotency-Key")
        .ok_or_else(|| Invalid::new("Idempotency-Key", "this header is required"))?
        .to_str()
        .map_err(|_| Invalid::new("Idempotency-Key", "must be printable ASCII"))?;
    validate_key("Idempotency-Key", key)?;
    Ok(key.to_owned())
}

async fn credit(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let id = account_id(&path)?;
    let key = idempotency_key(&req)?;
    let body: Credit = json_body(&req, payload, state.max_body).await?;
    let receipt = state.runtime.credit_wallet(id, &key, body.amount).await?;
    let mut res = if receipt.replayed {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    };
    Ok(res.json(receipt))
}

/// Query of the ledger route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_page")]
    limit: usize,
}

fn default_page() -> usize {
    50
}

async fn ledger(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let id = account_id(&path)?;
    let query: LedgerQuery = query(&req)?;
    let page = state.runtime.ledger(id, query.after, query.limit).await?;
    Ok(HttpResponse::Ok().json(page))
}
