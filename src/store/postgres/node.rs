//! [`PgNode`]: this node's side of the shared database, behind the seam's traits
//! ([`SagaStore`], [`Outbox`], [`ClusterStore`]).
//!
//! Leases are its private business: the sagas this node drives are the ones it holds a
//! lease on (granted when it creates a saga, claims an expired one, or takes a parked one
//! for an operator), kept in memory here, renewed by [`SagaStore::keep_claims`], given up
//! by [`SagaStore::hand_over`], and named with their epoch in every write, which the
//! database refuses once another node has claimed the saga
//! ([`StoreError::Fenced`]). The rules deciding which saga is claimable and when a lease
//! is due live in `domain::lease`; the SQL that applies them is in [`super::sagas`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::group::{self, GroupWriter};
use super::invalidate::Invalidations;
use super::outbox::EmailLease;
use super::sagas::{self, Created, FencedWrite, Lease, NewSaga, SagaRow, SagaWriteError};
use super::PgStore;
use crate::domain::account::AccountId;
use crate::domain::outbox::{
    after_failure, AfterFailure, EmailCounts, OutboxEmail, ParkedEmail, PARKED_EMAILS_LISTED,
};
use crate::domain::saga::{
    is_terminal, with_stored_cancel, ParkedSaga, SagaCounts, SagaKind, SagaRecord, SagaState,
    SagaTally,
};
use crate::store::cluster::{BookedSkus, ClusterStore, Member};
use crate::store::outbox::{ClaimedEmail, Outbox};
use crate::store::sagas::{NewBooking, Resumable, SagaStore, SagaWrite, Saved, SharedTally};
use crate::store::{codec, StoreError, StoreFuture};

/// How long a node may take to send the emails it claimed before another node may.
const EMAIL_LEASE: Duration = Duration::from_secs(30);

/// This node on the shared database: its pool, its name and the leases it holds.
#[derive(Clone)]
pub struct PgNode {
    db: PgStore,
    node: Arc<str>,
    address: Arc<str>,
    /// How long a lease lasts without renewal.
    lease: Duration,
    /// The database URL, for the `LISTEN` connection.
    url: Arc<str>,
    /// Leases this node holds, by saga id.
    held: Arc<Mutex<HashMap<String, Lease>>>,
    /// This node's counts, installed from the database at start-up and kept by its
    /// writes: what is shown until the first cluster-wide aggregate, and the parks count.
    tally: Arc<SharedTally>,
    /// The cluster-wide saga counts as last aggregated ([`SagaStore::refresh_counts`]).
    aggregate: Arc<Mutex<Option<SagaCounts>>>,
    /// The cluster's parked emails as last counted ([`Outbox::refresh_counts`]).
    emails: Arc<Mutex<EmailCounts>>,
    /// Saga writes of this node's concurrent sagas, sent together.
    writer: Arc<GroupWriter<FencedWrite, bool>>,
    /// New sagas of this node's concurrent bookings, created together.
    creator: Arc<GroupWriter<NewSaga, Created>>,
    /// SKUs whose booking's confirming write announced them already (with its commit),
    /// each with how many such writes the saga has not yet called `announce_booked` for.
    announced: Arc<Mutex<HashMap<String, usize>>>,
    /// Records this node just wrote (a saga it created, a saga's last write), until the
    /// saga's next load ([`PgNode::keep_for_next_load`]).
    fresh: Arc<Mutex<HashMap<String, SagaRecord>>>,
}

impl std::fmt::Debug for PgNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgNode").field("node", &self.node).finish()
    }
}

impl PgNode {
    /// Node `node`, reached at `address`, on `db` (whose URL is `url`), holding leases
    /// for `lease` between renewals.
    pub fn new(db: PgStore, url: &str, node: &str, address: &str, lease: Duration) -> Self {
        PgNode {
            db,
            node: node.into(),
            address: address.into(),
            lease,
            url: url.into(),
            held: Arc::default(),
            tally: Arc::default(),
            aggregate: Arc::default(),
            emails: Arc::default(),
            writer: Arc::new(group::saves()),
            creator: Arc::new(group::creations()),
            announced: Arc::default(),
            fresh: Arc::default(),
        }
    }

    /// The pool (for the stores not yet behind the seam's traits).
    pub fn database(&self) -> &PgStore {
        &self.db
    }

    /// How long a lease lasts without renewal.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold(&self, lease: Lease) {
        self.held().insert(lease.saga_id.clone(), lease);
    }

    fn lease_of(&self, saga_id: &str) -> Option<Lease> {
        self.held().get(saga_id).cloned()
    }

    fn forget(&self, saga_id: &str) {
        self.held().remove(saga_id);
    }

    /// Writes a record (with its email, the booking it finished and the SKU it booked)
    /// under this node's lease, in the next batch of this node's saga writes; forgets the
    /// lease once the saga is over or taken over.
    async fn save_under_lease(
        &self,
        row: SagaRow,
        email: Option<sagas::OutboxEmail>,
        finished: Option<SagaRow>,
        booked_sku: Option<String>,
    ) -> Result<bool, StoreError> {
        let lease = self
            .lease_of(&row.id)
            .ok_or_else(|| StoreError::Fenced(format!("saga {}", row.id)))?;
        let (id, terminal) = (row.id.clone(), row.terminal);
        let write = FencedWrite {
            lease,
            row,
            email,
            finished,
            booked_sku: booked_sku.clone(),
        };
        match self.writer.write(&self.db, self.lease, write).await {
            Ok(cancel_requested) => {
                if terminal {
                    self.forget(&id);
                }
                if let Some(sku) = booked_sku {
                    self.announced_now(sku);
                }
                Ok(cancel_requested)
            }
            Err(e) => {
                if matches!(e, SagaWriteError::Fenced { .. }) {
                    self.forget(&id);
                }
                Err(write_error(e))
            }
        }
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, HashMap<String, SagaRecord>> {
        self.fresh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `record`, just written by this node, for the saga's next load, which then
    /// costs no round trip: the first load of a saga this node created (its actor
    /// starting), and the load after a saga's last write (its follow-up, once the actor
    /// stopped). Nothing but this node's lease writes a saga in between; the stored row can
    /// differ only by a customer's cancel stored meanwhile, which a load an instant earlier
    /// would have missed too: the next write reports it (`Saved::cancel_requested`), and a
    /// confirmed booking with one stays claimable until its cancellation exists.
    fn keep_for_next_load(&self, record: SagaRecord) {
        let mut fresh = self.fresh();
        // Only sagas whose actor never started stay here; bounded anyway (a forgotten
        // entry costs its load a round trip, nothing more).
        if fresh.len() >= MOST_FRESH_KEPT {
            fresh.clear();
        }
        fresh.insert(record.saga_id.to_string(), record);
    }

    fn announced(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.announced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that a write announced `sku` with its commit, so the saga's own
    /// `announce_booked` after it costs no second `NOTIFY`.
    fn announced_now(&self, sku: String) {
        let mut announced = self.announced();
        // Only a caller that stopped calling `announce_booked` after its writes would let
        // this grow; bounded anyway (forgetting costs a redundant NOTIFY, nothing more).
        if announced.len() >= MOST_ANNOUNCED_KEPT {
            announced.clear();
        }
        *announced.entry(sku).or_default() += 1;
    }

    /// Drops what [`keep_for_next_load`](Self::keep_for_next_load) kept of saga `id`: it
    /// was, or may have been, written otherwise.
    fn not_fresh(&self, id: &str) {
        self.fresh().remove(id);
    }

    /// Whether a write already announced `sku` (and this call is the saga's own, after it).
    fn was_announced(&self, sku: &str) -> bool {
        let mut announced = self.announced();
        match announced.get_mut(sku) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                announced.remove(sku);
                true
            }
            None => false,
        }
    }
}

/// SKUs remembered as announced by a write at most (see [`PgNode::announced_now`]).
const MOST_ANNOUNCED_KEPT: usize = 10_000;
/// Records kept for their next load at most (see [`PgNode::keep_for_next_load`]).
const MOST_FRESH_KEPT: usize = 10_000;

/// The SKU a write books: a booking's record entering `confirmed` (what the saga then
/// announces to the other nodes' search caches, which the write does with its commit).
fn booked_sku(write: &SagaWrite<'_>) -> Option<String> {
    let record = write.record;
    (record.kind == SagaKind::Booking
        && record.state == SagaState::Confirmed
        && write.was != Some(SagaState::Confirmed))
    .then(|| record.request.sku.clone())
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
        record: crate::store::encode_saga(record),
        trace_parent: record.trace.as_ref().map(|t| t.traceparent.clone()),
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

/// Most sagas claimed in one pass.
const CLAIM_BATCH: usize = 200;
/// Parked sagas the aggregate lists (the console lists up to 50, `/health` 20).
const AGGREGATE_PARKED_LISTED: i64 = 50;

impl SagaStore for PgNode {
    fn find_booking(&self, record: &SagaRecord, key: &str) -> StoreFuture<Option<NewBooking>> {
        let (db, key) = (self.db.clone(), key.to_owned());
        let digest = Sha256::digest(codec::encode(&record.request));
        Box::pin(async move {
            match db.booking_of_key(&key, digest.as_slice()).await {
                Ok(Some(Created::Existing { saga_id })) => Ok(Some(NewBooking::Existing(saga_id))),
                Ok(_) => Ok(None),
                Err(SagaWriteError::KeyReused(_)) => Ok(Some(NewBooking::KeyReused)),
                Err(e) => Err(write_error(e)),
            }
        })
    }

    fn create_booking(&self, record: &SagaRecord, key: &str) -> StoreFuture<NewBooking> {
        let (me, row, key) = (self.clone(), row_of(record), key.to_owned());
        let digest = Sha256::digest(codec::encode(&record.request));
        let record = record.clone();
        Box::pin(async move {
            let new = NewSaga {
                node: me.node.to_string(),
                row,
                key: Some((key, digest.to_vec())),
            };
            let created = me.creator.write(&me.db, me.lease, new).await;
            match created {
                Ok(Created::New(lease)) => {
                    me.hold(lease);
                    me.tally.replace(None, &record);
                    me.keep_for_next_load(record);
                    Ok(NewBooking::Created)
                }
                Ok(Created::Existing { saga_id }) => Ok(NewBooking::Existing(saga_id)),
                Err(SagaWriteError::KeyReused(_)) => Ok(NewBooking::KeyReused),
                Err(e) => Err(write_error(e)),
            }
        })
    }

    fn load(&self, id: &str) -> StoreFuture<Option<SagaRecord>> {
        if let Some(record) = self.fresh().remove(id) {
            return Box::pin(async move { Ok(Some(record)) });
        }
        let (db, id) = (self.db.clone(), id.to_owned());
        Box::pin(async move {
            match db.saga(&id).await? {
                Some(stored) => {
                    let mut record: SagaRecord =
                        crate::store::decode_saga(id.as_bytes(), &stored.row.record)?;
                    if stored.cancel_requested {
                        with_stored_cancel(&mut record);
                    }
                    Ok(Some(record))
                }
                None => Ok(None),
            }
        })
    }

    fn save(&self, write: SagaWrite<'_>) -> StoreFuture<Saved> {
        let me = self.clone();
        let row = row_of(write.record);
        let email = write.email.map(|e| sagas::OutboxEmail {
            id: email_uuid(&e.id),
            email: codec::encode(e),
        });
        let finished = write.finished.map(|(_, booking)| row_of(booking));
        let booked = booked_sku(&write);
        let record = write.record.clone();
        let was = write.was;
        let finished_record = write.finished.map(|(before, b)| (before, b.clone()));
        Box::pin(async move {
            if let Some((_, booking)) = &finished_record {
                me.not_fresh(&booking.saga_id.to_string());
            }
            let cancel_requested = me.save_under_lease(row, email, finished, booked).await?;
            me.tally.replace(was, &record);
            if let Some((before, booking)) = &finished_record {
                me.tally.replace(Some(*before), booking);
            }
            // The saga's actor stops after its last write; its follow-up loads it next.
            if is_terminal(record.state) || record.state == SagaState::NeedsAttention {
                let mut last = record;
                if cancel_requested {
                    with_stored_cancel(&mut last);
                }
                me.keep_for_next_load(last);
            }
            Ok(Saved { cancel_requested })
        })
    }

    fn request_cancel(&self, id: &str) -> StoreFuture<()> {
        self.not_fresh(id);
        let (db, id) = (self.db.clone(), id.to_owned());
        Box::pin(async move {
            db.request_cancel(&id).await?;
            Ok(())
        })
    }

    fn start_follow_up(&self, record: &SagaRecord, of: &str) -> StoreFuture<bool> {
        self.not_fresh(of);
        let (me, row, of, record) = (self.clone(), row_of(record), of.to_owned(), record.clone());
        Box::pin(async move {
            let created = me.db.start_follow_up(&me.node, me.lease, &row, &of).await?;
            // The finished saga is terminal now: nothing of it to renew.
            me.forget(&of);
            match created {
                Some(lease) => {
                    me.hold(lease);
                    me.tally.replace(None, &record);
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn park(&self, record: &SagaRecord, was: SagaState) -> StoreFuture<()> {
        self.not_fresh(&record.saga_id.to_string());
        let (me, row, record) = (self.clone(), row_of(record), record.clone());
        Box::pin(async move {
            // Under this node's lease (parked rows are never claimed; a retry takes them).
            let id = row.id.clone();
            me.save_under_lease(row, None, None, None).await?;
            me.forget(&id);
            me.tally.replace(Some(was), &record);
            Ok(())
        })
    }

    fn retry_parked(&self, record: &SagaRecord, was: SagaState) -> StoreFuture<bool> {
        self.not_fresh(&record.saga_id.to_string());
        let (me, row, record) = (self.clone(), row_of(record), record.clone());
        Box::pin(async move {
            match me.db.take_parked(&me.node, me.lease, &row).await? {
                Some(lease) => {
                    me.hold(lease);
                    me.tally.replace(Some(was), &record);
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn account_bookings(
        &self,
        account: AccountId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreFuture<Vec<String>> {
        let (db, after) = (self.db.clone(), after.map(str::to_owned));
        Box::pin(async move {
            let rows = db.account_sagas(account.0, after.as_deref(), limit).await?;
            Ok(rows.into_iter().map(|r| r.id).collect())
        })
    }

    fn may_drive(&self, id: &str) -> bool {
        self.lease_of(id).is_some()
    }

    /// Nothing to resume: every node claims expired leases as it goes
    /// ([`SagaStore::take_work`]), this one included. Only the counts are built.
    fn resumable(&self) -> StoreFuture<Resumable> {
        let me = self.clone();
        Box::pin(async move {
            let rows = me.db.saga_records().await?;
            let records: Vec<SagaRecord> = rows
                .iter()
                .filter_map(|(id, bytes)| crate::store::decode_saga(id.as_bytes(), bytes).ok())
                .collect();
            me.tally.init_once(|| SagaTally::from_records(&records));
            Ok(Resumable::default())
        })
    }

    fn take_work(&self, max: usize) -> StoreFuture<Vec<String>> {
        let me = self.clone();
        let max = max.min(CLAIM_BATCH);
        Box::pin(async move {
            if max == 0 {
                return Ok(Vec::new());
            }
            let claimed = me
                .db
                .claim_expired_sagas(&me.node, max as i64, me.lease)
                .await?;
            let mut ids = Vec::with_capacity(claimed.len());
            for (lease, row) in claimed {
                let id = lease.saga_id.clone();
                if let Err(e) = crate::store::decode_saga(id.as_bytes(), &row.record) {
                    tracing::error!(saga = %id, error = %e, "Claimed an unreadable saga; left to its lease.");
                    continue;
                }
                me.not_fresh(&id);
                me.hold(lease);
                ids.push(id);
            }
            if !ids.is_empty() {
                tracing::info!(claimed = ids.len(), node = %me.node, "Took over sagas whose lease ran out.");
            }
            Ok(ids)
        })
    }

    fn keep_claims(&self) -> StoreFuture<()> {
        let me = self.clone();
        Box::pin(async move {
            let leases: Vec<Lease> = me.held().values().cloned().collect();
            if leases.is_empty() {
                return Ok(());
            }
            let renewed = me.db.renew_leases(&leases, me.lease).await?;
            let kept: HashSet<&str> = renewed.iter().map(|l| l.saga_id.as_str()).collect();
            let mut held = me.held();
            for lease in &leases {
                // Finished meanwhile (forgotten), or taken over: either way not ours now.
                if !kept.contains(lease.saga_id.as_str()) && held.get(&lease.saga_id) == Some(lease)
                {
                    held.remove(&lease.saga_id);
                    tracing::warn!(saga = %lease.saga_id, epoch = lease.epoch, "Saga lease lost; another node may take it over.");
                }
            }
            Ok(())
        })
    }

    fn hand_over(&self) -> StoreFuture<()> {
        let me = self.clone();
        Box::pin(async move {
            let leases: Vec<Lease> = me.held().drain().map(|(_, l)| l).collect();
            for lease in &leases {
                if let Err(e) = me.db.release_lease(lease).await {
                    tracing::warn!(saga = %lease.saga_id, error = %e, "Cannot release a lease; it will run out.");
                }
            }
            if !leases.is_empty() {
                tracing::info!(released = leases.len(), "Saga leases released.");
            }
            Ok(())
        })
    }

    /// The cluster-wide aggregate once there is one, with this node's parks count.
    fn counts(&self, parked_listed: usize) -> SagaCounts {
        let own = self.tally.counts(parked_listed);
        match &*self.aggregate.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(all) => SagaCounts {
                parked: all.parked.iter().take(parked_listed).cloned().collect(),
                parks: own.parks,
                ..all.clone()
            },
            None => own,
        }
    }

    /// Two cheap queries: counts per state, and the first parked sagas.
    fn refresh_counts(&self) -> StoreFuture<()> {
        let me = self.clone();
        Box::pin(async move {
            let (by_state, parked) = me.db.saga_aggregate(AGGREGATE_PARKED_LISTED).await?;
            let needs_attention = by_state
                .iter()
                .find(|(state, _)| state == SagaState::NeedsAttention.as_str())
                .map_or(0, |(_, n)| *n as usize);
            let parked = parked
                .iter()
                .map(|(id, bytes)| {
                    let reason = crate::store::decode_saga(id.as_bytes(), bytes)
                        .ok()
                        .and_then(|r| r.needs_attention)
                        .unwrap_or_else(|| "unreadable record".into());
                    ParkedSaga {
                        id: id.clone(),
                        reason,
                    }
                })
                .collect();
            let counts = SagaCounts {
                by_state: by_state
                    .into_iter()
                    .map(|(state, n)| (state, n.max(0) as u64))
                    .collect(),
                parked,
                needs_attention,
                ..SagaCounts::default()
            };
            *me.aggregate.lock().unwrap_or_else(|p| p.into_inner()) = Some(counts);
            Ok(())
        })
    }

    fn claimed_here(&self) -> Option<usize> {
        Some(self.held().len())
    }
}

impl Outbox for PgNode {
    /// Claims pending emails nobody holds (`FOR UPDATE SKIP LOCKED`) under a lease of
    /// `EMAIL_LEASE`; an email whose lease runs out before it is marked sent may be
    /// sent again by another node (at least once, as on one node).
    fn claim(&self, max: usize) -> StoreFuture<Vec<ClaimedEmail>> {
        let me = self.clone();
        Box::pin(async move {
            let claimed = me
                .db
                .claim_emails(&me.node, max as i64, EMAIL_LEASE)
                .await?;
            let mut emails = Vec::with_capacity(claimed.len());
            for (lease, bytes) in claimed {
                match codec::decode::<OutboxEmail>(&bytes) {
                    Ok(email) => emails.push(ClaimedEmail {
                        email,
                        epoch: lease.epoch,
                        attempt: lease.attempts.max(1) as u32,
                        unresolved_before: lease.unresolved_before,
                    }),
                    // Left pending for an operator; never silently dropped.
                    Err(e) => {
                        tracing::error!(email = %lease.id, error = %e, "Unreadable outbox entry.")
                    }
                }
            }
            Ok(emails)
        })
    }

    /// One statement for the whole batch, each email fenced by its own lease.
    fn mark_sent(&self, sent: Vec<ClaimedEmail>) -> StoreFuture<()> {
        let me = self.clone();
        Box::pin(async move {
            let leases: Vec<EmailLease> = sent.iter().map(|c| me.email_lease(c)).collect();
            let marked: HashSet<uuid::Uuid> = match me.db.mark_emails_sent(&leases).await {
                Ok(marked) => marked.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(emails = sent.len(), error = %e, "Sent emails not marked sent; they may be sent again.");
                    return Ok(());
                }
            };
            for (claimed, lease) in sent.iter().zip(&leases) {
                if !marked.contains(&lease.id) {
                    tracing::warn!(email = %claimed.email.id, "Sent email not marked sent (its claim ran out); it may be sent again.");
                }
            }
            Ok(())
        })
    }

    fn failed(&self, claimed: ClaimedEmail, reason: &str) -> StoreFuture<AfterFailure> {
        let (me, reason) = (self.clone(), reason.to_owned());
        Box::pin(async move {
            let verdict = after_failure(claimed.attempt);
            let (park, wait) = match verdict {
                AfterFailure::Park => (true, Duration::ZERO),
                AfterFailure::RetryAfter(wait) => (false, wait),
            };
            let lease = me.email_lease(&claimed);
            me.db
                .email_failed(&lease, &reason, park, wait)
                .await
                .map_err(write_error)?;
            if park {
                let mut emails = me.emails.lock().unwrap_or_else(|p| p.into_inner());
                emails.parked += 1;
                if emails.parked_listed.len() < PARKED_EMAILS_LISTED {
                    emails
                        .parked_listed
                        .push(ParkedEmail::of(&claimed.email, &reason));
                }
            }
            Ok(verdict)
        })
    }

    fn counts(&self) -> EmailCounts {
        self.emails
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refresh_counts(&self) -> StoreFuture<()> {
        let me = self.clone();
        Box::pin(async move {
            let (count, rows) = me.db.parked_emails(PARKED_EMAILS_LISTED as i64).await?;
            let mut listed = Vec::with_capacity(rows.len());
            for row in rows {
                match codec::decode::<OutboxEmail>(&row.email) {
                    Ok(email) => listed.push(ParkedEmail::of(&email, &row.reason)),
                    Err(e) => tracing::error!(error = %e, "Unreadable parked email."),
                }
            }
            *me.emails.lock().unwrap_or_else(|p| p.into_inner()) = EmailCounts {
                parked: count.max(0) as u64,
                parked_listed: listed,
            };
            Ok(())
        })
    }
}

impl PgNode {
    /// The lease this node holds on a claimed email.
    fn email_lease(&self, claimed: &ClaimedEmail) -> EmailLease {
        EmailLease {
            id: email_uuid(&claimed.email.id),
            node: self.node.to_string(),
            epoch: claimed.epoch,
            attempts: claimed.attempt as i32,
            unresolved_before: claimed.unresolved_before,
        }
    }
}

/// The `LISTEN` session, as the seam's subscription.
struct Listening(Invalidations);

impl BookedSkus for Listening {
    fn next(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + '_>> {
        Box::pin(self.0.next())
    }
}

impl ClusterStore for PgNode {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }

    fn node(&self) -> &str {
        &self.node
    }

    fn heartbeat(&self, version: &'static str) -> StoreFuture<()> {
        let me = self.clone();
        Box::pin(async move { Ok(me.db.heartbeat(&me.node, &me.address, version).await?) })
    }

    fn members(&self) -> StoreFuture<Vec<Member>> {
        let db = self.db.clone();
        Box::pin(async move { Ok(db.members().await?) })
    }

    /// A SKU the confirming write announced with its commit is not announced again.
    fn announce_booked(&self, sku: &str) -> StoreFuture<()> {
        if self.was_announced(sku) {
            return Box::pin(async { Ok(()) });
        }
        let (db, sku) = (self.db.clone(), sku.to_owned());
        Box::pin(async move { Ok(db.announce_booked(&sku).await?) })
    }

    fn listen_booked(&self) -> StoreFuture<Option<Box<dyn BookedSkus>>> {
        let (url, views) = (self.url.clone(), self.db.views().clone());
        Box::pin(async move {
            let listener = Invalidations::listen(&url, views).await?;
            Ok(Some(Box::new(Listening(listener)) as Box<dyn BookedSkus>))
        })
    }

    fn ping(&self) -> StoreFuture<()> {
        let db = self.db.clone();
        Box::pin(async move { Ok(db.ping().await?) })
    }

    fn live(&self) -> crate::store::cluster::LiveFuture<'_> {
        Box::pin(async move { Some(self.db.live().await) })
    }

    fn display_name(&self) -> &'static str {
        "PostgreSQL"
    }
}
