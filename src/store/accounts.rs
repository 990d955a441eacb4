//! [`AccountStore`]: accounts, their API key digests, wallets and ledgers, said as the
//! account shards mean it (open an account with its key and unique email, read it for a
//! caller, apply a wallet change under its idempotency key, read a ledger page, set a
//! key), so a shard has one code path whatever the backend.
//!
//! Writes are applied in the order of the calls and each returned future resolves once
//! the write is durable. A store that is the **only writer** of its accounts (sled: one
//! process, and each account changed only through its shard) also says how the account
//! looks after each write, which the shard publishes into its read model; a shared store
//! (PostgreSQL) is the only truth, so the shard publishes nothing: the store may keep views
//! of its own that it can prove current ([`AccountStore::view_now`]), and asks the
//! database otherwise.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{StoreError, StoreFuture};
use crate::domain::access::{AccessError, Caller, KeyDigest};
use crate::domain::account::{Account, AccountId, AccountRecord};
use crate::domain::wallet::{LedgerPage, WalletError, WalletOp, WalletReceipt};

/// A boxed, sendable future answering an account request.
pub type AccountFuture<T> = Pin<Box<dyn Future<Output = Result<T, AccountError>> + Send>>;

/// An account as a write left it, or as a read found it: its view and key digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    /// The account with its wallet figures.
    pub account: Account,
    /// Its API key digest, if it has one.
    pub key: Option<KeyDigest>,
}

/// The account storage contract.
pub trait AccountStore: Send + Sync + 'static {
    /// The store a (re)started shard uses: the same accounts, with nothing remembered from
    /// an earlier incarnation (a restarted shard starts cold).
    fn for_shard(&self) -> Arc<dyn AccountStore>;

    /// Whether this process is the only writer of the accounts (then a state a write left
    /// and a read found, once durable, may be served from memory until the next write).
    fn sole_writer(&self) -> bool;

    /// Opens `record` with its key digest; the email is unique across accounts.
    fn open(&self, record: AccountRecord, key: Option<KeyDigest>) -> AccountFuture<AccountState>;

    /// The durable state of `id`, if `caller` may see it (the rule is
    /// [`Caller::may_act_on`]). Only the account's owner or the operator can make the store
    /// load an account it does not have at hand.
    fn account(&self, id: AccountId, caller: Caller) -> AccountFuture<AccountState>;

    /// Applies `op` once per idempotency key `key` (a replay returns the first receipt),
    /// with the account as the change left it when the store has it at hand.
    fn change_wallet(
        &self,
        id: AccountId,
        key: &str,
        op: &WalletOp,
    ) -> AccountFuture<(WalletReceipt, Option<AccountState>)>;

    /// Up to `limit` ledger entries after sequence number `after`, if `caller` may see them.
    fn ledger_page(
        &self,
        id: AccountId,
        caller: Caller,
        after: u64,
        limit: usize,
    ) -> AccountFuture<LedgerPage>;

    /// Replaces (or, with `only_if_missing`, sets) the key digest; whether it was set, with
    /// the account as the change left it when the store has it at hand.
    fn set_key(
        &self,
        id: AccountId,
        key: KeyDigest,
        only_if_missing: bool,
    ) -> AccountFuture<(bool, Option<AccountState>)>;

    /// The account a key digest belongs to, as far as this process can tell without
    /// waiting (what the HTTP rate limits key their buckets by, on the request's thread):
    /// exact on sled; on PostgreSQL, the keys this node has seen answered.
    fn key_owner_now(&self, digest: &KeyDigest) -> Result<Option<AccountId>, StoreError>;

    /// The account as this process may serve it from memory without asking the store,
    /// when the store itself keeps such views (PostgreSQL: only while provably current);
    /// `None` sends the read to the account's shard. Called on the request's thread.
    fn view_now(&self, _id: AccountId) -> Option<AccountState> {
        None
    }

    /// Whether some account's key has this digest (an unknown key is 401, another
    /// account's 403).
    fn key_known(&self, digest: &KeyDigest) -> StoreFuture<bool>;

    /// How many demo accounts are known to be seeded (by any node).
    fn demo_seeded(&self) -> StoreFuture<Option<u64>>;

    /// Records that `n` demo accounts are seeded.
    fn set_demo_seeded(&self, n: u64) -> StoreFuture<()>;
}

impl std::fmt::Debug for dyn AccountStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountStore")
            .field("sole_writer", &self.sole_writer())
            .finish()
    }
}

/// Why an account request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// No such account.
    #[error("account {0} not found")]
    NotFound(AccountId),
    /// An account with this id, or this email address, exists already.
    #[error("{0}")]
    AlreadyExists(Taken),
    /// The idempotency key was used before for a different operation.
    #[error("idempotency key {0:?} was already used for a different operation")]
    KeyConflict(String),
    /// The wallet refused the operation.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The caller may not act on this account.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What made a new account collide with an existing one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Taken {
    /// An account has this id.
    #[error("account {0} already exists")]
    Id(AccountId),
    /// An account has this email address (normalized: trimmed, lowercased); one address
    /// opens one account. The other account is not named: it is not the caller's.
    #[error("email: an account with this email address exists already")]
    Email,
}
