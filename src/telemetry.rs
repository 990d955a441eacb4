//! Logging and distributed tracing: tracing to stderr, human or JSON; spans exported over
//! OTLP/HTTP when `[telemetry]` names an endpoint (`export.rs`), with W3C Trace Context
//! helpers for partner calls and stored sagas (`context.rs`); panics reported through
//! tracing (with the thread, which names the arbiter) instead of raw stderr text.

mod context;
mod export;
mod log_ids;
mod sampling;
mod scope;

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{filter_fn, FilterExt as _, LevelFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

pub use context::{
    enabled, extract, headers_of, inject, process_id, span_context, trace_id_of, traceparent_of,
    Origin,
};
pub use export::dropped_spans;
pub use sampling::{unsampled, Head, Unsampled};
pub use scope::{current_unsampled, exporting, log_spans, mark, Marked, Scope, Traced, TracedExt};

use crate::config::{LogFormat, TelemetryConfig};

/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_BOUND: Duration = Duration::from_secs(2);

/// Keeps the exporter; [`TelemetryGuard::shutdown`] flushes it (bounded).
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports what is queued, waiting at most `FLUSH_BOUND` (2 s); blocks the calling
    /// thread, so call it once the server has stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown_with_timeout(FLUSH_BOUND) {
                tracing::warn!(error = %e, dropped = dropped_spans(), "Trace export did not finish before shutdown.");
            }
        }
    }
}

/// Installs the global subscriber and panic hook. `RUST_LOG` overrides `level`.
/// Calling it twice is harmless (the second subscriber is ignored).
pub fn init(format: LogFormat, level: &str) {
    // Without an endpoint there is no exporter to build, so this cannot fail.
    let _ = init_with(format, level, &TelemetryConfig::default());
}

/// [`init`], plus span export when `telemetry.otlp_endpoint` is set. Without one no
/// OpenTelemetry layer is installed at all, so spans cost what they cost before.
pub fn init_with(
    format: LogFormat,
    level: &str,
    telemetry: &TelemetryConfig,
) -> anyhow::Result<TelemetryGuard> {
    let provider = export::provider(telemetry)?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(colour_wanted())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json if provider.is_some() => fmt
            .json()
            .flatten_event(true)
            .map_event_format(log_ids::WithTraceIds)
            .boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    // Each layer has its own filter, so the log level does not decide what a trace holds:
    // at `warn`, a global filter would drop every info span before the exporter saw it.
    // The log layer keeps the log level for spans too: letting it see every info span
    // would format each span's fields on every request. So a JSON line names its trace
    // when its span is logged (e.g. `RUST_LOG=warn,wayfare=info`), as before.
    let log = log_filter(level);
    // Whether any info span may be logged: spans made only for logs in a dropped trace
    // (`scope`) are skipped otherwise.
    scope::set_log_spans(log.max_level_hint().is_none_or(|l| l >= LevelFilter::INFO));
    let fmt = fmt.with_filter(log);
    // Head sampling wraps the OpenTelemetry layer inside the filter, so it sees the
    // spans (and the parents) the OpenTelemetry layer would see.
    let otel = provider.as_ref().map(|p| {
        sampling::set_ratio(telemetry.sample_ratio);
        sampling::HeadSampled::new(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("wayfare"))
                .with_location(false)
                .with_threads(false),
        )
        // The hint keeps the global maximum at `info` when logs are quieter: without
        // one it is `trace`, and every `log` record of the dependencies (actix-http
        // writes some per request) is then bridged into tracing, only to be dropped.
        .with_filter(
            log_filter(level).or(filter_fn(traced_span).with_max_level_hint(LevelFilter::INFO)),
        )
    });
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        context::set_enabled();
    }
    std::panic::set_hook(Box::new(move |info| {
        // Replaces any earlier hook, so do the supervisor's part here too.
        crate::supervisor::mark_polling_actor_down();
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), %location, panic = %message, "Panic caught; the supervisor restarts the actor.");
    }));
    Ok(TelemetryGuard { provider })
}

/// What is logged: `RUST_LOG` when set and valid, else `level`.
fn log_filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The spans a trace is made of (info and above), whatever the log level.
fn traced_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && *meta.level() <= tracing::Level::INFO
}

/// Colour only for a person at a terminal: a log file or a pipe to a collector would keep
/// the escape codes as text. `NO_COLOR` (no-color.org) turns it off at a terminal too.
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    use opentelemetry::trace::TraceId;

    /// A span made in a dropped trace is marked, never exported, whatever the log level
    /// (the export layer sees every info span), and one made outside it is kept.
    #[test]
    fn spans_made_in_a_dropped_trace_are_marked_at_every_log_level() {
        let provider = SdkTracerProvider::builder().build();
        let dropped = Unsampled::for_trace(TraceId::from(9u128));
        for level in ["warn", "info"] {
            let subscriber = tracing_subscriber::registry().with(
                sampling::HeadSampled::new(
                    tracing_opentelemetry::layer().with_tracer(provider.tracer("t")),
                )
                .with_filter(EnvFilter::new(level).or(filter_fn(traced_span))),
            );
            tracing::subscriber::with_default(subscriber, || {
                let kept = Head::Keep.root(|| tracing::info_span!(parent: None, "kept"));
                assert_eq!(unsampled(&kept), None, "{level}");
                let _marked = mark(Some(dropped));
                let made = tracing::info_span!(parent: None, "made");
                assert_eq!(unsampled(&made), Some(dropped), "{level}");
                // Even a child of a kept span follows the trace the code runs in.
                let child = tracing::info_span!(parent: &kept, "child");
                assert_eq!(unsampled(&child), Some(dropped), "{level}");
            });
        }
    }
}
