//! [`SledSagas`]: saga records, booking keys and the accounts' booking index in sled.
//! Writes are applied when called (so callers that call in order write in order) and the
//! returned future resolves once they are flushed.

use std::future::ready;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::account::AccountId;
use crate::domain::saga::{
    is_terminal, with_stored_cancel, BookingRequest, SagaCounts, SagaKind, SagaRecord, SagaState,
    SagaTally,
};
use crate::store::sagas::{NewBooking, Resumable, SagaStore, SagaWrite, Saved, SharedTally};
use crate::store::{
    decode_saga, encode_saga, get_record, Op, Store, StoreError, StoreFuture, Tree,
};

/// What a client idempotency key was used for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SeenBooking {
    request: BookingRequest,
    saga_id: String,
}

/// Sagas of one process, over a sled [`Store`].
pub struct SledSagas {
    store: Arc<dyn Store>,
    tally: SharedTally,
}

impl SledSagas {
    /// Sagas in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        SledSagas {
            store,
            tally: SharedTally::default(),
        }
    }

    /// Resolves once every write so far is durable, with `value`.
    fn durable<T: Send + 'static>(&self, value: T) -> StoreFuture<T> {
        let flush = self.store.flush();
        Box::pin(async move {
            flush.await?;
            Ok(value)
        })
    }

    /// What the key `key` was used for, if anything.
    fn seen(&self, record: &SagaRecord, key: &str) -> Result<Option<NewBooking>, StoreError> {
        let seen = get_record::<SeenBooking>(&*self.store, Tree::BookingKeys, key.as_bytes())?;
        Ok(seen.map(|seen| {
            if seen.request == record.request {
                NewBooking::Existing(seen.saga_id)
            } else {
                NewBooking::KeyReused
            }
        }))
    }

    /// Whether a cancel is stored for saga `id`.
    fn cancel_stored(&self, id: &[u8]) -> Result<bool, StoreError> {
        Ok(self.store.get(Tree::CancelRequests, id)?.is_some())
    }

    /// `record` as readers see it (with a cancel stored for it, if one is).
    fn as_read(&self, mut record: SagaRecord) -> Result<SagaRecord, StoreError> {
        if self.cancel_stored(record.saga_id.to_string().as_bytes())? {
            with_stored_cancel(&mut record);
        }
        Ok(record)
    }

    fn put(&self, record: &SagaRecord) -> Op {
        Op::Put {
            tree: Tree::Sagas,
            key: record.saga_id.to_string().into_bytes(),
            value: encode_saga(record),
        }
    }
}

fn failed<T: Send + 'static>(e: StoreError) -> StoreFuture<T> {
    Box::pin(ready(Err(e)))
}

impl SagaStore for SledSagas {
    fn find_booking(&self, record: &SagaRecord, key: &str) -> StoreFuture<Option<NewBooking>> {
        Box::pin(ready(self.seen(record, key)))
    }

    fn create_booking(&self, record: &SagaRecord, key: &str) -> StoreFuture<NewBooking> {
        match self.seen(record, key) {
            Err(e) => return failed(e),
            Ok(Some(found)) => return Box::pin(ready(Ok(found))),
            Ok(None) => {}
        }
        let id = record.saga_id.to_string();
        let mut index = record.request.account_id.to_string().into_bytes();
        index.push(b'/');
        index.extend_from_slice(id.as_bytes());
        let written = self.store.write(vec![
            self.put(record),
            Op::put(
                Tree::BookingKeys,
                key.as_bytes().to_vec(),
                &SeenBooking {
                    request: record.request.clone(),
                    saga_id: id,
                },
            ),
            Op::put(Tree::AccountBookings, index, &()),
        ]);
        if let Err(e) = written {
            return failed(e);
        }
        self.tally.replace(None, record);
        self.durable(NewBooking::Created)
    }

    fn load(&self, id: &str) -> StoreFuture<Option<SagaRecord>> {
        let loaded = self
            .store
            .get(Tree::Sagas, id.as_bytes())
            .and_then(|found| {
                found
                    .map(|bytes| decode_saga(id.as_bytes(), &bytes).and_then(|r| self.as_read(r)))
                    .transpose()
            });
        Box::pin(ready(loaded))
    }

    fn save(&self, write: SagaWrite<'_>) -> StoreFuture<Saved> {
        let mut ops = vec![self.put(write.record)];
        if let Some(email) = write.email {
            ops.push(Op::put(Tree::Outbox, email.id.as_bytes().to_vec(), email));
        }
        if let Some((_, booking)) = write.finished {
            ops.push(self.put(booking));
        }
        if let Err(e) = self.store.write(ops) {
            return failed(e);
        }
        self.tally.replace(write.was, write.record);
        if let Some((before, booking)) = write.finished {
            self.tally.replace(Some(before), booking);
        }
        match self.cancel_stored(write.record.saga_id.to_string().as_bytes()) {
            Ok(cancel_requested) => self.durable(Saved { cancel_requested }),
            Err(e) => failed(e),
        }
    }

    fn request_cancel(&self, id: &str) -> StoreFuture<()> {
        let stored = self.store.write(vec![Op::put(
            Tree::CancelRequests,
            id.as_bytes().to_vec(),
            &(),
        )]);
        match stored {
            Ok(()) => self.durable(()),
            Err(e) => failed(e),
        }
    }

    /// Always true: also when the record was there, it may be this process's own write
    /// whose saga has not run yet (the flush makes it durable before it acts).
    fn start_follow_up(&self, record: &SagaRecord, _of: &str) -> StoreFuture<bool> {
        let id = record.saga_id.to_string();
        match self.store.get(Tree::Sagas, id.as_bytes()) {
            Err(e) => return failed(e),
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Err(e) = self.store.write(vec![self.put(record)]) {
                    return failed(e);
                }
                self.tally.replace(None, record);
            }
        }
        self.durable(true)
    }

    fn park(&self, record: &SagaRecord, was: SagaState) -> StoreFuture<()> {
        if let Err(e) = self.store.write(vec![self.put(record)]) {
            return failed(e);
        }
        self.tally.replace(Some(was), record);
        self.durable(())
    }

    fn retry_parked(&self, record: &SagaRecord, was: SagaState) -> StoreFuture<bool> {
        if let Err(e) = self.store.write(vec![self.put(record)]) {
            return failed(e);
        }
        self.tally.replace(Some(was), record);
        self.durable(true)
    }

    fn account_bookings(
        &self,
        account: AccountId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreFuture<Vec<String>> {
        let mut prefix = account.to_string().into_bytes();
        prefix.push(b'/');
        let after = after.map(|id| {
            let mut key = prefix.clone();
            key.extend_from_slice(id.as_bytes());
            key
        });
        let entries = self
            .store
            .scan(Tree::AccountBookings, &prefix, after.as_deref(), limit);
        Box::pin(ready(entries.map(|entries| {
            entries
                .into_iter()
                .map(|(key, _)| String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
                .collect()
        })))
    }

    fn may_drive(&self, _id: &str) -> bool {
        true
    }

    /// Every unfinished saga in the store, and the confirmed bookings whose cancellation
    /// was requested; the counts are built from the same scan, before any saga runs (a
    /// restarted coordinator keeps the counts its sagas have been updating all along).
    fn resumable(&self) -> StoreFuture<Resumable> {
        let entries = match self.store.scan(Tree::Sagas, b"", None, usize::MAX) {
            Ok(entries) => entries,
            Err(e) => return failed(e),
        };
        let records: Vec<Result<SagaRecord, StoreError>> = entries
            .iter()
            .map(|(key, value)| decode_saga(key, value).and_then(|r| self.as_read(r)))
            .collect();
        self.tally
            .init_once(|| SagaTally::from_records(records.iter().flatten()));
        let mut resumable = Resumable::default();
        for record in records {
            match record {
                Ok(r) if !is_terminal(r.state) && r.state != SagaState::NeedsAttention => {
                    resumable.unfinished.push(r.saga_id.to_string());
                }
                Ok(r)
                    if r.kind == SagaKind::Booking
                        && r.cancel_requested
                        && r.state == SagaState::Confirmed =>
                {
                    resumable.cancellations.push(r);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "Unreadable saga record left as is."),
            }
        }
        Box::pin(ready(Ok(resumable)))
    }

    fn take_work(&self, _max: usize) -> StoreFuture<Vec<String>> {
        Box::pin(ready(Ok(Vec::new())))
    }

    fn keep_claims(&self) -> StoreFuture<()> {
        Box::pin(ready(Ok(())))
    }

    fn hand_over(&self) -> StoreFuture<()> {
        Box::pin(ready(Ok(())))
    }

    fn counts(&self, parked_listed: usize) -> SagaCounts {
        self.tally.counts(parked_listed)
    }

    /// Nothing to refresh: this process writes every saga, and counts as it writes.
    fn refresh_counts(&self) -> StoreFuture<()> {
        Box::pin(ready(Ok(())))
    }

    fn claimed_here(&self) -> Option<usize> {
        None
    }
}

impl std::fmt::Debug for SledSagas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledSagas").finish()
    }
}
