//! Amounts reported by partners: a seller's confirmed price and every amount a gateway
//! says it authorized, captured or refunded must be the amount asked. Anything else means
//! wayfare's books and the partner's disagree, so the saga never carries on as if the
//! partner had done what it was asked:
//!
//! - an authorization or a reservation at another amount exists all the same: it is
//!   recorded (so it is undone) and the booking compensates and fails with
//!   `payment_mismatch` or `price_mismatch` (already compensating, it is just undone);
//! - a capture or a refund of another amount has moved money that no compensation of
//!   wayfare's can square (a refund of the amount asked would be wrong either way), so the
//!   saga parks for an operator, with both amounts in the reason.

use super::*;

/// Why `outcome` answers another request than `step`'s, where the reply names it: a
/// seller cancellation naming a reservation other than the booking's. An operator looks:
/// the seller cancelled something, and not what wayfare knows of.
pub(super) fn answers_another_request(
    r: &SagaRecord,
    step: Step,
    outcome: &StepOutcome,
) -> Option<String> {
    match (step, outcome, &r.data.reservation_id) {
        (Step::SellerCancel, StepOutcome::SellerCancelled { reservation_id, .. }, Some(ours))
            if reservation_id != ours =>
        {
            Some(format!(
                "seller-cancel: the seller cancelled reservation {reservation_id:?}, not this \
                 booking's {ours:?}"
            ))
        }
        _ => None,
    }
}

/// The mismatch in `outcome`, a success that answers `step`, if the amount it names is not
/// the one asked.
pub(super) fn amount_mismatch(
    r: &SagaRecord,
    step: Step,
    outcome: &StepOutcome,
) -> Option<AmountMismatch> {
    use StepOutcome as O;
    let (expected, reported) = match (step, outcome) {
        (Step::Authorize | Step::ReconcileAuthorization, O::Authorized { amount, .. }) => {
            (card_amount(r), *amount)
        }
        (Step::Reserve | Step::ReconcileReservation, O::Reserved { price, .. }) => {
            (r.request.offer_price, *price)
        }
        (Step::CapturePayment | Step::ReconcileCapture, O::Captured { amount, .. }) => {
            (card_amount(r), *amount)
        }
        (Step::RefundPayment, O::Refunded { amount }) => (card_amount(r), *amount),
        (Step::CancellationRefund, O::Refunded { amount }) => {
            (r.data.refund_amount.unwrap_or_else(|| zero(r)), *amount)
        }
        _ => return None,
    };
    (expected != reported).then_some(AmountMismatch {
        step,
        expected,
        reported,
    })
}

/// Moves `r` on a mismatched `outcome` of `m.step`, as the module doc says.
pub(super) fn on_mismatch(
    r: &mut SagaRecord,
    m: AmountMismatch,
    outcome: StepOutcome,
    now: DateTime<Utc>,
) {
    use StepOutcome as O;
    let step = m.step;
    let why = format!(
        "{} reported {} where {} was asked",
        step.as_str(),
        m.reported,
        m.expected
    );
    let cause = match step {
        Step::Reserve | Step::ReconcileReservation => FailureCause::PriceMismatch,
        _ => FailureCause::PaymentMismatch,
    };
    match outcome {
        O::Authorized {
            authorization_id, ..
        } => {
            r.effects.authorization = Effect::Done;
            r.data.authorization_id = Some(authorization_id);
            compensate(r, cause, why, step, now);
        }
        O::Reserved { reservation_id, .. } => {
            r.effects.reservation = Effect::Done;
            r.data.reservation_id = Some(reservation_id);
            compensate(r, cause, why, step, now);
        }
        O::Captured { capture_id, .. } => {
            r.effects.payment_capture = Effect::Done;
            r.data.capture_id = Some(capture_id);
            r.data.failure_cause.get_or_insert(cause);
            r.data.failure_reason.get_or_insert(why.clone());
            park(r, why, step, now);
        }
        _ => {
            r.data.failure_cause.get_or_insert(cause);
            r.data.failure_reason.get_or_insert(why.clone());
            park(r, why, step, now);
        }
    }
}

/// Undo everything, the mismatched effect included; a saga already undoing goes on undoing
/// (its first cause stays).
fn compensate(
    r: &mut SagaRecord,
    cause: FailureCause,
    why: String,
    step: Step,
    now: DateTime<Utc>,
) {
    if r.phase == Phase::Compensating {
        r.note(now, Some(step), format!("{why}; it will be undone"));
    } else {
        start_compensation(r, cause, why, Some(step), now);
    }
}
