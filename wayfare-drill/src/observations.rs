//! What the checker looks at: facts read after the bookings settled, by the drill from the
//! embedded runtime and its world, or by [`crate::HttpObserver`] from a server.

use std::collections::BTreeSet;

use serde::Serialize;
use wayfare::domain::account::AccountId;
use wayfare::domain::money::Money;
use wayfare::domain::saga::{HistoryEntry, SagaState};
use wayfare::payments::GatewayLedger;
use wayfare::sellers::ReservationStatus;
use wayfare::Booking;

/// Ledger keys of the drill's own wallet credits (saga credits use saga keys).
pub const CREDIT_KEY_PREFIX: &str = "chaos-credit-";

/// Everything the checks look at, read after the bookings settled.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Every account of the run.
    pub accounts: Vec<AccountSeen>,
    /// The last view of every booking a key was answered with.
    pub bookings: Vec<BookingSeen>,
    /// Every client idempotency key the run used.
    pub keys: Vec<KeySeen>,
    /// What the payment gateway really did; `None` when its books cannot be read (a
    /// gateway inside a process that was killed), which skips the payment checks.
    pub payments: Option<PaymentsSeen>,
    /// What each seller holds; `None` when their books cannot be read, which skips the
    /// reservation checks.
    pub sellers: Option<Vec<SellerSeen>>,
}

/// The payment gateway's books.
#[derive(Debug, Clone, Default)]
pub struct PaymentsSeen {
    /// Every authorization, capture, void and refund, in order.
    pub ledger: GatewayLedger,
    /// Authorizations neither captured nor voided.
    pub open_authorizations: Vec<String>,
}

/// An account as read at the end.
#[derive(Debug, Clone, Default)]
pub struct AccountSeen {
    /// Account id.
    pub id: String,
    /// Wallet balance in minor units; `None` when the account could not be read.
    pub balance: Option<i64>,
    /// Points held, in minor units.
    pub held: i64,
    /// The whole ledger; `None` when it could not be read to the end.
    pub ledger: Option<Vec<LedgerLine>>,
    /// Booking ids the account lists (at most 100); `None` when unreadable.
    pub listed: Option<Vec<String>>,
    /// What was credited from outside the bookings, in minor units, when the observer knows
    /// it (a demo account's seed credit); `None` sums the ledger's entries under
    /// [`CREDIT_KEY_PREFIX`].
    pub credited: Option<i64>,
}

/// One wallet ledger entry, as much of it as the checks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    /// The entry's idempotency key (a saga key, or the credit's key).
    pub key: String,
    /// Change of the balance, in minor units.
    pub delta: i64,
}

impl AccountSeen {
    pub(crate) fn unreadable(id: AccountId) -> Self {
        AccountSeen {
            id: id.to_string(),
            ..AccountSeen::default()
        }
    }
}

/// A booking as the checks need it.
#[derive(Debug, Clone)]
pub struct BookingSeen {
    /// Booking (saga) id.
    pub id: String,
    /// Account id.
    pub account: String,
    /// Seller name.
    pub seller: String,
    /// State.
    pub state: SagaState,
    /// Why it is parked.
    pub needs_attention: Option<String>,
    /// Offer price.
    pub offer_price: Money,
    /// Wallet points used.
    pub wallet_points: Money,
    /// Its cancellation saga, if one was started.
    pub cancellation: Option<CancellationSeen>,
    /// Its history and its cancellation's, one line per entry (evidence for reports).
    pub history: Vec<String>,
}

/// A cancellation saga as the checks need it.
#[derive(Debug, Clone)]
pub struct CancellationSeen {
    /// State.
    pub state: SagaState,
    /// Points given back.
    pub points_restored: Option<Money>,
    /// Its last history note (why it is parked, when it is).
    pub last_note: Option<String>,
}

impl From<&Booking> for BookingSeen {
    fn from(b: &Booking) -> Self {
        BookingSeen {
            id: b.id.clone(),
            account: b.account_id.clone(),
            seller: b.seller.clone(),
            state: b.state,
            needs_attention: b.needs_attention.clone(),
            offer_price: b.offer_price,
            wallet_points: b.wallet_points,
            cancellation: b.cancellation.as_ref().map(|c| CancellationSeen {
                state: c.state,
                points_restored: c.points_restored,
                last_note: c.history.last().map(|h| h.note.clone()),
            }),
            history: BookingSeen::history_lines(
                b.history
                    .iter()
                    .chain(b.cancellation.iter().flat_map(|c| c.history.iter())),
            ),
        }
    }
}

impl BookingSeen {
    /// One line per history entry: time, state, step, note.
    pub(crate) fn history_lines<'h>(
        entries: impl Iterator<Item = &'h HistoryEntry>,
    ) -> Vec<String> {
        entries
            .map(|h| {
                let step = h.step.map(|s| format!("{s:?}")).unwrap_or_default();
                format!(
                    "{} {:<18} {step:<22} {}",
                    h.at.format("%H:%M:%S%.3f"),
                    h.state.as_str(),
                    h.note
                )
            })
            .collect()
    }

    /// The booking, and its cancellation if any, have finished or are parked.
    pub fn is_settled(&self) -> bool {
        let booking = matches!(
            self.state,
            SagaState::Confirmed | SagaState::Failed | SagaState::Cancelled
        ) || self.state == SagaState::NeedsAttention
            && self
                .needs_attention
                .as_deref()
                .is_some_and(|r| !r.trim().is_empty());
        let cancellation = self.cancellation.as_ref().is_none_or(|c| {
            matches!(
                c.state,
                SagaState::Cancelled | SagaState::Failed | SagaState::NeedsAttention
            )
        });
        booking && cancellation
    }

    /// Why the booking or its cancellation is parked, if it is.
    pub fn parked_reason(&self) -> Option<&str> {
        if self.state == SagaState::NeedsAttention {
            return Some(self.needs_attention.as_deref().unwrap_or("(no reason)"));
        }
        match &self.cancellation {
            Some(c) if c.state == SagaState::NeedsAttention => Some(
                c.last_note
                    .as_deref()
                    .unwrap_or("cancellation parked (no reason)"),
            ),
            _ => None,
        }
    }

    /// The part paid by card.
    pub(crate) fn card_minor(&self) -> i64 {
        self.offer_price.minor - self.wallet_points.minor
    }
}

/// A client idempotency key and every booking id it was answered with.
#[derive(Debug, Clone, Default)]
pub struct KeySeen {
    /// The key.
    pub key: String,
    /// Its account.
    pub account: String,
    /// Booking ids seen for it (more than one is a double booking).
    pub ids: BTreeSet<String>,
}

/// A seller's book.
#[derive(Debug, Clone, Default)]
pub struct SellerSeen {
    /// Seller name.
    pub name: String,
    /// Every key it has seen, with what became of it.
    pub reservations: Vec<(String, ReservationStatus)>,
    /// Reservations it made, by its own count.
    pub reservations_made: u64,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which invariant (`balance_is_ledger`, `capture_only_when_confirmed`, ...).
    pub invariant: &'static str,
    /// What exactly.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}
