//! `[faults]`: deliberate failures for tests and chaos drills, and the production rule
//! that refuses them.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::faults::ActorKind;

/// `[faults]`: deliberate failures, for tests and chaos drills only. Everything is off by
/// default, nothing acts unless `enabled` is true, and `--production` refuses a config with
/// `enabled = true` (see [`FaultsConfig::refuse_in_production`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    /// Master switch: nothing below has any effect unless this is true.
    pub enabled: bool,
    /// Delay added to every account shard reply, in milliseconds.
    pub account_reply_delay_ms: u64,
    /// Probability (0..=1) that an account shard panics while handling a message. Kept
    /// for existing configs; an account shard panics with the larger of this and
    /// `panic_rate` when `panic_actors` lists `account`.
    pub account_panic_rate: f64,
    /// Probability (0..=1) that a handler of an actor kind in `panic_actors` panics. The
    /// actor's supervisor restarts it; the caller in flight gets `Crashed`.
    pub panic_rate: f64,
    /// Actor kinds `panic_rate` applies to: `account`, `seller`, `search`, `saga`,
    /// `mailer`, `cluster` (the cluster duties; PostgreSQL only).
    pub panic_actors: Vec<ActorKind>,
    /// Delay before each store flush completes, in milliseconds: every acknowledged write
    /// waits for a flush, so this delays acknowledgements as a slow disk would. (The
    /// synchronous write call itself is not slowed: that would stall an actor thread.)
    pub store_write_delay_ms: u64,
    /// Probability (0..=1) that a store write is refused with an I/O error. The write is
    /// atomic, so a refused one leaves nothing behind.
    pub store_write_failure_rate: f64,
    /// Probability (0..=1) that a call to a seller fails with `Unavailable` before it
    /// reaches the seller. Applies to simulated sellers and sellers added in code, not to
    /// HTTP sellers (their fake server has its own knobs).
    pub seller_failure_rate: f64,
    /// Probability (0..=1) that a seller call never answers (the adapter's timeout ends
    /// it); half of those hang after the seller acted, so the outcome is unknown.
    pub seller_hang_rate: f64,
    /// Probability (0..=1) that a seller answers garbage: a reply that fails the wire
    /// validation an HTTP seller's reply goes through (negative price, unknown currency,
    /// empty SKU or reservation id). For a booking or cancellation the seller acted first.
    pub seller_garbage_rate: f64,
    /// Probability (0..=1) that a payment gateway call fails with `Unavailable` before it
    /// reaches the gateway.
    pub payment_failure_rate: f64,
    /// Probability (0..=1) that a payment gateway call never answers (the saga step
    /// timeout ends it); half of those hang after the gateway acted.
    pub payment_hang_rate: f64,
}

impl FaultsConfig {
    /// Range checks, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        for (key, rate) in [
            ("faults.account_panic_rate", self.account_panic_rate),
            ("faults.panic_rate", self.panic_rate),
            (
                "faults.store_write_failure_rate",
                self.store_write_failure_rate,
            ),
            ("faults.seller_failure_rate", self.seller_failure_rate),
            ("faults.seller_hang_rate", self.seller_hang_rate),
            ("faults.seller_garbage_rate", self.seller_garbage_rate),
            ("faults.payment_failure_rate", self.payment_failure_rate),
            ("faults.payment_hang_rate", self.payment_hang_rate),
        ] {
            // `contains` is false for NaN too.
            if !(0.0..=1.0).contains(&rate) {
                return bad(key, "must be between 0 and 1");
            }
        }
        for (key, ms) in [
            ("faults.account_reply_delay_ms", self.account_reply_delay_ms),
            ("faults.store_write_delay_ms", self.store_write_delay_ms),
        ] {
            if ms > 600_000 {
                return bad(key, "must be at most 600000");
            }
        }
        if self.panic_rate > 0.0 && self.panic_actors.is_empty() {
            return bad(
                "faults.panic_actors",
                "must name at least one of account, seller, search, saga, mailer, cluster when faults.panic_rate is set",
            );
        }
        Ok(())
    }

    /// The production rule: a process started with `--production` (or
    /// `WAYFARE_PRODUCTION=1`) refuses a config with fault injection enabled.
    pub fn refuse_in_production(&self) -> Result<(), ConfigError> {
        if self.enabled {
            return Err(ConfigError::Invalid {
                key: "faults.enabled",
                reason: "must be false in production mode (--production or WAYFARE_PRODUCTION): \
                         fault injection crashes actors and fails writes on purpose"
                    .into(),
            });
        }
        Ok(())
    }

    /// Probability that a handler of `kind` panics: 0 unless enabled.
    pub fn panic_rate_of(&self, kind: ActorKind) -> f64 {
        if !self.enabled {
            return 0.0;
        }
        let listed = if self.panic_actors.contains(&kind) {
            self.panic_rate
        } else {
            0.0
        };
        if kind == ActorKind::Account {
            listed.max(self.account_panic_rate)
        } else {
            listed
        }
    }
}
