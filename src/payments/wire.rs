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
/// Longest error code kept from a reply.
const MAX_CODE_LEN: usize = 64;

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

    /// The error code alone, as what wayfare logs and records of a refusal: the message
    /// is free text a gateway may fill with anything it was sent (a card token), so it
    /// never reaches a log. A code that is not a short `[A-Za-z0-9_.-]` word is replaced by
    /// `unreadable_code`.
    pub fn code(&self) -> String {
        let code = &self.error.code;
        let word = !code.is_empty()
            && code.len() <= MAX_CODE_LEN
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if word {
            code.clone()
        } else {
            "unreadable_code".into()
        }
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
    // serde's messages quote the offending value, which may be anything the gateway was
    // sent (a card token): only where and what kind of error reaches the log.
    serde_json::from_slice(body).map_err(|e| {
        InvalidReply(format!(
            "malformed reply ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
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

/// A 201 to an authorization. The amount is passed on as reported: whether it is the one
/// asked for is the booking saga's rule (`domain::saga`), which undoes the authorization
/// when it is not, instead of leaving it in doubt.
pub fn authorized(reply: WireAuthorization) -> Result<AuthOutcome, InvalidReply> {
    Ok(AuthOutcome::Authorized {
        authorization_id: reference("authorization_id", reply.authorization_id)?,
        amount: reply.amount,
    })
}

/// A 200 to a capture; the amount passed on as reported (see [`authorized`]).
pub fn captured(reply: WireCapture) -> Result<CaptureOutcome, InvalidReply> {
    Ok(CaptureOutcome::Captured {
        capture_id: reference("capture_id", reply.capture_id)?,
        amount: reply.amount,
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

/// A 201 to a refund; the amount passed on as reported (see [`authorized`]).
pub fn refunded(reply: WireRefund) -> Result<RefundOutcome, InvalidReply> {
    Ok(RefundOutcome::Refunded {
        refund_id: reference("refund_id", reply.refund_id)?,
        amount: reply.amount,
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
    fn a_reply_amount_is_passed_on_as_reported() {
        let reply = WireAuthorization {
            authorization_id: "auth_1".into(),
            amount: eur(999),
        };
        assert_eq!(
            authorized(reply),
            Ok(AuthOutcome::Authorized {
                authorization_id: "auth_1".into(),
                amount: eur(999)
            })
        );
        let reply = WireCapture {
            capture_id: "cap_1".into(),
            amount: eur(1_000),
        };
        assert!(captured(reply).is_ok());
    }

    #[test]
    fn references_must_be_short_printable_ascii() {
        for bad in ["", "has space", "é", &"x".repeat(129)] {
            let reply = WireRefund {
                refund_id: bad.to_owned(),
                amount: eur(5),
            };
            let err = refunded(reply).unwrap_err();
            assert!(err.0.starts_with("refund_id:"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn bodies_are_bounded_and_messages_cleaned() {
        let big = vec![b' '; MAX_REPLY_BYTES + 1];
        assert!(parse::<WireVoid>(&big).is_err());
        let e = WireError::new("card_declined", "tok_4242 no\nway");
        assert_eq!(e.code(), "card_declined", "the message never passes");
        let e = WireError::new("tok_4242 echoed\n", "");
        assert_eq!(e.code(), "unreadable_code");
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
