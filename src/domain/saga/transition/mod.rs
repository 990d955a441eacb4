//! What to do next and how each outcome moves a saga: [`next_action`] and [`apply`].
//!
//! Everything here is a pure function of the [`SagaRecord`] (plus the clock and config
//! passed in), so the actor stays a thin loop and every path is unit-tested.
//!
//! Layout: this file holds the types, [`next_action`] and [`apply`]; `steps.rs` what each
//! step does and how its success moves the saga, `failure.rs` how failures do,
//! `booking.rs` and `cancellation.rs` what is particular to each kind of saga; the tests
//! and the reference model of the outside world live in `tests/`.

use chrono::{DateTime, NaiveDate, Utc};

use super::id::{BookingId, SagaId};
use super::record::{
    is_terminal, reservation_key, step_key, BookingRequest, Effect, FailureCause, Phase, SagaData,
    SagaKind, SagaRecord, SagaState, Step, DEFINITION_VERSION,
};
use super::{cancellation_split, SagaConfig, SagaError};
use crate::domain::account::AccountId;
use crate::domain::money::Money;
use crate::domain::outbox::{EmailFacts, EmailKind, OutboxEmail};

mod booking;
mod cancellation;
mod failure;
mod mismatch;
mod steps;
#[cfg(test)]
mod tests;

use booking::*;
pub use booking::{new_booking, request_cancellation};
pub use cancellation::{mark_booking_cancelled, new_cancellation};
use failure::*;
pub use failure::{park_crashed, retry_needs_attention};
use mismatch::*;
use steps::*;

/// The next external call a saga wants, with its deterministic idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Step 1: hold `amount` of the account's wallet points.
    HoldWallet {
        /// Ledger idempotency key (`"{saga}:hold"`), also the hold's reference.
        key: String,
        /// Account whose wallet is held.
        account_id: AccountId,
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
        /// The price the reservation was asked at; a seller naming another is a mismatch.
        price: Money,
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
        account_id: AccountId,
        /// Points to debit.
        amount: Money,
    },
    /// Ask the gateway (`status(key)`) what became of the operation sent with `key`. Answer
    /// `Authorized`/`Captured` if it happened; `NotFound` if it is unknown, declined or
    /// rejected (nothing is in force).
    ReconcilePayment {
        /// Key of the operation in doubt.
        key: String,
        /// The step that sent it (`Authorize` or `CapturePayment`): a look-up answering
        /// with another kind of operation answers another request.
        operation: Step,
        /// The amount that operation asked for; a gateway naming another is a mismatch.
        amount: Money,
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
        account_id: AccountId,
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
        account_id: AccountId,
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

impl Action {
    /// Stable snake_case name, for spans and logs (the fields may hold a card token).
    pub fn name(&self) -> &'static str {
        match self {
            Action::HoldWallet { .. } => "hold_wallet",
            Action::AuthorizePayment { .. } => "authorize_payment",
            Action::Reserve { .. } => "reserve",
            Action::ReconcileReservation { .. } => "reconcile_reservation",
            Action::CapturePayment { .. } => "capture_payment",
            Action::CaptureWallet { .. } => "capture_wallet",
            Action::ReconcilePayment { .. } => "reconcile_payment",
            Action::ReleaseHold { .. } => "release_hold",
            Action::VoidPayment { .. } => "void_payment",
            Action::CancelReservation { .. } => "cancel_reservation",
            Action::Refund { .. } => "refund",
            Action::CancelWithSeller { .. } => "cancel_with_seller",
            Action::CreditPoints { .. } => "credit_points",
            Action::AwaitOperator { .. } => "await_operator",
            Action::Done => "done",
        }
    }
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
        /// The amount the gateway says it reserved; anything but the amount asked is a
        /// payment mismatch.
        amount: Money,
    },
    /// The seller holds the reservation (reserve, or a reconciliation that found it).
    Reserved {
        /// Seller reference.
        reservation_id: String,
        /// The price the seller says it confirmed; anything but the offer price is a
        /// price mismatch.
        price: Money,
    },
    /// The card is captured (capture, or a payment reconciliation that found it).
    Captured {
        /// Gateway reference.
        capture_id: String,
        /// The amount the gateway says it captured.
        amount: Money,
    },
    /// The gateway refunded a capture (compensation or a cancellation's refund).
    Refunded {
        /// The amount the gateway says it refunded.
        amount: Money,
    },
    /// The seller cancelled a confirmed booking and keeps `fee`.
    SellerCancelled {
        /// Cancellation fee (zero for free cancellation).
        fee: Money,
        /// The reservation the seller says it cancelled; a reply naming another than the
        /// booking's is not taken as its cancellation.
        reservation_id: String,
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
            StepOutcome::Refunded { .. } => "refunded",
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
    /// A partner reported an amount other than the one asked: log it with both amounts
    /// and count it (the saga has already compensated or parked).
    pub mismatch: Option<AmountMismatch>,
}

/// A partner's reply that names an amount other than the one wayfare asked for: a seller
/// confirming a reservation at another price, a gateway authorizing, capturing or
/// refunding another amount. The books of wayfare and the partner would disagree, so the
/// saga never goes on as if it had been asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmountMismatch {
    /// The step whose reply named the amount.
    pub step: Step,
    /// The amount asked for.
    pub expected: Money,
    /// The amount the partner reported.
    pub reported: Money,
}

impl AmountMismatch {
    /// Whether a seller named the amount (a confirmed price); otherwise the gateway did.
    pub fn is_seller(&self) -> bool {
        matches!(self.step, Step::Reserve | Step::ReconcileReservation)
    }
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
            mismatch: None,
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
    if let Some(why) = answers_another_request(r, step, &outcome) {
        bump(r, step);
        park(r, why, step, now);
        normalize(r, now, &mut tr);
        tr.to = r.state;
        return Ok(tr);
    }
    if let Some(mismatch) = amount_mismatch(r, step, &outcome) {
        on_mismatch(r, mismatch, outcome, now);
        tr.mismatch = Some(mismatch);
        normalize(r, now, &mut tr);
        tr.to = r.state;
        return Ok(tr);
    }
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

/// The outbox entry of `kind` for saga `r`, addressed to `to`. Call it when a
/// [`Transition`] carries `email: Some(kind)` and write it with the record.
pub fn email_for(r: &SagaRecord, kind: EmailKind, to: &str, now: DateTime<Utc>) -> OutboxEmail {
    let facts = EmailFacts {
        booking_id: r.booking_id().to_string(),
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
    OutboxEmail::new(
        &r.saga_id.to_string(),
        kind,
        &facts,
        &r.request.account_id.to_string(),
        to,
        now,
    )
}

/// Zero in the request's currency.
fn zero(r: &SagaRecord) -> Money {
    Money::zero(r.request.offer_price.currency)
}

/// The card part; validated at creation, so the fallback (zero) is never used.
fn card_amount(r: &SagaRecord) -> Money {
    r.request.card_amount().unwrap_or_else(|| zero(r))
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
