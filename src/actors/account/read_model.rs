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
//! Each segment also indexes its published accounts by key digest
//! (`AccountReadModel::owner`): the rate limits key a customer's bucket by the account
//! that holds the key, and asking this index spares each keyed request a store read. The
//! index changes under the same lock as the accounts, so it always names exactly the
//! published accounts' current keys.
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
    entries: RwLock<Entries>,
    versions: AtomicU64,
    capacity: usize,
}

/// A segment's accounts and the index of their keys, changed together.
#[derive(Debug, Default)]
struct Entries {
    accounts: HashMap<AccountId, Published>,
    owners: HashMap<KeyDigest, AccountId>,
}

impl Entries {
    fn remove(&mut self, id: &AccountId) {
        if let Some(gone) = self.accounts.remove(id) {
            self.forget_key(gone.key, id);
        }
    }

    /// Drops `key` from the index if it still names `id`.
    fn forget_key(&mut self, key: Option<KeyDigest>, id: &AccountId) {
        if let Some(key) = key {
            if self.owners.get(&key) == Some(id) {
                self.owners.remove(&key);
            }
        }
    }
}

impl ReadSegment {
    /// The next version, taken when the state to publish is captured (before its flush).
    pub(crate) fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Publishes a durable state, unless a newer one is there already.
    pub(crate) fn publish(&self, account: Account, key: Option<KeyDigest>, version: u64) {
        let mut entries = self.write();
        let id = account.id;
        match entries.accounts.get(&id) {
            Some(current) if current.version > version => {}
            current => {
                match current.map(|c| c.key) {
                    None if entries.accounts.len() >= self.capacity => {
                        if let Some(victim) = entries.accounts.keys().next().copied() {
                            entries.remove(&victim);
                        }
                    }
                    None => {}
                    Some(old_key) => entries.forget_key(old_key, &id),
                }
                if let Some(key) = key {
                    entries.owners.insert(key, id);
                }
                entries.accounts.insert(
                    id,
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
        *self.write() = Entries::default();
    }

    /// The published state of `id`, if any, as `f` extracts it (under the shared lock, so
    /// keep `f` short).
    pub(crate) fn read<R>(&self, id: &AccountId, f: impl FnOnce(&Published) -> R) -> Option<R> {
        self.read_entries().accounts.get(id).map(f)
    }

    /// The published account whose current key has this digest, if any.
    pub(crate) fn owner(&self, key: &KeyDigest) -> Option<AccountId> {
        self.read_entries().owners.get(key).copied()
    }

    /// How many accounts are published.
    pub(crate) fn len(&self) -> usize {
        self.read_entries().accounts.len()
    }

    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        // A poisoned lock only means a reader or the shard panicked mid-call; the maps
        // are never left half-updated (each change completes under the lock).
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
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

    /// The published account whose current key has this digest; `None` when no published
    /// account has it (the store may still know one: a miss is not an answer).
    pub(crate) fn owner(&self, key: &KeyDigest) -> Option<AccountId> {
        self.segments.iter().find_map(|s| s.owner(key))
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
    fn the_key_index_follows_replaced_keys_and_evictions() {
        let model = AccountReadModel::new(1, 1);
        let segment = model.segment(0);
        let (a, b) = (AccountId::demo(1), AccountId::demo(2));
        let (k1, k2, k3) = (
            KeyDigest::of("k1"),
            KeyDigest::of("k2"),
            KeyDigest::of("k3"),
        );
        let v = segment.next_version();
        segment.publish(account(1), Some(k1), v);
        assert_eq!(model.owner(&k1), Some(a));
        // A new key replaces the old one in the index.
        let v = segment.next_version();
        segment.publish(account(1), Some(k2), v);
        assert_eq!(model.owner(&k1), None);
        assert_eq!(model.owner(&k2), Some(a));
        // A late publication of the old key changes nothing.
        segment.publish(account(1), Some(k1), v - 1);
        assert_eq!(model.owner(&k1), None);
        assert_eq!(model.owner(&k2), Some(a));
        // Publishing another account evicts the first (capacity 1), and its key with it.
        let v = segment.next_version();
        segment.publish(account(2), Some(k3), v);
        assert_eq!(model.owner(&k2), None);
        assert_eq!(model.owner(&k3), Some(b));
        segment.clear();
        assert_eq!(model.owner(&k3), None);
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
