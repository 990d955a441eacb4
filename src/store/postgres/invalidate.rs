//! Search caches stay per node; a booked SKU reaches every node through `NOTIFY`.
//!
//! The node that confirms a booking calls [`PgStore::announce_booked`]; every node keeps
//! one connection outside the pool that `LISTEN`s ([`Invalidations::listen`]) and hands
//! each SKU to its search aggregators. A notification reaches every listener connected
//! when the announcing transaction commits; a node whose listener connection drops must
//! treat its whole cache as stale until it listens again ([`Invalidations::next`] then
//! returns `None`).

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{parse_url, PgError, PgStore};

/// The channel booked SKUs are announced on.
pub const CHANNEL: &str = "wayfare_sku_booked";

impl PgStore {
    /// Announces that `sku` was booked, to every listening node (itself included).
    pub async fn announce_booked(&self, sku: &str) -> Result<(), PgError> {
        let client = self.client().await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &sku])
            .await?;
        Ok(())
    }
}

/// Booked SKUs announced by any node, over a connection of this listener's own.
#[derive(Debug)]
pub struct Invalidations {
    skus: mpsc::UnboundedReceiver<String>,
    // The session that LISTENs lives as long as its client.
    _client: tokio_postgres::Client,
}

impl Invalidations {
    /// Connects to `url` and listens on [`CHANNEL`].
    pub async fn listen(url: &str) -> Result<Self, PgError> {
        let config = parse_url(url).map_err(|e| PgError::Unreachable(format!("store.url {e}")))?;
        let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
        let (tx, skus) = mpsc::unbounded_channel();
        // The connection makes progress only while its messages are polled: this task
        // does it for as long as the connection lives (the LISTEN below included).
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "The invalidation listener lost its connection.");
                        break;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok(Invalidations {
            skus,
            _client: client,
        })
    }

    /// The next booked SKU; `None` once the connection is lost.
    pub async fn next(&mut self) -> Option<String> {
        self.skus.recv().await
    }
}
