//! `AccountShard`: the door to the accounts whose id hashes to this shard, their wallets
//! and ledgers. Every change to those accounts goes through this actor, one message at a
//! time, and reaches the [`AccountStore`] in that order; the store decides (and, with
//! several nodes, the database), the shard publishes.
//!
//! Sent to by `Runtime` (HTTP handlers, embedders, and the booking saga for wallet holds).
//! A write is acknowledged once the store says it is durable, without blocking the
//! mailbox meanwhile: the store's future is the reply, so concurrent writers share one
//! disk sync.
//!
//! # A read model owned by the actor
//!
//! When the store is the only writer of its accounts (sled), reads do not cross to the
//! shard's arbiter: after a change is durable the shard publishes the account's view and
//! API key digest into its `ReadSegment` (see [`read_model`]), which `Runtime` reads on
//! the HTTP worker under a shared lock, and checks the caller there with the same rule the
//! store applies ([`Caller::may_act_on`]). A miss asks this actor, which reads the account
//! from the store and publishes it. A shared store (PostgreSQL) is the only truth: the
//! shard publishes nothing (the runtime bypasses the model), and a read is answered by
//! the store's own views when it can prove them current, else by the database.

pub mod read_model;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use tracing::Span;

use super::PanicFaults;
use crate::domain::access::{Caller, KeyDigest};
use crate::domain::account::{Account, AccountId, AccountRecord, NewAccount};
use crate::domain::money::Currency;
use crate::domain::wallet::{LedgerPage, WalletOp, WalletReceipt};
pub use crate::store::accounts::{AccountError, Taken};
use crate::store::accounts::{AccountFuture, AccountState, AccountStore};
use crate::telemetry::{Origin, Scope, TracedExt as _};
pub use read_model::AccountReadModel;
use read_model::ReadSegment;

/// The shard actor.
pub struct AccountShard {
    index: usize,
    store: Arc<dyn AccountStore>,
    /// Where durable states are published for readers on other threads (when the store
    /// is the only writer).
    published: Arc<ReadSegment>,
    currency: Currency,
    faults: AccountFaults,
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

/// What a handler answers: after the store's future (and the injected delay, if any).
type Reply<T> = ActorResponse<AccountShard, Result<T, AccountError>>;

impl AccountShard {
    /// A fresh shard over `store` (its own incarnation: [`AccountStore::for_shard`]),
    /// publishing into `published` (emptied here: a restarted shard starts cold, and its
    /// segment with it).
    pub(crate) fn new(
        index: usize,
        store: Arc<dyn AccountStore>,
        currency: Currency,
        faults: AccountFaults,
        published: Arc<ReadSegment>,
    ) -> Self {
        published.clear();
        AccountShard {
            index,
            store: store.for_shard(),
            published,
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

    /// Replies with what the store's `fut` answers, after the injected delay if any,
    /// publishing the account's state it carries (see [`AccountShard::publishing`]).
    fn reply<T: Send + 'static>(&self, fut: AccountFuture<(T, Option<AccountState>)>) -> Reply<T> {
        let delay = self.faults.reply_delay;
        // Taken now, in message order: a publication that lands late (two flushes
        // completing out of order) never replaces a newer one.
        let version = self.published.next_version();
        let published = self.publishing();
        ActorResponse::r#async(
            async move {
                let result = fut.await;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if let (Some(segment), Ok((_, Some(state)))) = (&published, &result) {
                    segment.publish(state.account.clone(), state.key, version);
                }
                result.map(|(value, _)| value)
            }
            .into_actor(self),
        )
    }

    /// The segment to publish durable states into: only when the store is the only
    /// writer of its accounts (else a state in memory could be stale at once).
    fn publishing(&self) -> Option<Arc<ReadSegment>> {
        self.store.sole_writer().then(|| self.published.clone())
    }

    /// A read-model miss: the account's durable state for `caller`, published.
    fn read<R: Send + 'static>(
        &self,
        id: AccountId,
        caller: Caller,
        answer: fn(Account) -> R,
    ) -> Reply<R> {
        let read = self.store.account(id, caller);
        self.reply(Box::pin(async move {
            let state = read.await?;
            Ok((answer(state.account.clone()), Some(state)))
        }))
    }
}

impl std::fmt::Debug for AccountShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountShard")
            .field("index", &self.index)
            .field("published", &self.published.len())
            .finish()
    }
}

impl Actor for AccountShard {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        tracing::debug!(shard = self.index, "Account shard started.");
    }
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
    /// The sender's span and when it sent this (the wait in the mailbox).
    pub origin: Origin,
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
    /// The sender's span and when it sent this (the wait in the mailbox).
    pub origin: Origin,
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
    /// The sender's span and when it sent this (the wait in the mailbox).
    pub origin: Origin,
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
    /// The sender's span and when it sent this (the wait in the mailbox).
    pub origin: Origin,
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
    /// The sender's span and when it sent this (the wait in the mailbox).
    pub origin: Origin,
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
    /// The sender's span and when it sent this (the wait in the mailbox).
    pub origin: Origin,
}

/// `store`'s future, polled inside `scope` while spans are exported: a store whose work
/// happens when the future is polled (PostgreSQL) then has its statements in the
/// message's trace (or knows that trace was dropped). Untraced, the future as it was (no
/// allocation).
fn within<T: 'static>(store: AccountFuture<T>, scope: &Scope) -> AccountFuture<T> {
    if crate::telemetry::enabled() && (!scope.span().is_none() || scope.unsampled().is_some()) {
        Box::pin(store.traced(scope.clone()))
    } else {
        store
    }
}

/// Opens the account and acknowledges once durable (then publishes it).
impl Handler<OpenAccount> for AccountShard {
    type Result = Reply<Account>;
    fn handle(&mut self, msg: OpenAccount, _: &mut Context<Self>) -> Self::Result {
        let span = msg.origin.scoped(|| tracing::info_span!(parent: &msg.span, "open_account", shard = self.index, account = %msg.id, actor.mailbox_wait_us = msg.origin.mailbox_wait_us()));
        let _enter = span.enter();
        self.maybe_panic();
        let record = AccountRecord::open(msg.id, msg.new, self.currency, Utc::now());
        let opened = within(self.store.open(record, msg.key), &span);
        self.reply(Box::pin(async move {
            let state = opened.await?;
            Ok((state.account.clone(), Some(state)))
        }))
    }
}

/// A read-model miss: reads the account, publishes its durable state and answers from it.
impl Handler<GetAccount> for AccountShard {
    type Result = Reply<Account>;
    fn handle(&mut self, msg: GetAccount, _: &mut Context<Self>) -> Self::Result {
        let span = msg.origin.handling("account get_account");
        let _enter = span.enter();
        self.maybe_panic();
        self.read(msg.id, msg.caller, |account| account)
    }
}

/// Applies the change (or replays it) and acknowledges once durable (then publishes it).
impl Handler<ChangeWallet> for AccountShard {
    type Result = Reply<WalletReceipt>;
    fn handle(&mut self, msg: ChangeWallet, _: &mut Context<Self>) -> Self::Result {
        let span = msg.origin.scoped(|| tracing::info_span!(parent: &msg.span, "change_wallet", shard = self.index, account = %msg.id, key = %msg.key, actor.mailbox_wait_us = msg.origin.mailbox_wait_us()));
        let _enter = span.enter();
        self.maybe_panic();
        let changed = within(self.store.change_wallet(msg.id, &msg.key, &msg.op), &span);
        self.reply(changed)
    }
}

/// Reads a page from the store (entries are immutable once written).
impl Handler<ReadLedger> for AccountShard {
    type Result = Reply<LedgerPage>;
    fn handle(&mut self, msg: ReadLedger, _: &mut Context<Self>) -> Self::Result {
        let span = msg.origin.handling("account read_ledger");
        let _enter = span.enter();
        self.maybe_panic();
        let page = self
            .store
            .ledger_page(msg.id, msg.caller, msg.after, msg.limit);
        self.reply(Box::pin(async move { Ok((page.await?, None)) }))
    }
}

/// A read-model miss: like [`GetAccount`], without the account in the answer.
impl Handler<Authorize> for AccountShard {
    type Result = Reply<()>;
    fn handle(&mut self, msg: Authorize, _: &mut Context<Self>) -> Self::Result {
        let span = msg.origin.handling("account authorize");
        let _enter = span.enter();
        self.maybe_panic();
        self.read(msg.id, msg.caller, |_| ())
    }
}

/// Stores the new digest and acknowledges once durable (then publishes it).
impl Handler<SetApiKey> for AccountShard {
    type Result = Reply<bool>;
    fn handle(&mut self, msg: SetApiKey, _: &mut Context<Self>) -> Self::Result {
        let span = msg.origin.handling("account set_api_key");
        let _enter = span.enter();
        self.maybe_panic();
        let set = within(
            self.store.set_key(msg.id, msg.key, msg.only_if_missing),
            &span,
        );
        self.reply(set)
    }
}
