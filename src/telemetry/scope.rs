//! Where running code belongs in tracing: a span of a kept trace, or a trace the head
//! sampler dropped. A dropped trace has no span at all: its decision (and the ids it
//! propagates, flag `00`) rides in a thread-local slot while its code runs. The places
//! that make spans ask [`exporting`] (spans for traces) or [`log_spans`] (spans for logs)
//! first, so a dropped trace builds none below `info`; a span made in it anyway is marked
//! by the head sampler from the slot, never exported. Building one span per request just
//! to carry "not sampled" cost more than a tenth of an account read at ratio 0.01.
//!
//! The slot is set by [`Scope::enter`] for synchronous code (an actor handler) and by
//! [`Traced`] around each poll of a future, so the decision follows a request into its
//! futures, and through [`super::Origin`] into the actors it messages.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use super::sampling::Unsampled;

thread_local! {
    /// The unsampled trace the code running on this thread belongs to.
    static CURRENT: Cell<Option<Unsampled>> = const { Cell::new(None) };
}

/// Whether the log filter may want an info span (set once at start-up).
static LOG_SPANS: AtomicBool = AtomicBool::new(true);

pub(super) fn set_log_spans(wanted: bool) {
    LOG_SPANS.store(wanted, Ordering::Relaxed);
}

/// Whether a span made only for logs is worth making: the log level lets info spans
/// through. In a dropped trace nothing else wants a span, so below `info` none is made.
#[inline]
pub fn log_spans() -> bool {
    LOG_SPANS.load(Ordering::Relaxed)
}

/// Whether a span made here would be exported: spans are exported and the running code
/// is not in a dropped trace. Spans made only for traces are skipped otherwise.
#[inline]
pub fn exporting() -> bool {
    super::enabled() && current_unsampled().is_none()
}

/// The unsampled trace the running code belongs to, if the head sampler dropped it.
#[inline]
pub fn current_unsampled() -> Option<Unsampled> {
    CURRENT.with(Cell::get)
}

/// Puts back the slot's previous value when dropped (on unwind too).
#[derive(Debug)]
#[must_use = "the trace is left when the guard is dropped"]
pub struct Marked {
    previous: Option<Unsampled>,
}

impl Drop for Marked {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Runs as part of `unsampled` (or of no dropped trace, for `None`) until the guard drops.
pub fn mark(unsampled: Option<Unsampled>) -> Marked {
    Marked {
        previous: CURRENT.with(|c| c.replace(unsampled)),
    }
}

/// A span and the dropped trace it stands in for: `span` is then the span logs would have
/// (often `Span::none()`), never exported.
#[derive(Debug, Clone)]
pub struct Scope {
    span: tracing::Span,
    unsampled: Option<Unsampled>,
}

/// What [`Scope::enter`] returns: inside the span and the trace until dropped.
#[derive(Debug)]
pub struct Entered<'a> {
    _span: tracing::span::Entered<'a>,
    _marked: Marked,
}

impl Default for Scope {
    /// No span, no dropped trace.
    fn default() -> Self {
        Scope::new(tracing::Span::none(), None)
    }
}

impl Scope {
    /// `span`, in the dropped trace the running code belongs to (if any).
    pub fn here(span: tracing::Span) -> Self {
        Scope {
            span,
            unsampled: current_unsampled(),
        }
    }

    /// `span`, in `unsampled` (if any).
    pub fn new(span: tracing::Span, unsampled: Option<Unsampled>) -> Self {
        Scope { span, unsampled }
    }

    /// The span (of a kept trace, or for logs only).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The dropped trace, if this scope belongs to one.
    pub fn unsampled(&self) -> Option<Unsampled> {
        self.unsampled
    }

    /// Enters the span and the trace, for synchronous code.
    pub fn enter(&self) -> Entered<'_> {
        Entered {
            _marked: mark(self.unsampled),
            _span: self.span.enter(),
        }
    }

    /// Runs `f` inside the span and the trace.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _entered = self.enter();
        f()
    }
}

/// Futures that run in a [`Scope`]: the replacement for `Instrument::instrument`, which
/// carries a span but not a dropped trace's decision.
pub trait TracedExt: Future + Sized {
    /// Polls `self` inside `scope` (its span entered, its trace marked).
    fn traced(self, scope: Scope) -> Traced<Self> {
        Traced { inner: self, scope }
    }
}

impl<F: Future> TracedExt for F {}

pin_project_lite::pin_project! {
    /// A future polled inside a [`Scope`].
    #[derive(Debug)]
    pub struct Traced<F> {
        #[pin]
        inner: F,
        scope: Scope,
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.scope.enter();
        this.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use opentelemetry::trace::TraceId;

    #[test]
    fn the_mark_is_set_inside_and_put_back_after_even_nested() {
        let a = Unsampled::for_trace(TraceId::from(1u128));
        let b = Unsampled::for_trace(TraceId::from(2u128));
        assert_eq!(current_unsampled(), None);
        {
            let _outer = mark(Some(a));
            assert_eq!(current_unsampled(), Some(a));
            {
                let inner = Scope::new(tracing::Span::none(), Some(b));
                let _inner = inner.enter();
                assert_eq!(current_unsampled(), Some(b));
                // A kept scope inside a dropped one is kept: it clears the mark.
                let kept = Scope::new(tracing::Span::none(), None);
                let _kept = kept.enter();
                assert_eq!(current_unsampled(), None);
            }
            assert_eq!(current_unsampled(), Some(a));
        }
        assert_eq!(current_unsampled(), None);
    }

    #[test]
    fn a_traced_future_carries_its_mark_into_every_poll_and_no_further() {
        let a = Unsampled::for_trace(TraceId::from(3u128));
        let mut seen = Vec::new();
        let fut = async {
            seen.push(current_unsampled());
            tokio::task::yield_now().await;
            seen.push(current_unsampled());
        }
        .traced(Scope::new(tracing::Span::none(), Some(a)));
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(fut);
        assert_eq!(seen, vec![Some(a), Some(a)]);
        assert_eq!(current_unsampled(), None);
    }
}
