//! `[accounts]`, `[supervisor]` and `[demo]`: account shards, the restart policy every
//! supervisor uses, and the demo accounts created on an empty store.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::money::Currency;
use crate::supervisor::RestartPolicy;

/// `[accounts]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// Number of account shards; 0 means two per core.
    pub shards: usize,
    /// Requests queued or in flight per shard before callers get `Overloaded`.
    pub mailbox_capacity: usize,
    /// Deadline of a request to a shard, in milliseconds.
    pub deadline_ms: u64,
    /// Accounts kept in memory per shard (the store holds them all).
    pub cache_capacity: usize,
    /// Currency of every wallet.
    pub currency: Currency,
    /// Largest ledger page a client may ask for.
    pub max_page_size: usize,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            shards: 0,
            mailbox_capacity: 1024,
            deadline_ms: 2000,
            cache_capacity: 100_000,
            currency: Currency::EUR,
            max_page_size: 500,
        }
    }
}

/// `[supervisor]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// At most this many restarts...
    pub max_restarts: u32,
    /// ...within this many seconds, else the supervisor gives up and escalates.
    pub within_secs: u64,
    /// First restart backoff, in milliseconds.
    pub backoff_min_ms: u64,
    /// Largest restart backoff, in milliseconds.
    pub backoff_max_ms: u64,
    /// A child quiet this long (seconds) starts again from the smallest backoff.
    pub reset_after_secs: u64,
    /// Time an actor gets to stop before it is aborted, in milliseconds.
    pub shutdown_timeout_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: 10,
            within_secs: 10,
            backoff_min_ms: 10,
            backoff_max_ms: 2000,
            reset_after_secs: 30,
            shutdown_timeout_ms: 5000,
        }
    }
}

impl SupervisorConfig {
    /// The policy every supervisor uses.
    pub fn policy(&self) -> RestartPolicy {
        RestartPolicy {
            max_restarts: self.max_restarts,
            within: Duration::from_secs(self.within_secs),
            backoff_min: Duration::from_millis(self.backoff_min_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            reset_after: Duration::from_secs(self.reset_after_secs),
        }
    }
}

/// `[demo]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Demo accounts (Person_0, Person_1, ...) created at start if missing; 0 for none.
    pub accounts: u64,
    /// Wallet credit of each demo account, in minor units.
    pub credit_minor: i64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            accounts: 0,
            credit_minor: 10_000,
        }
    }
}
