//! Booking sagas: creating one, the customer's cancel while it is in flight, and the
//! customer-visible state of the forward path.

use super::*;

/// A new booking saga for `request`, validated. The caller persists it before acting.
pub fn new_booking(
    id: BookingId,
    request: BookingRequest,
    now: DateTime<Utc>,
) -> Result<SagaRecord, SagaError> {
    request.validate()?;
    let mut r = SagaRecord {
        definition_version: DEFINITION_VERSION,
        saga_id: SagaId::Booking(id),
        kind: SagaKind::Booking,
        request,
        state: SagaState::Pending,
        phase: Phase::HoldWallet,
        effects: Default::default(),
        data: SagaData::default(),
        attempts: Default::default(),
        needs_attention: None,
        resume_state: None,
        cancel_requested: false,
        created_at: now,
        updated_at: now,
        history: Vec::new(),
        trace: None,
        calls: Default::default(),
    };
    r.note(now, None, "booking requested");
    let mut tr = Transition::at(r.state, None);
    normalize(&mut r, now, &mut tr);
    Ok(r)
}

/// The customer asks to cancel booking `r`. Decides by how far it got; see
/// [`CancelDecision`]. Call it between steps (no call outstanding): an actor that gets a
/// cancel while a step is in flight applies the step's outcome first.
///
/// Policy: before the pivot (no reservation exists or may exist) it compensates at once
/// and ends `cancelled`. Once a reservation may exist, undoing it could race the seller, so
/// the booking completes and is then cancelled by a cancellation saga (normal fee rules).
pub fn request_cancellation(
    r: &mut SagaRecord,
    now: DateTime<Utc>,
) -> (CancelDecision, Transition) {
    let mut tr = Transition::at(r.state, None);
    if r.kind != SagaKind::Booking {
        return (CancelDecision::NotABooking, tr);
    }
    let decision = match r.state {
        SagaState::Confirmed => CancelDecision::StartCancellationSaga,
        SagaState::Failed | SagaState::Cancelled => CancelDecision::AlreadyFinal,
        SagaState::NeedsAttention => {
            r.cancel_requested = true;
            r.note(
                now,
                None,
                "customer asked to cancel; waiting for an operator",
            );
            CancelDecision::NeedsOperator
        }
        SagaState::Compensating => {
            r.cancel_requested = true;
            r.note(now, None, "customer asked to cancel; already undoing");
            CancelDecision::AlreadyCompensating
        }
        SagaState::Pending | SagaState::PaymentAuthorized | SagaState::SellerConfirmed => {
            r.cancel_requested = true;
            let before_pivot = matches!(r.phase, Phase::HoldWallet | Phase::Authorize)
                || (r.phase == Phase::Reserve && r.effects.reservation == Effect::Absent);
            if before_pivot {
                // The step of the current phase may have acted without a record (its
                // intent is implied by the phase): a call cut short by a crash or a stop,
                // or one whose outcome could not be persisted (the actor then rolls back to
                // redo it by key, and this cancel can come in between). Treat its effect as
                // in doubt, so compensation asks (or releases by key) before undoing,
                // instead of leaving a hold, an authorization or a reservation behind.
                let current = match r.phase {
                    Phase::HoldWallet => Some(&mut r.effects.wallet_hold),
                    Phase::Authorize => Some(&mut r.effects.authorization),
                    Phase::Reserve => Some(&mut r.effects.reservation),
                    _ => None,
                };
                if let Some(effect) = current.filter(|e| **e == Effect::Absent) {
                    *effect = Effect::Uncertain;
                }
                start_compensation(
                    r,
                    FailureCause::CustomerCancelled,
                    "customer cancelled".into(),
                    None,
                    now,
                );
                CancelDecision::CompensateNow
            } else {
                r.note(
                    now,
                    None,
                    "customer asked to cancel; will cancel once confirmed",
                );
                CancelDecision::AfterConfirmation
            }
        }
    };
    normalize(r, now, &mut tr);
    tr.to = r.state;
    (decision, tr)
}

pub(super) fn finish_confirmed(r: &mut SagaRecord, now: DateTime<Utc>, tr: &mut Transition) {
    r.data.card_captured = Some(card_amount(r));
    r.data.points_captured = Some(r.request.wallet_points);
    finish(
        r,
        SagaState::Confirmed,
        EmailKind::Confirmed,
        "booking confirmed",
        now,
        tr,
    );
    tr.start_cancellation = r.cancel_requested;
}

/// Skips steps that do not apply (no points, no card part, nothing to refund), finishes a
/// compensation with nothing left to undo, and keeps the customer-visible state in step
/// with the forward phase.
pub(super) fn normalize(r: &mut SagaRecord, now: DateTime<Utc>, tr: &mut Transition) {
    if is_terminal(r.state) || r.state == SagaState::NeedsAttention {
        return;
    }
    loop {
        match r.phase {
            Phase::HoldWallet if r.request.wallet_points.minor == 0 => r.phase = Phase::Authorize,
            Phase::Authorize if card_amount(r).minor == 0 => r.phase = Phase::Reserve,
            Phase::CapturePayment if card_amount(r).minor == 0 => r.phase = Phase::CaptureWallet,
            Phase::CaptureWallet if r.request.wallet_points.minor == 0 => {
                finish_confirmed(r, now, tr);
                return;
            }
            Phase::RefundPayment if r.data.refund_amount.is_none_or(|m| m.minor == 0) => {
                r.phase = Phase::RestorePoints
            }
            Phase::RestorePoints if r.data.points_restored.is_none_or(|m| m.minor == 0) => {
                finish(
                    r,
                    SagaState::Cancelled,
                    EmailKind::Cancelled,
                    "cancelled",
                    now,
                    tr,
                );
                return;
            }
            Phase::Compensating if next_compensation(r).is_none() => {
                if r.cancel_requested {
                    finish(
                        r,
                        SagaState::Cancelled,
                        EmailKind::Cancelled,
                        "cancelled; every step undone",
                        now,
                        tr,
                    );
                } else {
                    finish(
                        r,
                        SagaState::Failed,
                        EmailKind::Failed,
                        "failed; every step undone",
                        now,
                        tr,
                    );
                }
                return;
            }
            _ => break,
        }
    }
    if r.kind == SagaKind::Booking {
        let visible = match r.phase {
            Phase::HoldWallet | Phase::Authorize => SagaState::Pending,
            Phase::Reserve => SagaState::PaymentAuthorized,
            Phase::CapturePayment | Phase::CaptureWallet => SagaState::SellerConfirmed,
            _ => r.state,
        };
        if visible != r.state {
            let note = match visible {
                SagaState::PaymentAuthorized => "payment arranged; reserving with the seller",
                SagaState::SellerConfirmed => "reservation held; capturing payment",
                _ => "in progress",
            };
            set_state(r, visible, now, None, note);
        }
    }
}
