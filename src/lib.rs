//! wayfare (skeleton; see README).

pub mod config;
pub mod domain;
pub mod store;
pub mod supervisor;
