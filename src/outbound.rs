//! Plumbing shared by the HTTP clients of partners (the HTTP seller, the HTTP payment
//! gateway): base URLs that paths cannot escape, percent-encoded path segments, reply bodies
//! read up to a bound and no further, and transport errors with their causes spelled out.
//! What a status or a body *means* stays with each client.

use std::error::Error as StdError;

use reqwest::Url;

use crate::domain::breaker::InvalidSetting;

/// Parses a partner's base URL (the `base_url` key): plain `http://host[:port][/path]`,
/// with a trailing slash so joined paths stay beneath it.
pub(crate) fn base_url(raw: &str) -> Result<Url, InvalidSetting> {
    let mut url = Url::parse(raw).map_err(|e| InvalidSetting::new("base_url", e.to_string()))?;
    if url.scheme() != "http" {
        return Err(InvalidSetting::new(
            "base_url",
            "only http:// is supported (no TLS backend is built in)",
        ));
    }
    if url.cannot_be_a_base() || url.query().is_some() {
        return Err(InvalidSetting::new(
            "base_url",
            "must be a plain http://host[:port][/path] URL",
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
    fn base_urls_are_plain_http_and_paths_stay_beneath_them() {
        assert_eq!(base_url("https://x/").unwrap_err().key, "base_url");
        assert_eq!(base_url("http://x/?q=1").unwrap_err().key, "base_url");
        let base = base_url("http://h:1/api/v2").unwrap();
        assert_eq!(
            join(&base, &["bookings", "a/b?c d", "cancel"])
                .unwrap()
                .as_str(),
            "http://h:1/api/v2/bookings/a%2Fb%3Fc%20d/cancel"
        );
    }
}
