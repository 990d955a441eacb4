//! wayfare (skeleton; see README).

pub mod actors;
pub mod config;
pub mod domain;
mod error;
pub mod http;
mod runtime;
pub mod store;
pub mod supervisor;
pub mod telemetry;

pub use config::Config;
pub use error::Error;
pub use runtime::{Check, Health, Runtime};

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: the trigger `wayfare serve` passes to
/// [`http::serve`]. Tests and embedders pass their own.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
