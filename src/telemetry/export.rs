//! The OTLP pipeline: a sampler that keeps what the head sampler let through, a bounded queue in front of the SDK's
//! batch span processor, and an exporter wrapper that counts what never reached the
//! collector. Built only when `telemetry.otlp_endpoint` is set.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::config::TelemetryConfig;

/// Spans finished but never delivered: refused because the queue was full, or part of a
/// batch the collector did not take (down, slow past the timeout, or refusing).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans dropped since the process started (`wayfare_trace_spans_dropped_total`).
pub fn dropped_spans() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Builds the tracer provider for `config`; `None` when there is no endpoint.
pub(super) fn provider(config: &TelemetryConfig) -> anyhow::Result<Option<SdkTracerProvider>> {
    let Some(url) = config.traces_url() else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(Duration::from_millis(config.export_timeout_ms))
        .build()?;
    let pending = Arc::new(AtomicUsize::new(0));
    // The SDK's own queue is sized past ours so that it never drops silently: every
    // drop happens in `Bounded::on_end`, where it is counted.
    let batch = BatchSpanProcessor::builder(Counting {
        inner: exporter,
        pending: pending.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(config.max_queue + 1024)
            .with_max_export_batch_size(512.min(config.max_queue))
            .with_scheduled_delay(Duration::from_millis(500))
            .build(),
    )
    .build();
    let processor = Bounded {
        inner: batch,
        pending,
        max: config.max_queue,
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // The head sampler (`sampling.rs`) has decided before a span reaches the SDK:
        // drawing again here would keep a trace at ratio squared.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    Ok(Some(provider))
}

/// Spans handed to the batch processor and not yet through an export attempt.
#[derive(Debug)]
struct Bounded<P> {
    inner: P,
    pending: Arc<AtomicUsize>,
    max: usize,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting the spans of every batch it could not deliver.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.pending.fetch_sub(n, Ordering::Relaxed);
        if result.is_err() {
            DROPPED.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
