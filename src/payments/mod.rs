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

pub mod simulated;

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
