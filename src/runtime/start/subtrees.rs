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
    #[cfg(feature = "postgres")]
    let database = w.cluster.as_ref().map(|c| {
        (
            c.db.clone(),
            Arc::new(crate::actors::account::pg::KnownKeys::new(
                config.accounts.cache_capacity,
            )),
        )
    });
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
            #[cfg(feature = "postgres")]
            let database = database.clone();
            sup.actor(spec, w.arbiter(index), move || {
                let (store, faults) = (store.clone(), faults.clone());
                let shard =
                    AccountShard::new(index, store, capacity, currency, faults, segment.clone());
                #[cfg(feature = "postgres")]
                let shard = shard.with_database(database.clone());
                shard
            })
        })
        .collect();
    // Under injected account faults every read goes to the actors, so drills see them; in
    // a cluster every read asks the database through them (no node caches an account).
    #[allow(unused_mut)]
    let mut bypass = faults.armed();
    #[cfg(feature = "postgres")]
    {
        bypass |= database.is_some();
    }
    let reads = AccountReads {
        model,
        bypass,
        #[cfg(feature = "postgres")]
        known_keys: database.map(|(_, keys)| keys),
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

/// `search`: the aggregators, each fanning out over every seller route.
pub(super) fn search_subtree(
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
pub(super) fn notifier_subtree(
    w: &Wiring<'_>,
    transport: Arc<dyn MailTransport>,
) -> (SupervisorBuilder, ActorHandle<Mailer>, Arc<MailerStats>) {
    let mut sup = SupervisorBuilder::new("notifier", Strategy::OneForOne, w.policy());
    let stats = Arc::new(MailerStats::default());
    let (store, published, panics) = (w.store.clone(), stats.clone(), w.panics(ActorKind::Mailer));
    let spec = w.spec("mailer".into(), MAILER_MAILBOX, MAILER_DEADLINE);
    #[cfg(feature = "postgres")]
    let cluster = w.cluster.clone();
    let mailer = sup.actor(spec, w.arbiter(0), move || {
        let mailer = Mailer::new(store.clone(), transport.clone(), published.clone())
            .with_panic_faults(panics.clone());
        #[cfg(feature = "postgres")]
        let mailer = mailer.with_cluster(cluster.clone());
        mailer
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
