//! `[sellers.adapter]` and `[payments.adapter]`: the protections the adapter actors put
//! around each partner (timeouts, retries, bulkhead, breaker, look-to-book meter). Plain
//! settings, read by the actors; kept here so the configuration depends on no actor.

use serde::{Deserialize, Serialize};

use crate::domain::breaker::{BreakerConfig, InvalidSetting};
use crate::domain::look_to_book::LookToBookConfig;

/// Per-seller protections, `[sellers.adapter]` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdapterConfig {
    /// Timeout of one call to the seller, in ms.
    pub call_timeout_ms: u64,
    /// Extra attempts of a failed search (never of book or cancel).
    pub search_retries: u32,
    /// First retry backoff in ms; doubles per attempt, with jitter.
    pub retry_backoff_ms: u64,
    /// Bulkhead: calls in flight at once; more are refused at once.
    pub max_concurrent_calls: u32,
    /// Requests queued or in flight in the adapter's mailbox.
    pub mailbox_capacity: usize,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Look-to-book meter.
    pub look_to_book: LookToBookConfig,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig {
            call_timeout_ms: 1000,
            search_retries: 1,
            retry_backoff_ms: 50,
            max_concurrent_calls: 64,
            mailbox_capacity: 1024,
            breaker: BreakerConfig::default(),
            look_to_book: LookToBookConfig::default(),
        }
    }
}

impl AdapterConfig {
    /// Range checks; keys are relative to `[sellers.adapter]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1..=600_000).contains(&self.call_timeout_ms) {
            return Err(InvalidSetting::new(
                "call_timeout_ms",
                "must be within 1..=600000",
            ));
        }
        if self.search_retries > 10 {
            return Err(InvalidSetting::new("search_retries", "must be at most 10"));
        }
        if self.retry_backoff_ms > 60_000 {
            return Err(InvalidSetting::new(
                "retry_backoff_ms",
                "must be at most 60000",
            ));
        }
        if !(1..=10_000).contains(&self.max_concurrent_calls) {
            return Err(InvalidSetting::new(
                "max_concurrent_calls",
                "must be within 1..=10000",
            ));
        }
        if !(1..=1_000_000).contains(&self.mailbox_capacity) {
            return Err(InvalidSetting::new(
                "mailbox_capacity",
                "must be within 1..=1000000",
            ));
        }
        self.breaker.validate().map_err(|e| e.within("breaker"))?;
        self.look_to_book
            .validate()
            .map_err(|e| e.within("look_to_book"))
    }
}

/// Protections of the gateway adapter, `[payments.adapter]` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayAdapterConfig {
    /// Timeout of one gateway call, in ms; past it the outcome is unknown.
    pub call_timeout_ms: u64,
    /// Bulkhead: calls in flight at once; more are refused at once (nothing sent).
    pub max_concurrent_calls: u32,
    /// Requests queued or in flight in the adapter's mailbox.
    pub mailbox_capacity: usize,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
}

impl Default for GatewayAdapterConfig {
    fn default() -> Self {
        GatewayAdapterConfig {
            call_timeout_ms: 5_000,
            max_concurrent_calls: 256,
            mailbox_capacity: 4_096,
            breaker: BreakerConfig::default(),
        }
    }
}

impl GatewayAdapterConfig {
    /// Range checks; keys are relative to `[payments.adapter]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1..=600_000).contains(&self.call_timeout_ms) {
            return Err(InvalidSetting::new(
                "call_timeout_ms",
                "must be within 1..=600000",
            ));
        }
        if !(1..=10_000).contains(&self.max_concurrent_calls) {
            return Err(InvalidSetting::new(
                "max_concurrent_calls",
                "must be within 1..=10000",
            ));
        }
        if !(1..=1_000_000).contains(&self.mailbox_capacity) {
            return Err(InvalidSetting::new(
                "mailbox_capacity",
                "must be within 1..=1000000",
            ));
        }
        self.breaker.validate().map_err(|e| e.within("breaker"))
    }
}
