//! Property tests: random outcomes against a reference model of the outside world (what
//! really exists at the wallet, the gateway and the seller), checking the saga's invariants.

use super::*;

/// What really exists outside, and how often each thing was undone.
#[derive(Debug, Default)]
struct World {
    /// Report amounts other than the ones asked for effects whose roll says so, one in
    /// `lie_one_in` (0: never). A world that misreports an effect's amount does so every
    /// time it is asked about that effect.
    lie_one_in: u8,
    auth_skewed: bool,
    reservation_skewed: bool,
    capture_skewed: bool,
    refund_skewed: bool,
    hold: bool,
    auth: bool,
    reservation: bool,
    captured: bool,
    wallet_captured: bool,
    releases: u32,
    voids: u32,
    cancels: u32,
    refunds: u32,
    held_ever: bool,
    auth_ever: bool,
    reserved_ever: bool,
    captured_ever: bool,
    wallet_captured_ever: bool,
}

/// Answers `action` using roll `k`, updating the world as the real systems would.
/// Forward calls are idempotent: once an effect exists, a repeat reports success.
fn world_answer(w: &mut World, r: &SagaRecord, action: &Action, k: u8) -> StepOutcome {
    // 0-3 success, 4 refused, 5 transient, 6 timed out after the effect, 7 timed out
    // before it, 8 permanent.
    let roll = k % 9;
    // Whether an effect this call makes is misreported from now on.
    let lies = w.lie_one_in > 0 && (k / 9).is_multiple_of(w.lie_one_in);
    let skew = |amount: Money, skewed: bool| {
        if skewed {
            Money::new(amount.minor * 10, amount.currency)
        } else {
            amount
        }
    };
    let fail = |roll: u8| match roll {
        4 => StepOutcome::Refused {
            reason: "no".into(),
        },
        5 => StepOutcome::Transient {
            reason: "busy".into(),
        },
        6 | 7 => StepOutcome::TimedOut,
        _ => StepOutcome::Permanent {
            reason: "broken".into(),
        },
    };
    macro_rules! forward {
        ($flag:ident, $ever:ident, $ok:expr, $allowed:expr) => {{
            if w.$flag {
                // Idempotent replay of a call that already took effect.
                match roll {
                    5 => StepOutcome::Transient {
                        reason: "busy".into(),
                    },
                    6 | 7 => StepOutcome::TimedOut,
                    _ => $ok,
                }
            } else if roll <= 3 || roll == 6 {
                if $allowed {
                    w.$flag = true;
                    w.$ever = true;
                    if roll == 6 {
                        StepOutcome::TimedOut
                    } else {
                        $ok
                    }
                } else {
                    StepOutcome::Permanent {
                        reason: "precondition".into(),
                    }
                }
            } else {
                fail(roll)
            }
        }};
    }
    match action {
        Action::HoldWallet { .. } => forward!(hold, held_ever, StepOutcome::Completed, true),
        Action::AuthorizePayment { amount, .. } => {
            if !w.auth {
                w.auth_skewed = lies;
            }
            let amount = skew(*amount, w.auth_skewed);
            forward!(
                auth,
                auth_ever,
                StepOutcome::Authorized {
                    authorization_id: "a".into(),
                    amount,
                },
                true
            )
        }
        Action::Reserve { price, .. } => {
            if !w.reservation {
                w.reservation_skewed = lies;
            }
            let price = skew(*price, w.reservation_skewed);
            forward!(
                reservation,
                reserved_ever,
                StepOutcome::Reserved {
                    reservation_id: "r".into(),
                    price,
                },
                true
            )
        }
        Action::CapturePayment { amount, .. } => {
            let allowed = w.auth;
            if !w.captured {
                w.capture_skewed = lies;
            }
            let amount = skew(*amount, w.capture_skewed);
            forward!(
                captured,
                captured_ever,
                StepOutcome::Captured {
                    capture_id: "c".into(),
                    amount,
                },
                allowed
            )
        }
        Action::CaptureWallet { .. } => {
            let allowed = w.hold;
            let out = forward!(
                wallet_captured,
                captured_ever,
                StepOutcome::Completed,
                allowed
            );
            if w.wallet_captured {
                w.hold = false;
            }
            out
        }
        Action::ReconcileReservation { price, .. } => match roll {
            5..=7 => StepOutcome::TimedOut,
            _ if w.reservation => StepOutcome::Reserved {
                reservation_id: "r".into(),
                price: skew(*price, w.reservation_skewed),
            },
            _ => StepOutcome::NotFound,
        },
        Action::ReconcilePayment { key, amount, .. } => match roll {
            5..=7 => StepOutcome::Transient {
                reason: "busy".into(),
            },
            _ if key.ends_with(":capture") && w.captured => StepOutcome::Captured {
                capture_id: "c".into(),
                amount: skew(*amount, w.capture_skewed),
            },
            _ if key.ends_with(":authorize") && (w.auth || w.captured_ever) => {
                StepOutcome::Authorized {
                    authorization_id: "a".into(),
                    amount: skew(*amount, w.auth_skewed),
                }
            }
            _ => StepOutcome::NotFound,
        },
        Action::ReleaseHold { .. } => {
            // A retry of the same release (after a timeout) is fine; anything else
            // must target a hold that exists or may exist.
            assert!(
                w.hold || w.releases > 0 || r.effects.wallet_hold == Effect::Uncertain,
                "released a hold that was never placed"
            );
            if roll <= 3 || roll == 6 {
                if w.hold {
                    w.hold = false;
                    w.releases += 1;
                }
                if roll == 6 {
                    StepOutcome::TimedOut
                } else {
                    StepOutcome::Completed
                }
            } else {
                fail(roll)
            }
        }
        Action::VoidPayment { .. } => {
            assert!(
                (w.auth && !w.captured) || w.voids > 0,
                "voided an authorization that is not open"
            );
            if roll <= 3 || roll == 6 {
                if w.auth {
                    w.auth = false;
                    w.voids += 1;
                }
                if roll == 6 {
                    StepOutcome::TimedOut
                } else {
                    StepOutcome::Completed
                }
            } else {
                fail(roll)
            }
        }
        Action::CancelReservation { .. } => {
            assert!(
                w.reservation || w.cancels > 0,
                "cancelled a reservation that does not exist"
            );
            if roll <= 3 || roll == 6 {
                if w.reservation {
                    w.reservation = false;
                    w.cancels += 1;
                }
                if roll == 6 {
                    StepOutcome::TimedOut
                } else {
                    StepOutcome::Completed
                }
            } else {
                fail(roll)
            }
        }
        Action::Refund { amount, .. } => {
            assert!(
                w.captured || w.refunds > 0,
                "refunded a capture that does not exist"
            );
            if roll <= 3 || roll == 6 {
                if w.captured {
                    w.captured = false;
                    w.auth = false;
                    w.refunds += 1;
                    w.refund_skewed = lies;
                }
                if roll == 6 {
                    StepOutcome::TimedOut
                } else {
                    StepOutcome::Refunded {
                        amount: skew(*amount, w.refund_skewed),
                    }
                }
            } else {
                fail(roll)
            }
        }
        other => panic!("booking saga asked for {other:?}"),
    }
}

/// Drives one booking saga against the world model with `rolls`; checks the
/// invariants and returns the final state.
fn run_booking_model(
    rolls: &[u8],
    points: i64,
    cancel_at: Option<usize>,
    lie_one_in: u8,
) -> Result<(SagaState, Option<FailureCause>), TestCaseError> {
    let cfg = cfg();
    let mut r = new_booking(
        BookingId(uuid::Uuid::from_u128(0x91)),
        request(points, 30_000),
        now(),
    )
    .unwrap();
    let mut w = World {
        lie_one_in,
        ..World::default()
    };
    let mut mismatches = 0;
    let mut operator_retries = 0;
    let mut steps = 0;
    let mut emails = 0;
    let mut start_cancellation = false;
    let mut seen: Vec<SagaState> = vec![r.state];
    let mut rolls = rolls.iter().copied();
    loop {
        if cancel_at == Some(steps) {
            let (_, tr) = request_cancellation(&mut r, now());
            emails += usize::from(tr.email.is_some());
        }
        let action = next_action(&r);
        match action {
            Action::Done => break,
            Action::AwaitOperator { .. } if operator_retries < 2 => {
                operator_retries += 1;
                retry_needs_attention(&mut r, now()).unwrap();
                continue;
            }
            Action::AwaitOperator { .. } => break,
            _ => {}
        }
        let k = rolls.next().unwrap_or(0);
        let outcome = world_answer(&mut w, &r, &action, k);
        let misreported = reported_amount(&outcome).is_some_and(|m| m != expected_amount(&action));
        let tr = apply(&mut r, outcome, &cfg, now()).unwrap();
        // Every misreported amount is caught, and nothing else is.
        prop_assert_eq!(tr.mismatch.is_some(), misreported, "{:?}", action);
        mismatches += usize::from(misreported);
        emails += usize::from(tr.email.is_some());
        start_cancellation |= tr.start_cancellation;
        if seen.last() != Some(&r.state) {
            seen.push(r.state);
        }
        steps += 1;
        prop_assert!(
            steps < 300,
            "saga did not terminate: {:?}",
            r.history.last()
        );
    }

    let hold_left = w.hold && !w.wallet_captured;
    match r.state {
        SagaState::Confirmed => {
            // Never confirmed on an amount other than the one asked.
            prop_assert!(
                !w.auth_skewed && !w.reservation_skewed && !w.capture_skewed,
                "{:?}",
                w
            );
            prop_assert_eq!(mismatches, 0);
            // Never confirmed without a reservation and a capture.
            prop_assert!(w.reservation);
            prop_assert!(w.captured, "card captured");
            prop_assert!(points == 0 || w.wallet_captured);
            prop_assert!(seen.contains(&SagaState::SellerConfirmed));
            prop_assert!(!seen.contains(&SagaState::Compensating));
            prop_assert_eq!(w.voids + w.cancels + w.refunds + w.releases, 0);
            prop_assert_eq!(emails, 1);
            prop_assert_eq!(start_cancellation, r.cancel_requested);
        }
        SagaState::Failed | SagaState::Cancelled => {
            // Everything that was done is undone, exactly once.
            prop_assert!(
                !hold_left && !w.auth && !w.reservation && !w.captured,
                "{:?}",
                w
            );
            prop_assert!(!w.wallet_captured_ever);
            prop_assert_eq!(w.cancels, u32::from(w.reserved_ever));
            prop_assert_eq!(w.refunds, u32::from(w.captured_ever));
            prop_assert_eq!(w.voids + w.refunds, u32::from(w.auth_ever));
            prop_assert_eq!(w.releases, u32::from(w.held_ever));
            prop_assert_eq!(emails, 1);
            prop_assert_eq!(r.state == SagaState::Cancelled, r.cancel_requested);
        }
        SagaState::NeedsAttention => {
            prop_assert!(r.needs_attention.is_some());
            prop_assert_eq!(emails, 0);
            // Parked, yet nothing was undone twice.
            prop_assert!(w.cancels <= 1 && w.refunds <= 1 && w.voids <= 1 && w.releases <= 1);
        }
        other => prop_assert!(false, "stopped in non-final state {:?}", other),
    }
    Ok((r.state, r.data.failure_cause))
}

/// The amount a success names, if it names one.
fn reported_amount(outcome: &StepOutcome) -> Option<Money> {
    match outcome {
        StepOutcome::Authorized { amount, .. }
        | StepOutcome::Captured { amount, .. }
        | StepOutcome::Refunded { amount } => Some(*amount),
        StepOutcome::Reserved { price, .. } => Some(*price),
        _ => None,
    }
}

/// The amount `action` asks for (zero for actions without one).
fn expected_amount(action: &Action) -> Money {
    match action {
        Action::AuthorizePayment { amount, .. }
        | Action::CapturePayment { amount, .. }
        | Action::ReconcilePayment { amount, .. }
        | Action::Refund { amount, .. } => *amount,
        Action::Reserve { price, .. } | Action::ReconcileReservation { price, .. } => *price,
        _ => eur(0),
    }
}

/// Drives one cancellation saga with `rolls` and a seller `fee`; checks invariants.
fn run_cancellation_model(rolls: &[u8], points: i64, fee: i64) -> Result<SagaState, TestCaseError> {
    let cfg = cfg();
    let booking = confirmed(points, 30_000);
    let mut c = new_cancellation(&booking, now()).unwrap();
    let (mut seller_cancelled, mut refunded, mut credited) = (false, None, None);
    let (mut refund_calls_landed, mut credit_calls_landed) = (0, 0);
    let mut emails = 0;
    let mut operator_retries = 0;
    let mut rolls = rolls.iter().copied();
    for _ in 0..300 {
        let action = next_action(&c);
        let k = match action {
            Action::Done => break,
            Action::AwaitOperator { .. } if operator_retries < 2 => {
                operator_retries += 1;
                retry_needs_attention(&mut c, now()).unwrap();
                continue;
            }
            Action::AwaitOperator { .. } => break,
            _ => rolls.next().unwrap_or(0) % 7,
        };
        // 0-2 success, 3 refused, 4 transient, 5 timed out after the effect, 6 before.
        let lands = k <= 2 || k == 5;
        let reply = |ok: StepOutcome| match k {
            0..=2 => ok,
            3 => StepOutcome::Refused {
                reason: "no".into(),
            },
            4 => StepOutcome::Transient {
                reason: "busy".into(),
            },
            _ => StepOutcome::TimedOut,
        };
        let outcome = match &action {
            Action::CancelWithSeller { reservation_id, .. } => {
                let ok = StepOutcome::SellerCancelled {
                    fee: eur(fee),
                    reservation_id: reservation_id.clone().unwrap_or_default(),
                };
                if seller_cancelled {
                    // Idempotent replay: the seller answers with the first result.
                    if k == 4 || k >= 5 {
                        reply(ok)
                    } else {
                        ok
                    }
                } else {
                    seller_cancelled = lands;
                    reply(ok)
                }
            }
            Action::Refund { amount, .. } => {
                if lands && refunded.is_none() {
                    refunded = Some(*amount);
                    refund_calls_landed += 1;
                }
                let ok = StepOutcome::Refunded { amount: *amount };
                if refunded.is_some() && k == 3 {
                    ok
                } else {
                    reply(ok)
                }
            }
            Action::CreditPoints { amount, .. } => {
                if lands && credited.is_none() {
                    credited = Some(*amount);
                    credit_calls_landed += 1;
                }
                if credited.is_some() && k == 3 {
                    StepOutcome::Completed
                } else {
                    reply(StepOutcome::Completed)
                }
            }
            other => panic!("cancellation saga asked for {other:?}"),
        };
        let tr = apply(&mut c, outcome, &cfg, now()).unwrap();
        emails += usize::from(tr.email.is_some());
    }
    let split = cancellation_split(eur(30_000 - points), eur(points), eur(fee)).unwrap();
    match c.state {
        SagaState::Cancelled => {
            prop_assert!(seller_cancelled);
            prop_assert_eq!(refunded.unwrap_or(eur(0)), split.card_refund);
            prop_assert_eq!(credited.unwrap_or(eur(0)), split.points_restored);
            prop_assert_eq!(emails, 1);
        }
        SagaState::Failed => {
            prop_assert!(!seller_cancelled, "seller cancelled but the saga gave up");
            prop_assert!(refunded.is_none() && credited.is_none());
            prop_assert_eq!(emails, 0);
        }
        SagaState::NeedsAttention => prop_assert_eq!(emails, 0),
        other => prop_assert!(false, "stopped in non-final state {:?}", other),
    }
    prop_assert!(refund_calls_landed <= 1 && credit_calls_landed <= 1);
    Ok(c.state)
}

#[test]
fn models_reach_every_outcome() {
    // Guards the property tests against a degenerate generator: over many seeded
    // runs, every final state must show up.
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(11);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..3_000 {
        let rolls: Vec<u8> = (0..400).map(|_| rng.gen()).collect();
        let cancel_at = (i % 5 == 0).then(|| rng.gen_range(0..20));
        let state = run_booking_model(&rolls, if i % 2 == 0 { 0 } else { 4_000 }, cancel_at, 0)
            .unwrap()
            .0;
        seen.insert(state.as_str());
    }
    assert_eq!(seen.len(), 4, "booking model reached only {seen:?}");
    // A lying world still reaches every outcome, and its lies fail bookings with a
    // mismatch cause.
    let mut seen = std::collections::BTreeSet::new();
    let mut causes = std::collections::BTreeSet::new();
    for i in 0..3_000 {
        let rolls: Vec<u8> = (0..400).map(|_| rng.gen()).collect();
        let points = if i % 2 == 0 { 0 } else { 4_000 };
        let cancel_at = (i % 5 == 0).then(|| rng.gen_range(0..20));
        let (state, cause) = run_booking_model(&rolls, points, cancel_at, 3).unwrap();
        seen.insert(state.as_str());
        if let Some(cause) = cause {
            causes.insert(cause.code());
        }
    }
    assert_eq!(seen.len(), 4, "lying booking model reached only {seen:?}");
    assert!(
        causes.contains("price_mismatch") && causes.contains("payment_mismatch"),
        "{causes:?}"
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..1_000 {
        let rolls: Vec<u8> = (0..200).map(|_| rng.gen()).collect();
        seen.insert(
            run_cancellation_model(&rolls, 10_000, 25_000)
                .unwrap()
                .as_str(),
        );
    }
    assert_eq!(seen.len(), 3, "cancellation model reached only {seen:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_outcomes_keep_the_booking_invariants(
        rolls in proptest::collection::vec(any::<u8>(), 400),
        points in prop_oneof![Just(0i64), Just(4_000i64)],
        cancel_at in proptest::option::of(0usize..30),
        lie_one_in in prop_oneof![Just(0u8), Just(2u8), Just(7u8)],
    ) {
        run_booking_model(&rolls, points, cancel_at, lie_one_in)?;
    }

    #[test]
    fn random_outcomes_keep_the_cancellation_invariants(
        rolls in proptest::collection::vec(any::<u8>(), 200),
        points in prop_oneof![Just(0i64), Just(10_000i64)],
        fee in 0i64..40_000,
    ) {
        run_cancellation_model(&rolls, points, fee)?;
    }
}
