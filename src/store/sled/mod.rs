//! The embedded default: everything in one sled database in `store.data_dir`, for one
//! process. [`SledStore`] is the key-value layer ([`crate::store::Store`]: trees, atomic
//! batches, group-committed flushes, fail-stop on I/O errors); the seam's traits are
//! implemented over it (through `Arc<dyn Store>`, so a test or embedder can wrap it):
//! [`SledAccounts`], [`SledSagas`], [`SledOutbox`], and [`Solo`] for the cluster, which for one process
//! has no other node.
//!
//! One process is the only writer of everything here, which is what lets it count sagas
//! in memory, resume every unfinished saga at start-up and never lease anything.

mod accounts;
mod backfill;
mod kv;
mod outbox;
mod sagas;

use std::future::ready;

pub use accounts::SledAccounts;
pub use kv::SledStore;
pub use outbox::SledOutbox;
pub use sagas::SledSagas;

use super::cluster::{BookedSkus, ClusterStore, Member};
use super::StoreFuture;

/// The cluster of one process: its heartbeat and announcements reach nobody, and there is
/// nobody to listen to (the process invalidates its own search caches directly).
#[derive(Debug, Clone)]
pub struct Solo {
    node: String,
}

impl Solo {
    /// The process, named `node` in `/v1/system/cluster`.
    pub fn new(node: String) -> Self {
        Solo { node }
    }
}

impl ClusterStore for Solo {
    fn backend(&self) -> &'static str {
        "sled"
    }

    fn shared(&self) -> bool {
        false
    }

    fn node(&self) -> &str {
        &self.node
    }

    fn heartbeat(&self, _version: &'static str) -> StoreFuture<()> {
        Box::pin(ready(Ok(())))
    }

    fn members(&self) -> StoreFuture<Vec<Member>> {
        Box::pin(ready(Ok(Vec::new())))
    }

    fn announce_booked(&self, _sku: &str) -> StoreFuture<()> {
        Box::pin(ready(Ok(())))
    }

    fn listen_booked(&self) -> StoreFuture<Option<Box<dyn BookedSkus>>> {
        Box::pin(ready(Ok(None)))
    }

    fn ping(&self) -> StoreFuture<()> {
        Box::pin(ready(Ok(())))
    }

    fn display_name(&self) -> &'static str {
        "sled"
    }
}
