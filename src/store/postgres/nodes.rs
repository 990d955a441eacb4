//! Cluster membership through the database: each node upserts its row on a timer.

use super::{PgError, PgStore};
use tracing::Instrument as _;

pub use crate::store::cluster::Member;

impl PgStore {
    /// Records that `node` is alive at `address`, running `version`.
    pub async fn heartbeat(&self, node: &str, address: &str, version: &str) -> Result<(), PgError> {
        let span = super::statement_span("INSERT", Some("nodes"), "INSERT nodes");
        async move {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO nodes (id, address, version, started_at, heartbeat_at)
                 VALUES ($1, $2, $3, now(), now())
                 ON CONFLICT (id) DO UPDATE
                 SET address = excluded.address, version = excluded.version, heartbeat_at = now()",
                    &[&node, &address, &version],
                )
                .await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Every node that ever heartbeat, freshest first, with the sagas each holds now.
    pub async fn members(&self) -> Result<Vec<Member>, PgError> {
        let span = super::statement_span("SELECT", None, "SELECT nodes sagas");
        async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT n.id, n.address, n.version,
                        (extract(epoch FROM now() - n.heartbeat_at) * 1000)::bigint,
                        (SELECT count(*) FROM sagas s
                         WHERE s.owner_node = n.id AND NOT s.terminal AND s.lease_expires_at > now())
                 FROM nodes n ORDER BY n.heartbeat_at DESC, n.id",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Member {
                    id: r.get(0),
                    address: r.get(1),
                    version: r.get(2),
                    heartbeat_age_ms: r.get(3),
                    sagas_held: r.get(4),
                })
                .collect())
        }
        .instrument(span)
        .await
    }
}
