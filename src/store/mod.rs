//! Durable storage, behind one seam: traits shaped by what the actors mean, each with an
//! implementation for the embedded default (sled, one process) and one for PostgreSQL
//! (several nodes sharing one database), chosen once at start-up by the runtime's wiring.
//! The actors hold the trait objects and never learn which backend they have.
//!
//! | trait | says | sled ([`sled`]) | PostgreSQL (`postgres`) |
//! |---|---|---|---|
//! | [`AccountStore`] | open an account with its key and unique email, read it for a caller, change a wallet under its idempotency key, read a ledger page, set a key | [`SledAccounts`] (one per shard, with its cache: the only writer) | `postgres::PgAccounts` (reads from account views kept current by `LISTEN` within a staleness bound, else from the database) |
//! | [`SagaStore`] | create a booking under its key, load, save a step with its email, follow up, park, retry, list, take work | [`SledSagas`] | `postgres::PgNode` (leases with epoch fencing, private to it) |
//! | [`Outbox`] | claim a batch, mark sent | [`SledOutbox`] | `postgres::PgNode` (claims under a lease) |
//! | [`ClusterStore`] | heartbeat, members, booked-SKU news | [`sled::Solo`] (nobody else) | `postgres::PgNode` (`nodes` rows, `LISTEN`/`NOTIFY`) |
//!
//! Under the sled implementations sits the key-value [`Store`]: records grouped in
//! [`Tree`]s (one per record kind), written in atomic batches of [`Op`]s; nothing is
//! acknowledged to a caller before [`Store::flush`] has returned. Tests and embedders wrap
//! it (`RuntimeBuilder::store_layer`) to inject faults. On PostgreSQL it holds only the
//! node's own health probes.

pub mod accounts;
pub mod cluster;
pub mod codec;
mod faulty;
pub mod outbox;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sagas;
pub mod sled;

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::domain::saga::SagaRecord;

pub use accounts::AccountStore;
pub use cluster::ClusterStore;
pub use faulty::FaultyStore;
pub use outbox::Outbox;
pub use sagas::SagaStore;
pub use sled::{SledAccounts, SledOutbox, SledSagas, SledStore};

/// A record kind, stored apart from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    /// Account records by account id.
    Accounts,
    /// Wallet ledger entries by account id + sequence number.
    Ledger,
    /// Wallet idempotency keys by account id + key.
    WalletKeys,
    /// Health probes and store metadata.
    Meta,
    /// Saga records by saga id.
    Sagas,
    /// Booking idempotency keys: client key -> (request, saga id).
    BookingKeys,
    /// Bookings of each account: account id + saga id -> ().
    AccountBookings,
    /// Customer emails waiting to be sent, by email id.
    Outbox,
    /// SHA-256 digests of customers' API keys, by account id.
    ApiKeys,
    /// The reverse index of `ApiKeys`: encoded key digest -> account id, written in the
    /// same batch, so an unknown key (401) can be told from another account's (403).
    KeyOwners,
    /// Unique index of account emails: normalized email -> account id, written with
    /// [`Op::Insert`] in the batch that opens the account, so one address opens one account.
    Emails,
    /// Emails parked after too many failed delivery attempts, by email id.
    ParkedEmails,
    /// Customers' cancels stored for bookings no actor was driving, by saga id.
    CancelRequests,
}

impl Tree {
    /// Every tree, in a fixed order.
    pub const ALL: [Tree; 13] = [
        Tree::Accounts,
        Tree::Ledger,
        Tree::WalletKeys,
        Tree::Meta,
        Tree::Sagas,
        Tree::BookingKeys,
        Tree::AccountBookings,
        Tree::Outbox,
        Tree::ApiKeys,
        Tree::KeyOwners,
        Tree::Emails,
        Tree::ParkedEmails,
        Tree::CancelRequests,
    ];

    /// Name of the tree in the store.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Accounts => "accounts",
            Tree::Ledger => "ledger",
            Tree::WalletKeys => "wallet_keys",
            Tree::Meta => "meta",
            Tree::Sagas => "sagas",
            Tree::BookingKeys => "booking_keys",
            Tree::AccountBookings => "account_bookings",
            Tree::Outbox => "outbox",
            Tree::ApiKeys => "api_keys",
            Tree::KeyOwners => "api_key_owners",
            Tree::Emails => "emails",
            Tree::ParkedEmails => "parked_emails",
            Tree::CancelRequests => "cancel_requests",
        }
    }
}

/// One change inside an atomic write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace.
    Put {
        /// Tree.
        tree: Tree,
        /// Key bytes.
        key: Vec<u8>,
        /// Encoded value (see [`codec`]).
        value: Vec<u8>,
    },
    /// Insert only if the key is absent; if it is present, the whole write is refused
    /// with [`StoreError::Taken`] and nothing is written (unique indexes).
    Insert {
        /// Tree.
        tree: Tree,
        /// Key bytes.
        key: Vec<u8>,
        /// Encoded value (see [`codec`]).
        value: Vec<u8>,
    },
    /// Remove if present.
    Delete {
        /// Tree.
        tree: Tree,
        /// Key bytes.
        key: Vec<u8>,
    },
}

impl Op {
    /// A put of `value` encoded with the codec.
    pub fn put<T: Serialize>(tree: Tree, key: impl Into<Vec<u8>>, value: &T) -> Op {
        Op::Put {
            tree,
            key: key.into(),
            value: codec::encode(value),
        }
    }

    /// An insert-if-absent of `value` encoded with the codec.
    pub fn insert<T: Serialize>(tree: Tree, key: impl Into<Vec<u8>>, value: &T) -> Op {
        Op::Insert {
            tree,
            key: key.into(),
            value: codec::encode(value),
        }
    }

    /// The tree this op changes.
    pub fn tree(&self) -> Tree {
        match self {
            Op::Put { tree, .. } | Op::Insert { tree, .. } | Op::Delete { tree, .. } => *tree,
        }
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The underlying storage failed (disk full, read-only, I/O error).
    #[error("store I/O failed: {0}")]
    Io(String),
    /// A stored record does not decode; reported with its key, never skipped.
    #[error("record {tree}/{key} is unreadable: {reason}")]
    Corrupt {
        /// Tree name.
        tree: &'static str,
        /// The key, printable.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// This node no longer holds the lease of a shared record (a saga or an email another
    /// node has taken over, see `store::postgres::node`): nothing was written, and this
    /// node must stop working on it.
    #[error("{0}: another node has taken it over")]
    Fenced(String),
    /// An [`Op::Insert`] met a key that exists; nothing was written. An expected outcome
    /// for unique indexes, which their writer turns into its own conflict.
    #[error("{tree}/{key} exists already")]
    Taken {
        /// Tree name.
        tree: &'static str,
        /// The key, printable.
        key: String,
    },
}

/// A key and its raw value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A boxed, sendable future.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// The key-value layer under the sled implementations of the seam (and the node's own
/// health probes): trees of records, atomic batches, flushes. Actors never hold one.
pub trait Store: Send + Sync + 'static {
    /// The raw value at `key`.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` entries whose key starts with `prefix`, in key order, strictly after
    /// `after` when given.
    fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Applies every op or none.
    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError>;

    /// Applies the ops one at a time, in order, each atomic on its own: cheaper than
    /// [`Store::write`] where the store pays for atomicity across keys (sled's
    /// transactions take a process-wide lock and write out a log buffer each). Until the
    /// next flush a crash may keep any **prefix** of the sequence, never a later op
    /// without an earlier one (sled recovers its log in order and stops at the first
    /// gap), so callers put the op that makes the others count last: a saga record after
    /// the email and the index entries it implies. A failure part way (an I/O error, which
    /// latches a fail-stop store) leaves a prefix too. Stores without a cheaper path apply
    /// the sequence atomically.
    fn write_in_order(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.write(ops)
    }

    /// Makes every write so far durable. Concurrent callers share one disk sync.
    fn flush(&self) -> StoreFuture<()>;

    /// Why this store refuses writes for good (a fail-stop store after an I/O error), if
    /// it does. Cheap: `/health` asks on every call.
    fn failure_cause(&self) -> Option<String> {
        None
    }
}

/// Whether `url` names a database the PostgreSQL backend can use (`store.url`): the
/// config key at fault and why when it does not, without echoing the URL (it may hold a
/// password). A build without the `postgres` feature refuses the backend itself.
pub fn check_database_url(url: &str) -> Result<(), (&'static str, String)> {
    #[cfg(feature = "postgres")]
    return postgres::parse_url(url)
        .map(|_| ())
        .map_err(|reason| ("store.url", reason));
    #[cfg(not(feature = "postgres"))]
    {
        let _ = url;
        Err((
            "store.backend",
            "\"postgres\" needs a wayfare built with `--features postgres`".into(),
        ))
    }
}

/// Printable form of a key for error messages: UTF-8 where it is, hex otherwise.
pub fn printable_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_owned(),
        _ => key.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Decodes a stored value, naming the record when it is unreadable.
pub fn decode_record<T: DeserializeOwned>(
    tree: Tree,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|e| StoreError::Corrupt {
        tree: tree.name(),
        key: printable_key(key),
        reason: e.to_string(),
    })
}

/// Encodes a saga record with its trace origin and its partner calls as trailers.
pub fn encode_saga(record: &SagaRecord) -> Vec<u8> {
    codec::encode_with_trailers(record, &record.trace, &record.calls)
}

/// Decodes a saga record, old (no trace origin, or no partner calls) or new.
pub fn decode_saga(key: &[u8], bytes: &[u8]) -> Result<SagaRecord, StoreError> {
    let (mut record, trace, calls): (SagaRecord, _, _) = codec::decode_with_trailers(bytes)
        .map_err(|e| StoreError::Corrupt {
            tree: Tree::Sagas.name(),
            key: printable_key(key),
            reason: e.to_string(),
        })?;
    record.trace = trace;
    record.calls = calls;
    Ok(record)
}

/// Reads and decodes one record.
pub fn get_record<T: DeserializeOwned>(
    store: &dyn Store,
    tree: Tree,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    store
        .get(tree, key)?
        .map(|bytes| decode_record(tree, key, &bytes))
        .transpose()
}

/// Proves the store is writable and durable: writes a probe record and flushes it.
pub async fn probe(store: &dyn Store) -> Result<(), StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    store.write(vec![Op::put(Tree::Meta, b"health_probe".to_vec(), &now)])?;
    store.flush().await
}

#[cfg(test)]
mod saga_codec_tests {
    use super::*;
    use crate::domain::saga::fixtures::booking;
    use crate::domain::saga::{CallOutcome, PartnerCall, PartnerCalls, Step, TraceOrigin};

    /// A saga written before records carried their trace (the plain envelope, version 1,
    /// as every earlier build wrote it) still loads, without a trace; one written before
    /// they carried partner calls (version 2) loads without calls; a new one keeps both.
    #[test]
    fn saga_records_from_before_the_trace_still_decode() {
        let old = booking();
        let bytes = codec::encode(&old);
        assert_eq!(bytes[0], codec::FORMAT_VERSION);
        let loaded = decode_saga(b"saga", &bytes).unwrap();
        assert_eq!(loaded, old);
        assert_eq!(loaded.trace, None);

        let mut new = booking();
        new.trace = Some(TraceOrigin {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            process: 7,
        });
        // As the build before partner calls wrote it: one trailer, version 2.
        let v2 = codec::encode_with_trailer(&new, &new.trace);
        assert_eq!(v2[0], codec::TRAILER_VERSION);
        let loaded = decode_saga(b"saga", &v2).unwrap();
        assert_eq!(loaded, new);
        assert_eq!(loaded.calls, PartnerCalls::default());

        new.calls.record(PartnerCall {
            partner: "alpha".into(),
            operation: "book".into(),
            step: Step::Reserve,
            attempt: 0,
            started_at: chrono::Utc::now(),
            duration_ms: 12,
            outcome: CallOutcome::Failed,
            http_status: Some(503),
            detail: Some("seller unavailable: 503".into()),
        });
        new.calls.dropped = 3;
        let bytes = encode_saga(&new);
        assert_eq!(bytes[0], codec::TRAILERS_VERSION);
        assert_eq!(decode_saga(b"saga", &bytes).unwrap(), new);
        let e = decode_saga(b"saga", &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(
            matches!(e, StoreError::Corrupt { tree: "sagas", .. }),
            "{e:?}"
        );
    }

    /// The fuzzer's version-2 saga seeds are real records (a seed the decoder refuses
    /// would leave the trailer to chance): kept, unsampled and untraced.
    #[test]
    fn the_fuzz_seeds_of_version_2_sagas_decode() {
        let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/codec_decode/");
        let flags = |name: &str| {
            let bytes = std::fs::read(format!("{seeds}{name}")).unwrap();
            assert_eq!(bytes[0], codec::TRAILER_VERSION, "{name}");
            let record = decode_saga(b"saga", &bytes).unwrap();
            assert_eq!(record.calls, PartnerCalls::default(), "{name}");
            record.trace.map(|t| t.traceparent[53..].to_owned())
        };
        assert_eq!(flags("saga_traced_v2").as_deref(), Some("01"));
        assert_eq!(flags("saga_unsampled_v2").as_deref(), Some("00"));
        assert_eq!(flags("saga_untraced_v2"), None);
    }
}
