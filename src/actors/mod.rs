//! The actors, one per file: each file holds the actor, its messages and its handlers.

pub mod account;
pub(crate) mod booking;
pub(crate) mod cluster;
pub(crate) mod coordinator;
pub mod guard;
pub mod notify;
pub mod payment;
pub mod search;
pub mod seller;

/// Stable bucket of `key` among `n` (within one process): which aggregator serves a search,
/// which arbiter runs a saga.
pub(crate) fn bucket(key: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % n.max(1) as u64) as usize
}

/// Injected panics for one actor kind (`faults.panic_rate`, `faults.panic_actors`); the
/// default never fires. Every actor that can be made to panic calls `maybe_panic` at the
/// top of its handlers, so the supervisor's restart path runs for real.
#[derive(Debug, Clone, Default)]
pub(crate) struct PanicFaults {
    rate: f64,
    kind: Option<crate::faults::ActorKind>,
    counters: Option<std::sync::Arc<crate::faults::FaultCounters>>,
}

impl PanicFaults {
    /// Panics in handlers of `kind` with probability `rate`, counted in `counters`.
    pub(crate) fn new(
        kind: crate::faults::ActorKind,
        rate: f64,
        counters: std::sync::Arc<crate::faults::FaultCounters>,
    ) -> Self {
        PanicFaults {
            rate,
            kind: Some(kind),
            counters: Some(counters),
        }
    }

    /// Whether this can ever fire.
    pub(crate) fn is_armed(&self) -> bool {
        self.rate > 0.0
    }

    /// Panics (on purpose: this is the fault) when the dice say so; `who` names the actor
    /// in the panic message.
    pub(crate) fn maybe_panic(&self, who: &dyn std::fmt::Display) {
        if !crate::faults::roll(self.rate) {
            return;
        }
        let kind = self.kind.unwrap_or(crate::faults::ActorKind::Account);
        if let Some(counters) = &self.counters {
            counters.count(crate::faults::Fault::Panic(kind));
        }
        let message = format!(
            "injected fault: {who} panicked (faults.panic_rate for {})",
            kind.as_str()
        );
        tracing::warn!(fault = %message, "Injected panic; the supervisor restarts the actor.");
        // Unwinds like `panic!` (the supervisor catches the same payload and message), but
        // without the panic hook, so an expected fault does not print and symbolize a
        // backtrace (with RUST_BACKTRACE=1 in a debug build that can outlast the caller's
        // deadline, turning the crash the caller should see into a timeout). The hook's
        // one duty that matters here is done first: mark this actor down before unwinding.
        crate::supervisor::mark_polling_actor_down();
        std::panic::resume_unwind(Box::new(message));
    }
}
