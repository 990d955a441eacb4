//! [`PgAccounts`]: the account shards' store when nodes share PostgreSQL. Every decision
//! is the database's (a wallet change is one transaction there, see [`super::wallet`]).
//! A read is answered from this node's account views while they are provably current
//! (see [`super::views`]: a change committed by any node is served stale here for at most
//! the staleness bound, and one acknowledged by this node not at all), else it asks the
//! database. Besides the views, memory holds the directory of key owners this node has
//! seen ([`KnownKeys`]); every call runs as a future, so no shard thread blocks on the
//! network.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::accounts::Opened;
use super::wallet::WalletFailure;
use super::{PgError, PgStore};
use crate::domain::access::{Caller, KeyDigest};
use crate::domain::account::{AccountId, AccountRecord};
use crate::domain::wallet::{LedgerPage, WalletOp, WalletReceipt};
use crate::store::accounts::{AccountError, AccountFuture, AccountState, AccountStore, Taken};
use crate::store::{codec, decode_record, StoreError, StoreFuture, Tree};

/// The `meta` key of how many demo accounts are known to be seeded.
const DEMO_META: &str = "demo_seeded";

/// Which account each API key digest seen by this node belongs to: what the HTTP rate
/// limits key their buckets by without a database call on the request's thread. Filled
/// from database answers; a key not seen yet is limited by the client's address until its
/// first request reaches a shard. Bounded: emptied when full.
#[derive(Debug)]
struct KnownKeys {
    owners: RwLock<HashMap<[u8; 32], AccountId>>,
    capacity: usize,
}

impl KnownKeys {
    fn owner(&self, digest: &KeyDigest) -> Option<AccountId> {
        self.owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest.bytes())
            .copied()
    }

    fn learn(&self, digest: KeyDigest, id: AccountId) {
        let mut owners = self.owners.write().unwrap_or_else(|p| p.into_inner());
        if owners.len() >= self.capacity && !owners.contains_key(digest.bytes()) {
            owners.clear();
        }
        owners.insert(*digest.bytes(), id);
    }
}

/// The accounts in the shared database.
#[derive(Debug, Clone)]
pub struct PgAccounts {
    db: PgStore,
    keys: Arc<KnownKeys>,
}

impl PgAccounts {
    /// Accounts on `db`, remembering the owners of at most `known_keys` key digests.
    pub fn new(db: PgStore, known_keys: usize) -> Self {
        db.views().set_capacity(known_keys);
        PgAccounts {
            db,
            keys: Arc::new(KnownKeys {
                owners: RwLock::new(HashMap::new()),
                capacity: known_keys.max(1),
            }),
        }
    }

    /// The account, if `caller` may see it (the same rule as on one node).
    async fn lookup(&self, id: AccountId, caller: Caller) -> Result<AccountState, AccountError> {
        let digest = match &caller {
            Caller::Customer(d) => Some(d),
            _ => None,
        };
        if let Some(state) = self.db.views().fresh(id) {
            if caller
                .may_act_on(id, state.key.as_ref(), |_| Ok::<_, AccountError>(false))
                .is_ok()
            {
                return Ok(state);
            }
            // Refused: the database tells an unknown key (401) from another's (403).
        }
        let views = self.db.views();
        let started = views.read_started();
        let found = self
            .db
            .account_lookup(id, digest)
            .await
            .map_err(store_error)?
            .ok_or(AccountError::NotFound(id))?;
        if let Some(key) = found.key {
            self.keys.learn(key, id);
        }
        let state = AccountState {
            account: found.account,
            key: found.key,
        };
        views.keep(state.clone(), found.version, started);
        caller.may_act_on(id, state.key.as_ref(), |_| {
            Ok::<_, AccountError>(found.caller_known)
        })?;
        Ok(state)
    }
}

fn store_error(e: PgError) -> AccountError {
    AccountError::Store(StoreError::from(e))
}

impl AccountStore for PgAccounts {
    fn for_shard(&self) -> Arc<dyn AccountStore> {
        Arc::new(self.clone())
    }

    fn sole_writer(&self) -> bool {
        false
    }

    /// One transaction: the account, its unique email and its key digest.
    fn open(&self, record: AccountRecord, key: Option<KeyDigest>) -> AccountFuture<AccountState> {
        let me = self.clone();
        Box::pin(async move {
            let id = record.id;
            match me
                .db
                .open_account_with_key(&record, key.as_ref())
                .await
                .map_err(store_error)?
            {
                Opened::Yes => {
                    if let Some(key) = key {
                        me.keys.learn(key, id);
                    }
                    Ok(AccountState {
                        account: record.view(),
                        key,
                    })
                }
                Opened::IdTaken => Err(AccountError::AlreadyExists(Taken::Id(id))),
                Opened::EmailTaken => Err(AccountError::AlreadyExists(Taken::Email)),
            }
        })
    }

    fn account(&self, id: AccountId, caller: Caller) -> AccountFuture<AccountState> {
        let me = self.clone();
        Box::pin(async move { me.lookup(id, caller).await })
    }

    /// One transaction, decided by the database; the account is not read back.
    fn change_wallet(
        &self,
        id: AccountId,
        key: &str,
        op: &WalletOp,
    ) -> AccountFuture<(WalletReceipt, Option<AccountState>)> {
        let (db, key, op) = (self.db.clone(), key.to_owned(), op.clone());
        Box::pin(async move {
            let (receipt, version) =
                db.change_wallet_versioned(id, &key, &op)
                    .await
                    .map_err(|e| match e {
                        WalletFailure::Refused(e) => AccountError::Wallet(e),
                        WalletFailure::KeyConflict(key) => AccountError::KeyConflict(key),
                        WalletFailure::NoAccount(id) => AccountError::NotFound(id),
                        WalletFailure::Store(e) => store_error(e),
                    })?;
            if let Some(version) = version {
                // Before the reply: the caller reads its own write on this node.
                db.views().wrote_wallet(id, version, receipt.wallet);
            }
            Ok((receipt, None))
        })
    }

    fn ledger_page(
        &self,
        id: AccountId,
        caller: Caller,
        after: u64,
        limit: usize,
    ) -> AccountFuture<LedgerPage> {
        let me = self.clone();
        Box::pin(async move {
            me.lookup(id, caller).await?;
            let entries = me
                .db
                .ledger_page(id, after, limit.saturating_add(1))
                .await
                .map_err(store_error)?;
            Ok(LedgerPage::of(entries, limit))
        })
    }

    fn set_key(
        &self,
        id: AccountId,
        key: KeyDigest,
        only_if_missing: bool,
    ) -> AccountFuture<(bool, Option<AccountState>)> {
        let me = self.clone();
        Box::pin(async move {
            let set = me
                .db
                .set_api_key(id, &key, only_if_missing)
                .await
                .map_err(store_error)?
                .ok_or(AccountError::NotFound(id))?;
            if let Some(version) = set {
                me.db.views().wrote(id, version);
                me.keys.learn(key, id);
            }
            Ok((set.is_some(), None))
        })
    }

    /// A view served from this node's memory while it is provably current (see
    /// [`super::views`]): no database call, no message to the shard.
    fn view_now(&self, id: AccountId) -> Option<AccountState> {
        self.db.views().fresh(id)
    }

    /// The keys this node has seen answered (no database call on the request's thread).
    fn key_owner_now(&self, digest: &KeyDigest) -> Result<Option<AccountId>, StoreError> {
        Ok(self.keys.owner(digest))
    }

    fn key_known(&self, digest: &KeyDigest) -> StoreFuture<bool> {
        let (db, digest) = (self.db.clone(), *digest);
        Box::pin(async move { Ok(db.key_known(&digest).await?) })
    }

    fn demo_seeded(&self) -> StoreFuture<Option<u64>> {
        let db = self.db.clone();
        Box::pin(async move {
            let bytes = db.meta(DEMO_META).await?;
            bytes
                .map(|b| decode_record(Tree::Meta, DEMO_META.as_bytes(), &b))
                .transpose()
        })
    }

    fn set_demo_seeded(&self, n: u64) -> StoreFuture<()> {
        let db = self.db.clone();
        Box::pin(async move { Ok(db.set_meta(DEMO_META, &codec::encode(&n)).await?) })
    }
}
