//! The account shard's requests when nodes share PostgreSQL: every decision is the
//! database's (a wallet change is one transaction there, see `store::postgres::wallet`),
//! and every read asks it, so a change acknowledged by any node is seen by every node.
//! The shard keeps no copy of an account; these run as the handler's reply future, so
//! the shard's thread never blocks on the network.

use std::collections::HashMap;
use std::sync::RwLock;

use chrono::Utc;

use super::{
    AccountError, ChangeWallet, LedgerPage, OpenAccount, ReadLedger, SetApiKey, Taken,
    WalletReceipt,
};
use crate::domain::access::{Caller, KeyDigest};
use crate::domain::account::{Account, AccountId, AccountRecord};
use crate::domain::money::Currency;
use crate::store::postgres::accounts::{AccountLookup, Opened};
use crate::store::postgres::wallet::WalletFailure;
use crate::store::postgres::PgStore;
use crate::store::StoreError;

/// Which account each API key digest seen by this node belongs to: what the HTTP rate
/// limits key their buckets by without a database call on the request's thread. Filled
/// from database answers; a key not seen yet is limited by the client's address until its
/// first request reaches a shard. Bounded: emptied when full.
#[derive(Debug)]
pub struct KnownKeys {
    owners: RwLock<HashMap<[u8; 32], AccountId>>,
    capacity: usize,
}

impl KnownKeys {
    /// A directory of at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        KnownKeys {
            owners: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The account a digest was last seen to belong to.
    pub fn owner(&self, digest: &KeyDigest) -> Option<AccountId> {
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

fn store_error(e: crate::store::postgres::PgError) -> AccountError {
    AccountError::Store(StoreError::from(e))
}

/// Opens the account (with its key digest) in one transaction.
pub(super) async fn open(
    db: PgStore,
    keys: std::sync::Arc<KnownKeys>,
    msg: OpenAccount,
    currency: Currency,
) -> Result<Account, AccountError> {
    let record = AccountRecord::open(msg.id, msg.new, currency, Utc::now());
    match db
        .open_account_with_key(&record, msg.key.as_ref())
        .await
        .map_err(store_error)?
    {
        Opened::Yes => {
            if let Some(key) = msg.key {
                keys.learn(key, msg.id);
            }
            Ok(record.view())
        }
        Opened::IdTaken => Err(AccountError::AlreadyExists(Taken::Id(msg.id))),
        Opened::EmailTaken => Err(AccountError::AlreadyExists(Taken::Email)),
    }
}

/// The account, if `caller` may see it (the same rule as on one node).
pub(super) async fn get(
    db: PgStore,
    keys: std::sync::Arc<KnownKeys>,
    id: AccountId,
    caller: Caller,
) -> Result<Account, AccountError> {
    let found = lookup(&db, &keys, id, &caller).await?;
    caller.may_act_on(id, found.key.as_ref(), |_| {
        Ok::<_, AccountError>(found.caller_known)
    })?;
    Ok(found.account)
}

/// Checks `caller` against the account's key.
pub(super) async fn authorize(
    db: PgStore,
    keys: std::sync::Arc<KnownKeys>,
    id: AccountId,
    caller: Caller,
) -> Result<(), AccountError> {
    get(db, keys, id, caller).await.map(|_| ())
}

async fn lookup(
    db: &PgStore,
    keys: &KnownKeys,
    id: AccountId,
    caller: &Caller,
) -> Result<AccountLookup, AccountError> {
    let digest = match caller {
        Caller::Customer(d) => Some(d),
        _ => None,
    };
    let found = db
        .account_lookup(id, digest)
        .await
        .map_err(store_error)?
        .ok_or(AccountError::NotFound(id))?;
    if let Some(key) = found.key {
        keys.learn(key, id);
    }
    Ok(found)
}

/// One wallet change, decided by the database.
pub(super) async fn change_wallet(
    db: PgStore,
    msg: ChangeWallet,
) -> Result<WalletReceipt, AccountError> {
    db.change_wallet(msg.id, &msg.key, &msg.op)
        .await
        .map_err(|e| match e {
            WalletFailure::Refused(e) => AccountError::Wallet(e),
            WalletFailure::KeyConflict(key) => AccountError::KeyConflict(key),
            WalletFailure::NoAccount(id) => AccountError::NotFound(id),
            WalletFailure::Store(e) => store_error(e),
        })
}

/// A page of the ledger, for a caller who may see the account.
pub(super) async fn read_ledger(
    db: PgStore,
    keys: std::sync::Arc<KnownKeys>,
    msg: ReadLedger,
) -> Result<LedgerPage, AccountError> {
    authorize(db.clone(), keys, msg.id, msg.caller).await?;
    let entries = db
        .ledger_page(msg.id, msg.after, msg.limit + 1)
        .await
        .map_err(store_error)?;
    Ok(LedgerPage::of(entries, msg.limit))
}

/// Sets (or, with `only_if_missing`, adds) the account's key digest.
pub(super) async fn set_api_key(
    db: PgStore,
    keys: std::sync::Arc<KnownKeys>,
    msg: SetApiKey,
) -> Result<bool, AccountError> {
    let set = db
        .set_api_key(msg.id, &msg.key, msg.only_if_missing)
        .await
        .map_err(store_error)?
        .ok_or(AccountError::NotFound(msg.id))?;
    if set {
        keys.learn(msg.key, msg.id);
    }
    Ok(set)
}
