//! Wayfare's test harness, kept out of the server: the chaos drill, the invariant checker
//! it shares with the crash tests, and fakes of the outside world. Only tests, examples and
//! scripts depend on this crate (`wayfare` lists it as a dev-dependency), so
//! `cargo tree -e normal -p wayfare` shows none of it. It uses only wayfare's public API.
//!
//! # The drill
//!
//! [`run`] drives bookings, cancellations, searches and wallet credits through the embedded
//! [`Runtime`](wayfare::Runtime) while `[faults]` makes actors panic, store writes fail and
//! sellers and the payment gateway fail, hang or answer garbage; stops the runtime while
//! sagas are in flight and starts it again on the same data directory (they resume);
//! resubmits every booking key; lets every booking settle; then checks what must hold
//! whatever went wrong:
//!
//! - **balances are ledgers**: every wallet balance is the sum of its ledger entries, holds
//!   nothing once its bookings have settled, and matches what those bookings imply (credits
//!   minus points spent by confirmed bookings plus points restored by cancellations);
//! - **no capture without confirmation**: every card capture belongs to a booking that is
//!   confirmed, or was refunded when it was cancelled (in full when it failed); a
//!   confirmed booking with a card part is captured exactly once; no authorization of a
//!   settled booking is left open;
//! - **nothing confirmed twice**: one booking per client idempotency key (before and after
//!   the restart, and as each account lists them); at each seller, at most one reservation
//!   per booking, none under a key no booking made, a live one for every confirmed booking
//!   and none for a failed or cancelled one;
//! - **sagas settle**: every booking and cancellation ends `confirmed`, `failed`,
//!   `cancelled` or `needs_attention` (with a reason).
//!
//! The sellers and the gateway are simulated ones held by the drill ([`ChaosWorld`]),
//! outside the runtime, so they outlive its restart like real ones would and their books
//! can be read afterwards. The plan (which operations, accounts, cards, dates) is seeded;
//! fault dice and thread scheduling are not, so two runs with one seed differ in detail.
//!
//! # The checker
//!
//! [`check`] is a plain function of what was observed ([`Observations`]), so tests can
//! plant violations in it, and so observers other than the drill can feed it: a test that
//! kills a real server reads the same facts over HTTP with [`HttpObserver`], and the
//! partners' books from the fakes running as their own processes
//! ([`fakes::ledgers`]).
//!
//! # Layout
//!
//! | module | what lives there |
//! |---|---|
//! | `plan.rs` | [`ChaosPlan`], [`ChaosWorld`], the drill's runtime configuration |
//! | `drive.rs` | [`run`]: traffic, restart, resubmission, settling, observation |
//! | `report.rs` | [`ChaosReport`]: what the drill did and found |
//! | `observations.rs` | [`Observations`] and its parts: the checker's input |
//! | `check.rs` | [`check`]: one method per invariant |
//! | `http_observer.rs` | [`HttpObserver`]: observations read from a server's HTTP API |
//! | `fakes/` | [`fakes::seller`]: the seller wire format served from a simulated seller or a durable [`fakes::journaled`] one; [`fakes::ledgers`]: the fakes' ledgers as checker input |
//!
//! Used by `examples/chaos.rs`, `examples/fake_seller.rs`, `tests/chaos.rs`,
//! `tests/booking_crash.rs`, `tests/partners.rs`, `tests/http_seller.rs` and `tests/search.rs`.

#![warn(missing_docs, missing_debug_implementations)]

mod check;
pub mod cluster;
mod drive;
pub mod fakes;
mod http_observer;
mod observations;
mod plan;
mod report;

pub use check::check;
pub use drive::run;
pub use http_observer::{booking_from_json, HttpObserver};
pub use observations::{
    AccountSeen, BookingSeen, CancellationSeen, KeySeen, LedgerLine, Observations, PaymentsSeen,
    SellerSeen, Violation, CREDIT_KEY_PREFIX,
};
pub use plan::{default_faults, drill_config, start_runtime, ChaosPlan, ChaosWorld};
pub use report::{ChaosReport, OpCount};
