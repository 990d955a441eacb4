//! wayfare (skeleton; see README).

pub mod domain;
pub mod store;
pub mod supervisor;
