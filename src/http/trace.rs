//! W3C Trace Context on the server side, used only while spans are exported
//! (`crate::telemetry::enabled`). The request decides whether its trace is kept (head
//! sampling): a valid incoming `traceparent` decides by its sampled flag, otherwise
//! `sample_ratio` does (an invalid header is ignored). A kept request span continues the
//! incoming trace, carries the HTTP semantic-convention attributes, and its `traceparent`
//! goes back on the response. An unsampled request runs in a scope marked with the
//! decision (`telemetry::Scope`), so that no span below it is built, and answers a
//! `traceparent` with flag `00`. With
//! telemetry off the middleware in `mod.rs` never calls in here.

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::telemetry::{self, Head, Scope};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The request span, the request id and whether the trace is kept. Kept and without a
/// usable `X-Request-Id` from the client, the id is the trace id, so the id a client sees
/// is the one to look up in a trace viewer; unsampled, the id is made as with telemetry
/// off (there is nothing to look up), and the scope carries the decision instead of a span.
pub(super) fn request_span(req: &ServiceRequest) -> (Scope, String, Head) {
    let header = |name: &HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    // `tracestate` matters only beside a `traceparent`; most requests have neither.
    let parent = header(&TRACEPARENT)
        .and_then(|traceparent| telemetry::extract(Some(traceparent), header(&TRACESTATE)));
    let head = Head::decide(parent.as_ref());
    if let Head::Drop(marker) = head {
        let id = super::request_id(req);
        // The span of telemetry off, for logs only (made in the marked trace, so never
        // exported), and not made at all at a log level that leaves info spans out.
        let span = if telemetry::log_spans() {
            let _marked = telemetry::mark(Some(marker));
            tracing::info_span!(parent: None, "request", request_id = %id)
        } else {
            tracing::Span::none()
        };
        return (Scope::new(span, Some(marker)), id, head);
    }
    // Named now: once its context is read (for the trace id below) the exporter's span
    // exists and takes no new name.
    let route = req.match_pattern();
    let name = match &route {
        Some(route) => format!("{} {route}", req.method()),
        None => req.method().to_string(),
    };
    let span = head.root(|| {
        tracing::info_span!(
            parent: None,
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
        )
    });
    if let Some(parent) = parent {
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
    (Scope::new(span, None), id, head)
}

/// Records the status and sends the span's `traceparent` back (flag `00`, from the
/// decision alone, when the trace is not kept).
pub(super) fn finish<B>(span: &tracing::Span, head: Head, res: &mut ServiceResponse<B>) {
    if let Head::Drop(marker) = head {
        if let Ok(value) = HeaderValue::from_bytes(&marker.traceparent_bytes()) {
            res.headers_mut().insert(TRACEPARENT, value);
        }
        return;
    }
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
