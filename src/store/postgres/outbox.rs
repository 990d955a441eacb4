//! The shared outbox: customer emails written with the saga change that causes them
//! (see [`super::sagas`]), claimed by one node's mailer at a time under a lease with the
//! same epoch fencing as sagas, retried after a wait that grows with each failed attempt,
//! and parked with their last error after the last one.

use std::time::Duration;
use tracing::Instrument as _;

use uuid::Uuid;

use super::sagas::{millis, SagaWriteError};
use super::{PgError, PgStore};

/// The right to send one email: held by `node` under `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailLease {
    /// Email id.
    pub id: Uuid,
    /// The node holding it.
    pub node: String,
    /// Raised by every claim.
    pub epoch: i64,
    /// Delivery attempts, this one included.
    pub attempts: i32,
    /// The claim before this one ran out without a recorded outcome (neither sent nor
    /// failed): that node may have handed the email to its transport.
    pub unresolved_before: bool,
}

/// An email parked after too many failed attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRow {
    /// Encoded email.
    pub email: Vec<u8>,
    /// The last delivery error.
    pub reason: String,
}

impl PgStore {
    /// Claims up to `limit` pending emails nobody holds a live lease on, for `node`.
    pub async fn claim_emails(
        &self,
        node: &str,
        limit: i64,
        lease_for: Duration,
    ) -> Result<Vec<(EmailLease, Vec<u8>)>, PgError> {
        let span = super::statement_span("UPDATE", Some("outbox"), "UPDATE outbox");
        async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    // A lease still set on a claimable row ran out: a failure clears it and
                    // a send marks the row sent, so the last claim's outcome is unknown.
                    &client.prepare_cached("WITH free AS (
                     SELECT id, lease_expires_at IS NOT NULL AS unresolved FROM outbox
                     WHERE status = 'pending' AND (lease_expires_at IS NULL OR lease_expires_at <= now())
                       AND (next_attempt_at IS NULL OR next_attempt_at <= now())
                     ORDER BY created_at
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 UPDATE outbox o SET owner_node = $1, epoch = o.epoch + 1, attempts = o.attempts + 1,
                        lease_expires_at = now() + $3::bigint * interval '1 millisecond'
                 FROM free WHERE o.id = free.id
                 RETURNING o.id, o.epoch, o.email, o.attempts, free.unresolved").await.map_err(PgError::from)?,
                    &[&node, &limit, &millis(lease_for)],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        EmailLease {
                            id: r.get(0),
                            node: node.to_owned(),
                            epoch: r.get(1),
                            attempts: r.get(3),
                            unresolved_before: r.get(4),
                        },
                        r.get(2),
                    )
                })
                .collect())
        }
        .instrument(span)
        .await
    }

    /// Marks a claimed email sent; fenced like saga writes.
    pub async fn mark_email_sent(&self, lease: &EmailLease) -> Result<(), SagaWriteError> {
        let span = super::statement_span("UPDATE", Some("outbox"), "UPDATE outbox");
        async move {
            let client = self.client().await?;
            let n = client
                .execute(
                    &client
                        .prepare_cached(
                            "UPDATE outbox SET status = 'sent', sent_at = now()
                 WHERE id = $1 AND owner_node = $2 AND epoch = $3 AND status = 'pending'
                   AND lease_expires_at > now()",
                        )
                        .await
                        .map_err(PgError::from)?,
                    &[&lease.id, &lease.node, &lease.epoch],
                )
                .await
                .map_err(PgError::from)?;
            if n == 0 {
                return Err(SagaWriteError::Fenced {
                    saga_id: lease.id.to_string(),
                    node: lease.node.clone(),
                    epoch: lease.epoch,
                });
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Marks every email of `leases` sent, each fenced by its own lease like
    /// [`mark_email_sent`](Self::mark_email_sent), in one statement; the ids marked (an
    /// email missing from them was claimed by another node meanwhile, or not held).
    pub async fn mark_emails_sent(&self, leases: &[EmailLease]) -> Result<Vec<Uuid>, PgError> {
        let span = super::statement_span("UPDATE", Some("outbox"), "UPDATE outbox");
        async move {
            if leases.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<Uuid> = leases.iter().map(|l| l.id).collect();
            let nodes: Vec<&str> = leases.iter().map(|l| l.node.as_str()).collect();
            let epochs: Vec<i64> = leases.iter().map(|l| l.epoch).collect();
            let client = self.client().await?;
            let rows = client
                .query(
                    &client
                        .prepare_cached(
                            "UPDATE outbox o SET status = 'sent', sent_at = now()
                               FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS l(id, node, epoch)
                              WHERE o.id = l.id AND o.owner_node = l.node AND o.epoch = l.epoch
                                AND o.status = 'pending' AND o.lease_expires_at > now()
                             RETURNING o.id",
                        )
                        .await?,
                    &[&ids, &nodes, &epochs],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        }
        .instrument(span)
        .await
    }

    /// A claimed email failed to send: records `reason` and frees it for another attempt
    /// after `retry_after`, or parks it (`park`) for an operator; fenced like saga writes.
    pub async fn email_failed(
        &self,
        lease: &EmailLease,
        reason: &str,
        park: bool,
        retry_after: Duration,
    ) -> Result<(), SagaWriteError> {
        let span = super::statement_span("UPDATE", Some("outbox"), "UPDATE outbox");
        async move {
            let client = self.client().await?;
            let status = if park { "parked" } else { "pending" };
            let n = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE outbox SET status = $4, last_error = $5, lease_expires_at = NULL,
                                next_attempt_at = now() + $6::bigint * interval '1 millisecond'
                         WHERE id = $1 AND owner_node = $2 AND epoch = $3 AND status = 'pending'",
                    )
                    .await
                    .map_err(PgError::from)?,
                &[
                    &lease.id,
                    &lease.node,
                    &lease.epoch,
                    &status,
                    &reason,
                    &millis(retry_after),
                ],
            )
            .await
            .map_err(PgError::from)?;
            if n == 0 {
                return Err(SagaWriteError::Fenced {
                    saga_id: lease.id.to_string(),
                    node: lease.node.clone(),
                    epoch: lease.epoch,
                });
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// How many emails are parked, and the first `limit` (oldest first).
    pub async fn parked_emails(&self, limit: i64) -> Result<(i64, Vec<ParkedRow>), PgError> {
        let span = super::statement_span("SELECT", Some("outbox"), "SELECT outbox");
        async move {
            let client = self.client().await?;
            let count: i64 = client
                .query_one(
                    &client
                        .prepare_cached("SELECT count(*) FROM outbox WHERE status = 'parked'")
                        .await?,
                    &[],
                )
                .await?
                .get(0);
            let rows = client
                .query(
                    &client
                        .prepare_cached(
                            "SELECT email, coalesce(last_error, '') FROM outbox
                         WHERE status = 'parked' ORDER BY created_at LIMIT $1",
                        )
                        .await?,
                    &[&limit],
                )
                .await?;
            Ok((
                count,
                rows.iter()
                    .map(|r| ParkedRow {
                        email: r.get(0),
                        reason: r.get(1),
                    })
                    .collect(),
            ))
        }
        .instrument(span)
        .await
    }
}
