//! What to do next and how each outcome moves a saga: [`next_action`] and [`apply`].
//!
//! Everything here is a pure function of the [`SagaRecord`] (plus the clock and config
//! passed in), so the actor stays a thin loop and every path is unit-tested.

use chrono::{DateTime, NaiveDate, Utc};

use super::record::{
    is_terminal, reservation_key, step_key, BookingRequest, Effect, FailureCause, Phase, SagaData,
    SagaKind, SagaRecord, SagaState, Step, DEFINITION_VERSION,
};
use super::{cancellation_split, SagaConfig, SagaError};
use crate::domain::money::Money;
use crate::domain::outbox::{EmailFacts, EmailKind, OutboxEmail};

/// The next external call a saga wants, with its deterministic idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Step 1: hold `amount` of the account's wallet points.
    HoldWallet {
        /// Ledger idempotency key (`"{saga}:hold"`), also the hold's reference.
        key: String,
        /// Account whose wallet is held.
        account_id: String,
        /// Points to hold.
        amount: Money,
    },
    /// Step 2: authorize the card. Answer `Authorized`; a decline is `Refused`.
    AuthorizePayment {
        /// Gateway idempotency key (`"{saga}:authorize"`).
        key: String,
        /// Card token from the request.
        card_token: String,
        /// Card part of the price.
        amount: Money,
    },
    /// Step 3, the pivot: book with the seller. Answer `Reserved`; a seller rejection or a
    /// changed price is `Refused`; a timeout is `TimedOut` (it will be reconciled).
    Reserve {
        /// Seller idempotency key: the saga id.
        key: String,
        /// Seller to call.
        seller: String,
        /// What to book.
        sku: String,
        /// Check-in or travel date.
        start: NaiveDate,
        /// Check-out or return date.
        end: NaiveDate,
        /// Price the customer accepted; a seller asking more answers `Refused`.
        price: Money,
    },
    /// Ask the seller whether the reservation with `key` exists. Answer `Reserved` or
    /// `NotFound`.
    ReconcileReservation {
        /// The reservation key (the booking's saga id).
        key: String,
        /// Seller to ask.
        seller: String,
    },
    /// Step 4, card part: capture the authorization. Answer `Captured`.
    CapturePayment {
        /// Gateway idempotency key (`"{saga}:capture"`).
        key: String,
        /// Authorization to capture.
        authorization_id: String,
        /// Card part of the price.
        amount: Money,
    },
    /// Step 4, wallet part: turn the hold into a debit. Answer `Completed`.
    CaptureWallet {
        /// Ledger idempotency key (`"{saga}:capture-wallet"`).
        key: String,
        /// The hold to capture (its key).
        hold_key: String,
        /// Account holding it.
        account_id: String,
        /// Points to debit.
        amount: Money,
    },
    /// Ask the gateway (`status(key)`) what became of the operation sent with `key`. Answer
    /// `Authorized`/`Captured` if it happened; `NotFound` if it is unknown, declined or
    /// rejected (nothing is in force).
    ReconcilePayment {
        /// Key of the operation in doubt.
        key: String,
    },
    /// Compensation of step 1: release the hold. Answer `Completed`. A hold that never
    /// landed must also answer `Completed`, and the wallet must remember the released key
    /// so a late hold with it is refused.
    ReleaseHold {
        /// Ledger idempotency key (`"{saga}:release-hold"`).
        key: String,
        /// The hold to release (its key).
        hold_key: String,
        /// Account holding it.
        account_id: String,
    },
    /// Compensation of step 2: void the authorization. Answer `Completed`.
    VoidPayment {
        /// Gateway idempotency key (`"{saga}:void"`).
        key: String,
        /// Authorization to void.
        authorization_id: String,
    },
    /// Compensation of step 3: cancel the reservation (no fee: it was never confirmed to
    /// the customer). Answer `Completed`.
    CancelReservation {
        /// Seller idempotency key of the cancel (`"{saga}:cancel-reservation"`).
        key: String,
        /// Seller to call.
        seller: String,
        /// The reservation's own key (the saga id).
        reservation_key: String,
        /// Seller's reservation id when known.
        reservation_id: Option<String>,
    },
    /// Return `amount` of a capture to the card (compensation of step 4, or the refund of a
    /// cancellation). Answer `Completed`.
    Refund {
        /// Gateway idempotency key.
        key: String,
        /// Capture (or authorization) to refund.
        payment_id: String,
        /// Amount to return.
        amount: Money,
    },
    /// Cancellation step 1: cancel a confirmed booking with the seller. Answer
    /// `SellerCancelled { fee }`; a seller that will not cancel answers `Refused`.
    CancelWithSeller {
        /// Seller idempotency key (`"{cancel_saga}:seller-cancel"`).
        key: String,
        /// Seller to call.
        seller: String,
        /// The booking's reservation key (its saga id).
        reservation_key: String,
        /// Seller's reservation id.
        reservation_id: Option<String>,
    },
    /// Cancellation step 3: credit points back to the wallet. Answer `Completed`.
    CreditPoints {
        /// Ledger idempotency key (`"{cancel_saga}:credit-points"`).
        key: String,
        /// Account to credit.
        account_id: String,
        /// Points to credit.
        amount: Money,
    },
    /// Parked as `needs_attention`: nothing happens until [`retry_needs_attention`].
    AwaitOperator {
        /// Why it is parked.
        reason: String,
    },
    /// Finished: nothing more to do.
    Done,
}

/// What happened when the caller performed the action from [`next_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Success with no data (hold, wallet capture, release, void, cancel, refund, credit).
    Completed,
    /// The card is authorized (authorize, or a payment reconciliation that found it).
    Authorized {
        /// Gateway reference.
        authorization_id: String,
    },
    /// The seller holds the reservation (reserve, or a reconciliation that found it).
    Reserved {
        /// Seller reference.
        reservation_id: String,
    },
    /// The card is captured (capture, or a payment reconciliation that found it).
    Captured {
        /// Gateway reference.
        capture_id: String,
    },
    /// The seller cancelled a confirmed booking and keeps `fee`.
    SellerCancelled {
        /// Cancellation fee (zero for free cancellation).
        fee: Money,
    },
    /// Reconciliation: the operation in doubt never took effect.
    NotFound,
    /// An expected refusal: card declined, not enough points, sold out, price changed.
    /// Not retried.
    Refused {
        /// Why, for the record (never emailed as is).
        reason: String,
    },
    /// Nothing happened and a retry may succeed (overload, circuit open, 503).
    Transient {
        /// Why.
        reason: String,
    },
    /// No answer in time: the operation may or may not have happened.
    TimedOut,
    /// The operation can never succeed as sent.
    Permanent {
        /// Why.
        reason: String,
    },
}

impl StepOutcome {
    fn describe(&self) -> &'static str {
        match self {
            StepOutcome::Completed => "completed",
            StepOutcome::Authorized { .. } => "authorized",
            StepOutcome::Reserved { .. } => "reserved",
            StepOutcome::Captured { .. } => "captured",
            StepOutcome::SellerCancelled { .. } => "seller_cancelled",
            StepOutcome::NotFound => "not_found",
            StepOutcome::Refused { .. } => "refused",
            StepOutcome::Transient { .. } => "transient",
            StepOutcome::TimedOut => "timed_out",
            StepOutcome::Permanent { .. } => "permanent",
        }
    }

    fn is_failure(&self) -> bool {
        matches!(
            self,
            StepOutcome::Refused { .. }
                | StepOutcome::Transient { .. }
                | StepOutcome::TimedOut
                | StepOutcome::Permanent { .. }
        )
    }
}

/// What [`apply`] (or another saga function) did, for the caller to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: SagaState,
    /// State after.
    pub to: SagaState,
    /// The step whose outcome was applied, if any.
    pub step: Option<Step>,
    /// Write this customer email (see [`email_for`]) in the same store write as the record.
    /// Set exactly when the saga becomes `confirmed`, `failed` or `cancelled`.
    pub email: Option<EmailKind>,
    /// The last call failed and will be retried: wait `backoff_delay(attempt)` first.
    pub retry_attempt: Option<u32>,
    /// The customer cancelled while the booking was in flight and it has now been
    /// confirmed: start a cancellation saga for it.
    pub start_cancellation: bool,
}

impl Transition {
    fn at(state: SagaState, step: Option<Step>) -> Self {
        Transition {
            from: state,
            to: state,
            step,
            email: None,
            retry_attempt: None,
            start_cancellation: false,
        }
    }

    /// Whether the customer-visible state changed.
    pub fn state_changed(&self) -> bool {
        self.from != self.to
    }
}

/// What [`request_cancellation`] decided for a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelDecision {
    /// Before the pivot: compensation started now; the booking ends `cancelled`.
    CompensateNow,
    /// At or past the pivot (a reservation exists or may exist): the saga finishes
    /// forward; once `confirmed`, its transition carries `start_cancellation`. If it fails
    /// instead, it ends `cancelled`.
    AfterConfirmation,
    /// Confirmed: start a cancellation saga ([`new_cancellation`]).
    StartCancellationSaga,
    /// Already compensating; it will end `cancelled` instead of `failed`.
    AlreadyCompensating,
    /// Already `failed` or `cancelled`: nothing to do.
    AlreadyFinal,
    /// Parked as `needs_attention`; recorded, an operator must resume it first.
    NeedsOperator,
    /// The saga is itself a cancellation.
    NotABooking,
}

/// A new booking saga for `request`, validated. The caller persists it before acting.
pub fn new_booking(
    saga_id: &str,
    request: BookingRequest,
    now: DateTime<Utc>,
) -> Result<SagaRecord, SagaError> {
    request.validate()?;
    if saga_id.is_empty() || saga_id.len() > super::MAX_FIELD_LEN {
        return Err(SagaError::InvalidRequest(
            "saga_id: must be 1 to 128 characters".into(),
        ));
    }
    let mut r = SagaRecord {
        definition_version: DEFINITION_VERSION,
        saga_id: saga_id.to_owned(),
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
    };
    r.note(now, None, "booking requested");
    let mut tr = Transition::at(r.state, None);
    normalize(&mut r, now, &mut tr);
    Ok(r)
}

/// A cancellation saga `cancel_id` for the confirmed booking `booking`.
///
/// Steps: cancel with the seller (learning the fee), refund the card part minus the fee,
/// credit back the points not consumed by the fee ([`super::cancellation_split`]), then the
/// `cancelled` email. Seller cancellation is its pivot: a refusal there ends the
/// cancellation `failed` and the booking stays confirmed; after it, the saga only goes
/// forward (parking as `needs_attention` if a refund or credit cannot be done).
pub fn new_cancellation(
    cancel_id: &str,
    booking: &SagaRecord,
    now: DateTime<Utc>,
) -> Result<SagaRecord, SagaError> {
    if booking.kind != SagaKind::Booking || booking.state != SagaState::Confirmed {
        return Err(SagaError::WrongState {
            expected: "a confirmed booking",
            actual: booking.state,
        });
    }
    if cancel_id.is_empty()
        || cancel_id.len() > super::MAX_FIELD_LEN
        || cancel_id == booking.saga_id
    {
        return Err(SagaError::InvalidRequest(
            "cancel_id: must be a new id of 1 to 128 characters".into(),
        ));
    }
    let data = SagaData {
        authorization_id: booking.data.authorization_id.clone(),
        reservation_id: booking.data.reservation_id.clone(),
        capture_id: booking.data.capture_id.clone(),
        card_captured: booking.data.card_captured,
        points_captured: booking.data.points_captured,
        ..SagaData::default()
    };
    let mut r = SagaRecord {
        definition_version: DEFINITION_VERSION,
        saga_id: cancel_id.to_owned(),
        kind: SagaKind::Cancellation {
            of: booking.saga_id.clone(),
        },
        request: booking.request.clone(),
        state: SagaState::Pending,
        phase: Phase::SellerCancel,
        effects: Default::default(),
        data,
        attempts: Default::default(),
        needs_attention: None,
        resume_state: None,
        cancel_requested: false,
        created_at: now,
        updated_at: now,
        history: Vec::new(),
    };
    r.note(
        now,
        None,
        format!("cancellation of booking {} requested", booking.saga_id),
    );
    Ok(r)
}

/// The next thing to do for `r`. Pure: calling it twice gives the same answer.
pub fn next_action(r: &SagaRecord) -> Action {
    if r.definition_version != DEFINITION_VERSION {
        return Action::AwaitOperator {
            reason: format!(
                "unsupported saga definition version {}",
                r.definition_version
            ),
        };
    }
    if r.state == SagaState::NeedsAttention {
        let reason = r.needs_attention.clone().unwrap_or_else(|| "parked".into());
        return Action::AwaitOperator { reason };
    }
    match pending_step(r) {
        Some(step) => action_for(r, step),
        None => Action::Done,
    }
}

/// Records `outcome` of the action [`next_action`] returned, moves the saga, and says what
/// the caller must do besides persisting the record.
///
/// Errors only on caller bugs: an outcome that does not answer the pending step (e.g.
/// `Reserved` while a void is pending), an outcome for a finished or parked saga, or an
/// unknown definition version. The record is unchanged on error.
pub fn apply(
    r: &mut SagaRecord,
    outcome: StepOutcome,
    cfg: &SagaConfig,
    now: DateTime<Utc>,
) -> Result<Transition, SagaError> {
    if r.definition_version != DEFINITION_VERSION {
        return Err(SagaError::UnsupportedVersion(r.definition_version));
    }
    let step = pending_step(r).ok_or(SagaError::NotAwaitingOutcome(r.state))?;
    if !outcome.is_failure() && !answers(step, &outcome) {
        return Err(SagaError::UnexpectedOutcome {
            step,
            outcome: outcome.describe().into(),
        });
    }
    let mut tr = Transition::at(r.state, Some(step));
    match outcome {
        StepOutcome::Refused { reason } => decisive_failure(r, step, true, reason, now),
        StepOutcome::Permanent { reason } => decisive_failure(r, step, false, reason, now),
        StepOutcome::Transient { reason } => {
            retryable_failure(r, step, false, reason, cfg, now, &mut tr)
        }
        StepOutcome::TimedOut => {
            retryable_failure(r, step, true, "timed out".into(), cfg, now, &mut tr)
        }
        success => on_success(r, step, success, cfg, now, &mut tr),
    }
    normalize(r, now, &mut tr);
    tr.to = r.state;
    Ok(tr)
}

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

/// Marks the confirmed `booking` cancelled once its cancellation saga `cancellation` has
/// finished `cancelled`, copying the fee and refunds for the booking's history. The
/// customer email was already written by the cancellation saga's transition.
pub fn mark_booking_cancelled(
    booking: &mut SagaRecord,
    cancellation: &SagaRecord,
    now: DateTime<Utc>,
) -> Result<(), SagaError> {
    let of_this =
        matches!(&cancellation.kind, SagaKind::Cancellation { of } if *of == booking.saga_id);
    if !of_this {
        return Err(SagaError::InvalidRequest(
            "cancellation is not of this booking".into(),
        ));
    }
    if cancellation.state != SagaState::Cancelled {
        return Err(SagaError::WrongState {
            expected: "a finished cancellation",
            actual: cancellation.state,
        });
    }
    if booking.state != SagaState::Confirmed {
        return Err(SagaError::WrongState {
            expected: "confirmed",
            actual: booking.state,
        });
    }
    booking.data.seller_fee = cancellation.data.seller_fee;
    booking.data.refund_amount = cancellation.data.refund_amount;
    booking.data.points_restored = cancellation.data.points_restored;
    let show = |m: Option<Money>| m.map(|m| m.to_string()).unwrap_or_else(|| "none".into());
    let note = format!(
        "cancelled by {}: fee {}, refund {}, points restored {}",
        cancellation.saga_id,
        show(cancellation.data.seller_fee),
        show(cancellation.data.refund_amount),
        show(cancellation.data.points_restored)
    );
    set_state(booking, SagaState::Cancelled, now, None, note);
    Ok(())
}

/// The outbox entry of `kind` for saga `r`, addressed to `to`. Call it when a
/// [`Transition`] carries `email: Some(kind)` and write it with the record.
pub fn email_for(r: &SagaRecord, kind: EmailKind, to: &str, now: DateTime<Utc>) -> OutboxEmail {
    let facts = EmailFacts {
        booking_id: r.booking_id().to_owned(),
        seller: r.request.seller.clone(),
        sku: r.request.sku.clone(),
        start: r.request.start,
        end: r.request.end,
        price: r.request.offer_price,
        points_used: r.request.wallet_points,
        reason: match kind {
            EmailKind::Failed => Some(
                r.data
                    .failure_cause
                    .unwrap_or(FailureCause::Technical)
                    .customer_text()
                    .into(),
            ),
            _ => None,
        },
        refund: r.data.refund_amount,
        points_restored: r.data.points_restored,
        fee: r.data.seller_fee,
    };
    OutboxEmail::new(&r.saga_id, kind, &facts, &r.request.account_id, to, now)
}

// ---------------------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------------------

/// Zero in the request's currency.
fn zero(r: &SagaRecord) -> Money {
    Money::zero(r.request.offer_price.currency)
}

/// The card part; validated at creation, so the fallback (zero) is never used.
fn card_amount(r: &SagaRecord) -> Money {
    r.request.card_amount().unwrap_or_else(|| zero(r))
}

/// The step the saga waits on, or `None` when finished or parked.
fn pending_step(r: &SagaRecord) -> Option<Step> {
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
fn next_compensation(r: &SagaRecord) -> Option<Step> {
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

fn action_for(r: &SagaRecord, step: Step) -> Action {
    let id = r.saga_id.as_str();
    let key = step_key(id, step);
    let req = &r.request;
    match step {
        Step::Hold => Action::HoldWallet {
            key,
            account_id: req.account_id.clone(),
            amount: req.wallet_points,
        },
        Step::Authorize => Action::AuthorizePayment {
            key,
            card_token: req.card_token.clone(),
            amount: card_amount(r),
        },
        Step::Reserve => Action::Reserve {
            key: reservation_key(id),
            seller: req.seller.clone(),
            sku: req.sku.clone(),
            start: req.start,
            end: req.end,
            price: req.offer_price,
        },
        Step::ReconcileReservation => Action::ReconcileReservation {
            key: reservation_key(id),
            seller: req.seller.clone(),
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
            account_id: req.account_id.clone(),
            amount: req.wallet_points,
        },
        Step::ReconcileAuthorization => Action::ReconcilePayment {
            key: step_key(id, Step::Authorize),
        },
        Step::ReconcileCapture => Action::ReconcilePayment {
            key: step_key(id, Step::CapturePayment),
        },
        Step::ReleaseHold => Action::ReleaseHold {
            key,
            hold_key: step_key(id, Step::Hold),
            account_id: req.account_id.clone(),
        },
        Step::VoidPayment => Action::VoidPayment {
            key,
            authorization_id: r.data.authorization_id.clone().unwrap_or_default(),
        },
        Step::CancelReservation => Action::CancelReservation {
            key,
            seller: req.seller.clone(),
            reservation_key: reservation_key(id),
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
            account_id: req.account_id.clone(),
            amount: r.data.points_restored.unwrap_or_else(|| zero(r)),
        },
    }
}

/// Whether a success `outcome` is a valid answer to `step`.
fn answers(step: Step, outcome: &StepOutcome) -> bool {
    use StepOutcome as O;
    match step {
        Step::Authorize => matches!(outcome, O::Authorized { .. }),
        Step::Reserve => matches!(outcome, O::Reserved { .. }),
        Step::CapturePayment => matches!(outcome, O::Captured { .. }),
        Step::ReconcileReservation => matches!(outcome, O::Reserved { .. } | O::NotFound),
        Step::ReconcileAuthorization => matches!(outcome, O::Authorized { .. } | O::NotFound),
        Step::ReconcileCapture => matches!(outcome, O::Captured { .. } | O::NotFound),
        Step::SellerCancel => matches!(outcome, O::SellerCancelled { .. }),
        Step::Hold
        | Step::CaptureWallet
        | Step::ReleaseHold
        | Step::VoidPayment
        | Step::CancelReservation
        | Step::RefundPayment
        | Step::CancellationRefund
        | Step::CreditPoints => matches!(outcome, O::Completed),
    }
}

fn set_state(
    r: &mut SagaRecord,
    state: SagaState,
    now: DateTime<Utc>,
    step: Option<Step>,
    note: impl Into<String>,
) {
    r.state = state;
    r.note(now, step, note);
}

fn bump(r: &mut SagaRecord, step: Step) -> u32 {
    let n = r.attempts.entry(step).or_insert(0);
    *n = n.saturating_add(1);
    *n
}

fn start_compensation(
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

fn park(r: &mut SagaRecord, reason: String, step: Step, now: DateTime<Utc>) {
    r.resume_state = Some(r.state);
    r.needs_attention = Some(reason.clone());
    set_state(r, SagaState::NeedsAttention, now, Some(step), reason);
}

fn on_success(
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
        (Step::Authorize, O::Authorized { authorization_id })
        | (Step::ReconcileAuthorization, O::Authorized { authorization_id }) => {
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
        (Step::Reserve | Step::ReconcileReservation, O::Reserved { reservation_id }) => {
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
        (Step::CapturePayment | Step::ReconcileCapture, O::Captured { capture_id }) => {
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
        (Step::SellerCancel, O::SellerCancelled { fee }) => {
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

/// A refusal or permanent failure: retrying cannot help.
fn decisive_failure(
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
fn retryable_failure(
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

fn mark_uncertain(r: &mut SagaRecord, step: Step) {
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

fn finish(
    r: &mut SagaRecord,
    state: SagaState,
    email: EmailKind,
    note: &str,
    now: DateTime<Utc>,
    tr: &mut Transition,
) {
    r.phase = Phase::Finished;
    set_state(r, state, now, None, note);
    tr.email = Some(email);
}

fn finish_confirmed(r: &mut SagaRecord, now: DateTime<Utc>, tr: &mut Transition) {
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
fn normalize(r: &mut SagaRecord, now: DateTime<Utc>, tr: &mut Transition) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::EUR)
    }

    fn request(points: i64, price: i64) -> BookingRequest {
        BookingRequest {
            account_id: "acc-1".into(),
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
        new_booking("b1", request(points, price), now()).unwrap()
    }

    fn cfg() -> SagaConfig {
        SagaConfig::default()
    }

    /// The outcome a well-behaved outside world gives for `action`.
    fn success(action: &Action) -> StepOutcome {
        match action {
            Action::AuthorizePayment { .. } => StepOutcome::Authorized {
                authorization_id: "auth-1".into(),
            },
            Action::Reserve { .. } | Action::ReconcileReservation { .. } => StepOutcome::Reserved {
                reservation_id: "res-1".into(),
            },
            Action::CapturePayment { .. } => StepOutcome::Captured {
                capture_id: "cap-1".into(),
            },
            Action::CancelWithSeller { .. } => StepOutcome::SellerCancelled { fee: eur(0) },
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
        assert_eq!(email.id, "b1:email:confirmed");
        assert_eq!(email.booking_id, "b1");
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
                "b1:hold",
                "b1:authorize",
                "b1",
                "b1:capture",
                "b1:capture-wallet"
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
            matches!(&actions[4], Action::CaptureWallet { hold_key, .. } if hold_key == "b1:hold")
        );
    }

    #[test]
    fn card_only_and_points_only_skip_steps() {
        let mut r = booking(0, 10_000);
        let (actions, _) = drive(&mut r, success);
        assert_eq!(names(&actions), ["authorize", "reserve", "capture"]);
        assert_eq!(r.state, SagaState::Confirmed);

        let mut r = new_booking(
            "b2",
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
            matches!(&actions[3], Action::VoidPayment { key, authorization_id } if key == "b1:void" && authorization_id == "auth-1")
        );
        assert!(
            matches!(&actions[4], Action::ReleaseHold { key, hold_key, .. } if key == "b1:release-hold" && hold_key == "b1:hold")
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
            if reservation_key == "b1" && reservation_id.as_deref() == Some("res-1"))
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
        assert!(matches!(&actions[2], Action::ReconcileReservation { key, .. } if key == "b1"));
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
            Action::ReconcilePayment { key } => {
                assert_eq!(key, "b1:authorize");
                StepOutcome::Authorized {
                    authorization_id: "auth-before-crash".into(),
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
            Action::ReconcilePayment { key } => {
                assert_eq!(key, "b1:authorize");
                StepOutcome::Authorized {
                    authorization_id: "auth-9".into(),
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
        let mut c = new_cancellation("c1", &b, now()).unwrap();
        assert_eq!(c.booking_id(), "b1");
        let (actions, trs) = drive(&mut c, |a| match a {
            Action::CancelWithSeller { .. } => StepOutcome::SellerCancelled { fee: eur(3_000) },
            other => success(other),
        });
        assert_eq!(
            names(&actions),
            ["seller-cancel", "refund", "credit-points"]
        );
        assert!(
            matches!(&actions[0], Action::CancelWithSeller { key, reservation_key, reservation_id, .. }
            if key == "c1:seller-cancel" && reservation_key == "b1" && reservation_id.as_deref() == Some("res-1"))
        );
        assert!(
            matches!(&actions[1], Action::Refund { key, payment_id, amount }
            if key == "c1:cancellation-refund" && payment_id == "cap-1" && *amount == eur(22_000))
        );
        assert!(
            matches!(&actions[2], Action::CreditPoints { amount, .. } if *amount == eur(5_000))
        );
        assert_eq!(c.state, SagaState::Cancelled);
        assert_eq!(trs.last().unwrap().email, Some(EmailKind::Cancelled));
        let email = email_for(&c, EmailKind::Cancelled, "a@example.com", now());
        assert_eq!(email.booking_id, "b1");
        assert!(email.body.contains("Cancellation fee: 30.00 EUR"));

        mark_booking_cancelled(&mut b, &c, now()).unwrap();
        assert_eq!(b.state, SagaState::Cancelled);
        assert_eq!(b.data.refund_amount, Some(eur(22_000)));
        assert!(mark_booking_cancelled(&mut b, &c, now()).is_err());
        assert!(new_cancellation("c2", &b, now()).is_err());
    }

    #[test]
    fn cancellation_fee_above_card_part_comes_out_of_points() {
        let b = confirmed(20_000, 30_000);
        let mut c = new_cancellation("c1", &b, now()).unwrap();
        let (actions, _) = drive(&mut c, |a| match a {
            Action::CancelWithSeller { .. } => StepOutcome::SellerCancelled { fee: eur(12_000) },
            other => success(other),
        });
        // Card part 100.00 is kept entirely; 20.00 of the fee comes from the 200.00 points.
        assert_eq!(names(&actions), ["seller-cancel", "credit-points"]);
        assert!(
            matches!(&actions[1], Action::CreditPoints { amount, .. } if *amount == eur(18_000))
        );
        assert_eq!(c.state, SagaState::Cancelled);
    }

    #[test]
    fn seller_refusing_to_cancel_leaves_the_booking_confirmed() {
        let b = confirmed(0, 30_000);
        let mut c = new_cancellation("c1", &b, now()).unwrap();
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
        let mut c = new_cancellation("c1", &b, now()).unwrap();
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
            },
            &cfg(),
            now(),
        )
        .unwrap();
        apply(
            &mut r,
            StepOutcome::Reserved {
                reservation_id: "res-1".into(),
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
        let bad = |req: BookingRequest| match new_booking("b", req, now()) {
            Err(SagaError::InvalidRequest(msg)) => msg,
            other => panic!("expected invalid request, got {other:?}"),
        };
        assert!(bad(request(40_000, 30_000)).starts_with("wallet_points"));
        assert!(bad(BookingRequest {
            account_id: String::new(),
            ..request(0, 1)
        })
        .starts_with("account_id"));
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
        let (back, _): (SagaRecord, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
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

    // -----------------------------------------------------------------------------------
    // Property: random outcomes against a model of the outside world.
    // -----------------------------------------------------------------------------------

    /// What really exists outside, and how often each thing was undone.
    #[derive(Debug, Default)]
    struct World {
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
            Action::AuthorizePayment { .. } => {
                forward!(
                    auth,
                    auth_ever,
                    StepOutcome::Authorized {
                        authorization_id: "a".into()
                    },
                    true
                )
            }
            Action::Reserve { .. } => {
                forward!(
                    reservation,
                    reserved_ever,
                    StepOutcome::Reserved {
                        reservation_id: "r".into()
                    },
                    true
                )
            }
            Action::CapturePayment { .. } => {
                let allowed = w.auth;
                forward!(
                    captured,
                    captured_ever,
                    StepOutcome::Captured {
                        capture_id: "c".into()
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
            Action::ReconcileReservation { .. } => match roll {
                5..=7 => StepOutcome::TimedOut,
                _ if w.reservation => StepOutcome::Reserved {
                    reservation_id: "r".into(),
                },
                _ => StepOutcome::NotFound,
            },
            Action::ReconcilePayment { key } => match roll {
                5..=7 => StepOutcome::Transient {
                    reason: "busy".into(),
                },
                _ if key.ends_with(":capture") && w.captured => StepOutcome::Captured {
                    capture_id: "c".into(),
                },
                _ if key.ends_with(":authorize") && (w.auth || w.captured_ever) => {
                    StepOutcome::Authorized {
                        authorization_id: "a".into(),
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
            Action::Refund { .. } => {
                assert!(
                    w.captured || w.refunds > 0,
                    "refunded a capture that does not exist"
                );
                if roll <= 3 || roll == 6 {
                    if w.captured {
                        w.captured = false;
                        w.auth = false;
                        w.refunds += 1;
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
            other => panic!("booking saga asked for {other:?}"),
        }
    }

    /// Drives one booking saga against the world model with `rolls`; checks the
    /// invariants and returns the final state.
    fn run_booking_model(
        rolls: &[u8],
        points: i64,
        cancel_at: Option<usize>,
    ) -> Result<SagaState, TestCaseError> {
        let cfg = cfg();
        let mut r = new_booking("p1", request(points, 30_000), now()).unwrap();
        let mut w = World::default();
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
            let tr = apply(&mut r, outcome, &cfg, now()).unwrap();
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
        Ok(r.state)
    }

    /// Drives one cancellation saga with `rolls` and a seller `fee`; checks invariants.
    fn run_cancellation_model(
        rolls: &[u8],
        points: i64,
        fee: i64,
    ) -> Result<SagaState, TestCaseError> {
        let cfg = cfg();
        let booking = confirmed(points, 30_000);
        let mut c = new_cancellation("c1", &booking, now()).unwrap();
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
                Action::CancelWithSeller { .. } => {
                    let ok = StepOutcome::SellerCancelled { fee: eur(fee) };
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
                    if refunded.is_some() && k == 3 {
                        StepOutcome::Completed
                    } else {
                        reply(StepOutcome::Completed)
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
            let state =
                run_booking_model(&rolls, if i % 2 == 0 { 0 } else { 4_000 }, cancel_at).unwrap();
            seen.insert(state.as_str());
        }
        assert_eq!(seen.len(), 4, "booking model reached only {seen:?}");
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
        ) {
            run_booking_model(&rolls, points, cancel_at)?;
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
}
