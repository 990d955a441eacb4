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
//! | `src/runtime/` | [`Runtime`]: the one public doorway, methods by area (`accounts.rs`, `search.rs`, `bookings.rs`, `system.rs`); `partners.rs` the sellers and gateway; `views.rs`: what it returns |
//! | `src/runtime/start/` | start-up wiring: picks the storage backend once and builds the supervision tree, one function per subtree (`subtrees.rs`) |
//! | `src/supervisor/` | the one supervision mechanism: supervisors (static and dynamic), stable actor handles, restart policy, snapshots |
//! | `src/actors/` | one actor per file with its messages and handlers: `AccountShard`, `SellerAdapter`, `PaymentAdapter`, `SearchAggregator`, `BookingSaga`, `SagaCoordinator`, `Mailer`, and the cluster duties (`cluster.rs`); `guard.rs`: breaker and bulkhead of partner adapters |
//! | `src/actors/account/` | the account shards' read model, published for readers on other threads |
//! | `src/domain/` | plain rules tested without actors: money, accounts, access, order checks, wallet, search queries and offers (`query.rs`), search, cache, breaker, latency, look-to-book, rate-limit buckets (`rate_limit.rs`), leases (`lease.rs`), outbox and its retries |
//! | `src/domain/saga/` | saga ids, records, counts, the rules for a cancel stored by any node, and the partner-amount checks (`transition/mismatch.rs`) |
//! | `src/domain/saga/transition/` | the saga state machine: next action, outcomes, compensation; `tests/`: its reference model and property tests |
//! | `src/sellers/`, `src/payments/` | the outside world's contracts and their HTTP implementations; `simulated/` in each: the in-process partners; `src/outbound.rs`: what the HTTP clients share (no redirects followed); `src/partner_counts.rs`: partner replies not taken at their word |
//! | `src/store/` | the storage seam: `AccountStore`, `SagaStore`, `Outbox`, `ClusterStore` (one trait per concern), the key-value `Store` under the sled side, the one codec |
//! | `src/store/sled/` | the embedded backend: the seam's traits over sled, for one process |
//! | `src/store/postgres/` | the backend of several nodes: the seam's traits over PostgreSQL; saga and email leases live here; `migrations/`: the versioned schema |
//! | `src/http/` | actix-web routes per area, extractors, admission (rate limits `limits.rs`, expired requests `deadline.rs`), the router behind the generated OpenAPI description, problem responses, metrics |
//! | `src/http/console/` | the operator console's page, script and style, compiled in |
//! | `src/config/` | [`Config`]: built-in defaults (the shipped `config.toml`), a file, `WAYFARE__*` overrides and flags, each error naming its source |
//! | `src/faults.rs` | `[faults]`: what can be broken on purpose and counters of what fired; the injectors sit next to what they break |
//! | `src/main.rs` | the `wayfare` CLI: `serve`, `seed`, `check-config` (`--production` refuses faults, demo accounts and simulated partners) |
//! | `wayfare-drill/` | a separate crate, never linked into the server: the chaos drill, its invariant checker, the durable fake seller |
//! | `examples/` | drivers that use only the public API, and the fake card gateway |
//! | `tests/` | behaviour against real actors, a real server, real sled and PostgreSQL and partner fakes in their own processes; `store_contract.rs`: the seam's behaviour once, on both backends |

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod actors;
pub mod call_log;
pub mod config;
pub mod domain;
mod error;
pub mod faults;
pub mod http;
pub(crate) mod outbound;
pub(crate) mod partner_counts;
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
pub use actors::notify::MailTransport;
pub use actors::seller::AdapterConfig;
pub use config::Config;
pub use domain::access::{ApiKey, Caller};
pub use domain::account::{Account, AccountId, NewAccount};
pub use domain::money::{Currency, Money};
pub use domain::saga::SagaCounts;
pub use domain::saga::{BookingId, SagaId, SagaState};
pub use domain::wallet::{LedgerPage, WalletReceipt};
pub use error::Error;
pub use payments::{PaymentError, PaymentGateway};
pub use runtime::{
    Booking, BookingOrder, BookingPage, CancellationView, Check, ClusterMember, ClusterView,
    CustomSeller, Health, OfferView, PartnerCallsView, Runtime, RuntimeBuilder, SearchResponse,
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
