//! The operator console: one page served by wayfare itself that shows supervision and
//! resilience together, live, and lets the operator retry a parked saga.
//!
//! - `GET /console`, `/console/app.js`, `/console/app.css`: static assets compiled into
//!   the binary (`include_str!`), no data in them, a strict Content-Security-Policy (so
//!   the script and style are files, never inline), revalidated by `ETag`.
//! - `GET /v1/system/events` (operator token): the live feed, newline-delimited JSON, one
//!   snapshot a second and at once on a restart or a breaker transition (see `feed.rs`).
//!   A client that does not ask for `application/x-ndjson` gets one snapshot as JSON.
//!
//! The page keeps the operator token in `sessionStorage` (this tab only) and sends it as
//! `Authorization: Bearer`; it reads the feed with a streamed `fetch` rather than
//! `EventSource`, because `EventSource` cannot send an `Authorization` header and the
//! token must never travel in a URL or a cookie. See `docs/console.md`.

mod feed;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::auth::Operator;
use super::problem::Problem;
use super::router::Router;
use super::AppState;
use feed::{ConsoleSnapshot, Feed};

/// The page: a static shell with the sign-in form; everything else is drawn by the script.
const INDEX_HTML: &str = include_str!("console/index.html");
/// The script (hand-written, no framework, no build step).
const APP_JS: &str = include_str!("console/app.js");
/// The style sheet (light and dark by `prefers-color-scheme`).
const APP_CSS: &str = include_str!("console/app.css");

/// The console's Content-Security-Policy: nothing inline, nothing from elsewhere, no
/// framing, no form posts (the sign-in form is handled by the script).
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Live feeds open at once per HTTP worker; one more is refused with 503. Each feed reads
/// the tree, the sellers and the saga counts once a second.
pub(super) const MAX_FEEDS_PER_WORKER: usize = 8;

/// A feed ends after this long (the page reconnects at once), so no response lives for
/// ever however the client behaves.
pub(super) const MAX_FEED_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The media type of the live feed.
const NDJSON: &str = "application/x-ndjson";

/// Registers the routes.
pub(crate) fn routes(r: &mut Router) {
    r.add::<__path_page>(web::to(page))
        .add::<__path_script>(web::to(script))
        .add::<__path_style>(web::to(style))
        .add::<__path_events>(web::to(events));
}

/// The live feeds' gate. Called once per HTTP worker, so the gate is per worker.
pub(crate) fn app_data(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::Data::new(FeedGate::default()));
}

/// Counts the live feeds of one worker.
#[derive(Debug, Default)]
struct FeedGate {
    open: Arc<AtomicUsize>,
}

/// A feed's place at the gate, given back when the feed (its response body) is dropped,
/// which is when the client goes away.
#[derive(Debug)]
struct FeedSlot(Arc<AtomicUsize>);

impl FeedGate {
    fn enter(&self) -> Option<FeedSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_FEEDS_PER_WORKER).then_some(n + 1)
            })
            .ok()
            .map(|_| FeedSlot(self.open.clone()))
    }
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `"<first 16 hex digits of the SHA-256>"` of an asset, computed once.
fn etag(cell: &'static OnceLock<String>, body: &str) -> &'static str {
    cell.get_or_init(|| {
        let digest = Sha256::digest(body.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    })
}

/// An asset with the console's security headers; 304 when the client has this version.
fn asset(
    req: &HttpRequest,
    body: &'static str,
    content_type: &'static str,
    tag: &str,
) -> HttpResponse {
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .insert_header((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        // Revalidate every time (a new binary may carry new assets); the ETag makes that a
        // 304 without a body.
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .insert_header((header::ETAG, tag.to_owned()));
    if fresh {
        res.finish()
    } else {
        res.body(body)
    }
}

/// The console page (no data: it signs in, then the script fetches the feed).
#[utoipa::path(
    get,
    path = "/console",
    tag = "operator",
    operation_id = "console",
    security(()),
    responses((status = 200, description = "The console page (HTML, no data)", body = String, content_type = "text/html")),
)]
async fn page(req: HttpRequest) -> HttpResponse {
    static TAG: OnceLock<String> = OnceLock::new();
    asset(
        &req,
        INDEX_HTML,
        "text/html; charset=utf-8",
        etag(&TAG, INDEX_HTML),
    )
}

/// The console's script.
#[utoipa::path(
    get,
    path = "/console/app.js",
    tag = "operator",
    operation_id = "consoleScript",
    security(()),
    responses((status = 200, description = "The console's script", body = String, content_type = "text/javascript")),
)]
async fn script(req: HttpRequest) -> HttpResponse {
    static TAG: OnceLock<String> = OnceLock::new();
    asset(
        &req,
        APP_JS,
        "text/javascript; charset=utf-8",
        etag(&TAG, APP_JS),
    )
}

/// The console's style sheet.
#[utoipa::path(
    get,
    path = "/console/app.css",
    tag = "operator",
    operation_id = "consoleStyle",
    security(()),
    responses((status = 200, description = "The console's style sheet", body = String, content_type = "text/css")),
)]
async fn style(req: HttpRequest) -> HttpResponse {
    static TAG: OnceLock<String> = OnceLock::new();
    asset(
        &req,
        APP_CSS,
        "text/css; charset=utf-8",
        etag(&TAG, APP_CSS),
    )
}

/// Whether the client asked for the stream (`Accept: application/x-ndjson`).
fn wants_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(NDJSON))
        })
}

/// `GET /v1/system/events` (operator token): with `Accept: application/x-ndjson`, a
/// stream of snapshots, one JSON object a line, one a second and at once on a restart or
/// a breaker transition; it ends when the client goes away or after
/// [`MAX_FEED_LIFETIME`]. Without that `Accept`, one snapshot as `application/json`.
/// 401 without a credential, 403 for a customer key or with no token configured, 503
/// past [`MAX_FEEDS_PER_WORKER`] feeds.
#[utoipa::path(
    get,
    path = "/v1/system/events",
    tag = "operator",
    operation_id = "systemEvents",
    security(("operatorToken" = [])),
    responses(
        (
            status = 200,
            description = "With `Accept: application/x-ndjson`: a stream of snapshots, one JSON object a line (one a second, and at once on a restart, a breaker transition or a parked saga): `seq`, `at`, `reasons`, `tree`, `sellers`, `partners`, `sagas`, `http`, `faults`. Otherwise one snapshot as JSON.",
            body = ConsoleSnapshot,
        ),
    ),
)]
async fn events(
    req: HttpRequest,
    state: web::Data<AppState>,
    gate: web::Data<FeedGate>,
    _: Operator,
) -> Result<HttpResponse, Problem> {
    let mut feed = Feed::new(state.runtime.clone(), state.metrics.clone());
    if !wants_stream(&req) {
        let snapshot = feed.snapshot(vec!["hello"]).await;
        return Ok(HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .json(snapshot));
    }
    let slot = gate.enter().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            format!("at most {MAX_FEEDS_PER_WORKER} live feeds per worker; close a console"),
        )
        .retry_after(5)
    })?;
    let ends = Instant::now() + MAX_FEED_LIFETIME;
    // The body stream owns the feed and the slot: when the client disconnects, actix drops
    // the body, which ends the loop and frees the slot.
    let lines = futures_util::stream::unfold((feed, slot), move |(mut feed, slot)| async move {
        if Instant::now() >= ends {
            return None;
        }
        let snapshot = feed.next().await;
        match serde_json::to_vec(&snapshot) {
            Ok(mut line) => {
                line.push(b'\n');
                Some((Ok::<_, Infallible>(Bytes::from(line)), (feed, slot)))
            }
            Err(error) => {
                tracing::error!(%error, "Console snapshot did not serialize; ending the feed.");
                None
            }
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(NDJSON)))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // Proxies that buffer (nginx) would hold the snapshots back.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(lines))
}
