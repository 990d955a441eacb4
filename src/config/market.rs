//! `[search]`, `[[sellers]]`, `[bookings]` and `[payments]`: the marketplace side, from
//! the search fan-out to the sellers it reaches, the booking sagas and the card gateway
//! they pay through.

use serde::{Deserialize, Serialize};

use super::adapters::{AdapterConfig, GatewayAdapterConfig};
use crate::domain::saga::SagaConfig;
use crate::domain::search_cache::SearchCacheConfig;
use crate::payments::http::HttpGatewayConfig;
use crate::payments::simulated::SimulatedGatewayConfig;
use crate::sellers::http::HttpSellerConfig;
use crate::sellers::simulated::SimulatedSellerConfig;
use crate::sellers::Vertical;

/// `[search]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Aggregator actors; 0 means one per core.
    pub aggregators: usize,
    /// How long a search waits for sellers, in ms; it answers with what arrived.
    pub deadline_ms: u64,
    /// Requests queued or in flight per aggregator.
    pub mailbox_capacity: usize,
    /// The merged-result cache of each aggregator.
    pub cache: SearchCacheConfig,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            aggregators: 0,
            deadline_ms: 1000,
            mailbox_capacity: 4096,
            cache: SearchCacheConfig::default(),
        }
    }
}

/// Which implementation talks to a seller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SellerKind {
    /// In-process simulated seller (`[sellers.simulated]`).
    Simulated,
    /// JSON over HTTP (`[sellers.http]`), wire format in docs/seller-wire-format.md.
    Http,
}

/// `[[sellers]]`: one seller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SellerEntry {
    /// Unique name (letters, digits, `-`, `_`), used in offers, metrics and logs.
    pub name: String,
    /// Implementation.
    pub kind: SellerKind,
    /// Verticals it serves.
    #[serde(default = "all_verticals")]
    pub verticals: Vec<Vertical>,
    /// Settings of a simulated seller (its `name` is taken from the entry).
    #[serde(default)]
    pub simulated: SimulatedSellerConfig,
    /// Settings of an HTTP seller (its `name` is taken from the entry).
    #[serde(default)]
    pub http: HttpSellerConfig,
    /// Timeouts, retries, breaker, bulkhead, look-to-book.
    #[serde(default)]
    pub adapter: AdapterConfig,
}

fn all_verticals() -> Vec<Vertical> {
    vec![Vertical::Hotel, Vertical::Flight]
}

/// `[bookings]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BookingsConfig {
    /// Sagas running at once; new bookings beyond it get 503.
    pub max_in_flight: usize,
    /// Deadline of one saga step's call (seller, gateway, wallet), in ms. A step without an
    /// answer by then has an unknown outcome and is reconciled.
    pub step_timeout_ms: u64,
    /// Requests queued or in flight at the coordinator.
    pub mailbox_capacity: usize,
    /// Highest offer price a booking may carry, in minor units of the wallet currency;
    /// an order above it is refused (400) before anything reaches a seller or the gateway.
    pub max_offer_price_minor: i64,
    /// Retry budgets and backoff of saga steps.
    pub saga: SagaConfig,
}

impl Default for BookingsConfig {
    fn default() -> Self {
        BookingsConfig {
            max_in_flight: 10_000,
            step_timeout_ms: 5_000,
            mailbox_capacity: 4096,
            max_offer_price_minor: 10_000_000,
            saga: SagaConfig::default(),
        }
    }
}

/// Which card gateway takes the payments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentsKind {
    /// In-process simulated gateway (`[payments.simulated]`): demos and tests only;
    /// `--production` refuses it.
    #[default]
    Simulated,
    /// A gateway over JSON/HTTP (`[payments.http]`), wire format in
    /// docs/payment-wire-format.md.
    Http,
}

/// `[payments]`: the card gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// Implementation.
    pub kind: PaymentsKind,
    /// Settings of the simulated gateway.
    pub simulated: SimulatedGatewayConfig,
    /// Settings of the HTTP gateway.
    pub http: HttpGatewayConfig,
    /// Timeout, breaker and bulkhead of the adapter every gateway call goes through.
    pub adapter: GatewayAdapterConfig,
}
