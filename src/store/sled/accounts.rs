//! [`SledAccounts`]: accounts, key digests, wallets and ledgers in sled, for one shard.
//!
//! Each shard has its own instance ([`AccountStore::for_shard`]) with a bounded cache of
//! the accounts it loaded or wrote (`accounts.cache_capacity`, evicted arbitrarily: the
//! store has all). Loading a cold account folds its whole ledger and checks the result
//! against the stored wallet (a mismatch is reported as corrupt, never repaired), so only
//! the account's owner or the operator may make the store load one: anyone else is
//! answered from the stored key digest (one point read), with the answer the loaded
//! account would give.
//!
//! Writes are atomic (record + ledger entry + idempotency key in one batch; a new account
//! with its key, the key's reverse index and its unique email), applied when called, and
//! their futures resolve after the flush that makes them durable: concurrent writers
//! share one disk sync. While an account has a write in flight, a read of it waits for
//! that flush, so nothing not yet durable is ever answered.

use std::collections::HashMap;
use std::future::ready;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::domain::access::{Caller, KeyDigest};
use crate::domain::account::{email_key, AccountId, AccountRecord};
use crate::domain::wallet::{
    fold_ledger, validate_key, LedgerEntry, LedgerPage, WalletError, WalletOp, WalletReceipt,
};
use crate::store::accounts::{AccountError, AccountFuture, AccountState, AccountStore, Taken};
use crate::store::{codec, decode_record, get_record, Op, Store, StoreError, StoreFuture, Tree};

/// `meta` key of how many demo accounts are known to be seeded.
const DEMO_SEEDED: &[u8] = b"demo_seeded";

/// The accounts of one shard incarnation over a sled [`Store`].
pub struct SledAccounts {
    store: Arc<dyn Store>,
    capacity: usize,
    state: Arc<Mutex<ShardState>>,
}

impl std::fmt::Debug for SledAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledAccounts")
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[derive(Default)]
struct ShardState {
    /// Loaded accounts with their key digests: the latest state, durable or not yet.
    cache: HashMap<AccountId, Cached>,
    /// Writes whose flush has not completed yet, by account.
    in_flight: HashMap<AccountId, u32>,
}

/// An account as cached.
struct Cached {
    record: AccountRecord,
    key: Option<KeyDigest>,
}

impl Cached {
    fn state(&self) -> AccountState {
        AccountState {
            account: self.record.view(),
            key: self.key,
        }
    }
}

/// What an idempotency key was used for, stored so replays can be told from conflicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SeenKey {
    op: WalletOp,
    seq: u64,
}

fn ledger_key(id: AccountId, seq: u64) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn wallet_key_key(id: AccountId, key: &str) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

/// A client span for one write and the flush that makes it durable, after the
/// OpenTelemetry database conventions; `Span::none()` while telemetry is off or the
/// trace was dropped, so the untraced path builds nothing.
/// (A write touches several trees, so no `db.collection.name`.) None outside any span
/// either (start-up seeding): a write is part of some work's trace, not one of its own.
fn write_span(operation: &'static str, name: &'static str) -> tracing::Span {
    if !crate::telemetry::exporting() || tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "store.write",
        otel.name = name,
        otel.kind = "client",
        db.system.name = "sled",
        db.operation.name = operation,
    )
}

fn answer<T: Send + 'static>(result: Result<T, AccountError>) -> AccountFuture<T> {
    Box::pin(ready(result))
}

impl SledAccounts {
    /// Accounts in `store`, caching at most `capacity` per shard. Rebuilds the indexes a
    /// store written before they existed lacks (see `backfill`): warned about, not fatal.
    pub fn new(store: Arc<dyn Store>, capacity: usize) -> Self {
        if let Err(error) = super::backfill::backfill_key_owners(&*store) {
            // The index only tells an unknown key (401) from another account's (403).
            tracing::warn!(%error, "API key owner index not rebuilt; unknown keys may get 403.");
        }
        if let Err(error) = super::backfill::backfill_emails(&*store) {
            tracing::warn!(%error, "Email index not rebuilt; older accounts' emails are not unique.");
        }
        SledAccounts {
            store,
            capacity: capacity.max(1),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ShardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The account, from cache or store. A record whose cached wallet disagrees with its
    /// ledger is reported as corrupt, never silently repaired.
    fn load<'a>(
        &self,
        state: &'a mut ShardState,
        id: AccountId,
    ) -> Result<&'a mut Cached, AccountError> {
        if !state.cache.contains_key(&id) {
            let record: AccountRecord = get_record(&*self.store, Tree::Accounts, id.as_bytes())?
                .ok_or(AccountError::NotFound(id))?;
            let ledger = self.ledger_entries(id, 0, usize::MAX)?;
            let folded = fold_ledger(record.wallet.currency, &ledger);
            if folded.as_ref() != Ok(&record.wallet) {
                return Err(AccountError::Store(StoreError::Corrupt {
                    tree: Tree::Accounts.name(),
                    key: id.to_string(),
                    reason: "wallet does not match its ledger".into(),
                }));
            }
            let key = get_record(&*self.store, Tree::ApiKeys, id.as_bytes())?;
            self.remember(state, record, key);
        }
        Ok(state.cache.get_mut(&id).expect("just loaded"))
    }

    fn remember(&self, state: &mut ShardState, record: AccountRecord, key: Option<KeyDigest>) {
        if state.cache.len() >= self.capacity && !state.cache.contains_key(&record.id) {
            if let Some(victim) = state.cache.keys().next().copied() {
                state.cache.remove(&victim);
            }
        }
        state.cache.insert(record.id, Cached { record, key });
    }

    fn key_known_now(&self, digest: &KeyDigest) -> Result<bool, AccountError> {
        Ok(self
            .store
            .get(Tree::KeyOwners, &codec::encode(digest))?
            .is_some())
    }

    /// A caller other than the operator is checked against the stored key digest (one
    /// point read) before an account that is not in memory is loaded.
    fn check_before_load(
        &self,
        state: &ShardState,
        id: AccountId,
        caller: &Caller,
    ) -> Result<(), AccountError> {
        if *caller == Caller::Operator || state.cache.contains_key(&id) {
            return Ok(());
        }
        let stored: Option<KeyDigest> = get_record(&*self.store, Tree::ApiKeys, id.as_bytes())?;
        caller.may_act_on(id, stored.as_ref(), |d| self.key_known_now(d))
    }

    /// Loads the account, then checks `caller` against its latest cached key.
    fn authorized(
        &self,
        state: &mut ShardState,
        id: AccountId,
        caller: &Caller,
    ) -> Result<AccountState, AccountError> {
        self.check_before_load(state, id, caller)?;
        let found = self.load(state, id)?.state();
        caller.may_act_on(id, found.key.as_ref(), |d| self.key_known_now(d))?;
        Ok(found)
    }

    fn ledger_entries(
        &self,
        id: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let after_key = ledger_key(id, after);
        self.store
            .scan(Tree::Ledger, id.as_bytes(), Some(&after_key), limit)?
            .into_iter()
            .map(|(k, v)| decode_record(Tree::Ledger, &k, &v))
            .collect()
    }

    /// Answers `result` (with the account's state now) once everything written so far is
    /// durable; the account counts as having a write in flight until then.
    fn after_flush<T: Send + 'static>(
        &self,
        id: AccountId,
        result: Result<T, AccountError>,
    ) -> AccountFuture<(T, Option<AccountState>)> {
        let now = {
            let mut state = self.lock();
            *state.in_flight.entry(id).or_default() += 1;
            state.cache.get(&id).map(Cached::state)
        };
        let flush = self.store.flush();
        let shared = self.state.clone();
        Box::pin(async move {
            let flushed = flush.await;
            {
                let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = state.in_flight.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        state.in_flight.remove(&id);
                    }
                }
            }
            let value = result?;
            flushed?;
            Ok((value, now))
        })
    }

    fn open_now(
        &self,
        record: AccountRecord,
        key: Option<KeyDigest>,
    ) -> Result<AccountState, AccountError> {
        let id = record.id;
        let mut state = self.lock();
        // Whether the id is taken, without loading the account into memory.
        if state.cache.contains_key(&id) || self.store.get(Tree::Accounts, id.as_bytes())?.is_some()
        {
            return Err(AccountError::AlreadyExists(Taken::Id(id)));
        }
        let id_bytes = id.as_bytes().to_vec();
        let mut ops = vec![
            Op::put(Tree::Accounts, id_bytes.clone(), &record),
            // Unique across shards: the store refuses the whole batch when another
            // account has the address.
            Op::insert(Tree::Emails, email_key(&record.email), &id),
        ];
        if let Some(key) = &key {
            ops.push(Op::put(Tree::ApiKeys, id_bytes, key));
            ops.push(Op::put(Tree::KeyOwners, codec::encode(key), &id));
        }
        match self.store.write(ops) {
            Ok(()) => {}
            Err(StoreError::Taken { .. }) => return Err(AccountError::AlreadyExists(Taken::Email)),
            Err(e) => return Err(e.into()),
        }
        let opened = AccountState {
            account: record.view(),
            key,
        };
        self.remember(&mut state, record, key);
        Ok(opened)
    }

    fn change_wallet_now(
        &self,
        id: AccountId,
        key: &str,
        op: &WalletOp,
    ) -> Result<WalletReceipt, AccountError> {
        validate_key("idempotency_key", key).map_err(WalletError::from)?;
        let key_key = wallet_key_key(id, key);
        let mut state = self.lock();
        let record = &mut self.load(&mut state, id)?.record;
        if let Some(seen) = get_record::<SeenKey>(&*self.store, Tree::WalletKeys, &key_key)? {
            if seen.op != *op {
                return Err(AccountError::KeyConflict(key.to_owned()));
            }
            let entry_key = ledger_key(id, seen.seq);
            let entry: LedgerEntry = get_record(&*self.store, Tree::Ledger, &entry_key)?
                .ok_or_else(|| StoreError::Corrupt {
                    tree: Tree::Ledger.name(),
                    key: format!("{id}/{}", seen.seq),
                    reason: "idempotency key points at a missing ledger entry".into(),
                })?;
            return Ok(WalletReceipt {
                entry,
                wallet: record.wallet.view(),
                replayed: true,
            });
        }
        let (wallet, delta) = match record.wallet.apply(op) {
            Ok(applied) => applied,
            Err(WalletError::UnknownHold(hold_id)) => {
                if let WalletOp::Release { .. } = op {
                    // Releasing a hold that never landed: remember it under the hold's own
                    // key, so a late hold with that key is refused instead of locking
                    // points forever.
                    let tombstone = SeenKey {
                        op: op.clone(),
                        seq: 0,
                    };
                    self.store.write(vec![Op::put(
                        Tree::WalletKeys,
                        wallet_key_key(id, &hold_id),
                        &tombstone,
                    )])?;
                }
                return Err(WalletError::UnknownHold(hold_id).into());
            }
            Err(e) => return Err(e.into()),
        };
        let entry = LedgerEntry {
            seq: record.next_seq,
            key: key.to_owned(),
            op: op.clone(),
            delta,
            balance_after: wallet.balance,
            held_after: wallet.held(),
            at: Utc::now(),
        };
        let mut next = record.clone();
        next.wallet = wallet;
        next.next_seq += 1;
        self.store.write(vec![
            Op::put(Tree::Accounts, id.as_bytes().to_vec(), &next),
            Op::put(Tree::Ledger, ledger_key(id, entry.seq), &entry),
            Op::put(
                Tree::WalletKeys,
                key_key,
                &SeenKey {
                    op: op.clone(),
                    seq: entry.seq,
                },
            ),
        ])?;
        let wallet = next.wallet.view();
        *record = next;
        Ok(WalletReceipt {
            entry,
            wallet,
            replayed: false,
        })
    }

    fn set_key_now(
        &self,
        id: AccountId,
        key: KeyDigest,
        only_if_missing: bool,
    ) -> Result<bool, AccountError> {
        let mut state = self.lock();
        // Seeding demo data asks this of every demo account at each start: answering from
        // the store keeps accounts nobody reads out of memory (and their ledgers unfolded).
        if only_if_missing
            && !state.cache.contains_key(&id)
            && self.store.get(Tree::ApiKeys, id.as_bytes())?.is_some()
        {
            return Ok(false);
        }
        let old = self.load(&mut state, id)?.key;
        if only_if_missing && old.is_some() {
            return Ok(false);
        }
        let id_bytes = id.as_bytes().to_vec();
        let mut ops = vec![
            Op::put(Tree::ApiKeys, id_bytes, &key),
            Op::put(Tree::KeyOwners, codec::encode(&key), &id),
        ];
        if let Some(old) = old.filter(|o| *o != key) {
            ops.push(Op::Delete {
                tree: Tree::KeyOwners,
                key: codec::encode(&old),
            });
        }
        self.store.write(ops)?;
        state.cache.get_mut(&id).expect("loaded above").key = Some(key);
        Ok(true)
    }
}

impl AccountStore for SledAccounts {
    fn for_shard(&self) -> Arc<dyn AccountStore> {
        Arc::new(SledAccounts {
            store: self.store.clone(),
            capacity: self.capacity,
            state: Arc::default(),
        })
    }

    fn sole_writer(&self) -> bool {
        true
    }

    fn open(&self, record: AccountRecord, key: Option<KeyDigest>) -> AccountFuture<AccountState> {
        let id = record.id;
        let span = write_span("open_account", "sled open_account");
        let opened = span.in_scope(|| self.open_now(record, key));
        let durable = self.after_flush(id, opened);
        Box::pin(async move { durable.await.map(|(opened, _)| opened) }.instrument(span))
    }

    /// Answered at once when no write of the account is in flight, else after the flush.
    fn account(&self, id: AccountId, caller: Caller) -> AccountFuture<AccountState> {
        let (found, in_flight) = {
            let mut state = self.lock();
            let found = self.authorized(&mut state, id, &caller);
            (found, state.in_flight.contains_key(&id))
        };
        if !in_flight || found.is_err() {
            return answer(found);
        }
        let flush = self.store.flush();
        Box::pin(async move {
            flush.await?;
            found
        })
    }

    fn change_wallet(
        &self,
        id: AccountId,
        key: &str,
        op: &WalletOp,
    ) -> AccountFuture<(WalletReceipt, Option<AccountState>)> {
        let span = write_span("change_wallet", "sled change_wallet");
        let changed = span.in_scope(|| self.change_wallet_now(id, key, op));
        if let Err(e) = &changed {
            span.in_scope(|| tracing::debug!(error = %e, "Wallet change refused."));
        }
        Box::pin(self.after_flush(id, changed).instrument(span))
    }

    /// Read straight from the store (entries are immutable once written).
    fn ledger_page(
        &self,
        id: AccountId,
        caller: Caller,
        after: u64,
        limit: usize,
    ) -> AccountFuture<LedgerPage> {
        let page = (|| {
            let mut state = self.lock();
            self.authorized(&mut state, id, &caller)?;
            // One extra entry tells whether another page follows.
            let entries = self.ledger_entries(id, after, limit.saturating_add(1))?;
            Ok(LedgerPage::of(entries, limit))
        })();
        answer(page)
    }

    fn set_key(
        &self,
        id: AccountId,
        key: KeyDigest,
        only_if_missing: bool,
    ) -> AccountFuture<(bool, Option<AccountState>)> {
        let span = write_span("set_key", "sled set_key");
        let set = span.in_scope(|| self.set_key_now(id, key, only_if_missing));
        Box::pin(self.after_flush(id, set).instrument(span))
    }

    fn key_owner_now(&self, digest: &KeyDigest) -> Result<Option<AccountId>, StoreError> {
        get_record(&*self.store, Tree::KeyOwners, &codec::encode(digest))
    }

    fn key_known(&self, digest: &KeyDigest) -> StoreFuture<bool> {
        Box::pin(ready(self.key_owner_now(digest).map(|o| o.is_some())))
    }

    fn demo_seeded(&self) -> StoreFuture<Option<u64>> {
        Box::pin(ready(get_record(&*self.store, Tree::Meta, DEMO_SEEDED)))
    }

    fn set_demo_seeded(&self, n: u64) -> StoreFuture<()> {
        if let Err(e) = self
            .store
            .write(vec![Op::put(Tree::Meta, DEMO_SEEDED.to_vec(), &n)])
        {
            return Box::pin(ready(Err(e)));
        }
        self.store.flush()
    }
}
