//! Routes for accounts and wallets:
//!
//! - `POST /v1/accounts` opens an account;
//! - `GET /v1/accounts/{id}` reads it with its wallet;
//! - `POST /v1/accounts/{id}/wallet/credits` credits points (needs `Idempotency-Key`);
//! - `GET /v1/accounts/{id}/wallet/ledger?after=&limit=` pages through the ledger;
//! - `POST /v1/accounts/{id}/api-key` replaces the account's API key.
//!
//! Opening an account needs no credential and answers with the account's API key, once.
//! Reading, paging and key replacement take that key or the operator token; crediting
//! points takes the operator token only (see `domain::access`).

use actix_web::http::header::{CACHE_CONTROL, LOCATION};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::{authenticated, require_operator};
use super::extract::{account_id, json_body, query};
use super::problem::Problem;
use super::reply::JsonReply;
use super::router::Router;
use super::AppState;
use crate::domain::access::ApiKey;
use crate::domain::account::{Account, NewAccount};
use crate::domain::money::Money;
use crate::domain::wallet::validate_key;
use crate::domain::Invalid;

/// Registers the routes.
pub(crate) fn routes(r: &mut Router) {
    r.add(Method::POST, "/v1/accounts", web::to(create))
        .add(Method::GET, "/v1/accounts/{id}", web::to(get))
        .add(
            Method::POST,
            "/v1/accounts/{id}/wallet/credits",
            web::to(credit),
        )
        .add(
            Method::GET,
            "/v1/accounts/{id}/wallet/ledger",
            web::to(ledger),
        )
        .add(
            Method::POST,
            "/v1/accounts/{id}/api-key",
            web::to(new_api_key),
        );
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
    let (account, api_key) = state.runtime.create_customer(new).await?;
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, format!("/v1/accounts/{}", account.id)))
        .insert_header((CACHE_CONTROL, "no-store"))
        .json_line(WithKey { account, api_key }))
}

/// An account with its API key in clear: the one response that shows a key.
#[derive(Serialize)]
struct WithKey {
    #[serde(flatten)]
    account: Account,
    api_key: ApiKey,
}

async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let caller = authenticated(&req, &state)?;
    let id = account_id(&path)?;
    Ok(HttpResponse::Ok().json_line(state.runtime.account_as(caller, id).await?))
}

async fn new_api_key(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let caller = authenticated(&req, &state)?;
    let id = account_id(&path)?;
    state.runtime.authorize(caller, id).await?;
    let api_key = state.runtime.issue_api_key(id).await?;
    Ok(HttpResponse::Created()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json_line(serde_json::json!({ "account_id": id, "api_key": api_key })))
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
    require_operator(&req, &state, "crediting points")?;
    let id = account_id(&path)?;
    let key = idempotency_key(&req)?;
    let body: Credit = json_body(&req, payload, state.max_body).await?;
    let receipt = state.runtime.credit_wallet(id, &key, body.amount).await?;
    let mut res = if receipt.replayed {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    };
    Ok(res.json_line(receipt))
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
    let caller = authenticated(&req, &state)?;
    let id = account_id(&path)?;
    let query: LedgerQuery = query(&req)?;
    let page = state
        .runtime
        .ledger_as(caller, id, query.after, query.limit)
        .await?;
    Ok(HttpResponse::Ok().json_line(page))
}
