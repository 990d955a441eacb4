//! The error every `Runtime` method returns. The HTTP layer maps it to problem responses in
//! one place (`http/problem.rs`); embedders match on it directly.

use std::time::Duration;

use crate::actors::account::AccountError;
use crate::config::ConfigError;
use crate::domain::access::AccessError;
use crate::domain::wallet::WalletError;
use crate::domain::Invalid;
use crate::store::StoreError;
use crate::supervisor::AskError;

/// Why a runtime request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input breaks a rule; names the field.
    #[error("invalid {0}")]
    Invalid(#[from] Invalid),
    /// No such resource.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of resource (`account`).
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// No credential, or a malformed one (HTTP 401).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The credential may not do this (HTTP 403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request conflicts with the current state (idempotency key reuse, duplicate).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The wallet refused a change (insufficient points, unknown hold).
    #[error("wallet refused: {0}")]
    Wallet(WalletError),
    /// An actor's mailbox is full.
    #[error("{actor} is overloaded; retry later")]
    Overloaded {
        /// Which actor.
        actor: String,
    },
    /// No answer within the deadline.
    #[error("{actor} did not answer within {after:?}")]
    Timeout {
        /// Which actor.
        actor: String,
        /// The deadline.
        after: Duration,
    },
    /// The actor crashed while handling the request; it is being restarted.
    #[error("{actor} crashed while handling the request; retry")]
    Crashed {
        /// Which actor.
        actor: String,
    },
    /// A part of the runtime is stopped (shut down, or given up by its supervisor).
    #[error("{what} is unavailable")]
    Unavailable {
        /// Which part.
        what: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Configuration refused at start.
    #[error("{0}")]
    Config(String),
}

impl From<AccessError> for Error {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Unauthenticated(why) => Error::Unauthenticated(why),
            AccessError::Forbidden(why) => Error::Forbidden(why),
            AccessError::NotYours { what, id } => Error::NotFound { what, id },
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e.to_string())
    }
}

impl From<AskError> for Error {
    fn from(e: AskError) -> Self {
        match e {
            AskError::Overloaded { actor } => Error::Overloaded {
                actor: actor.to_string(),
            },
            AskError::Timeout { actor, after } => Error::Timeout {
                actor: actor.to_string(),
                after,
            },
            AskError::Crashed { actor } => Error::Crashed {
                actor: actor.to_string(),
            },
            AskError::Unavailable { actor } => Error::Unavailable {
                what: actor.to_string(),
            },
        }
    }
}

impl From<crate::actors::coordinator::BookingError> for Error {
    fn from(e: crate::actors::coordinator::BookingError) -> Self {
        use crate::actors::coordinator::BookingError as B;
        match e {
            B::Invalid { field, message } => Error::Invalid(Invalid::new(field, message)),
            B::NotFound(id) => Error::NotFound {
                what: "booking",
                id,
            },
            B::Conflict(detail) => Error::Conflict(detail),
            B::Overloaded => Error::Overloaded {
                actor: "saga-coordinator".into(),
            },
            B::Store(s) => Error::Store(s),
        }
    }
}

impl From<AccountError> for Error {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::NotFound(id) => Error::NotFound {
                what: "account",
                id: id.to_string(),
            },
            AccountError::AlreadyExists(taken) => Error::Conflict(taken.to_string()),
            AccountError::KeyConflict(key) => Error::Conflict(format!(
                "idempotency key {key:?} was already used for a different request"
            )),
            AccountError::Wallet(WalletError::Invalid(invalid)) => Error::Invalid(invalid),
            AccountError::Wallet(w) => Error::Wallet(w),
            AccountError::Store(s) => Error::Store(s),
            AccountError::Access(a) => a.into(),
        }
    }
}
