//! `Runtime`: the one public doorway. HTTP handlers, examples and embedding programs call
//! the same typed async methods; each turns into a message to a supervised actor, with
//! that actor kind's deadline.
//!
//! The methods are split by area: `accounts.rs`, `search.rs`, `bookings.rs`, `system.rs`
//! (health, figures, shutdown); `start/` wires the supervision tree (one function per subtree in `start/subtrees.rs`); `views.rs` holds
//! what the methods return.
//!
//! `Runtime::start` must run inside an actix system (`#[actix_web::main]`,
//! `#[actix_rt::main]` or `actix_rt::System::new().block_on(..)`): actors live on arbiters.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_rt::Arbiter;

mod accounts;
mod bookings;
mod partners;
mod search;
mod search_json;
mod start;
mod system;
mod views;

pub use crate::domain::booking::BookingOrder;
pub(crate) use search_json::RenderSlot;
pub use views::{
    Booking, BookingPage, CancellationView, Check, ClusterMember, ClusterView, Health, OfferView,
    PartnerCallsView, SearchResponse,
};

use crate::actors::account::AccountShard;
use crate::actors::coordinator::SagaCoordinator;
use crate::actors::guard::PartnerStats;
use crate::actors::notify::{MailTransport, MailerStats};
use crate::actors::search::{SearchAggregator, SearchStats, SearchView};
use crate::actors::seller::AdapterConfig;
use crate::config::Config;
use crate::domain::account::AccountId;
use crate::error::Error;
use crate::faults::FaultCounters;
use crate::payments::PaymentGateway;
use crate::sellers::{SellerApi, Vertical};
use crate::store::Store;
use crate::supervisor::{ActorHandle, SupervisorRef};

/// A running wayfare: the supervision tree, its actors and the store.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

struct Inner {
    config: Config,
    store: Arc<dyn Store>,
    shards: Vec<ActorHandle<AccountShard>>,
    /// The read model the shards publish into (see `accounts.rs`).
    account_reads: AccountReads,
    aggregators: Vec<ActorHandle<SearchAggregator>>,
    /// Each aggregator's cache view, by the same index: fresh hits are read here.
    search_views: Vec<Arc<SearchView>>,
    sellers: Vec<(String, Arc<PartnerStats>)>,
    /// Figures of the payment gateway's adapter.
    gateway_stats: Arc<PartnerStats>,
    search_stats: Arc<SearchStats>,
    coordinator: ActorHandle<SagaCoordinator>,
    /// What the sagas share; the runtime reads their tally and supervisor from it.
    saga_deps: Arc<crate::actors::booking::SagaDeps>,
    mailer_stats: Arc<MailerStats>,
    seller_names: Vec<String>,
    root: SupervisorRef,
    arbiters: Mutex<Vec<Arbiter>>,
    started: Instant,
    /// The store's health as last probed.
    probe: Arc<system::StoreProbe>,
    /// Tasks stopped at shutdown: the store probe.
    background: Mutex<Vec<actix_rt::task::JoinHandle<()>>>,
    /// The accounts, for what needs no shard (key owners, demo seeding marks).
    accounts: Arc<dyn crate::store::AccountStore>,
    /// The outbox, for its parked-email counts.
    outbox: Arc<dyn crate::store::Outbox>,
    /// Faults fired on purpose (`[faults]`).
    faults: Arc<FaultCounters>,
}

/// The accounts' read model, and whether reads bypass it (injected account faults).
struct AccountReads {
    model: crate::actors::account::AccountReadModel,
    bypass: bool,
    /// When the model is bypassed, whether the store's own views may answer (a shared
    /// store without injected account faults).
    store_views: bool,
}

/// A seller plugged in by code rather than config (an embedder's own `SellerApi`, or a
/// test's fake with knobs it keeps a handle to).
#[derive(Clone)]
pub struct CustomSeller {
    /// The implementation; its `name()` names the seller.
    pub api: Arc<dyn SellerApi>,
    /// Verticals it serves.
    pub verticals: Vec<Vertical>,
    /// Its protections.
    pub adapter: AdapterConfig,
}

impl std::fmt::Debug for CustomSeller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomSeller")
            .field("name", &self.api.name())
            .finish()
    }
}

/// Builds a [`Runtime`] from a config plus parts given as code.
pub struct RuntimeBuilder {
    config: Config,
    sellers: Vec<CustomSeller>,
    gateway: Option<Arc<dyn PaymentGateway>>,
    transport: Option<Arc<dyn MailTransport>>,
    store_layer: Option<StoreLayer>,
}

/// Wraps the opened store; see [`RuntimeBuilder::store_layer`].
type StoreLayer = Box<dyn FnOnce(Arc<dyn Store>) -> Arc<dyn Store> + Send>;

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("sellers", &self.sellers)
            .finish()
    }
}

impl RuntimeBuilder {
    /// Uses this payment gateway instead of the simulated one from `[payments]`.
    pub fn payment_gateway(mut self, gateway: Arc<dyn PaymentGateway>) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Sends customer emails through `transport` instead of `outbox.log` in the data dir.
    pub fn mail_transport(mut self, transport: Arc<dyn MailTransport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Adds a seller besides those in `config.sellers`.
    pub fn seller(mut self, seller: CustomSeller) -> Self {
        self.sellers.push(seller);
        self
    }

    /// Puts a layer of the embedder's own around the store opened in `store.data_dir`
    /// (metrics, encryption, or a test's fault switch). The layer must keep the [`Store`]
    /// contract: a write is atomic, and a completed flush makes every earlier write durable.
    pub fn store_layer(
        mut self,
        layer: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store> + Send + 'static,
    ) -> Self {
        self.store_layer = Some(Box::new(layer));
        self
    }

    /// Starts the runtime.
    pub async fn start(self) -> Result<Runtime, Error> {
        start::start(self).await
    }
}

impl Runtime {
    /// Opens the store, builds the supervision tree and starts every actor.
    pub async fn start(config: Config) -> Result<Runtime, Error> {
        Self::builder(config).start().await
    }

    /// A builder, to add parts as code (custom sellers).
    pub fn builder(config: Config) -> RuntimeBuilder {
        RuntimeBuilder {
            config,
            sellers: Vec::new(),
            gateway: None,
            transport: None,
            store_layer: None,
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn shard(&self, id: AccountId) -> &ActorHandle<AccountShard> {
        &self.inner.shards[id.shard(self.inner.shards.len())]
    }
}
