//! `GET /v1/openapi.json`: the hand-written OpenAPI 3.0 description of this API, embedded
//! at build time. `tests/openapi.rs` checks it against the routes both ways.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpResponse};

use super::router::Router;

/// The document, as written in `openapi.json` next to this file.
const DOCUMENT: &str = include_str!("openapi.json");

/// Registers the route.
pub(crate) fn routes(r: &mut Router) {
    r.add(Method::GET, "/v1/openapi.json", web::to(document));
}

async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(DOCUMENT)
}
