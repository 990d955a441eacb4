//! The cluster duties of a node sharing its store with other nodes, as two supervised
//! actors under the `cluster` supervisor (which exists only when the store is shared:
//! a process alone has nobody to heartbeat to, no lease to renew, no other node's saga to
//! claim and nobody else's bookings to hear of, so it runs neither):
//!
//! - [`ClusterDuties`]: on a timer, heartbeats this node's membership, keeps its claims on
//!   the sagas it drives (`SagaStore::keep_claims`: a saga whose claim was lost is fenced
//!   at its next write and its actor stops) and takes over sagas nobody drives any more
//!   (`SagaStore::take_work`), within `bookings.max_in_flight`; and every few seconds it
//!   refreshes the cluster-wide saga counts `/health` and metrics show
//!   (`SagaStore::refresh_counts`: a cheap aggregate in the database);
//! - [`BookedSkuListener`]: keeps a subscription to the SKUs booked through any node open,
//!   so they drop out of this node's search caches (on PostgreSQL the same session feeds
//!   the store's account views, which are not served while it is lost).
//!
//! A panic in either restarts it under the usual policy; the leases themselves are the
//! store's, so a restarted duty actor goes on renewing the same ones.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::booking::SagaDeps;
use super::search::{InvalidateSku, SearchAggregator};
use super::PanicFaults;
use crate::store::ClusterStore;
use crate::supervisor::ActorHandle;

/// How often the cluster-wide saga counts are refreshed.
const COUNTS_EVERY: Duration = Duration::from_secs(3);

/// Heartbeat, claims and take-overs, every `every`.
pub(crate) struct ClusterDuties {
    deps: Arc<SagaDeps>,
    version: &'static str,
    every: Duration,
    /// A pass is running (a slow database must not stack passes up).
    busy: bool,
    panics: PanicFaults,
}

impl std::fmt::Debug for ClusterDuties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterDuties")
            .field("every", &self.every)
            .finish()
    }
}

impl ClusterDuties {
    /// Duties for the sagas in `deps`, every `every` (see `domain::lease::duty_interval`).
    pub(crate) fn new(
        deps: Arc<SagaDeps>,
        version: &'static str,
        every: Duration,
        panics: PanicFaults,
    ) -> Self {
        ClusterDuties {
            deps,
            version,
            every,
            busy: false,
            panics,
        }
    }
}

impl Actor for ClusterDuties {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(DoDuties);
        ctx.run_interval(self.every, |_, ctx| ctx.notify(DoDuties));
        refresh_counts(self, ctx);
        ctx.run_interval(COUNTS_EVERY, refresh_counts);
    }
}

/// Runs one pass of the duties unless one is running (internal, from the timer).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct DoDuties;

/// Spawns the pass (the mailbox stays open; the next tick finds it busy and skips).
impl Handler<DoDuties> for ClusterDuties {
    type Result = ();

    fn handle(&mut self, _: DoDuties, ctx: &mut Context<Self>) {
        self.panics.maybe_panic(&"cluster duties");
        if self.busy {
            return;
        }
        self.busy = true;
        let (deps, version) = (self.deps.clone(), self.version);
        ctx.spawn(
            async move { duties(&deps, version).await }
                .into_actor(self)
                .map(|(), act, _| act.busy = false),
        );
    }
}

fn refresh_counts(act: &mut ClusterDuties, ctx: &mut Context<ClusterDuties>) {
    let refresh = act.deps.saga_store.refresh_counts();
    ctx.spawn(
        async move {
            if let Err(e) = refresh.await {
                tracing::warn!(error = %e, "Cannot count the cluster's sagas.");
            }
        }
        .into_actor(act),
    );
}

async fn duties(deps: &Arc<SagaDeps>, version: &'static str) {
    if let Err(e) = deps.cluster.heartbeat(version).await {
        tracing::warn!(error = %e, "Cluster heartbeat failed.");
    }
    if let Err(e) = deps.saga_store.keep_claims().await {
        tracing::warn!(error = %e, "Cannot renew saga leases.");
    }
    let free = deps.sagas.max_children().saturating_sub(deps.sagas.len());
    match deps.saga_store.take_work(free).await {
        Ok(ids) => {
            for id in ids {
                super::coordinator::launch(deps, &id);
            }
        }
        Err(e) => tracing::warn!(error = %e, "Cannot claim expired sagas."),
    }
}

/// Drops every SKU booked through any node from this node's search caches.
pub(crate) struct BookedSkuListener {
    cluster: Arc<dyn ClusterStore>,
    aggregators: Vec<ActorHandle<SearchAggregator>>,
}

impl std::fmt::Debug for BookedSkuListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookedSkuListener").finish()
    }
}

impl BookedSkuListener {
    /// Listens through `cluster` on behalf of `aggregators`.
    pub(crate) fn new(
        cluster: Arc<dyn ClusterStore>,
        aggregators: Vec<ActorHandle<SearchAggregator>>,
    ) -> Self {
        BookedSkuListener {
            cluster,
            aggregators,
        }
    }
}

impl Actor for BookedSkuListener {
    type Context = Context<Self>;

    /// Listens for as long as the actor lives, reconnecting after a lost connection with
    /// a doubling wait (0.1 s to 5 s).
    fn started(&mut self, ctx: &mut Context<Self>) {
        let (cluster, aggregators) = (self.cluster.clone(), self.aggregators.clone());
        ctx.spawn(
            async move {
                let mut wait = Duration::from_millis(100);
                loop {
                    match cluster.listen_booked().await {
                        Ok(Some(mut skus)) => {
                            wait = Duration::from_millis(100);
                            while let Some(sku) = skus.next().await {
                                for aggregator in &aggregators {
                                    let _ =
                                        aggregator.ask(InvalidateSku { sku: sku.clone() }).await;
                                }
                            }
                            tracing::warn!("Lost the connection for booked SKUs; reconnecting.");
                        }
                        // Nobody else books: nothing to hear, ever.
                        Ok(None) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "Cannot listen for booked SKUs; retrying.")
                        }
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
            .into_actor(self),
        );
    }
}
