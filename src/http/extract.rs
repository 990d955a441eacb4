//! Request parsing that answers every bad input with a problem naming what is wrong:
//! bounded JSON bodies with the JSON path of a bad field, path ids, query strings.
//!
//! Request bodies refuse unknown fields (`deny_unknown_fields`): a typo such as
//! `"ammount"` is a 400 naming the field, not a silently ignored value.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::problem::Problem;
use crate::domain::account::AccountId;

/// Reads and parses a JSON body of at most `limit` bytes.
pub async fn json_body<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
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
    while let Some(chunk) = payload.next().await {
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
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
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

/// Parses an account id from a path segment.
pub fn account_id(raw: &str) -> Result<AccountId, Problem> {
    raw.parse::<AccountId>().map_err(Problem::invalid)
}

/// Parses the query string, naming the parameter at fault.
pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, Problem> {
    let pairs = form_urlencoded::parse(req.query_string().as_bytes());
    let de = serde_urlencoded::Deserializer::new(pairs);
    serde_path_to_error::deserialize(de).map_err(|e| located(e, "invalid-query", "Invalid query"))
}

/// Problem for a path that does not parse (installed as the `PathConfig` error handler).
pub fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
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
