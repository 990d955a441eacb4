//! The actors, one per file: each file holds the actor, its messages and its handlers.

pub mod account;
pub mod booking;
pub mod coordinator;
pub mod notify;
pub mod search;
pub mod seller;
