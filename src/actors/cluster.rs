//! This node's part in a cluster of wayfare nodes sharing one PostgreSQL database
//! (`store.backend = "postgres"`): which sagas it holds leases on, and the duties every
//! node performs on a timer (`run_duties`):
//!
//! - renew the leases of the sagas it is driving (a lease missing from the answer was
//!   taken over: the saga's next write is fenced and its actor stops);
//! - claim unfinished sagas whose lease ran out (their node died or paused) with
//!   `FOR UPDATE SKIP LOCKED`, and run them here, within `bookings.max_in_flight`;
//! - heartbeat its row in `nodes` (what `/v1/system/cluster` lists).
//!
//! `listen_for_bookings` keeps a `LISTEN` connection open so a SKU booked through any node
//! drops out of this node's search caches.
//!
//! The leases held are the only state here; the database decides who holds what.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::booking::SagaDeps;
use super::search::{InvalidateSku, SearchAggregator};
use crate::domain::outbox::OutboxEmail;
use crate::domain::saga::{is_terminal, SagaKind, SagaRecord, SagaState};
use crate::store::postgres::invalidate::Invalidations;
use crate::store::postgres::nodes::Member;
use crate::store::postgres::sagas::{self, Created, Lease, SagaRow, SagaWriteError};
use crate::store::postgres::PgStore;
use crate::store::{codec, decode_record, StoreError, Tree};
use crate::supervisor::ActorHandle;

/// Most sagas claimed in one pass.
const CLAIM_BATCH: usize = 200;

/// This node in the cluster: its database pool, its name and the leases it holds.
pub(crate) struct Cluster {
    /// The shared database.
    pub(crate) db: PgStore,
    /// This node's id (owner of its leases).
    pub(crate) node: String,
    /// Where this node is reached.
    pub(crate) address: String,
    /// How long a lease lasts without renewal.
    pub(crate) lease: Duration,
    /// The database URL, for the `LISTEN` connection.
    url: String,
    /// Leases this node holds, by saga id.
    held: Mutex<HashMap<String, Lease>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish()
    }
}

/// What creating a booking saga found.
pub(crate) enum NewSaga {
    /// Created; this node holds its lease.
    Created,
    /// The idempotency key was used before, through any node, for the same request.
    Existing(String),
    /// The key was used for another request.
    KeyReused,
}

impl Cluster {
    /// This node, on `db`.
    pub(crate) fn new(
        db: PgStore,
        url: String,
        node: String,
        address: String,
        lease: Duration,
    ) -> Self {
        Cluster {
            db,
            node,
            address,
            lease,
            url,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a lease this node was granted.
    pub(crate) fn hold(&self, lease: Lease) {
        self.held().insert(lease.saga_id.clone(), lease);
    }

    /// The lease this node holds on `saga_id`, if any.
    pub(crate) fn lease_of(&self, saga_id: &str) -> Option<Lease> {
        self.held().get(saga_id).cloned()
    }

    /// Forgets the lease of a saga that finished, parked or was taken over.
    pub(crate) fn forget(&self, saga_id: &str) {
        self.held().remove(saga_id);
    }

    /// How many leases this node holds.
    pub(crate) fn held_count(&self) -> usize {
        self.held().len()
    }

    /// A saga's stored record.
    pub(crate) async fn load(&self, saga_id: &str) -> Result<Option<SagaRecord>, StoreError> {
        match self.db.saga(saga_id).await? {
            Some(stored) => {
                decode_record(Tree::Sagas, saga_id.as_bytes(), &stored.row.record).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Creates a booking saga under its client idempotency key (global to the cluster).
    pub(crate) async fn create_booking(
        &self,
        record: &SagaRecord,
        key: &str,
    ) -> Result<NewSaga, StoreError> {
        let digest = Sha256::digest(codec::encode(&record.request));
        match self
            .db
            .create_saga(
                &self.node,
                self.lease,
                &row_of(record),
                Some((key, digest.as_slice())),
            )
            .await
        {
            Ok(Created::New(lease)) => {
                self.hold(lease);
                Ok(NewSaga::Created)
            }
            Ok(Created::Existing { saga_id }) => Ok(NewSaga::Existing(saga_id)),
            Err(SagaWriteError::KeyReused(_)) => Ok(NewSaga::KeyReused),
            Err(e) => Err(write_error(e)),
        }
    }

    /// Writes a saga's new record under this node's lease, with the email it causes and a
    /// booking its cancellation finished, in one transaction. [`StoreError::Fenced`] when
    /// the lease is gone: the caller must stop driving the saga.
    pub(crate) async fn save(
        &self,
        record: &SagaRecord,
        email: Option<&OutboxEmail>,
        finished: Option<&SagaRecord>,
    ) -> Result<(), StoreError> {
        let id = record.saga_id.to_string();
        let lease = self
            .lease_of(&id)
            .ok_or_else(|| StoreError::Fenced(format!("saga {id}")))?;
        let email = email.map(|e| sagas::OutboxEmail {
            id: email_uuid(&e.id),
            email: codec::encode(e),
        });
        let finished = finished.map(row_of);
        let saved = self
            .db
            .save_saga_with(
                &lease,
                self.lease,
                &row_of(record),
                email.as_ref(),
                finished.as_ref(),
            )
            .await;
        match saved {
            Ok(()) => {
                if row_of(record).terminal {
                    self.forget(&id);
                }
                Ok(())
            }
            Err(e) => {
                if matches!(e, SagaWriteError::Fenced { .. }) {
                    self.forget(&id);
                }
                Err(write_error(e))
            }
        }
    }

    /// Creates the cancellation saga of a finished booking unless it exists; true when
    /// this node created it and holds its lease (it must launch it).
    pub(crate) async fn start_follow_up(
        &self,
        record: &SagaRecord,
        of: &str,
    ) -> Result<bool, StoreError> {
        let created = self
            .db
            .start_follow_up(&self.node, self.lease, &row_of(record), of)
            .await?;
        // The finished saga is terminal now: nothing of it to renew.
        self.forget(of);
        match created {
            Some(lease) => {
                self.hold(lease);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// An operator's retry of a parked saga: true when this node now holds it.
    pub(crate) async fn take_parked(&self, record: &SagaRecord) -> Result<bool, StoreError> {
        match self
            .db
            .take_parked(&self.node, self.lease, &row_of(record))
            .await?
        {
            Some(lease) => {
                self.hold(lease);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The nodes of the cluster as the database knows them.
    pub(crate) async fn members(&self) -> Result<Vec<Member>, StoreError> {
        Ok(self.db.members().await?)
    }

    /// Gives every lease up (a clean shutdown, after the saga actors stopped), so other
    /// nodes take the sagas over at once rather than when the leases run out.
    pub(crate) async fn release_all(&self) {
        let leases: Vec<Lease> = self.held().drain().map(|(_, l)| l).collect();
        for lease in &leases {
            if let Err(e) = self.db.release_lease(lease).await {
                tracing::warn!(saga = %lease.saga_id, error = %e, "Cannot release a lease; it will run out.");
            }
        }
        if !leases.is_empty() {
            tracing::info!(released = leases.len(), "Saga leases released.");
        }
    }
}

/// A saga record as a row. `terminal` marks what no node must resume: finished and parked
/// sagas, except a confirmed booking with a cancellation requested, which stays claimable
/// until its cancellation saga exists (`start_follow_up` then marks it terminal).
pub(crate) fn row_of(record: &SagaRecord) -> SagaRow {
    let awaiting_cancellation = record.kind == SagaKind::Booking
        && record.cancel_requested
        && record.state == SagaState::Confirmed;
    SagaRow {
        id: record.saga_id.to_string(),
        account_id: (record.kind == SagaKind::Booking).then_some(record.request.account_id.0),
        state: record.state.as_str().to_owned(),
        terminal: (is_terminal(record.state) && !awaiting_cancellation)
            || record.state == SagaState::NeedsAttention,
        record: codec::encode(record),
    }
}

/// The outbox row id of an email: its deterministic text id, hashed to a UUID, so writing
/// one email twice stays one row.
fn email_uuid(id: &str) -> uuid::Uuid {
    let hash = Sha256::digest(id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Uuid::from_bytes(bytes)
}

fn write_error(e: SagaWriteError) -> StoreError {
    match e {
        SagaWriteError::Fenced { saga_id, .. } => StoreError::Fenced(format!("saga {saga_id}")),
        SagaWriteError::KeyReused(key) => StoreError::Io(format!("idempotency key {key:?} reused")),
        SagaWriteError::Store(e) => e.into(),
    }
}

/// The node's timer: heartbeat, renew held leases, claim expired ones and run them.
/// Runs until the task is aborted (at shutdown). Every `lease / 3` (so a live node renews
/// each lease twice before it could run out), and at least every second (so leases given
/// up by a node stopping cleanly are claimed within about a second).
pub(crate) async fn run_duties(deps: Arc<SagaDeps>, version: &'static str) {
    let Some(cluster) = deps.cluster.clone() else {
        return;
    };
    let every = (cluster.lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        if let Err(e) = cluster
            .db
            .heartbeat(&cluster.node, &cluster.address, version)
            .await
        {
            tracing::warn!(error = %e, "Cluster heartbeat failed.");
        }
        renew(&cluster).await;
        claim(&deps, &cluster).await;
        tokio::time::sleep(every).await;
    }
}

async fn renew(cluster: &Cluster) {
    let leases: Vec<Lease> = cluster.held().values().cloned().collect();
    if leases.is_empty() {
        return;
    }
    match cluster.db.renew_leases(&leases, cluster.lease).await {
        Ok(renewed) => {
            let kept: std::collections::HashSet<&str> =
                renewed.iter().map(|l| l.saga_id.as_str()).collect();
            let mut held = cluster.held();
            for lease in &leases {
                // Finished meanwhile (forgotten), or taken over: either way not ours now.
                if !kept.contains(lease.saga_id.as_str()) && held.get(&lease.saga_id) == Some(lease)
                {
                    held.remove(&lease.saga_id);
                    tracing::warn!(saga = %lease.saga_id, epoch = lease.epoch, "Saga lease lost; another node may take it over.");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, held = leases.len(), "Cannot renew saga leases."),
    }
}

async fn claim(deps: &Arc<SagaDeps>, cluster: &Cluster) {
    let free = deps
        .sagas
        .max_children()
        .saturating_sub(deps.sagas.len())
        .min(CLAIM_BATCH);
    if free == 0 {
        return;
    }
    let claimed = match cluster
        .db
        .claim_expired_sagas(&cluster.node, free as i64, cluster.lease)
        .await
    {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot claim expired sagas.");
            return;
        }
    };
    if claimed.is_empty() {
        return;
    }
    tracing::info!(claimed = claimed.len(), node = %cluster.node, "Took over sagas whose lease ran out.");
    for (lease, row) in claimed {
        let id = lease.saga_id.clone();
        if let Err(e) = decode_record::<SagaRecord>(Tree::Sagas, id.as_bytes(), &row.record) {
            tracing::error!(saga = %id, error = %e, "Claimed an unreadable saga; left to its lease.");
            continue;
        }
        cluster.hold(lease);
        super::coordinator::launch(deps, &id);
    }
}

/// Keeps a `LISTEN` connection open and drops every SKU booked through any node from
/// this node's search caches; reconnects after a lost connection. Runs until aborted.
pub(crate) async fn listen_for_bookings(
    cluster: Arc<Cluster>,
    aggregators: Vec<ActorHandle<SearchAggregator>>,
) {
    let mut wait = Duration::from_millis(100);
    loop {
        match Invalidations::listen(&cluster.url).await {
            Ok(mut listener) => {
                wait = Duration::from_millis(100);
                while let Some(sku) = listener.next().await {
                    for aggregator in &aggregators {
                        let _ = aggregator.ask(InvalidateSku { sku: sku.clone() }).await;
                    }
                }
                tracing::warn!("Lost the LISTEN connection for booked SKUs; reconnecting.");
            }
            Err(e) => tracing::warn!(error = %e, "Cannot LISTEN for booked SKUs; retrying."),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}
