//! The payment gateway contract the booking saga drives, and a simulated gateway.
//!
//! This module owns no state itself: it defines what a gateway promises. Every operation
//! carries an idempotency key chosen by the caller (the saga uses `"{saga_id}:{step}"`), and
//! the gateway must answer a repeated key with the first result, so a retry after a timeout
//! or a crash never charges twice. Expected refusals (a declined card) are values; only
//! failures to get an answer are [`PaymentError`]s.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::domain::money::Money;
use crate::domain::saga::{Step, StepOutcome};

pub mod faulty;
pub mod http;
pub mod simulated;
pub mod wire;

pub use simulated::{
    GatewayConfigError, GatewayLedger, PaymentFault, PaymentOp, SimulatedGateway,
    SimulatedGatewayConfig,
};

/// The future every gateway operation returns: boxed so the trait stays object-safe and can
/// be shared as `Arc<dyn PaymentGateway>` between saga actors.
pub type PaymentFuture<T> = Pin<Box<dyn Future<Output = Result<T, PaymentError>> + Send + 'static>>;

/// A payment service provider, as the booking saga sees it.
///
/// Implementations must be idempotent by `key`: the same key returns the first result and
/// never moves money twice. Reusing a key for different parameters is a
/// [`PaymentError::Permanent`] error.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Reserves `amount` on the card behind `card_token`. A decline is `Ok(Declined)`.
    fn authorize(&self, key: &str, card_token: &str, amount: Money) -> PaymentFuture<AuthOutcome>;

    /// Captures (part of) an authorization. One capture per authorization.
    fn capture(
        &self,
        key: &str,
        authorization_id: &str,
        amount: Money,
    ) -> PaymentFuture<CaptureOutcome>;

    /// Releases an authorization that was not captured.
    fn void(&self, key: &str, authorization_id: &str) -> PaymentFuture<VoidOutcome>;

    /// Returns `amount` of a capture to the card. `payment_id` is a capture id, or an
    /// authorization id whose capture is meant.
    fn refund(&self, key: &str, payment_id: &str, amount: Money) -> PaymentFuture<RefundOutcome>;

    /// What became of the operation sent with `key`, if it reached the gateway at all.
    /// Used to reconcile an operation whose reply timed out.
    fn status(&self, key: &str) -> PaymentFuture<Option<PaymentOpStatus>>;
}

/// The answer to an authorization request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOutcome {
    /// Funds are reserved under `authorization_id`.
    Authorized {
        /// Gateway reference to capture or void later.
        authorization_id: String,
        /// The amount the gateway says it reserved (the saga checks it is the one asked).
        amount: Money,
    },
    /// The issuer (or gateway rules) refused the card. An expected outcome, not an error.
    Declined {
        /// Human-readable reason from the gateway.
        reason: String,
    },
}

/// The answer to a capture request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaptureOutcome {
    /// Money moved; `capture_id` is the reference to refund later.
    Captured {
        /// Gateway reference of the capture.
        capture_id: String,
        /// The amount the gateway says it captured.
        amount: Money,
    },
    /// The gateway refused (authorization voided, amount above the authorization, ...).
    Rejected {
        /// Why.
        reason: String,
    },
}

/// The answer to a void request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoidOutcome {
    /// The authorization is released (also when it already was).
    Voided,
    /// The authorization cannot be voided (unknown, or already captured).
    Rejected {
        /// Why.
        reason: String,
    },
}

/// The answer to a refund request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundOutcome {
    /// Money is on its way back under `refund_id`.
    Refunded {
        /// Gateway reference of the refund.
        refund_id: String,
        /// The amount the gateway says it refunded.
        amount: Money,
    },
    /// The refund is impossible (unknown capture, more than what remains captured).
    Rejected {
        /// Why.
        reason: String,
    },
}

/// The first recorded result of an operation, as reported by [`PaymentGateway::status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentOpStatus {
    /// An authorization succeeded.
    Authorized {
        /// Reference for capture or void.
        authorization_id: String,
        /// Amount reserved.
        amount: Money,
    },
    /// An authorization was declined; nothing is reserved.
    Declined {
        /// Why.
        reason: String,
    },
    /// A capture succeeded.
    Captured {
        /// Reference for refunds.
        capture_id: String,
        /// Amount captured.
        amount: Money,
    },
    /// A void succeeded.
    Voided {
        /// The authorization that was released.
        authorization_id: String,
    },
    /// A refund succeeded.
    Refunded {
        /// Reference of the refund.
        refund_id: String,
        /// Amount refunded.
        amount: Money,
    },
    /// The operation was rejected or failed permanently; nothing moved.
    Rejected {
        /// Why.
        reason: String,
    },
}

impl PaymentOpStatus {
    /// The kind of result, as the wire format names it (`authorized`, `captured`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            PaymentOpStatus::Authorized { .. } => "authorized",
            PaymentOpStatus::Declined { .. } => "declined",
            PaymentOpStatus::Captured { .. } => "captured",
            PaymentOpStatus::Voided { .. } => "voided",
            PaymentOpStatus::Refunded { .. } => "refunded",
            PaymentOpStatus::Rejected { .. } => "rejected",
        }
    }
}

/// Failing to get an answer from the gateway. A decline is not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// No reply in time: the operation may or may not have happened. Reconcile with
    /// [`PaymentGateway::status`] or retry with the same key.
    #[error("payment gateway timed out; outcome unknown")]
    Timeout,
    /// The gateway could not take the request; nothing happened. Retrying may succeed.
    #[error("payment gateway unavailable: {0}")]
    Unavailable(String),
    /// The request can never succeed as sent; retrying is pointless.
    #[error("payment failed permanently: {0}")]
    Permanent(String),
}

impl PaymentError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, PaymentError::Permanent(_))
    }
}

// ---------------------------------------------------------------------------------------
// Gateway replies as saga outcomes. One place decides what each reply means to the saga,
// so the actor only forwards them.
// ---------------------------------------------------------------------------------------

fn error_outcome(err: PaymentError) -> StepOutcome {
    match err {
        PaymentError::Timeout => StepOutcome::TimedOut,
        PaymentError::Unavailable(reason) => StepOutcome::Transient { reason },
        PaymentError::Permanent(reason) => StepOutcome::Permanent { reason },
    }
}

/// The saga outcome of an `authorize` reply: a decline is an expected refusal.
pub fn authorize_step_outcome(reply: Result<AuthOutcome, PaymentError>) -> StepOutcome {
    match reply {
        Ok(AuthOutcome::Authorized {
            authorization_id,
            amount,
        }) => StepOutcome::Authorized {
            authorization_id,
            amount,
        },
        Ok(AuthOutcome::Declined { reason }) => StepOutcome::Refused { reason },
        Err(err) => error_outcome(err),
    }
}

/// The saga outcome of a `capture` reply. A rejected capture can never succeed as sent,
/// which the saga treats like a permanent failure.
pub fn capture_step_outcome(reply: Result<CaptureOutcome, PaymentError>) -> StepOutcome {
    match reply {
        Ok(CaptureOutcome::Captured { capture_id, amount }) => {
            StepOutcome::Captured { capture_id, amount }
        }
        Ok(CaptureOutcome::Rejected { reason }) => StepOutcome::Refused { reason },
        Err(err) => error_outcome(err),
    }
}

/// The saga outcome of a `void` reply.
pub fn void_step_outcome(reply: Result<VoidOutcome, PaymentError>) -> StepOutcome {
    match reply {
        Ok(VoidOutcome::Voided) => StepOutcome::Completed,
        Ok(VoidOutcome::Rejected { reason }) => StepOutcome::Refused { reason },
        Err(err) => error_outcome(err),
    }
}

/// The saga outcome of a `refund` reply.
pub fn refund_step_outcome(reply: Result<RefundOutcome, PaymentError>) -> StepOutcome {
    match reply {
        Ok(RefundOutcome::Refunded { amount, .. }) => StepOutcome::Refunded { amount },
        Ok(RefundOutcome::Rejected { reason }) => StepOutcome::Refused { reason },
        Err(err) => error_outcome(err),
    }
}

/// The saga outcome of a `status` reply used to reconcile the `operation` (the step
/// `Authorize` or `CapturePayment`) in doubt: it took effect (`Authorized` / `Captured`,
/// with the amount the gateway reports, which the saga checks), or nothing of it is in
/// force (`NotFound`: never received, declined or rejected). A result of another kind of
/// operation answers another request: no answer yet (`Transient`), so the look-up is asked
/// again and, past its budget, the saga parks.
pub fn status_step_outcome(
    reply: Result<Option<PaymentOpStatus>, PaymentError>,
    operation: Step,
) -> StepOutcome {
    match (reply, operation) {
        (
            Ok(Some(PaymentOpStatus::Authorized {
                authorization_id,
                amount,
            })),
            Step::Authorize,
        ) => StepOutcome::Authorized {
            authorization_id,
            amount,
        },
        (Ok(Some(PaymentOpStatus::Captured { capture_id, amount })), Step::CapturePayment) => {
            StepOutcome::Captured { capture_id, amount }
        }
        (
            Ok(None | Some(PaymentOpStatus::Declined { .. } | PaymentOpStatus::Rejected { .. })),
            _,
        ) => StepOutcome::NotFound,
        (Ok(Some(other)), _) => StepOutcome::Transient {
            reason: format!(
                "the gateway's look-up of a {} answered with another operation: {}",
                operation.as_str(),
                other.kind()
            ),
        },
        (Err(err), _) => error_outcome(err),
    }
}

#[cfg(test)]
mod tests {
    //! The saga state machine driven against the simulated gateway, the way the actor
    //! will drive it (seller and wallet answered by a script).

    use super::*;
    use crate::domain::account::AccountId;
    use crate::domain::money::Currency;
    use crate::domain::saga::{
        apply, new_booking, next_action, Action, BookingId, BookingRequest, SagaConfig, SagaRecord,
        SagaState,
    };
    use chrono::{DateTime, NaiveDate, Utc};

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::EUR)
    }

    fn instant() -> SimulatedGateway {
        SimulatedGateway::new(SimulatedGatewayConfig {
            latency_min_ms: 0,
            latency_max_ms: 0,
            ..Default::default()
        })
    }

    /// Booking `n`'s id.
    fn booking(n: u128) -> BookingId {
        BookingId(uuid::Uuid::from_u128(n))
    }

    async fn run(gw: &SimulatedGateway, id: BookingId, token: &str) -> SagaRecord {
        let request = BookingRequest {
            account_id: AccountId::demo(1),
            seller: "alpha".into(),
            sku: "hotel-1".into(),
            start: NaiveDate::from_ymd_opt(2027, 1, 10).unwrap(),
            end: NaiveDate::from_ymd_opt(2027, 1, 12).unwrap(),
            wallet_points: eur(1_000),
            card_token: token.into(),
            offer_price: eur(20_000),
            idempotency_key: format!("idem-{id}"),
        };
        let mut r = new_booking(id, request, now()).unwrap();
        let cfg = SagaConfig::default();
        for _ in 0..100 {
            let outcome = match next_action(&r) {
                Action::Done | Action::AwaitOperator { .. } => return r,
                Action::AuthorizePayment {
                    key,
                    card_token,
                    amount,
                } => authorize_step_outcome(gw.authorize(&key, &card_token, amount).await),
                Action::CapturePayment {
                    key,
                    authorization_id,
                    amount,
                } => capture_step_outcome(gw.capture(&key, &authorization_id, amount).await),
                Action::VoidPayment {
                    key,
                    authorization_id,
                } => void_step_outcome(gw.void(&key, &authorization_id).await),
                Action::Refund {
                    key,
                    payment_id,
                    amount,
                } => refund_step_outcome(gw.refund(&key, &payment_id, amount).await),
                Action::ReconcilePayment { key, operation, .. } => {
                    status_step_outcome(gw.status(&key).await, operation)
                }
                Action::Reserve { price, .. } | Action::ReconcileReservation { price, .. } => {
                    StepOutcome::Reserved {
                        reservation_id: "res-1".into(),
                        price,
                    }
                }
                _ => StepOutcome::Completed,
            };
            apply(&mut r, outcome, &cfg, now()).unwrap();
        }
        panic!("saga did not stop");
    }

    #[tokio::test]
    async fn approve_confirms_and_charges_once() {
        let gw = instant();
        let r = run(&gw, booking(1), "tok_approve").await;
        assert_eq!(r.state, SagaState::Confirmed);
        assert_eq!(gw.captured_total(Currency::EUR), Some(eur(19_000)));
        assert!(gw.open_authorizations().is_empty());
    }

    #[tokio::test]
    async fn decline_fails_without_charging() {
        let gw = instant();
        let r = run(&gw, booking(1), "tok_decline").await;
        assert_eq!(r.state, SagaState::Failed);
        assert_eq!(gw.ledger(), GatewayLedger::default());
    }

    #[tokio::test]
    async fn failed_capture_voids_the_authorization() {
        let gw = instant();
        let r = run(&gw, booking(1), "tok_fail_capture").await;
        assert_eq!(r.state, SagaState::Failed);
        assert_eq!(gw.captured_total(Currency::EUR), Some(eur(0)));
        assert_eq!(gw.ledger().voids.len(), 1);
        assert!(gw.open_authorizations().is_empty());
    }

    #[tokio::test]
    async fn capture_that_times_out_after_charging_is_not_charged_twice() {
        let gw = instant();
        gw.inject(PaymentOp::Capture, PaymentFault::TimeoutAfterEffect);
        gw.inject(PaymentOp::Authorize, PaymentFault::TimeoutAfterEffect);
        let r = run(&gw, booking(1), "tok_approve").await;
        assert_eq!(r.state, SagaState::Confirmed);
        assert_eq!(gw.capture_count(&format!("{}:capture", booking(1))), 1);
        assert_eq!(gw.ledger().authorizations.len(), 1);
        assert_eq!(gw.captured_total(Currency::EUR), Some(eur(19_000)));
    }

    #[tokio::test]
    async fn flaky_cards_never_leave_money_in_limbo() {
        let gw = instant();
        let mut parked = Vec::new();
        let mut finals = std::collections::BTreeSet::new();
        for i in 0..30 {
            let id = booking(100 + i);
            let r = run(&gw, id, "tok_flaky").await;
            let captures = gw.capture_count(&format!("{id}:capture"));
            finals.insert(r.state.as_str());
            match r.state {
                SagaState::Confirmed => assert_eq!(captures, 1),
                SagaState::Failed => assert_eq!(captures, 0),
                SagaState::NeedsAttention => {
                    assert!(captures <= 1);
                    parked.push(id);
                }
                other => panic!("unexpected final state {other:?}"),
            }
        }
        assert!(
            finals.contains("confirmed"),
            "some flaky bookings get through: {finals:?}"
        );
        // An authorization still open belongs to a saga an operator has been told about.
        let ledger = gw.ledger();
        for open in gw.open_authorizations() {
            let auth = ledger
                .authorizations
                .iter()
                .find(|a| a.authorization_id == open)
                .unwrap();
            assert!(
                parked
                    .iter()
                    .any(|p| auth.key.starts_with(&format!("{p}:"))),
                "{auth:?} left open"
            );
        }
    }

    #[test]
    fn a_look_up_answering_another_operation_is_no_answer() {
        let authorized = Ok(Some(PaymentOpStatus::Authorized {
            authorization_id: "auth_1".into(),
            amount: eur(100),
        }));
        assert!(matches!(
            status_step_outcome(authorized.clone(), Step::Authorize),
            StepOutcome::Authorized { .. }
        ));
        assert!(matches!(
            status_step_outcome(authorized, Step::CapturePayment),
            StepOutcome::Transient { reason } if reason.contains("authorized")
        ));
        let voided = Ok(Some(PaymentOpStatus::Voided {
            authorization_id: "auth_1".into(),
        }));
        assert!(matches!(
            status_step_outcome(voided, Step::Authorize),
            StepOutcome::Transient { .. }
        ));
        assert_eq!(
            status_step_outcome(Ok(None), Step::CapturePayment),
            StepOutcome::NotFound
        );
    }
}
