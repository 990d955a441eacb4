//! The JSON wire format between wayfare and an HTTP payment gateway
//! (`docs/payment-wire-format.md`), and the validation that turns an untrusted reply into
//! [`PaymentGateway`](super::PaymentGateway) outcomes.
//!
//! The format follows how card gateways work: an authorization with manual capture, then
//! capture, void or refund by reference, every mutating call under an `Idempotency-Key`,
//! and a look-up by that key to reconcile a call whose reply was lost. Amounts travel as
//! integer minor units with their currency. Replies are parsed into the `Wire*` structs
//! (unknown fields ignored, so a gateway may add some) and then checked field by field;
//! the error names the field.

use serde::{Deserialize, Serialize};

use super::{AuthOutcome, CaptureOutcome, PaymentOpStatus, RefundOutcome, VoidOutcome};
use crate::domain::money::{Currency, Money};

/// Largest reply body accepted, in bytes. Gateway replies are small; anything bigger is
/// refused unread.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
/// Longest gateway reference (authorization, capture or refund id) accepted.
pub const MAX_REFERENCE_LEN: usize = 128;
/// Longest human message kept from a reply; the rest is cut.
const MAX_MESSAGE_CHARS: usize = 200;

/// Body of `POST /v1/authorizations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBody {
    /// The card, as a token from the gateway's card vault.
    pub card_token: String,
    /// Amount to reserve.
    pub amount: Money,
}

/// Body of `POST /v1/authorizations/{id}/capture`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    /// Amount to capture: at most the authorized amount.
    pub amount: Money,
}

/// Body of `POST /v1/refunds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// A capture id, or an authorization id whose capture is meant.
    pub payment_id: String,
    /// Amount to return: at most what remains captured.
    pub amount: Money,
}

/// Why a card was declined (HTTP 402), as the gateway names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineCode {
    /// The issuer refused without a reason.
    CardDeclined,
    /// Not enough funds or credit.
    InsufficientFunds,
    /// The card has expired.
    ExpiredCard,
    /// The card's security code is wrong.
    IncorrectCvc,
    /// The issuer suspects fraud.
    Fraudulent,
}

impl DeclineCode {
    /// The code as sent on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeclineCode::CardDeclined => "card_declined",
            DeclineCode::InsufficientFunds => "insufficient_funds",
            DeclineCode::ExpiredCard => "expired_card",
            DeclineCode::IncorrectCvc => "incorrect_cvc",
            DeclineCode::Fraudulent => "fraudulent",
        }
    }
}

/// The body of every 4xx reply: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// What went wrong.
    pub error: WireErrorBody,
}

/// The inside of a [`WireError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireErrorBody {
    /// Stable machine-readable code (`card_declined`, `authorization_voided`, ...).
    pub code: String,
    /// Human sentence.
    #[serde(default)]
    pub message: String,
}

impl WireError {
    /// A reply body for `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        WireError {
            error: WireErrorBody {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }

    /// `code: message`, bounded and stripped of control characters (it reaches logs).
    pub fn reason(&self) -> String {
        let text = if self.error.message.is_empty() {
            self.error.code.clone()
        } else {
            format!("{}: {}", self.error.code, self.error.message)
        };
        clean(&text)
    }
}

/// The reply to a successful authorization (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAuthorization {
    /// Gateway reference for capture or void.
    pub authorization_id: String,
    /// Amount reserved.
    pub amount: Money,
}

/// The reply to a successful capture (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCapture {
    /// Gateway reference for refunds.
    pub capture_id: String,
    /// Amount captured.
    pub amount: Money,
}

/// The reply to a successful void (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireVoid {
    /// The authorization released.
    pub authorization_id: String,
}

/// The reply to a successful refund (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRefund {
    /// Gateway reference of the refund.
    pub refund_id: String,
    /// Amount returned.
    pub amount: Money,
}

/// The reply to `GET /v1/operations/{key}` (200): the first result of that key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum WireOperation {
    /// An authorization took effect.
    Authorized {
        /// Reference for capture or void.
        authorization_id: String,
        /// Amount reserved.
        amount: Money,
    },
    /// An authorization was declined.
    Declined {
        /// The decline code and message.
        reason: String,
    },
    /// A capture took effect.
    Captured {
        /// Reference for refunds.
        capture_id: String,
        /// Amount captured.
        amount: Money,
    },
    /// A void took effect.
    Voided {
        /// The authorization released.
        authorization_id: String,
    },
    /// A refund took effect.
    Refunded {
        /// Reference of the refund.
        refund_id: String,
        /// Amount returned.
        amount: Money,
    },
    /// The operation was refused; nothing moved.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// A reply that is not what the format promises; names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gateway reply: {0}")]
pub struct InvalidReply(pub String);

/// Parses a reply body of at most [`MAX_REPLY_BYTES`].
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, InvalidReply> {
    if body.len() > MAX_REPLY_BYTES {
        return Err(InvalidReply(format!(
            "body of {} bytes exceeds {MAX_REPLY_BYTES}",
            body.len()
        )));
    }
    serde_json::from_slice(body).map_err(|e| InvalidReply(clean(&e.to_string())))
}

/// A gateway reference: 1..=128 printable ASCII characters.
fn reference(field: &str, id: String) -> Result<String, InvalidReply> {
    if id.is_empty() || id.len() > MAX_REFERENCE_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidReply(format!(
            "{field}: must be 1 to {MAX_REFERENCE_LEN} printable ASCII characters"
        )));
    }
    Ok(id)
}

/// The amount in a reply must be the one asked for: a gateway that moved another amount
/// is not trusted with the booking.
fn same_amount(field: &str, got: Money, asked: Money) -> Result<(), InvalidReply> {
    if got != asked {
        return Err(InvalidReply(format!(
            "{field}: {} {} differs from the {} {} asked for",
            got.minor, got.currency, asked.minor, asked.currency
        )));
    }
    Ok(())
}

/// A reply amount on its own (status look-ups): positive, in `currency`.
fn plausible_amount(field: &str, got: Money, currency: Currency) -> Result<Money, InvalidReply> {
    if got.currency != currency || got.minor <= 0 {
        return Err(InvalidReply(format!(
            "{field}: {} {} is not a positive amount in {currency}",
            got.minor, got.currency
        )));
    }
    Ok(got)
}

/// A 201 to an authorization for `asked`.
pub fn authorized(reply: WireAuthorization, asked: Money) -> Result<AuthOutcome, InvalidReply> {
    same_amount("amount", reply.amount, asked)?;
    Ok(AuthOutcome::Authorized {
        authorization_id: reference("authorization_id", reply.authorization_id)?,
    })
}

/// A 200 to a capture of `asked`.
pub fn captured(reply: WireCapture, asked: Money) -> Result<CaptureOutcome, InvalidReply> {
    same_amount("amount", reply.amount, asked)?;
    Ok(CaptureOutcome::Captured {
        capture_id: reference("capture_id", reply.capture_id)?,
    })
}

/// A 200 to a void of `authorization_id`.
pub fn voided(reply: WireVoid, authorization_id: &str) -> Result<VoidOutcome, InvalidReply> {
    if reply.authorization_id != authorization_id {
        return Err(InvalidReply(
            "authorization_id: not the authorization voided".into(),
        ));
    }
    Ok(VoidOutcome::Voided)
}

/// A 201 to a refund of `asked`.
pub fn refunded(reply: WireRefund, asked: Money) -> Result<RefundOutcome, InvalidReply> {
    same_amount("amount", reply.amount, asked)?;
    Ok(RefundOutcome::Refunded {
        refund_id: reference("refund_id", reply.refund_id)?,
    })
}

/// A 200 to a status look-up, checked like the replies it stands for.
pub fn operation(
    reply: WireOperation,
    currency: Currency,
) -> Result<PaymentOpStatus, InvalidReply> {
    Ok(match reply {
        WireOperation::Authorized {
            authorization_id,
            amount,
        } => PaymentOpStatus::Authorized {
            authorization_id: reference("authorization_id", authorization_id)?,
            amount: plausible_amount("amount", amount, currency)?,
        },
        WireOperation::Declined { reason } => PaymentOpStatus::Declined {
            reason: clean(&reason),
        },
        WireOperation::Captured { capture_id, amount } => PaymentOpStatus::Captured {
            capture_id: reference("capture_id", capture_id)?,
            amount: plausible_amount("amount", amount, currency)?,
        },
        WireOperation::Voided { authorization_id } => PaymentOpStatus::Voided {
            authorization_id: reference("authorization_id", authorization_id)?,
        },
        WireOperation::Refunded { refund_id, amount } => PaymentOpStatus::Refunded {
            refund_id: reference("refund_id", refund_id)?,
            amount: plausible_amount("amount", amount, currency)?,
        },
        WireOperation::Rejected { reason } => PaymentOpStatus::Rejected {
            reason: clean(&reason),
        },
    })
}

/// Text from the gateway made safe for logs and records: control characters replaced,
/// length bounded.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::EUR)
    }

    #[test]
    fn a_reply_for_another_amount_is_refused() {
        let reply = WireAuthorization {
            authorization_id: "auth_1".into(),
            amount: eur(999),
        };
        let err = authorized(reply, eur(1_000)).unwrap_err();
        assert!(err.0.starts_with("amount:"), "{err}");
        let reply = WireCapture {
            capture_id: "cap_1".into(),
            amount: eur(1_000),
        };
        assert!(captured(reply, eur(1_000)).is_ok());
    }

    #[test]
    fn references_must_be_short_printable_ascii() {
        for bad in ["", "has space", "é", &"x".repeat(129)] {
            let reply = WireRefund {
                refund_id: bad.to_owned(),
                amount: eur(5),
            };
            let err = refunded(reply, eur(5)).unwrap_err();
            assert!(err.0.starts_with("refund_id:"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn bodies_are_bounded_and_messages_cleaned() {
        let big = vec![b' '; MAX_REPLY_BYTES + 1];
        assert!(parse::<WireVoid>(&big).is_err());
        let e = WireError::new("card_declined", "no\nway");
        assert_eq!(e.reason(), "card_declined: no\u{fffd}way");
        let op: WireOperation = parse(
            br#"{"status":"captured","capture_id":"c1","amount":{"minor":5,"currency":"EUR"}}"#,
        )
        .unwrap();
        assert!(matches!(
            operation(op, Currency::EUR),
            Ok(PaymentOpStatus::Captured { .. })
        ));
        let op: WireOperation = parse(
            br#"{"status":"captured","capture_id":"c1","amount":{"minor":-5,"currency":"EUR"}}"#,
        )
        .unwrap();
        assert!(operation(op, Currency::EUR).is_err());
        assert!(parse::<WireOperation>(br#"{"status":"teleported"}"#).is_err());
    }
}
