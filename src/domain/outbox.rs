//! Customer emails as durable outbox entries, and how each kind is worded.
//!
//! The booking saga writes an [`OutboxEmail`] in the same store write as the transition that
//! causes it (confirmed, failed, cancelled), so an email is never lost nor sent for a state
//! that was not recorded. The Mailer drains the outbox at least once; the entry id is
//! deterministic so a replayed write does not create a second entry. Bodies never contain
//! internal error text, only customer-safe facts.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::money::Money;

/// Which customer email this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailKind {
    /// The booking is confirmed and paid.
    Confirmed,
    /// The booking could not be completed; nothing is charged.
    Failed,
    /// The booking was cancelled (refund and points as stated).
    Cancelled,
}

impl EmailKind {
    /// Stable lower-case name, used in entry ids and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            EmailKind::Confirmed => "confirmed",
            EmailKind::Failed => "failed",
            EmailKind::Cancelled => "cancelled",
        }
    }
}

/// One email waiting in the outbox. Plain fields only, so bincode can encode it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEmail {
    /// Deterministic id (`"{saga_id}:email:{kind}"`): writing it twice is harmless.
    pub id: String,
    /// The booking this email is about.
    pub booking_id: String,
    /// The customer's account.
    pub account_id: String,
    /// What happened.
    pub kind: EmailKind,
    /// Recipient address.
    pub to: String,
    /// Rendered subject line.
    pub subject: String,
    /// Rendered plain-text body.
    pub body: String,
    /// When the entry was written.
    pub created_at: DateTime<Utc>,
    /// Delivery attempts so far; the Mailer bumps it and gives up past its own bound.
    pub attempts: u32,
}

impl OutboxEmail {
    /// The email's `Message-ID` (RFC 5322 `<left@right>`), derived from its outbox id
    /// alone, so every attempt at the same email carries the same one and a receiving mail
    /// system drops a repeat. The id's `:` separators, not allowed on the left, become `.`.
    pub fn message_id(&self) -> String {
        let left: String = self
            .id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '.'
                }
            })
            .collect();
        format!("<{left}@wayfare.invalid>")
    }
}

/// The customer-safe facts an email may mention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailFacts {
    /// The booking id shown to the customer.
    pub booking_id: String,
    /// Seller name.
    pub seller: String,
    /// What was booked (hotel room or flight SKU).
    pub sku: String,
    /// Check-in (hotels) or travel date (flights).
    pub start: NaiveDate,
    /// Check-out (hotels) or return date (flights; equal to `start` for one-way).
    pub end: NaiveDate,
    /// The offer price.
    pub price: Money,
    /// Part of the price paid with wallet points.
    pub points_used: Money,
    /// Customer-facing explanation for a failure, if any.
    pub reason: Option<String>,
    /// Money returned to the card on cancellation.
    pub refund: Option<Money>,
    /// Points returned to the wallet on cancellation.
    pub points_restored: Option<Money>,
    /// Cancellation fee kept by the seller.
    pub fee: Option<Money>,
}

/// A subject line and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Words the email of `kind` from `facts`.
pub fn render(kind: EmailKind, facts: &EmailFacts) -> RenderedEmail {
    let what = format!(
        "{} from {} ({} to {})",
        facts.sku, facts.seller, facts.start, facts.end
    );
    match kind {
        EmailKind::Confirmed => {
            let mut body = format!(
                "Your booking {} is confirmed.\n\n{what}\nPrice: {}\n",
                facts.booking_id, facts.price
            );
            if facts.points_used.minor > 0 {
                body.push_str(&format!("Paid with wallet points: {}\n", facts.points_used));
            }
            body.push_str("\nThank you for booking with wayfare.\n");
            RenderedEmail {
                subject: format!("Booking {} confirmed", facts.booking_id),
                body,
            }
        }
        EmailKind::Failed => {
            let reason = facts.reason.as_deref().unwrap_or("a technical problem");
            let body = format!(
                "We could not complete your booking {}: {reason}.\n\n{what}\n\n\
                 Nothing has been charged: any card authorization and wallet points held \
                 for this booking have been released.\n",
                facts.booking_id
            );
            RenderedEmail {
                subject: format!("Booking {} could not be completed", facts.booking_id),
                body,
            }
        }
        EmailKind::Cancelled => {
            let mut body = format!(
                "Your booking {} has been cancelled.\n\n{what}\n",
                facts.booking_id
            );
            if let Some(fee) = facts.fee.filter(|f| f.minor > 0) {
                body.push_str(&format!("Cancellation fee: {fee}\n"));
            }
            if let Some(refund) = facts.refund.filter(|r| r.minor > 0) {
                body.push_str(&format!("Refunded to your card: {refund}\n"));
            }
            if let Some(points) = facts.points_restored.filter(|p| p.minor > 0) {
                body.push_str(&format!("Points returned to your wallet: {points}\n"));
            }
            if facts.fee.is_none() && facts.refund.is_none() {
                body.push_str("Nothing has been charged.\n");
            }
            RenderedEmail {
                subject: format!("Booking {} cancelled", facts.booking_id),
                body,
            }
        }
    }
}

impl OutboxEmail {
    /// A new outbox entry for the saga `saga_id`, rendered from `facts`.
    pub fn new(
        saga_id: &str,
        kind: EmailKind,
        facts: &EmailFacts,
        account_id: &str,
        to: &str,
        now: DateTime<Utc>,
    ) -> Self {
        let RenderedEmail { subject, body } = render(kind, facts);
        OutboxEmail {
            id: format!("{saga_id}:email:{}", kind.as_str()),
            booking_id: facts.booking_id.clone(),
            account_id: account_id.to_owned(),
            kind,
            to: to.to_owned(),
            subject,
            body,
            created_at: now,
            attempts: 0,
        }
    }
}

/// Delivery attempts an email gets before it is parked for an operator: a transport that
/// keeps refusing one email must not retry it forever.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 8;
/// Wait after the first failed attempt; doubled after each later one, up to
/// [`RETRY_WAIT_CAP`] (so the attempts of an email span about four minutes).
pub const FIRST_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest wait between two attempts.
pub const RETRY_WAIT_CAP: std::time::Duration = std::time::Duration::from_secs(300);

/// What follows a failed delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again once this has passed.
    RetryAfter(std::time::Duration),
    /// Stop trying: park the email with its last error for an operator.
    Park,
}

/// The rule after the `attempt`-th delivery attempt (1 for the first) failed.
pub fn after_failure(attempt: u32) -> AfterFailure {
    if attempt >= MAX_DELIVERY_ATTEMPTS {
        return AfterFailure::Park;
    }
    let doublings = attempt.saturating_sub(1).min(31);
    AfterFailure::RetryAfter(
        FIRST_RETRY_WAIT
            .saturating_mul(1u32 << doublings)
            .min(RETRY_WAIT_CAP),
    )
}

/// An email parked after [`MAX_DELIVERY_ATTEMPTS`] failed attempts, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParkedEmail {
    /// Email id.
    pub id: String,
    /// The booking it is about.
    pub booking_id: String,
    /// What it is (`confirmed`, `failed`, `cancelled`).
    #[schema(value_type = String)]
    pub kind: EmailKind,
    /// The last delivery error.
    pub reason: String,
}

impl ParkedEmail {
    /// `email`, parked because of `reason`.
    pub fn of(email: &OutboxEmail, reason: &str) -> Self {
        ParkedEmail {
            id: email.id.clone(),
            booking_id: email.booking_id.clone(),
            kind: email.kind,
            reason: reason.to_owned(),
        }
    }
}

/// Parked emails, for `/health`, metrics and the console.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EmailCounts {
    /// How many emails are parked (with several nodes: over the whole cluster).
    pub parked: u64,
    /// The first parked emails, oldest first (at most [`PARKED_EMAILS_LISTED`]).
    pub parked_listed: Vec<ParkedEmail>,
}

/// Parked emails listed in [`EmailCounts`].
pub const PARKED_EMAILS_LISTED: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;

    fn facts() -> EmailFacts {
        EmailFacts {
            booking_id: "b-1".into(),
            seller: "alpha".into(),
            sku: "hotel-42-dbl".into(),
            start: NaiveDate::from_ymd_opt(2027, 3, 1).unwrap(),
            end: NaiveDate::from_ymd_opt(2027, 3, 4).unwrap(),
            price: Money::new(30_000, Currency::EUR),
            points_used: Money::new(5_000, Currency::EUR),
            reason: None,
            refund: None,
            points_restored: None,
            fee: None,
        }
    }

    #[test]
    fn the_message_id_is_the_outbox_id_in_rfc_5322_shape() {
        let email = |id: &str| OutboxEmail {
            id: id.into(),
            booking_id: "b-1".into(),
            account_id: "a-1".into(),
            kind: EmailKind::Confirmed,
            to: "ann@example.com".into(),
            subject: "s".into(),
            body: "b".into(),
            created_at: Utc::now(),
            attempts: 0,
        };
        let id = "0b7f9c1e-1111-4222-8333-444455556666:email:confirmed";
        let message_id = email(id).message_id();
        assert_eq!(
            message_id,
            "<0b7f9c1e-1111-4222-8333-444455556666.email.confirmed@wayfare.invalid>"
        );
        // Every attempt at one email carries the same id; another email another.
        assert_eq!(email(id).message_id(), message_id);
        assert_ne!(
            email(&id.replace("confirmed", "cancelled")).message_id(),
            message_id
        );
        // Only atext and dots on the left, whatever the id holds.
        let odd = email("a b<c>@d\"e:f").message_id();
        let left = &odd[1..odd.find('@').unwrap()];
        assert!(
            left.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
            "{odd}"
        );
    }

    #[test]
    fn renders_each_kind() {
        let c = render(EmailKind::Confirmed, &facts());
        assert_eq!(c.subject, "Booking b-1 confirmed");
        assert!(c.body.contains("300.00 EUR"));
        assert!(c.body.contains("wallet points: 50.00 EUR"));

        let f = render(
            EmailKind::Failed,
            &EmailFacts {
                reason: Some("your card was declined".into()),
                ..facts()
            },
        );
        assert!(f.subject.contains("could not be completed"));
        assert!(f.body.contains("your card was declined"));
        assert!(f.body.contains("Nothing has been charged"));

        let x = render(
            EmailKind::Cancelled,
            &EmailFacts {
                fee: Some(Money::new(2_000, Currency::EUR)),
                refund: Some(Money::new(23_000, Currency::EUR)),
                points_restored: Some(Money::new(5_000, Currency::EUR)),
                ..facts()
            },
        );
        assert!(x.body.contains("Cancellation fee: 20.00 EUR"));
        assert!(x.body.contains("Refunded to your card: 230.00 EUR"));
        assert!(x.body.contains("Points returned to your wallet: 50.00 EUR"));
    }

    #[test]
    fn entry_id_is_deterministic_and_roundtrips_through_bincode() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let e = OutboxEmail::new(
            "saga-1",
            EmailKind::Confirmed,
            &facts(),
            "acc-1",
            "a@example.com",
            now,
        );
        assert_eq!(e.id, "saga-1:email:confirmed");
        assert_eq!(
            e,
            OutboxEmail::new(
                "saga-1",
                EmailKind::Confirmed,
                &facts(),
                "acc-1",
                "a@example.com",
                now
            )
        );
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&e, cfg).unwrap();
        let (back, _): (OutboxEmail, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn retries_back_off_exponentially_and_stop() {
        use std::time::Duration;
        assert_eq!(
            after_failure(1),
            AfterFailure::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            after_failure(2),
            AfterFailure::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            after_failure(3),
            AfterFailure::RetryAfter(Duration::from_secs(4))
        );
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        while let AfterFailure::RetryAfter(wait) = after_failure(attempt) {
            assert!(wait <= RETRY_WAIT_CAP);
            waited += wait;
            attempt += 1;
        }
        assert_eq!(
            attempt, MAX_DELIVERY_ATTEMPTS,
            "parked after the last attempt"
        );
        assert!(waited < Duration::from_secs(600), "{waited:?}");
        // Counts from a store that was bumped past the bound park too, never overflow.
        assert_eq!(after_failure(u32::MAX), AfterFailure::Park);
    }
}
