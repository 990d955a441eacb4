//! Operator routes: `GET /health` (open, for load balancers; failure details and parked
//! bookings only with the operator token), `GET /metrics` (operator
//! token unless `admin.protect_metrics = false`), `GET /v1/system/supervisors` and
//! `GET /v1/system/cluster` (operator token).

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};

use super::auth::Operator;
use super::problem::Problem;
use super::reply::JsonReply;
use super::router::Router;
use super::AppState;
use crate::domain::access::Caller;
use crate::runtime::{ClusterView, Health};
use crate::supervisor::SupervisorSnapshot;

/// Registers the routes.
pub(crate) fn routes(r: &mut Router) {
    r.add::<__path_health>(web::to(health))
        .add::<__path_metrics>(web::to(metrics))
        .add::<__path_supervisors>(web::to(supervisors))
        .add::<__path_cluster>(web::to(cluster));
}

/// 200 with the checks when healthy; 503 with `Retry-After` and the failing checks when not.
#[utoipa::path(
    get,
    path = "/health",
    tag = "system",
    operation_id = "health",
    security((), ("operatorToken" = [])),
    responses(
        (status = 200, description = "Healthy; failure details only for the operator", body = Health),
        (status = 503, description = "Unhealthy, with the failing checks", body = Health),
    ),
)]
async fn health(state: web::Data<AppState>, caller: Option<Caller>) -> HttpResponse {
    let mut health = state.runtime.health().await;
    // A bad credential is not an error here: load balancers probe without one.
    if caller != Some(Caller::Operator) {
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

/// Prometheus metrics (operator token unless `admin.protect_metrics = false`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    operation_id = "metrics",
    security(("operatorToken" = [])),
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")),
)]
async fn metrics(
    state: web::Data<AppState>,
    operator: Result<Operator, Problem>,
) -> Result<HttpResponse, Problem> {
    if state.runtime.config().admin.protect_metrics {
        operator?;
    }
    let sagas = Some(state.runtime.saga_counts(0));
    let body = state.metrics.render(sagas);
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        ))
        .body(body))
}

/// The supervision tree (operator only).
#[utoipa::path(
    get,
    path = "/v1/system/supervisors",
    tag = "operator",
    operation_id = "supervisors",
    security(("operatorToken" = [])),
    responses((status = 200, description = "Supervisors, children, states and mailboxes", body = SupervisorSnapshot)),
)]
async fn supervisors(state: web::Data<AppState>, _: Operator) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json_line(state.runtime.supervision_tree()))
}

#[utoipa::path(
    get,
    path = "/v1/system/cluster",
    tag = "operator",
    operation_id = "cluster",
    security(("operatorToken" = [])),
    responses(
        (status = 200, description = "The nodes sharing this node's database, with heartbeat ages and the sagas each holds (on sled: this node alone)", body = ClusterView),
    ),
)]
async fn cluster(state: web::Data<AppState>, _: Operator) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Ok().json_line(state.runtime.cluster().await?))
}
