//! Domain rules as plain types and functions, tested without actors.

pub mod breaker;
pub mod look_to_book;
pub mod money;
pub mod search;
pub mod search_cache;
