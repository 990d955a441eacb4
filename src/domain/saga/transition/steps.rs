//! The steps themselves: which one is pending, the action that performs it (with its
//! deterministic key), which outcomes answer it, and how a success moves the saga on.

use super::*;

/// The step the saga waits on, or `None` when finished or parked.
pub(super) fn pending_step(r: &SagaRecord) -> Option<Step> {
    if is_terminal(r.state) || r.state == SagaState::NeedsAttention {
        return None;
    }
    match r.phase {
        Phase::HoldWallet => Some(Step::Hold),
        Phase::Authorize => Some(Step::Authorize),
        Phase::Reserve if r.effects.reservation == Effect::Uncertain => {
            Some(Step::ReconcileReservation)
        }
        Phase::Reserve => Some(Step::Reserve),
        Phase::CapturePayment => Some(Step::CapturePayment),
        Phase::CaptureWallet => Some(Step::CaptureWallet),
        Phase::SellerCancel => Some(Step::SellerCancel),
        Phase::RefundPayment => Some(Step::CancellationRefund),
        Phase::RestorePoints => Some(Step::CreditPoints),
        Phase::Compensating => next_compensation(r),
        Phase::Finished => None,
    }
}

/// Next compensation, in reverse order of the forward steps: refund (4), cancel the
/// reservation (3), void (2), release the hold (1). An effect in doubt is reconciled
/// first, so nothing is undone that was not done.
pub(super) fn next_compensation(r: &SagaRecord) -> Option<Step> {
    let e = &r.effects;
    match e.payment_capture {
        Effect::Uncertain => return Some(Step::ReconcileCapture),
        Effect::Done if r.data.capture_id.is_none() => return Some(Step::ReconcileCapture),
        Effect::Done => return Some(Step::RefundPayment),
        Effect::Absent | Effect::Compensated => {}
    }
    match e.reservation {
        Effect::Uncertain => return Some(Step::ReconcileReservation),
        Effect::Done => return Some(Step::CancelReservation),
        Effect::Absent | Effect::Compensated => {}
    }
    match e.authorization {
        Effect::Uncertain => return Some(Step::ReconcileAuthorization),
        Effect::Done if r.data.authorization_id.is_none() => {
            return Some(Step::ReconcileAuthorization)
        }
        Effect::Done => return Some(Step::VoidPayment),
        Effect::Absent | Effect::Compensated => {}
    }
    match e.wallet_hold {
        // A hold in doubt is released by key: releasing a hold that never landed is a no-op.
        Effect::Uncertain | Effect::Done => Some(Step::ReleaseHold),
        Effect::Absent | Effect::Compensated => None,
    }
}

pub(super) fn action_for(r: &SagaRecord, step: Step) -> Action {
    let id = r.saga_id;
    let key = step_key(id, step);
    let req = &r.request;
    match step {
        Step::Hold => Action::HoldWallet {
            key,
            account_id: req.account_id,
            amount: req.wallet_points,
        },
        Step::Authorize => Action::AuthorizePayment {
            key,
            card_token: req.card_token.clone(),
            amount: card_amount(r),
        },
        Step::Reserve => Action::Reserve {
            key: reservation_key(r.booking_id()),
            seller: req.seller.clone(),
            sku: req.sku.clone(),
            start: req.start,
            end: req.end,
            price: req.offer_price,
        },
        Step::ReconcileReservation => Action::ReconcileReservation {
            key: reservation_key(r.booking_id()),
            seller: req.seller.clone(),
            price: req.offer_price,
        },
        Step::CapturePayment => Action::CapturePayment {
            key,
            // Invariant: set together with `authorization = Done`; an empty id would be
            // refused by the gateway and compensated, never charged.
            authorization_id: r.data.authorization_id.clone().unwrap_or_default(),
            amount: card_amount(r),
        },
        Step::CaptureWallet => Action::CaptureWallet {
            key,
            hold_key: step_key(id, Step::Hold),
            account_id: req.account_id,
            amount: req.wallet_points,
        },
        Step::ReconcileAuthorization => Action::ReconcilePayment {
            key: step_key(id, Step::Authorize),
            operation: Step::Authorize,
            amount: card_amount(r),
        },
        Step::ReconcileCapture => Action::ReconcilePayment {
            key: step_key(id, Step::CapturePayment),
            operation: Step::CapturePayment,
            amount: card_amount(r),
        },
        Step::ReleaseHold => Action::ReleaseHold {
            key,
            hold_key: step_key(id, Step::Hold),
            account_id: req.account_id,
        },
        Step::VoidPayment => Action::VoidPayment {
            key,
            authorization_id: r.data.authorization_id.clone().unwrap_or_default(),
        },
        Step::CancelReservation => Action::CancelReservation {
            key,
            seller: req.seller.clone(),
            reservation_key: reservation_key(r.booking_id()),
            reservation_id: r.data.reservation_id.clone(),
        },
        Step::RefundPayment => Action::Refund {
            key,
            payment_id: r.data.capture_id.clone().unwrap_or_default(),
            amount: card_amount(r),
        },
        Step::SellerCancel => Action::CancelWithSeller {
            key,
            seller: req.seller.clone(),
            reservation_key: reservation_key(r.booking_id()),
            reservation_id: r.data.reservation_id.clone(),
        },
        Step::CancellationRefund => Action::Refund {
            key,
            payment_id: r.data.capture_id.clone().unwrap_or_default(),
            amount: r.data.refund_amount.unwrap_or_else(|| zero(r)),
        },
        Step::CreditPoints => Action::CreditPoints {
            key,
            account_id: req.account_id,
            amount: r.data.points_restored.unwrap_or_else(|| zero(r)),
        },
    }
}

/// Whether a success `outcome` is a valid answer to `step`.
pub(super) fn answers(step: Step, outcome: &StepOutcome) -> bool {
    use StepOutcome as O;
    match step {
        Step::Authorize => matches!(outcome, O::Authorized { .. }),
        Step::Reserve => matches!(outcome, O::Reserved { .. }),
        Step::CapturePayment => matches!(outcome, O::Captured { .. }),
        Step::ReconcileReservation => matches!(outcome, O::Reserved { .. } | O::NotFound),
        Step::ReconcileAuthorization => matches!(outcome, O::Authorized { .. } | O::NotFound),
        Step::ReconcileCapture => matches!(outcome, O::Captured { .. } | O::NotFound),
        Step::SellerCancel => matches!(outcome, O::SellerCancelled { .. }),
        Step::RefundPayment | Step::CancellationRefund => matches!(outcome, O::Refunded { .. }),
        Step::Hold
        | Step::CaptureWallet
        | Step::ReleaseHold
        | Step::VoidPayment
        | Step::CancelReservation
        | Step::CreditPoints => matches!(outcome, O::Completed),
    }
}

pub(super) fn on_success(
    r: &mut SagaRecord,
    step: Step,
    outcome: StepOutcome,
    cfg: &SagaConfig,
    now: DateTime<Utc>,
    tr: &mut Transition,
) {
    use StepOutcome as O;
    let e = &mut r.effects;
    let note: String = match (step, outcome) {
        (Step::Hold, _) => {
            e.wallet_hold = Effect::Done;
            r.phase = Phase::Authorize;
            "wallet points held".into()
        }
        (
            Step::Authorize,
            O::Authorized {
                authorization_id, ..
            },
        )
        | (
            Step::ReconcileAuthorization,
            O::Authorized {
                authorization_id, ..
            },
        ) => {
            e.authorization = Effect::Done;
            r.data.authorization_id = Some(authorization_id);
            if step == Step::Authorize {
                r.phase = Phase::Reserve;
            }
            "payment authorized".into()
        }
        (Step::ReconcileAuthorization, _) => {
            e.authorization = Effect::Absent;
            "payment authorization never took effect".into()
        }
        (Step::Reserve | Step::ReconcileReservation, O::Reserved { reservation_id, .. }) => {
            e.reservation = Effect::Done;
            r.data.reservation_id = Some(reservation_id);
            if r.phase == Phase::Reserve {
                r.phase = Phase::CapturePayment;
            }
            "seller confirmed the reservation".into()
        }
        (Step::ReconcileReservation, _) => {
            e.reservation = Effect::Absent;
            if r.phase == Phase::Reserve {
                let tries = r.attempts_of(Step::Reserve);
                if r.cancel_requested {
                    start_compensation(
                        r,
                        FailureCause::CustomerCancelled,
                        "customer cancelled".into(),
                        Some(step),
                        now,
                    );
                } else if tries >= cfg.budget(Step::Reserve) {
                    let why = format!("seller reservation did not land after {tries} attempts");
                    start_compensation(r, FailureCause::Technical, why, Some(step), now);
                } else {
                    tr.retry_attempt = Some(tries.max(1));
                }
            }
            "seller has no reservation under this key".into()
        }
        (Step::CapturePayment | Step::ReconcileCapture, O::Captured { capture_id, .. }) => {
            e.payment_capture = Effect::Done;
            r.data.capture_id = Some(capture_id);
            if r.phase == Phase::CapturePayment {
                r.phase = Phase::CaptureWallet;
            }
            "payment captured".into()
        }
        (Step::ReconcileCapture, _) => {
            e.payment_capture = Effect::Absent;
            "payment capture never took effect".into()
        }
        (Step::CaptureWallet, _) => {
            e.wallet_capture = Effect::Done;
            r.note(now, Some(step), "wallet points captured");
            finish_confirmed(r, now, tr);
            return;
        }
        (Step::ReleaseHold, _) => {
            e.wallet_hold = Effect::Compensated;
            "wallet hold released".into()
        }
        (Step::VoidPayment, _) => {
            e.authorization = Effect::Compensated;
            "payment authorization voided".into()
        }
        (Step::CancelReservation, _) => {
            e.reservation = Effect::Compensated;
            "seller reservation cancelled".into()
        }
        (Step::RefundPayment, _) => {
            e.payment_capture = Effect::Compensated;
            // The authorization was consumed by the capture; the refund undoes both.
            if e.authorization == Effect::Done {
                e.authorization = Effect::Compensated;
            }
            "payment refunded".into()
        }
        (Step::SellerCancel, O::SellerCancelled { fee, .. }) => {
            e.seller_cancel = Effect::Done;
            let card = r.data.card_captured.unwrap_or_else(|| zero(r));
            let points = r.data.points_captured.unwrap_or_else(|| zero(r));
            match cancellation_split(card, points, fee) {
                Ok(split) => {
                    r.data.seller_fee = Some(split.fee_charged);
                    r.data.refund_amount = Some(split.card_refund);
                    r.data.points_restored = Some(split.points_restored);
                    r.phase = Phase::RefundPayment;
                    format!("seller cancelled with a fee of {}", split.fee_charged)
                }
                Err(err) => {
                    // The seller did cancel; only the money split is unclear. An operator
                    // must decide, so the refund is not guessed.
                    // The phase stays at the seller cancel (idempotent by key), so an
                    // operator retry re-reads the fee instead of skipping the refunds.
                    r.data.seller_fee = Some(fee);
                    park(
                        r,
                        format!("seller cancelled but the refund cannot be computed: {err}"),
                        step,
                        now,
                    );
                    return;
                }
            }
        }
        (Step::CancellationRefund, _) => {
            e.refund = Effect::Done;
            r.phase = Phase::RestorePoints;
            "card refunded".into()
        }
        (Step::CreditPoints, _) => {
            e.points_credit = Effect::Done;
            r.note(now, Some(step), "wallet points restored");
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
        // `answers` has already matched outcome to step, so the arms above are complete.
        (s, o) => format!("ignored outcome {} for {}", o.describe(), s.as_str()),
    };
    r.note(now, Some(step), note);
}
