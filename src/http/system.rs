//! Operator routes: `GET /health` (open, for load balancers; failure details and parked
//! bookings only with the operator token), `GET /metrics` (operator
//! token unless `admin.protect_metrics = false`), `GET /v1/system/supervisors` (operator
//! token).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::{caller, require_operator};
use super::problem::Problem;
use super::reply::JsonReply;
use super::router::Router;
use super::AppState;
use crate::domain::access::Caller;

/// Registers the routes.
pub(crate) fn routes(r: &mut Router) {
    r.add(Method::GET, "/health", web::to(health))
        .add(Method::GET, "/metrics", web::to(metrics))
        .add(Method::GET, "/v1/system/supervisors", web::to(supervisors));
}

/// 200 with the checks when healthy; 503 with `Retry-After` and the failing checks when not.
async fn health(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let mut health = state.runtime.health().await;
    if !matches!(caller(&req, &state), Ok(Caller::Operator)) {
        health = health.redacted();
    }
    if health.is_ok() {
        HttpResponse::Ok().json_line(health)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "5"))
            .json_line(health)
    }
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    if state.runtime.config().admin.protect_metrics {
        require_operator(&req, &state, "reading metrics")?;
    }
    let sagas = state.runtime.saga_counts().await.ok();
    let body = state.metrics.render(&state.runtime, sagas.as_ref());
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        ))
        .body(body))
}

async fn supervisors(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    require_operator(&req, &state, "reading the supervision tree")?;
    Ok(HttpResponse::Ok().json_line(state.runtime.supervision_tree()))
}
