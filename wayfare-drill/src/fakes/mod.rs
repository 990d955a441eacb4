//! Fakes of the outside world that speak a real protocol, for tests and demos.

pub mod calls;
pub mod journaled;
pub mod ledgers;
pub mod seller;
pub mod tls;
