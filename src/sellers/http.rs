//! `HttpSeller`: the [`SellerApi`] over JSON/HTTP, speaking the format in [`super::wire`]
//! (`docs/seller-wire-format.md`).
//!
//! Replies are untrusted: bodies are read up to [`MAX_REPLY_BYTES`] and no further, then
//! parsed and validated field by field; anything off becomes
//! [`SellerError::InvalidReply`] naming the problem. Per-call deadlines, retries and the
//! circuit breaker belong to the `SellerAdapter`; the client's own timeout here is only a
//! backstop so an abandoned connection cannot linger forever.

use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Client, Method, StatusCode, Url};
use serde::Deserialize;
use tracing::Instrument as _;

use super::wire::{
    self, SearchReply, WireBookReply, WireCancelReply, WireStatusReply, MAX_REPLY_BYTES,
};
use super::{
    BookOutcome, BookRequest, CancelOutcome, FlightQuery, HotelQuery, Offer, ReservationStatus,
    SellerApi, SellerError, SellerFuture,
};
use crate::config::Secret;
use crate::domain::breaker::InvalidSetting;
use crate::domain::money::Currency;
use crate::outbound::{self, BodyError};
use crate::partner_counts::{self, Partner, Untrusted};

/// Configuration of one HTTP seller.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSellerConfig {
    /// Seller name used in offers and logs. Default `"http"`.
    pub name: String,
    /// Base URL, `http://` or `https://`; paths of the wire format are appended to it.
    /// Default `http://127.0.0.1:9001/`.
    pub base_url: String,
    /// Currency the seller must price in; replies in another are refused. Default EUR.
    pub currency: Currency,
    /// Backstop timeout for a whole request, in ms; the adapter's deadline is normally
    /// shorter. Default 10000.
    pub request_timeout_ms: u64,
    /// Timeout for establishing a connection, in ms. Default 2000.
    pub connect_timeout_ms: u64,
    /// The seller's credential, sent as `Authorization: Bearer`. A secret: redacted
    /// wherever config is printed.
    pub api_key: Option<Secret>,
    /// PEM file of the certificate(s) to trust for this seller besides the public roots:
    /// its private CA, or its own self-signed certificate. Only with an `https://`
    /// base_url; read and checked when the configuration is loaded. Default none.
    pub ca_cert: Option<PathBuf>,
}

impl Default for HttpSellerConfig {
    fn default() -> Self {
        HttpSellerConfig {
            name: "http".to_string(),
            base_url: "http://127.0.0.1:9001/".to_string(),
            currency: Currency::EUR,
            request_timeout_ms: 10_000,
            connect_timeout_ms: 2_000,
            api_key: None,
            ca_cert: None,
        }
    }
}

impl HttpSellerConfig {
    /// Checks every key, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.checked().map(drop)
    }

    /// Checks every key and builds the client they describe, with the parsed base URL
    /// (a trailing slash added so joined paths stay beneath it).
    fn checked(&self) -> Result<(Url, Client), InvalidSetting> {
        if self.name.trim().is_empty() {
            return Err(InvalidSetting::new("name", "must not be empty"));
        }
        outbound::client(&outbound::ClientSettings {
            base_url: &self.base_url,
            request_timeout_ms: self.request_timeout_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            ca_cert: self.ca_cert.as_deref(),
        })
    }
}

/// A seller reached over HTTP. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpSeller {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    base: Url,
    currency: Currency,
    api_key: Option<Secret>,
    client: Client,
}

impl HttpSeller {
    /// Builds a client after validating `config`.
    pub fn new(config: HttpSellerConfig) -> Result<Self, InvalidSetting> {
        let (base, client) = config.checked()?;
        Ok(HttpSeller {
            inner: Arc::new(Inner {
                base,
                name: config.name,
                currency: config.currency,
                api_key: config.api_key,
                client,
            }),
        })
    }
}

impl Inner {
    /// `base` + the given path segments, each percent-encoded (idempotency keys are
    /// caller-chosen text).
    fn url(&self, segments: &[&str]) -> Result<Url, SellerError> {
        outbound::join(&self.base, segments)
            .ok_or_else(|| SellerError::Transport("base URL cannot take a path".into()))
    }

    /// Sends one request and returns the body of a 2xx reply, read up to the size limit.
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, SellerError> {
        let (mut request, span) = outbound::traced(
            self.client
                .request(method.clone(), url.clone())
                .header(reqwest::header::ACCEPT, "application/json"),
            &method,
            &url,
            "seller",
        );
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
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
        if !status.is_success() {
            return Err(match status {
                StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => SellerError::Timeout,
                s if s.is_redirection() => {
                    partner_counts::record(Partner::Seller, Untrusted::Redirect);
                    SellerError::InvalidReply(format!(
                        "HTTP {s}: a redirect, never followed (a seller answers at its base_url)"
                    ))
                }
                s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                    SellerError::Unavailable(format!("HTTP {s}"))
                }
                s => SellerError::InvalidReply(format!("unexpected HTTP status {s}")),
            });
        }
        let body = outbound::read_capped(response, MAX_REPLY_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => {
                    SellerError::InvalidReply(format!("reply body exceeds {MAX_REPLY_BYTES} bytes"))
                }
                BodyError::Transport(e) => transport_error(e),
            })?;
        Ok(body)
    }

    async fn post<T: serde::Serialize>(
        &self,
        segments: &[&str],
        payload: &T,
    ) -> Result<Vec<u8>, SellerError> {
        let body = serde_json::to_vec(payload)
            .map_err(|e| SellerError::Transport(format!("cannot encode request: {e}")))?;
        self.exchange(Method::POST, self.url(segments)?, Some(body))
            .await
    }
}

/// Maps a reqwest failure; the source chain is included because reqwest's own message
/// ("error sending request") hides the cause.
fn transport_error(e: reqwest::Error) -> SellerError {
    if e.is_timeout() {
        return SellerError::Timeout;
    }
    SellerError::Transport(outbound::describe(&e))
}

impl SellerApi for HttpSeller {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn search_hotels(&self, query: HotelQuery) -> SellerFuture<Vec<Offer>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let body = inner.post(&["search", "hotels"], &query).await?;
            let reply: SearchReply = wire::parse_json(&body)?;
            wire::hotel_offers(&inner.name, inner.currency, &query, reply)
        })
    }

    fn search_flights(&self, query: FlightQuery) -> SellerFuture<Vec<Offer>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let body = inner.post(&["search", "flights"], &query).await?;
            let reply: SearchReply = wire::parse_json(&body)?;
            wire::flight_offers(&inner.name, inner.currency, &query, reply)
        })
    }

    fn book(&self, req: BookRequest) -> SellerFuture<BookOutcome> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let body = inner.post(&["bookings"], &req).await?;
            let reply: WireBookReply = wire::parse_json(&body)?;
            wire::book_outcome(inner.currency, reply)
        })
    }

    fn cancel(&self, idempotency_key: String) -> SellerFuture<CancelOutcome> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let url = inner.url(&["bookings", &idempotency_key, "cancel"])?;
            let body = inner.exchange(Method::POST, url, None).await?;
            let reply: WireCancelReply = wire::parse_json(&body)?;
            wire::cancel_outcome(inner.currency, reply)
        })
    }

    fn booking_status(&self, idempotency_key: String) -> SellerFuture<Option<ReservationStatus>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let url = inner.url(&["bookings", &idempotency_key])?;
            let body = inner.exchange(Method::GET, url, None).await?;
            let reply: WireStatusReply = wire::parse_json(&body)?;
            wire::reservation_status(inner.currency, reply)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_key() {
        assert!(HttpSellerConfig::default().validate().is_ok());
        let bad = |c: HttpSellerConfig| c.validate().unwrap_err().key;
        assert_eq!(
            bad(HttpSellerConfig {
                base_url: "not a url".into(),
                ..Default::default()
            }),
            "base_url"
        );
        assert_eq!(
            bad(HttpSellerConfig {
                base_url: "ftp://seller.example/".into(),
                ..Default::default()
            }),
            "base_url"
        );
        assert_eq!(
            bad(HttpSellerConfig {
                base_url: "https://seller.example/".into(),
                ca_cert: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            }),
            "ca_cert"
        );
        assert_eq!(
            bad(HttpSellerConfig {
                name: "".into(),
                ..Default::default()
            }),
            "name"
        );
        assert_eq!(
            bad(HttpSellerConfig {
                request_timeout_ms: 0,
                ..Default::default()
            }),
            "request_timeout_ms"
        );
    }

    #[test]
    fn paths_stay_under_the_base_and_keys_are_encoded() {
        let seller = HttpSeller::new(HttpSellerConfig {
            base_url: "http://h:1/api/v2".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            seller.inner.url(&["search", "hotels"]).unwrap().as_str(),
            "http://h:1/api/v2/search/hotels"
        );
        let url = seller
            .inner
            .url(&["bookings", "a/b?c d", "cancel"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://h:1/api/v2/bookings/a%2Fb%3Fc%20d/cancel"
        );
    }
}
