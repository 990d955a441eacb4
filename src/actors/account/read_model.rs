//! The accounts' read model: a read model owned by the actor.
//!
//! Each [`AccountShard`](super::AccountShard) owns one `ReadSegment` and is its only
//! writer; HTTP workers read it under a shared lock, without a message to the shard's
//! arbiter and back. What the shard publishes there, and when:
//!
//! - an account's view (id, name, email, wallet figures) and its API key digest, only
//!   once that state is **durable**: after the store flush that covers its write has
//!   completed (a credit in flight stays invisible until it is acknowledged), or at once
//!   when a cold account is loaded with no write of it in flight;
//! - with a version from the segment's counter, so a publication that lands late (two
//!   flushes completing out of order) never replaces a newer one.
//!
//! The segment is bounded by `accounts.cache_capacity` per shard, like the store's cache
//! of the shard's accounts: publishing one more account evicts another (any: the store has
//! all), and a restarted shard starts with an empty segment. Every write of an account goes
//! through its shard, which publishes the state it leaves, so an entry is never stale. A
//! miss (a cold account, or one evicted) is not an answer: the caller asks the shard,
//! which reads the account and publishes it. The shard publishes only when its store is
//! the only writer of the accounts (sled).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::domain::access::KeyDigest;
use crate::domain::account::{Account, AccountId};

/// A published, durable account state.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    /// The account as callers see it.
    pub(crate) account: Account,
    /// Its API key digest (`None`: operator only).
    pub(crate) key: Option<KeyDigest>,
    /// Order of publication within the segment.
    version: u64,
}

/// The accounts of one shard; written by that shard only.
#[derive(Debug)]
pub(crate) struct ReadSegment {
    entries: RwLock<HashMap<AccountId, Published>>,
    versions: AtomicU64,
    capacity: usize,
}

impl ReadSegment {
    /// The next version, taken when the state to publish is captured (before its flush).
    pub(crate) fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Publishes a durable state, unless a newer one is there already.
    pub(crate) fn publish(&self, account: Account, key: Option<KeyDigest>, version: u64) {
        let mut entries = self.write();
        match entries.get(&account.id) {
            Some(current) if current.version > version => {}
            current => {
                if current.is_none() && entries.len() >= self.capacity {
                    if let Some(victim) = entries.keys().next().copied() {
                        entries.remove(&victim);
                    }
                }
                entries.insert(
                    account.id,
                    Published {
                        account,
                        key,
                        version,
                    },
                );
            }
        }
    }

    /// Forgets every account (a fresh shard, with an empty cache).
    pub(crate) fn clear(&self) {
        self.write().clear();
    }

    /// The published state of `id`, if any, as `f` extracts it (under the shared lock, so
    /// keep `f` short).
    pub(crate) fn read<R>(&self, id: &AccountId, f: impl FnOnce(&Published) -> R) -> Option<R> {
        // A poisoned lock only means a reader or the shard panicked mid-call; the map
        // itself is never left half-updated (each change is one HashMap call).
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(id).map(f)
    }

    /// How many accounts are published.
    pub(crate) fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<AccountId, Published>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every shard's segment, found by the account's shard index.
#[derive(Debug, Clone)]
pub struct AccountReadModel {
    segments: Arc<[Arc<ReadSegment>]>,
}

impl AccountReadModel {
    /// Empty segments for `shards` shards, each holding at most `capacity` accounts.
    pub fn new(shards: usize, capacity: usize) -> Self {
        AccountReadModel {
            segments: (0..shards.max(1))
                .map(|_| {
                    Arc::new(ReadSegment {
                        entries: RwLock::default(),
                        versions: AtomicU64::default(),
                        capacity: capacity.max(1),
                    })
                })
                .collect(),
        }
    }

    /// The segment shard `index` writes.
    pub(crate) fn segment(&self, index: usize) -> Arc<ReadSegment> {
        self.segments[index].clone()
    }

    /// The published state of `id`, as `f` extracts it; `None` on a miss.
    pub(crate) fn read<R>(&self, id: &AccountId, f: impl FnOnce(&Published) -> R) -> Option<R> {
        self.segments[id.shard(self.segments.len())].read(id, f)
    }

    /// Accounts published over all shards.
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.len()).sum()
    }

    /// Nothing published yet?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::{AccountRecord, NewAccount};
    use crate::domain::money::Currency;

    fn account(n: u64) -> Account {
        let new = NewAccount::new("A", &format!("a{n}@example.com")).unwrap();
        AccountRecord::open(AccountId::demo(n), new, Currency::EUR, chrono::Utc::now()).view()
    }

    #[test]
    fn a_late_publication_never_replaces_a_newer_one() {
        let model = AccountReadModel::new(1, 1);
        let segment = model.segment(0);
        let (older, newer) = (segment.next_version(), segment.next_version());
        let mut renamed = account(1);
        renamed.name = "B".into();
        segment.publish(renamed, None, newer);
        segment.publish(account(1), None, older);
        let name = segment.read(&AccountId::demo(1), |p| p.account.name.clone());
        assert_eq!(name.as_deref(), Some("B"));
    }

    #[test]
    fn a_full_segment_makes_room_and_stays_bounded() {
        let model = AccountReadModel::new(1, 2);
        let segment = model.segment(0);
        for n in 0..5 {
            let v = segment.next_version();
            segment.publish(account(n), None, v);
            assert!(segment.read(&AccountId::demo(n), |_| ()).is_some());
            assert!(segment.len() <= 2, "{} published", segment.len());
        }
        // A newer state of a published account replaces it without evicting another.
        let v = segment.next_version();
        segment.publish(account(4), None, v);
        assert_eq!(segment.len(), 2);
    }

    #[test]
    fn reads_go_to_the_accounts_shard() {
        let model = AccountReadModel::new(4, 8);
        let id = AccountId::demo(5);
        let v = model.segment(id.shard(4)).next_version();
        model.segment(id.shard(4)).publish(account(5), None, v);
        assert!(model.read(&id, |_| ()).is_some());
        assert_eq!(model.len(), 1);
        model.segment(id.shard(4)).clear();
        assert!(model.is_empty());
    }
}
