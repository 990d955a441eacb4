//! The one place errors become HTTP responses: `application/problem+json` (RFC 9457)
//! with a stable `type`, a human `detail` and the offending `field` where there is one.
//! Internal failures are logged here, once, and never leaked to clients.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::wallet::WalletError;
use crate::domain::Invalid;
use crate::error::Error;
use crate::store::StoreError;

/// A problem response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem (`/problems/not-found`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// What went wrong in this case.
    pub detail: String,
    /// The request field at fault (JSON path, query parameter or path segment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds after which a retry may succeed (also sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u32>,
    /// The methods a known path takes (sent as `Allow` with a 405).
    #[serde(skip)]
    pub allow: Option<Box<str>>,
}

impl Problem {
    /// A problem of kind `slug`.
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            kind: format!("/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail: echo_safe(&detail.into(), MAX_DETAIL_CHARS),
            field: None,
            retry_after: None,
            allow: None,
        }
    }

    /// Names the field at fault (made safe to echo; an empty name is left out).
    pub fn field(mut self, field: impl Into<String>) -> Self {
        let field = echo_safe(&field.into(), MAX_FIELD_CHARS);
        self.field = (!field.is_empty()).then_some(field);
        self
    }

    /// Sets `Retry-After`.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400 for an input that breaks a rule.
    pub fn invalid(invalid: Invalid) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-input",
            "Invalid input",
            invalid.message,
        )
        .field(invalid.field)
    }

    /// 500 whose cause was logged where it happened; nothing of it is told the client.
    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an internal error occurred",
        )
    }

    /// 405 for a known path asked with a method it does not take; `allowed` become the
    /// `Allow` header.
    pub fn method_not_allowed(allowed: &[actix_web::http::Method]) -> Self {
        let allow = allowed
            .iter()
            .map(actix_web::http::Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut problem = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("this path takes {allow}"),
        );
        problem.allow = Some(allow.into());
        problem
    }

    /// 404 for a path that names no route.
    pub fn no_route() -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            "no such route",
        )
    }
}

/// Longest `field` echoed back: field names come from the client (an unknown JSON key or
/// query parameter) and are untrusted.
const MAX_FIELD_CHARS: usize = 64;
/// Longest `detail`; serde messages quote client input too.
const MAX_DETAIL_CHARS: usize = 300;

/// Client-derived text as it may be echoed: control characters replaced, length bounded.
fn echo_safe(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.kind, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if let Some(allow) = &self.allow {
            if let Ok(value) = HeaderValue::from_str(allow) {
                res.insert_header((header::ALLOW, value));
            }
        }
        // A 408 leaves the body unread: the connection cannot carry another request.
        if self.status == StatusCode::REQUEST_TIMEOUT.as_u16() {
            res.force_close();
        }
        if self.status == StatusCode::UNAUTHORIZED.as_u16() {
            res.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        res.body(super::reply::json_line(self).unwrap_or_default())
    }
}

impl From<Invalid> for Problem {
    fn from(invalid: Invalid) -> Self {
        Problem::invalid(invalid)
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        use StatusCode as S;
        match e {
            Error::Invalid(invalid) => Problem::invalid(invalid),
            Error::NotFound { .. } => {
                Problem::new(S::NOT_FOUND, "not-found", "Not found", e.to_string())
            }
            Error::Conflict(detail) => Problem::new(S::CONFLICT, "conflict", "Conflict", detail),
            Error::Unauthenticated(detail) => {
                Problem::new(S::UNAUTHORIZED, "unauthorized", "Unauthorized", detail)
            }
            Error::Forbidden(detail) => {
                Problem::new(S::FORBIDDEN, "forbidden", "Forbidden", detail)
            }
            Error::Wallet(WalletError::InsufficientFunds { .. }) => Problem::new(
                S::CONFLICT,
                "insufficient-points",
                "Insufficient wallet points",
                e.to_string(),
            ),
            Error::Wallet(_) => Problem::new(
                S::CONFLICT,
                "wallet-conflict",
                "Wallet refused the change",
                e.to_string(),
            ),
            Error::Overloaded { .. } => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "overloaded",
                "Overloaded",
                e.to_string(),
            )
            .retry_after(1),
            Error::Timeout { .. } => Problem::new(
                S::GATEWAY_TIMEOUT,
                "deadline-exceeded",
                "Deadline exceeded",
                e.to_string(),
            ),
            Error::Crashed { .. } => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "actor-crashed",
                "Temporarily unavailable",
                e.to_string(),
            )
            .retry_after(1),
            Error::Unavailable { .. } => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                "Unavailable",
                e.to_string(),
            )
            .retry_after(5),
            Error::Store(ref e @ StoreError::Fenced(_)) => {
                Problem::new(S::CONFLICT, "conflict", "Conflict", format!("{e}; retry"))
            }
            Error::Store(StoreError::Io(ref reason)) => {
                tracing::error!(error = %reason, "Store failed while serving a request.");
                Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Storage unavailable",
                    "storage is unavailable; retry later",
                )
                .retry_after(5)
            }
            Error::Store(ref corrupt @ (StoreError::Corrupt { .. } | StoreError::Taken { .. })) => {
                tracing::error!(error = %corrupt, "Corrupt record met while serving a request.");
                Problem::new(
                    S::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "an internal error occurred",
                )
            }
            Error::Config(ref reason) => {
                tracing::error!(error = %reason, "Configuration error while serving a request.");
                Problem::new(
                    S::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "an internal error occurred",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_client_text_is_bounded_and_printable() {
        let p = Problem::new(StatusCode::BAD_REQUEST, "x", "X", "a".repeat(5000)).field("\r\nevil");
        assert_eq!(p.field.as_deref(), Some("\u{FFFD}\u{FFFD}evil"));
        assert!(p.detail.chars().count() <= MAX_DETAIL_CHARS + 1);
        let p = Problem::new(StatusCode::BAD_REQUEST, "x", "X", "d").field("");
        assert_eq!(p.field, None);
        let p = Problem::new(StatusCode::BAD_REQUEST, "x", "X", "d").field("k".repeat(500));
        assert_eq!(p.field.unwrap().chars().count(), MAX_FIELD_CHARS + 1);
    }
}
