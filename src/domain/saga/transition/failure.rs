//! Failure handling: refusals and permanent failures (compensate or park), retries within
//! a step's budget, unknown outcomes to reconcile, parking as `needs_attention` and the
//! operator's retry.

use super::*;

/// Operator action: resume a saga parked as `needs_attention` where it stopped, with a
/// fresh retry budget for the step that stopped it (usually a compensation; after the
/// pivot it may be a forward step such as capture).
pub fn retry_needs_attention(
    r: &mut SagaRecord,
    now: DateTime<Utc>,
) -> Result<Transition, SagaError> {
    if r.state != SagaState::NeedsAttention {
        return Err(SagaError::WrongState {
            expected: "needs_attention",
            actual: r.state,
        });
    }
    let mut tr = Transition::at(r.state, None);
    let fallback = if r.phase == Phase::Compensating {
        SagaState::Compensating
    } else {
        SagaState::Pending
    };
    let resume = r.resume_state.take().unwrap_or(fallback);
    r.needs_attention = None;
    set_state(r, resume, now, None, "operator retry");
    if let Some(step) = pending_step(r) {
        r.attempts.remove(&step);
        tr.step = Some(step);
    }
    for s in [
        Step::ReconcileReservation,
        Step::ReconcileAuthorization,
        Step::ReconcileCapture,
    ] {
        r.attempts.remove(&s);
    }
    normalize(r, now, &mut tr);
    tr.to = r.state;
    Ok(tr)
}

/// The saga's actor kept crashing past its restart budget: park the saga as
/// `needs_attention` with the crash as the reason, where it stands (the pending step keeps
/// its attempts; [`retry_needs_attention`] resumes it). Refused for a finished or already
/// parked saga.
pub fn park_crashed(
    r: &mut SagaRecord,
    crash: &str,
    now: DateTime<Utc>,
) -> Result<Transition, SagaError> {
    if is_terminal(r.state) || r.state == SagaState::NeedsAttention {
        return Err(SagaError::WrongState {
            expected: "a saga in flight",
            actual: r.state,
        });
    }
    let mut tr = Transition::at(r.state, pending_step(r));
    let reason = format!("the saga's actor kept crashing: {crash}");
    r.resume_state = Some(r.state);
    r.needs_attention = Some(reason.clone());
    set_state(r, SagaState::NeedsAttention, now, tr.step, reason);
    tr.to = r.state;
    Ok(tr)
}

pub(super) fn start_compensation(
    r: &mut SagaRecord,
    cause: FailureCause,
    reason: String,
    step: Option<Step>,
    now: DateTime<Utc>,
) {
    // Keep the first cause: later failures during compensation do not rewrite history.
    r.data.failure_cause.get_or_insert(cause);
    let note = format!("compensating: {reason}");
    r.data.failure_reason.get_or_insert(reason);
    r.phase = Phase::Compensating;
    set_state(r, SagaState::Compensating, now, step, note);
}

pub(super) fn park(r: &mut SagaRecord, reason: String, step: Step, now: DateTime<Utc>) {
    r.resume_state = Some(r.state);
    r.needs_attention = Some(reason.clone());
    set_state(r, SagaState::NeedsAttention, now, Some(step), reason);
}

/// A refusal or permanent failure: retrying cannot help.
pub(super) fn decisive_failure(
    r: &mut SagaRecord,
    step: Step,
    refused: bool,
    reason: String,
    now: DateTime<Utc>,
) {
    bump(r, step);
    let kind = if refused {
        "refused"
    } else {
        "failed permanently"
    };
    match step {
        Step::Hold | Step::Authorize | Step::Reserve => {
            let cause = match (step, refused) {
                (Step::Hold, true) => FailureCause::InsufficientPoints,
                (Step::Authorize, true) => FailureCause::PaymentDeclined,
                (Step::Reserve, true) => FailureCause::SellerRefused,
                _ => FailureCause::Technical,
            };
            start_compensation(
                r,
                cause,
                format!("{} {kind}: {reason}", step.as_str()),
                Some(step),
                now,
            );
        }
        // After the pivot only a permanent failure compensates; a refused capture is one.
        // The wallet has no status query: if an earlier wallet capture timed out, points may
        // already be spent, and releasing the hold could not undo that. An operator decides.
        Step::CaptureWallet if r.effects.wallet_capture == Effect::Uncertain => park(
            r,
            format!(
                "{} {kind} after an unknown outcome: {reason}",
                step.as_str()
            ),
            step,
            now,
        ),
        Step::CapturePayment | Step::CaptureWallet => {
            start_compensation(
                r,
                FailureCause::Technical,
                format!("{} {kind}: {reason}", step.as_str()),
                Some(step),
                now,
            );
        }
        Step::SellerCancel if refused || r.effects.seller_cancel != Effect::Uncertain => {
            r.data
                .failure_reason
                .get_or_insert(format!("seller cancel {kind}: {reason}"));
            r.phase = Phase::Finished;
            set_state(
                r,
                SagaState::Failed,
                now,
                Some(step),
                format!("seller would not cancel ({reason}); booking stays confirmed"),
            );
        }
        _ => park(r, format!("{} {kind}: {reason}", step.as_str()), step, now),
    }
}

/// A transient failure or a timeout: retry within the step's budget.
#[allow(clippy::too_many_arguments)]
pub(super) fn retryable_failure(
    r: &mut SagaRecord,
    step: Step,
    timed_out: bool,
    reason: String,
    cfg: &SagaConfig,
    now: DateTime<Utc>,
    tr: &mut Transition,
) {
    if timed_out {
        mark_uncertain(r, step);
    }
    let n = bump(r, step);
    // A reservation that timed out is never retried or compensated blind: the next step
    // asks the seller about the key, and that answer decides.
    if n < cfg.budget(step) || (step == Step::Reserve && timed_out) {
        r.note(
            now,
            Some(step),
            format!(
                "{} attempt {n} failed ({reason}); will retry",
                step.as_str()
            ),
        );
        tr.retry_attempt = Some(n);
        return;
    }
    let why = format!("{} failed after {n} attempts: {reason}", step.as_str());
    match step {
        Step::Hold | Step::Authorize | Step::Reserve => {
            // These failures say only that the last attempt did not land. An earlier one
            // may have, unrecorded: the saga crashed while it was in flight, and the retry
            // that should have met its result by key failed instead. So the effect is in
            // doubt, and compensation asks by key (or releases by key) before undoing.
            mark_uncertain(r, step);
            start_compensation(r, FailureCause::Technical, why, Some(step), now)
        }
        Step::SellerCancel if r.effects.seller_cancel != Effect::Uncertain => {
            r.data.failure_reason.get_or_insert(why.clone());
            r.phase = Phase::Finished;
            set_state(
                r,
                SagaState::Failed,
                now,
                Some(step),
                format!("{why}; booking stays confirmed"),
            );
        }
        // After the pivot, in compensation, or while reconciling: never guess.
        _ => park(r, why, step, now),
    }
}

pub(super) fn mark_uncertain(r: &mut SagaRecord, step: Step) {
    let e = &mut r.effects;
    let slot = match step {
        Step::Hold => &mut e.wallet_hold,
        Step::Authorize => &mut e.authorization,
        Step::Reserve => &mut e.reservation,
        Step::CapturePayment => &mut e.payment_capture,
        Step::CaptureWallet => &mut e.wallet_capture,
        Step::SellerCancel => &mut e.seller_cancel,
        Step::CancellationRefund => &mut e.refund,
        Step::CreditPoints => &mut e.points_credit,
        // Compensations and queries are idempotent by key: a retry settles them.
        _ => return,
    };
    if *slot == Effect::Absent {
        *slot = Effect::Uncertain;
    }
}
