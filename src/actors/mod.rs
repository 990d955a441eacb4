//! The actors, one per file: each file holds the actor, its messages and its handlers.

pub mod account;
pub mod booking;
pub mod coordinator;
pub mod notify;
pub mod search;
pub mod seller;

/// Stable bucket of `key` among `n` (within one process): which aggregator serves a search,
/// which arbiter runs a saga.
pub(crate) fn bucket(key: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % n.max(1) as u64) as usize
}
