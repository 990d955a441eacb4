//! [`ClusterStore`]: what a node shares with the other nodes beyond records: its
//! membership (heartbeat, the member list), and the news that a SKU was booked, so every
//! node's search cache drops it. A process alone (sled) has no other node: its heartbeat
//! and announcements do nothing, its member list is empty and it has nothing to listen to.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use super::StoreFuture;

/// One node as the cluster view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Member {
    /// Node id.
    pub id: String,
    /// Address it serves on.
    pub address: String,
    /// wayfare version it runs.
    pub version: String,
    /// Milliseconds since its last heartbeat (by the database's clock).
    pub heartbeat_age_ms: i64,
    /// Unfinished sagas it holds a live lease on.
    pub sagas_held: i64,
}

/// What [`ClusterStore::live`] answers.
pub type LiveFuture<'a> = Pin<Box<dyn Future<Output = Option<Result<(), String>>> + Send + 'a>>;

/// SKUs booked through any node, as they are announced.
pub trait BookedSkus: Send + 'static {
    /// The next booked SKU; `None` once the connection is lost (listen again).
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>>;
}

/// The cluster contract.
pub trait ClusterStore: Send + Sync + 'static {
    /// The backend's name, as `/v1/system/cluster` shows it (`sled`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Whether other nodes may share this store (then the cluster duties run).
    fn shared(&self) -> bool;

    /// This node's id.
    fn node(&self) -> &str;

    /// Records that this node is alive, running `version`.
    fn heartbeat(&self, version: &'static str) -> StoreFuture<()>;

    /// The nodes as the store knows them, freshest first.
    fn members(&self) -> StoreFuture<Vec<Member>>;

    /// Tells every node that `sku` was booked.
    fn announce_booked(&self, sku: &str) -> StoreFuture<()>;

    /// Opens a subscription to the SKUs booked through any node; `None` when there is
    /// nobody else to hear from.
    fn listen_booked(&self) -> StoreFuture<Option<Box<dyn BookedSkus>>>;

    /// Whether the shared store answers now (for `/health`; a process alone: always).
    fn ping(&self) -> StoreFuture<()>;

    /// Whether the shared store takes this node's writes now, as its connections show it
    /// (`Err` says why not); `None` when the store does not track that (then `/health`
    /// follows [`ClusterStore::ping`] on its schedule).
    fn live(&self) -> LiveFuture<'_> {
        Box::pin(async { None })
    }

    /// What operators call the store [`ClusterStore::ping`] reaches, for messages.
    fn display_name(&self) -> &'static str;
}

impl std::fmt::Debug for dyn ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("backend", &self.backend())
            .field("node", &self.node())
            .finish()
    }
}
