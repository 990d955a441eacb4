//! The runtime as operators see it: health, the supervision tree, figures for metrics,
//! and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::{Check, Health, Runtime};
use crate::actors::guard::PartnerStats;
use crate::actors::notify::MailerStats;
use crate::actors::search::SearchStats;
use crate::error::Error;
use crate::faults::FaultCounts;
use crate::store::{self, ClusterStore, Store};
use crate::supervisor::{SupervisorSnapshot, SupervisorState};

/// Longest a health probe of the store may take before the store counts as failing.
const STORE_PROBE_DEADLINE: Duration = Duration::from_secs(2);
/// Parked sagas `/health` lists (the count is always whole).
const HEALTH_PARKED_LISTED: usize = 20;
/// How often the store is probed (a record written and flushed). `/health` reports the
/// last result with its age instead of writing on every call, so a flood of anonymous
/// health checks costs no disk I/O.
pub(super) const STORE_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// The store's health as last probed. Written only by the probe task; read by `/health`.
#[derive(Debug)]
pub(super) struct StoreProbe {
    last: ArcSwap<Probed>,
    /// The shared store a probe also asks (a process alone: always answers).
    cluster: Arc<dyn ClusterStore>,
}

/// One probe's findings: this node's own store, then the shared one.
#[derive(Debug)]
struct Probed {
    local: Check,
    shared: Check,
    at: Instant,
}

impl StoreProbe {
    /// Probes once now, so health is known before the first request.
    pub(super) async fn first(store: &dyn Store, cluster: Arc<dyn ClusterStore>) -> StoreProbe {
        StoreProbe {
            last: ArcSwap::from_pointee(probe(store, &*cluster).await),
            cluster,
        }
    }

    /// Probes every [`STORE_PROBE_INTERVAL`] until the task is aborted (at shutdown).
    pub(super) async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        loop {
            tokio::time::sleep(STORE_PROBE_INTERVAL).await;
            let probed = probe(&*store, &*self.cluster).await;
            for check in [&probed.local, &probed.shared] {
                if !check.ok {
                    tracing::warn!(detail = ?check.detail, "Store probe failed.");
                }
            }
            self.last.store(Arc::new(probed));
        }
    }

    /// The store's check now: this node's own store as last probed, and the shared store
    /// as its connections show it now when it tracks that (PostgreSQL: a failed statement
    /// turns it red at once, the first good one green), else as last probed.
    async fn check(&self) -> Check {
        let last = self.last.load();
        if !last.local.ok {
            return last.local.clone();
        }
        match self.cluster.live().await {
            Some(Ok(())) => last.local.clone(),
            Some(Err(cause)) => Check {
                ok: false,
                detail: Some(cause),
            },
            None => last.shared.clone(),
        }
    }
}

/// Writes and flushes a probe record within [`STORE_PROBE_DEADLINE`]; in a cluster, then
/// asks the shared database to answer within the same deadline.
async fn probe(store: &dyn Store, cluster: &dyn ClusterStore) -> Probed {
    let local = probe_local(store).await;
    let shared = match tokio::time::timeout(STORE_PROBE_DEADLINE, cluster.ping()).await {
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
            detail: Some(format!(
                "{} did not answer within {STORE_PROBE_DEADLINE:?}",
                cluster.display_name()
            )),
        },
    };
    Probed {
        local,
        shared,
        at: Instant::now(),
    }
}

async fn probe_local(store: &dyn Store) -> Check {
    match tokio::time::timeout(STORE_PROBE_DEADLINE, store::probe(store)).await {
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
    }
}

impl Runtime {
    /// Faults fired on purpose since start (`[faults]`); all zero when it is off.
    pub fn fault_counts(&self) -> FaultCounts {
        self.inner.faults.snapshot()
    }

    /// Emails handed to the transport.
    pub fn mailer_stats(&self) -> &MailerStats {
        &self.inner.mailer_stats
    }

    /// Emails parked after their last failed attempt (with several nodes: the cluster's,
    /// refreshed every few seconds).
    pub fn email_counts(&self) -> crate::domain::outbox::EmailCounts {
        self.inner.outbox.counts()
    }

    /// Per-seller figures (breaker, calls, look-to-book) for metrics.
    pub fn seller_stats(&self) -> &[(String, Arc<PartnerStats>)] {
        &self.inner.sellers
    }

    /// Figures of the payment gateway's adapter (breaker, calls, latency).
    pub fn gateway_stats(&self) -> &Arc<PartnerStats> {
        &self.inner.gateway_stats
    }

    /// Search cache and coalescing counters for metrics.
    pub fn search_stats(&self) -> &SearchStats {
        &self.inner.search_stats
    }

    /// The supervision tree as it is now.
    pub fn supervision_tree(&self) -> SupervisorSnapshot {
        self.inner.root.snapshot()
    }

    /// Real health: the store took a flushed write at its last probe (and has not failed
    /// since), and every supervisor is within its restart intensity. Costs no I/O: the
    /// probe runs on its own schedule.
    pub async fn health(&self) -> Health {
        let store = match self.inner.store.failure_cause() {
            // A fail-stop store says so at once, without waiting for the next probe.
            Some(cause) => Check {
                ok: false,
                detail: Some(cause),
            },
            None => self.inner.probe.check().await,
        };
        let tree = self.supervision_tree();
        let mut failed = Vec::new();
        tree.for_each_supervisor(&mut |s| {
            if let Some(f) = &s.failure {
                if s.state != SupervisorState::Running {
                    failed.push(f.reason.clone());
                }
            }
        });
        let supervisors = Check {
            ok: tree.is_healthy(),
            detail: (!failed.is_empty()).then(|| failed.join("; ")),
        };
        let sagas = Some(self.saga_counts(HEALTH_PARKED_LISTED));
        let mut health = Health {
            status: "ok",
            backend: match self.inner.config.store.backend {
                crate::config::StoreBackend::Sled => "sled",
                crate::config::StoreBackend::Postgres => "postgres",
            },
            store,
            supervisors,
            sagas,
            emails: self.email_counts(),
            store_probe_age_ms: self.inner.probe.last.load().at.elapsed().as_millis() as u64,
            uptime_secs: self.inner.started.elapsed().as_secs(),
        };
        if !health.is_ok() {
            health.status = "unhealthy";
        }
        health
    }

    /// The nodes sharing this node's database, with their heartbeats and the sagas each
    /// holds; on sled, this node alone.
    pub async fn cluster(&self) -> Result<super::ClusterView, Error> {
        let config = &self.inner.config;
        let deps = &self.inner.saga_deps;
        let members = deps.cluster.members().await.map_err(Error::Store)?;
        Ok(super::ClusterView {
            backend: deps.cluster.backend(),
            node: deps.cluster.node().to_owned(),
            lease_ms: config.cluster.lease_ms,
            sagas_held_here: deps
                .saga_store
                .claimed_here()
                .unwrap_or_else(|| deps.sagas.len()),
            members: members
                .into_iter()
                .map(|m| super::ClusterMember {
                    id: m.id,
                    address: m.address,
                    version: m.version,
                    heartbeat_age_ms: m.heartbeat_age_ms,
                    sagas_held: m.sagas_held,
                })
                .collect(),
        })
    }

    /// Stops every actor (in reverse start order, each within its shutdown timeout),
    /// flushes the store and stops the actor threads. Idempotent.
    ///
    /// An error means the final flush failed: the store had failed (every acknowledged
    /// write was flushed when it was acknowledged, so nothing acknowledged is lost), and a
    /// process should exit non-zero so whatever runs it notices.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let tasks = std::mem::take(
            &mut *self
                .inner
                .background
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for task in tasks {
            task.abort();
        }
        self.inner.root.shutdown().await;
        if let Err(e) = self.inner.saga_deps.saga_store.hand_over().await {
            tracing::warn!(error = %e, "Cannot hand the sagas over; their leases will run out.");
        }
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
