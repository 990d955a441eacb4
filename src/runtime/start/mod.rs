//! Start-up wiring: opens the store and builds the supervision tree, one function per
//! subtree, in the order the subtrees depend on each other:
//!
//! ```text
//! root (one_for_one)
//!  ├── accounts ── AccountShard × accounts.shards
//!  ├── sellers  ── SellerAdapter × configured + custom sellers
//!  ├── search   ── SearchAggregator × search.aggregators   (holds seller handles)
//!  ├── notifier ── Mailer
//!  ├── payments ── PaymentAdapter
//!  ├── bookings ─┬ sagas (dynamic) ── BookingSaga × in flight  (hold all of the above)
//!  │             └ SagaCoordinator
//!  └── cluster  ─┬ ClusterDuties         (only when the store is shared: PostgreSQL)
//!                └ BookedSkuListener
//! ```
//!
//! Handles stay valid across restarts, so a subtree that holds another's handles never
//! needs restarting with it. The subtrees are built in `subtrees.rs`.
//!
//! The storage backend is chosen here, once ([`choose_backend`]): the actors get the
//! seam's trait objects (`store::SagaStore`, `store::Outbox`, `store::ClusterStore`) and
//! never learn which backend they have.

mod subtrees;

use subtrees::{
    accounts_subtree, bookings_subtree, cluster_subtree, notifier_subtree, payments_subtree,
    search_subtree, sellers_subtree, SAGA_MAILBOX,
};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_rt::Arbiter;

use super::partners::{configured_gateway, seller_apis, with_payment_faults, with_store_faults};
use super::system::StoreProbe;
use super::AccountReads;
use super::{CustomSeller, Inner, Runtime, RuntimeBuilder};
use crate::actors::account::{AccountFaults, AccountReadModel, AccountShard};
use crate::actors::booking::SagaDeps;
use crate::actors::cluster::{BookedSkuListener, ClusterDuties};
use crate::actors::coordinator::{on_saga_end, SagaCoordinator};
use crate::actors::guard::PartnerStats;
use crate::actors::notify::{FileTransport, MailTransport, Mailer, MailerStats};
use crate::actors::payment::{PaymentAdapter, SupervisedGateway};
use crate::actors::search::{
    AggregatorSettings, SearchAggregator, SearchStats, SearchView, SellerRoute,
};
use crate::actors::seller::SellerAdapter;
use crate::actors::PanicFaults;
use crate::config::Config;
use crate::error::Error;
use crate::faults::{ActorKind, FaultCounters};
use crate::payments::PaymentGateway;
use crate::store::sled::Solo;
use crate::store::{
    AccountStore, ClusterStore, Outbox, SagaStore, SledAccounts, SledOutbox, SledSagas, SledStore,
    Store,
};
use crate::supervisor::{
    ActorHandle, ChildSpec, DynamicSpec, DynamicSupervisor, Restart, Strategy, SupervisorBuilder,
};

/// What every subtree is built from.
struct Wiring<'a> {
    config: &'a Config,
    backend: &'a Backend,
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

/// The storage backend, as the seam's traits.
struct Backend {
    accounts: Arc<dyn AccountStore>,
    sagas: Arc<dyn SagaStore>,
    outbox: Arc<dyn Outbox>,
    cluster: Arc<dyn ClusterStore>,
}

/// Picks the backend `store.backend` names: sled (over `store`, so its layers and
/// injected faults apply) or PostgreSQL (joining the cluster).
async fn choose_backend(config: &Config, store: &Arc<dyn Store>) -> Result<Backend, Error> {
    #[cfg(feature = "postgres")]
    if config.store.backend == crate::config::StoreBackend::Postgres {
        let node = Arc::new(join_cluster(config).await?);
        let accounts = crate::store::postgres::PgAccounts::new(
            node.database().clone(),
            config.accounts.cache_capacity,
        );
        return Ok(Backend {
            accounts: Arc::new(accounts),
            sagas: node.clone(),
            outbox: node.clone(),
            cluster: node,
        });
    }
    let accounts = SledAccounts::new(store.clone(), config.accounts.cache_capacity);
    Ok(Backend {
        accounts: Arc::new(accounts),
        sagas: Arc::new(SledSagas::new(store.clone())),
        outbox: Arc::new(SledOutbox::new(store.clone())),
        cluster: Arc::new(Solo::new(config.cluster.node_id_or(&config.server.bind))),
    })
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
    let backend = choose_backend(&config, &store).await?;
    let arbiters: Vec<Arbiter> = (0..config.arbiters()).map(|_| Arbiter::new()).collect();
    let wiring = Wiring {
        config: &config,
        backend: &backend,
        arbiters: &arbiters,
        faults: fault_counters.clone(),
        shutdown_timeout: Duration::from_millis(config.supervisor.shutdown_timeout_ms),
    };

    let (accounts, shards, account_reads) = accounts_subtree(&wiring);
    let (sellers, routes, seller_stats) = sellers_subtree(&wiring, custom)?;
    let (search, aggregators, search_views, search_stats) = search_subtree(&wiring, &routes);
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
        saga_store: backend.sagas.clone(),
        cluster: backend.cluster.clone(),
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
    };
    let (bookings, coordinator, saga_deps) = bookings_subtree(&wiring, deps);

    let probe = Arc::new(StoreProbe::first(&*store, backend.cluster.clone()).await);
    let background = vec![actix_rt::spawn(probe.clone().run(store.clone()))];

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
    if backend.cluster.shared() {
        // After the sagas: the duties launch the sagas they take over.
        let cluster = cluster_subtree(&wiring, &saga_deps, &aggregators);
        root.supervisor(cluster, Restart::Permanent, shutdown_timeout);
    }
    let root = root.start();

    let runtime = Runtime {
        inner: Arc::new(Inner {
            store,
            shards,
            account_reads,
            aggregators,
            search_views,
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
            background: Mutex::new(background),
            accounts: backend.accounts.clone(),
            outbox: backend.outbox.clone(),
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

/// With `store.backend = "postgres"`: connects to the shared database, applies the
/// migrations this binary carries (under an advisory lock, so nodes starting together
/// apply them once) and joins the cluster as `cluster.node_id`.
#[cfg(feature = "postgres")]
async fn join_cluster(config: &Config) -> Result<crate::store::postgres::PgNode, Error> {
    use crate::store::postgres::{PgNode, PgStore};
    let unavailable = |e: crate::store::postgres::PgError| Error::Unavailable {
        what: format!("the PostgreSQL database ({e})"),
    };
    let db = PgStore::connect(&config.store).map_err(unavailable)?;
    let migrated = db.migrate().await.map_err(unavailable)?;
    if !migrated.applied.is_empty() {
        tracing::info!(applied = ?migrated.applied, version = migrated.version, "Database schema migrated.");
    }
    let url = config
        .store
        .url
        .as_ref()
        .map(|u| u.expose().to_owned())
        .unwrap_or_default();
    let bind = &config.server.bind;
    let node = PgNode::new(
        db,
        &url,
        &config.cluster.node_id_or(bind),
        &config.cluster.address_or(bind),
        Duration::from_millis(config.cluster.lease_ms),
    );
    tracing::info!(node = %node.node(), "Joined the cluster on PostgreSQL.");
    // Simulated partners live inside each node: a reservation or payment made by one node
    // is unknown to the node that takes its saga over. Fine for a demo, wrong for a cluster.
    let simulated: Vec<&str> = config
        .sellers
        .iter()
        .filter(|s| s.kind == crate::config::SellerKind::Simulated)
        .map(|s| s.name.as_str())
        .collect();
    if !simulated.is_empty() || config.payments.kind == crate::config::PaymentsKind::Simulated {
        tracing::warn!(
            sellers = ?simulated,
            simulated_payments = config.payments.kind == crate::config::PaymentsKind::Simulated,
            "Simulated partners in a cluster: each node has its own, so a saga taken over by \
             another node cannot find what the first node's partner did. Use kind = \"http\" \
             partners shared by every node (examples/partners.toml)."
        );
    }
    Ok(node)
}

/// Opens sled in `store.data_dir` off the async threads (it reads and may recover its log).
/// In a cluster it holds only this node's own files (health probes); everything shared is
/// in PostgreSQL.
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, Error> {
    let dir = config.store.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || SledStore::open(&dir))
        .await
        .map_err(|e| Error::Unavailable {
            what: format!("store opener ({e})"),
        })??;
    Ok(Arc::new(store))
}
