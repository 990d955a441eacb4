//! wayfare (skeleton; see README).

pub mod domain;
