//! Start-up wiring: opens the store and builds the supervision tree, one function per
//! subtree, in the order the subtrees depend on each other:
//!
//! ```text
//! root (one_for_one)
//!  ├── accounts ── AccountShard × accounts.shards
//!  ├── sellers  ── SellerAdapter × configured + custom sellers
//!  ├── search   ── SearchAggregator × search.aggregators   (holds seller handles)
//!  ├── notifier ── Mailer
//!  └── bookings ─┬ sagas (dynamic) ── BookingSaga × in flight  (hold all of the above)
//!               └ SagaCoordinator
//! ```
//!
//! Handles stay valid across restarts, so a subtree that holds another's handles never
//! needs restarting with it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_rt::Arbiter;

use super::partners::{configured_gateway, seller_apis, with_payment_faults, with_store_faults};
use super::system::StoreProbe;
use super::AccountReads;
use super::{CustomSeller, Inner, Runtime, RuntimeBuilder};
use crate::actors::account::{
    backfill_emails, backfill_key_owners, AccountFaults, AccountReadModel, AccountShard,
};
use crate::actors::booking::SagaDeps;
use crate::actors::coordinator::{on_saga_end, SagaCoordinator};
use crate::actors::guard::PartnerStats;
use crate::actors::notify::{FileTransport, MailTransport, Mailer, MailerStats};
use crate::actors::payment::{PaymentAdapter, SupervisedGateway};
use crate::actors::search::{AggregatorSettings, SearchAggregator, SearchStats, SellerRoute};
use crate::actors::seller::SellerAdapter;
use crate::actors::PanicFaults;
use crate::config::Config;
use crate::error::Error;
use crate::faults::{ActorKind, FaultCounters};
use crate::payments::PaymentGateway;
use crate::store::{SledStore, Store};
use crate::supervisor::{
    ActorHandle, ChildSpec, DynamicSpec, DynamicSupervisor, Restart, Strategy, SupervisorBuilder,
};

/// What every subtree is built from.
struct Wiring<'a> {
    config: &'a Config,
    store: Arc<dyn Store>,
    arbiters: &'a [Arbiter],
    faults: Arc<FaultCounters>,
    shutdown_timeout: Duration,
}

impl Wiring<'_> {
    fn policy(&self) -> crate::supervisor::RestartPolicy {
        self.config.supervisor.policy()
    }

    /// The arbiter of the `index`-th actor of a kind: actors are spread round-robin.
    fn arbiter(&self, index: usize) -> actix_rt::ArbiterHandle {
        self.arbiters[index % self.arbiters.len()].handle()
    }

    /// Injected panics for one actor kind (`[faults]`; none when it is off).
    fn panics(&self, kind: ActorKind) -> PanicFaults {
        PanicFaults::new(
            kind,
            self.config.faults.panic_rate_of(kind),
            self.faults.clone(),
        )
    }

    /// A permanent child named `name` with these bounds.
    fn spec(&self, name: String, mailbox_capacity: usize, deadline: Duration) -> ChildSpec {
        ChildSpec {
            name,
            restart: Restart::Permanent,
            mailbox_capacity,
            deadline,
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

/// Opens the store, builds the tree, seeds demo data. See [`RuntimeBuilder::start`].
pub(super) async fn start(parts: RuntimeBuilder) -> Result<Runtime, Error> {
    let RuntimeBuilder {
        config,
        sellers: custom,
        gateway,
        transport,
        store_layer,
    } = parts;
    config.validate()?;
    let store = open_store(&config).await?;
    let store = match store_layer {
        Some(layer) => layer(store),
        None => store,
    };
    let fault_counters = Arc::new(FaultCounters::default());
    let store = with_store_faults(store, &config.faults, &fault_counters);
    if config.faults.enabled {
        tracing::warn!("Fault injection is enabled ([faults]); never do this in production.");
    }
    let arbiters: Vec<Arbiter> = (0..config.arbiters()).map(|_| Arbiter::new()).collect();
    let wiring = Wiring {
        config: &config,
        store: store.clone(),
        arbiters: &arbiters,
        faults: fault_counters.clone(),
        shutdown_timeout: Duration::from_millis(config.supervisor.shutdown_timeout_ms),
    };

    let (accounts, shards, account_reads) = accounts_subtree(&wiring);
    let (sellers, routes, seller_stats) = sellers_subtree(&wiring, custom)?;
    let (search, aggregators, search_stats) = search_subtree(&wiring, &routes);
    let transport = transport
        .unwrap_or_else(|| Arc::new(FileTransport::new(config.store.data_dir.join("outbox.log"))));
    let (notifier, mailer, mailer_stats) = notifier_subtree(&wiring, transport);
    let gateway = match gateway {
        Some(gateway) => gateway,
        None => configured_gateway(&config)?,
    };
    let gateway = with_payment_faults(gateway, &config.faults, &fault_counters);
    let (payments, gateway, gateway_stats) = payments_subtree(&wiring, gateway);
    let deps = SagaDeps {
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
        sagas: DynamicSupervisor::new(
            DynamicSpec {
                name: "sagas".into(),
                max_children: config.bookings.max_in_flight,
                child_prefix: "saga-".into(),
                mailbox_capacity: SAGA_MAILBOX,
                deadline: Duration::from_millis(config.bookings.step_timeout_ms)
                    + Duration::from_secs(5),
                shutdown_timeout: wiring.shutdown_timeout,
            },
            wiring.policy(),
        ),
        arbiters: arbiters.iter().map(|a| a.handle()).collect(),
        panics: wiring.panics(ActorKind::Saga),
        tally: Default::default(),
    };
    let (bookings, coordinator, saga_deps) = bookings_subtree(&wiring, deps);

    let probe = Arc::new(StoreProbe::first(&*store).await);
    let probe_task = actix_rt::spawn(probe.clone().run(store.clone()));

    let shutdown_timeout = wiring.shutdown_timeout;
    let mut root = SupervisorBuilder::new("root", Strategy::OneForOne, wiring.policy());
    root.supervisor(accounts, Restart::Permanent, shutdown_timeout);
    // Aggregators hold handles to the adapters, which stay valid across restarts, so
    // the two subtrees restart independently.
    root.supervisor(sellers, Restart::Permanent, shutdown_timeout);
    root.supervisor(search, Restart::Permanent, shutdown_timeout);
    root.supervisor(notifier, Restart::Permanent, shutdown_timeout);
    root.supervisor(payments, Restart::Permanent, shutdown_timeout);
    // Last: the coordinator resumes unfinished sagas as it starts, so everything they
    // call must be running.
    root.supervisor(bookings, Restart::Permanent, shutdown_timeout);
    let root = root.start();

    let runtime = Runtime {
        inner: Arc::new(Inner {
            store,
            shards,
            account_reads,
            aggregators,
            seller_names: seller_stats.iter().map(|(n, _)| n.clone()).collect(),
            sellers: seller_stats,
            gateway_stats,
            search_stats,
            coordinator,
            saga_deps,
            mailer_stats,
            root,
            arbiters: Mutex::new(arbiters),
            started: Instant::now(),
            faults: fault_counters,
            probe,
            probe_task: Mutex::new(Some(probe_task)),
            config,
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

/// Opens sled in `store.data_dir` off the async threads (it reads and may recover its log).
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, Error> {
    let dir = config.store.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || SledStore::open(&dir))
        .await
        .map_err(|e| Error::Unavailable {
            what: format!("store opener ({e})"),
        })??;
    Ok(Arc::new(store))
}

/// `accounts`: the account shards, spread over the arbiters.
fn accounts_subtree(
    w: &Wiring<'_>,
) -> (
    SupervisorBuilder,
    Vec<ActorHandle<AccountShard>>,
    AccountReads,
) {
    let config = w.config;
    if let Err(error) = backfill_key_owners(&*w.store) {
        // The index only tells an unknown key (401) from another account's (403).
        tracing::warn!(%error, "API key owner index not rebuilt; unknown keys may get 403.");
    }
    if let Err(error) = backfill_emails(&*w.store) {
        tracing::warn!(%error, "Email index not rebuilt; older accounts' emails are not unique.");
    }
    let model = AccountReadModel::new(config.account_shards());
    let faults = AccountFaults {
        reply_delay: if config.faults.enabled {
            Duration::from_millis(config.faults.account_reply_delay_ms)
        } else {
            Duration::ZERO
        },
        panics: w.panics(ActorKind::Account),
    };
    let mut sup = SupervisorBuilder::new("accounts", Strategy::OneForOne, w.policy());
    let shards = (0..config.account_shards())
        .map(|index| {
            let spec = w.spec(
                format!("account-shard-{index}"),
                config.accounts.mailbox_capacity,
                Duration::from_millis(config.accounts.deadline_ms),
            );
            let (store, capacity, currency, faults) = (
                w.store.clone(),
                config.accounts.cache_capacity,
                config.accounts.currency,
                faults.clone(),
            );
            let segment = model.segment(index);
            sup.actor(spec, w.arbiter(index), move || {
                let (store, faults) = (store.clone(), faults.clone());
                AccountShard::new(index, store, capacity, currency, faults, segment.clone())
            })
        })
        .collect();
    // Under injected account faults every read goes to the actors, so drills see them.
    let reads = AccountReads {
        model,
        bypass: faults.armed(),
    };
    (sup, shards, reads)
}

type SellerSubtree = (
    SupervisorBuilder,
    Arc<Vec<SellerRoute>>,
    Vec<(String, Arc<PartnerStats>)>,
);

/// `sellers`: one adapter per seller, with the figures each publishes.
fn sellers_subtree(w: &Wiring<'_>, custom: Vec<CustomSeller>) -> Result<SellerSubtree, Error> {
    let mut sup = SupervisorBuilder::new("sellers", Strategy::OneForOne, w.policy());
    let mut routes = Vec::new();
    let mut seller_stats = Vec::new();
    for (i, part) in seller_apis(w.config, &w.faults, custom)?
        .into_iter()
        .enumerate()
    {
        let name = part.api.name().to_owned();
        let stats = Arc::new(PartnerStats::default());
        // The caller's own deadline (search deadline, saga step) is what binds.
        let deadline = Duration::from_millis(part.adapter.call_timeout_ms)
            .saturating_mul(part.adapter.search_retries + 2);
        let spec = w.spec(
            format!("seller-{name}"),
            part.adapter.mailbox_capacity,
            deadline,
        );
        let (api, adapter, published) = (part.api.clone(), part.adapter.clone(), stats.clone());
        let for_snapshot = stats.clone();
        let panics = w.panics(ActorKind::Seller);
        let meter = SellerAdapter::new_meter(&part.adapter);
        let handle = sup.actor_with_status(
            spec,
            w.arbiter(i),
            move || {
                SellerAdapter::new(api.clone(), adapter.clone(), published.clone())
                    .with_panic_faults(panics.clone())
                    .with_meter(meter.clone())
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
    Ok((sup, Arc::new(routes), seller_stats))
}

/// `search`: the aggregators, each fanning out over every seller route.
fn search_subtree(
    w: &Wiring<'_>,
    routes: &Arc<Vec<SellerRoute>>,
) -> (
    SupervisorBuilder,
    Vec<ActorHandle<SearchAggregator>>,
    Arc<SearchStats>,
) {
    let config = w.config;
    let mut sup = SupervisorBuilder::new("search", Strategy::OneForOne, w.policy());
    let stats = Arc::new(SearchStats::default());
    let settings = AggregatorSettings {
        deadline: Duration::from_millis(config.search.deadline_ms),
        cache_capacity: config.search.cache.capacity,
        ttl_table: config.search.cache.ttl_table.clone(),
        stale_for: Duration::from_secs(config.search.cache.stale_for_secs),
        currency: config.accounts.currency,
    };
    let aggregators = (0..config.search_aggregators())
        .map(|index| {
            // The fan-out deadline plus room for merging and the reply.
            let spec = w.spec(
                format!("search-aggregator-{index}"),
                config.search.mailbox_capacity,
                settings.deadline + Duration::from_millis(500),
            );
            let (routes, settings, stats, panics) = (
                routes.clone(),
                settings.clone(),
                stats.clone(),
                w.panics(ActorKind::Search),
            );
            sup.actor(spec, w.arbiter(index), move || {
                SearchAggregator::new(routes.clone(), settings.clone(), stats.clone())
                    .with_panic_faults(panics.clone())
            })
        })
        .collect();
    (sup, aggregators, stats)
}

/// `notifier`: the mailer draining the outbox through `transport`.
fn notifier_subtree(
    w: &Wiring<'_>,
    transport: Arc<dyn MailTransport>,
) -> (SupervisorBuilder, ActorHandle<Mailer>, Arc<MailerStats>) {
    let mut sup = SupervisorBuilder::new("notifier", Strategy::OneForOne, w.policy());
    let stats = Arc::new(MailerStats::default());
    let (store, published, panics) = (w.store.clone(), stats.clone(), w.panics(ActorKind::Mailer));
    let spec = w.spec("mailer".into(), MAILER_MAILBOX, MAILER_DEADLINE);
    let mailer = sup.actor(spec, w.arbiter(0), move || {
        Mailer::new(store.clone(), transport.clone(), published.clone())
            .with_panic_faults(panics.clone())
    });
    (sup, mailer, stats)
}

/// The mailer is only ever woken ("the outbox changed"), so a small mailbox is plenty.
const MAILER_MAILBOX: usize = 1024;
/// Longest a wake-up may wait for the mailer.
const MAILER_DEADLINE: Duration = Duration::from_secs(5);

/// Requests queued at one saga actor: a customer's cancel and an operator's retry at most,
/// so a handful is plenty.
const SAGA_MAILBOX: usize = 16;

/// `bookings`: the saga coordinator, which creates sagas, and the `sagas` dynamic
/// supervisor, which runs one actor per saga in flight (up to `bookings.max_in_flight`).
fn bookings_subtree(
    w: &Wiring<'_>,
    deps: SagaDeps,
) -> (
    SupervisorBuilder,
    ActorHandle<SagaCoordinator>,
    Arc<SagaDeps>,
) {
    let config = w.config;
    let mut sup = SupervisorBuilder::new("bookings", Strategy::OneForOne, w.policy());
    let deps = Arc::new(deps);
    // The callback holds the deps weakly: they hold the supervisor.
    let weak = Arc::downgrade(&deps);
    deps.sagas.on_child_end(move |id, end| {
        if let Some(deps) = weak.upgrade() {
            on_saga_end(&deps, id, end);
        }
    });
    // Sagas first: the coordinator resumes unfinished sagas as it starts.
    sup.dynamic(&deps.sagas, Restart::Permanent, w.shutdown_timeout);
    let spec = w.spec(
        "saga-coordinator".into(),
        config.bookings.mailbox_capacity,
        Duration::from_millis(config.bookings.step_timeout_ms) + Duration::from_secs(5),
    );
    let for_coordinator = deps.clone();
    let coordinator = sup.actor(spec, w.arbiter(0), move || {
        SagaCoordinator::new(for_coordinator.clone())
    });
    (sup, coordinator, deps)
}

/// `payments`: the adapter every gateway call goes through. Sagas get a
/// [`SupervisedGateway`] that asks it.
fn payments_subtree(
    w: &Wiring<'_>,
    gateway: Arc<dyn PaymentGateway>,
) -> (
    SupervisorBuilder,
    Arc<dyn PaymentGateway>,
    Arc<PartnerStats>,
) {
    let config = &w.config.payments.adapter;
    let mut sup = SupervisorBuilder::new("payments", Strategy::OneForOne, w.policy());
    let stats = Arc::new(PartnerStats::default());
    // The deadline of an ask covers the call's own timeout plus the wait for a slot.
    let deadline = Duration::from_millis(config.call_timeout_ms) + Duration::from_secs(1);
    let spec = w.spec("payment-gateway".into(), config.mailbox_capacity, deadline);
    let (published, for_snapshot, adapter) = (stats.clone(), stats.clone(), config.clone());
    let handle = sup.actor_with_status(
        spec,
        w.arbiter(0),
        move || PaymentAdapter::new(gateway.clone(), &adapter, published.clone()),
        move || for_snapshot.to_json(),
    );
    (sup, Arc::new(SupervisedGateway::new(handle)), stats)
}
