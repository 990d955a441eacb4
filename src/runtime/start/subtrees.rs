//! One function per subtree of the supervision tree (see the parent module's picture),
//! each returning its supervisor builder and the handles the others need.

use super::*;

/// `accounts`: the account shards, spread over the arbiters.
pub(super) fn accounts_subtree(
    w: &Wiring<'_>,
) -> (
    SupervisorBuilder,
    Vec<ActorHandle<AccountShard>>,
    AccountReads,
) {
    let config = w.config;
    let model = AccountReadModel::new(config.account_shards(), config.accounts.cache_capacity);
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
            let (store, currency, faults) = (
                w.backend.accounts.clone(),
                config.accounts.currency,
                faults.clone(),
            );
            let segment = model.segment(index);
            sup.actor(spec, w.arbiter(index), move || {
                AccountShard::new(
                    index,
                    store.clone(),
                    currency,
                    faults.clone(),
                    segment.clone(),
                )
            })
        })
        .collect();
    // Under injected account faults every read goes to the actors, so drills see them; on
    // a shared store nothing is published in memory: the store's own views (kept current
    // by its listener) answer when they may, else the read asks it through the actors.
    let reads = AccountReads {
        model,
        bypass: faults.armed() || !w.backend.accounts.sole_writer(),
        store_views: !faults.armed(),
    };
    (sup, shards, reads)
}

type SellerSubtree = (
    SupervisorBuilder,
    Arc<Vec<SellerRoute>>,
    Vec<(String, Arc<PartnerStats>)>,
);

/// `sellers`: one adapter per seller, with the figures each publishes.
pub(super) fn sellers_subtree(
    w: &Wiring<'_>,
    custom: Vec<CustomSeller>,
) -> Result<SellerSubtree, Error> {
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

/// The search subtree, its aggregators, each one's cache view (same index) and their
/// shared figures.
type SearchSubtree = (
    SupervisorBuilder,
    Vec<ActorHandle<SearchAggregator>>,
    Vec<Arc<SearchView>>,
    Arc<SearchStats>,
);

/// `search`: the aggregators, each fanning out over every seller route.
pub(super) fn search_subtree(w: &Wiring<'_>, routes: &Arc<Vec<SellerRoute>>) -> SearchSubtree {
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
    // Each aggregator's view outlives its incarnations: a restarted one empties it.
    let views: Vec<Arc<SearchView>> = (0..config.search_aggregators())
        .map(|_| Arc::new(SearchView::new()))
        .collect();
    let aggregators = (0..config.search_aggregators())
        .map(|index| {
            // The fan-out deadline plus room for merging and the reply.
            let spec = w.spec(
                format!("search-aggregator-{index}"),
                config.search.mailbox_capacity,
                settings.deadline + Duration::from_millis(500),
            );
            let (routes, settings, stats, panics, view) = (
                routes.clone(),
                settings.clone(),
                stats.clone(),
                w.panics(ActorKind::Search),
                views[index].clone(),
            );
            sup.actor(spec, w.arbiter(index), move || {
                SearchAggregator::new(
                    routes.clone(),
                    settings.clone(),
                    stats.clone(),
                    view.clone(),
                )
                .with_panic_faults(panics.clone())
            })
        })
        .collect();
    (sup, aggregators, views, stats)
}

/// `notifier`: the mailer draining the outbox through `transport`.
pub(super) fn notifier_subtree(
    w: &Wiring<'_>,
    transport: Arc<dyn MailTransport>,
) -> (SupervisorBuilder, ActorHandle<Mailer>, Arc<MailerStats>) {
    let mut sup = SupervisorBuilder::new("notifier", Strategy::OneForOne, w.policy());
    let stats = Arc::new(MailerStats::default());
    let (outbox, published, panics) = (
        w.backend.outbox.clone(),
        stats.clone(),
        w.panics(ActorKind::Mailer),
    );
    let spec = w.spec("mailer".into(), MAILER_MAILBOX, MAILER_DEADLINE);
    let mailer = sup.actor(spec, w.arbiter(0), move || {
        Mailer::new(outbox.clone(), transport.clone(), published.clone())
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
pub(super) const SAGA_MAILBOX: usize = 16;

/// `bookings`: the saga coordinator, which creates sagas, and the `sagas` dynamic
/// supervisor, which runs one actor per saga in flight (up to `bookings.max_in_flight`).
pub(super) fn bookings_subtree(
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
pub(super) fn payments_subtree(
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

/// Requests queued at a cluster duty actor: its own timer ticks only.
const CLUSTER_MAILBOX: usize = 16;

/// `cluster`: the duties of a node sharing its store (heartbeat, lease renewals,
/// take-overs) and its subscription to SKUs booked elsewhere. Started only when the store
/// is shared; see `actors::cluster`.
pub(super) fn cluster_subtree(
    w: &Wiring<'_>,
    deps: &Arc<SagaDeps>,
    aggregators: &[ActorHandle<SearchAggregator>],
) -> SupervisorBuilder {
    let mut sup = SupervisorBuilder::new("cluster", Strategy::OneForOne, w.policy());
    let lease = Duration::from_millis(w.config.cluster.lease_ms);
    let every = crate::domain::lease::duty_interval(lease);
    let (for_duties, panics) = (deps.clone(), w.panics(ActorKind::Cluster));
    let spec = w.spec("cluster-duties".into(), CLUSTER_MAILBOX, lease);
    sup.actor(spec, w.arbiter(0), move || {
        ClusterDuties::new(
            for_duties.clone(),
            env!("CARGO_PKG_VERSION"),
            every,
            panics.clone(),
        )
    });
    let (cluster, aggregators) = (deps.cluster.clone(), aggregators.to_vec());
    let spec = w.spec("booked-sku-listener".into(), CLUSTER_MAILBOX, lease);
    sup.actor(spec, w.arbiter(1), move || {
        BookedSkuListener::new(cluster.clone(), aggregators.clone())
    });
    sup
}
