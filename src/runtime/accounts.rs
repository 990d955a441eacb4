//! Accounts and wallets: open accounts, API keys, reads, wallet credits and the ledger.
//!
//! Writes go to the account's shard. Account reads and authorization checks are answered
//! on the calling thread from the read model the shards publish into after each durable
//! change (see `actors::account::read_model`: a read model owned by the actor), with the
//! caller checked by the same rule the shards use ([`Caller::may_act_on`]); a miss (a
//! cold account) asks the shard, which loads the account and publishes it. Under injected
//! account faults every read goes to the shard, so drills see the faults; with a shared
//! store (PostgreSQL) nothing is published and every read goes to the shard, which asks
//! the database.

use tracing::Span;

use super::Runtime;
use crate::actors::account::{
    Authorize, ChangeWallet, GetAccount, OpenAccount, ReadLedger, SetApiKey,
};
use crate::domain::access::{ApiKey, Caller, KeyDigest};
use crate::domain::account::{Account, AccountId, NewAccount};
use crate::domain::money::Money;
use crate::domain::wallet::{LedgerPage, WalletOp, WalletReceipt};
use crate::domain::Invalid;
use crate::error::Error;

impl Runtime {
    /// Opens an account with a fresh id and no API key: only the operator (or this
    /// embedding program) acts on it until [`issue_api_key`](Self::issue_api_key).
    pub async fn create_account(&self, new: NewAccount) -> Result<Account, Error> {
        self.open_account(AccountId::random(), new, None).await
    }

    /// Opens an account for a customer: the account and its API key are written together,
    /// and the key is returned in clear this once (the store keeps only its digest).
    pub async fn create_customer(&self, new: NewAccount) -> Result<(Account, ApiKey), Error> {
        let key = ApiKey::generate();
        let account = self
            .open_account(AccountId::random(), new, Some(key.digest()))
            .await?;
        Ok((account, key))
    }

    /// Opens an account with a chosen id (demo data, imports). Conflict if it exists.
    pub async fn create_account_with_id(
        &self,
        id: AccountId,
        new: NewAccount,
    ) -> Result<Account, Error> {
        self.open_account(id, new, None).await
    }

    async fn open_account(
        &self,
        id: AccountId,
        new: NewAccount,
        key: Option<KeyDigest>,
    ) -> Result<Account, Error> {
        let msg = OpenAccount {
            id,
            new,
            key,
            span: Span::current(),
            origin: crate::telemetry::Origin::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Replaces the account's API key with a fresh one (a lost or leaked key, or an account
    /// opened without one) and returns it in clear, this once. The old key stops working.
    pub async fn issue_api_key(&self, id: AccountId) -> Result<ApiKey, Error> {
        let key = ApiKey::generate();
        self.set_api_key(id, key.digest(), false).await?;
        Ok(key)
    }

    async fn set_api_key(
        &self,
        id: AccountId,
        key: KeyDigest,
        only_if_missing: bool,
    ) -> Result<bool, Error> {
        let msg = SetApiKey {
            id,
            key,
            only_if_missing,
            origin: crate::telemetry::Origin::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Checks that `caller` may act on account `id` (`NotFound` when there is no such
    /// account, `Unauthenticated` or `Forbidden` when the caller may not).
    pub async fn authorize(&self, caller: Caller, id: AccountId) -> Result<(), Error> {
        if caller == Caller::Operator {
            return Ok(());
        }
        if let Some(((), key)) = self.published(id, |_| ()) {
            let checked = caller.may_act_on(id, key.as_ref(), |d| self.key_known(d));
            // A store's view knows only this account's key: its shard tells an unknown key
            // (401) from another account's (403) exactly.
            if checked.is_ok() || !self.inner.account_reads.bypass {
                return checked;
            }
        }
        Ok(self
            .shard(id)
            .ask(Authorize {
                id,
                caller,
                origin: crate::telemetry::Origin::current(),
            })
            .await??)
    }

    /// Refuses unless `caller` is the operator: 401 for no or an unknown credential, 403
    /// for a customer's key (the rule is `Caller::must_be_operator`).
    pub async fn require_operator(&self, caller: Caller, what: &str) -> Result<(), Error> {
        let known = match &caller {
            Caller::Customer(digest) => self
                .inner
                .accounts
                .key_known(digest)
                .await
                .map_err(Error::Store)?,
            _ => false,
        };
        caller.must_be_operator(what, |_| Ok::<_, Error>(known))
    }

    /// Refuses a caller without a credential that exists (401), before anything it names
    /// is looked up (the rule is `Caller::must_be_known`).
    pub(crate) async fn authenticate(&self, caller: Caller) -> Result<(), Error> {
        let known = match &caller {
            Caller::Customer(digest) => self
                .inner
                .accounts
                .key_known(digest)
                .await
                .map_err(Error::Store)?,
            _ => false,
        };
        caller.must_be_known(|_| Ok::<_, Error>(known))
    }

    /// The published (durable) state of `id`, as `f` extracts it, with its key digest;
    /// `None` on a miss or when reads must reach the actors.
    fn published<R>(
        &self,
        id: AccountId,
        f: impl FnOnce(&Account) -> R,
    ) -> Option<(R, Option<KeyDigest>)> {
        let reads = &self.inner.account_reads;
        if reads.bypass {
            // A shared store may keep views it can prove current (none under faults).
            return match reads.store_views {
                true => self
                    .inner
                    .accounts
                    .view_now(id)
                    .map(|s| (f(&s.account), s.key)),
                false => None,
            };
        }
        reads.model.read(&id, |p| (f(&p.account), p.key))
    }

    /// Does some account have this API key? Asked only when a key does not fit the
    /// account it is used on, to tell an unknown key (401) from another account's (403).
    fn key_known(&self, digest: &KeyDigest) -> Result<bool, Error> {
        Ok(self.key_owner(digest)?.is_some())
    }

    /// The account whose current API key has this digest, if any, as far as this process
    /// can tell without waiting (on the calling thread; see
    /// `store::AccountStore::key_owner_now`). The HTTP rate limits key their buckets by
    /// it, so replacing a key does not give an account a fresh bucket.
    pub fn key_owner(&self, digest: &KeyDigest) -> Result<Option<AccountId>, Error> {
        let reads = &self.inner.account_reads;
        if !reads.bypass {
            // A published account's key is durable and current (see the read model).
            if let Some(owner) = reads.model.owner(digest) {
                return Ok(Some(owner));
            }
        }
        self.inner
            .accounts
            .key_owner_now(digest)
            .map_err(Error::Store)
    }

    /// An account with its wallet figures.
    pub async fn account(&self, id: AccountId) -> Result<Account, Error> {
        self.account_as(Caller::Operator, id).await
    }

    /// An account with its wallet figures, if `caller` may see it: from the read model
    /// (no message) when the account is published, else from its shard (one message: the
    /// check rides along with the read). Never a state that is not yet durable.
    pub async fn account_as(&self, caller: Caller, id: AccountId) -> Result<Account, Error> {
        if let Some((account, key)) = self.published(id, Account::clone) {
            let checked = caller.may_act_on(id, key.as_ref(), |d| self.key_known(d));
            // As in `authorize`: a refusal from a store's view is decided by the shard.
            if checked.is_ok() || !self.inner.account_reads.bypass {
                return checked.map(|()| account);
            }
        }
        let msg = GetAccount {
            id,
            caller,
            span: Span::current(),
            origin: crate::telemetry::Origin::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Applies any wallet operation (a credit, or the hold, capture and release a booking
    /// saga makes), once per idempotency key, with no caller check: for embedders and
    /// tests acting as the operator.
    pub async fn change_wallet(
        &self,
        id: AccountId,
        key: &str,
        op: WalletOp,
    ) -> Result<WalletReceipt, Error> {
        let msg = ChangeWallet {
            id,
            key: key.to_owned(),
            op,
            span: Span::current(),
            origin: crate::telemetry::Origin::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Credits loyalty points, once per idempotency key.
    pub async fn credit_wallet(
        &self,
        id: AccountId,
        key: &str,
        amount: Money,
    ) -> Result<WalletReceipt, Error> {
        self.change_wallet(id, key, WalletOp::Credit { amount })
            .await
    }

    /// Ledger entries with sequence numbers above `after`, at most `limit` (bounded by
    /// `accounts.max_page_size`).
    pub async fn ledger(
        &self,
        id: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<LedgerPage, Error> {
        self.ledger_as(Caller::Operator, id, after, limit).await
    }

    /// [`ledger`](Self::ledger), if `caller` may see it.
    pub async fn ledger_as(
        &self,
        caller: Caller,
        id: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<LedgerPage, Error> {
        let max = self.inner.config.accounts.max_page_size;
        if limit == 0 || limit > max {
            return Err(Invalid::new("limit", format!("must be between 1 and {max}")).into());
        }
        let msg = ReadLedger {
            id,
            caller,
            after,
            limit,
            span: Span::current(),
            origin: crate::telemetry::Origin::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Creates demo accounts `Person_0..Person_{n-1}` (emails `person{i}@example.com`) with
    /// stable ids, the well-known demo API keys ([`ApiKey::demo`]) and a wallet credit;
    /// accounts that exist are left as they are, so seeding twice changes nothing (an
    /// existing id is a conflict before its email is looked at). Once all `n` are in
    /// place a marker says so, and later starts skip the pass (it would read every demo
    /// account at every start).
    pub async fn seed_demo(&self, n: u64, credit_minor: i64) -> Result<u64, Error> {
        if self.demo_seeded().await?.is_some_and(|seeded| seeded >= n) {
            return Ok(0);
        }
        let mut created = 0;
        for i in 0..n {
            let id = AccountId::demo(i);
            let new = NewAccount::new(&format!("Person_{i}"), &format!("person{i}@example.com"))?;
            let opened = self
                .open_account(id, new, Some(ApiKey::demo(i).digest()))
                .await;
            match opened {
                Ok(_) => created += 1,
                Err(Error::Conflict(_)) => {
                    // Demo stores from before API keys: give them their demo key once.
                    self.set_api_key(id, ApiKey::demo(i).digest(), true).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            if credit_minor > 0 {
                let amount = Money::new(credit_minor, self.inner.config.accounts.currency);
                self.credit_wallet(id, "demo-seed", amount).await?;
            }
        }
        if created > 0 {
            tracing::info!(created, "Demo accounts seeded.");
        }
        self.set_demo_seeded(n).await?;
        Ok(created)
    }

    /// How many demo accounts are known to be seeded (in a cluster, by any node).
    async fn demo_seeded(&self) -> Result<Option<u64>, Error> {
        self.inner
            .accounts
            .demo_seeded()
            .await
            .map_err(Error::Store)
    }

    async fn set_demo_seeded(&self, n: u64) -> Result<(), Error> {
        self.inner
            .accounts
            .set_demo_seeded(n)
            .await
            .map_err(Error::Store)
    }
}
