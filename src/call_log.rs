//! How a saga learns the partner calls made on its behalf. The seller and payment
//! adapters make the calls (and their retries) in their own actors; the saga hands them a
//! [`CallSink`] with each message and reads it once the step's reply is in. A sink rather
//! than a field of each reply, so the attempts before a failure, and the calls the guard
//! refused, arrive as well as those of a success.
//!
//! Two task-locals carry what the call sites cannot pass by hand: the saga's sink while it
//! performs a step (the gateway is behind the `PaymentGateway` trait, whose methods take no
//! sink), and, around one attempt, what the HTTP client saw (status, or no connection),
//! which the partners' HTTP clients note as they read a reply.

use std::future::Future;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::domain::saga::{CallOutcome, PartnerCall, Step};

/// One attempt as an adapter saw it; the saga adds the step and the attempt number.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub partner: String,
    pub operation: &'static str,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub outcome: CallOutcome,
    pub http_status: Option<u16>,
    pub detail: Option<String>,
}

impl Attempt {
    /// An attempt that started at `started` (wall clock and monotonic) and ends now.
    pub(crate) fn ended(
        partner: &str,
        operation: &'static str,
        started: (DateTime<Utc>, Instant),
        seen: Seen,
        outcome: CallOutcome,
        detail: Option<String>,
    ) -> Self {
        let outcome = match (outcome, seen) {
            (CallOutcome::Failed, Seen::NoConnection) => CallOutcome::NoConnection,
            (o, _) => o,
        };
        Attempt {
            partner: partner.to_owned(),
            operation,
            started_at: started.0,
            duration_ms: u64::try_from(started.1.elapsed().as_millis()).unwrap_or(u64::MAX),
            outcome,
            http_status: match seen {
                Seen::Status(s) => Some(s),
                _ => None,
            },
            detail,
        }
    }

    /// A call the guard refused: not sent, no time spent.
    pub(crate) fn refused(partner: &str, operation: &'static str, outcome: CallOutcome) -> Self {
        Attempt {
            partner: partner.to_owned(),
            operation,
            started_at: Utc::now(),
            duration_ms: 0,
            outcome,
            http_status: None,
            detail: None,
        }
    }

    /// The record's line for this attempt (numbered by `PartnerCalls::record`).
    pub(crate) fn for_step(self, step: Step) -> PartnerCall {
        PartnerCall {
            partner: self.partner,
            operation: self.operation.to_owned(),
            step,
            attempt: 0,
            started_at: self.started_at,
            duration_ms: self.duration_ms,
            outcome: self.outcome,
            http_status: self.http_status,
            detail: self.detail,
        }
    }
}

/// Where an adapter puts the attempts it made for one message; empty (and free) for calls
/// no saga asked for, such as searches.
#[derive(Clone, Default)]
pub struct CallSink(Option<Arc<Mutex<Vec<Attempt>>>>);

impl std::fmt::Debug for CallSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "CallSink"
        } else {
            "CallSink(none)"
        })
    }
}

tokio::task_local! {
    static SINK: CallSink;
    static SEEN: Arc<AtomicU16>;
}

/// Marks "the connection failed" in [`SEEN`]: not an HTTP status.
const NO_CONNECTION: u16 = 1;

impl CallSink {
    /// A sink that keeps what it is given.
    pub(crate) fn collecting() -> Self {
        CallSink(Some(Arc::default()))
    }

    /// The sink of the saga step being performed on this task, or an empty one.
    pub(crate) fn current() -> Self {
        SINK.try_with(Clone::clone).unwrap_or_default()
    }

    /// Runs `fut` with this sink as [`current`](Self::current).
    pub(crate) async fn scope<F: Future>(&self, fut: F) -> F::Output {
        SINK.scope(self.clone(), fut).await
    }

    /// Whether what is pushed is kept (a saga asked), so callers can skip building it.
    pub(crate) fn is_active(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn push(&self, attempt: Attempt) {
        if let Some(items) = &self.0 {
            items
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(attempt);
        }
    }

    /// What was pushed so far, emptying the sink.
    pub(crate) fn take(&self) -> Vec<Attempt> {
        match &self.0 {
            Some(items) => std::mem::take(&mut *items.lock().unwrap_or_else(|p| p.into_inner())),
            None => Vec::new(),
        }
    }
}

/// What the HTTP client saw during one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Nothing noted (an in-process partner, or no reply before the timeout).
    Nothing,
    /// The reply's status.
    Status(u16),
    /// The connection could not be made.
    NoConnection,
}

/// Runs one attempt, noting what its HTTP client saw.
pub(crate) async fn watch<F: Future>(fut: F) -> (F::Output, Seen) {
    let seen = Arc::new(AtomicU16::new(0));
    let out = SEEN.scope(seen.clone(), fut).await;
    let seen = match seen.load(Ordering::Relaxed) {
        0 => Seen::Nothing,
        NO_CONNECTION => Seen::NoConnection,
        status => Seen::Status(status),
    };
    (out, seen)
}

/// Called by the partners' HTTP clients with each reply's status.
pub(crate) fn note_status(status: u16) {
    let _ = SEEN.try_with(|s| s.store(status, Ordering::Relaxed));
}

/// Called by the partners' HTTP clients when the connection could not be made.
pub(crate) fn note_no_connection() {
    let _ = SEEN.try_with(|s| s.store(NO_CONNECTION, Ordering::Relaxed));
}
