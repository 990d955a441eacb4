//! Unit tests of the saga transitions, path by path; the property tests against a model
//! of the outside world are in `model.rs`.

use super::*;
use crate::domain::money::Currency;

/// The booking most tests run; its cancellation saga is `B1` + `:cancel`.
const B1: BookingId = BookingId(uuid::Uuid::from_u128(0xb1));

/// The cancellation saga of `B1`.
fn c1() -> SagaId {
    SagaId::Cancellation(B1)
}
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn request(points: i64, price: i64) -> BookingRequest {
    BookingRequest {
        account_id: AccountId::demo(1),
        seller: "alpha".into(),
        sku: "hotel-7-dbl".into(),
        start: NaiveDate::from_ymd_opt(2027, 5, 1).unwrap(),
        end: NaiveDate::from_ymd_opt(2027, 5, 3).unwrap(),
        wallet_points: eur(points),
        card_token: "tok_approve".into(),
        offer_price: eur(price),
        idempotency_key: "idem-1".into(),
    }
}

fn booking(points: i64, price: i64) -> SagaRecord {
    new_booking(B1, request(points, price), now()).unwrap()
}

fn cfg() -> SagaConfig {
    SagaConfig::default()
}

/// The outcome a well-behaved outside world gives for `action`.
fn success(action: &Action) -> StepOutcome {
    match action {
        Action::AuthorizePayment { amount, .. } => StepOutcome::Authorized {
            authorization_id: "auth-1".into(),
            amount: *amount,
        },
        Action::Reserve { price, .. } | Action::ReconcileReservation { price, .. } => {
            StepOutcome::Reserved {
                reservation_id: "res-1".into(),
                price: *price,
            }
        }
        Action::CapturePayment { amount, .. } => StepOutcome::Captured {
            capture_id: "cap-1".into(),
            amount: *amount,
        },
        Action::Refund { amount, .. } => StepOutcome::Refunded { amount: *amount },
        Action::CancelWithSeller { reservation_id, .. } => StepOutcome::SellerCancelled {
            fee: eur(0),
            reservation_id: reservation_id.clone().unwrap_or_default(),
        },
        _ => StepOutcome::Completed,
    }
}

/// Runs `r` until it stops, answering each action with `answer`; returns the actions
/// taken and the last transition.
fn drive(
    r: &mut SagaRecord,
    mut answer: impl FnMut(&Action) -> StepOutcome,
) -> (Vec<Action>, Vec<Transition>) {
    let (mut actions, mut transitions) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let action = next_action(r);
        if matches!(action, Action::Done | Action::AwaitOperator { .. }) {
            return (actions, transitions);
        }
        let outcome = answer(&action);
        transitions.push(apply(r, outcome, &cfg(), now()).unwrap());
        actions.push(action);
    }
    panic!("saga did not stop within 200 steps");
}

fn names(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .map(|a| match a {
            Action::HoldWallet { .. } => "hold",
            Action::AuthorizePayment { .. } => "authorize",
            Action::Reserve { .. } => "reserve",
            Action::ReconcileReservation { .. } => "reconcile-reservation",
            Action::CapturePayment { .. } => "capture",
            Action::CaptureWallet { .. } => "capture-wallet",
            Action::ReconcilePayment { .. } => "reconcile-payment",
            Action::ReleaseHold { .. } => "release",
            Action::VoidPayment { .. } => "void",
            Action::CancelReservation { .. } => "cancel-reservation",
            Action::Refund { .. } => "refund",
            Action::CancelWithSeller { .. } => "seller-cancel",
            Action::CreditPoints { .. } => "credit-points",
            Action::AwaitOperator { .. } => "await-operator",
            Action::Done => "done",
        })
        .collect()
}

fn states(r: &SagaRecord) -> Vec<SagaState> {
    let mut out: Vec<SagaState> = Vec::new();
    for h in &r.history {
        if out.last() != Some(&h.state) {
            out.push(h.state);
        }
    }
    out
}

#[test]
fn happy_path_with_points_and_card() {
    let mut r = booking(5_000, 30_000);
    let (actions, trs) = drive(&mut r, success);
    assert_eq!(
        names(&actions),
        ["hold", "authorize", "reserve", "capture", "capture-wallet"]
    );
    assert_eq!(r.state, SagaState::Confirmed);
    assert_eq!(
        states(&r),
        [
            SagaState::Pending,
            SagaState::PaymentAuthorized,
            SagaState::SellerConfirmed,
            SagaState::Confirmed
        ]
    );
    let last = trs.last().unwrap();
    assert_eq!(last.email, Some(EmailKind::Confirmed));
    assert!(is_terminal(last.to) && !last.start_cancellation);
    // Only the final transition emails.
    assert_eq!(trs.iter().filter(|t| t.email.is_some()).count(), 1);
    assert_eq!(r.data.card_captured, Some(eur(25_000)));
    assert_eq!(r.data.points_captured, Some(eur(5_000)));
    // Amounts: card part is price minus points.
    assert!(
        matches!(&actions[1], Action::AuthorizePayment { amount, .. } if *amount == eur(25_000))
    );
    assert!(
        matches!(&actions[3], Action::CapturePayment { authorization_id, amount, .. }
        if authorization_id == "auth-1" && *amount == eur(25_000))
    );
    assert_eq!(next_action(&r), Action::Done);
    assert_eq!(
        apply(&mut r, StepOutcome::Completed, &cfg(), now()),
        Err(SagaError::NotAwaitingOutcome(SagaState::Confirmed))
    );
    let email = email_for(&r, EmailKind::Confirmed, "a@example.com", now());
    assert_eq!(email.id, format!("{B1}:email:confirmed"));
    assert_eq!(email.booking_id, B1.to_string());
}

#[test]
fn step_keys_are_deterministic() {
    let mut r = booking(5_000, 30_000);
    let (actions, _) = drive(&mut r, success);
    let keys: Vec<String> = actions
        .iter()
        .map(|a| match a {
            Action::HoldWallet { key, .. }
            | Action::AuthorizePayment { key, .. }
            | Action::Reserve { key, .. }
            | Action::CapturePayment { key, .. }
            | Action::CaptureWallet { key, .. } => key.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        keys,
        [
            format!("{B1}:hold"),
            format!("{B1}:authorize"),
            format!("{B1}"),
            format!("{B1}:capture"),
            format!("{B1}:capture-wallet")
        ]
    );
    // Same record, same action: a restarted actor repeats the same keyed call.
    let mut a = booking(5_000, 30_000);
    let b = a.clone();
    assert_eq!(next_action(&a), next_action(&b));
    apply(
        &mut a,
        StepOutcome::Transient {
            reason: "busy".into(),
        },
        &cfg(),
        now(),
    )
    .unwrap();
    assert_eq!(
        next_action(&a),
        next_action(&b),
        "a retry uses the same key"
    );
    assert!(
        matches!(&actions[4], Action::CaptureWallet { hold_key, .. } if *hold_key == format!("{B1}:hold"))
    );
}

#[test]
fn card_only_and_points_only_skip_steps() {
    let mut r = booking(0, 10_000);
    let (actions, _) = drive(&mut r, success);
    assert_eq!(names(&actions), ["authorize", "reserve", "capture"]);
    assert_eq!(r.state, SagaState::Confirmed);

    let mut r = new_booking(
        BookingId(uuid::Uuid::from_u128(0xb2)),
        BookingRequest {
            card_token: String::new(),
            ..request(10_000, 10_000)
        },
        now(),
    )
    .unwrap();
    assert_eq!(r.state, SagaState::Pending);
    let (actions, _) = drive(&mut r, success);
    assert_eq!(names(&actions), ["hold", "reserve", "capture-wallet"]);
    assert_eq!(r.state, SagaState::Confirmed);
}

#[test]
fn decline_at_authorization_releases_the_hold_and_fails() {
    let mut r = booking(5_000, 30_000);
    let (actions, trs) = drive(&mut r, |a| match a {
        Action::AuthorizePayment { .. } => StepOutcome::Refused {
            reason: "card declined".into(),
        },
        other => success(other),
    });
    assert_eq!(names(&actions), ["hold", "authorize", "release"]);
    assert_eq!(r.state, SagaState::Failed);
    assert_eq!(r.effects.wallet_hold, Effect::Compensated);
    assert_eq!(r.data.failure_cause, Some(FailureCause::PaymentDeclined));
    assert_eq!(trs.last().unwrap().email, Some(EmailKind::Failed));
    assert!(states(&r).contains(&SagaState::Compensating));
    let email = email_for(&r, EmailKind::Failed, "a@example.com", now());
    assert!(email.body.contains("your card was declined"));
    assert!(
        !email.body.contains("card declined"),
        "internal reason is not emailed"
    );
}

#[test]
fn decline_without_points_fails_at_once() {
    let mut r = booking(0, 30_000);
    let tr = apply(
        &mut r,
        StepOutcome::Refused {
            reason: "declined".into(),
        },
        &cfg(),
        now(),
    )
    .unwrap();
    assert_eq!(
        (tr.from, tr.to, tr.email),
        (
            SagaState::Pending,
            SagaState::Failed,
            Some(EmailKind::Failed)
        )
    );
}

#[test]
fn seller_rejection_after_authorization_voids_and_releases() {
    let mut r = booking(5_000, 30_000);
    let (actions, _) = drive(&mut r, |a| match a {
        Action::Reserve { .. } => StepOutcome::Refused {
            reason: "sold out".into(),
        },
        other => success(other),
    });
    assert_eq!(
        names(&actions),
        ["hold", "authorize", "reserve", "void", "release"]
    );
    assert!(
        matches!(&actions[3], Action::VoidPayment { key, authorization_id } if *key == format!("{B1}:void") && authorization_id == "auth-1")
    );
    assert!(
        matches!(&actions[4], Action::ReleaseHold { key, hold_key, .. } if *key == format!("{B1}:release-hold") && *hold_key == format!("{B1}:hold"))
    );
    assert_eq!(r.state, SagaState::Failed);
    assert_eq!(r.data.failure_cause, Some(FailureCause::SellerRefused));
}

#[test]
fn price_changed_is_a_refusal_and_compensates() {
    let mut r = booking(0, 30_000);
    let (actions, _) = drive(&mut r, |a| match a {
        Action::Reserve { .. } => StepOutcome::Refused {
            reason: "price changed to 310.00 EUR".into(),
        },
        other => success(other),
    });
    assert_eq!(names(&actions), ["authorize", "reserve", "void"]);
    assert_eq!(r.state, SagaState::Failed);
    assert!(r
        .data
        .failure_reason
        .as_deref()
        .unwrap()
        .contains("price changed"));
}

#[test]
fn capture_permanent_failure_cancels_reservation_voids_and_releases() {
    let mut r = booking(5_000, 30_000);
    let (actions, trs) = drive(&mut r, |a| match a {
        Action::CapturePayment { .. } => StepOutcome::Permanent {
            reason: "capture refused by issuer".into(),
        },
        other => success(other),
    });
    assert_eq!(
        names(&actions),
        [
            "hold",
            "authorize",
            "reserve",
            "capture",
            "cancel-reservation",
            "void",
            "release"
        ]
    );
    assert!(
        matches!(&actions[4], Action::CancelReservation { reservation_key, reservation_id, .. }
        if *reservation_key == B1.to_string() && reservation_id.as_deref() == Some("res-1"))
    );
    assert_eq!(r.state, SagaState::Failed);
    assert_eq!(trs.iter().filter(|t| t.email.is_some()).count(), 1);
}

#[test]
fn wallet_capture_failure_after_card_capture_refunds_instead_of_voiding() {
    let mut r = booking(5_000, 30_000);
    let (actions, _) = drive(&mut r, |a| match a {
        Action::CaptureWallet { .. } => StepOutcome::Permanent {
            reason: "hold expired".into(),
        },
        other => success(other),
    });
    assert_eq!(
        names(&actions),
        [
            "hold",
            "authorize",
            "reserve",
            "capture",
            "capture-wallet",
            "refund",
            "cancel-reservation",
            "release"
        ]
    );
    assert!(
        matches!(&actions[5], Action::Refund { payment_id, amount, .. } if payment_id == "cap-1" && *amount == eur(25_000))
    );
    assert_eq!(r.effects.authorization, Effect::Compensated);
    assert_eq!(r.state, SagaState::Failed);
}

#[test]
fn reservation_timeout_reconciled_as_booked_does_not_reserve_twice() {
    let mut r = booking(0, 30_000);
    let mut reserve_calls = 0;
    let (actions, trs) = drive(&mut r, |a| match a {
        Action::Reserve { .. } => {
            reserve_calls += 1;
            StepOutcome::TimedOut
        }
        other => success(other),
    });
    assert_eq!(reserve_calls, 1);
    assert_eq!(
        names(&actions),
        ["authorize", "reserve", "reconcile-reservation", "capture"]
    );
    assert!(
        matches!(&actions[2], Action::ReconcileReservation { key, .. } if *key == B1.to_string())
    );
    assert_eq!(trs[1].retry_attempt, Some(1));
    assert_eq!(r.state, SagaState::Confirmed);
    assert_eq!(r.data.reservation_id.as_deref(), Some("res-1"));
}

#[test]
fn reservation_timeout_reconciled_as_absent_retries_then_compensates() {
    let mut r = booking(0, 30_000);
    let (actions, _) = drive(&mut r, |a| match a {
        Action::Reserve { .. } => StepOutcome::TimedOut,
        Action::ReconcileReservation { .. } => StepOutcome::NotFound,
        other => success(other),
    });
    let n = names(&actions);
    assert_eq!(
        n.iter().filter(|a| **a == "reserve").count(),
        cfg().max_attempts_before_pivot as usize
    );
    // Never cancels a reservation the seller says does not exist.
    assert!(!n.contains(&"cancel-reservation"));
    assert_eq!(n.last(), Some(&"void"));
    assert_eq!(r.state, SagaState::Failed);
}

#[test]
fn reconciliation_that_keeps_failing_parks_instead_of_guessing() {
    let mut r = booking(0, 30_000);
    let (actions, _) = drive(&mut r, |a| match a {
        Action::Reserve { .. } => StepOutcome::TimedOut,
        Action::ReconcileReservation { .. } => StepOutcome::Transient {
            reason: "seller down".into(),
        },
        other => success(other),
    });
    assert!(!names(&actions).contains(&"void"));
    assert_eq!(r.state, SagaState::NeedsAttention);
    // The seller is back and has the booking: operator retry goes forward.
    retry_needs_attention(&mut r, now()).unwrap();
    assert_eq!(r.state, SagaState::PaymentAuthorized);
    drive(&mut r, success);
    assert_eq!(r.state, SagaState::Confirmed);
}

#[test]
fn transient_failures_retry_with_backoff_then_compensate_before_pivot() {
    let mut r = booking(5_000, 30_000);
    let (actions, trs) = drive(&mut r, |a| match a {
        Action::AuthorizePayment { .. } => StepOutcome::Transient {
            reason: "gateway 503".into(),
        },
        Action::ReconcilePayment { .. } => StepOutcome::NotFound,
        other => success(other),
    });
    // A failed attempt proves only that it did not land, so the gateway is asked
    // before the hold is released.
    assert_eq!(
        names(&actions),
        [
            "hold",
            "authorize",
            "authorize",
            "authorize",
            "reconcile-payment",
            "release"
        ]
    );
    assert_eq!(trs[1].retry_attempt, Some(1));
    assert_eq!(trs[2].retry_attempt, Some(2));
    assert_eq!(trs[3].retry_attempt, None);
    assert_eq!(r.state, SagaState::Failed);
    assert_eq!(r.data.failure_cause, Some(FailureCause::Technical));
}

#[test]
fn an_authorization_made_before_a_crash_is_voided_when_the_retries_fail() {
    // Found by the chaos drill: the saga crashed while its authorize call was in
    // flight and the gateway authorized; after the restart every retry failed before
    // reaching the gateway. The open authorization must still be found and voided.
    let mut r = booking(5_000, 30_000);
    apply(&mut r, StepOutcome::Completed, &cfg(), now()).unwrap(); // hold
    let before_crash = next_action(&r);
    assert!(matches!(before_crash, Action::AuthorizePayment { .. }));
    // The restarted saga starts from the stored record, which knows nothing of it.
    let (actions, _) = drive(&mut r, |a| match a {
        Action::AuthorizePayment { .. } => StepOutcome::Transient {
            reason: "injected fault".into(),
        },
        Action::ReconcilePayment { key, amount, .. } => {
            assert_eq!(*key, format!("{B1}:authorize"));
            StepOutcome::Authorized {
                authorization_id: "auth-before-crash".into(),
                amount: *amount,
            }
        }
        other => success(other),
    });
    assert_eq!(
        names(&actions),
        [
            "authorize",
            "authorize",
            "authorize",
            "reconcile-payment",
            "void",
            "release"
        ]
    );
    assert_eq!(r.effects.authorization, Effect::Compensated);
    assert_eq!(r.effects.wallet_hold, Effect::Compensated);
    assert_eq!(r.state, SagaState::Failed);
}

#[test]
fn authorization_timeouts_are_reconciled_before_voiding() {
    // The authorization landed although every reply timed out: it is found and voided.
    let mut r = booking(0, 30_000);
    let (actions, _) = drive(&mut r, |a| match a {
        Action::AuthorizePayment { .. } => StepOutcome::TimedOut,
        Action::ReconcilePayment { key, amount, .. } => {
            assert_eq!(*key, format!("{B1}:authorize"));
            StepOutcome::Authorized {
                authorization_id: "auth-9".into(),
                amount: *amount,
            }
        }
        other => success(other),
    });
    assert_eq!(
        names(&actions),
        [
            "authorize",
            "authorize",
            "authorize",
            "reconcile-payment",
            "void"
        ]
    );
    assert!(
        matches!(&actions[4], Action::VoidPayment { authorization_id, .. } if authorization_id == "auth-9")
    );
    assert_eq!(r.state, SagaState::Failed);

    // It never landed: nothing to void.
    let mut r = booking(0, 30_000);
    let (actions, _) = drive(&mut r, |a| match a {
        Action::AuthorizePayment { .. } => StepOutcome::TimedOut,
        Action::ReconcilePayment { .. } => StepOutcome::NotFound,
        other => success(other),
    });
    assert_eq!(
        names(&actions),
        ["authorize", "authorize", "authorize", "reconcile-payment"]
    );
    assert_eq!(r.state, SagaState::Failed);
}

#[test]
fn after_pivot_capture_retries_forward_then_parks_never_compensates_on_transients() {
    let mut r = booking(0, 30_000);
    let mut capture_ok = false;
    let (actions, _) = drive(&mut r, |a| match a {
        Action::CapturePayment { .. } if !capture_ok => StepOutcome::Transient {
            reason: "gateway 503".into(),
        },
        other => success(other),
    });
    let n = names(&actions);
    assert_eq!(
        n.iter().filter(|a| **a == "capture").count(),
        cfg().max_attempts_after_pivot as usize
    );
    assert!(!n.contains(&"void") && !n.contains(&"cancel-reservation"));
    assert_eq!(r.state, SagaState::NeedsAttention);
    assert_eq!(r.resume_state, Some(SagaState::SellerConfirmed));
    assert!(
        matches!(next_action(&r), Action::AwaitOperator { reason } if reason.contains("capture"))
    );
    capture_ok = true;
    let _ = capture_ok;
    let tr = retry_needs_attention(&mut r, now()).unwrap();
    assert_eq!(
        (tr.from, tr.to),
        (SagaState::NeedsAttention, SagaState::SellerConfirmed)
    );
    let (actions, trs) = drive(&mut r, success);
    assert_eq!(names(&actions), ["capture"]);
    assert_eq!(r.state, SagaState::Confirmed);
    assert_eq!(trs.last().unwrap().email, Some(EmailKind::Confirmed));
}

#[test]
fn a_saga_whose_actor_keeps_crashing_is_parked_where_it_stands_and_resumed_by_a_retry() {
    let mut r = booking(5_000, 30_000);
    // The hold landed; the actor then crashes before the authorization, again and again.
    let hold = next_action(&r);
    apply(&mut r, success(&hold), &cfg(), now()).unwrap();
    let before = r.state;
    let pending = next_action(&r);
    let tr = park_crashed(&mut r, "panicked: boom", now()).unwrap();
    assert_eq!((tr.from, tr.to), (before, SagaState::NeedsAttention));
    assert_eq!(
        r.needs_attention.as_deref(),
        Some("the saga's actor kept crashing: panicked: boom")
    );
    assert!(matches!(next_action(&r), Action::AwaitOperator { .. }));
    // Parking twice, or a finished saga, is refused and changes nothing.
    let parked = r.clone();
    assert!(park_crashed(&mut r, "again", now()).is_err());
    assert_eq!(r, parked);
    // The operator's retry resumes at the same step; the saga then finishes.
    retry_needs_attention(&mut r, now()).unwrap();
    assert_eq!(r.state, before);
    assert_eq!(next_action(&r), pending);
    drive(&mut r, success);
    assert_eq!(r.state, SagaState::Confirmed);
    assert!(park_crashed(&mut r, "late", now()).is_err());
}

#[test]
fn failing_compensation_parks_then_operator_retry_finishes_it() {
    let mut r = booking(5_000, 30_000);
    let (actions, trs) = drive(&mut r, |a| match a {
        Action::Reserve { .. } => StepOutcome::Refused {
            reason: "sold out".into(),
        },
        Action::VoidPayment { .. } => StepOutcome::Transient {
            reason: "gateway 503".into(),
        },
        other => success(other),
    });
    let voids = names(&actions).iter().filter(|a| **a == "void").count();
    assert_eq!(voids, cfg().max_compensation_attempts as usize);
    assert_eq!(r.state, SagaState::NeedsAttention);
    assert!(r.needs_attention.as_deref().unwrap().contains("void"));
    assert!(
        trs.iter().all(|t| t.email.is_none()),
        "no email while parked"
    );
    // The hold is not released yet: compensation is strictly in reverse order.
    assert_eq!(r.effects.wallet_hold, Effect::Done);
    assert_eq!(
        apply(&mut r, StepOutcome::Completed, &cfg(), now()),
        Err(SagaError::NotAwaitingOutcome(SagaState::NeedsAttention))
    );

    let tr = retry_needs_attention(&mut r, now()).unwrap();
    assert_eq!(tr.to, SagaState::Compensating);
    assert_eq!(r.attempts_of(Step::VoidPayment), 0);
    let (actions, trs) = drive(&mut r, success);
    assert_eq!(names(&actions), ["void", "release"]);
    assert_eq!(r.state, SagaState::Failed);
    assert_eq!(trs.last().unwrap().email, Some(EmailKind::Failed));
    assert!(retry_needs_attention(&mut r, now()).is_err());
}

#[test]
fn wallet_capture_in_doubt_then_permanent_failure_parks() {
    let mut r = booking(5_000, 30_000);
    let mut wallet_calls = 0;
    let (actions, _) = drive(&mut r, |a| match a {
        Action::CaptureWallet { .. } => {
            wallet_calls += 1;
            if wallet_calls == 1 {
                StepOutcome::TimedOut
            } else {
                StepOutcome::Permanent {
                    reason: "ledger error".into(),
                }
            }
        }
        other => success(other),
    });
    assert_eq!(names(&actions).last(), Some(&"capture-wallet"));
    assert_eq!(r.state, SagaState::NeedsAttention);
    assert_eq!(
        r.effects.payment_capture,
        Effect::Done,
        "nothing was undone blindly"
    );
}

#[test]
fn permanent_compensation_failure_parks_at_once() {
    let mut r = booking(0, 30_000);
    let (actions, _) = drive(&mut r, |a| match a {
        Action::Reserve { .. } => StepOutcome::Refused {
            reason: "sold out".into(),
        },
        Action::VoidPayment { .. } => StepOutcome::Permanent {
            reason: "unknown authorization".into(),
        },
        other => success(other),
    });
    assert_eq!(names(&actions), ["authorize", "reserve", "void"]);
    assert_eq!(r.state, SagaState::NeedsAttention);
}

#[test]
fn outcome_not_answering_the_step_is_refused_and_changes_nothing() {
    let mut r = booking(0, 30_000);
    let before = r.clone();
    let err = apply(
        &mut r,
        StepOutcome::Reserved {
            reservation_id: "x".into(),
            price: eur(30_000),
        },
        &cfg(),
        now(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        SagaError::UnexpectedOutcome {
            step: Step::Authorize,
            ..
        }
    ));
    assert_eq!(r, before);
    r.definition_version = 99;
    assert!(matches!(next_action(&r), Action::AwaitOperator { .. }));
    assert_eq!(
        apply(&mut r, StepOutcome::Completed, &cfg(), now()),
        Err(SagaError::UnsupportedVersion(99))
    );
}

fn confirmed(points: i64, price: i64) -> SagaRecord {
    let mut r = booking(points, price);
    drive(&mut r, success);
    assert_eq!(r.state, SagaState::Confirmed);
    r
}

#[test]
fn cancellation_refunds_card_minus_fee_and_restores_points() {
    let mut b = confirmed(5_000, 30_000);
    let mut c = new_cancellation(&b, now()).unwrap();
    assert_eq!(c.booking_id(), B1);
    let (actions, trs) = drive(&mut c, |a| match a {
        Action::CancelWithSeller { reservation_id, .. } => StepOutcome::SellerCancelled {
            fee: eur(3_000),
            reservation_id: reservation_id.clone().unwrap_or_default(),
        },
        other => success(other),
    });
    assert_eq!(
        names(&actions),
        ["seller-cancel", "refund", "credit-points"]
    );
    assert!(
        matches!(&actions[0], Action::CancelWithSeller { key, reservation_key, reservation_id, .. }
        if *key == format!("{}:seller-cancel", c1()) && *reservation_key == B1.to_string() && reservation_id.as_deref() == Some("res-1"))
    );
    assert!(
        matches!(&actions[1], Action::Refund { key, payment_id, amount }
        if *key == format!("{}:cancellation-refund", c1()) && payment_id == "cap-1" && *amount == eur(22_000))
    );
    assert!(matches!(&actions[2], Action::CreditPoints { amount, .. } if *amount == eur(5_000)));
    assert_eq!(c.state, SagaState::Cancelled);
    assert_eq!(trs.last().unwrap().email, Some(EmailKind::Cancelled));
    let email = email_for(&c, EmailKind::Cancelled, "a@example.com", now());
    assert_eq!(email.booking_id, B1.to_string());
    assert!(email.body.contains("Cancellation fee: 30.00 EUR"));

    mark_booking_cancelled(&mut b, &c, now()).unwrap();
    assert_eq!(b.state, SagaState::Cancelled);
    assert_eq!(b.data.refund_amount, Some(eur(22_000)));
    assert!(mark_booking_cancelled(&mut b, &c, now()).is_err());
    assert!(new_cancellation(&b, now()).is_err());
}

#[test]
fn cancellation_fee_above_card_part_comes_out_of_points() {
    let b = confirmed(20_000, 30_000);
    let mut c = new_cancellation(&b, now()).unwrap();
    let (actions, _) = drive(&mut c, |a| match a {
        Action::CancelWithSeller { reservation_id, .. } => StepOutcome::SellerCancelled {
            fee: eur(12_000),
            reservation_id: reservation_id.clone().unwrap_or_default(),
        },
        other => success(other),
    });
    // Card part 100.00 is kept entirely; 20.00 of the fee comes from the 200.00 points.
    assert_eq!(names(&actions), ["seller-cancel", "credit-points"]);
    assert!(matches!(&actions[1], Action::CreditPoints { amount, .. } if *amount == eur(18_000)));
    assert_eq!(c.state, SagaState::Cancelled);
}

#[test]
fn seller_refusing_to_cancel_leaves_the_booking_confirmed() {
    let b = confirmed(0, 30_000);
    let mut c = new_cancellation(&b, now()).unwrap();
    let (actions, trs) = drive(&mut c, |_| StepOutcome::Refused {
        reason: "non-refundable".into(),
    });
    assert_eq!(names(&actions), ["seller-cancel"]);
    assert_eq!(c.state, SagaState::Failed);
    assert_eq!(trs[0].email, None);
}

#[test]
fn cancellation_refund_that_keeps_failing_parks() {
    let b = confirmed(0, 30_000);
    let mut c = new_cancellation(&b, now()).unwrap();
    drive(&mut c, |a| match a {
        Action::Refund { .. } => StepOutcome::Transient {
            reason: "gateway 503".into(),
        },
        other => success(other),
    });
    assert_eq!(c.state, SagaState::NeedsAttention);
    retry_needs_attention(&mut c, now()).unwrap();
    drive(&mut c, success);
    assert_eq!(c.state, SagaState::Cancelled);
}

#[test]
fn cancel_in_flight_before_pivot_compensates_and_ends_cancelled() {
    let mut r = booking(5_000, 30_000);
    apply(&mut r, StepOutcome::Completed, &cfg(), now()).unwrap(); // hold
    apply(
        &mut r,
        StepOutcome::Authorized {
            authorization_id: "auth-1".into(),
            amount: eur(25_000),
        },
        &cfg(),
        now(),
    )
    .unwrap();
    let before_cancel = r.clone();
    let (decision, tr) = request_cancellation(&mut r, now());
    assert_eq!(decision, CancelDecision::CompensateNow);
    assert_eq!(tr.to, SagaState::Compensating);
    // Reserving had begun: the seller is asked first (a reserve call cut short by a
    // crash may have landed without a record). It never saw the key here.
    let (actions, trs) = drive(&mut r, |a| match a {
        Action::ReconcileReservation { .. } => StepOutcome::NotFound,
        a => success(a),
    });
    assert_eq!(
        names(&actions),
        ["reconcile-reservation", "void", "release"]
    );
    assert_eq!(r.state, SagaState::Cancelled);
    assert_eq!(trs.last().unwrap().email, Some(EmailKind::Cancelled));

    // Found by the chaos drill: the reservation did land before the saga's last stop,
    // so it is cancelled too instead of being left at the seller.
    let mut r = before_cancel;
    request_cancellation(&mut r, now());
    let (actions, _) = drive(&mut r, success);
    assert_eq!(
        names(&actions),
        [
            "reconcile-reservation",
            "cancel-reservation",
            "void",
            "release"
        ]
    );
    assert_eq!(r.state, SagaState::Cancelled);

    // Nothing recorded yet: the authorization may still have happened (a call cut short,
    // or done but not persisted), so the gateway is asked before the saga ends cancelled.
    let mut r = booking(0, 30_000);
    let (decision, tr) = request_cancellation(&mut r, now());
    assert_eq!(
        (decision, tr.to),
        (CancelDecision::CompensateNow, SagaState::Compensating)
    );
    let (actions, trs) = drive(&mut r, |a| match a {
        Action::ReconcilePayment { .. } => StepOutcome::NotFound,
        a => success(a),
    });
    assert_eq!(names(&actions), ["reconcile-payment"]);
    assert_eq!(r.state, SagaState::Cancelled);
    assert_eq!(trs.last().unwrap().email, Some(EmailKind::Cancelled));
    assert_eq!(
        request_cancellation(&mut r, now()).0,
        CancelDecision::AlreadyFinal
    );
    // It did happen: voided.
    let mut r = booking(0, 30_000);
    request_cancellation(&mut r, now());
    let (actions, _) = drive(&mut r, |a| match a {
        Action::ReconcilePayment { .. } => StepOutcome::Authorized {
            authorization_id: "auth-1".into(),
            amount: eur(30_000),
        },
        a => success(a),
    });
    assert_eq!(names(&actions), ["reconcile-payment", "void"]);
    // Points held before the record: released by key (a no-op if the hold never landed).
    let mut r = booking(5_000, 30_000);
    request_cancellation(&mut r, now());
    let (actions, _) = drive(&mut r, success);
    assert_eq!(names(&actions), ["release"]);
    assert_eq!(r.state, SagaState::Cancelled);
}

#[test]
fn cancel_in_flight_after_pivot_confirms_then_asks_for_a_cancellation_saga() {
    let mut r = booking(0, 30_000);
    apply(
        &mut r,
        StepOutcome::Authorized {
            authorization_id: "auth-1".into(),
            amount: eur(30_000),
        },
        &cfg(),
        now(),
    )
    .unwrap();
    apply(
        &mut r,
        StepOutcome::Reserved {
            reservation_id: "res-1".into(),
            price: eur(30_000),
        },
        &cfg(),
        now(),
    )
    .unwrap();
    assert_eq!(r.state, SagaState::SellerConfirmed);
    assert_eq!(
        request_cancellation(&mut r, now()).0,
        CancelDecision::AfterConfirmation
    );
    let (_, trs) = drive(&mut r, success);
    let last = trs.last().unwrap();
    assert_eq!(r.state, SagaState::Confirmed);
    assert!(last.start_cancellation);
    assert_eq!(
        request_cancellation(&mut r, now()).0,
        CancelDecision::StartCancellationSaga
    );

    // A reservation in doubt is treated as possibly made; if it was not, the saga
    // compensates instead of retrying the reservation.
    let mut r = booking(0, 30_000);
    apply(
        &mut r,
        StepOutcome::Authorized {
            authorization_id: "auth-1".into(),
            amount: eur(30_000),
        },
        &cfg(),
        now(),
    )
    .unwrap();
    apply(&mut r, StepOutcome::TimedOut, &cfg(), now()).unwrap();
    assert_eq!(
        request_cancellation(&mut r, now()).0,
        CancelDecision::AfterConfirmation
    );
    let (actions, _) = drive(&mut r, |a| match a {
        Action::ReconcileReservation { .. } => StepOutcome::NotFound,
        other => success(other),
    });
    assert_eq!(names(&actions), ["reconcile-reservation", "void"]);
    assert_eq!(r.state, SagaState::Cancelled);
}

#[test]
fn request_validation_names_the_field() {
    let bad = |req: BookingRequest| match new_booking(B1, req, now()) {
        Err(SagaError::InvalidRequest(msg)) => msg,
        other => panic!("expected invalid request, got {other:?}"),
    };
    assert!(bad(request(40_000, 30_000)).starts_with("wallet_points"));
    assert!(bad(BookingRequest {
        card_token: String::new(),
        ..request(0, 1)
    })
    .starts_with("card_token"));
    assert!(bad(BookingRequest {
        offer_price: eur(0),
        ..request(0, 1)
    })
    .starts_with("offer_price"));
    assert!(bad(BookingRequest {
        wallet_points: Money::new(1, Currency::USD),
        ..request(0, 10)
    })
    .starts_with("wallet_points"));
    let mut back = request(0, 1);
    back.end = NaiveDate::from_ymd_opt(2027, 4, 1).unwrap();
    assert!(bad(back).starts_with("end"));
}

#[test]
fn record_roundtrips_through_bincode_and_json() {
    let mut r = booking(5_000, 30_000);
    drive(&mut r, |a| match a {
        Action::Reserve { .. } => StepOutcome::TimedOut,
        other => success(other),
    });
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&r, cfg).unwrap();
    let (back, _): (SagaRecord, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
    assert_eq!(back, r);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains(r#""state":"confirmed""#));
    assert!(
        json.contains(r#""reserve":1"#),
        "attempts keyed by step name: {json}"
    );
    assert_eq!(serde_json::from_str::<SagaRecord>(&json).unwrap(), r);
    assert_eq!(
        serde_json::to_string(&SagaState::NeedsAttention).unwrap(),
        r#""needs_attention""#
    );
}

mod model;

#[test]
fn a_reservation_confirmed_at_another_price_is_undone_and_fails_the_booking() {
    for confirmed_at in [300_000, 1] {
        let mut r = booking(5_000, 30_000);
        let (actions, trs) = drive(&mut r, |a| match a {
            Action::Reserve { .. } => StepOutcome::Reserved {
                reservation_id: "res-1".into(),
                price: eur(confirmed_at),
            },
            other => success(other),
        });
        assert_eq!(
            names(&actions),
            [
                "hold",
                "authorize",
                "reserve",
                "cancel-reservation",
                "void",
                "release"
            ],
            "confirmed at {confirmed_at}"
        );
        assert_eq!(r.state, SagaState::Failed);
        assert_eq!(r.data.failure_cause, Some(FailureCause::PriceMismatch));
        assert_eq!(FailureCause::PriceMismatch.code(), "price_mismatch");
        let mismatch = trs.iter().find_map(|t| t.mismatch).expect("reported");
        assert_eq!(
            (mismatch.step, mismatch.expected, mismatch.reported),
            (Step::Reserve, eur(30_000), eur(confirmed_at))
        );
        assert!(mismatch.is_seller());
        assert_eq!(trs.iter().filter(|t| t.mismatch.is_some()).count(), 1);
        assert_eq!(trs.last().unwrap().email, Some(EmailKind::Failed));
    }
}

#[test]
fn a_reconciled_reservation_at_another_price_is_undone_too() {
    let mut r = booking(0, 30_000);
    let (actions, _) = drive(&mut r, |a| match a {
        Action::Reserve { .. } => StepOutcome::TimedOut,
        Action::ReconcileReservation { .. } => StepOutcome::Reserved {
            reservation_id: "res-1".into(),
            price: eur(29_999),
        },
        other => success(other),
    });
    assert_eq!(
        names(&actions),
        [
            "authorize",
            "reserve",
            "reconcile-reservation",
            "cancel-reservation",
            "void"
        ]
    );
    assert_eq!(r.data.failure_cause, Some(FailureCause::PriceMismatch));
    assert_eq!(r.state, SagaState::Failed);
}

#[test]
fn an_authorization_of_another_amount_is_voided_and_fails_the_booking() {
    // Directly, and found by a reconciliation after a timeout.
    for via_lookup in [false, true] {
        let mut r = booking(5_000, 30_000);
        let (actions, trs) = drive(&mut r, |a| match a {
            Action::AuthorizePayment { .. } if via_lookup => StepOutcome::TimedOut,
            Action::AuthorizePayment { amount, .. } | Action::ReconcilePayment { amount, .. } => {
                StepOutcome::Authorized {
                    authorization_id: "auth-1".into(),
                    amount: Money::new(amount.minor * 10, amount.currency),
                }
            }
            other => success(other),
        });
        assert_eq!(names(&actions).last(), Some(&"release"));
        assert!(names(&actions).contains(&"void"), "{:?}", names(&actions));
        assert!(!names(&actions).contains(&"reserve"));
        assert_eq!(r.state, SagaState::Failed);
        // Found by the look-up, the saga was already undoing the timed-out authorize:
        // the first cause stays.
        let cause = if via_lookup {
            FailureCause::Technical
        } else {
            FailureCause::PaymentMismatch
        };
        assert_eq!(r.data.failure_cause, Some(cause));
        let m = trs.iter().find_map(|t| t.mismatch).unwrap();
        assert_eq!((m.expected, m.reported), (eur(25_000), eur(250_000)));
        assert!(!m.is_seller());
    }
}

#[test]
fn a_capture_or_refund_of_another_amount_parks_for_an_operator() {
    let mut r = booking(0, 30_000);
    let (actions, trs) = drive(&mut r, |a| match a {
        Action::CapturePayment { .. } => StepOutcome::Captured {
            capture_id: "cap-1".into(),
            amount: eur(3_000),
        },
        other => success(other),
    });
    assert_eq!(names(&actions), ["authorize", "reserve", "capture"]);
    assert_eq!(r.state, SagaState::NeedsAttention);
    let reason = r.needs_attention.clone().unwrap();
    assert!(
        reason.ends_with("reported 30.00 EUR where 300.00 EUR was asked"),
        "{reason}"
    );
    assert!(trs.last().unwrap().mismatch.is_some());
    assert_eq!(r.data.capture_id.as_deref(), Some("cap-1"));

    // A cancellation's refund of another amount.
    let b = confirmed(0, 30_000);
    let mut c = new_cancellation(&b, now()).unwrap();
    drive(&mut c, |a| match a {
        Action::Refund { .. } => StepOutcome::Refunded { amount: eur(1) },
        other => success(other),
    });
    assert_eq!(c.state, SagaState::NeedsAttention);
    assert_eq!(c.data.failure_cause, Some(FailureCause::PaymentMismatch));
}

#[test]
fn a_seller_cancelling_another_reservation_parks_the_cancellation() {
    let b = confirmed(0, 30_000);
    let mut c = new_cancellation(&b, now()).unwrap();
    let (actions, _) = drive(&mut c, |a| match a {
        Action::CancelWithSeller { .. } => StepOutcome::SellerCancelled {
            fee: eur(0),
            reservation_id: "someone-else".into(),
        },
        other => success(other),
    });
    assert_eq!(names(&actions), ["seller-cancel"]);
    assert_eq!(c.state, SagaState::NeedsAttention);
    assert!(
        c.needs_attention
            .as_deref()
            .unwrap()
            .contains("someone-else"),
        "{:?}",
        c.needs_attention
    );
    assert_eq!(
        c.data.refund_amount, None,
        "nothing refunded on a stranger's cancel"
    );
}
