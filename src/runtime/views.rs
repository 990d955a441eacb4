//! What `Runtime` methods return and take: plain data for callers (and the JSON the HTTP
//! layer sends), built from actor replies.

use serde::Serialize;

use crate::actors::coordinator::SagaCounts;
use crate::actors::search::SellerOutcome;
use crate::domain::money::Money;
use crate::domain::saga::{BookingId, HistoryEntry, SagaRecord, SagaState};
use crate::domain::search::{apply_wallet, Markdown};
use crate::sellers::{Offer, OfferDetails};

/// Health as `/health` reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `unhealthy`.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
    /// Store check: a probe record written and flushed at the last probe, and no I/O
    /// failure since.
    pub store: Check,
    /// Milliseconds since the last store probe (probes run every few seconds).
    pub store_probe_age_ms: u64,
    /// Every supervisor within its restart intensity.
    pub supervisors: Check,
    /// Saga figures; parked sagas are listed for operators (they do not make the service
    /// unhealthy: it keeps serving, but someone must look at them).
    #[schema(required = true)]
    pub sagas: Option<SagaCounts>,
    /// Seconds since start.
    pub uptime_secs: u64,
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
    /// Why an operator must look at it.
    #[schema(required = true)]
    pub needs_attention: Option<String>,
    /// The cancellation, once asked for a confirmed booking.
    #[schema(required = true)]
    pub cancellation: Option<CancellationView>,
    /// Timed history of states and steps.
    pub history: Vec<HistoryEntry>,
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
            needs_attention: r.needs_attention,
            cancellation: cancellation.map(|c| CancellationView {
                state: c.state,
                seller_fee: c.data.seller_fee,
                refund: c.data.refund_amount,
                points_restored: c.data.points_restored,
                history: c.history,
            }),
            history: r.history,
        }
    }
}
