//! Who is calling: the `Authorization: Bearer ...` header turned into a [`Caller`], and the
//! gate of operator routes. The rules themselves live in `domain::access`.

use actix_web::http::{header, StatusCode};
use actix_web::HttpRequest;

use super::problem::Problem;
use super::AppState;
use crate::domain::access::Caller;
use crate::error::Error;

/// The caller named by the request's credential (none: [`Caller::Anonymous`]). A clear key
/// goes no further than this function: actors see only its digest.
pub(crate) fn caller(req: &HttpRequest, state: &AppState) -> Result<Caller, Problem> {
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

/// Like [`caller`], but a request without a credential is refused with 401 before
/// anything is looked up.
pub(crate) fn authenticated(req: &HttpRequest, state: &AppState) -> Result<Caller, Problem> {
    match caller(req, state)? {
        Caller::Anonymous => Err(Problem::from(Error::Unauthenticated(
            "send Authorization: Bearer <API key> (or the operator token)".into(),
        ))),
        known => Ok(known),
    }
}

/// Refuses unless the request carries the configured operator token (compared in
/// constant time). With no token configured, operator routes are closed, not open.
pub(crate) fn require_operator(
    req: &HttpRequest,
    state: &AppState,
    what: &str,
) -> Result<(), Problem> {
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
        .map_err(Problem::from)
}
