//! Request parsing that answers every bad input with a problem naming what is wrong, as
//! actix extractors so a handler's arguments are its parsed input: [`Json`] bodies
//! (bounded, content type checked, with the JSON path of a bad field), [`AccountPath`]
//! ids, [`Query`] strings and the [`IdempotencyKey`] header.
//!
//! Request bodies refuse unknown fields (`deny_unknown_fields`): a typo such as
//! `"ammount"` is a 400 naming the field, not a silently ignored value.
//!
//! Extractors run in argument order and the first refusal wins, so handlers list the
//! credential first and the body last: an unauthenticated request is refused before its
//! body is read.

use std::borrow::Cow;
use std::future::{ready, Ready};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::problem::Problem;
use super::AppState;
use crate::domain::account::AccountId;
use crate::domain::wallet::validate_key;
use crate::domain::Invalid;

/// The app state, which `serve` always installs; without it (a test app that forgot it)
/// the request fails as internal rather than panicking.
pub(crate) fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, Problem> {
    req.app_data::<web::Data<AppState>>().ok_or_else(|| {
        tracing::error!("No AppState installed in the app.");
        Problem::internal()
    })
}

/// A JSON request body: exactly one document of `T`, at most `server.max_body_bytes`,
/// sent as `application/json`.
#[derive(Debug)]
pub(crate) struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let state = state(&req)?;
            let (limit, deadline) = (state.max_body, state.body_deadline);
            json_body(&req, payload, limit, deadline).await.map(Json)
        })
    }
}

/// How long a request body may take to arrive: `timeout` from the first read, plus one
/// second for every `min_bytes_per_sec` bytes received (Apache's `mod_reqtimeout` rule).
/// A body that misses it is answered 408 and its connection closed: a client cannot hold
/// a connection (and a worker's slot) by trickling a body.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    /// Time allowed before any byte has earned more (`server.body_timeout_ms`).
    pub timeout: Duration,
    /// Pace that earns more time (`server.min_body_bytes_per_sec`, at least 1).
    pub min_bytes_per_sec: u64,
}

impl BodyDeadline {
    /// How long a body that has sent `received` bytes so far may have taken in all.
    pub fn allowed(&self, received: usize) -> Duration {
        let earned =
            Duration::from_secs_f64(received as f64 / self.min_bytes_per_sec.max(1) as f64);
        self.timeout.saturating_add(earned)
    }
}

/// The 408 of a body that missed its [`BodyDeadline`]; the connection is closed after it.
fn body_timeout(received: usize, deadline: &BodyDeadline) -> Problem {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "body-timeout",
        "Body too slow",
        format!(
            "the body did not arrive in time: {received} bytes in {} ms (server.body_timeout_ms, \
             plus 1 s per server.min_body_bytes_per_sec = {} bytes)",
            deadline.allowed(received).as_millis(),
            deadline.min_bytes_per_sec
        ),
    )
}

/// Reads and parses a JSON body of at most `limit` bytes, arriving within `deadline`.
async fn json_body<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
    deadline: BodyDeadline,
) -> Result<T, Problem> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as application/json",
        ));
    }
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Body too large",
            format!("the body must be at most {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(512).min(limit));
    let started = tokio::time::Instant::now();
    loop {
        let due = started + deadline.allowed(body.len());
        let Ok(next) = tokio::time::timeout_at(due, payload.next()).await else {
            return Err(body_timeout(body.len(), &deadline));
        };
        let Some(chunk) = next else {
            break;
        };
        let chunk = chunk.map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-body",
                "Unreadable body",
                e.to_string(),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    parse_json(&body)
}

/// Parses exactly one JSON document (trailing whitespace allowed, nothing else), naming
/// the path of the field at fault.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| located(e, "invalid-json", "Invalid JSON body"))?;
    // `deserialize` stops at the end of the first document; without this check a body
    // like `{...}garbage` or `{...}{...}` would be accepted as its first document.
    de.end().map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-json",
            "Invalid JSON body",
            format!("{e}: the body must be exactly one JSON document"),
        )
    })?;
    Ok(value)
}

/// A 400 problem for a deserialization error, naming the field: its path where the
/// deserializer knew it, else the field a message like "missing field `name`" names.
fn located<E: std::fmt::Display>(
    e: serde_path_to_error::Error<E>,
    kind: &str,
    title: &'static str,
) -> Problem {
    let path = e.path().to_string();
    let msg = e.into_inner().to_string();
    let problem = Problem::new(StatusCode::BAD_REQUEST, kind, title, msg.clone());
    // serde_path_to_error says "." for the root and "?" where no position is known.
    if path != "." && !path.contains('?') {
        problem.field(path)
    } else if let Some(field) = backticked(&msg) {
        problem.field(field)
    } else {
        problem
    }
}

/// The first `name` in a serde message like "missing field `name`".
fn backticked(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_owned())
}

/// Parses an account id (from a path segment or a body field).
pub(super) fn account_id(raw: &str) -> Result<AccountId, Problem> {
    raw.parse::<AccountId>().map_err(Problem::invalid)
}

/// The account id in the `{id}` segment of the path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccountPath(pub AccountId);

impl FromRequest for AccountPath {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(account_id(&path_id(req)).map(AccountPath))
    }
}

/// The `{id}` segment of the path, percent-decoded (empty where the route has none).
pub(crate) fn path_id(req: &HttpRequest) -> String {
    req.match_info().get("id").unwrap_or_default().to_owned()
}

/// The query string, parsed as `T` and naming the parameter at fault.
#[derive(Debug)]
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse_query(req.query_string()).map(Query))
    }
}

/// Parses a query string as `T`, naming the parameter at fault.
pub(crate) fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    let pairs = form_urlencoded::parse(query.as_bytes());
    let de = serde_urlencoded::Deserializer::new(pairs);
    serde_path_to_error::deserialize(de).map_err(|e| located(e, "invalid-query", "Invalid query"))
}

/// The values of the parameters `names`, in that order, borrowed from the query string
/// unless they had to be decoded; `None` when a parameter is not one of `names` or comes
/// twice. For hot routes: a query this refuses goes to [`parse_query`], whose refusal
/// names the parameter at fault, so only the wording's cost is saved, never its words.
pub(crate) fn query_fields<'q, const N: usize>(
    query: &'q str,
    names: [&str; N],
) -> Option<[Option<Cow<'q, str>>; N]> {
    let mut found: [Option<Cow<'q, str>>; N] = std::array::from_fn(|_| None);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let i = names.iter().position(|n| *n == name)?;
        if found[i].replace(value).is_some() {
            return None;
        }
    }
    Some(found)
}

/// The `Idempotency-Key` header, required and validated.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyKey(pub String);

impl FromRequest for IdempotencyKey {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(idempotency_key(req).map(IdempotencyKey))
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<String, Problem> {
    let key = req
        .headers()
        .get("Idempotency-Key")
        .ok_or_else(|| Invalid::new("Idempotency-Key", "this header is required"))?
        .to_str()
        .map_err(|_| Invalid::new("Idempotency-Key", "must be printable ASCII"))?;
    validate_key("Idempotency-Key", key)?;
    Ok(key.to_owned())
}

/// Problem for a path that does not parse (installed as the `PathConfig` error handler).
pub(super) fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-path",
        "Invalid path",
        err.to_string(),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        amount: Amount,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Amount {
        minor: i64,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<Body>(br#"{"amount":{"minor":"x"}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("amount.minor"));
        let e = parse_json::<Body>(br#"{"amount":{"minor":1},"extra":1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("extra"));
        let e = parse_json::<Body>(br#"{}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("amount"));
        let e = parse_json::<Body>(b"{not json").unwrap_err();
        assert_eq!(e.field, None);
        let e = parse_json::<Body>(b"\xff\xfe").unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse_json::<Body>(br#"{"amount":{"minor":99999999999999999999}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("amount.minor"));
    }

    #[test]
    fn a_body_is_one_document_and_nothing_after_it_but_whitespace() {
        let one = br#"{"amount":{"minor":1}}"#;
        assert!(parse_json::<Body>(one).is_ok());
        assert!(parse_json::<Body>(&[one.as_slice(), b" \r\n\t"].concat()).is_ok());
        for tail in [&b"x"[..], b"{}", one, b" ]", b"\0", b"\n,"] {
            let e = parse_json::<Body>(&[one.as_slice(), tail].concat()).unwrap_err();
            assert_eq!((e.status, e.kind.as_str()), (400, "/problems/invalid-json"));
            assert!(
                e.detail.contains("exactly one JSON document"),
                "{}",
                e.detail
            );
        }
        assert!(parse_json::<Body>(&[b"\xEF\xBB\xBF".as_slice(), one].concat()).is_err());
    }
}
