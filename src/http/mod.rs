//! The thin HTTP layer (actix-web 4): parse and validate, call [`Runtime`], map the reply
//! or error. It owns no state and no business rule, and never touches the store.
//!
//! One `routes(&mut Router)` per area (`accounts.rs`, `search.rs`, `bookings.rs`,
//! `system.rs`) adds each handler by its `#[utoipa::path]`, which also feeds the OpenAPI
//! document (`openapi.rs`); input is parsed by the extractors in `extract.rs` and
//! `auth.rs`; errors become problems in `problem.rs`, JSON replies are written by
//! `reply.rs`; the middleware here gives every request an id (the
//! `X-Request-Id` header in and out), a tracing span that follows its messages into the
//! actors (continuing the client's W3C trace when spans are exported: `trace.rs`), and
//! metrics; inside it, `limits.rs` applies the rate limits of `[limits]`.

mod accounts;
mod auth;
mod bookings;
mod console;
mod deadline;
mod extract;
mod limits;
mod metrics;
mod openapi;
mod problem;
mod reply;
mod router;
mod search;
mod system;
mod trace;

use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{from_fn, Condition, Next};
use actix_web::{web, App, HttpServer};

pub use metrics::HttpMetrics;
pub use problem::Problem;

use crate::telemetry::{Scope, TracedExt as _};
use crate::Runtime;

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// The runtime.
    pub runtime: Runtime,
    /// Metrics recorded by the middleware.
    pub metrics: HttpMetrics,
    /// Request body bound.
    pub max_body: usize,
    /// How long a request body may take to arrive (`server.body_timeout_ms`,
    /// `server.min_body_bytes_per_sec`).
    pub body_deadline: extract::BodyDeadline,
    /// Rate-limit buckets, shared by every worker.
    pub(crate) limits: limits::Limits,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every area's routes.
fn router() -> router::Router {
    let mut r = router::Router::default();
    accounts::routes(&mut r);
    search::routes(&mut r);
    bookings::routes(&mut r);
    system::routes(&mut r);
    console::routes(&mut r);
    openapi::routes(&mut r);
    r
}

/// `(METHOD, path pattern)` of every route [`configure`] registers, from the same table.
pub fn route_table() -> Vec<(String, String)> {
    router()
        .table()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path))
        .collect()
}

/// Registers every route and the extractor error handlers. A known path asked with a
/// method it does not take is a 405 problem with `Allow`; an unknown path a 404 problem.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PathConfig::default().error_handler(extract::path_error));
    console::app_data(cfg);
    router().register(cfg);
    cfg.default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(Problem::no_route())
    }));
}

/// A client-supplied request id is kept when it is short and plain; otherwise a new one
/// is made, so ids in logs are never attacker-shaped.
fn request_id(req: &ServiceRequest) -> String {
    client_request_id(req).map_or_else(new_request_id, str::to_owned)
}

/// The client's `X-Request-Id`, if it is short and plain.
fn client_request_id(req: &ServiceRequest) -> Option<&str> {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
}

/// A random (v4) UUID from the thread's userspace generator: `Uuid::new_v4` asks the
/// kernel for every id, a system call per request.
fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .simple()
        .to_string()
}

async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let traced = crate::telemetry::enabled();
    // Untraced, the id is the span's only field: a log subscriber formats every field of
    // a span when it is created, on every request, while method and path matter only to
    // the few requests that log something (the failure below names them).
    let (scope, id, head) = if traced {
        let (scope, id, head) = trace::request_span(&req);
        (scope, id, Some(head))
    } else {
        let id = request_id(&req);
        let span = tracing::info_span!("request", request_id = %id);
        (Scope::new(span, None), id, None)
    };
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let mut res = next.call(req).traced(scope.clone()).await?;
    let status = res.status().as_u16();
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    if let Some(head) = head {
        trace::finish(scope.span(), head, &mut res);
    }
    if let Some(state) = state {
        // Set on the resource the request was routed to. A request refused before routing
        // (rate limits, an expired deadline) has none: its pattern is looked up by name,
        // the slow way, which only refusals and unknown paths take.
        let req = res.request();
        let route = req
            .app_data::<router::RouteIndex>()
            .map(|r| r.0)
            .or_else(|| {
                req.match_pattern()
                    .and_then(|pattern| state.metrics.route_index(&pattern))
            });
        state
            .metrics
            .observe(&method, route, status, started.elapsed());
    }
    if status >= 500 {
        let path = res.request().path();
        scope.in_scope(|| tracing::warn!(status, %method, path, "Request failed."));
    }
    Ok(res)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (within `server.shutdown_timeout_secs`) and returns.
/// The runtime is not shut down here: its owner does that.
pub async fn serve(
    runtime: Runtime,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = runtime.config().clone();
    let state = web::Data::new(AppState {
        metrics: HttpMetrics::new(runtime.clone()),
        runtime,
        max_body: config.server.max_body_bytes,
        body_deadline: extract::BodyDeadline {
            timeout: Duration::from_millis(config.server.body_timeout_ms),
            min_bytes_per_sec: config.server.min_body_bytes_per_sec,
        },
        limits: limits::Limits::new(&config.limits),
    });
    let expiry = deadline::RequestExpiry::new(&config);
    let limited = config.limits.enabled;
    if !limited {
        tracing::warn!("Rate limits are off (limits.enabled = false): for benchmarks only.");
    }
    let server = HttpServer::new(move || {
        // The last `wrap` runs first: ids and metrics see the refusals of the rate limits
        // and of expired requests too; an expired request costs no rate-limit token.
        let expiry = expiry.clone();
        App::new()
            .app_data(state.clone())
            .wrap(Condition::new(limited, from_fn(limits::limit)))
            .wrap(Condition::new(
                expiry.enabled(),
                from_fn(move |req, next| expiry.clone().check(req, next)),
            ))
            .wrap(from_fn(observe))
            .configure(configure)
    })
    .workers(config.http_workers())
    .max_connections(config.server.max_connections)
    .shutdown_timeout(config.server.shutdown_timeout_secs)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    let running = actix_rt::spawn(server);
    shutdown.await;
    tracing::info!("Shutting down: no new connections; finishing in-flight requests.");
    handle.stop(true).await;
    match tokio::time::timeout(
        Duration::from_secs(config.server.shutdown_timeout_secs + 5),
        running,
    )
    .await
    {
        Ok(Ok(result)) => result,
        _ => Ok(()),
    }
}
