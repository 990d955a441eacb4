//! `HttpGateway`: the [`PaymentGateway`] contract over JSON/HTTP, speaking the format in
//! [`super::wire`] (`docs/payment-wire-format.md`).
//!
//! What each reply means to the saga is decided here, once:
//!
//! - 2xx: the operation took effect; the reply is validated (references, amounts);
//! - 402 on an authorization: a decline with its typed code, an expected outcome;
//! - 409 on capture, void, refund: the gateway refuses (already voided, above the
//!   authorization, ...), an expected outcome;
//! - 400, 401, 403, 404, 422 and an idempotency conflict: the request can never succeed as
//!   sent ([`PaymentError::Permanent`]);
//! - 429, or a connection that was refused before the request left: nothing happened,
//!   retry later ([`PaymentError::Unavailable`]);
//! - a timeout, a 5xx, a redirect (never followed), a reset connection or a reply that
//!   breaks the format: the request may or may not have taken effect ([`PaymentError::Timeout`], an unknown outcome),
//!   which the saga reconciles with [`PaymentGateway::status`] under the same key. A 5xx is
//!   never read as a decline.
//!
//! What a gateway says about a failure reaches logs and saga records as its HTTP status
//! and error code only, never its message: a gateway that echoes the request (a card
//! token) must not put it in a log.

use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Client, Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use super::wire::{self, AuthorizeBody, CaptureBody, InvalidReply, RefundBody, WireError};
use super::{
    AuthOutcome, CaptureOutcome, PaymentError, PaymentFuture, PaymentGateway, PaymentOpStatus,
    RefundOutcome, VoidOutcome,
};
use crate::config::Secret;
use crate::domain::breaker::InvalidSetting;
use crate::domain::money::{Currency, Money};
use crate::outbound::{self, BodyError};
use crate::partner_counts::{self, Partner, Untrusted};

/// Configuration of the HTTP gateway (`[payments.http]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpGatewayConfig {
    /// Base URL, `http://` or `https://`; the wire format's paths are appended. Default
    /// `http://127.0.0.1:9100/`.
    pub base_url: String,
    /// The merchant's API key, sent as `Authorization: Bearer`. A secret: set it as
    /// `WAYFARE__PAYMENTS__HTTP__API_KEY`; it is redacted wherever config is printed.
    pub api_key: Option<Secret>,
    /// Currency of every amount; replies in another are refused. Default EUR.
    pub currency: Currency,
    /// Timeout of one whole request, in ms. Past it the outcome is unknown and reconciled
    /// by key. Default 5000.
    pub request_timeout_ms: u64,
    /// Timeout for establishing a connection, in ms. Default 2000.
    pub connect_timeout_ms: u64,
    /// PEM file of the certificate(s) to trust for this gateway besides the public roots:
    /// its private CA, or its own self-signed certificate. Only with an `https://`
    /// base_url; read and checked when the configuration is loaded. Default none.
    pub ca_cert: Option<PathBuf>,
}

impl Default for HttpGatewayConfig {
    fn default() -> Self {
        HttpGatewayConfig {
            base_url: "http://127.0.0.1:9100/".into(),
            api_key: None,
            currency: Currency::EUR,
            request_timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
            ca_cert: None,
        }
    }
}

impl HttpGatewayConfig {
    /// Checks every key, naming the first bad one, and that the client they describe can
    /// be built (a `ca_cert` with a malformed certificate inside its PEM fails only there).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.checked().map(drop)
    }

    /// [`validate`](Self::validate) without building the client: for a gateway that is
    /// configured but not in use (`payments.kind` is not `http`).
    pub fn validate_unused(&self) -> Result<(), InvalidSetting> {
        self.check_api_key()?;
        outbound::check(&self.client_settings()).map(drop)
    }

    fn client_settings(&self) -> outbound::ClientSettings<'_> {
        outbound::ClientSettings {
            base_url: &self.base_url,
            request_timeout_ms: self.request_timeout_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            ca_cert: self.ca_cert.as_deref(),
        }
    }

    /// Checks every key and builds the client they describe, with the parsed base URL
    /// (a trailing slash added so joined paths stay beneath it).
    fn checked(&self) -> Result<(Url, Client), InvalidSetting> {
        self.check_api_key()?;
        outbound::client(&self.client_settings())
    }

    fn check_api_key(&self) -> Result<(), InvalidSetting> {
        if let Some(key) = &self.api_key {
            let k = key.expose();
            if k.is_empty() || k.len() > 256 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(InvalidSetting::new(
                    "api_key",
                    "must be 1 to 256 printable ASCII characters",
                ));
            }
        }
        Ok(())
    }
}

/// A payment gateway reached over HTTP. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpGateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: Url,
    api_key: Option<Secret>,
    currency: Currency,
    client: Client,
}

/// How a non-2xx reply is read, per operation.
enum Refusal {
    /// 402 is a decline (authorizations).
    Decline,
    /// 409 is the gateway refusing the operation (capture, void, refund).
    Rejection,
    /// Neither applies (status look-ups).
    None,
}

/// What an exchange produced before the operation-specific reading.
enum Reply {
    /// 2xx: the body.
    Done(Vec<u8>),
    /// An expected refusal with the gateway's reason.
    Refused(String),
    /// 404 on a look-up.
    NotFound,
}

impl HttpGateway {
    /// Builds a client after validating `config`.
    pub fn new(config: HttpGatewayConfig) -> Result<Self, InvalidSetting> {
        let (base, client) = config.checked()?;
        Ok(HttpGateway {
            inner: Arc::new(Inner {
                base,
                api_key: config.api_key,
                currency: config.currency,
                client,
            }),
        })
    }
}

impl Inner {
    /// `base` + the given path segments, each percent-encoded (keys and references are
    /// text chosen by others).
    fn url(&self, segments: &[&str]) -> Result<Url, PaymentError> {
        outbound::join(&self.base, segments)
            .ok_or_else(|| PaymentError::Permanent("base URL cannot take a path".into()))
    }

    /// Sends one request; reads a 2xx body up to the size limit; sorts every other answer
    /// into a refusal or a [`PaymentError`] as the module doc says.
    async fn exchange(
        &self,
        method: Method,
        segments: &[&str],
        key: Option<&str>,
        body: Option<Vec<u8>>,
        refusal: Refusal,
    ) -> Result<Reply, PaymentError> {
        let url = self.url(segments)?;
        let (mut request, span) = outbound::traced(
            self.client
                .request(method.clone(), url.clone())
                .header(reqwest::header::ACCEPT, "application/json"),
            &method,
            &url,
            "gateway",
        );
        if let Some(api_key) = &self.api_key {
            request = request.bearer_auth(api_key.expose());
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let sent = request.send().instrument(span.clone()).await;
        outbound::record_status(&span, sent.as_ref().ok().map(|r| r.status()));
        let response = sent.map_err(transport_error)?;
        let status = response.status();
        let body = read_capped(response).await?;
        if status.is_success() {
            return Ok(Reply::Done(body));
        }
        let reason = || {
            wire::parse::<WireError>(&body)
                .map(|e| e.code())
                .unwrap_or_else(|_| format!("HTTP {status}"))
        };
        if status.is_redirection() {
            partner_counts::record(Partner::Gateway, Untrusted::Redirect);
            tracing::warn!(status = %status, "Payment gateway answered with a redirect, never followed; outcome unknown.");
            return Err(PaymentError::Timeout);
        }
        match (status, refusal) {
            (StatusCode::PAYMENT_REQUIRED, Refusal::Decline) => Ok(Reply::Refused(reason())),
            (StatusCode::CONFLICT, Refusal::Rejection)
                if !reason().starts_with("idempotency_conflict") =>
            {
                Ok(Reply::Refused(reason()))
            }
            (StatusCode::NOT_FOUND, Refusal::None) => Ok(Reply::NotFound),
            (StatusCode::TOO_MANY_REQUESTS, _) => Err(PaymentError::Unavailable(reason())),
            (s, _) if s.is_server_error() => {
                // The gateway may have acted before failing: an unknown outcome.
                tracing::warn!(status = %s, reason = %reason(), "Payment gateway failed; outcome unknown.");
                Err(PaymentError::Timeout)
            }
            (s, _) => Err(PaymentError::Permanent(format!("HTTP {s}: {}", reason()))),
        }
    }

    async fn post<T: Serialize>(
        &self,
        segments: &[&str],
        key: &str,
        payload: Option<&T>,
        refusal: Refusal,
    ) -> Result<Reply, PaymentError> {
        let body = payload
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| PaymentError::Permanent(format!("cannot encode request: {e}")))?;
        self.exchange(Method::POST, segments, Some(key), body, refusal)
            .await
    }
}

/// Reads a body up to [`wire::MAX_REPLY_BYTES`]. A reply cut off or too big leaves the
/// outcome unknown.
async fn read_capped(response: reqwest::Response) -> Result<Vec<u8>, PaymentError> {
    outbound::read_capped(response, wire::MAX_REPLY_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => unknown(InvalidReply("body too large".into())),
            BodyError::Transport(e) => transport_error(e),
        })
}

/// A reply that breaks the format: the request reached the gateway, so whatever it did
/// is unknown; the saga reconciles by key.
fn unknown(e: InvalidReply) -> PaymentError {
    tracing::warn!(error = %e, "Payment gateway reply refused; outcome unknown.");
    PaymentError::Timeout
}

/// Maps a reqwest failure. A connection that never opened sent nothing (`Unavailable`);
/// anything later may have reached the gateway (`Timeout`, unknown outcome).
fn transport_error(e: reqwest::Error) -> PaymentError {
    if e.is_connect() {
        return PaymentError::Unavailable(outbound::describe(&e));
    }
    PaymentError::Timeout
}

fn read<T: serde::de::DeserializeOwned, O>(
    body: &[u8],
    check: impl FnOnce(T) -> Result<O, InvalidReply>,
) -> Result<O, PaymentError> {
    wire::parse(body).and_then(check).map_err(unknown)
}

impl PaymentGateway for HttpGateway {
    fn authorize(&self, key: &str, card_token: &str, amount: Money) -> PaymentFuture<AuthOutcome> {
        let (inner, key) = (self.inner.clone(), key.to_owned());
        let body = AuthorizeBody {
            card_token: card_token.to_owned(),
            amount,
        };
        Box::pin(async move {
            let reply = inner
                .post(
                    &["v1", "authorizations"],
                    &key,
                    Some(&body),
                    Refusal::Decline,
                )
                .await?;
            match reply {
                Reply::Done(b) => read(&b, wire::authorized),
                Reply::Refused(reason) => Ok(AuthOutcome::Declined { reason }),
                Reply::NotFound => Err(PaymentError::Permanent("route not found".into())),
            }
        })
    }

    fn capture(
        &self,
        key: &str,
        authorization_id: &str,
        amount: Money,
    ) -> PaymentFuture<CaptureOutcome> {
        let (inner, key, auth) = (
            self.inner.clone(),
            key.to_owned(),
            authorization_id.to_owned(),
        );
        Box::pin(async move {
            let path = ["v1", "authorizations", auth.as_str(), "capture"];
            let body = CaptureBody { amount };
            match inner
                .post(&path, &key, Some(&body), Refusal::Rejection)
                .await?
            {
                Reply::Done(b) => read(&b, wire::captured),
                Reply::Refused(reason) => Ok(CaptureOutcome::Rejected { reason }),
                Reply::NotFound => Err(PaymentError::Permanent("route not found".into())),
            }
        })
    }

    fn void(&self, key: &str, authorization_id: &str) -> PaymentFuture<VoidOutcome> {
        let (inner, key, auth) = (
            self.inner.clone(),
            key.to_owned(),
            authorization_id.to_owned(),
        );
        Box::pin(async move {
            let path = ["v1", "authorizations", auth.as_str(), "void"];
            match inner
                .post::<()>(&path, &key, None, Refusal::Rejection)
                .await?
            {
                Reply::Done(b) => read(&b, |r| wire::voided(r, &auth)),
                Reply::Refused(reason) => Ok(VoidOutcome::Rejected { reason }),
                Reply::NotFound => Err(PaymentError::Permanent("route not found".into())),
            }
        })
    }

    fn refund(&self, key: &str, payment_id: &str, amount: Money) -> PaymentFuture<RefundOutcome> {
        let (inner, key) = (self.inner.clone(), key.to_owned());
        let body = RefundBody {
            payment_id: payment_id.to_owned(),
            amount,
        };
        Box::pin(async move {
            match inner
                .post(&["v1", "refunds"], &key, Some(&body), Refusal::Rejection)
                .await?
            {
                Reply::Done(b) => read(&b, wire::refunded),
                Reply::Refused(reason) => Ok(RefundOutcome::Rejected { reason }),
                Reply::NotFound => Err(PaymentError::Permanent("route not found".into())),
            }
        })
    }

    fn status(&self, key: &str) -> PaymentFuture<Option<PaymentOpStatus>> {
        let (inner, key) = (self.inner.clone(), key.to_owned());
        Box::pin(async move {
            let path = ["v1", "operations", key.as_str()];
            let reply = inner
                .exchange(Method::GET, &path, None, None, Refusal::None)
                .await;
            match reply {
                Ok(Reply::Done(b)) => {
                    let currency = inner.currency;
                    wire::parse(&b)
                        .and_then(|op| wire::operation(op, currency))
                        .map(Some)
                        // A look-up changes nothing, so a bad reply is just no answer yet.
                        .map_err(|e| PaymentError::Unavailable(e.to_string()))
                }
                Ok(Reply::NotFound) => Ok(None),
                Ok(Reply::Refused(reason)) => Err(PaymentError::Unavailable(reason)),
                // A look-up that timed out changed nothing either: ask again later.
                Err(PaymentError::Timeout) => {
                    Err(PaymentError::Unavailable("status look-up timed out".into()))
                }
                Err(e) => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_key() {
        assert!(HttpGatewayConfig::default().validate().is_ok());
        let bad = |c: HttpGatewayConfig| c.validate().unwrap_err().key;
        assert_eq!(
            bad(HttpGatewayConfig {
                base_url: "ftp://x/".into(),
                ..Default::default()
            }),
            "base_url"
        );
        assert_eq!(
            bad(HttpGatewayConfig {
                request_timeout_ms: 0,
                ..Default::default()
            }),
            "request_timeout_ms"
        );
        assert_eq!(
            bad(HttpGatewayConfig {
                api_key: Some(Secret::new("has space")),
                ..Default::default()
            }),
            "api_key"
        );
    }

    #[test]
    fn keys_and_references_are_encoded_under_the_base() {
        let gw = HttpGateway::new(HttpGatewayConfig {
            base_url: "http://h:1/pay".into(),
            ..Default::default()
        })
        .unwrap();
        let url = gw.inner.url(&["v1", "operations", "s/1:capture"]).unwrap();
        assert_eq!(url.as_str(), "http://h:1/pay/v1/operations/s%2F1:capture");
    }
}
