//! W3C Trace Context on the server side, used only while spans are exported
//! (`crate::telemetry::enabled`): the request span continues a valid incoming
//! `traceparent`/`tracestate` (an invalid one is ignored and a new trace starts), carries
//! the HTTP semantic-convention attributes, and its `traceparent` goes back on the
//! response. With telemetry off the middleware in `mod.rs` never calls in here.

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::telemetry;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The request span and the request id. Without a usable `X-Request-Id` from the client,
/// the id is the trace id, so the id a client sees is the one to look up in a trace
/// viewer.
pub(super) fn request_span(req: &ServiceRequest) -> (tracing::Span, String) {
    // Named now: once its context is read (for the trace id below) the exporter's span
    // exists and takes no new name.
    let route = req.match_pattern();
    let name = match &route {
        Some(route) => format!("{} {route}", req.method()),
        None => req.method().to_string(),
    };
    let span = tracing::info_span!(
        "request",
        request_id = Empty,
        trace_id = Empty,
        otel.name = name,
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = req.path(),
        http.route = route,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    let header = |name: &HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(parent) = telemetry::extract(header(&TRACEPARENT), header(&TRACESTATE)) {
        let _ = span.set_parent(parent);
    }
    let trace_id = telemetry::trace_id_of(&span);
    let id = super::client_request_id(req)
        .map(str::to_owned)
        .or_else(|| trace_id.clone())
        .unwrap_or_else(super::new_request_id);
    span.record("request_id", id.as_str());
    if let Some(trace_id) = &trace_id {
        span.record("trace_id", trace_id.as_str());
    }
    (span, id)
}

/// Records the status and sends the span's `traceparent` back.
pub(super) fn finish<B>(span: &tracing::Span, res: &mut ServiceResponse<B>) {
    let status = res.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(value) =
        telemetry::traceparent_of(span).and_then(|v| HeaderValue::from_str(&v).ok())
    {
        res.headers_mut().insert(TRACEPARENT, value);
    }
}
