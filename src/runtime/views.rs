//! What `Runtime` methods return and take: plain data for callers (and the JSON the HTTP
//! layer sends), built from actor replies.

use serde::Serialize;

use crate::actors::search::SellerOutcome;
use crate::domain::access::Caller;
use crate::domain::money::Money;
use crate::domain::outbox::EmailCounts;
use crate::domain::saga::SagaCounts;
use crate::domain::saga::{
    BookingId, FailureCause, HistoryEntry, PartnerCall, PartnerCalls, SagaRecord, SagaState,
    TraceOrigin,
};
use crate::domain::search::{apply_wallet, Markdown};
use crate::sellers::{Offer, OfferDetails};

/// Health as `/health` reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `unhealthy`.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
    /// Which store `store` checks: `sled` (embedded) or `postgres` (shared by a cluster).
    #[schema(value_type = String, example = "sled")]
    pub backend: &'static str,
    /// Store check: a probe record written and flushed at the last probe, and no I/O
    /// failure since; with `postgres`, also that the shared database answered then.
    pub store: Check,
    /// Milliseconds since the last store probe (probes run every few seconds).
    pub store_probe_age_ms: u64,
    /// Every supervisor within its restart intensity.
    pub supervisors: Check,
    /// Saga figures; parked sagas are listed for operators (they do not make the service
    /// unhealthy: it keeps serving, but someone must look at them).
    #[schema(required = true)]
    pub sagas: Option<SagaCounts>,
    /// Emails parked after their last failed delivery attempt, for an operator (like
    /// parked sagas, they do not make the service unhealthy).
    pub emails: EmailCounts,
    /// Seconds since start.
    pub uptime_secs: u64,
}

/// The cluster as this node sees it (`GET /v1/system/cluster`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// `sled` (one node, no cluster) or `postgres` (nodes sharing the database).
    #[schema(value_type = String, example = "postgres")]
    pub backend: &'static str,
    /// This node's id (`cluster.node_id`).
    pub node: String,
    /// How long a saga lease lasts without renewal, in milliseconds.
    pub lease_ms: u64,
    /// Sagas whose lease this node holds now.
    pub sagas_held_here: usize,
    /// Every node that ever heartbeated, most recent first: a node whose heartbeat is
    /// older than a few leases is gone (its sagas are taken over).
    pub members: Vec<ClusterMember>,
}

/// One node of the cluster.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterMember {
    /// Node id.
    pub id: String,
    /// Where it is reached.
    pub address: String,
    /// Its wayfare version.
    pub version: String,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
    /// Unfinished sagas it holds a live lease on.
    pub sagas_held: i64,
}

/// One health check.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// Whether it passed.
    pub ok: bool,
    /// Why not, when it failed.
    #[schema(required = true)]
    pub detail: Option<String>,
}

impl Health {
    /// True when every check passed.
    pub fn is_ok(&self) -> bool {
        self.store.ok && self.supervisors.ok
    }

    /// What anyone may see: the verdicts and counts, without failure details (paths, OS
    /// errors) or the ids of parked bookings, which are for operators.
    pub fn redacted(mut self) -> Self {
        for check in [&mut self.store, &mut self.supervisors] {
            if check.detail.is_some() {
                check.detail = Some("details need the operator token".into());
            }
        }
        if let Some(sagas) = &mut self.sagas {
            sagas.parked.clear();
        }
        self
    }
}

/// One offer as a caller sees it: the merged offer with the caller's wallet applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OfferView {
    /// Cheapest seller of this SKU.
    pub seller: String,
    /// Product identifier, shared across sellers.
    pub sku: String,
    /// Summary.
    pub title: String,
    /// The seller's price.
    pub price: Money,
    /// Wallet points applied.
    pub markdown: Money,
    /// What the caller pays: max(0, price - wallet).
    pub price_to_pay: Money,
    /// Vertical-specific facts.
    pub details: OfferDetails,
}

/// A search reply.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    /// Merged offers, cheapest first, personalized.
    pub offers: Vec<OfferView>,
    /// One line per seller of the vertical, with its status.
    pub sellers: Vec<SellerOutcome>,
    /// True when the merged result came from the cache (the markdown never does).
    pub cached: bool,
    /// Wallet points usable by the caller (zero without an account).
    #[schema(required = true)]
    pub wallet_available: Option<Money>,
}

pub(crate) fn personalize(offer: &Offer, wallet: Money) -> OfferView {
    let Markdown {
        price,
        markdown,
        price_to_pay,
    } = apply_wallet(offer.price, wallet);
    OfferView {
        seller: offer.seller.clone(),
        sku: offer.sku.clone(),
        title: offer.title.clone(),
        price,
        markdown,
        price_to_pay,
        details: offer.details.clone(),
    }
}

/// A booking as customers see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Booking {
    /// Booking id.
    #[schema(format = Uuid)]
    pub id: String,
    /// Current state.
    pub state: SagaState,
    /// Booking account.
    #[schema(format = Uuid)]
    pub account_id: String,
    /// Seller.
    pub seller: String,
    /// Booked SKU.
    pub sku: String,
    /// Check-in or outbound date.
    pub start: chrono::NaiveDate,
    /// Check-out or return date.
    pub end: chrono::NaiveDate,
    /// Price of the offer.
    pub offer_price: Money,
    /// Wallet points used.
    pub wallet_points: Money,
    /// Why it failed, in customer terms.
    #[schema(required = true)]
    pub failure: Option<String>,
    /// Why it failed, as a stable code to match on: `insufficient_points`,
    /// `payment_declined`, `seller_refused`, `technical`, `customer_cancelled`,
    /// `price_mismatch` (the seller confirmed another price) or `payment_mismatch` (the
    /// gateway reported another amount).
    #[schema(required = true)]
    pub failure_code: Option<&'static str>,
    /// Why an operator must look at it: the internal reason for the operator, a fixed
    /// sentence for the customer.
    #[schema(required = true)]
    pub needs_attention: Option<String>,
    /// The cancellation, once asked for a confirmed booking.
    #[schema(required = true)]
    pub cancellation: Option<CancellationView>,
    /// Timed history of states and steps.
    pub history: Vec<HistoryEntry>,
    /// Every call the booking's saga made to the seller and the gateway, per attempt.
    /// For the operator only (a partner's error text is internal): `null` for a customer.
    #[schema(required = true)]
    pub partner_calls: Option<PartnerCallsView>,
    /// The trace id of the request that created the booking, to look up in a trace
    /// viewer (Jaeger, Tempo); absent when spans were not exported.
    #[schema(required = true)]
    pub trace_id: Option<String>,
}

/// A page of an account's bookings.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BookingPage {
    /// Bookings in booking-id order.
    pub bookings: Vec<Booking>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[schema(required = true, value_type = Option<String>, format = Uuid)]
    pub next_after: Option<BookingId>,
}

/// The cancellation of a booking.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CancellationView {
    /// Cancellation state (`pending`, ..., `cancelled`, `failed`, `needs_attention`).
    pub state: SagaState,
    /// Fee kept by the seller.
    #[schema(required = true)]
    pub seller_fee: Option<Money>,
    /// Refunded to the card.
    #[schema(required = true)]
    pub refund: Option<Money>,
    /// Points credited back to the wallet.
    #[schema(required = true)]
    pub points_restored: Option<Money>,
    /// Timed history.
    pub history: Vec<HistoryEntry>,
    /// The cancellation saga's partner calls, like the booking's: operator only.
    #[schema(required = true)]
    pub partner_calls: Option<PartnerCallsView>,
    /// The trace id of the cancel request (or of the booking, when the cancellation
    /// followed a cancel asked in flight); absent when spans were not exported.
    #[schema(required = true)]
    pub trace_id: Option<String>,
}

/// A saga's partner calls as the operator sees them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartnerCallsView {
    /// Oldest first. A saga keeps its first and its latest calls, up to a bound.
    pub calls: Vec<PartnerCall>,
    /// Calls dropped from between those (a step retried for a long time).
    pub dropped: u64,
}

impl From<PartnerCalls> for PartnerCallsView {
    fn from(c: PartnerCalls) -> Self {
        PartnerCallsView {
            calls: c.calls,
            dropped: c.dropped,
        }
    }
}

/// The trace id in a saga's stored `traceparent` (`00-<trace id>-<span id>-<flags>`),
/// when that trace was sampled: an unsampled one was never exported, so there is nothing
/// to look up.
fn trace_id(origin: Option<&TraceOrigin>) -> Option<String> {
    let mut fields = origin?.traceparent.split('-');
    let id = fields.nth(1)?;
    let flags = u8::from_str_radix(fields.nth(1)?, 16).ok()?;
    (id.len() == 32 && flags & 1 == 1).then(|| id.to_owned())
}

impl Booking {
    pub(crate) fn from_records(r: SagaRecord, cancellation: Option<SagaRecord>) -> Self {
        Booking {
            id: r.saga_id.to_string(),
            state: r.state,
            account_id: r.request.account_id.to_string(),
            seller: r.request.seller,
            sku: r.request.sku,
            start: r.request.start,
            end: r.request.end,
            offer_price: r.request.offer_price,
            wallet_points: r.request.wallet_points,
            failure: r.data.failure_cause.map(|c| c.customer_text().to_owned()),
            failure_code: r.data.failure_cause.map(|c| c.code()),
            needs_attention: r.needs_attention,
            cancellation: cancellation.map(|c| CancellationView {
                state: c.state,
                seller_fee: c.data.seller_fee,
                refund: c.data.refund_amount,
                points_restored: c.data.points_restored,
                trace_id: trace_id(c.trace.as_ref()),
                partner_calls: Some(c.calls.into()),
                history: c.history,
            }),
            trace_id: trace_id(r.trace.as_ref()),
            partner_calls: Some(r.calls.into()),
            history: r.history,
        }
    }

    /// The booking as `caller` may see it. The operator sees everything; a customer sees
    /// no internal text (error messages of partners and stores, panic messages): their
    /// timeline keeps each change of state with a fixed sentence, and a parked booking
    /// says only that staff are on it.
    pub(crate) fn seen_by(mut self, caller: Caller) -> Self {
        if caller == Caller::Operator {
            return self;
        }
        let cause = self
            .failure_code
            .and_then(|code| ALL_CAUSES.iter().find(|c| c.code() == code).copied());
        if self.needs_attention.is_some() {
            self.needs_attention = Some(PARKED_FOR_CUSTOMER.to_owned());
        }
        self.history = customer_timeline(&self.history, cause, false);
        self.partner_calls = None;
        if let Some(c) = &mut self.cancellation {
            c.history = customer_timeline(&c.history, None, true);
            c.partner_calls = None;
        }
        self
    }
}

/// What a customer reads about a parked booking.
pub(crate) const PARKED_FOR_CUSTOMER: &str =
    "held for review by our staff; we will contact you about it";

const ALL_CAUSES: [FailureCause; 7] = [
    FailureCause::InsufficientPoints,
    FailureCause::PaymentDeclined,
    FailureCause::SellerRefused,
    FailureCause::Technical,
    FailureCause::CustomerCancelled,
    FailureCause::PriceMismatch,
    FailureCause::PaymentMismatch,
];

/// A customer's timeline: the entries that changed the state, each with a fixed sentence
/// (retries, partner replies and internal reasons stay in the operator's view).
fn customer_timeline(
    history: &[HistoryEntry],
    cause: Option<FailureCause>,
    cancellation: bool,
) -> Vec<HistoryEntry> {
    let mut out: Vec<HistoryEntry> = Vec::new();
    for entry in history {
        if out.last().is_some_and(|last| last.state == entry.state) {
            continue;
        }
        out.push(HistoryEntry {
            at: entry.at,
            state: entry.state,
            step: None,
            note: customer_sentence(entry.state, cause, cancellation),
        });
    }
    out
}

fn customer_sentence(state: SagaState, cause: Option<FailureCause>, cancellation: bool) -> String {
    let because = |what: &str| match cause {
        Some(c) => format!("{what}: {}", c.customer_text()),
        None => what.to_owned(),
    };
    match (state, cancellation) {
        (SagaState::Pending, false) => "booking requested".into(),
        (SagaState::Pending, true) => "cancellation requested".into(),
        (SagaState::PaymentAuthorized, _) => "payment arranged; reserving with the seller".into(),
        (SagaState::SellerConfirmed, _) => "reservation held; capturing payment".into(),
        (SagaState::Confirmed, _) => "booked and paid".into(),
        (SagaState::Compensating, false) => because("undoing the booking"),
        (SagaState::Compensating, true) => "undoing the cancellation".into(),
        (SagaState::Failed, false) => because("not booked"),
        (SagaState::Failed, true) => "could not be cancelled; the booking stands".into(),
        (SagaState::Cancelled, _) => "cancelled".into(),
        (SagaState::NeedsAttention, _) => PARKED_FOR_CUSTOMER.into(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn entry(state: SagaState, note: &str) -> HistoryEntry {
        HistoryEntry {
            at: Utc::now(),
            state,
            step: None,
            note: note.into(),
        }
    }

    #[test]
    fn a_customer_timeline_keeps_state_changes_and_drops_internal_text() {
        let history = [
            entry(SagaState::Pending, "booking requested"),
            entry(
                SagaState::Pending,
                "authorize attempt 1 failed (gateway 10.0.0.7: connection reset); will retry",
            ),
            entry(
                SagaState::Compensating,
                "compensating: reserve refused: HTTP 409 from https://seller/internal",
            ),
            entry(SagaState::Failed, "failed: seller refused"),
        ];
        let seen = customer_timeline(&history, Some(FailureCause::SellerRefused), false);
        let notes: Vec<&str> = seen.iter().map(|e| e.note.as_str()).collect();
        assert_eq!(
            notes,
            [
                "booking requested",
                "undoing the booking: the seller could not confirm it at the offered price",
                "not booked: the seller could not confirm it at the offered price",
            ]
        );
        assert!(seen
            .iter()
            .all(|e| !e.note.contains("HTTP") && !e.note.contains("10.0.0.7")));
    }

    #[test]
    fn every_cause_has_a_distinct_stable_code() {
        let codes: std::collections::BTreeSet<_> = ALL_CAUSES.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), ALL_CAUSES.len());
    }
}
