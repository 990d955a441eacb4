//! Head sampling at the edge: whether a trace is kept is decided once, when its root span
//! is created, and every span below an unsampled root is unsampled too. The OpenTelemetry
//! layer never sees an unsampled span: it would build a span builder, attributes and a
//! context for each one (and `Span::context` would start it) only for the SDK sampler to
//! throw it away at the end, which cost a quarter of an account read at ratio 0.01.
//!
//! The verdict lives in the registry's span extensions as an [`Unsampled`] marker, which
//! also keeps the ids an unsampled trace propagates (flag `00`), so that partners and saga
//! records follow the decision instead of taking one of their own.

use std::any::TypeId;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
use opentelemetry::Context;
use rand::Rng as _;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::{LookupSpan, Registry};

/// `sample_ratio` as `f64` bits (0.0 until export is configured).
static RATIO: AtomicU64 = AtomicU64::new(0);

pub(super) fn set_ratio(ratio: f64) {
    RATIO.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
}

fn ratio() -> f64 {
    f64::from_bits(RATIO.load(Ordering::Relaxed))
}

/// Marks a span of a trace that is not kept. The ids are what the trace propagates: the
/// caller's trace id (or a fresh one for a root of our own) and a span id standing for
/// this process's part of it, shared by every span below the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsampled {
    trace_id: TraceId,
    span_id: SpanId,
}

impl Unsampled {
    /// This process's part of the dropped trace `trace_id`, under a fresh span id.
    pub fn for_trace(trace_id: TraceId) -> Self {
        Self::new(trace_id)
    }

    fn new(trace_id: TraceId) -> Self {
        // Zero is the invalid id; `| 1` keeps a random one valid.
        Unsampled {
            trace_id,
            span_id: SpanId::from(with_rng(|rng| rng.gen::<u64>()) | 1),
        }
    }

    /// The W3C `traceparent` of this unsampled trace: sampled flag `00`.
    pub fn traceparent(&self) -> String {
        String::from_utf8_lossy(&self.traceparent_bytes()).into_owned()
    }

    /// [`Unsampled::traceparent`] as bytes, for a header. Written by hand: `format!`
    /// through the ids' `Display` took a few percent of an unsampled request, which
    /// answers this header every time.
    pub fn traceparent_bytes(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        for (pair, b) in out[3..35].chunks_exact_mut(2).zip(self.trace_id.to_bytes()) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
        }
        for (pair, b) in out[36..52].chunks_exact_mut(2).zip(self.span_id.to_bytes()) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
        }
        out
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> String {
        self.trace_id.to_string()
    }
}

/// Each byte's two lower-case hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [HEX[b >> 4], HEX[b & 0xf]];
        b += 1;
    }
    pairs
};

thread_local! {
    /// Draws for sampling and ids: a fast generator seeded once per thread from the OS
    /// (ids need to be unique, not secret; `thread_rng`'s ChaCha showed in profiles).
    static RNG: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_entropy());
}

fn with_rng<R>(f: impl FnOnce(&mut rand::rngs::SmallRng) -> R) -> R {
    RNG.with(|rng| f(&mut rng.borrow_mut()))
}

/// A root's sampling decision, taken before the span exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// The trace is exported.
    Keep,
    /// It is not; the span is marked instead of built.
    Drop(Unsampled),
}

impl Head {
    /// Parent-based: a valid remote (or stored) parent's sampled flag decides; without
    /// one, the trace is kept with probability `sample_ratio`.
    pub fn decide(parent: Option<&Context>) -> Head {
        if let Some(parent) = parent {
            let span = parent.span();
            let sc = span.span_context();
            if sc.is_valid() {
                return if sc.is_sampled() {
                    Head::Keep
                } else {
                    Head::Drop(Unsampled::new(sc.trace_id()))
                };
            }
        }
        let ratio = ratio();
        let keep = ratio >= 1.0 || (ratio > 0.0 && with_rng(|rng| rng.gen::<f64>()) < ratio);
        if keep {
            Head::Keep
        } else {
            Head::Drop(Unsampled::new(TraceId::from(
                with_rng(|rng| rng.gen::<u128>()) | 1,
            )))
        }
    }

    /// Runs `make`, whose root span (a span with no parent) takes this decision instead of
    /// drawing its own. A span with a parent follows the parent whatever is decided here.
    pub fn root<R>(self, make: impl FnOnce() -> R) -> R {
        /// Clears the decision even if `make` panics, so it cannot reach a later root.
        struct Clear;
        impl Drop for Clear {
            fn drop(&mut self) {
                DECIDED.with(|d| d.set(None));
            }
        }
        DECIDED.with(|d| d.set(Some(self)));
        let _clear = Clear;
        make()
    }
}

thread_local! {
    /// The decision [`Head::root`] hands to the root span created inside it.
    static DECIDED: Cell<Option<Head>> = const { Cell::new(None) };
}

/// The unsampled marker of `span`, if the head sampler dropped its trace.
pub fn unsampled(span: &tracing::Span) -> Option<Unsampled> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let data = registry.span(id)?;
        let marker = data.extensions().get::<Unsampled>().copied();
        marker
    })
    .flatten()
}

/// Wraps the OpenTelemetry layer: decides at each root, marks the spans of dropped traces
/// and forwards nothing about them; kept traces pass through untouched.
pub(super) struct HeadSampled<L> {
    inner: L,
}

impl<L> HeadSampled<L> {
    pub(super) fn new(inner: L) -> Self {
        HeadSampled { inner }
    }
}

/// Whether the span `id` belongs to a kept trace (or is unknown to this layer).
fn kept<S>(id: &Id, ctx: &LayerContext<'_, S>) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    ctx.span(id)
        .is_none_or(|span| span.extensions().get::<Unsampled>().is_none())
}

impl<S, L> Layer<S> for HeadSampled<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: LayerContext<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.inner.max_level_hint()
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        // The parent the OpenTelemetry layer would pick: an explicit parent it sees, else
        // (for a contextual span) the current span it sees; none makes a root.
        let inherited = {
            let parent = match attrs.parent() {
                Some(parent) => ctx.span(parent),
                None if attrs.is_contextual() => ctx.lookup_current(),
                None => None,
            };
            parent.map(|parent| parent.extensions().get::<Unsampled>().copied())
        };
        // Code running in a dropped trace (`scope`) makes only spans of that trace: the
        // ones a log filter lets through reach here, to be marked, never exported.
        let head = match (super::scope::current_unsampled(), inherited) {
            (Some(marker), _) => Head::Drop(marker),
            (None, Some(marker)) => marker.map_or(Head::Keep, Head::Drop),
            (None, None) => DECIDED
                .with(Cell::take)
                .unwrap_or_else(|| Head::decide(None)),
        };
        match head {
            Head::Keep => self.inner.on_new_span(attrs, id, ctx),
            Head::Drop(marker) => {
                if let Some(span) = ctx.span(id) {
                    span.extensions_mut().insert(marker);
                }
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        if kept(id, &ctx) {
            self.inner.on_record(id, values, ctx);
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: LayerContext<'_, S>) {
        if kept(id, &ctx) {
            self.inner.on_follows_from(id, follows, ctx);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let span = match event.parent() {
            Some(parent) => ctx.span(parent),
            None if event.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let kept = span.is_none_or(|span| span.extensions().get::<Unsampled>().is_none());
        if kept {
            self.inner.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &Id, ctx: LayerContext<'_, S>) {
        if kept(id, &ctx) {
            self.inner.on_enter(id, ctx);
        }
    }

    fn on_exit(&self, id: &Id, ctx: LayerContext<'_, S>) {
        if kept(id, &ctx) {
            self.inner.on_exit(id, ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        if kept(&id, &ctx) {
            self.inner.on_close(id, ctx);
        }
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: LayerContext<'_, S>) {
        if kept(old, &ctx) {
            self.inner.on_id_change(old, new, ctx);
        }
    }

    // SAFETY: forwards to the wrapped layer, whose pointers stay valid as long as `self`
    // (`Span::context` and `set_parent` find the OpenTelemetry layer through this).
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else {
            unsafe { self.inner.downcast_raw(id) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use opentelemetry::trace::TracerProvider as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// A dropped root marks its children (explicit and contextual) with its own ids and
    /// builds no OpenTelemetry context for any of them; a kept root's children are built.
    #[test]
    fn children_follow_their_root_and_dropped_spans_build_nothing() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(HeadSampled::new(
            tracing_opentelemetry::layer().with_tracer(provider.tracer("t")),
        ));
        tracing::subscriber::with_default(subscriber, || {
            let dropped = Unsampled::new(TraceId::from(7u128));
            let root = Head::Drop(dropped).root(|| tracing::info_span!(parent: None, "root"));
            let explicit = tracing::info_span!(parent: &root, "explicit");
            let contextual = root.in_scope(|| tracing::info_span!("contextual"));
            for span in [&root, &explicit, &contextual] {
                assert_eq!(unsampled(span), Some(dropped));
                assert!(!span.context().span().span_context().is_valid());
            }
            // The decision went to the one root made inside `root`, and no further.
            let kept = Head::Keep.root(|| tracing::info_span!(parent: None, "kept"));
            let child = kept.in_scope(|| tracing::info_span!("child"));
            assert_eq!(unsampled(&kept), None);
            assert_eq!(unsampled(&child), None);
            let (kept_cx, child_cx) = (kept.context(), child.context());
            let (kept_sc, child_sc) = (
                kept_cx.span().span_context().clone(),
                child_cx.span().span_context().clone(),
            );
            assert!(kept_sc.is_valid() && kept_sc.is_sampled());
            assert_eq!(child_sc.trace_id(), kept_sc.trace_id());
        });
    }

    #[test]
    fn an_unsampled_traceparent_has_flag_00_and_the_trace_id() {
        let parent = crate::telemetry::extract(
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
            None,
        );
        let Head::Drop(marker) = Head::decide(parent.as_ref()) else {
            panic!("a 00 parent is not kept");
        };
        let tp = marker.traceparent();
        assert!(
            tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{tp}"
        );
        assert!(tp.ends_with("-00") && tp.len() == 55, "{tp}");
        assert!(crate::telemetry::extract(Some(&tp), None).is_some(), "{tp}");
        let sampled = crate::telemetry::extract(
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            None,
        );
        assert_eq!(Head::decide(sampled.as_ref()), Head::Keep);
    }
}
