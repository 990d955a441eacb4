//! What the simulated gateway really did, for tests and invariant checks.

use serde::{Deserialize, Serialize};

use crate::domain::money::Money;

/// One authorization that really happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAuthorization {
    /// Idempotency key of the request.
    pub key: String,
    /// Gateway reference.
    pub authorization_id: String,
    /// Card used.
    pub card_token: String,
    /// Amount reserved.
    pub amount: Money,
}

/// One capture that really happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCapture {
    /// Idempotency key of the request.
    pub key: String,
    /// Gateway reference.
    pub capture_id: String,
    /// Authorization it consumed.
    pub authorization_id: String,
    /// Amount moved.
    pub amount: Money,
}

/// One void that really happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerVoid {
    /// Idempotency key of the request.
    pub key: String,
    /// Authorization released.
    pub authorization_id: String,
}

/// One refund that really happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRefund {
    /// Idempotency key of the request.
    pub key: String,
    /// Gateway reference.
    pub refund_id: String,
    /// Capture it returns money from.
    pub capture_id: String,
    /// Amount returned.
    pub amount: Money,
}

/// Everything the simulated gateway really did, in order, for tests and invariant checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayLedger {
    /// Successful authorizations.
    pub authorizations: Vec<LedgerAuthorization>,
    /// Successful captures.
    pub captures: Vec<LedgerCapture>,
    /// Successful voids (a repeated void of the same authorization is not a new row).
    pub voids: Vec<LedgerVoid>,
    /// Successful refunds.
    pub refunds: Vec<LedgerRefund>,
}
