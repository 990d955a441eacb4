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
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::{Authenticated, Operator};
use super::extract::{AccountPath, IdempotencyKey, Json, Query};
use super::problem::Problem;
use super::reply::JsonReply;
use super::router::Router;
use super::AppState;
use crate::domain::access::ApiKey;
use crate::domain::account::{Account, AccountId, NewAccount};
use crate::domain::money::Money;
use crate::domain::wallet::{LedgerPage, WalletReceipt};

/// Registers the routes.
pub(crate) fn routes(r: &mut Router) {
    r.add::<__path_create>(web::to(create))
        .add::<__path_get>(web::to(get))
        .add::<__path_credit>(web::to(credit))
        .add::<__path_ledger>(web::to(ledger))
        .add::<__path_new_api_key>(web::to(new_api_key));
}

/// Body of `POST /v1/accounts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAccount {
    /// 1..=100 characters after trimming, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// An address like name@example.com: one @, a dot in the domain, no spaces.
    #[schema(
        format = "email",
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s.\x00-\x1f\x7f-\x9f][^@\s\x00-\x1f\x7f-\x9f]*\.[^@\s\x00-\x1f\x7f-\x9f]*[^@\s.\x00-\x1f\x7f-\x9f]$"
    )]
    email: String,
}

/// Open an account. Needs no credential; the answer carries the account's API key, in
/// clear, this once: the server stores only its digest.
#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    operation_id = "createAccount",
    security(()),
    request_body = CreateAccount,
    responses((
        status = 201,
        description = "The account, with its empty wallet and its API key (`api_key`)",
        body = WithKey,
        headers(("Location" = String, description = "URL of the account")),
    )),
)]
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
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct WithKey {
    #[serde(flatten)]
    account: Account,
    /// The API key (`wf_...`), shown this once.
    #[schema(value_type = String, example = "wf_0123...")]
    api_key: ApiKey,
}

/// Reply of `POST /v1/accounts/{id}/api-key`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct NewApiKey {
    /// The account.
    #[schema(value_type = String, format = Uuid)]
    account_id: AccountId,
    /// The new API key (`wf_...`), shown this once.
    #[schema(value_type = String, example = "wf_0123...")]
    api_key: ApiKey,
}

/// Read an account with its wallet.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}",
    tag = "accounts",
    operation_id = "getAccount",
    params(("id" = uuid::Uuid, Path, description = "Account id")),
    security(("apiKey" = []), ("operatorToken" = [])),
    responses((status = 200, description = "The account and its wallet", body = Account)),
)]
async fn get(
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    AccountPath(id): AccountPath,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json_line(state.runtime.account_as(caller, id).await?))
}

/// Replace the account's API key; the old one stops working.
#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/api-key",
    tag = "accounts",
    operation_id = "newApiKey",
    params(("id" = uuid::Uuid, Path, description = "Account id")),
    security(("apiKey" = []), ("operatorToken" = [])),
    responses((status = 201, description = "`account_id` and the new `api_key`", body = NewApiKey)),
)]
async fn new_api_key(
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    AccountPath(id): AccountPath,
) -> Result<HttpResponse, Problem> {
    state.runtime.authorize(caller, id).await?;
    let api_key = state.runtime.issue_api_key(id).await?;
    Ok(HttpResponse::Created()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json_line(NewApiKey {
            account_id: id,
            api_key,
        }))
}

/// Body of `POST /v1/accounts/{id}/wallet/credits`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Credit {
    /// 1..=10^12 minor units, in the wallet currency.
    amount: Money,
}

/// Credit points to the wallet (operator only). The same `Idempotency-Key` and body
/// again replays the first credit (200); another body is a 409.
#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/wallet/credits",
    tag = "accounts",
    operation_id = "creditWallet",
    params(
        ("id" = uuid::Uuid, Path, description = "Account id"),
        ("Idempotency-Key" = String, Header, description = "Names this credit for replays"),
    ),
    security(("operatorToken" = [])),
    request_body = Credit,
    responses(
        (status = 201, description = "The credit receipt", body = WalletReceipt),
        (status = 200, description = "The receipt of the earlier credit with this key", body = WalletReceipt),
    ),
)]
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
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LedgerQuery {
    /// Entries after this sequence number.
    #[serde(default)]
    after: u64,
    /// Page size.
    #[serde(default = "default_page")]
    limit: usize,
}

fn default_page() -> usize {
    50
}

/// Page through the wallet's ledger.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/wallet/ledger",
    tag = "accounts",
    operation_id = "walletLedger",
    params(("id" = uuid::Uuid, Path, description = "Account id"), LedgerQuery),
    security(("apiKey" = []), ("operatorToken" = [])),
    responses((status = 200, description = "`entries` and `next_after`", body = LedgerPage)),
)]
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
