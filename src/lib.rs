//! wayfare (skeleton; see README).

pub mod domain;
pub mod payments;
