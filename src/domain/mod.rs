//! Domain rules as plain types and functions, tested without actors: money, accounts,
//! wallet arithmetic, search merge/markdown/TTL, the search cache, the circuit breaker,
//! the look-to-book meter and the latency histogram.

pub mod access;
pub mod account;
pub mod backoff;
pub mod booking;
pub mod breaker;
pub mod latency;
pub mod lease;
pub mod look_to_book;
pub mod money;
pub mod outbox;
pub mod query;
pub mod rate_limit;
pub mod saga;
pub mod search;
pub mod search_cache;
pub mod wallet;

/// Input that breaks a rule, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field (JSON path or parameter name) at fault.
    pub field: String,
    /// What is wrong, for humans.
    pub message: String,
}

impl Invalid {
    /// `field` is wrong because of `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
