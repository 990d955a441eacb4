//! `AccountShard`: owns the accounts whose id hashes to this shard, their wallets and
//! ledgers. Every change to those accounts goes through this actor, one message at a
//! time, so there are no locks; the store is the truth and the in-memory map is a cache
//! that a restarted shard rebuilds lazily.
//!
//! Sent to by `Runtime` (HTTP handlers, embedders, and later the booking saga for wallet
//! holds). Writes are atomic (record + ledger entry + idempotency key in one batch) and
//! flushed before the reply, without blocking the mailbox while the disk syncs: the flush
//! runs as the reply future, so concurrent writers share one sync.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tracing::Span;

use super::PanicFaults;
use crate::domain::access::{AccessError, Caller, KeyDigest};
use crate::domain::account::{Account, AccountId, AccountRecord, NewAccount, WalletView};
use crate::domain::money::Currency;
use crate::domain::wallet::{fold_ledger, validate_key, LedgerEntry, WalletError, WalletOp};
use crate::store::{decode_record, get_record, Op, Store, StoreError, Tree};

/// The shard actor.
pub struct AccountShard {
    index: usize,
    store: Arc<dyn Store>,
    /// Loaded accounts; bounded by `cache_capacity`, evicted arbitrarily (the store has all).
    cache: HashMap<AccountId, AccountRecord>,
    /// API key digests of cached accounts (`None`: the account has no key); evicted with
    /// the account.
    keys: HashMap<AccountId, Option<KeyDigest>>,
    cache_capacity: usize,
    currency: Currency,
    faults: AccountFaults,
}

/// Deliberate failures (see `[faults]` in the config); default: none.
#[derive(Debug, Clone, Default)]
pub struct AccountFaults {
    /// Added to every reply.
    pub reply_delay: Duration,
    /// Panics in handlers (`faults.account_panic_rate`, or `faults.panic_rate` when
    /// `faults.panic_actors` lists `account`).
    pub panics: PanicFaults,
}

impl AccountShard {
    /// A fresh shard with an empty cache.
    pub fn new(
        index: usize,
        store: Arc<dyn Store>,
        cache_capacity: usize,
        currency: Currency,
        faults: AccountFaults,
    ) -> Self {
        AccountShard {
            index,
            store,
            cache: HashMap::new(),
            keys: HashMap::new(),
            cache_capacity,
            currency,
            faults,
        }
    }

    /// Panics when the injected panic rate says so.
    fn maybe_panic(&self) {
        self.faults
            .panics
            .maybe_panic(&format_args!("account shard {}", self.index));
    }

    /// Replies with `result`, after the injected delay if any.
    fn reply<T: Send + 'static>(
        &self,
        result: Result<T, AccountError>,
    ) -> ResponseFuture<Result<T, AccountError>> {
        self.delayed(async move { result })
    }

    /// Answers with `answer`, after the injected delay if any.
    fn delayed<T: Send + 'static>(
        &self,
        answer: impl std::future::Future<Output = Result<T, AccountError>> + Send + 'static,
    ) -> ResponseFuture<Result<T, AccountError>> {
        let delay = self.faults.reply_delay;
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer.await
        })
    }

    /// The account, from cache or store. A record whose cached wallet disagrees with its
    /// ledger is reported as corrupt, never silently repaired.
    fn load(&mut self, id: AccountId) -> Result<&mut AccountRecord, AccountError> {
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
            self.remember(record);
        }
        Ok(self.cache.get_mut(&id).expect("just loaded"))
    }

    fn remember(&mut self, record: AccountRecord) {
        if self.cache.len() >= self.cache_capacity && !self.cache.contains_key(&record.id) {
            if let Some(victim) = self.cache.keys().next().copied() {
                self.cache.remove(&victim);
                self.keys.remove(&victim);
            }
        }
        self.cache.insert(record.id, record);
    }

    /// Loads the account, then checks that `caller` may act on it. The operator never
    /// needs the key digest, so its requests skip that lookup.
    fn authorize(&mut self, id: AccountId, caller: &Caller) -> Result<(), AccountError> {
        self.load(id)?;
        if *caller == Caller::Operator {
            return Ok(());
        }
        if !self.keys.contains_key(&id) {
            let digest = get_record(&*self.store, Tree::ApiKeys, id.as_bytes())?;
            self.keys.insert(id, digest);
        }
        Ok(caller.may_act_on(id, self.keys[&id].as_ref())?)
    }

    fn set_api_key(&mut self, msg: &SetApiKey) -> Result<bool, AccountError> {
        self.authorize(msg.id, &Caller::Operator)?;
        if msg.only_if_missing {
            let current: Option<KeyDigest> =
                get_record(&*self.store, Tree::ApiKeys, msg.id.as_bytes())?;
            if current.is_some() {
                return Ok(false);
            }
        }
        self.store.write(vec![Op::put(
            Tree::ApiKeys,
            msg.id.as_bytes().to_vec(),
            &msg.key,
        )])?;
        self.keys.insert(msg.id, Some(msg.key));
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
        let record = self.load(id)?;
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
        match self.load(msg.id) {
            Ok(_) => return Err(AccountError::AlreadyExists(msg.id)),
            Err(AccountError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let record = AccountRecord::open(msg.id, msg.new, self.currency, Utc::now());
        let mut ops = vec![Op::put(Tree::Accounts, msg.id.as_bytes().to_vec(), &record)];
        if let Some(key) = &msg.key {
            ops.push(Op::put(Tree::ApiKeys, msg.id.as_bytes().to_vec(), key));
        }
        self.store.write(ops)?;
        let view = record.view();
        self.remember(record);
        self.keys.insert(msg.id, msg.key);
        Ok(view)
    }

    /// Replies with `result` once the store has flushed everything written so far.
    fn after_flush<T: Send + 'static>(
        &self,
        result: Result<T, AccountError>,
    ) -> ResponseFuture<Result<T, AccountError>> {
        let flush = self.store.flush();
        self.delayed(async move {
            let value = result?;
            flush.await?;
            Ok(value)
        })
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
    /// An account with this id exists already.
    #[error("account {0} already exists")]
    AlreadyExists(AccountId),
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletReceipt {
    /// The ledger entry recorded (or recorded before, for a replay).
    pub entry: LedgerEntry,
    /// Wallet figures now.
    pub wallet: WalletView,
    /// True when the key had been used before and this is the first result again.
    pub replayed: bool,
}

/// A page of ledger entries, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPage {
    /// Entries after the requested sequence number.
    pub entries: Vec<LedgerEntry>,
    /// Pass as `after` to get the next page; absent on the last page.
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

/// Reads an account with its wallet figures.
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
/// as bookings and personalized searches).
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

/// Opens the account and acknowledges once durable.
impl Handler<OpenAccount> for AccountShard {
    type Result = ResponseFuture<Result<Account, AccountError>>;
    fn handle(&mut self, msg: OpenAccount, _: &mut Context<Self>) -> Self::Result {
        let span = tracing::info_span!(parent: &msg.span, "open_account", shard = self.index, account = %msg.id);
        let _enter = span.enter();
        self.maybe_panic();
        let result = self.open_account(msg);
        self.after_flush(result)
    }
}

/// Answers from the cache (or loads the account once).
impl Handler<GetAccount> for AccountShard {
    type Result = ResponseFuture<Result<Account, AccountError>>;
    fn handle(&mut self, msg: GetAccount, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        let result = self
            .authorize(msg.id, &msg.caller)
            .and_then(|()| self.load(msg.id).map(|r| r.view()));
        self.reply(result)
    }
}

/// Applies the change (or replays it) and acknowledges once durable.
impl Handler<ChangeWallet> for AccountShard {
    type Result = ResponseFuture<Result<WalletReceipt, AccountError>>;
    fn handle(&mut self, msg: ChangeWallet, _: &mut Context<Self>) -> Self::Result {
        let span = tracing::info_span!(parent: &msg.span, "change_wallet", shard = self.index, account = %msg.id, key = %msg.key);
        let _enter = span.enter();
        self.maybe_panic();
        let result = self.change_wallet(&msg);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "Wallet change refused.");
        }
        self.after_flush(result)
    }
}

/// Reads a page straight from the store (entries are immutable once written).
impl Handler<ReadLedger> for AccountShard {
    type Result = ResponseFuture<Result<LedgerPage, AccountError>>;
    fn handle(&mut self, msg: ReadLedger, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        let result = self.read_ledger(&msg);
        self.reply(result)
    }
}

/// Answers from the cache (or loads the account and its key digest once).
impl Handler<Authorize> for AccountShard {
    type Result = ResponseFuture<Result<(), AccountError>>;
    fn handle(&mut self, msg: Authorize, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        let result = self.authorize(msg.id, &msg.caller);
        self.reply(result)
    }
}

/// Stores the new digest and acknowledges once durable.
impl Handler<SetApiKey> for AccountShard {
    type Result = ResponseFuture<Result<bool, AccountError>>;
    fn handle(&mut self, msg: SetApiKey, _: &mut Context<Self>) -> Self::Result {
        self.maybe_panic();
        let result = self.set_api_key(&msg);
        self.after_flush(result)
    }
}

impl AccountShard {
    fn read_ledger(&mut self, msg: &ReadLedger) -> Result<LedgerPage, AccountError> {
        self.authorize(msg.id, &msg.caller)?;
        // One extra entry tells whether another page follows.
        let mut entries = self.ledger_entries(msg.id, msg.after, msg.limit + 1)?;
        let next_after = if entries.len() > msg.limit {
            entries.truncate(msg.limit);
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(LedgerPage {
            entries,
            next_after,
        })
    }
}
