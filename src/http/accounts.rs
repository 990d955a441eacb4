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
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::{Authenticated, Operator};
use super::extract::{AccountPath, IdempotencyKey, Json, Query};
use super::problem::Problem;
use super::reply::JsonReply;
use super::router::Router;
use super::AppState;
use crate::domain::access::ApiKey;
use crate::domain::account::{Account, NewAccount};
use crate::domain::money::Money;

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
    state: web::Data<AppState>,
    Json(body): Json<CreateAccount>,
) -> Result<HttpResponse, Problem> {
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
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    AccountPath(id): AccountPath,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json_line(state.runtime.account_as(caller, id).await?))
}

async fn new_api_key(
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    AccountPath(id): AccountPath,
) -> Result<HttpResponse, Problem> {
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

async fn credit(
    state: web::Data<AppState>,
    _: Operator,
    AccountPath(id): AccountPath,
    IdempotencyKey(key): IdempotencyKey,
    Json(body): Json<Credit>,
) -> Result<HttpResponse, Problem> {
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
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    AccountPath(id): AccountPath,
    Query(query): Query<LedgerQuery>,
) -> Result<HttpResponse, Problem> {
    let page = state
        .runtime
        .ledger_as(caller, id, query.after, query.limit)
        .await?;
    Ok(HttpResponse::Ok().json_line(page))
}
