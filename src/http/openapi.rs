//! `GET /v1/openapi.json`: the OpenAPI description of this API, derived from the code. Each
//! handler carries its `#[utoipa::path]`; the [`Router`] routes a handler by that
//! description and collects its operation, so every route is documented by construction.
//! The router also gathers the schemas those operations name (reply bodies and all they
//! refer to, from `#[derive(ToSchema)]` on the reply types). This file adds what is
//! common: info, tags, the two bearer schemes, the shared problem responses, and the
//! request and problem schemas.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::OpenApi;

use super::problem::Problem;
use super::router::Router;

/// Registers the route.
pub(crate) fn routes(r: &mut Router) {
    r.add::<__path_document>(web::to(document));
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wayfare",
        description = "Actor-based runtime for a travel marketplace: accounts and wallets, \
            search, booking sagas. Every response carries X-Request-Id. Errors are \
            application/problem+json (RFC 9457). Request bodies are exactly one JSON \
            document and refuse unknown fields. Authentication: Authorization: Bearer \
            <credential>, where the credential is a customer's API key (acts on its own \
            account) or the operator token (acts on every account and reaches operator \
            routes)."
    ),
    tags(
        (name = "accounts", description = "Accounts, wallets and API keys"),
        (name = "search", description = "Hotel and flight search"),
        (name = "bookings", description = "Booking sagas"),
        (name = "operator", description = "Operator-only routes"),
        (name = "system", description = "Health, metrics and this document"),
    ),
    components(schemas(
        Problem,
        crate::domain::money::Money,
        super::accounts::CreateAccount,
        super::accounts::Credit,
        super::bookings::CreateBooking,
    ))
)]
struct ApiDoc;

/// The shared problem responses: `(status, component name, description)`.
const PROBLEMS: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "invalid-input, invalid-json, invalid-query or invalid-path",
    ),
    (
        "401",
        "Unauthorized",
        "unauthorized: no credential, or a malformed Authorization header",
    ),
    (
        "403",
        "Forbidden",
        "forbidden: the credential may not act here (another account's key, a key on an \
         operator route, or no admin.token configured)",
    ),
    ("404", "NotFound", "not-found: unknown account or booking"),
    (
        "405",
        "MethodNotAllowed",
        "method-not-allowed: the path takes other methods (see Allow)",
    ),
    (
        "409",
        "Conflict",
        "conflict (an Idempotency-Key again with another body, or an email in use), \
         insufficient-points or wallet-conflict",
    ),
    (
        "408",
        "BodyTimeout",
        "body-timeout: the body did not arrive within server.body_timeout_ms (plus 1 s per \
         server.min_body_bytes_per_sec bytes); the connection is closed",
    ),
    (
        "413",
        "BodyTooLarge",
        "body-too-large: over server.max_body_bytes",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "unsupported-media-type: body not application/json",
    ),
    (
        "429",
        "TooManyRequests",
        "rate-limited: over the rate limit of the API key's account, or of the client address \
         for a request without an API key ([limits]); retry after Retry-After seconds",
    ),
    (
        "503",
        "Unavailable",
        "overloaded, actor-crashed, unavailable or store-unavailable (with Retry-After)",
    ),
    (
        "504",
        "DeadlineExceeded",
        "deadline-exceeded: an actor did not answer in time",
    ),
];

/// The document for the routes in `router`.
pub(crate) fn build(router: &Router) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.paths = router.paths();
    let components = doc.components.get_or_insert_with(Default::default);
    for (name, schema) in router.schemas() {
        components.schemas.entry(name).or_insert(schema);
    }
    components.add_security_scheme(
        "apiKey",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A customer's API key (`wf_...`), issued once by POST /v1/accounts or \
                     POST /v1/accounts/{id}/api-key. It acts on its own account only.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "operatorToken",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The configured admin.token (set WAYFARE__ADMIN__TOKEN). It may act on \
                     every account; with none configured, operator routes answer 403.",
                ))
                .build(),
        ),
    );
    for (status, name, description) in PROBLEMS {
        let mut response = ResponseBuilder::new().description(*description).content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
        if *status == "429" {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Object::with_type(Type::Integer))
                    .description(Some("Whole seconds until the bucket holds a token again"))
                    .build(),
            );
        }
        let response: Response = response.build();
        components
            .responses
            .insert((*name).to_owned(), response.into());
    }
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_problems(operation);
        }
    }
    doc
}

/// Every operation may answer 405 (another method), 429 (the probes and static documents
/// only for a credential they refuse), 503 and 504; one with parameters or a body 400; one
/// with a body 408, 413 and 415; one that takes a credential 401 and 403.
/// Responses an operation lists itself (a 404, a 409) are kept as written.
fn add_problems(operation: &mut Operation) {
    let has_input = operation.parameters.as_ref().is_some_and(|p| !p.is_empty())
        || operation.request_body.is_some();
    let has_body = operation.request_body.is_some();
    let secured = operation.security.as_ref().is_some_and(|reqs| {
        // `security(())` (open) serializes as one empty requirement.
        serde_json::to_value(reqs).is_ok_and(|v| v != serde_json::json!([{}]))
    });
    let param =
        |kind: &str| {
            operation.parameters.iter().flatten().any(|p| {
                serde_json::to_value(p).is_ok_and(|v| v["in"] == kind || v["name"] == kind)
            })
        };
    // Whatever names an account or booking may find none; whatever is idempotent may
    // meet a replay with another body.
    let names_something = param("path") || operation.request_body.is_some();
    let idempotent = param("Idempotency-Key");
    // Opening an account refuses an email that another account has (one email per account).
    let unique = operation.operation_id.as_deref() == Some("createAccount");
    for (status, name, _) in PROBLEMS {
        let wanted = match *status {
            "400" => has_input,
            "404" => names_something,
            "409" => idempotent || unique,
            "401" | "403" => secured,
            "408" | "413" | "415" => has_body,
            // Every route: the exempt ones too, for a credential they refuse.
            "405" | "429" | "503" | "504" => true,
            _ => false,
        };
        if wanted {
            operation
                .responses
                .responses
                .entry((*status).to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))));
        }
    }
}

/// The OpenAPI document (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "system",
    operation_id = "openapi",
    security(()),
    responses((status = 200, description = "This document", body = Object)),
)]
async fn document() -> HttpResponse {
    static DOCUMENT: OnceLock<Vec<u8>> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| {
        super::reply::json_line(&build(&super::router())).unwrap_or_else(|e| {
            tracing::error!(error = %e, "OpenAPI document did not serialize.");
            Vec::new()
        })
    });
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_routed_operation_is_in_the_document_with_its_problems() {
        let router = super::super::router();
        let doc = serde_json::to_value(build(&router)).unwrap();
        if std::env::var_os("WAYFARE_DUMP_OPENAPI").is_some() {
            println!("{}", serde_json::to_string_pretty(&doc).unwrap());
        }
        for (method, path) in router.table() {
            let op = &doc["paths"][path.as_str()][method.as_str().to_lowercase()];
            assert!(op.is_object(), "{method} {path} is not documented");
            assert!(op["responses"]["503"].is_object(), "{method} {path}");
        }
        let open = &doc["paths"]["/v1/accounts"]["post"]["responses"];
        assert!(open["409"].is_object(), "an email in use is a 409");
        let credit = &doc["paths"]["/v1/accounts/{id}/wallet/credits"]["post"]["responses"];
        for status in ["400", "403", "404", "409", "413", "415", "429"] {
            assert!(credit[status].is_object(), "credits lacks {status}");
        }
        let search = &doc["paths"]["/v1/search/hotels"]["get"]["responses"];
        assert!(search["429"].is_object(), "search is rate limited");
        // Exempt routes are limited only for a credential they refuse, but limited.
        for path in super::super::limits::EXEMPT {
            let op = &doc["paths"][path]["get"]["responses"];
            assert!(op["429"].is_object(), "{path}");
        }
        assert!(credit["408"].is_object(), "a body may be too slow");
        let limited = &doc["components"]["responses"]["TooManyRequests"];
        assert!(limited["headers"]["Retry-After"].is_object(), "{limited}");
    }
}
