//! Search caches stay per node; a booked SKU reaches every node through `NOTIFY`.
//!
//! The node that confirms a booking calls [`PgStore::announce_booked`]; every node keeps
//! one connection outside the pool that `LISTEN`s ([`Invalidations::listen`]) and hands
//! each SKU to its search aggregators. A notification reaches every listener connected
//! when the announcing transaction commits; a node whose listener connection drops must
//! treat its whole cache as stale until it listens again ([`Invalidations::next`] then
//! returns `None`).
//!
//! The same connection hears account changes (`wayfare_account`) for this node's account
//! views, and makes a round trip every [`LISTENER_HEARTBEAT`], which is what lets the
//! views be served (see [`super::views`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::views::{parse_notification, AccountViews, ACCOUNT_CHANNEL, LISTENER_HEARTBEAT};
use super::{parse_url, PgError, PgStore};

/// How long a listener round trip may take before the listener gives up its connection.
const LISTENER_GIVE_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// The `application_name` of a node's listener session.
pub const LISTENER_NAME: &str = "wayfare-listener";

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

/// Booked SKUs announced by any node, over a connection of this listener's own, which
/// also hears every account change for this node's account views ([`AccountViews`]).
#[derive(Debug)]
pub struct Invalidations {
    skus: mpsc::UnboundedReceiver<String>,
    /// Ends the heartbeat and the views' generation when the listener is dropped.
    _guard: Subscription,
}

/// The views' generation this listener serves, ended when it goes.
#[derive(Debug)]
struct Subscription {
    views: Arc<AccountViews>,
    generation: u64,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.views.lost(self.generation);
    }
}

impl Invalidations {
    /// Connects to `url` and listens on [`CHANNEL`] and [`ACCOUNT_CHANNEL`]; account
    /// changes go to `views`, which may serve views once this listener has made its first
    /// round trip (and for as long as it keeps making them within the bound).
    pub async fn listen(url: &str, views: Arc<AccountViews>) -> Result<Self, PgError> {
        let mut config =
            parse_url(url).map_err(|e| PgError::Unreachable(format!("store.url {e}")))?;
        // Named, so operators (and the tests) can tell it from the pool's sessions.
        config.application_name(LISTENER_NAME);
        let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
        let (tx, skus) = mpsc::unbounded_channel();
        // Until the LISTEN below is active this generation is not subscribed: whatever
        // the views held is never served again.
        let before = views.generation();
        views.lost(before);
        let heard = views.clone();
        // The connection makes progress only while its messages are polled: this task
        // does it for as long as the connection lives (the LISTEN below included).
        let generation = Arc::new(AtomicU64::new(0));
        let current = generation.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            break;
                        }
                    }
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        match parse_notification(n.payload()) {
                            Some((id, version)) => heard.notified(id, version),
                            None => tracing::warn!(
                                payload = n.payload(),
                                "An unreadable account notification."
                            ),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "The invalidation listener lost its connection.");
                        break;
                    }
                }
            }
            heard.lost(current.load(Ordering::Acquire));
        });
        client
            .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {ACCOUNT_CHANNEL}"))
            .await?;
        let subscribed = views.subscribed();
        generation.store(subscribed, Ordering::Release);
        let client = Arc::new(client);
        let beating = (client.clone(), views.clone());
        // A round trip every heartbeat: its answer proves that every change committed
        // before it was sent has been heard (see `views`). A slow answer only keeps the
        // views from being served; none within LISTENER_GIVE_UP ends this listener (the
        // client goes with this task, which closes the connection, so `next` answers
        // `None` and the listener actor connects again).
        let heartbeat = tokio::spawn(async move {
            let (client, views) = beating;
            loop {
                let sent = Instant::now();
                match tokio::time::timeout(LISTENER_GIVE_UP, client.simple_query("")).await {
                    Ok(Ok(_)) => views.heard(subscribed, sent),
                    _ => {
                        views.lost(subscribed);
                        return;
                    }
                }
                tokio::time::sleep(LISTENER_HEARTBEAT.saturating_sub(sent.elapsed())).await;
            }
        });
        Ok(Invalidations {
            skus,
            _guard: Subscription {
                views,
                generation: subscribed,
                heartbeat,
            },
        })
    }

    /// The next booked SKU; `None` once the connection is lost.
    pub async fn next(&mut self) -> Option<String> {
        self.skus.recv().await
    }
}
