//! Sagas owned by exactly one node at a time: leases with epoch fencing.
//!
//! The rules:
//! 1. A saga row names its owner node, a lease expiry and an epoch; only the owner drives
//!    the saga, and only while the lease (judged by the database's clock) has not expired.
//! 2. Every saga write names the owner and epoch it was made under and changes nothing
//!    unless both still match and the lease is live ([`SagaWriteError::Fenced`]): a node
//!    that lost its lease (a pause, a partition) cannot write late.
//! 3. The owner renews its leases while it works on them ([`PgStore::renew_leases`]).
//! 4. Any node claims sagas whose lease expired with `FOR UPDATE SKIP LOCKED`, raising the
//!    epoch ([`PgStore::claim_expired_sagas`]); two nodes never claim the same saga.
//! 5. The outbox's emails follow the same discipline (see [`super::outbox`]).

use std::time::Duration;
use tracing::Instrument as _;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{PgError, PgStore};

/// The right to drive one saga: held by `node` under `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The saga.
    pub saga_id: String,
    /// The node holding it.
    pub node: String,
    /// Raised by every claim; writes under an older epoch are refused.
    pub epoch: i64,
}

/// A saga as stored: the columns queries need, and the whole record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaRow {
    /// Saga id (as wayfare prints it).
    pub id: String,
    /// The booking's account, if any (for the account's bookings).
    pub account_id: Option<Uuid>,
    /// State name (`pending`, `confirmed`, ...).
    pub state: String,
    /// Whether the saga is over (terminal sagas are never claimed).
    pub terminal: bool,
    /// The full record, codec-encoded.
    pub record: Vec<u8>,
    /// The `traceparent` of the request that created the saga, if traced.
    pub trace_parent: Option<String>,
}

/// A saga row with its lease columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSaga {
    /// The row.
    pub row: SagaRow,
    /// Owner node, if ever claimed.
    pub owner_node: Option<String>,
    /// Lease expiry.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Epoch.
    pub epoch: i64,
    /// Whether a customer's cancel was stored for it ([`PgStore::request_cancel`]).
    pub cancel_requested: bool,
}

/// What creating a saga under a booking idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The saga is new and this node holds its lease.
    New(Lease),
    /// The key was used before (through any node) for the same request: that saga.
    Existing {
        /// Its id.
        saga_id: String,
    },
}

/// An email to send, written with the saga change that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEmail {
    /// Email id.
    pub id: Uuid,
    /// Encoded email.
    pub email: Vec<u8>,
}

/// One saga's write in a batch ([`PgStore::save_sagas`]): its new row under `lease`, and
/// what its step caused, written only if the lease still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencedWrite {
    /// The lease the write is made under (its epoch is the fence).
    pub lease: Lease,
    /// The saga's new row.
    pub row: SagaRow,
    /// The email the step causes.
    pub email: Option<OutboxEmail>,
    /// The finished booking a cancellation ends (never leased: written with its
    /// cancellation's write).
    pub finished: Option<SagaRow>,
    /// A SKU this write books, announced to every node's search caches with the commit.
    pub booked_sku: Option<String>,
}

impl FencedWrite {
    fn fenced(&self) -> SagaWriteError {
        SagaWriteError::Fenced {
            saga_id: self.lease.saga_id.clone(),
            node: self.lease.node.clone(),
            epoch: self.lease.epoch,
        }
    }
}

/// A new saga for [`PgStore::create_sagas`]: its row, leased to `node`, with its booking
/// idempotency key (`key`, and a digest of the request) if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSaga {
    /// The node creating it (which holds its first lease).
    pub node: String,
    /// The saga's row.
    pub row: SagaRow,
    /// The booking idempotency key and the request's digest.
    pub key: Option<(String, Vec<u8>)>,
}

/// Why a saga write changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SagaWriteError {
    /// The writer no longer holds the lease under its epoch (or it expired).
    #[error("saga {saga_id}: the lease of node {node} at epoch {epoch} is no longer held")]
    Fenced {
        /// Saga (or email) id.
        saga_id: String,
        /// The writer.
        node: String,
        /// The writer's epoch.
        epoch: i64,
    },
    /// The booking idempotency key was used before for a different request.
    #[error("idempotency key {0:?} was used for another request")]
    KeyReused(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] PgError),
}

/// New sagas with their booking keys as one statement ([`PgStore::create_sagas`]): the
/// keys first, in key order (two nodes' batches then wait for each other's keys in one
/// order), and each saga only if it has no key or its key was inserted. A key's reference
/// to its saga is checked at the end of the statement, when both rows exist.
const CREATE_SAGAS: &str = "
WITH w AS (
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::boolean[], $5::bytea[],
                         $6::text[], $7::text[], $8::text[], $9::bytea[])
        AS w(id, account_id, state, terminal, record, node, trace_parent, key, digest)),
k AS (
    INSERT INTO booking_keys (key, request_digest, saga_id)
    SELECT key, digest, id FROM w WHERE key IS NOT NULL ORDER BY key
    ON CONFLICT (key) DO NOTHING
    RETURNING saga_id)
INSERT INTO sagas (id, account_id, state, terminal, record, owner_node, lease_expires_at,
                   epoch, created_at, updated_at, trace_parent)
SELECT id, account_id, state, terminal, record, node,
       now() + $10::bigint * interval '1 millisecond', 1, now(), now(), trace_parent
  FROM w WHERE key IS NULL OR id IN (SELECT saga_id FROM k)
RETURNING id, epoch";

/// One saga's write under its lease, when it writes nothing else ([`SAVE_SAGAS`] for one).
const SAVE_ONE_SAGA: &str = "
UPDATE sagas SET state = $4, record = $6, updated_at = now(),
       terminal = $5 AND (cancel_requested_at IS NULL OR $4 <> 'confirmed'),
       lease_expires_at = now() + $7::bigint * interval '1 millisecond'
 WHERE id = $1 AND owner_node = $2 AND epoch = $3 AND lease_expires_at > now()
RETURNING cancel_requested_at IS NOT NULL";

/// A batch of fenced saga writes as one statement ([`PgStore::save_sagas`]): element i of
/// the arrays is saga i's write. `saved` holds the sagas whose fence held; only their
/// finished bookings, emails and booked SKUs are written (a lost lease writes nothing).
const SAVE_SAGAS: &str = "
WITH w AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::boolean[],
                         $6::bytea[], $8::uuid[], $9::bytea[], $10::text[], $11::text[],
                         $12::boolean[], $13::bytea[], $15::text[])
        AS w(id, node, epoch, state, terminal, record, email_id, email, finished_id,
             finished_state, finished_terminal, finished_record, sku)),
saved AS (
    UPDATE sagas s SET state = w.state, record = w.record, updated_at = now(),
           terminal = w.terminal AND (s.cancel_requested_at IS NULL OR w.state <> 'confirmed'),
           lease_expires_at = now() + $7::bigint * interval '1 millisecond'
      FROM w
     WHERE s.id = w.id AND s.owner_node = w.node AND s.epoch = w.epoch
       AND s.lease_expires_at > now()
    RETURNING s.id, s.cancel_requested_at IS NOT NULL AS cancel_requested, w.email_id,
              w.email, w.finished_id, w.finished_state, w.finished_terminal,
              w.finished_record, w.sku),
finished AS (
    UPDATE sagas s SET state = saved.finished_state, terminal = saved.finished_terminal,
           record = saved.finished_record, updated_at = now()
      FROM saved
     WHERE s.id = saved.finished_id),
emailed AS (
    INSERT INTO outbox (id, saga_id, status, email, created_at)
    SELECT email_id, id, 'pending', email, now() FROM saved WHERE email_id IS NOT NULL
    ON CONFLICT (id) DO NOTHING)
SELECT id, cancel_requested,
       CASE WHEN sku IS NOT NULL THEN pg_notify($14, sku) IS NULL END
  FROM saved";

pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Stores a new saga leased to `node` for `lease_for`, with its booking idempotency key
    /// (`key`, and a digest of the request) in the same transaction. A key already used
    /// for the same request returns that saga ([`Created::Existing`]); for another request,
    /// [`SagaWriteError::KeyReused`]. The key's uniqueness is the database's, so this holds
    /// across nodes.
    pub async fn create_saga(
        &self,
        node: &str,
        lease_for: Duration,
        row: &SagaRow,
        key: Option<(&str, &[u8])>,
    ) -> Result<Created, SagaWriteError> {
        let span = super::statement_span("INSERT", None, "INSERT sagas booking_keys");
        async move {
            let client = self.client().await?;
            // One statement, so one round trip: the key first (its primary key settles two
            // nodes sending it at once: the second waits for the first and inserts
            // nothing), and the saga only if the key was inserted. The key's reference to
            // the saga is checked at the end of the statement, when both rows exist.
            let created = client
                .query_opt(
                    &client
                        .prepare_cached(
                            "WITH k AS (
                                 INSERT INTO booking_keys (key, request_digest, saga_id)
                                 SELECT $9, $10, $1 WHERE $9::text IS NOT NULL
                                 ON CONFLICT (key) DO NOTHING RETURNING saga_id)
                             INSERT INTO sagas (id, account_id, state, terminal, record,
                                 owner_node, lease_expires_at, epoch, created_at, updated_at,
                                 trace_parent)
                             SELECT $1, $2, $3, $4, $5, $6,
                                    now() + $7::bigint * interval '1 millisecond', 1, now(),
                                    now(), $8
                              WHERE $9::text IS NULL OR EXISTS (SELECT 1 FROM k)
                             RETURNING epoch",
                        )
                        .await
                        .map_err(PgError::from)?,
                    &[
                        &row.id,
                        &row.account_id,
                        &row.state,
                        &row.terminal,
                        &row.record,
                        &node,
                        &millis(lease_for),
                        &row.trace_parent,
                        &key.map(|(k, _)| k),
                        &key.map(|(_, d)| d),
                    ],
                )
                .await
                .map_err(PgError::from)?;
            if let Some(created) = created {
                return Ok(Created::New(Lease {
                    saga_id: row.id.clone(),
                    node: node.to_owned(),
                    epoch: created.get(0),
                }));
            }
            // The key was used before (a replay, or another node won the race): its saga.
            let Some((key, digest)) = key else {
                return Err(PgError::Corrupt {
                    what: format!("saga {}", row.id),
                    reason: "a saga without a key was not inserted".into(),
                }
                .into());
            };
            let existing = client
                .query_one(
                    &client
                        .prepare_cached(
                            "SELECT request_digest, saga_id FROM booking_keys WHERE key = $1",
                        )
                        .await
                        .map_err(PgError::from)?,
                    &[&key],
                )
                .await
                .map_err(PgError::from)?;
            existing_saga(key, digest, &existing)
        }
        .instrument(span)
        .await
    }

    /// Creates every saga of `new` as [`create_saga`](Self::create_saga) does, in one
    /// statement and one transaction: each answer, in the order of `new`, is that saga's
    /// own (a key used before answers the saga it names, or
    /// [`SagaWriteError::KeyReused`]; two sagas of the batch sending one key make one
    /// saga). `Err` when the statement itself failed: then nothing of the batch was
    /// written.
    pub async fn create_sagas(
        &self,
        lease_for: Duration,
        new: &[NewSaga],
    ) -> Result<Vec<Result<Created, SagaWriteError>>, PgError> {
        if let [one] = new {
            let key = one.key.as_ref().map(|(k, d)| (k.as_str(), d.as_slice()));
            return match self.create_saga(&one.node, lease_for, &one.row, key).await {
                Err(SagaWriteError::Store(e)) => Err(e),
                answer => Ok(vec![answer]),
            };
        }
        let span = super::statement_span("INSERT", None, "INSERT sagas booking_keys");
        async move {
            let ids: Vec<&str> = new.iter().map(|n| n.row.id.as_str()).collect();
            let accounts: Vec<Option<uuid::Uuid>> = new.iter().map(|n| n.row.account_id).collect();
            let states: Vec<&str> = new.iter().map(|n| n.row.state.as_str()).collect();
            let terminals: Vec<bool> = new.iter().map(|n| n.row.terminal).collect();
            let records: Vec<&[u8]> = new.iter().map(|n| n.row.record.as_slice()).collect();
            let nodes: Vec<&str> = new.iter().map(|n| n.node.as_str()).collect();
            let traces: Vec<Option<&str>> =
                new.iter().map(|n| n.row.trace_parent.as_deref()).collect();
            let keys: Vec<Option<&str>> = new
                .iter()
                .map(|n| n.key.as_ref().map(|(k, _)| k.as_str()))
                .collect();
            let digests: Vec<Option<&[u8]>> = new
                .iter()
                .map(|n| n.key.as_ref().map(|(_, d)| d.as_slice()))
                .collect();
            let client = self.client().await?;
            let created: std::collections::HashMap<String, i64> = client
                .query(
                    &client.prepare_cached(CREATE_SAGAS).await?,
                    &[
                        &ids,
                        &accounts,
                        &states,
                        &terminals,
                        &records,
                        &nodes,
                        &traces,
                        &keys,
                        &digests,
                        &millis(lease_for),
                    ],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            // The keys used before (a replay, another node's, or the batch's own twice):
            // the saga each names, read once the batch's own keys are committed.
            let taken: Vec<&str> = new
                .iter()
                .filter(|n| !created.contains_key(&n.row.id))
                .filter_map(|n| n.key.as_ref().map(|(k, _)| k.as_str()))
                .collect();
            let existing: std::collections::HashMap<String, tokio_postgres::Row> =
                if taken.is_empty() {
                    Default::default()
                } else {
                    client
                        .query(
                            &client
                                .prepare_cached(
                                    "SELECT request_digest, saga_id, key FROM booking_keys
                                      WHERE key = ANY($1)",
                                )
                                .await?,
                            &[&taken],
                        )
                        .await?
                        .into_iter()
                        .map(|r| (r.get(2), r))
                        .collect()
                };
            Ok(new
                .iter()
                .map(|n| {
                    if let Some(epoch) = created.get(&n.row.id) {
                        return Ok(Created::New(Lease {
                            saga_id: n.row.id.clone(),
                            node: n.node.clone(),
                            epoch: *epoch,
                        }));
                    }
                    let Some((key, digest)) = &n.key else {
                        return Err(not_inserted(&n.row.id));
                    };
                    match existing.get(key) {
                        Some(row) => existing_saga(key, digest, row),
                        None => Err(not_inserted(&n.row.id)),
                    }
                })
                .collect())
        }
        .instrument(span)
        .await
    }

    /// Writes the saga's new state under `lease`, renewing it for `lease_for`, with the
    /// email it causes (if any) in the same transaction. Refused, changing nothing, unless
    /// the lease is still held under its epoch ([`SagaWriteError::Fenced`]). True when a
    /// customer's cancel is stored for the saga ([`PgStore::request_cancel`]); a confirmed
    /// booking with one stays claimable (not terminal) until its cancellation exists.
    pub async fn save_saga(
        &self,
        lease: &Lease,
        lease_for: Duration,
        row: &SagaRow,
        email: Option<&OutboxEmail>,
    ) -> Result<bool, SagaWriteError> {
        self.save_saga_with(lease, lease_for, row, email, None)
            .await
    }

    /// [`save_saga`](Self::save_saga), also writing `finished` (a finished booking whose
    /// cancellation saga, holding `lease`, just cancelled it) in the same transaction.
    /// A finished booking is never leased: its cancellation saga is the only writer.
    pub async fn save_saga_with(
        &self,
        lease: &Lease,
        lease_for: Duration,
        row: &SagaRow,
        email: Option<&OutboxEmail>,
        finished: Option<&SagaRow>,
    ) -> Result<bool, SagaWriteError> {
        let write = FencedWrite {
            lease: lease.clone(),
            row: row.clone(),
            email: email.cloned(),
            finished: finished.cloned(),
            booked_sku: None,
        };
        let mut saved = self
            .save_sagas(lease_for, std::slice::from_ref(&write))
            .await?;
        saved.pop().unwrap_or_else(|| Err(write.fenced()))
    }

    /// Writes every saga of `writes`, each under its own lease (renewed for `lease_for`)
    /// and with what its step caused ([`FencedWrite`]), in one statement and one
    /// transaction: one round trip and one commit for the batch. Each answer, in the order
    /// of `writes`, is that saga's own: a saga whose lease was lost is refused
    /// ([`SagaWriteError::Fenced`]) and changes nothing, while the others are written.
    /// `Err` when the statement itself failed: then nothing of the batch was written.
    pub async fn save_sagas(
        &self,
        lease_for: Duration,
        writes: &[FencedWrite],
    ) -> Result<Vec<Result<bool, SagaWriteError>>, PgError> {
        let span = super::statement_span("UPDATE", None, "UPDATE sagas outbox");
        async move {
            if writes.is_empty() {
                return Ok(Vec::new());
            }
            if let [one] = writes {
                if one.email.is_none() && one.finished.is_none() && one.booked_sku.is_none() {
                    // Most steps alone (an idle node): the plain fenced update is the
                    // database's least work for them.
                    let client = self.client().await?;
                    let saved = client
                        .query_opt(
                            &client.prepare_cached(SAVE_ONE_SAGA).await?,
                            &[
                                &one.lease.saga_id,
                                &one.lease.node,
                                &one.lease.epoch,
                                &one.row.state,
                                &one.row.terminal,
                                &one.row.record,
                                &millis(lease_for),
                            ],
                        )
                        .await?;
                    return Ok(vec![saved.map(|r| r.get(0)).ok_or_else(|| one.fenced())]);
                }
            }
            // Rows are locked in saga id order, as lease renewals lock them: two
            // statements locking the same sagas never wait for each other in a cycle.
            let mut sorted: Vec<&FencedWrite> = writes.iter().collect();
            sorted.sort_by(|a, b| a.lease.saga_id.cmp(&b.lease.saga_id));
            let column = |f: fn(&FencedWrite) -> Option<&str>| -> Vec<Option<&str>> {
                sorted.iter().copied().map(f).collect()
            };
            let ids = column(|w| Some(&w.lease.saga_id));
            let nodes = column(|w| Some(&w.lease.node));
            let epochs: Vec<i64> = sorted.iter().copied().map(|w| w.lease.epoch).collect();
            let states = column(|w| Some(&w.row.state));
            let terminals: Vec<bool> = sorted.iter().copied().map(|w| w.row.terminal).collect();
            let records: Vec<&[u8]> = sorted
                .iter()
                .copied()
                .map(|w| w.row.record.as_slice())
                .collect();
            let email_ids: Vec<Option<uuid::Uuid>> = sorted
                .iter()
                .copied()
                .map(|w| w.email.as_ref().map(|e| e.id))
                .collect();
            let emails: Vec<Option<&[u8]>> = sorted
                .iter()
                .copied()
                .map(|w| w.email.as_ref().map(|e| e.email.as_slice()))
                .collect();
            let finished_ids = column(|w| w.finished.as_ref().map(|f| f.id.as_str()));
            let finished_states = column(|w| w.finished.as_ref().map(|f| f.state.as_str()));
            let finished_terminals: Vec<Option<bool>> = sorted
                .iter()
                .copied()
                .map(|w| w.finished.as_ref().map(|f| f.terminal))
                .collect();
            let finished_records: Vec<Option<&[u8]>> = sorted
                .iter()
                .copied()
                .map(|w| w.finished.as_ref().map(|f| f.record.as_slice()))
                .collect();
            let skus = column(|w| w.booked_sku.as_deref());
            let client = self.client().await?;
            let rows = client
                .query(
                    &client.prepare_cached(SAVE_SAGAS).await?,
                    &[
                        &ids,
                        &nodes,
                        &epochs,
                        &states,
                        &terminals,
                        &records,
                        &millis(lease_for),
                        &email_ids,
                        &emails,
                        &finished_ids,
                        &finished_states,
                        &finished_terminals,
                        &finished_records,
                        &super::invalidate::CHANNEL,
                        &skus,
                    ],
                )
                .await?;
            let saved: std::collections::HashMap<String, bool> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            Ok(writes
                .iter()
                .map(|w| {
                    saved
                        .get(&w.lease.saga_id)
                        .copied()
                        .ok_or_else(|| w.fenced())
                })
                .collect())
        }
        .instrument(span)
        .await
    }

    /// The saga a booking idempotency key was used for, if it was: [`Created::Existing`]
    /// for the same request (`digest`), [`SagaWriteError::KeyReused`] for another.
    pub async fn booking_of_key(
        &self,
        key: &str,
        digest: &[u8],
    ) -> Result<Option<Created>, SagaWriteError> {
        let span = super::statement_span("SELECT", Some("booking_keys"), "SELECT booking_keys");
        async move {
            let client = self.client().await?;
            let found = client
                .query_opt(
                    &client
                        .prepare_cached(
                            "SELECT request_digest, saga_id FROM booking_keys WHERE key = $1",
                        )
                        .await
                        .map_err(PgError::from)?,
                    &[&key],
                )
                .await
                .map_err(PgError::from)?;
            found
                .map(|row| existing_saga(key, digest, &row))
                .transpose()
        }
        .instrument(span)
        .await
    }

    /// Stores a customer's cancel of booking `id`, from any node; the node driving it acts
    /// on it at its next write. A confirmed booking becomes claimable again until its
    /// cancellation exists. False when there is no such booking.
    pub async fn request_cancel(&self, id: &str) -> Result<bool, PgError> {
        let span = super::statement_span("UPDATE", Some("sagas"), "UPDATE sagas");
        async move {
            let client = self.client().await?;
            let n = client
                .execute(
                    &client
                        .prepare_cached(
                            "UPDATE sagas SET cancel_requested_at = coalesce(cancel_requested_at, now()),
                                terminal = terminal AND state <> 'confirmed'
                         WHERE id = $1 AND account_id IS NOT NULL",
                        )
                        .await
                        .map_err(PgError::from)?,
                    &[&id],
                )
                .await?;
            Ok(n == 1)
        }
        .instrument(span)
        .await
    }

    /// Sagas per state over the whole cluster, and the first `parked_listed` parked sagas
    /// (id and record) in id order: the cheap aggregate `/health` and metrics show.
    pub async fn saga_aggregate(
        &self,
        parked_listed: i64,
    ) -> Result<(Vec<(String, i64)>, Vec<(String, Vec<u8>)>), PgError> {
        let span = super::statement_span("SELECT", Some("sagas"), "SELECT sagas");
        async move {
            let client = self.client().await?;
            let by_state = client
                .query(
                    &client
                        .prepare_cached("SELECT state, count(*) FROM sagas GROUP BY state")
                        .await?,
                    &[],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let parked = client
                .query(
                    &client
                        .prepare_cached(
                            "SELECT id, record FROM sagas WHERE state = 'needs_attention'
                         ORDER BY id LIMIT $1",
                        )
                        .await?,
                    &[&parked_listed],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            Ok((by_state, parked))
        }
        .instrument(span)
        .await
    }

    /// Extends every lease in `leases` still held under its epoch by `lease_for`; returns
    /// those renewed (a lease missing from the answer was lost: stop driving that saga).
    pub async fn renew_leases(
        &self,
        leases: &[Lease],
        lease_for: Duration,
    ) -> Result<Vec<Lease>, PgError> {
        let span = super::statement_span("UPDATE", Some("sagas"), "UPDATE sagas");
        async move {
            if leases.is_empty() {
                return Ok(Vec::new());
            }
            // Rows are locked in saga id order, as batched saga writes lock them.
            let mut sorted: Vec<&Lease> = leases.iter().collect();
            sorted.sort_by(|a, b| a.saga_id.cmp(&b.saga_id));
            let ids: Vec<&str> = sorted.iter().map(|l| l.saga_id.as_str()).collect();
            let nodes: Vec<&str> = sorted.iter().map(|l| l.node.as_str()).collect();
            let epochs: Vec<i64> = sorted.iter().map(|l| l.epoch).collect();
            let client = self.client().await?;
            let rows = client
                .query(
                    &client.prepare_cached("UPDATE sagas s SET lease_expires_at = now() + $4::bigint * interval '1 millisecond'
                 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS l(id, node, epoch)
                 WHERE s.id = l.id AND s.owner_node = l.node AND s.epoch = l.epoch
                   AND s.lease_expires_at > now() AND NOT s.terminal
                 RETURNING s.id, s.owner_node, s.epoch").await.map_err(PgError::from)?,
                    &[&ids, &nodes, &epochs, &millis(lease_for)],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Lease {
                    saga_id: r.get(0),
                    node: r.get(1),
                    epoch: r.get(2),
                })
                .collect())
        }
        .instrument(span)
        .await
    }

    /// Claims up to `limit` unfinished sagas whose lease expired (their node died, paused
    /// or let go), for `node`, raising each epoch: the old owner's writes are fenced from
    /// here on. Rows another node is claiming at the same moment are skipped, not waited for.
    pub async fn claim_expired_sagas(
        &self,
        node: &str,
        limit: i64,
        lease_for: Duration,
    ) -> Result<Vec<(Lease, SagaRow)>, PgError> {
        let span = super::statement_span("UPDATE", Some("sagas"), "UPDATE sagas");
        async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    &client
                        .prepare_cached(
                            "WITH expired AS (
                     SELECT id FROM sagas
                     WHERE NOT terminal AND (lease_expires_at IS NULL OR lease_expires_at <= now())
                     ORDER BY lease_expires_at NULLS FIRST
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 UPDATE sagas s SET owner_node = $1, epoch = s.epoch + 1,
                        lease_expires_at = now() + $3::bigint * interval '1 millisecond'
                 FROM expired WHERE s.id = expired.id
                 RETURNING s.id, s.epoch, s.account_id, s.state, s.terminal, s.record, s.trace_parent",
                        )
                        .await
                        .map_err(PgError::from)?,
                    &[&node, &limit, &millis(lease_for)],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let id: String = r.get(0);
                    (
                        Lease {
                            saga_id: id.clone(),
                            node: node.to_owned(),
                            epoch: r.get(1),
                        },
                        SagaRow {
                            id,
                            account_id: r.get(2),
                            state: r.get(3),
                            terminal: r.get(4),
                            record: r.get(5),
                            trace_parent: r.get(6),
                        },
                    )
                })
                .collect())
        }
        .instrument(span)
        .await
    }

    /// Creates the follow-up saga `row` of the finished saga `of` (a cancellation of a
    /// confirmed booking) leased to `node`, unless it exists, and marks `of` terminal in the
    /// same transaction (it stays claimable until its follow-up exists, so a node dying in
    /// between loses nothing). The lease when this call created it; `None` when it existed.
    pub async fn start_follow_up(
        &self,
        node: &str,
        lease_for: Duration,
        row: &SagaRow,
        of: &str,
    ) -> Result<Option<Lease>, PgError> {
        let span = super::statement_span("INSERT", Some("sagas"), "INSERT sagas");
        async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let inserted = tx
                .execute(
                    &tx.prepare_cached("INSERT INTO sagas (id, account_id, state, terminal, record, owner_node,
                                    lease_expires_at, epoch, created_at, updated_at, trace_parent)
                 VALUES ($1, $2, $3, $4, $5, $6, now() + $7::bigint * interval '1 millisecond', 1, now(), now(), $8)
                 ON CONFLICT (id) DO NOTHING").await.map_err(PgError::from)?,
                    &[&row.id, &row.account_id, &row.state, &row.terminal, &row.record, &node, &millis(lease_for), &row.trace_parent],
                )
                .await?;
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE sagas SET terminal = true, lease_expires_at = NULL WHERE id = $1",
                )
                .await
                .map_err(PgError::from)?,
                &[&of],
            )
            .await?;
            tx.commit().await?;
            Ok((inserted == 1).then(|| Lease {
                saga_id: row.id.clone(),
                node: node.to_owned(),
                epoch: 1,
            }))
        }
        .instrument(span)
        .await
    }

    /// An operator's retry of a parked saga: writes `row` (its state back in flight) and
    /// leases it to `node` under a new epoch, only if the stored saga is still parked.
    pub async fn take_parked(
        &self,
        node: &str,
        lease_for: Duration,
        row: &SagaRow,
    ) -> Result<Option<Lease>, PgError> {
        let span = super::statement_span("UPDATE", Some("sagas"), "UPDATE sagas");
        async move {
            let client = self.client().await?;
            let taken = client
            .query_opt(
                &client
                    .prepare_cached(
                        "UPDATE sagas SET state = $2, terminal = $3, record = $4, owner_node = $5,
                        epoch = epoch + 1, updated_at = now(),
                        lease_expires_at = now() + $6::bigint * interval '1 millisecond'
                 WHERE id = $1 AND state = 'needs_attention'
                 RETURNING epoch",
                    )
                    .await
                    .map_err(PgError::from)?,
                &[
                    &row.id,
                    &row.state,
                    &row.terminal,
                    &row.record,
                    &node,
                    &millis(lease_for),
                ],
            )
            .await?;
            Ok(taken.map(|r| Lease {
                saga_id: row.id.clone(),
                node: node.to_owned(),
                epoch: r.get(0),
            }))
        }
        .instrument(span)
        .await
    }

    /// Up to `limit` sagas of `account` (bookings: rows with the account set), in id order,
    /// strictly after `after`.
    pub async fn account_sagas(
        &self,
        account: Uuid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SagaRow>, PgError> {
        let span = super::statement_span("SELECT", Some("sagas"), "SELECT sagas");
        async move {
            let client = self.client().await?;
            let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT id, account_id, state, terminal, record, trace_parent FROM sagas
                 WHERE account_id = $1 AND id > coalesce($2, '') ORDER BY id LIMIT $3",
                    )
                    .await
                    .map_err(PgError::from)?,
                &[&account, &after, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
            Ok(rows
                .iter()
                .map(|r| SagaRow {
                    id: r.get(0),
                    account_id: r.get(1),
                    state: r.get(2),
                    terminal: r.get(3),
                    record: r.get(4),
                    trace_parent: r.get(5),
                })
                .collect())
        }
        .instrument(span)
        .await
    }

    /// Every saga record (to count sagas by state when a node starts).
    pub async fn saga_records(&self) -> Result<Vec<(String, Vec<u8>)>, PgError> {
        let span = super::statement_span("SELECT", Some("sagas"), "SELECT sagas");
        async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    &client
                        .prepare_cached("SELECT id, record FROM sagas")
                        .await
                        .map_err(PgError::from)?,
                    &[],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        }
        .instrument(span)
        .await
    }

    /// Gives a lease up now (a node shutting down cleanly), so another node claims the saga
    /// at once instead of after the lease runs out.
    pub async fn release_lease(&self, lease: &Lease) -> Result<bool, PgError> {
        let span = super::statement_span("UPDATE", Some("sagas"), "UPDATE sagas");
        async move {
            let client = self.client().await?;
            let n = client
                .execute(
                    &client
                        .prepare_cached(
                            "UPDATE sagas SET lease_expires_at = now()
                 WHERE id = $1 AND owner_node = $2 AND epoch = $3",
                        )
                        .await
                        .map_err(PgError::from)?,
                    &[&lease.saga_id, &lease.node, &lease.epoch],
                )
                .await?;
            Ok(n == 1)
        }
        .instrument(span)
        .await
    }

    /// One saga with its lease columns.
    pub async fn saga(&self, id: &str) -> Result<Option<StoredSaga>, PgError> {
        let span = super::statement_span("SELECT", Some("sagas"), "SELECT sagas");
        async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &client.prepare_cached("SELECT id, account_id, state, terminal, record, owner_node, lease_expires_at, epoch,
                        cancel_requested_at IS NOT NULL, trace_parent
                 FROM sagas WHERE id = $1").await.map_err(PgError::from)?,
                    &[&id],
                )
                .await?;
            Ok(row.map(|r| StoredSaga {
                row: SagaRow {
                    id: r.get(0),
                    account_id: r.get(1),
                    state: r.get(2),
                    terminal: r.get(3),
                    record: r.get(4),
                    trace_parent: r.get(9),
                },
                owner_node: r.get(5),
                lease_expires_at: r.get(6),
                epoch: r.get(7),
                cancel_requested: r.get(8),
            }))
        }
        .instrument(span)
        .await
    }
}

/// A saga the database neither inserted nor found a key for.
fn not_inserted(id: &str) -> SagaWriteError {
    PgError::Corrupt {
        what: format!("saga {id}"),
        reason: "neither inserted nor named by an existing booking key".into(),
    }
    .into()
}

fn existing_saga(
    key: &str,
    digest: &[u8],
    row: &tokio_postgres::Row,
) -> Result<Created, SagaWriteError> {
    let stored: Vec<u8> = row.get(0);
    if stored != digest {
        return Err(SagaWriteError::KeyReused(key.to_owned()));
    }
    Ok(Created::Existing {
        saga_id: row.get(1),
    })
}
