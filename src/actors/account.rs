//! `AccountShard`: owns the accounts whose id hashes to this shard, their wallets and
//! ledgers. Every change to those accounts goes through this actor, one message at a
//! time, so there are no locks; the store is the truth and the in-memory map is a cache
//! that a restarted shard rebuilds lazily.
//!
//! Sent to by `Runtime` (HTTP handlers, embedders, and the booking saga for wallet holds).
//! Writes are atomic (record + ledger entry + idempotency key in one batch; a new account
//! with its API key, the key's reverse index and its unique email) and flushed before the
//! reply, without blocking the mailbox while the disk syncs: the flush runs as the reply
//! future, so concurrent writers share one sync.
//!
//! # A read model owned by the actor
//!
//! Reads do not cross to the shard's arbiter. The shard stays the only writer, and after
//! a change is durable (its flush completed) it publishes the account's view and API key
//! digest into its [`ReadSegment`] (see [`read_model`]), which `Runtime` reads on the HTTP
//! worker under a shared lock, and checks the caller there with the same rule as here
//! ([`Caller::may_act_on`]). A miss asks this actor, which loads the account and
//! publishes it. The segment holds exactly the cached accounts (evicted together), so it
//! is bounded by `accounts.cache_capacity` per shard.
//!
//! Replies without an injected delay are answered directly (`ActorResponse::reply`); only
//! writes (which wait for their flush) and delayed replies box a future.

mod backfill;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod read_model;

pub(crate) use backfill::{backfill_emails, backfill_key_owners};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tracing::Span;

use super::PanicFaults;
use crate::domain::access::{AccessError, Caller, KeyDigest};
use crate::domain::account::{
    email_key, Account, AccountId, AccountRecord, NewAccount, WalletView,
};
use crate::domain::money::Currency;
use crate::domain::wallet::{fold_ledger, validate_key, LedgerEntry, WalletError, WalletOp};
use crate::store::{codec, decode_record, get_record, Op, Store, StoreError, Tree};
pub use read_model::AccountReadModel;
use read_model::ReadSegment;

/// The shard actor.
pub struct AccountShard {
    index: usize,
    store: Arc<dyn Store>,
    /// Loaded accounts with their key digests; bounded by `cache_capacity`, evicted
    /// arbitrarily (the store has all), together with their published entry.
    cache: HashMap<AccountId, Cached>,
    /// Writes whose flush has not completed yet, by account: while an account has one,
    /// its stored state is not yet durable and must not be published as it is read.
    in_flight: HashMap<AccountId, u32>,
    /// Where durable states are published for readers on other threads.
    published: Arc<ReadSegment>,
    cache_capacity: usize,
    currency: Currency,
    faults: AccountFaults,
    /// In a cluster: the shared database, which answers every request (see [`pg`]), and
    /// the directory of key owners this node has seen.
    #[cfg(feature = "postgres")]
    db: Option<(crate::store::postgres::PgStore, Arc<pg::KnownKeys>)>,
}

/// An account as cached by its shard: the latest state, durable or not yet.
struct Cached {
    record: AccountRecord,
    key: Option<KeyDigest>,
}

/// A state to publish once durable.
struct Snapshot {
    account: Account,
    key: Option<KeyDigest>,
    version: u64,
}

/// Deliberate failures (see `[faults]` in the config); default: none.
#[derive(Debug, Clone, Default)]
pub(crate) struct AccountFaults {
    /// Added to every reply.
    pub(crate) reply_delay: Duration,
    /// Panics in handlers (`faults.account_panic_rate`, or `faults.panic_rate` when
    /// `faults.panic_actors` lists `account`).
    pub(crate) panics: PanicFaults,
}

impl AccountFaults {
    /// Do these faults change how replies come? Then reads must reach the actor, so the
    /// drills see them (the read model is bypassed).
    pub(crate) fn armed(&self) -> bool {
        !self.reply_delay.is_zero() || self.panics.is_armed()
    }
}

/// What a handler answers: at once, or after a future (a flush, an injected delay).
type Reply<T> = ActorResponse<AccountShard, Result<T, AccountError>>;

impl AccountShard {
    /// A fresh shard with an empty cache, publishing into `published` (emptied here: a
    /// restarted shard starts cold, and its segment with it).
    pub(crate) fn new(
        index: usize,
        store: Arc<dyn Store>,
        cache_capacity: usize,
        currency: Currency,
        faults: AccountFaults,
        published: Arc<ReadSegment>,
    ) -> Self {
        published.clear();
        AccountShard {
            index,
            store,
            cache: HashMap::new(),
            in_flight: HashMap::new(),
            published,
            cache_capacity,
            currency,
            faults,
            #[cfg(feature = "postgres")]
            db: None,
        }
    }

    /// Serves every request from the shared database instead of `store` (a cluster).
    #[cfg(feature = "postgres")]
    pub(crate) fn with_database(
        mut self,
        db: Option<(crate::store::postgres::PgStore, Arc<pg::KnownKeys>)>,
    ) -> Self {
        self.db = db;
        self
    }

    /// Replies with what `fut` (a database call) answers, after the injected delay if any.
    #[cfg(feature = "postgres")]
    fn reply_later<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, AccountError>> + 'static,
    ) -> Reply<T> {
        let delay = self.faults.reply_delay;
        ActorResponse::r#async(
            async move {
                let result = fut.await;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                result
            }
            .into_actor(self),
        )
    }

    /// Panics when the injected panic rate says so.
    fn maybe_panic(&self) {
        self.faults
            .panics
            .maybe_panic(&format_args!("account shard {}", self.index));
    }

    /// Replies with `result`: directly, or after the injected delay if any.
    fn reply<T: Send + 'static>(&self, result: Result<T, AccountError>) -> Reply<T> {
        let delay = self.faults.reply_delay;
        if delay.is_zero() {
            return ActorResponse::reply(result);
        }
        ActorResponse::r#async(
            async move {
                tokio::time::sleep(delay).await;
                result
            }
            .into_actor(self),
        )
    }

    /// The account, from cache or store. A record whose cached wallet disagrees with its
    /// ledger is reported as corrupt, never silently repaired.
    fn load(&mut self, id: AccountId) -> Result<&mut Cached, AccountError> {
        if !self.cache.contains_key(&id) {
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
            self.remember(record, key);
        }
        Ok(self.cache.get_mut(&id).expect("just loaded"))
    }

    fn remember(&mut self, record: AccountRecord, key: Option<KeyDigest>) {
        if self.cache.len() >= self.cache_capacity && !self.cache.contains_key(&record.id) {
            if let Some(victim) = self.cache.keys().next().copied() {
                self.cache.remove(&victim);
                self.published.evict(&victim);
            }
        }
        self.cache.insert(record.id, Cached { record, key });
    }

    /// The cached state of `id`, to publish once durable.
    fn snapshot(&self, id: AccountId) -> Option<Snapshot> {
        self.cache.get(&id).map(|c| Snapshot {
            account: c.record.view(),
            key: c.key,
            version: self.published.next_version(),
        })
    }

    /// Publishes a durable snapshot, unless the account was evicted meanwhile (the
    /// segment holds cached accounts only).
    fn publish(&self, snapshot: Snapshot) {
        if self.cache.contains_key(&snapshot.account.id) {
            self.published
                .publish(snapshot.account, snapshot.key, snapshot.version);
        }
    }

    /// Does some account have this key? (An unknown key is 401, another account's 403.)
    fn key_known(&self, digest: &KeyDigest) -> Result<bool, AccountError> {
        Ok(self
            .store
            .get(Tree::KeyOwners, &codec::encode(digest))?
            .is_some())
    }

    /// Loads the account, then checks that `caller` may act on it, against the latest
    /// cached key (for requests answered from this actor's own state, such as the ledger).
    fn authorize(&mut self, id: AccountId, caller: &Caller) -> Result<(), AccountError> {
        self.check_before_load(id, caller)?;
        let key = self.load(id)?.key;
        caller.may_act_on(id, key.as_ref(), |d| self.key_known(d))
    }

    /// A caller other than the operator is checked against the stored key digest (one
    /// point read) before an account that is not in memory is loaded: a load folds the
    /// account's whole ledger on this shard's thread, which only the account's owner may
    /// make it do. The answer is the one the loaded account would give.
    fn check_before_load(&self, id: AccountId, caller: &Caller) -> Result<(), AccountError> {
        if *caller == Caller::Operator || self.cache.contains_key(&id) {
            return Ok(());
        }
        let stored: Option<KeyDigest> = get_record(&*self.store, Tree::ApiKeys, id.as_bytes())?;
        caller.may_act_on(id, stored.as_ref(), |d| self.key_known(d))
    }

    /// The account's durable state for `caller` (a read-model miss): published and
    /// answered at once when no write of it is in flight, else after the flush.
    fn read_durable<R: Send + 'static>(
        &mut self,
        id: AccountId,
        caller: Caller,
        answer: fn(Account) -> R,
    ) -> Reply<R> {
        if let Err(e) = self.check_before_load(id, &caller) {
            return self.reply(Err(e));
        }
        let (account, key) = match self.load(id) {
            Ok(cached) => (cached.record.view(), cached.key),
            Err(e) => return self.reply(Err(e)),
        };
        if self.in_flight.get(&id).copied().unwrap_or(0) == 0 {
            let checked = caller
                .may_act_on(id, key.as_ref(), |d| self.key_known(d))
                .map(|()| answer(account));
            if let Some(snapshot) = self.snapshot(id) {
                self.publish(snapshot);
            }
            return self.reply(checked);
        }
        self.after_flush(id, Ok(()), move |act, ()| {
            caller
                .may_act_on(id, key.as_ref(), |d| act.key_known(d))
                .map(|()| answer(account))
        })
    }

    /// Replies once the store has flushed everything written so far (so `result` is
    /// durable), publishing the account's state as it is now first; `then` turns the
    /// value into the answer, on the actor. A failed flush publishes nothing.
    fn after_flush<T: 'static, R: Send + 'static>(
        &mut self,
        id: AccountId,
        result: Result<T, AccountError>,
        then: impl FnOnce(&mut Self, T) -> Result<R, AccountError> + 'static,
    ) -> Reply<R> {
        let snapshot = self.snapshot(id);
        *self.in_flight.entry(id).or_default() += 1;
        let flush = self.store.flush();
        let delay = self.faults.reply_delay;
        let durable = async move {
            let flushed = flush.await;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            flushed
        };
        ActorResponse::r#async(durable.into_actor(self).map(move |flushed, act, _| {
            act.landed(id);
            if flushed.is_ok() {
                if let Some(snapshot) = snapshot {
                    act.publish(snapshot);
                }
            }
            let value = result?;
            flushed?;
            then(act, value)
        }))
    }

    /// A write of `id` has been flushed (or failed to be).
    fn landed(&mut self, id: AccountId) {
        if let Some(n) = self.in_flight.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&id);
            }
        }
    }

    fn set_api_key(&mut self, msg: &SetApiKey) -> Result<bool, AccountError> {
        // Seeding demo data asks this of every demo account at each start: answering from
        // the store keeps accounts nobody reads out of memory (and their ledgers unfolded).
        if msg.only_if_missing
            && !self.cache.contains_key(&msg.id)
            && self.store.get(Tree::ApiKeys, msg.id.as_bytes())?.is_some()
        {
            return Ok(false);
        }
        let old = self.load(msg.id)?.key;
        if msg.only_if_missing && old.is_some() {
            return Ok(false);
        }
        let id_bytes = msg.id.as_bytes().to_vec();
        let mut ops = vec![
            Op::put(Tree::ApiKeys, id_bytes, &msg.key),
            Op::put(Tree::KeyOwners, codec::encode(&msg.key), &msg.id),
        ];
        if let Some(old) = old.filter(|o| *o != msg.key) {
            ops.push(Op::Delete {
                tree: Tree::KeyOwners,
                key: codec::encode(&old),
            });
        }
        self.store.write(ops)?;
        self.cache.get_mut(&msg.id).expect("loaded above").key = Some(msg.key);
        Ok(true)
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

    fn change_wallet(&mut self, msg: &ChangeWallet) -> Result<WalletReceipt, AccountError> {
        validate_key("idempotency_key", &msg.key).map_err(WalletError::from)?;
        let id = msg.id;
        let key_key = wallet_key_key(id, &msg.key);
        let store = self.store.clone();
        let record = &mut self.load(id)?.record;
        if let Some(seen) = get_record::<SeenKey>(&*store, Tree::WalletKeys, &key_key)? {
            if seen.op != msg.op {
                return Err(AccountError::KeyConflict(msg.key.clone()));
            }
            let entry_key = ledger_key(id, seen.seq);
            let entry: LedgerEntry =
                get_record(&*store, Tree::Ledger, &entry_key)?.ok_or_else(|| {
                    StoreError::Corrupt {
                        tree: Tree::Ledger.name(),
                        key: format!("{id}/{}", seen.seq),
                        reason: "idempotency key points at a missing ledger entry".into(),
                    }
                })?;
            return Ok(WalletReceipt {
                entry,
                wallet: record.wallet.view(),
                replayed: true,
            });
        }
        let (wallet, delta) = match record.wallet.apply(&msg.op) {
            Ok(applied) => applied,
            Err(WalletError::UnknownHold(hold_id)) => {
                if let WalletOp::Release { .. } = &msg.op {
                    // Releasing a hold that never landed: remember it under the hold's own
                    // key, so a late hold with that key is refused instead of locking
                    // points forever.
                    let tombstone = SeenKey {
                        op: msg.op.clone(),
                        seq: 0,
                    };
                    store.write(vec![Op::put(
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
            key: msg.key.clone(),
            op: msg.op.clone(),
            delta,
            balance_after: wallet.balance,
            held_after: wallet.held(),
            at: Utc::now(),
        };
        let mut next = record.clone();
        next.wallet = wallet;
        next.next_seq += 1;
        store.write(vec![
            Op::put(Tree::Accounts, id.as_bytes().to_vec(), &next),
            Op::put(Tree::Ledger, ledger_key(id, entry.seq), &entry),
            Op::put(
                Tree::WalletKeys,
                key_key,
                &SeenKey {
                    op: msg.op.clone(),
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

    fn open_account(&mut self, msg: OpenAccount) -> Result<Account, AccountError> {
        // Whether the id is taken, without loading the account into memory.
        if self.cache.contains_key(&msg.id)
            || self.store.get(Tree::Accounts, msg.id.as_bytes())?.is_some()
        {
            return Err(AccountError::AlreadyExists(Taken::Id(msg.id)));
        }
        let record = AccountRecord::open(msg.id, msg.new, self.currency, Utc::now());
        let id_bytes = msg.id.as_bytes().to_vec();
        let mut ops = vec![
            Op::put(Tree::Accounts, id_bytes.clone(), &record),
            // Unique across shards (and, later, nodes): the store refuses the whole batch
            // when another account has the address.
            Op::insert(Tree::Emails, email_key(&record.email), &msg.id),
        ];
        if let Some(key) = &msg.key {
            ops.push(Op::put(Tree::ApiKeys, id_bytes, key));
            ops.push(Op::put(Tree::KeyOwners, codec::encode(key), &msg.id));
        }
        match self.store.write(ops) {
            Ok(()) => {}
            Err(StoreError::Taken { .. }) => return Err(AccountError::AlreadyExists(Taken::Email)),
            Err(e) => return Err(e.into()),
        }
        let view = record.view();
        self.remember(record, msg.key);
        Ok(view)
    }
}

impl std::fmt::Debug for AccountShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountShard")
            .field("index", &self.index)
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl Actor for AccountShard {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        tracing::debug!(shard = self.index, "Account shard started.");
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

/// The result of a wallet change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WalletReceipt {
    /// The ledger entry recorded (or recorded before, for a replay).
    pub entry: LedgerEntry,
    /// Wallet figures now.
    pub wallet: WalletView,
    /// True when the key had been used before and this is the first result again.
    pub replayed: bool,
}

/// A page of ledger entries, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerPage {
    /// Entries after the requested sequence number.
    pub entries: Vec<LedgerEntry>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[schema(required = true)]
    pub next_after: Option<u64>,
}

/// Opens a new account with an empty wallet.
#[derive(Debug, Message)]
#[rtype(result = "Result<Account, AccountError>")]
pub struct OpenAccount {
    /// Id chosen by the caller (random, or a demo id).
    pub id: AccountId,
    /// Validated details.
    pub new: NewAccount,
    /// Digest of the customer's API key, written with the account; `None`: operator only.
    pub key: Option<KeyDigest>,
    /// The caller's span, so the request id follows the message.
    pub span: Span,
}

/// Reads an account with its wallet figures: sent on a read-model miss (or when injected
/// faults bypass the read model); the answer is the durable state, and is published.
#[derive(Debug, Message)]
#[rtype(result = "Result<Account, AccountError>")]
pub struct GetAccount {
    /// Account.
    pub id: AccountId,
    /// Who asks: checked against the account's API key.
    pub caller: Caller,
    /// The caller's span.
    pub span: Span,
}

/// Applies a wallet operation once per idempotency key.
#[derive(Debug, Message)]
#[rtype(result = "Result<WalletReceipt, AccountError>")]
pub struct ChangeWallet {
    /// Account.
    pub id: AccountId,
    /// Idempotency key: a replay with the same operation returns the first receipt.
    pub key: String,
    /// The change.
    pub op: WalletOp,
    /// The caller's span.
    pub span: Span,
}

/// Reads ledger entries with sequence numbers above `after`.
#[derive(Debug, Message)]
#[rtype(result = "Result<LedgerPage, AccountError>")]
pub struct ReadLedger {
    /// Account.
    pub id: AccountId,
    /// Who asks: checked against the account's API key.
    pub caller: Caller,
    /// Sequence number to start after (0 for the first page).
    pub after: u64,
    /// Page size, already bounded by the caller.
    pub limit: usize,
    /// The caller's span.
    pub span: Span,
}

/// Checks that a caller may act on an account (for requests served by other actors, such
/// as bookings and personalized searches), on a read-model miss.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AccountError>")]
pub struct Authorize {
    /// Account.
    pub id: AccountId,
    /// Who asks.
    pub caller: Caller,
}

/// Replaces (or, with `only_if_missing`, sets) the account's API key digest.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, AccountError>")]
pub struct SetApiKey {
    /// Account.
    pub id: AccountId,
    /// Digest of the new key.
    pub key: KeyDigest,
    /// Leave an existing key alone (demo seeding); the reply says whether it was set.
    pub only_if_missing: bool,
}

/// Opens the account and acknowledges once durable (then publishes it).
impl Handler<OpenAccount> for AccountShard {
    type Result = Reply<Account>;
    fn handle(&mut self, msg: OpenAccount, _: &mut Context<Self>) -> Self::Result {
        let span = tracing::info_span!(parent: &msg.span, "open_account", shard = self.index, account = %msg.id);
        let _enter = span.enter();
        self.maybe_panic();
        #[cfg(feature = "postgres")]
        if let Some((db, keys)) = self.db.clone() {
            return self.reply_later(pg::open(db, keys, msg, self.currency));
        }
        let id = msg.id;
        let result = self.open_account(msg);
        self.after_flush(id, result, |_, account| Ok(account))
    }
}

/// A read-model miss: loads the account, publishes its durable state and answers from it.
impl Handler<GetAccount> for AccountShard {
    type Result = Reply<Account>;
    fn handle(&mut self, msg: GetAccount, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        #[cfg(feature = "postgres")]
        if let Some((db, keys)) = self.db.clone() {
            return self.reply_later(pg::get(db, keys, msg.id, msg.caller));
        }
        self.read_durable(msg.id, msg.caller, |account| account)
    }
}

/// Applies the change (or replays it) and acknowledges once durable (then publishes it).
impl Handler<ChangeWallet> for AccountShard {
    type Result = Reply<WalletReceipt>;
    fn handle(&mut self, msg: ChangeWallet, _: &mut Context<Self>) -> Self::Result {
        let span = tracing::info_span!(parent: &msg.span, "change_wallet", shard = self.index, account = %msg.id, key = %msg.key);
        let _enter = span.enter();
        self.maybe_panic();
        #[cfg(feature = "postgres")]
        if let Some((db, _)) = self.db.clone() {
            return self.reply_later(pg::change_wallet(db, msg));
        }
        let result = self.change_wallet(&msg);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "Wallet change refused.");
        }
        self.after_flush(msg.id, result, |_, receipt| Ok(receipt))
    }
}

/// Reads a page straight from the store (entries are immutable once written).
impl Handler<ReadLedger> for AccountShard {
    type Result = Reply<LedgerPage>;
    fn handle(&mut self, msg: ReadLedger, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        #[cfg(feature = "postgres")]
        if let Some((db, keys)) = self.db.clone() {
            return self.reply_later(pg::read_ledger(db, keys, msg));
        }
        let result = self.read_ledger(&msg);
        self.reply(result)
    }
}

/// A read-model miss: like [`GetAccount`], without the account in the answer.
impl Handler<Authorize> for AccountShard {
    type Result = Reply<()>;
    fn handle(&mut self, msg: Authorize, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        #[cfg(feature = "postgres")]
        if let Some((db, keys)) = self.db.clone() {
            return self.reply_later(pg::authorize(db, keys, msg.id, msg.caller));
        }
        self.read_durable(msg.id, msg.caller, |_| ())
    }
}

/// Stores the new digest and acknowledges once durable (then publishes it).
impl Handler<SetApiKey> for AccountShard {
    type Result = Reply<bool>;
    fn handle(&mut self, msg: SetApiKey, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        #[cfg(feature = "postgres")]
        if let Some((db, keys)) = self.db.clone() {
            return self.reply_later(pg::set_api_key(db, keys, msg));
        }
        let result = self.set_api_key(&msg);
        self.after_flush(msg.id, result, |_, set| Ok(set))
    }
}

impl AccountShard {
    fn read_ledger(&mut self, msg: &ReadLedger) -> Result<LedgerPage, AccountError> {
        self.authorize(msg.id, &msg.caller)?;
        // One extra entry tells whether another page follows.
        let entries = self.ledger_entries(msg.id, msg.after, msg.limit + 1)?;
        Ok(LedgerPage::of(entries, msg.limit))
    }
}

impl LedgerPage {
    /// The page of up to `limit` entries, from `limit + 1` read (the extra one says that
    /// another page follows).
    pub(crate) fn of(mut entries: Vec<LedgerEntry>, limit: usize) -> LedgerPage {
        let next_after = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        LedgerPage {
            entries,
            next_after,
        }
    }
}
