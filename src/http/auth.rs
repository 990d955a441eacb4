//! Who is calling, as extractors: the `Authorization: Bearer ...` header turned into a
//! [`Caller`] (anyone), an [`Authenticated`] caller (401 without a credential) or the
//! [`Operator`]. The rules themselves live in `domain::access`; this file only reads the
//! header and the configured token.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{FromRequest, HttpMessage, HttpRequest};

use super::extract::state;
use super::problem::Problem;
use super::AppState;
use crate::domain::access::Caller;
use crate::domain::Invalid;
use crate::error::Error;

/// The caller named by the request's credential (none: [`Caller::Anonymous`]). A clear key
/// goes no further than this function: actors (and the rate limits) see only its digest.
/// Worked out once per request (the rate limits ask before the handler's extractor does):
/// the answer is kept in the request's extensions.
pub(super) fn caller(req: &HttpRequest, state: &AppState) -> Result<Caller, Problem> {
    if let Some(known) = req.extensions().get::<Caller>() {
        return Ok(*known);
    }
    let caller = identify(req, state)?;
    req.extensions_mut().insert(caller);
    Ok(caller)
}

fn identify(req: &HttpRequest, state: &AppState) -> Result<Caller, Problem> {
    // Two credentials are one too many: which one counts would be up to whichever proxy
    // or library reads the request, so none does.
    if req
        .headers()
        .get_all(header::AUTHORIZATION)
        .nth(1)
        .is_some()
    {
        return Err(Problem::invalid(Invalid::new(
            "Authorization",
            "must be sent once; this request has several",
        )));
    }
    let header = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            Problem::from(Error::Unauthenticated(
                "Authorization must be printable ASCII".into(),
            ))
        })?),
    };
    let operator = state.runtime.config().admin.token.as_ref();
    Caller::from_authorization(header, operator.map(|t| t.expose()))
        .map_err(|e| Problem::from(Error::from(e)))
}

impl FromRequest for Caller {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(state(req).and_then(|state| caller(req, state)))
    }
}

/// A caller with a credential: a request without one is refused with 401 before anything
/// is looked up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authenticated(pub Caller);

impl FromRequest for Authenticated {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            state(req)
                .and_then(|state| caller(req, state))
                .and_then(|caller| match caller {
                    Caller::Anonymous => Err(Problem::from(Error::Unauthenticated(
                        "send Authorization: Bearer <API key> (or the operator token)".into(),
                    ))),
                    known => Ok(Authenticated(known)),
                }),
        )
    }
}

/// The operator: the request carries the configured operator token (compared in constant
/// time). The refusal names the route (`POST /v1/admin/sagas/{id}/retry needs the
/// operator token`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operator;

impl FromRequest for Operator {
    type Error = Problem;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let what = format!(
            "{} {}",
            req.method(),
            req.match_pattern().unwrap_or_else(|| req.path().to_owned())
        );
        let req = req.clone();
        Box::pin(async move { operator(&req, &what).await })
    }
}

/// Refuses unless the request is the operator's. With no token configured, operator
/// routes are closed, not open.
async fn operator(req: &HttpRequest, what: &str) -> Result<Operator, Problem> {
    let state = state(req)?;
    if state.runtime.config().admin.token.is_none() {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "operator endpoints are disabled: no admin.token is configured",
        ));
    }
    let caller = caller(req, state)?;
    state
        .runtime
        .require_operator(caller, what)
        .await
        .map(|()| Operator)
        .map_err(Problem::from)
}
