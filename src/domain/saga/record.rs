//! The persisted shape of a saga: what was asked, where it stands, what it learned.
//!
//! A [`SagaRecord`] is the whole state of one booking or cancellation saga. The actor
//! writes it (flushed) before every side effect and after every outcome, so a restarted
//! actor resumes from it alone. It is encoded with bincode 2 (serde), so the types here use
//! only plain structs, tagged enums and options: no `untagged`, `flatten` or skipped fields.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::id::{BookingId, SagaId};
use super::SagaError;
use crate::domain::account::AccountId;
use crate::domain::money::Money;

/// Version of the saga definition (steps, their order, keys). Bump it when the steps change
/// and keep the old path readable, so sagas in flight across an upgrade still finish.
pub const DEFINITION_VERSION: u16 = 1;

/// Longest id, sku, key or token accepted in a request; longer input is refused.
pub const MAX_FIELD_LEN: usize = 128;

/// Whether this saga books or cancels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SagaKind {
    /// A new booking.
    Booking,
    /// Cancellation of a confirmed booking.
    Cancellation {
        /// The booking being cancelled (its id is also its reservation key at the seller).
        of: BookingId,
    },
}

/// What the customer asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingRequest {
    /// The booking account (stored as its text, like every id in a saga record).
    #[serde(with = "super::id::as_text")]
    pub account_id: AccountId,
    /// Seller that offered the SKU.
    pub seller: String,
    /// Hotel room or flight SKU.
    pub sku: String,
    /// Check-in (hotels) or outbound travel date (flights).
    pub start: NaiveDate,
    /// Check-out (hotels) or return date (flights; equal to `start` for one-way).
    pub end: NaiveDate,
    /// Part of the price paid with wallet points (zero for none).
    pub wallet_points: Money,
    /// Card token for the rest of the price; may be empty when points cover everything.
    pub card_token: String,
    /// The offer price the customer accepted.
    pub offer_price: Money,
    /// The client's `Idempotency-Key`: the same key returns the same booking.
    pub idempotency_key: String,
}

impl BookingRequest {
    /// Checks the request before a saga is created; the message names the bad field.
    pub fn validate(&self) -> Result<(), SagaError> {
        let bad =
            |field: &str, why: &str| Err(SagaError::InvalidRequest(format!("{field}: {why}")));
        for (field, value) in [
            ("seller", &self.seller),
            ("sku", &self.sku),
            ("idempotency_key", &self.idempotency_key),
        ] {
            if value.is_empty() {
                return bad(field, "must not be empty");
            }
            if value.len() > MAX_FIELD_LEN {
                return bad(field, "too long");
            }
        }
        if self.card_token.len() > MAX_FIELD_LEN {
            return bad("card_token", "too long");
        }
        if self.end < self.start {
            return bad("end", "must not be before start");
        }
        if self.offer_price.minor <= 0 {
            return bad("offer_price", "must be positive");
        }
        if self.wallet_points.minor < 0 {
            return bad("wallet_points", "must not be negative");
        }
        let card = match self.card_amount() {
            Some(card) => card,
            None => return bad("wallet_points", "currency differs from the offer price"),
        };
        if card.minor < 0 {
            return bad("wallet_points", "exceed the offer price");
        }
        if card.minor > 0 && self.card_token.is_empty() {
            return bad("card_token", "required when points do not cover the price");
        }
        Ok(())
    }

    /// The part of the price charged to the card: price minus points, or `None` when the
    /// currencies differ or the arithmetic overflows.
    pub fn card_amount(&self) -> Option<Money> {
        self.offer_price.checked_sub(self.wallet_points)
    }
}

/// Customer-visible state, as shown in the booking's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum SagaState {
    /// Accepted; wallet hold or payment authorization under way.
    Pending,
    /// Payment arranged (card authorized and/or points held); reserving with the seller.
    PaymentAuthorized,
    /// The seller holds the reservation; capturing payment.
    SellerConfirmed,
    /// Booked and paid.
    Confirmed,
    /// Undoing completed steps after a failure.
    Compensating,
    /// Could not be completed; every completed step was undone.
    Failed,
    /// Cancelled by the customer; refunds as recorded.
    Cancelled,
    /// Parked: a compensation or post-pivot step exhausted its budget. An operator must
    /// look at it and retry; it is never silently dropped.
    NeedsAttention,
}

impl SagaState {
    /// Stable snake_case name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            SagaState::Pending => "pending",
            SagaState::PaymentAuthorized => "payment_authorized",
            SagaState::SellerConfirmed => "seller_confirmed",
            SagaState::Confirmed => "confirmed",
            SagaState::Compensating => "compensating",
            SagaState::Failed => "failed",
            SagaState::Cancelled => "cancelled",
            SagaState::NeedsAttention => "needs_attention",
        }
    }
}

/// Whether `state` is final: no further action will ever be taken. `needs_attention` is not
/// final (an operator can resume it).
pub fn is_terminal(state: SagaState) -> bool {
    matches!(
        state,
        SagaState::Confirmed | SagaState::Failed | SagaState::Cancelled
    )
}

/// Internal position in the forward path (finer than [`SagaState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Booking step 1.
    HoldWallet,
    /// Booking step 2.
    Authorize,
    /// Booking step 3, the pivot (reconciled first if the last attempt timed out).
    Reserve,
    /// Booking step 4, card part.
    CapturePayment,
    /// Booking step 4, wallet part.
    CaptureWallet,
    /// Cancellation step 1, the pivot: cancel with the seller, learning the fee.
    SellerCancel,
    /// Cancellation step 2: refund the card minus the fee.
    RefundPayment,
    /// Cancellation step 3: credit the points back.
    RestorePoints,
    /// Undoing completed steps in reverse order.
    Compensating,
    /// Nothing left to do.
    Finished,
}

/// One external operation. Its name is part of the step's idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum Step {
    /// Hold wallet points.
    Hold,
    /// Authorize the card.
    Authorize,
    /// Reserve with the seller.
    Reserve,
    /// Ask the seller whether the reservation landed.
    ReconcileReservation,
    /// Capture the card authorization.
    CapturePayment,
    /// Capture the wallet hold.
    CaptureWallet,
    /// Ask the gateway whether the authorization landed.
    ReconcileAuthorization,
    /// Ask the gateway whether the capture landed.
    ReconcileCapture,
    /// Compensation of [`Step::Hold`].
    ReleaseHold,
    /// Compensation of [`Step::Authorize`].
    VoidPayment,
    /// Compensation of [`Step::Reserve`].
    CancelReservation,
    /// Compensation of [`Step::CapturePayment`].
    RefundPayment,
    /// Cancellation saga: cancel with the seller.
    SellerCancel,
    /// Cancellation saga: refund the card minus the fee.
    CancellationRefund,
    /// Cancellation saga: credit the points back.
    CreditPoints,
}

impl Step {
    /// Stable name used in keys and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Step::Hold => "hold",
            Step::Authorize => "authorize",
            Step::Reserve => "reserve",
            Step::ReconcileReservation => "reconcile-reservation",
            Step::CapturePayment => "capture",
            Step::CaptureWallet => "capture-wallet",
            Step::ReconcileAuthorization => "reconcile-authorization",
            Step::ReconcileCapture => "reconcile-capture",
            Step::ReleaseHold => "release-hold",
            Step::VoidPayment => "void",
            Step::CancelReservation => "cancel-reservation",
            Step::RefundPayment => "refund",
            Step::SellerCancel => "seller-cancel",
            Step::CancellationRefund => "cancellation-refund",
            Step::CreditPoints => "credit-points",
        }
    }
}

/// The deterministic idempotency key of `step` in saga `saga_id`: `"{saga_id}:{step}"`.
/// (The seller reservation uses the bare booking id; see [`reservation_key`].)
pub fn step_key(saga_id: SagaId, step: Step) -> String {
    format!("{saga_id}:{}", step.as_str())
}

/// The key a booking's reservation is made (and looked up) with at the seller: its id.
pub fn reservation_key(booking: BookingId) -> String {
    booking.to_string()
}

/// What we know about one external effect of a forward step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Effect {
    /// Not done (never attempted, refused, or reconciled as absent).
    #[default]
    Absent,
    /// A call timed out: it may or may not have happened.
    Uncertain,
    /// Done and still in force.
    Done,
    /// Done, then undone by its compensation (or consumed, like an authorization that
    /// was captured and refunded).
    Compensated,
}

/// External effects of the saga's forward steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Effects {
    /// Step 1: wallet points held.
    pub wallet_hold: Effect,
    /// Step 2: card authorized.
    pub authorization: Effect,
    /// Step 3: seller reservation.
    pub reservation: Effect,
    /// Step 4: card captured.
    pub payment_capture: Effect,
    /// Step 4: wallet hold captured (points spent).
    pub wallet_capture: Effect,
    /// Cancellation: seller cancelled the reservation.
    pub seller_cancel: Effect,
    /// Cancellation: card refunded.
    pub refund: Effect,
    /// Cancellation: points credited back.
    pub points_credit: Effect,
}

/// Why a booking failed, in words safe to show the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureCause {
    /// The wallet refused the hold (not enough points).
    InsufficientPoints,
    /// The card was declined.
    PaymentDeclined,
    /// The seller refused (sold out, price changed).
    SellerRefused,
    /// Anything else: timeouts, outages, permanent errors.
    Technical,
    /// The customer cancelled before the booking was confirmed.
    CustomerCancelled,
    /// The seller confirmed the reservation at a price other than the one offered.
    PriceMismatch,
    /// The payment gateway reported moving an amount other than the one asked.
    PaymentMismatch,
}

impl FailureCause {
    /// Stable code for clients (`insufficient_points`, `payment_declined`,
    /// `seller_refused`, `technical`, `customer_cancelled`, `price_mismatch`,
    /// `payment_mismatch`): what a program may match on.
    pub fn code(&self) -> &'static str {
        match self {
            FailureCause::InsufficientPoints => "insufficient_points",
            FailureCause::PaymentDeclined => "payment_declined",
            FailureCause::SellerRefused => "seller_refused",
            FailureCause::Technical => "technical",
            FailureCause::CustomerCancelled => "customer_cancelled",
            FailureCause::PriceMismatch => "price_mismatch",
            FailureCause::PaymentMismatch => "payment_mismatch",
        }
    }

    /// Customer-facing wording.
    pub fn customer_text(&self) -> &'static str {
        match self {
            FailureCause::InsufficientPoints => "your wallet does not hold enough points",
            FailureCause::PaymentDeclined => "your card was declined",
            FailureCause::SellerRefused => "the seller could not confirm it at the offered price",
            FailureCause::Technical => "a technical problem",
            FailureCause::CustomerCancelled => "you cancelled it",
            FailureCause::PriceMismatch => {
                "the seller confirmed it at a price other than the one offered"
            }
            FailureCause::PaymentMismatch => {
                "the payment provider reported an amount other than the one asked"
            }
        }
    }
}

/// What the saga learned from the outside world along the way.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SagaData {
    /// Gateway authorization id (step 2).
    pub authorization_id: Option<String>,
    /// Seller reservation id (step 3).
    pub reservation_id: Option<String>,
    /// Gateway capture id (step 4).
    pub capture_id: Option<String>,
    /// Card amount captured (step 4; copied into a cancellation saga).
    pub card_captured: Option<Money>,
    /// Wallet points captured (step 4; copied into a cancellation saga).
    pub points_captured: Option<Money>,
    /// Cancellation fee the seller keeps.
    pub seller_fee: Option<Money>,
    /// Card refund decided by a cancellation.
    pub refund_amount: Option<Money>,
    /// Points credited back by a cancellation.
    pub points_restored: Option<Money>,
    /// Internal reason of the first failure (for operators, never emailed).
    pub failure_reason: Option<String>,
    /// Customer-safe cause of the failure.
    pub failure_cause: Option<FailureCause>,
}

/// One line of the customer-visible timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// State after the event.
    pub state: SagaState,
    /// The step concerned, if any.
    #[schema(required = true)]
    pub step: Option<Step>,
    /// What happened, in a short sentence.
    pub note: String,
}

/// The whole persisted state of one saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// [`DEFINITION_VERSION`] at creation.
    pub definition_version: u16,
    /// Saga id; for a booking also the booking id and the seller reservation key.
    pub saga_id: SagaId,
    /// Booking or cancellation.
    pub kind: SagaKind,
    /// What the customer asked for (copied from the booking for a cancellation).
    pub request: BookingRequest,
    /// Customer-visible state.
    pub state: SagaState,
    /// Internal forward position.
    pub phase: Phase,
    /// External effects and what is known about them.
    pub effects: Effects,
    /// Data learned along the way.
    pub data: SagaData,
    /// Failed attempts per step, against the retry budget.
    pub attempts: BTreeMap<Step, u32>,
    /// Why the saga is parked, while it is `needs_attention`.
    pub needs_attention: Option<String>,
    /// State to return to when an operator retries a parked saga.
    pub resume_state: Option<SagaState>,
    /// The customer asked to cancel while the booking was in flight.
    pub cancel_requested: bool,
    /// When the saga was created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Timed history of states and steps.
    pub history: Vec<HistoryEntry>,
    /// The trace of the request that created the saga, when spans were exported. Not
    /// part of the record's own encoding: the stores write it as a trailer
    /// (`store::codec::encode_with_trailer`), so records from before it stay readable.
    #[serde(skip)]
    pub trace: Option<TraceOrigin>,
    /// Every partner call the saga made, per attempt, bounded. Stored as a second
    /// trailer, after `trace`, for the same reason.
    #[serde(skip)]
    pub calls: super::calls::PartnerCalls,
}

/// Where a saga's trace began: the W3C `traceparent` of the request that created it and
/// the process that served it. Steps driven by that process continue the trace; steps
/// driven by another (after a restart or a lease take-over) start a trace of their own
/// that links to this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceOrigin {
    /// `00-<trace id>-<span id>-<flags>`.
    pub traceparent: String,
    /// The creating process's random id.
    pub process: u64,
}

impl SagaRecord {
    /// Failed attempts of `step` so far.
    pub fn attempts_of(&self, step: Step) -> u32 {
        self.attempts.get(&step).copied().unwrap_or(0)
    }

    /// The booking this saga is about (its own id, or the booking it cancels).
    pub fn booking_id(&self) -> BookingId {
        self.saga_id.booking()
    }

    /// Appends a history line.
    pub(crate) fn note(&mut self, now: DateTime<Utc>, step: Option<Step>, note: impl Into<String>) {
        self.history.push(HistoryEntry {
            at: now,
            state: self.state,
            step,
            note: note.into(),
        });
        self.updated_at = now;
    }
}
