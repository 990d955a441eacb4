//! The booking saga as a pure state machine: no I/O, no clocks, no randomness of its own.
//!
//! The `BookingSaga` actor owns one [`SagaRecord`] and loops:
//!
//! 1. `let action = next_action(&record)`; if it is [`Action::Done`] or
//!    [`Action::AwaitOperator`], stop;
//! 2. persist the record (the step's intent is implied by it), then perform the action with
//!    its deterministic key;
//! 3. map the reply to a [`StepOutcome`] and call [`apply`], which updates the record and
//!    returns a [`Transition`];
//! 4. persist the record, plus an outbox email when `transition.email` is set, in one write;
//!    if `transition.retry_attempt` is set, wait [`backoff_delay`] first; if
//!    `transition.start_cancellation` is set, start a cancellation saga.
//!
//! Steps (see docs/architecture.md): 1 hold wallet points / release; 2 authorize / void;
//! 3 reserve with the seller, the pivot / cancel reservation; 4 capture card and wallet /
//! refund; 5 the confirmation email, written in the same store write as the `confirmed`
//! transition (so it needs no action of its own and cannot fail separately).
//!
//! Policy, in short: before the pivot a refusal or an exhausted retry budget compensates in
//! reverse; a timed-out reservation is reconciled with the seller before anything is
//! decided; after the pivot the saga retries forward and compensates only on a permanent
//! failure; a compensation that cannot finish parks the saga as `needs_attention` for an
//! operator ([`retry_needs_attention`]).

mod calls;
mod cancel_request;
mod id;
mod record;
mod tally;
mod transition;

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::domain::money::Money;

pub use calls::{
    push_bounded, CallOutcome, PartnerCall, PartnerCalls, KEPT_FIRST, MAX_CALLS, MAX_DETAIL_LEN,
};
pub use cancel_request::{takes_stored_cancel, with_stored_cancel};
pub use id::{BookingId, IdError, SagaId};
pub use record::{
    is_terminal, reservation_key, step_key, BookingRequest, Effect, Effects, FailureCause,
    HistoryEntry, Phase, SagaData, SagaKind, SagaRecord, SagaState, Step, TraceOrigin,
    DEFINITION_VERSION, MAX_FIELD_LEN,
};
pub use tally::{ParkedSaga, SagaCounts, SagaTally};
pub use transition::{
    apply, email_for, mark_booking_cancelled, new_booking, new_cancellation, next_action,
    park_crashed, request_cancellation, retry_needs_attention, Action, AmountMismatch,
    CancelDecision, StepOutcome, Transition,
};

/// Errors from the saga functions. These are caller bugs or bad input, never expected
/// business outcomes (those are [`StepOutcome`]s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SagaError {
    /// The booking request is invalid; the message names the field.
    #[error("invalid booking request: {0}")]
    InvalidRequest(String),
    /// The record was written by a saga definition this build does not know.
    #[error("unsupported saga definition version {0}")]
    UnsupportedVersion(u16),
    /// An outcome was applied that does not answer the step in progress.
    #[error("outcome {outcome} does not answer step {step:?}")]
    UnexpectedOutcome {
        /// The step the record is waiting on.
        step: Step,
        /// Short description of the outcome received.
        outcome: String,
    },
    /// An outcome was applied while the saga waits on nothing (finished or parked).
    #[error("saga is {0:?} and waits on no step")]
    NotAwaitingOutcome(SagaState),
    /// The operation needs a different state.
    #[error("saga is {actual:?}, expected {expected}")]
    WrongState {
        /// What the operation needs.
        expected: &'static str,
        /// Where the saga is.
        actual: SagaState,
    },
    /// Money arithmetic failed (currency mismatch, overflow, negative fee).
    #[error("amount error: {0}")]
    Arithmetic(String),
}

/// Retry budgets and backoff of the booking saga (`[saga]` in config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SagaConfig {
    /// Attempts of a step before the pivot (hold, authorize, reserve) before compensating.
    pub max_attempts_before_pivot: u32,
    /// Attempts of a step after the pivot (capture, cancellation refund and credit) before
    /// parking as `needs_attention`. Larger, because going forward is preferred.
    pub max_attempts_after_pivot: u32,
    /// Attempts of one compensation before parking as `needs_attention`.
    pub max_compensation_attempts: u32,
    /// Attempts of a status query after a timeout before parking as `needs_attention`.
    pub max_reconcile_attempts: u32,
    /// First retry delay, in milliseconds; doubles per attempt.
    pub backoff_base_ms: u64,
    /// Ceiling of the retry delay, in milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for SagaConfig {
    fn default() -> Self {
        SagaConfig {
            max_attempts_before_pivot: 3,
            max_attempts_after_pivot: 8,
            max_compensation_attempts: 5,
            max_reconcile_attempts: 5,
            backoff_base_ms: 100,
            backoff_max_ms: 10_000,
        }
    }
}

/// Upper bound on any budget, so a typo cannot make a saga retry for days.
const MAX_BUDGET: u32 = 100;

/// A saga config value out of range; `key` is the full config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config key `{key}`: {reason}")]
pub struct SagaConfigError {
    /// Full config key, e.g. `saga.backoff_base_ms`.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SagaConfig {
    /// Checks ranges, naming the first bad key.
    pub fn validate(&self) -> Result<(), SagaConfigError> {
        for (key, v) in [
            (
                "saga.max_attempts_before_pivot",
                self.max_attempts_before_pivot,
            ),
            (
                "saga.max_attempts_after_pivot",
                self.max_attempts_after_pivot,
            ),
            (
                "saga.max_compensation_attempts",
                self.max_compensation_attempts,
            ),
            ("saga.max_reconcile_attempts", self.max_reconcile_attempts),
        ] {
            if v == 0 || v > MAX_BUDGET {
                return Err(SagaConfigError {
                    key,
                    reason: format!("{v} is not within 1..={MAX_BUDGET}"),
                });
            }
        }
        if self.backoff_base_ms == 0 {
            return Err(SagaConfigError {
                key: "saga.backoff_base_ms",
                reason: "must be positive".into(),
            });
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(SagaConfigError {
                key: "saga.backoff_max_ms",
                reason: format!(
                    "{} is below backoff_base_ms {}",
                    self.backoff_max_ms, self.backoff_base_ms
                ),
            });
        }
        Ok(())
    }

    /// The retry budget of `step`.
    pub fn budget(&self, step: Step) -> u32 {
        match step {
            Step::Hold | Step::Authorize | Step::Reserve | Step::SellerCancel => {
                self.max_attempts_before_pivot
            }
            Step::CapturePayment
            | Step::CaptureWallet
            | Step::CancellationRefund
            | Step::CreditPoints => self.max_attempts_after_pivot,
            Step::ReleaseHold
            | Step::VoidPayment
            | Step::CancelReservation
            | Step::RefundPayment => self.max_compensation_attempts,
            Step::ReconcileReservation | Step::ReconcileAuthorization | Step::ReconcileCapture => {
                self.max_reconcile_attempts
            }
        }
    }
}

/// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)` capped at the
/// maximum, with "equal jitter" (half fixed, half random) so that sagas failing together do
/// not retry together, yet never retry at once.
pub fn backoff_delay(attempt: u32, cfg: &SagaConfig, rng: &mut impl Rng) -> Duration {
    super::backoff::equal_jitter(
        Duration::from_millis(cfg.backoff_base_ms),
        Duration::from_millis(cfg.backoff_max_ms),
        attempt.saturating_sub(1),
        rng.gen::<f64>(),
    )
}

/// How a cancellation fee is split between the card and the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancellationSplit {
    /// Refunded to the card.
    pub card_refund: Money,
    /// Credited back to the wallet.
    pub points_restored: Money,
    /// The fee actually kept (the seller's fee, capped at what was paid).
    pub fee_charged: Money,
}

/// Splits a seller's cancellation `fee` over what the customer paid.
///
/// Decision: the fee is a charge on the booking as a whole, taken first from the card
/// (money the marketplace really received), and only the remainder from the points. So
/// `card_refund = card_captured − fee` (never negative) and, when the fee exceeds the card
/// part, `points_restored = points_captured − (fee − card_captured)` (never negative). A fee
/// above the whole price is capped at the price: the customer never owes more after
/// cancelling. A negative fee, a negative paid amount or mixed currencies is an error.
pub fn cancellation_split(
    card_captured: Money,
    points_captured: Money,
    fee: Money,
) -> Result<CancellationSplit, SagaError> {
    if fee.minor < 0 || card_captured.minor < 0 || points_captured.minor < 0 {
        return Err(SagaError::Arithmetic(
            "negative amount in cancellation".into(),
        ));
    }
    let mismatch = || SagaError::Arithmetic("currencies differ in cancellation".into());
    let total = card_captured
        .checked_add(points_captured)
        .ok_or_else(mismatch)?;
    if fee.currency != total.currency {
        return Err(mismatch());
    }
    let fee_charged = if fee.minor > total.minor { total } else { fee };
    let zero = Money::zero(total.currency);
    let (card_refund, points_restored) = if fee_charged.minor <= card_captured.minor {
        (
            card_captured
                .checked_sub(fee_charged)
                .ok_or_else(mismatch)?,
            points_captured,
        )
    } else {
        let from_points = fee_charged
            .checked_sub(card_captured)
            .ok_or_else(mismatch)?;
        (
            zero,
            points_captured
                .checked_sub(from_points)
                .ok_or_else(mismatch)?,
        )
    };
    Ok(CancellationSplit {
        card_refund,
        points_restored,
        fee_charged,
    })
}

/// Records for unit tests of the modules here.
#[cfg(test)]
pub(crate) mod fixtures {
    use chrono::{NaiveDate, Utc};

    use super::{new_booking, BookingId, BookingRequest, SagaRecord};
    use crate::domain::account::AccountId;
    use crate::domain::money::{Currency, Money};

    /// A new booking of a hotel for two nights, paid by card alone.
    pub(crate) fn booking() -> SagaRecord {
        let eur = |minor| Money::new(minor, Currency::EUR);
        let request = BookingRequest {
            account_id: AccountId::demo(1),
            seller: "alpha".into(),
            sku: "hotel-7-dbl".into(),
            start: NaiveDate::from_ymd_opt(2030, 1, 1).unwrap(),
            end: NaiveDate::from_ymd_opt(2030, 1, 3).unwrap(),
            wallet_points: eur(0),
            card_token: "tok_approve".into(),
            offer_price: eur(50_000),
            idempotency_key: "k1".into(),
        };
        new_booking(BookingId::new(), request, Utc::now()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::EUR)
    }

    #[test]
    fn fee_comes_from_card_first_then_points() {
        let s = cancellation_split(eur(8_000), eur(2_000), eur(1_500)).unwrap();
        assert_eq!(
            (s.card_refund, s.points_restored, s.fee_charged),
            (eur(6_500), eur(2_000), eur(1_500))
        );
        // Fee above the card part: the rest comes out of the points.
        let s = cancellation_split(eur(1_000), eur(2_000), eur(1_500)).unwrap();
        assert_eq!(
            (s.card_refund, s.points_restored, s.fee_charged),
            (eur(0), eur(1_500), eur(1_500))
        );
        // Fee above everything paid: capped, nothing returned, never negative.
        let s = cancellation_split(eur(1_000), eur(500), eur(9_999)).unwrap();
        assert_eq!(
            (s.card_refund, s.points_restored, s.fee_charged),
            (eur(0), eur(0), eur(1_500))
        );
        // No fee: everything back.
        let s = cancellation_split(eur(1_000), eur(0), eur(0)).unwrap();
        assert_eq!((s.card_refund, s.points_restored), (eur(1_000), eur(0)));
    }

    #[test]
    fn fee_split_refuses_bad_amounts() {
        assert!(cancellation_split(eur(1), eur(1), eur(-1)).is_err());
        assert!(cancellation_split(eur(1), eur(1), Money::new(1, Currency::USD)).is_err());
        assert!(cancellation_split(eur(1), Money::new(1, Currency::USD), eur(0)).is_err());
        assert!(cancellation_split(eur(i64::MAX), eur(1), eur(0)).is_err());
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let cfg = SagaConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..Default::default()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        for attempt in 1..=40 {
            let raw = (100u64 << (attempt - 1).min(20)).min(1_000);
            let d = backoff_delay(attempt, &cfg, &mut rng).as_millis() as u64;
            assert!(
                d >= raw / 2 && d <= raw,
                "attempt {attempt}: {d} not in [{}, {raw}]",
                raw / 2
            );
        }
        assert!(backoff_delay(u32::MAX, &cfg, &mut rng) <= Duration::from_millis(1_000));
    }

    #[test]
    fn config_defaults_and_validation() {
        let cfg: SagaConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, SagaConfig::default());
        assert!(cfg.validate().is_ok());
        let bad = SagaConfig {
            max_compensation_attempts: 0,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().key,
            "saga.max_compensation_attempts"
        );
        let bad = SagaConfig {
            backoff_base_ms: 500,
            backoff_max_ms: 100,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "saga.backoff_max_ms");
    }
}
