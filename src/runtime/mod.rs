//! `Runtime`: the one public doorway. HTTP handlers, examples and embedding programs call
//! the same typed async methods; each turns into a message to a supervised actor, with
//! that actor kind's deadline.
//!
//! `Runtime::start` must run inside an actix system (`#[actix_web::main]`,
//! `#[actix_rt::main]` or `actix_rt::System::new().block_on(..)`): actors live on arbiters.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_rt::Arbiter;
use tracing::Span;

use crate::actors::account::{
    AccountFaults, AccountShard, Authorize, ChangeWallet, GetAccount, LedgerPage, OpenAccount,
    ReadLedger, SetApiKey, WalletReceipt,
};
mod views;

use views::personalize;
pub use views::{
    Booking, BookingOrder, CancellationView, Check, Health, OfferView, SearchResponse,
};

use crate::actors::booking::SagaDeps;
use crate::actors::coordinator::{
    BookingError, CancelBooking, CountSagas, GetSaga, ListBookings, RetrySaga, SagaCoordinator,
    SagaCounts, StartBooking,
};
use crate::actors::notify::{FileTransport, MailTransport, Mailer, MailerStats};
use crate::actors::search::{
    AggregatorSettings, InvalidateSku, Search, SearchAggregator, SearchStats, SellerRoute,
};
use crate::actors::seller::{AdapterConfig, SellerAdapter, SellerStats};
use crate::actors::PanicFaults;
use crate::config::{Config, FaultsConfig, SellerKind};
use crate::domain::access::{ApiKey, Caller, KeyDigest};
use crate::domain::account::{Account, AccountId, NewAccount};
use crate::domain::money::Money;
use crate::domain::saga::{BookingRequest, SagaRecord};
use crate::domain::search::booking_query;
use crate::domain::wallet::WalletOp;
use crate::domain::Invalid;
use crate::error::Error;
use crate::faults::{ActorKind, FaultCounters, FaultCounts};
use crate::payments::faulty::FaultyGateway;
use crate::payments::simulated::SimulatedGateway;
use crate::payments::PaymentGateway;
use crate::sellers::faulty::{FaultySeller, SellerFaultRates};
use crate::sellers::http::HttpSeller;
use crate::sellers::simulated::SimulatedSeller;
use crate::sellers::{FlightQuery, HotelQuery, SearchQuery, SellerApi, Vertical};
use crate::store::{self, FaultyStore, SledStore, Store};
use crate::supervisor::{
    ActorHandle, ChildSpec, Restart, Strategy, SupervisorBuilder, SupervisorRef, SupervisorSnapshot,
};

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
    aggregators: Vec<ActorHandle<SearchAggregator>>,
    sellers: Vec<(String, Arc<SellerStats>)>,
    search_stats: Arc<SearchStats>,
    coordinator: ActorHandle<SagaCoordinator>,
    mailer_stats: Arc<MailerStats>,
    seller_names: Vec<String>,
    root: SupervisorRef,
    arbiters: Mutex<Vec<Arbiter>>,
    started: Instant,
    /// Faults fired on purpose (`[faults]`).
    faults: Arc<FaultCounters>,
}

/// Longest a health probe of the store may take before the store counts as failing.
const STORE_PROBE_DEADLINE: Duration = Duration::from_secs(2);

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
        Runtime::start_parts(self).await
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

    async fn start_parts(parts: RuntimeBuilder) -> Result<Runtime, Error> {
        let RuntimeBuilder {
            config,
            sellers: custom,
            gateway,
            transport,
            store_layer,
        } = parts;
        config.validate()?;
        let dir = config.store.data_dir.clone();
        let store: Arc<dyn Store> = Arc::new(
            tokio::task::spawn_blocking(move || SledStore::open(&dir))
                .await
                .map_err(|e| Error::Unavailable {
                    what: format!("store opener ({e})"),
                })??,
        );
        let store = match store_layer {
            Some(layer) => layer(store),
            None => store,
        };
        let fault_counters = Arc::new(FaultCounters::default());
        let store = with_store_faults(store, &config.faults, &fault_counters);
        let arbiters: Vec<Arbiter> = (0..config.arbiters()).map(|_| Arbiter::new()).collect();
        let policy = config.supervisor.policy();
        let shutdown_timeout = Duration::from_millis(config.supervisor.shutdown_timeout_ms);

        if config.faults.enabled {
            tracing::warn!("Fault injection is enabled ([faults]); never do this in production.");
        }
        let panics = |kind| {
            PanicFaults::new(
                kind,
                config.faults.panic_rate_of(kind),
                fault_counters.clone(),
            )
        };
        let faults = AccountFaults {
            reply_delay: if config.faults.enabled {
                Duration::from_millis(config.faults.account_reply_delay_ms)
            } else {
                Duration::ZERO
            },
            panics: panics(ActorKind::Account),
        };
        let mut accounts = SupervisorBuilder::new("accounts", Strategy::OneForOne, policy);
        let shards: Vec<ActorHandle<AccountShard>> = (0..config.account_shards())
            .map(|index| {
                let spec = ChildSpec {
                    name: format!("account-shard-{index}"),
                    restart: Restart::Permanent,
                    mailbox_capacity: config.accounts.mailbox_capacity,
                    deadline: Duration::from_millis(config.accounts.deadline_ms),
                    shutdown_timeout,
                };
                let arbiter = arbiters[index % arbiters.len()].handle();
                let (store, capacity, currency, faults) = (
                    store.clone(),
                    config.accounts.cache_capacity,
                    config.accounts.currency,
                    faults.clone(),
                );
                accounts.actor(spec, arbiter, move || {
                    AccountShard::new(index, store.clone(), capacity, currency, faults.clone())
                })
            })
            .collect();
        // Sellers: config entries first, then custom ones.
        let mut seller_parts: Vec<CustomSeller> = Vec::new();
        for entry in &config.sellers {
            let api: Arc<dyn SellerApi> = match entry.kind {
                SellerKind::Simulated => {
                    let mut c = entry.simulated.clone();
                    c.name = entry.name.clone();
                    let seller: Arc<dyn SellerApi> =
                        Arc::new(SimulatedSeller::new(c).map_err(|e| {
                            Error::Config(format!(
                                "sellers.{}.simulated.{}: {}",
                                entry.name, e.key, e.problem
                            ))
                        })?);
                    with_seller_faults(seller, &config, &fault_counters)
                }
                SellerKind::Http => {
                    let mut c = entry.http.clone();
                    c.name = entry.name.clone();
                    Arc::new(HttpSeller::new(c).map_err(|e| {
                        Error::Config(format!(
                            "sellers.{}.http.{}: {}",
                            entry.name, e.key, e.problem
                        ))
                    })?)
                }
            };
            seller_parts.push(CustomSeller {
                api,
                verticals: entry.verticals.clone(),
                adapter: entry.adapter.clone(),
            });
        }
        // Sellers given in code are the test doubles of embedders and drills: they get the
        // seller faults too (HTTP sellers do not; their fake server has its own knobs).
        seller_parts.extend(custom.into_iter().map(|mut part| {
            part.api = with_seller_faults(part.api, &config, &fault_counters);
            part
        }));
        let mut sellers_sup = SupervisorBuilder::new("sellers", Strategy::OneForOne, policy);
        let mut routes = Vec::new();
        let mut seller_stats = Vec::new();
        for (i, part) in seller_parts.into_iter().enumerate() {
            let name = part.api.name().to_owned();
            let stats = Arc::new(SellerStats::default());
            let spec = ChildSpec {
                name: format!("seller-{name}"),
                restart: Restart::Permanent,
                mailbox_capacity: part.adapter.mailbox_capacity,
                // The caller's own deadline (search deadline, saga step) is what binds.
                deadline: Duration::from_millis(part.adapter.call_timeout_ms)
                    .saturating_mul(part.adapter.search_retries + 2),
                shutdown_timeout,
            };
            let arbiter = arbiters[i % arbiters.len()].handle();
            let (api, adapter, published) = (part.api.clone(), part.adapter.clone(), stats.clone());
            let for_snapshot = stats.clone();
            let seller_panics = panics(ActorKind::Seller);
            let handle = sellers_sup.actor_with_status(
                spec,
                arbiter,
                move || {
                    SellerAdapter::new(api.clone(), adapter.clone(), published.clone())
                        .with_panic_faults(seller_panics.clone())
                },
                move || for_snapshot.to_json(),
            );
            routes.push(SellerRoute {
                name: name.clone(),
                verticals: part.verticals,
                handle,
            });
            seller_stats.push((name, stats));
        }
        let routes = Arc::new(routes);

        let mut search_sup = SupervisorBuilder::new("search", Strategy::OneForOne, policy);
        let search_stats = Arc::new(SearchStats::default());
        let settings = AggregatorSettings {
            deadline: Duration::from_millis(config.search.deadline_ms),
            cache_capacity: config.search.cache.capacity,
            ttl_table: config.search.cache.ttl_table.clone(),
            currency: config.accounts.currency,
        };
        let aggregators: Vec<ActorHandle<SearchAggregator>> = (0..config.search_aggregators())
            .map(|index| {
                let spec = ChildSpec {
                    name: format!("search-aggregator-{index}"),
                    restart: Restart::Permanent,
                    mailbox_capacity: config.search.mailbox_capacity,
                    // The fan-out deadline plus room for merging and the reply.
                    deadline: settings.deadline + Duration::from_millis(500),
                    shutdown_timeout,
                };
                let arbiter = arbiters[index % arbiters.len()].handle();
                let (routes, settings, stats, search_panics) = (
                    routes.clone(),
                    settings.clone(),
                    search_stats.clone(),
                    panics(ActorKind::Search),
                );
                search_sup.actor(spec, arbiter, move || {
                    SearchAggregator::new(routes.clone(), settings.clone(), stats.clone())
                        .with_panic_faults(search_panics.clone())
                })
            })
            .collect();

        let mut notifier = SupervisorBuilder::new("notifier", Strategy::OneForOne, policy);
        let mailer_stats = Arc::new(MailerStats::default());
        let transport = transport.unwrap_or_else(|| {
            Arc::new(FileTransport::new(config.store.data_dir.join("outbox.log")))
        });
        let mailer = {
            let (store, transport, stats, mailer_panics) = (
                store.clone(),
                transport.clone(),
                mailer_stats.clone(),
                panics(ActorKind::Mailer),
            );
            let spec = ChildSpec {
                name: "mailer".into(),
                restart: Restart::Permanent,
                mailbox_capacity: 1024,
                deadline: Duration::from_secs(5),
                shutdown_timeout,
            };
            notifier.actor(spec, arbiters[0].handle(), move || {
                Mailer::new(store.clone(), transport.clone(), stats.clone())
                    .with_panic_faults(mailer_panics.clone())
            })
        };

        let gateway =
            gateway.unwrap_or_else(|| Arc::new(SimulatedGateway::new(config.payments.clone())));
        let gateway = with_payment_faults(gateway, &config.faults, &fault_counters);
        let deps = Arc::new(SagaDeps {
            store: store.clone(),
            shards: shards.clone(),
            sellers: routes
                .iter()
                .map(|r| (r.name.clone(), r.handle.clone()))
                .collect(),
            aggregators: aggregators.clone(),
            gateway,
            mailer,
            config: config.bookings.saga.clone(),
            step_timeout: Duration::from_millis(config.bookings.step_timeout_ms),
            running: Mutex::new(Default::default()),
            arbiters: arbiters.iter().map(|a| a.handle()).collect(),
            crashes: Default::default(),
            panics: panics(ActorKind::Saga),
        });
        let mut bookings = SupervisorBuilder::new("bookings", Strategy::OneForOne, policy);
        let coordinator = {
            let max = config.bookings.max_in_flight;
            let spec = ChildSpec {
                name: "saga-coordinator".into(),
                restart: Restart::Permanent,
                mailbox_capacity: config.bookings.mailbox_capacity,
                deadline: Duration::from_millis(config.bookings.step_timeout_ms)
                    + Duration::from_secs(5),
                shutdown_timeout,
            };
            bookings.actor(spec, arbiters[0].handle(), move || {
                SagaCoordinator::new(deps.clone(), max)
            })
        };

        let mut root = SupervisorBuilder::new("root", Strategy::OneForOne, policy);
        root.supervisor(accounts, Restart::Permanent, shutdown_timeout);
        // Aggregators hold handles to the adapters, which stay valid across restarts, so
        // the two subtrees restart independently.
        root.supervisor(sellers_sup, Restart::Permanent, shutdown_timeout);
        root.supervisor(search_sup, Restart::Permanent, shutdown_timeout);
        root.supervisor(notifier, Restart::Permanent, shutdown_timeout);
        // Last: the coordinator resumes unfinished sagas as it starts, so everything they
        // call must be running.
        root.supervisor(bookings, Restart::Permanent, shutdown_timeout);
        let root = root.start();

        let runtime = Runtime {
            inner: Arc::new(Inner {
                config,
                store,
                shards,
                aggregators,
                seller_names: seller_stats.iter().map(|(n, _)| n.clone()).collect(),
                sellers: seller_stats,
                search_stats,
                coordinator,
                mailer_stats,
                root,
                arbiters: Mutex::new(arbiters),
                started: Instant::now(),
                faults: fault_counters,
            }),
        };
        let demo = runtime.inner.config.demo.clone();
        if demo.accounts > 0 {
            runtime.seed_demo(demo.accounts, demo.credit_minor).await?;
        }
        tracing::info!(
            shards = runtime.inner.shards.len(),
            data_dir = %runtime.inner.config.store.data_dir.display(),
            "Runtime started."
        );
        Ok(runtime)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn shard(&self, id: AccountId) -> &ActorHandle<AccountShard> {
        &self.inner.shards[id.shard(self.inner.shards.len())]
    }

    /// Opens an account with a fresh id and no API key: only the operator (or this
    /// embedding program) acts on it until [`issue_api_key`](Self::issue_api_key).
    pub async fn create_account(&self, new: NewAccount) -> Result<Account, Error> {
        self.open_account(AccountId::random(), new, None).await
    }

    /// Opens an account for a customer: the account and its API key are written together,
    /// and the key is returned in clear this once (the store keeps only its digest).
    pub async fn create_customer(&self, new: NewAccount) -> Result<(Account, ApiKey), Error> {
        let key = ApiKey::generate();
        let account = self
            .open_account(AccountId::random(), new, Some(key.digest()))
            .await?;
        Ok((account, key))
    }

    /// Opens an account with a chosen id (demo data, imports). Conflict if it exists.
    pub async fn create_account_with_id(
        &self,
        id: AccountId,
        new: NewAccount,
    ) -> Result<Account, Error> {
        self.open_account(id, new, None).await
    }

    async fn open_account(
        &self,
        id: AccountId,
        new: NewAccount,
        key: Option<KeyDigest>,
    ) -> Result<Account, Error> {
        let msg = OpenAccount {
            id,
            new,
            key,
            span: Span::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Replaces the account's API key with a fresh one (a lost or leaked key, or an account
    /// opened without one) and returns it in clear, this once. The old key stops working.
    pub async fn issue_api_key(&self, id: AccountId) -> Result<ApiKey, Error> {
        let key = ApiKey::generate();
        self.set_api_key(id, key.digest(), false).await?;
        Ok(key)
    }

    async fn set_api_key(
        &self,
        id: AccountId,
        key: KeyDigest,
        only_if_missing: bool,
    ) -> Result<bool, Error> {
        let msg = SetApiKey {
            id,
            key,
            only_if_missing,
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Checks that `caller` may act on account `id` (`NotFound` when there is no such
    /// account, `Unauthenticated` or `Forbidden` when the caller may not).
    pub async fn authorize(&self, caller: Caller, id: AccountId) -> Result<(), Error> {
        if caller == Caller::Operator {
            return Ok(());
        }
        Ok(self.shard(id).ask(Authorize { id, caller }).await??)
    }

    /// An account with its wallet figures.
    pub async fn account(&self, id: AccountId) -> Result<Account, Error> {
        self.account_as(Caller::Operator, id).await
    }

    /// An account with its wallet figures, if `caller` may see it (one message: the
    /// check rides along with the read).
    pub async fn account_as(&self, caller: Caller, id: AccountId) -> Result<Account, Error> {
        let msg = GetAccount {
            id,
            caller,
            span: Span::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    async fn change_wallet(
        &self,
        id: AccountId,
        key: &str,
        op: WalletOp,
    ) -> Result<WalletReceipt, Error> {
        let msg = ChangeWallet {
            id,
            key: key.to_owned(),
            op,
            span: Span::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Credits loyalty points, once per idempotency key.
    pub async fn credit_wallet(
        &self,
        id: AccountId,
        key: &str,
        amount: Money,
    ) -> Result<WalletReceipt, Error> {
        self.change_wallet(id, key, WalletOp::Credit { amount })
            .await
    }

    /// Reserves points under `hold_id`, once per idempotency key.
    pub async fn hold_points(
        &self,
        id: AccountId,
        key: &str,
        hold_id: &str,
        amount: Money,
    ) -> Result<WalletReceipt, Error> {
        let op = WalletOp::Hold {
            hold_id: hold_id.to_owned(),
            amount,
        };
        self.change_wallet(id, key, op).await
    }

    /// Spends a hold, once per idempotency key.
    pub async fn capture_hold(
        &self,
        id: AccountId,
        key: &str,
        hold_id: &str,
    ) -> Result<WalletReceipt, Error> {
        let op = WalletOp::Capture {
            hold_id: hold_id.to_owned(),
        };
        self.change_wallet(id, key, op).await
    }

    /// Cancels a hold, once per idempotency key.
    pub async fn release_hold(
        &self,
        id: AccountId,
        key: &str,
        hold_id: &str,
    ) -> Result<WalletReceipt, Error> {
        let op = WalletOp::Release {
            hold_id: hold_id.to_owned(),
        };
        self.change_wallet(id, key, op).await
    }

    /// Ledger entries with sequence numbers above `after`, at most `limit` (bounded by
    /// `accounts.max_page_size`).
    pub async fn ledger(
        &self,
        id: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<LedgerPage, Error> {
        self.ledger_as(Caller::Operator, id, after, limit).await
    }

    /// [`ledger`](Self::ledger), if `caller` may see it.
    pub async fn ledger_as(
        &self,
        caller: Caller,
        id: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<LedgerPage, Error> {
        let max = self.inner.config.accounts.max_page_size;
        if limit == 0 || limit > max {
            return Err(Invalid::new("limit", format!("must be between 1 and {max}")).into());
        }
        let msg = ReadLedger {
            id,
            caller,
            after,
            limit,
            span: Span::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Creates demo accounts `Person_0..Person_{n-1}` with stable ids, the well-known demo
    /// API keys ([`ApiKey::demo`]) and a wallet credit;
    /// accounts that exist are left as they are, so seeding twice changes nothing.
    pub async fn seed_demo(&self, n: u64, credit_minor: i64) -> Result<u64, Error> {
        let mut created = 0;
        for i in 0..n {
            let id = AccountId::demo(i);
            let new = NewAccount::new(&format!("Person_{i}"), &format!("person{i}@example.com"))?;
            let opened = self
                .open_account(id, new, Some(ApiKey::demo(i).digest()))
                .await;
            match opened {
                Ok(_) => created += 1,
                Err(Error::Conflict(_)) => {
                    // Demo stores from before API keys: give them their demo key once.
                    self.set_api_key(id, ApiKey::demo(i).digest(), true).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            if credit_minor > 0 {
                let amount = Money::new(credit_minor, self.inner.config.accounts.currency);
                self.credit_wallet(id, "demo-seed", amount).await?;
            }
        }
        if created > 0 {
            tracing::info!(created, "Demo accounts seeded.");
        }
        Ok(created)
    }

    /// Hotel offers for a stay, merged over every hotel seller, marked down by the
    /// account's wallet when `account` is given (unknown account: `NotFound`).
    pub async fn search_hotels(
        &self,
        query: HotelQuery,
        account: Option<AccountId>,
    ) -> Result<SearchResponse, Error> {
        self.search(SearchQuery::Hotel(query), account).await
    }

    /// Flight offers (a round trip when `return_date` is set), like [`search_hotels`](Self::search_hotels).
    pub async fn search_flights(
        &self,
        query: FlightQuery,
        account: Option<AccountId>,
    ) -> Result<SearchResponse, Error> {
        self.search(SearchQuery::Flight(query), account).await
    }

    async fn search(
        &self,
        query: SearchQuery,
        account: Option<AccountId>,
    ) -> Result<SearchResponse, Error> {
        query
            .validate()
            .map_err(|e| Invalid::new(e.field, e.problem))?;
        let today = chrono::Utc::now().date_naive();
        if query.travel_date() < today {
            let field = match query {
                SearchQuery::Hotel(_) => "check_in",
                SearchQuery::Flight(_) => "date",
            };
            return Err(Invalid::new(field, format!("must not be before today ({today})")).into());
        }
        let key = crate::domain::search::cache_key(&query);
        let aggregator =
            &self.inner.aggregators[crate::actors::bucket(&key, self.inner.aggregators.len())];
        // The wallet lookup runs alongside the fan-out, not before it.
        let wallet = async {
            match account {
                Some(id) => self.account(id).await.map(|a| Some(a.wallet.available)),
                None => Ok(None),
            }
        };
        let (result, wallet) = tokio::join!(aggregator.ask(Search { query }), wallet);
        let wallet = wallet?;
        let result = result?.map_err(|e| Error::Unavailable {
            what: e.to_string(),
        })?;
        let usable = wallet.unwrap_or(Money::zero(self.inner.config.accounts.currency));
        Ok(SearchResponse {
            offers: result
                .offers
                .iter()
                .map(|o| personalize(o, usable))
                .collect(),
            sellers: result.sellers.to_vec(),
            cached: result.cached,
            wallet_available: wallet,
        })
    }

    /// Drops cached search results that hold `sku` (a booking of it changes availability
    /// and price). Returns how many were dropped.
    pub async fn invalidate_sku(&self, sku: &str) -> Result<usize, Error> {
        let mut dropped = 0;
        for aggregator in &self.inner.aggregators {
            dropped += aggregator
                .ask(InvalidateSku {
                    sku: sku.to_owned(),
                })
                .await?;
        }
        Ok(dropped)
    }

    /// Starts a booking saga for an offer from a search; the same `idempotency_key` (with
    /// the same request) returns the same booking. The booking proceeds in the
    /// background: poll [`booking`](Self::booking).
    pub async fn book(&self, order: BookingOrder) -> Result<(Booking, bool), Error> {
        let currency = self.inner.config.accounts.currency;
        self.account(order.account_id).await?;
        if !self.inner.seller_names.contains(&order.seller) {
            return Err(
                Invalid::new("seller", format!("unknown seller {:?}", order.seller)).into(),
            );
        }
        if booking_query(&order.sku, order.start, order.end).is_none() {
            return Err(Invalid::new("sku", "is not a SKU from a search offer").into());
        }
        if order.start < chrono::Utc::now().date_naive() {
            return Err(Invalid::new("start", "must not be in the past").into());
        }
        for (field, money) in [
            ("offer_price", order.offer_price),
            ("wallet_points", order.wallet_points),
        ] {
            if money.currency != currency {
                return Err(Invalid::new(
                    format!("{field}.currency"),
                    format!("must be {currency}"),
                )
                .into());
            }
        }
        crate::domain::wallet::validate_key("Idempotency-Key", &order.idempotency_key)?;
        let request = BookingRequest {
            account_id: order.account_id.to_string(),
            seller: order.seller,
            sku: order.sku,
            start: order.start,
            end: order.end,
            wallet_points: order.wallet_points,
            card_token: order.card_token,
            offer_price: order.offer_price,
            idempotency_key: order.idempotency_key,
        };
        let (record, replayed) = self
            .inner
            .coordinator
            .ask(StartBooking { request })
            .await??;
        Ok((self.view(record).await?, replayed))
    }

    /// A booking with its state and timed history.
    pub async fn booking(&self, id: &str) -> Result<Booking, Error> {
        let record = self.saga(id).await?;
        if record.kind != crate::domain::saga::SagaKind::Booking {
            return Err(BookingError::NotFound(id.to_owned()).into());
        }
        self.view(record).await
    }

    async fn saga(&self, id: &str) -> Result<SagaRecord, Error> {
        Ok(self
            .inner
            .coordinator
            .ask(GetSaga { id: id.to_owned() })
            .await??)
    }

    async fn view(&self, record: SagaRecord) -> Result<Booking, Error> {
        let cancellation_id = format!("{}:cancel", record.saga_id);
        let cancellation = match self.saga(&cancellation_id).await {
            Ok(c) => Some(c),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(Booking::from_records(record, cancellation))
    }

    /// Cancels a booking: a confirmed one through a cancellation saga (seller fee, refund
    /// minus the fee, points restored); one still in flight is compensated (before the
    /// seller reservation) or cancelled right after it is confirmed.
    pub async fn cancel_booking(&self, id: &str) -> Result<Booking, Error> {
        let record = self
            .inner
            .coordinator
            .ask(CancelBooking { id: id.to_owned() })
            .await??;
        self.view(record).await
    }

    /// Bookings of an account (at most 100, oldest first by id order).
    pub async fn account_bookings(&self, account: AccountId) -> Result<Vec<Booking>, Error> {
        self.account(account).await?;
        let records = self
            .inner
            .coordinator
            .ask(ListBookings {
                account,
                limit: 100,
            })
            .await??;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            out.push(self.view(r).await?);
        }
        Ok(out)
    }

    /// Operator: resumes a saga parked as `needs_attention`.
    pub async fn retry_saga(&self, id: &str) -> Result<SagaRecord, Error> {
        Ok(self
            .inner
            .coordinator
            .ask(RetrySaga { id: id.to_owned() })
            .await??)
    }

    /// Saga figures: counts by state, parked sagas, running actors, crashes.
    pub async fn saga_counts(&self) -> Result<SagaCounts, Error> {
        Ok(self.inner.coordinator.ask(CountSagas).await??)
    }

    /// Faults fired on purpose since start (`[faults]`); all zero when it is off.
    pub fn fault_counts(&self) -> FaultCounts {
        self.inner.faults.snapshot()
    }

    /// Emails handed to the transport.
    pub fn mailer_stats(&self) -> &MailerStats {
        &self.inner.mailer_stats
    }

    /// Per-seller figures (breaker, calls, look-to-book) for metrics.
    pub fn seller_stats(&self) -> &[(String, Arc<SellerStats>)] {
        &self.inner.sellers
    }

    /// Search cache and coalescing counters for metrics.
    pub fn search_stats(&self) -> &SearchStats {
        &self.inner.search_stats
    }

    /// The supervision tree as it is now.
    pub fn supervision_tree(&self) -> SupervisorSnapshot {
        self.inner.root.snapshot()
    }

    /// Real health: the store takes a flushed write, and every supervisor is within its
    /// restart intensity.
    pub async fn health(&self) -> Health {
        let store = match tokio::time::timeout(
            STORE_PROBE_DEADLINE,
            store::probe(&*self.inner.store),
        )
        .await
        {
            Ok(Ok(())) => Check {
                ok: true,
                detail: None,
            },
            Ok(Err(e)) => Check {
                ok: false,
                detail: Some(e.to_string()),
            },
            Err(_) => Check {
                ok: false,
                detail: Some(format!("store probe took over {STORE_PROBE_DEADLINE:?}")),
            },
        };
        let tree = self.supervision_tree();
        let mut failed = Vec::new();
        tree.for_each_supervisor(&mut |s| {
            if let Some(f) = &s.failure {
                if s.state != crate::supervisor::SupervisorState::Running {
                    failed.push(f.reason.clone());
                }
            }
        });
        let supervisors = Check {
            ok: tree.is_healthy(),
            detail: (!failed.is_empty()).then(|| failed.join("; ")),
        };
        let sagas = match self.saga_counts().await {
            Ok(mut counts) => {
                counts.parked.truncate(20);
                Some(counts)
            }
            Err(_) => None,
        };
        let mut health = Health {
            status: "ok",
            store,
            supervisors,
            sagas,
            uptime_secs: self.inner.started.elapsed().as_secs(),
        };
        if !health.is_ok() {
            health.status = "unhealthy";
        }
        health
    }

    /// Stops every actor (in reverse start order, each within its shutdown timeout),
    /// flushes the store and stops the actor threads. Idempotent.
    ///
    /// An error means the final flush failed: the store had failed (every acknowledged
    /// write was flushed when it was acknowledged, so nothing acknowledged is lost), and a
    /// process should exit non-zero so whatever runs it notices.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.inner.root.shutdown().await;
        let flushed = self.inner.store.flush().await;
        if let Err(e) = &flushed {
            tracing::error!(error = %e, "Final store flush failed.");
        }
        let arbiters = std::mem::take(
            &mut *self
                .inner
                .arbiters
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for arbiter in arbiters {
            arbiter.stop();
        }
        tracing::info!("Runtime stopped.");
        Ok(flushed?)
    }
}

/// The store, wrapped in a [`FaultyStore`] when `[faults]` asks for store faults.
fn with_store_faults(
    store: Arc<dyn Store>,
    faults: &FaultsConfig,
    counters: &Arc<FaultCounters>,
) -> Arc<dyn Store> {
    if !faults.enabled
        || (faults.store_write_failure_rate == 0.0 && faults.store_write_delay_ms == 0)
    {
        return store;
    }
    Arc::new(FaultyStore::new(
        store,
        faults.store_write_failure_rate,
        Duration::from_millis(faults.store_write_delay_ms),
        counters.clone(),
    ))
}

/// A seller, wrapped in a [`FaultySeller`] when `[faults]` asks for seller faults.
fn with_seller_faults(
    seller: Arc<dyn SellerApi>,
    config: &Config,
    counters: &Arc<FaultCounters>,
) -> Arc<dyn SellerApi> {
    let rates = SellerFaultRates {
        failure_rate: config.faults.seller_failure_rate,
        hang_rate: config.faults.seller_hang_rate,
        garbage_rate: config.faults.seller_garbage_rate,
    };
    if !config.faults.enabled || !rates.any() {
        return seller;
    }
    Arc::new(FaultySeller::new(
        seller,
        rates,
        config.accounts.currency,
        counters.clone(),
    ))
}

/// The gateway, wrapped in a [`FaultyGateway`] when `[faults]` asks for payment faults.
fn with_payment_faults(
    gateway: Arc<dyn PaymentGateway>,
    faults: &FaultsConfig,
    counters: &Arc<FaultCounters>,
) -> Arc<dyn PaymentGateway> {
    if !faults.enabled || (faults.payment_failure_rate == 0.0 && faults.payment_hang_rate == 0.0) {
        return gateway;
    }
    Arc::new(FaultyGateway::new(
        gateway,
        faults.payment_failure_rate,
        faults.payment_hang_rate,
        counters.clone(),
    ))
}
