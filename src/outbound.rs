//! Plumbing shared by the HTTP clients of partners (the HTTP seller, the HTTP payment
//! gateway): the client itself (timeouts, TLS and the roots it trusts), base URLs that
//! paths cannot escape, percent-encoded path segments, reply bodies read up to a bound and
//! no further, and transport errors with their causes spelled out. What a status or a body
//! *means* stays with each client.
//!
//! Redirects are never followed: a partner answers at the address it was configured
//! with or not at all. A followed redirect would send the request (a card token, an
//! amount, an idempotency key, a search) to a host nobody configured, and take that host's
//! answer for the partner's. Each client reads a 3xx as a partner error and counts it
//! ([`crate::partner_counts`]).
//!
//! TLS is rustls (ring provider) with the Mozilla roots of `webpki-roots` compiled in: no
//! OpenSSL and no system certificate store. A partner behind a private CA or a self-signed
//! certificate is trusted through its `ca_cert` key, in addition to those roots; there is
//! no switch that accepts an untrusted certificate.

use std::error::Error as StdError;
use std::path::Path;
use std::time::Duration;

use reqwest::{Certificate, Client, Url};

use crate::domain::breaker::InvalidSetting;

/// The keys every partner client is built from (`[payments.http]`, `[sellers.http]`).
pub(crate) struct ClientSettings<'a> {
    /// `base_url`.
    pub base_url: &'a str,
    /// `request_timeout_ms`.
    pub request_timeout_ms: u64,
    /// `connect_timeout_ms`.
    pub connect_timeout_ms: u64,
    /// `ca_cert`: a PEM file of extra trusted roots.
    pub ca_cert: Option<&'a Path>,
}

/// Checks the shared keys and builds the client they describe, with the parsed base URL.
/// Errors name the key; a `ca_cert` is read and parsed here, so a missing or malformed
/// file is refused when the configuration is loaded, not at the first call.
pub(crate) fn client(settings: &ClientSettings<'_>) -> Result<(Url, Client), InvalidSetting> {
    let (base, roots) = check(settings)?;
    let tls = base.scheme() == "https";
    let mut builder = Client::builder()
        .timeout(Duration::from_millis(settings.request_timeout_ms))
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        // A partner reached over TLS is never left for clear text.
        .https_only(tls);
    for cert in roots {
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build().map_err(|e| match settings.ca_cert {
        // With the settings above, only the added roots can make building fail.
        Some(path) => InvalidSetting::new(
            "ca_cert",
            format!(
                "{}: not a usable certificate: {}",
                path.display(),
                describe(&e)
            ),
        ),
        None => InvalidSetting::new(
            "base_url",
            format!("cannot build HTTP client: {}", describe(&e)),
        ),
    })?;
    Ok((base, client))
}

/// The checks of [`client`] that need no client: the base URL, the timeouts and the
/// `ca_cert` file (read and parsed as PEM), with the parsed URL and the extra roots. For
/// a partner that is configured but not in use, where building a TLS client (its root
/// store and all) would cost memory for nothing.
pub(crate) fn check(
    settings: &ClientSettings<'_>,
) -> Result<(Url, Vec<Certificate>), InvalidSetting> {
    let base = base_url(settings.base_url)?;
    if settings.request_timeout_ms == 0 {
        return Err(InvalidSetting::new(
            "request_timeout_ms",
            "must be positive",
        ));
    }
    if settings.connect_timeout_ms == 0 {
        return Err(InvalidSetting::new(
            "connect_timeout_ms",
            "must be positive",
        ));
    }
    let tls = base.scheme() == "https";
    let mut roots = Vec::new();
    if let Some(path) = settings.ca_cert {
        if !tls {
            return Err(InvalidSetting::new(
                "ca_cert",
                format!(
                    "{} is set for a plain http:// base_url, where no certificate is checked; \
                     use an https:// base_url",
                    path.display()
                ),
            ));
        }
        roots = ca_certs(path)?;
    }
    Ok((base, roots))
}

/// The certificates of a `ca_cert` PEM file: one or more `BEGIN CERTIFICATE` blocks
/// (other blocks, such as keys, are skipped); none at all is an error.
fn ca_certs(path: &Path) -> Result<Vec<Certificate>, InvalidSetting> {
    let bad =
        |problem: String| InvalidSetting::new("ca_cert", format!("{}: {problem}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read the file: {e}")))?;
    let certs = Certificate::from_pem_bundle(&pem)
        .map_err(|e| bad(format!("not a PEM certificate file: {}", describe(&e))))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)".into(),
        ));
    }
    Ok(certs)
}

/// Parses a partner's base URL (the `base_url` key): `http://` or `https://`
/// `host[:port][/path]`, with a trailing slash so joined paths stay beneath it.
pub(crate) fn base_url(raw: &str) -> Result<Url, InvalidSetting> {
    let mut url = Url::parse(raw).map_err(|e| InvalidSetting::new("base_url", e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(InvalidSetting::new(
            "base_url",
            "must be an http:// or https:// URL",
        ));
    }
    if url.cannot_be_a_base() || url.query().is_some() {
        return Err(InvalidSetting::new(
            "base_url",
            "must be a plain http(s)://host[:port][/path] URL",
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// `base` + `segments`, each percent-encoded (keys and references are text chosen by
/// others, so `a/b` stays one segment). `None` if the base cannot take a path.
pub(crate) fn join(base: &Url, segments: &[&str]) -> Option<Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(segments);
    Some(url)
}

/// A client span for one partner request, with the HTTP client semantic-convention
/// attributes (the status is recorded by [`record_status`]), and the request carrying
/// that span's `traceparent`. Untraced (telemetry off): the request as it was and no span;
/// in a dropped trace, no span and the trace's `traceparent` (flag `00`).
pub(crate) fn traced(
    request: reqwest::RequestBuilder,
    method: &reqwest::Method,
    url: &Url,
    partner: &'static str,
) -> (reqwest::RequestBuilder, tracing::Span) {
    if !crate::telemetry::enabled() {
        return (request, tracing::Span::none());
    }
    if let Some(dropped) = crate::telemetry::current_unsampled() {
        // Not exported: no span, only the decision for the partner to follow.
        return (
            request.header("traceparent", dropped.traceparent()),
            tracing::Span::none(),
        );
    }
    let span = tracing::info_span!(
        "http.client",
        otel.name = method.as_str(),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method.as_str(),
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default().unwrap_or_default(),
        url.path = url.path(),
        http.response.status_code = tracing::field::Empty,
        partner,
    );
    let request = match crate::telemetry::headers_of(&span) {
        Some(headers) => headers
            .into_iter()
            .fold(request, |r, (name, value)| r.header(name, value)),
        None => request,
    };
    (request, span)
}

/// Records a partner's answer (or its absence) on the span made by [`traced`], and for
/// the attempt's entry in the saga's partner calls ([`crate::call_log`]).
pub(crate) fn record_status(span: &tracing::Span, status: Option<reqwest::StatusCode>) {
    // The saga's record of partner calls wants this whether or not spans are exported.
    match status {
        Some(status) => crate::call_log::note_status(status.as_u16()),
        None => crate::call_log::note_no_connection(),
    }
    if span.is_none() {
        return;
    }
    match status {
        Some(status) => {
            span.record("http.response.status_code", status.as_u16());
            if !status.is_success() {
                span.record("otel.status_code", "ERROR");
            }
        }
        None => {
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// Why a reply body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Longer than the bound (declared or seen).
    TooLarge,
    /// The transport failed while reading.
    Transport(reqwest::Error),
}

/// Reads a reply body up to `max` bytes; refuses a longer one unread (a declared length)
/// or as soon as it passes the bound.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error with its chain of causes: reqwest's own message ("error sending
/// request") hides the cause.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_http_or_https_and_paths_stay_beneath_them() {
        assert_eq!(base_url("ftp://x/").unwrap_err().key, "base_url");
        assert_eq!(base_url("http://x/?q=1").unwrap_err().key, "base_url");
        assert_eq!(
            base_url("https://x:8443").unwrap().as_str(),
            "https://x:8443/"
        );
        let base = base_url("http://h:1/api/v2").unwrap();
        assert_eq!(
            join(&base, &["bookings", "a/b?c d", "cancel"])
                .unwrap()
                .as_str(),
            "http://h:1/api/v2/bookings/a%2Fb%3Fc%20d/cancel"
        );
    }

    fn settings<'a>(base_url: &'a str, ca_cert: Option<&'a Path>) -> ClientSettings<'a> {
        ClientSettings {
            base_url,
            request_timeout_ms: 1_000,
            connect_timeout_ms: 1_000,
            ca_cert,
        }
    }

    #[test]
    fn a_ca_cert_must_be_a_readable_pem_certificate_for_an_https_partner() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(&good, cert.cert.pem()).unwrap();
        let (base, _) = client(&settings("https://localhost:8443", Some(&good))).unwrap();
        assert_eq!(base.as_str(), "https://localhost:8443/");

        let refused = |base_url: &str, path: &Path| {
            let e = client(&settings(base_url, Some(path))).unwrap_err();
            assert_eq!(e.key, "ca_cert", "{e:?}");
            assert!(e.problem.contains(&path.display().to_string()), "{e:?}");
            e.problem
        };
        let missing = dir.path().join("missing.pem");
        assert!(refused("https://x/", &missing).contains("cannot read"));
        let key_only = dir.path().join("key.pem");
        std::fs::write(&key_only, cert.key_pair.serialize_pem()).unwrap();
        assert!(refused("https://x/", &key_only).contains("no PEM certificate"));
        let text = dir.path().join("text.pem");
        std::fs::write(&text, "not a certificate at all\n").unwrap();
        assert!(refused("https://x/", &text).contains("no PEM certificate"));
        let torn = dir.path().join("torn.pem");
        std::fs::write(
            &torn,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        refused("https://x/", &torn);
        let not_der = dir.path().join("not-der.pem");
        std::fs::write(
            &not_der,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        refused("https://x/", &not_der);
        assert!(refused("http://x/", &good).contains("https://"));
    }
}
