//! The partner calls a saga made: one line per attempt (a seller's reserve, cancel or
//! status lookup; the gateway's authorize, capture, void, refund or status lookup), with
//! when it started, how long it took and how it ended, kept in the saga's own record so an
//! operator can see where a booking's time went without a trace collector.
//!
//! The list is bounded: a saga that retries a step for hours would otherwise grow its
//! record (rewritten at every step) without limit. The first calls (how it started) and
//! the latest (where it stands) are kept; those in between are dropped and counted.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::record::Step;

/// Most calls kept per saga.
pub const MAX_CALLS: usize = 64;

/// Of [`MAX_CALLS`], how many of the first calls are always kept; past the bound, the
/// oldest call after these is dropped.
pub const KEPT_FIRST: usize = 16;

/// Longest error detail kept per call, in bytes; longer text is cut on a char boundary.
pub const MAX_DETAIL_LEN: usize = 200;

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The partner answered and did it.
    Ok,
    /// The partner answered with a refusal (sold out, price changed, card declined,
    /// capture rejected): an expected answer, not a fault.
    Refused,
    /// The partner answered with an error or with a reply that was not trusted.
    Failed,
    /// No answer in time: the call may or may not have had its effect.
    Timeout,
    /// The request did not get through (connection refused or reset).
    NoConnection,
    /// Not sent: the partner's circuit breaker was open.
    CircuitOpen,
    /// Not sent: too many calls to that partner were in flight.
    BulkheadFull,
}

impl CallOutcome {
    /// Stable snake_case name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Refused => "refused",
            CallOutcome::Failed => "failed",
            CallOutcome::Timeout => "timeout",
            CallOutcome::NoConnection => "no_connection",
            CallOutcome::CircuitOpen => "circuit_open",
            CallOutcome::BulkheadFull => "bulkhead_full",
        }
    }
}

/// One attempt of one partner call, as the saga's record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartnerCall {
    /// The seller's name, or `gateway`.
    pub partner: String,
    /// What was asked: `book`, `cancel` or `status` of a seller; `authorize`, `capture`,
    /// `void`, `refund` or `status` of the gateway.
    pub operation: String,
    /// The saga step the call served.
    pub step: Step,
    /// 1 for the first call of this operation in this step, 2 for the next, and so on
    /// (retries by the adapter and by the saga alike).
    pub attempt: u32,
    /// When the call was sent (or refused, for a call not sent).
    pub started_at: DateTime<Utc>,
    /// How long it took, in milliseconds (0 for a call not sent).
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: CallOutcome,
    /// The HTTP status of the partner's reply, for a partner reached over HTTP that
    /// answered.
    #[schema(required = true)]
    pub http_status: Option<u16>,
    /// The error, as the adapter saw it (for operators; never shown to customers).
    #[schema(required = true)]
    pub detail: Option<String>,
}

/// A saga's partner calls, bounded (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerCalls {
    /// The calls kept, oldest first.
    pub calls: Vec<PartnerCall>,
    /// How many calls were dropped from between the first and the latest.
    pub dropped: u64,
}

impl PartnerCalls {
    /// Appends `call`, numbering its attempt after the latest kept call of the same
    /// partner, operation and step, and cutting its detail to [`MAX_DETAIL_LEN`].
    pub fn record(&mut self, mut call: PartnerCall) {
        call.attempt = self
            .calls
            .iter()
            .rev()
            .find(|c| {
                c.step == call.step && c.partner == call.partner && c.operation == call.operation
            })
            .map_or(1, |c| c.attempt.saturating_add(1));
        if let Some(detail) = &mut call.detail {
            cut(detail, MAX_DETAIL_LEN);
        }
        push_bounded(
            &mut self.calls,
            &mut self.dropped,
            call,
            MAX_CALLS,
            KEPT_FIRST,
        );
    }
}

/// Appends `item` to `items`, keeping at most `max`: once full, the oldest item after the
/// first `kept_first` is removed and counted in `dropped`. With `kept_first >= max` the
/// new item is dropped instead (the list keeps its beginning).
pub fn push_bounded<T>(
    items: &mut Vec<T>,
    dropped: &mut u64,
    item: T,
    max: usize,
    kept_first: usize,
) {
    if items.len() < max {
        items.push(item);
        return;
    }
    *dropped = dropped.saturating_add(1);
    if kept_first >= max {
        return;
    }
    items.remove(kept_first);
    items.push(item);
}

fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_and_the_latest_are_kept_and_the_rest_counted() {
        let (mut items, mut dropped) = (Vec::new(), 0);
        for i in 0..10 {
            push_bounded(&mut items, &mut dropped, i, 6, 2);
        }
        assert_eq!(items, vec![0, 1, 6, 7, 8, 9]);
        assert_eq!(dropped, 4);
        // Below the bound nothing is dropped.
        let (mut items, mut dropped) = (Vec::new(), 0);
        for i in 0..6 {
            push_bounded(&mut items, &mut dropped, i, 6, 2);
        }
        assert_eq!((items, dropped), (vec![0, 1, 2, 3, 4, 5], 0));
        // Keeping everything first means newcomers are the ones dropped.
        let (mut items, mut dropped) = (vec![0, 1], 0);
        push_bounded(&mut items, &mut dropped, 2, 2, 2);
        assert_eq!((items, dropped), (vec![0, 1], 1));
    }

    fn call(step: Step, operation: &str) -> PartnerCall {
        PartnerCall {
            partner: "alpha".into(),
            operation: operation.into(),
            step,
            attempt: 0,
            started_at: DateTime::<Utc>::UNIX_EPOCH,
            duration_ms: 3,
            outcome: CallOutcome::Failed,
            http_status: Some(503),
            detail: Some("é".repeat(MAX_DETAIL_LEN)),
        }
    }

    #[test]
    fn attempts_are_numbered_per_step_and_operation_and_a_saga_stays_bounded() {
        let mut calls = PartnerCalls::default();
        calls.record(call(Step::Reserve, "book"));
        calls.record(call(Step::ReconcileReservation, "status"));
        calls.record(call(Step::Reserve, "book"));
        calls.record(call(Step::ReconcileReservation, "status"));
        let attempts: Vec<_> = calls.calls.iter().map(|c| (c.step, c.attempt)).collect();
        assert_eq!(
            attempts,
            vec![
                (Step::Reserve, 1),
                (Step::ReconcileReservation, 1),
                (Step::Reserve, 2),
                (Step::ReconcileReservation, 2)
            ]
        );
        let detail = calls.calls[0].detail.as_ref().unwrap();
        assert!(detail.len() <= MAX_DETAIL_LEN && detail.chars().all(|c| c == 'é'));

        // Hours of retries of one step: the record keeps its bound, the first calls, the
        // latest, and a count (and numbering) of what went in between.
        for _ in 0..1_000 {
            calls.record(call(Step::CapturePayment, "capture"));
        }
        assert_eq!(calls.calls.len(), MAX_CALLS);
        assert_eq!(calls.dropped, 1_004 - MAX_CALLS as u64);
        assert_eq!(calls.calls[0].step, Step::Reserve);
        assert_eq!(calls.calls[3].step, Step::ReconcileReservation);
        assert_eq!(calls.calls.last().unwrap().attempt, 1_000);
    }
}
