//! Wayfare: an actor-based runtime for a travel marketplace.
//!
//! Accounts and wallets, seller adapters, search aggregators and booking sagas live in
//! supervised actix actors; the same [`Runtime`] serves the HTTP API (`wayfare serve`),
//! embedding programs and the example drivers.
//!
//! # Layout
//!
//! | folder | what lives there |
//! |---|---|
//! | `src/runtime/` | [`Runtime`]: the one public doorway (typed async methods); `views.rs`: what it returns |
//! | `src/supervisor/` | supervisors, stable actor handles, restart policy, snapshots |
//! | `src/actors/` | one actor per file with its messages and handlers: `AccountShard`, `SellerAdapter`, `SearchAggregator`, `BookingSaga`, `SagaCoordinator`, `Mailer` |
//! | `src/domain/` | plain rules tested without actors: money, accounts, wallet, search, cache, breaker, look-to-book, saga, outbox |
//! | `src/sellers/`, `src/payments/` | the outside world's contracts and their simulated (and HTTP) implementations |
//! | `src/store/` | the `Store` trait, its sled implementation and the one codec |
//! | `src/http/` | actix-web routes per area, request parsing, problem responses, metrics |
//! | `src/config.rs` | [`Config`]: `config.toml` + `WAYFARE__*` overrides, validated |
//! | `src/faults.rs` | `[faults]`: what can be broken on purpose and counters of what fired; the injectors sit next to what they break (`store/faulty.rs`, `sellers/faulty.rs`, `payments/faulty.rs`, `actors::PanicFaults`) |
//! | `src/main.rs` | the `wayfare` CLI: `serve`, `seed`, `check-config` (`--production` refuses `[faults]`) |
//! | `wayfare-drill/` | a separate crate, never linked into the server: the chaos drill, its invariant checker and the fake seller server (used by `examples/` and `tests/`) |
//! | `examples/` | drivers that use only the public API |
//! | `tests/` | behaviour against real actors, a real server and real sled |

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod actors;
pub mod config;
pub mod domain;
mod error;
pub mod faults;
pub mod http;
pub(crate) mod outbound;
pub mod payments;
mod runtime;
pub mod sellers;
pub mod store;
pub mod supervisor;
pub mod telemetry;

// What an embedding program needs, flat: the runtime and its builder, what it takes and
// returns, errors, and the contracts of the outside world (sellers, the card gateway,
// email, the store). The modules stay public for their remaining types (configuration
// sections, simulated partners, the supervision library).
pub use actors::account::{LedgerPage, WalletReceipt};
pub use actors::coordinator::SagaCounts;
pub use actors::notify::MailTransport;
pub use actors::seller::AdapterConfig;
pub use config::Config;
pub use domain::access::{ApiKey, Caller};
pub use domain::account::{Account, AccountId, NewAccount};
pub use domain::money::{Currency, Money};
pub use domain::saga::{BookingId, SagaId, SagaState};
pub use error::Error;
pub use payments::{PaymentError, PaymentGateway};
pub use runtime::{
    Booking, BookingOrder, BookingPage, CancellationView, Check, CustomSeller, Health, OfferView,
    Runtime, RuntimeBuilder, SearchResponse,
};
pub use sellers::{FlightQuery, HotelQuery, SellerApi, Vertical};
pub use store::Store;
pub use supervisor::SupervisorSnapshot;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: the trigger `wayfare serve` passes to
/// [`http::serve`]. Tests and embedders pass their own.
///
/// The handlers are registered when this is called, not when the future is first polled,
/// so a signal that arrives while the server is still starting is not lost (nor does it
/// kill the process the default way). Call it inside a tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        async move {
            tokio::select! {
                _ = recv(term.as_mut()) => {},
                _ = recv(int.as_mut()) => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
