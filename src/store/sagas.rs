//! [`SagaStore`]: where saga records live, said as the coordinator and the saga actors
//! mean it (create a booking under its key, save a step with its email, park, retry,
//! take work), so the actors have one code path whatever the backend.
//!
//! Implemented by the sled store (one process drives every saga it has; the counts are
//! kept in memory by the writes) and the PostgreSQL store (sagas are leased to one node at
//! a time; holding, renewing, claiming and fencing the leases are its private business).

use std::sync::Mutex;

use super::StoreFuture;
use crate::domain::account::AccountId;
use crate::domain::outbox::OutboxEmail;
use crate::domain::saga::{SagaCounts, SagaRecord, SagaState, SagaTally};

/// What creating a booking under its client idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewBooking {
    /// Created and durable; this process must run it.
    Created,
    /// The key was used before (through any node) for the same request: that saga's id.
    Existing(String),
    /// The key was used for another request.
    KeyReused,
}

/// One step of a saga, to store atomically.
#[derive(Debug, Clone, Copy)]
pub struct SagaWrite<'a> {
    /// The saga's new record.
    pub record: &'a SagaRecord,
    /// The state of the record it replaces (`None`: a new record), for the counts.
    pub was: Option<SagaState>,
    /// The customer email the step causes, queued in the outbox in the same write.
    pub email: Option<&'a OutboxEmail>,
    /// The booking a finished cancellation marks cancelled, with its state before.
    pub finished: Option<(SagaState, &'a SagaRecord)>,
}

/// What a saved step learned from the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Saved {
    /// A customer's cancel is stored for the saga ([`SagaStore::request_cancel`]): the
    /// actor driving it takes it up (see `domain::saga::takes_stored_cancel`).
    pub cancel_requested: bool,
}

/// What this process must run when it starts.
#[derive(Debug, Default)]
pub struct Resumable {
    /// Unfinished sagas (forward or compensating) to resume from their last record.
    pub unfinished: Vec<String>,
    /// Confirmed bookings whose cancellation was requested but not yet started.
    pub cancellations: Vec<SagaRecord>,
}

/// The saga storage contract. Every write resolves once durable; a write refused because
/// another node drives the saga now fails with [`super::StoreError::Fenced`], and the
/// caller must stop driving it.
pub trait SagaStore: Send + Sync + 'static {
    /// Creates `record` (a new booking) under the client key `key` (account id + the
    /// client's idempotency key), with the account's booking index, unless the key was
    /// used before.
    fn create_booking(&self, record: &SagaRecord, key: &str) -> StoreFuture<NewBooking>;

    /// What [`SagaStore::create_booking`] would find for `record` under `key` without
    /// creating anything: `None` when the key is new (a replay is answered even when no
    /// new booking may start).
    fn find_booking(&self, record: &SagaRecord, key: &str) -> StoreFuture<Option<NewBooking>>;

    /// A saga's last stored record, as readers must see it with a cancel stored for it
    /// (`domain::saga::with_stored_cancel`).
    fn load(&self, id: &str) -> StoreFuture<Option<SagaRecord>>;

    /// Stores one step: the record, its email, the booking it finished, all or none.
    fn save(&self, write: SagaWrite<'_>) -> StoreFuture<Saved>;

    /// Stores a customer's cancel of booking `id` for whichever process drives it (it
    /// learns of it at its next [`SagaStore::save`]); any node may store it.
    fn request_cancel(&self, id: &str) -> StoreFuture<()>;

    /// Creates the cancellation `record` of the finished booking `of` unless it exists;
    /// true when this process must run it.
    fn start_follow_up(&self, record: &SagaRecord, of: &str) -> StoreFuture<bool>;

    /// Stores a saga parked as `needs_attention` (its actor kept crashing); nothing runs
    /// it until an operator retries it.
    fn park(&self, record: &SagaRecord, was: SagaState) -> StoreFuture<()>;

    /// An operator's retry of a parked saga (`record` is the resumed record): true when
    /// this process must run it, false when it is no longer parked.
    fn retry_parked(&self, record: &SagaRecord, was: SagaState) -> StoreFuture<bool>;

    /// Ids of up to `limit` of the account's bookings after `after`, in id order.
    fn account_bookings(
        &self,
        account: AccountId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreFuture<Vec<String>>;

    /// Whether this process may drive saga `id` now (a saga actor asks as it starts).
    fn may_drive(&self, id: &str) -> bool;

    /// What to run at start-up (and the counts, built before any saga runs).
    fn resumable(&self) -> StoreFuture<Resumable>;

    /// Up to `max` sagas nobody drives any more (their node died) that this process now
    /// must run. One process alone never has any.
    fn take_work(&self, max: usize) -> StoreFuture<Vec<String>>;

    /// Keeps this process's claim on the sagas it drives (called every few seconds by the
    /// cluster duties); nothing to do for one process alone.
    fn keep_claims(&self) -> StoreFuture<()>;

    /// Gives every claim up at a clean shutdown, after the saga actors stopped, so other
    /// nodes take the sagas over at once.
    fn hand_over(&self) -> StoreFuture<()>;

    /// Counts by state and the first `parked_listed` parked sagas (cheap: no scan). With
    /// several nodes, over the whole cluster as of the last [`SagaStore::refresh_counts`].
    fn counts(&self, parked_listed: usize) -> SagaCounts;

    /// Refreshes what [`SagaStore::counts`] answers from the store, where other writers
    /// exist (a cheap aggregate, every few seconds); one process alone counts its writes.
    fn refresh_counts(&self) -> StoreFuture<()>;

    /// How many sagas this process holds a claim on, when claims exist (`None`: it runs
    /// every saga it has, nothing is leased).
    fn claimed_here(&self) -> Option<usize>;
}

/// A [`SagaTally`] behind a lock, kept by a store's writes; installed once at start-up.
#[derive(Debug, Default)]
pub(crate) struct SharedTally {
    tally: Mutex<Option<SagaTally>>,
}

impl SharedTally {
    /// Installs the tally built by `build` unless one is installed.
    pub(crate) fn init_once(&self, build: impl FnOnce() -> SagaTally) {
        let mut tally = self.lock();
        if tally.is_none() {
            *tally = Some(build());
        }
    }

    /// A saga record was written over one in state `before` (`None`: a new record).
    pub(crate) fn replace(&self, before: Option<SagaState>, after: &SagaRecord) {
        if let Some(tally) = self.lock().as_mut() {
            tally.replace(before, after);
        }
    }

    /// The counts of [`SagaStore::counts`] (empty before the tally is installed).
    pub(crate) fn counts(&self, parked_listed: usize) -> SagaCounts {
        self.lock()
            .as_ref()
            .map(|t| t.counts(parked_listed))
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SagaTally>> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }
}
