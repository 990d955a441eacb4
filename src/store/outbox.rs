//! [`Outbox`]: the durable queue of customer emails, as the mailer drains it. Emails
//! enter it with the saga step that causes them ([`super::SagaStore::save`]).

use super::StoreFuture;
use crate::domain::outbox::{AfterFailure, EmailCounts, OutboxEmail};

/// An email taken from the outbox for one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedEmail {
    /// The email.
    pub email: OutboxEmail,
    /// Which claim of it this is (the store's fencing token; 0 where there is none).
    pub(crate) epoch: i64,
    /// Which delivery attempt this is (1 for the first).
    pub attempt: u32,
    /// An earlier attempt ended without its outcome being recorded (a claim that ran out
    /// on another node, or before a crash): the transport may have taken this email
    /// already, so sending it is a possible repeat. False where the store cannot tell.
    pub unresolved_before: bool,
}

/// The outbox contract. Delivery is at least once: an email is removed only after the
/// transport took it, so a crash in between sends it again.
pub trait Outbox: Send + Sync + 'static {
    /// Up to `max` pending emails, oldest first, claimed by this process for one attempt
    /// (with several nodes, no other node sends them while the claim lasts). Unreadable
    /// entries are reported and left for an operator, never dropped.
    fn claim(&self, max: usize) -> StoreFuture<Vec<ClaimedEmail>>;

    /// Removes emails the transport accepted.
    fn mark_sent(&self, sent: Vec<ClaimedEmail>) -> StoreFuture<()>;

    /// Counts a failed attempt with its `reason` and applies the rule
    /// (`domain::outbox::after_failure`): the email waits before its next attempt, or is
    /// parked for an operator and never tried again.
    fn failed(&self, email: ClaimedEmail, reason: &str) -> StoreFuture<AfterFailure>;

    /// The parked emails as of the last [`Outbox::refresh_counts`] (cheap).
    fn counts(&self) -> EmailCounts;

    /// Refreshes what [`Outbox::counts`] answers (every few seconds, by the mailer).
    fn refresh_counts(&self) -> StoreFuture<()>;
}
