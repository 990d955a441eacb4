//! W3C Trace Context for code outside the HTTP server: whether tracing is on, a span's
//! `traceparent`, headers for a partner call, and a stored `traceparent` turned back into
//! a parent or a link. Everything here is a no-op returning `None` while telemetry is off,
//! after one relaxed atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{Marked, Scope, Unsampled};

static ENABLED: AtomicBool = AtomicBool::new(false);

pub(super) fn set_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether spans are exported (an OpenTelemetry layer is installed).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A random id of this process, told apart from the process (or node) that created a
/// saga: a saga driven by another process links to its creator's trace instead of
/// continuing it.
pub fn process_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| rand::random::<u64>() | 1)
}

/// The W3C `traceparent` (and `tracestate`, when not empty) of `span`, if it has a valid
/// context. In an unsampled trace (the running code's, or `span`'s) it is the trace's
/// `traceparent` with flag `00` and no `tracestate`, built from its marker without
/// touching OpenTelemetry.
pub fn headers_of(span: &tracing::Span) -> Option<Vec<(&'static str, String)>> {
    if !enabled() {
        return None;
    }
    if let Some(marker) = super::current_unsampled().or_else(|| super::unsampled(span)) {
        return Some(vec![("traceparent", marker.traceparent())]);
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    let mut out = Vec::with_capacity(2);
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = carrier.remove(name).filter(|v| !v.is_empty()) {
            out.push((name, value));
        }
    }
    Some(out)
}

/// `span`'s `traceparent`, if telemetry is on and it has a valid context.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    headers_of(span)?
        .into_iter()
        .find(|(name, _)| *name == "traceparent")
        .map(|(_, v)| v)
}

/// The remote context in `traceparent` (and `tracestate`), or `None` for a missing or
/// invalid header (which the W3C rules say to ignore).
pub fn extract(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Context> {
    let traceparent = traceparent.filter(|t| well_formed(t))?;
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_string(), state.to_string());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The W3C shape the SDK's parser does not check itself: lower-case hex fields of exact
/// widths (it takes a 31-digit trace id), and for version 00 nothing after the flags.
fn well_formed(traceparent: &str) -> bool {
    let b = traceparent.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b[r].iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    b.len() >= 55
        && (b.len() == 55 || (&b[..2] != b"00" && b[55] == b'-'))
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(0..2)
        && hex(3..35)
        && hex(36..52)
        && hex(53..55)
}

/// The span context in a stored `traceparent`, for a span link.
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    extract(Some(traceparent), None).map(|cx| cx.span().span_context().clone())
}

/// The 32-hex-digit trace id of `span`, if telemetry is on and it has one (an unsampled
/// trace's too).
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    if let Some(marker) = super::current_unsampled().or_else(|| super::unsampled(span)) {
        return Some(marker.trace_id());
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Adds the `traceparent`/`tracestate` of the current span to a partner request.
pub fn inject(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match headers_of(&tracing::Span::current()) {
        Some(headers) => headers
            .into_iter()
            .fold(request, |r, (name, value)| r.header(name, value)),
        None => request,
    }
}

/// Where an actor message came from: the sender's span and when it was sent (to show the
/// time it waited in the mailbox), or the unsampled trace it was sent in. Empty and free
/// while telemetry is off.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    sent: Option<(tracing::Span, Instant)>,
    unsampled: Option<Unsampled>,
}

impl Origin {
    /// Where the running code is, now.
    pub fn current() -> Self {
        if !enabled() {
            return Origin::default();
        }
        match super::current_unsampled() {
            Some(marker) => Origin {
                sent: None,
                unsampled: Some(marker),
            },
            None => Origin {
                sent: Some((tracing::Span::current(), Instant::now())),
                unsampled: None,
            },
        }
    }

    /// The sender's span, in a kept trace (none while telemetry is off or the trace was
    /// dropped).
    pub fn span(&self) -> Option<&tracing::Span> {
        self.sent.as_ref().map(|(span, _)| span)
    }

    /// Microseconds since it was sent: its wait in the mailbox when asked on arrival.
    pub fn waited_us(&self) -> u64 {
        self.sent
            .as_ref()
            .map_or(0, |(_, at)| at.elapsed().as_micros() as u64)
    }

    /// [`Origin::waited_us`] while a span can show it, else `None`: as a span field it is
    /// then left out rather than logged as a wait of 0.
    pub fn mailbox_wait_us(&self) -> Option<u64> {
        self.sent
            .as_ref()
            .map(|(_, at)| at.elapsed().as_micros() as u64)
    }

    /// The sender's `traceparent`: its span's, or its unsampled trace's (flag `00`).
    pub fn traceparent(&self) -> Option<String> {
        match (self.unsampled, self.span()) {
            (Some(marker), _) => Some(marker.traceparent()),
            (None, Some(span)) => traceparent_of(span),
            (None, None) => None,
        }
    }

    /// Runs in the sender's unsampled trace (or in none) until the guard drops: spans made
    /// meanwhile follow the sender's sampling decision. Enter it before making a span
    /// whose parent is given explicitly.
    pub fn enter(&self) -> Marked {
        super::mark(self.unsampled)
    }

    /// `span`, in the sender's unsampled trace if it was sent in one.
    pub fn scope(&self, span: tracing::Span) -> Scope {
        Scope::new(span, self.unsampled)
    }

    /// The span `make` makes, made in the sender's trace: in an unsampled one it is
    /// marked, never exported, and not made at all unless logs may want it.
    pub fn scoped(&self, make: impl FnOnce() -> tracing::Span) -> Scope {
        if self.unsampled.is_some() && !super::log_spans() {
            return self.scope(tracing::Span::none());
        }
        let _marked = self.enter();
        self.scope(make())
    }

    /// The scope of handling the message, its span named `name` (`actor message`) in
    /// traces: a child of the sender's span with the mailbox wait. No span while telemetry
    /// is off, so the untraced path builds nothing, and when the sender was in no span
    /// (timers, start-up work), so a background message does not start a trace of its own.
    /// In a trace the head sampler dropped, no span either: the scope carries the decision.
    pub fn handling(&self, name: &'static str) -> Scope {
        match &self.sent {
            Some((parent, at)) if !parent.is_none() => Scope::new(
                tracing::info_span!(
                    parent: parent,
                    "actor.message",
                    otel.name = name,
                    actor.mailbox_wait_us = at.elapsed().as_micros() as u64,
                ),
                None,
            ),
            _ => self.scope(tracing::Span::none()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_traceparents_are_taken() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = span_context(good).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(span_context(bad).is_none(), "{bad:?}");
        }
        assert!(extract(None, Some("a=b")).is_none());
    }
}
