//! The PostgreSQL store: what several wayfare nodes share when one machine is not enough
//! (`[store] backend = "postgres"`). The database decides everything that must hold across
//! nodes, so no node's memory is trusted for it:
//!
//! - [`wallet`]: each wallet change is one transaction that locks the account row, refuses
//!   an overdraw (and the table's `CHECK`s refuse one whatever the code does), appends the
//!   ledger row and records the idempotency key; a replay returns the stored receipt.
//! - [`sagas`]: each saga row carries its owner node, a lease expiry and an epoch. A node
//!   writes a saga only while it holds the lease, every write is fenced by the epoch, and
//!   expired leases are claimed with `FOR UPDATE SKIP LOCKED` (the outbox too).
//!   Booking idempotency keys are a unique column: the same key sent to two nodes finds
//!   one saga.
//!   Each write is one statement with what its step caused; `group.rs` sends concurrent
//!   sagas' writes together, one commit for many, each still fenced by its own lease.
//! - [`nodes`]: membership by heartbeat rows.
//! - [`invalidate`]: a booked SKU is announced with `NOTIFY`, so every node's search cache
//!   drops it.
//!
//! Schema: versioned SQL files in `migrations/`, compiled in and applied by [`migrate`]
//! under an advisory lock. Every call is async on a pooled connection (deadpool): no actor
//! thread ever blocks on the network.
//!
//! - [`accounts`]: accounts, API key digests and ledger pages, read by the account shards
//!   when this node's [`views`] may not answer (a view is served from memory only while
//!   the node's listener proves it current within `views::STALENESS_BOUND`).
//!
//! - [`PgNode`]: this node behind the seam's traits (`SagaStore`, `Outbox`,
//!   `ClusterStore`): the leases it holds are its private business.
//!
//! - [`PgAccounts`]: the accounts behind the seam's `AccountStore`, over [`accounts`] and
//!   [`wallet`].

mod account_store;
pub mod accounts;
mod group;
pub mod invalidate;
mod live;
mod migrate;
mod node;
pub mod nodes;
pub mod outbox;
pub mod sagas;
pub mod views;
pub mod wallet;

use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use deadpool_postgres::{Hook, Manager, ManagerConfig, Pool, RecyclingMethod};

pub use account_store::PgAccounts;
pub use migrate::{migrate, Migrated, MIGRATIONS};
pub use node::PgNode;

use crate::config::StoreConfig;

/// Why a PostgreSQL call failed, for a node's logs and `/health`. Never holds the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    /// No connection could be had (server down, refused, pool exhausted past the wait).
    #[error("PostgreSQL is unreachable: {0}")]
    Unreachable(String),
    /// The server answered with an error.
    #[error("PostgreSQL refused a statement: {0}")]
    Statement(String),
    /// The database holds something this node cannot read.
    #[error("PostgreSQL holds an unreadable {what}: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
    /// The schema is newer than this binary (a newer node migrated it).
    #[error(
        "the database schema is at version {found}, newer than this wayfare knows ({known}); \
         run the newer wayfare"
    )]
    SchemaTooNew {
        /// Highest version applied in the database.
        found: i32,
        /// Highest version compiled into this binary.
        known: i32,
    },
}

/// What the actors see of a database failure: the store failed (a retryable I/O error).
impl From<PgError> for crate::store::StoreError {
    fn from(e: PgError) -> Self {
        crate::store::StoreError::Io(e.to_string())
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(_) => PgError::Statement(describe(&e)),
            None => PgError::Unreachable(describe(&e)),
        }
    }
}

/// What went wrong, with the server's SQLSTATE or the I/O cause.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None if e.is_closed() => e.to_string(),
        None => std::error::Error::source(e)
            .map(|s| format!("{e}: {s}"))
            .unwrap_or_else(|| e.to_string()),
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => PgError::Unreachable(other.to_string()),
        }
    }
}

/// Account views a node keeps until told otherwise (`PgAccounts::new`).
const DEFAULT_VIEWS: usize = 10_000;

/// Longest a ping may take before the database counts as not answering.
pub const PING_DEADLINE: Duration = Duration::from_secs(2);

/// Whether a statement failed because the server takes no writes (SQLSTATE 25006).
fn is_read_only(e: &PgError) -> bool {
    matches!(e, PgError::Statement(m) if m.ends_with("(25006)"))
}

/// Parses a `store.url`, naming what is wrong without echoing the URL (it may hold a
/// password). Only `postgres://` and `postgresql://` URLs are accepted.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must be a postgres:// or postgresql:// URL".into());
    }
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| format!("is not a valid PostgreSQL URL: {e}"))?;
    if config.get_hosts().is_empty() {
        return Err("names no host (postgres://user@host:port/database)".into());
    }
    if config.get_dbname().is_none() {
        return Err("names no database (postgres://user@host:port/database)".into());
    }
    Ok(config)
}

/// A node's connection pool to the shared database.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Whether the database takes writes now, as the pool's connections show it.
    live: Arc<live::Live>,
    /// The account views this node serves from memory (fed by its listener).
    views: Arc<views::AccountViews>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore")
            .field("size", &status.size)
            .field("available", &status.available)
            .finish()
    }
}

impl PgStore {
    /// A pool for `[store]`: `url`, `pool_size` connections, each with the configured
    /// `statement_timeout` (and `idle_in_transaction_session_timeout`). Connects lazily; [`PgStore::ping`] proves the server answers.
    pub fn connect(config: &StoreConfig) -> Result<Self, PgError> {
        let url = config
            .url
            .as_ref()
            .ok_or_else(|| PgError::Unreachable("store.url is not set".into()))?;
        let mut pg =
            parse_url(url.expose()).map_err(|e| PgError::Unreachable(format!("store.url {e}")))?;
        // A node paused inside a transaction (a stop signal, a VM freeze) would hold its
        // row locks, and every other node's change to those accounts would wait on it: the
        // server ends such a transaction after the same bound as a statement.
        //
        // Every statement is prepared once per connection: a generic plan is planned once,
        // where the default plans again at each call whenever the planner guesses the
        // generic plan dearer, as it always does for statements over arrays (the batched
        // saga writes, lease renewals, emails marked sent). Every statement is a lookup by
        // key or a small set of keys, which the generic plan serves as well.
        pg.options(format!(
            "-c statement_timeout={0} -c idle_in_transaction_session_timeout={0} \
             -c plan_cache_mode=force_generic_plan",
            config.statement_timeout_ms
        ));
        pg.connect_timeout(Duration::from_secs(5));
        pg.application_name("wayfare");
        let live = Arc::new(live::Live::default());
        let manager = Manager::from_connect(
            pg,
            live::WatchedConnect { live: live.clone() },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let watching = live.clone();
        let pool = Pool::builder(manager)
            .pre_recycle(Hook::sync_fn(move |_, metrics| {
                live::recycle_check(&watching, metrics.created)
            }))
            .max_size(config.pool_size)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| PgError::Unreachable(e.to_string()))?;
        Ok(PgStore {
            pool,
            live,
            views: Arc::new(views::AccountViews::new(DEFAULT_VIEWS)),
        })
    }

    /// This node's account views (see [`views`]).
    pub fn views(&self) -> &Arc<views::AccountViews> {
        &self.views
    }

    /// A pooled connection. Failing to make one (the server refuses, or does not answer
    /// within the connect timeout) turns the live state red; an exhausted pool does not
    /// (that is load, not a database failure).
    pub async fn client(&self) -> Result<deadpool_postgres::Object, PgError> {
        match self.pool.get().await {
            Ok(client) => Ok(client),
            Err(e) => {
                let exhausted = matches!(
                    e,
                    deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)
                );
                let e = PgError::from(e);
                if !exhausted {
                    self.live.failed(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// Whether the database answers now, within [`PING_DEADLINE`]; the answer also sets
    /// the live state ([`PgStore::live`]).
    pub async fn ping(&self) -> Result<(), PgError> {
        let ping = async {
            self.client().await?.simple_query("SELECT 1").await?;
            Ok::<_, PgError>(())
        };
        match tokio::time::timeout(PING_DEADLINE, ping).await {
            Ok(Ok(_)) => {
                self.live.answered();
                Ok(())
            }
            Ok(Err(e)) => {
                if matches!(e, PgError::Unreachable(_)) || is_read_only(&e) {
                    self.live.failed(e.to_string());
                }
                Err(e)
            }
            Err(_) => {
                let e = PgError::Unreachable(format!("no answer within {PING_DEADLINE:?}"));
                self.live.failed(e.to_string());
                Err(e)
            }
        }
    }

    /// Whether this node has a writable database now, as its connections last showed it
    /// (`Err` says why not). Costs nothing while green; while red, pings at most every
    /// few hundred milliseconds, so the state turns green as soon as the database is
    /// back even when no request arrives (the load balancer stopped sending any).
    pub async fn live(&self) -> Result<(), String> {
        if self.live.revive_due() {
            let _ = self.ping().await;
        }
        self.live.state()
    }

    /// Applies the migrations this binary carries that the database lacks (see [`migrate`]).
    pub async fn migrate(&self) -> Result<Migrated, PgError> {
        let mut client = self.client().await?;
        migrate(&mut client).await
    }
}

/// The span of one statement or transaction, after the OpenTelemetry database
/// conventions: named by `summary` (operation and tables), `db.collection.name` only when
/// one table is concerned. `Span::none()` while telemetry is off or the trace was dropped,
/// so the untraced path builds nothing, and outside any span: the timers' statements (heartbeats, lease
/// renewals, outbox polls) would each start a trace of one span.
fn statement_span(
    operation: &'static str,
    collection: Option<&'static str>,
    summary: &'static str,
) -> tracing::Span {
    if !crate::telemetry::exporting() || tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "store.statement",
        otel.name = summary,
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = operation,
        db.collection.name = collection,
    )
}
