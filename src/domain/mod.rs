//! Domain rules as plain types and functions, tested without actors.

pub mod money;
pub mod outbox;
pub mod saga;
