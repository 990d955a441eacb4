//! Accounts and wallets: open accounts, API keys, reads (with the caller's right checked
//! in the same message), wallet credits and the ledger. Each call goes to the account's
//! shard.

use tracing::Span;

use super::Runtime;
use crate::actors::account::{
    Authorize, ChangeWallet, GetAccount, LedgerPage, OpenAccount, ReadLedger, SetApiKey,
    WalletReceipt,
};
use crate::domain::access::{ApiKey, Caller, KeyDigest};
use crate::domain::account::{Account, AccountId, NewAccount};
use crate::domain::money::Money;
use crate::domain::wallet::WalletOp;
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
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Checks that `caller` may act on account `id` (`NotFound` when there is no such
    /// account, `Unauthenticated` or `Forbidden` when the caller may not).
    pub async fn authorize(&self, caller: Caller, id: AccountId) -> Result<(), Error> {
        if caller == Caller::Operator {
            return Ok(());
        }
        Ok(self.shard(id).ask(Authorize { id, caller }).await??)
    }

    /// An account with its wallet figures.
    pub async fn account(&self, id: AccountId) -> Result<Account, Error> {
        self.account_as(Caller::Operator, id).await
    }

    /// An account with its wallet figures, if `caller` may see it (one message: the
    /// check rides along with the read).
    pub async fn account_as(&self, caller: Caller, id: AccountId) -> Result<Account, Error> {
        let msg = GetAccount {
            id,
            caller,
            span: Span::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    async fn change_wallet(
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
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Creates demo accounts `Person_0..Person_{n-1}` with stable ids, the well-known demo
    /// API keys ([`ApiKey::demo`]) and a wallet credit;
    /// accounts that exist are left as they are, so seeding twice changes nothing.
    pub async fn seed_demo(&self, n: u64, credit_minor: i64) -> Result<u64, Error> {
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
        Ok(created)
    }
}
