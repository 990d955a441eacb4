//! `Runtime`: the one public doorway. HTTP handlers, examples and embedding programs call
//! the same typed async methods; each turns into a message to a supervised actor, with
//! that actor kind's deadline.
//!
//! `Runtime::start` must run inside an actix system (`#[actix_web::main]`,
//! `#[actix_rt::main]` or `actix_rt::System::new().block_on(..)`): actors live on arbiters.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_rt::Arbiter;
use serde::Serialize;
use tracing::Span;

use crate::actors::account::{
    AccountFaults, AccountShard, ChangeWallet, GetAccount, LedgerPage, OpenAccount, ReadLedger,
    WalletReceipt,
};
use crate::config::Config;
use crate::domain::account::{Account, AccountId, NewAccount};
use crate::domain::money::Money;
use crate::domain::wallet::WalletOp;
use crate::domain::Invalid;
use crate::error::Error;
use crate::store::{self, SledStore, Store, Tree};
use crate::supervisor::{
    ActorHandle, ChildSpec, Restart, Strategy, SupervisorBuilder, SupervisorRef, SupervisorSnapshot,
};

/// A running wayfare: the supervision tree, its actors and the store.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

struct Inner {
    config: Config,
    store: Arc<dyn Store>,
    shards: Vec<ActorHandle<AccountShard>>,
    root: SupervisorRef,
    arbiters: Mutex<Vec<Arbiter>>,
    started: Instant,
}

/// Health as `/health` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    /// Store check: a probe record written and flushed.
    pub store: Check,
    /// Every supervisor within its restart intensity.
    pub supervisors: Check,
    /// Seconds since start.
    pub uptime_secs: u64,
}

/// One health check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Whether it passed.
    pub ok: bool,
    /// Why not, when it failed.
    pub detail: Option<String>,
}

impl Health {
    /// True when every check passed.
    pub fn is_ok(&self) -> bool {
        self.store.ok && self.supervisors.ok
    }
}

/// Longest a health probe of the store may take before the store counts as failing.
const STORE_PROBE_DEADLINE: Duration = Duration::from_secs(2);

impl Runtime {
    /// Opens the store, builds the supervision tree and starts every actor.
    pub async fn start(config: Config) -> Result<Runtime, Error> {
        config.validate()?;
        let dir = config.store.data_dir.clone();
        let store: Arc<dyn Store> = Arc::new(
            tokio::task::spawn_blocking(move || SledStore::open(&dir))
                .await
                .map_err(|e| Error::Unavailable {
                    what: format!("store opener ({e})"),
                })??,
        );
        let arbiters: Vec<Arbiter> = (0..config.arbiters()).map(|_| Arbiter::new()).collect();
        let policy = config.supervisor.policy();
        let shutdown_timeout = Duration::from_millis(config.supervisor.shutdown_timeout_ms);

        let faults = if config.faults.enabled {
            tracing::warn!("Fault injection is enabled ([faults]); never do this in production.");
            AccountFaults {
                reply_delay: Duration::from_millis(config.faults.account_reply_delay_ms),
                panic_rate: config.faults.account_panic_rate,
            }
        } else {
            AccountFaults::default()
        };
        let mut accounts = SupervisorBuilder::new("accounts", Strategy::OneForOne, policy);
        let shards = (0..config.account_shards())
            .map(|index| {
                let spec = ChildSpec {
                    name: format!("account-shard-{index}"),
                    restart: Restart::Permanent,
                    mailbox_capacity: config.accounts.mailbox_capacity,
                    deadline: Duration::from_millis(config.accounts.deadline_ms),
                    shutdown_timeout,
                };
                let arbiter = arbiters[index % arbiters.len()].handle();
                let (store, capacity, currency) = (
                    store.clone(),
                    config.accounts.cache_capacity,
                    config.accounts.currency,
                );
                accounts.actor(spec, arbiter, move || {
                    AccountShard::new(index, store.clone(), capacity, currency, faults)
                })
            })
            .collect();
        let mut root = SupervisorBuilder::new("root", Strategy::OneForOne, policy);
        root.supervisor(accounts, Restart::Permanent, shutdown_timeout);
        let root = root.start();

        let runtime = Runtime {
            inner: Arc::new(Inner {
                config,
                store,
                shards,
                root,
                arbiters: Mutex::new(arbiters),
                started: Instant::now(),
            }),
        };
        let demo = runtime.inner.config.demo.clone();
        if demo.accounts > 0 {
            runtime.seed_demo(demo.accounts, demo.credit_minor).await?;
        }
        tracing::info!(
            shards = runtime.inner.shards.len(),
            data_dir = %runtime.inner.config.store.data_dir.display(),
            "Runtime started."
        );
        Ok(runtime)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn shard(&self, id: AccountId) -> &ActorHandle<AccountShard> {
        &self.inner.shards[id.shard(self.inner.shards.len())]
    }

    /// Opens an account with a fresh id.
    pub async fn create_account(&self, new: NewAccount) -> Result<Account, Error> {
        self.create_account_with_id(AccountId::random(), new).await
    }

    /// Opens an account with a chosen id (demo data, imports). Conflict if it exists.
    pub async fn create_account_with_id(
        &self,
        id: AccountId,
        new: NewAccount,
    ) -> Result<Account, Error> {
        let msg = OpenAccount {
            id,
            new,
            span: Span::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// An account with its wallet figures.
    pub async fn account(&self, id: AccountId) -> Result<Account, Error> {
        let msg = GetAccount {
            id,
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

    /// Reserves points under `hold_id`, once per idempotency key.
    pub async fn hold_points(
        &self,
        id: AccountId,
        key: &str,
        hold_id: &str,
        amount: Money,
    ) -> Result<WalletReceipt, Error> {
        let op = WalletOp::Hold {
            hold_id: hold_id.to_owned(),
            amount,
        };
        self.change_wallet(id, key, op).await
    }

    /// Spends a hold, once per idempotency key.
    pub async fn capture_hold(
        &self,
        id: AccountId,
        key: &str,
        hold_id: &str,
    ) -> Result<WalletReceipt, Error> {
        let op = WalletOp::Capture {
            hold_id: hold_id.to_owned(),
        };
        self.change_wallet(id, key, op).await
    }

    /// Cancels a hold, once per idempotency key.
    pub async fn release_hold(
        &self,
        id: AccountId,
        key: &str,
        hold_id: &str,
    ) -> Result<WalletReceipt, Error> {
        let op = WalletOp::Release {
            hold_id: hold_id.to_owned(),
        };
        self.change_wallet(id, key, op).await
    }

    /// Ledger entries with sequence numbers above `after`, at most `limit` (bounded by
    /// `accounts.max_page_size`).
    pub async fn ledger(
        &self,
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
            after,
            limit,
            span: Span::current(),
        };
        Ok(self.shard(id).ask(msg).await??)
    }

    /// Creates demo accounts `Person_0..Person_{n-1}` with stable ids and a wallet credit;
    /// accounts that exist are left as they are, so seeding twice changes nothing.
    pub async fn seed_demo(&self, n: u64, credit_minor: i64) -> Result<u64, Error> {
        let mut created = 0;
        for i in 0..n {
            let id = AccountId::demo(i);
            let new = NewAccount::new(&format!("Person_{i}"), &format!("person{i}@example.com"))?;
            match self.create_account_with_id(id, new).await {
                Ok(_) => created += 1,
                Err(Error::Conflict(_)) => continue,
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

    /// The supervision tree as it is now.
    pub fn supervision_tree(&self) -> SupervisorSnapshot {
        self.inner.root.snapshot()
    }

    /// Real health: the store takes a flushed write, and every supervisor is within its
    /// restart intensity.
    pub async fn health(&self) -> Health {
        let store = match tokio::time::timeout(
            STORE_PROBE_DEADLINE,
            store::probe(&*self.inner.store),
        )
        .await
        {
            Ok(Ok(())) => Check {
                ok: true,
                detail: None,
            },
            Ok(Err(e)) => Check {
                ok: false,
                detail: Some(e.to_string()),
            },
            Err(_) => Check {
                ok: false,
                detail: Some(format!("store probe took over {STORE_PROBE_DEADLINE:?}")),
            },
        };
        let tree = self.supervision_tree();
        let mut failed = Vec::new();
        tree.for_each_supervisor(&mut |s| {
            if let Some(f) = &s.failure {
                if s.state != crate::supervisor::SupervisorState::Running {
                    failed.push(f.reason.clone());
                }
            }
        });
        let supervisors = Check {
            ok: tree.is_healthy(),
            detail: (!failed.is_empty()).then(|| failed.join("; ")),
        };
        let mut health = Health {
            status: "ok",
            store,
            supervisors,
            uptime_secs: self.inner.started.elapsed().as_secs(),
        };
        if !health.is_ok() {
            health.status = "unhealthy";
        }
        health
    }

    /// Number of stored accounts.
    pub fn account_count(&self) -> usize {
        self.inner.store.len(Tree::Accounts)
    }

    /// Stops every actor (in reverse start order, each within its shutdown timeout),
    /// flushes the store and stops the actor threads. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.root.shutdown().await;
        if let Err(e) = self.inner.store.flush().await {
            tracing::error!(error = %e, "Final store flush failed.");
        }
        let arbiters = std::mem::take(
            &mut *self
                .inner
                .arbiters
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for arbiter in arbiters {
            arbiter.stop();
        }
        tracing::info!("Runtime stopped.");
    }
}
