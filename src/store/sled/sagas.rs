//! [`SledSagas`]: saga records, booking keys and the accounts' booking index in sled.
//! Writes are applied when called (so callers that call in order write in order) and the
//! returned future resolves once they are flushed.
//!
//! # The saga record is the commit point
//!
//! A write of several records goes through [`Store::write_in_order`], not a sled
//! transaction (which takes sled's process-wide lock and writes out a log buffer of its
//! own: under a booking load that was most of the arbiter's time). A crash before the
//! flush may then keep a prefix of the write, so the saga record always comes last and
//! every earlier record is one a prefix may safely hold on its own:
//!
//! - a new booking writes its client key, then its account index entry, then the saga.
//!   A key or index entry whose saga is missing was never acknowledged (the 202 waits
//!   for the flush): the key is taken as unused and overwritten by the next booking with
//!   it, and listings skip the index entry;
//! - a step writes its email (and, for a finished cancellation, the cancelled booking)
//!   before the saga record. Without the record, the saga resumes from its previous
//!   record and redoes the step under the same idempotency key, which writes the same
//!   email (same outbox id) again: at worst an email goes out twice with one Message-ID.

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

    /// What the key `key` was used for, if anything. A key whose saga record is missing
    /// is the prefix of a creation a crash cut short (see the module doc): unused.
    fn seen(&self, record: &SagaRecord, key: &str) -> Result<Option<NewBooking>, StoreError> {
        let Some(seen) =
            get_record::<SeenBooking>(&*self.store, Tree::BookingKeys, key.as_bytes())?
        else {
            return Ok(None);
        };
        if self
            .store
            .get(Tree::Sagas, seen.saga_id.as_bytes())?
            .is_none()
        {
            return Ok(None);
        }
        Ok(Some(if seen.request == record.request {
            NewBooking::Existing(seen.saga_id)
        } else {
            NewBooking::KeyReused
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
        // The saga last: it makes the other two count (see the module doc).
        let written = self.store.write_in_order(vec![
            Op::put(
                Tree::BookingKeys,
                key.as_bytes().to_vec(),
                &SeenBooking {
                    request: record.request.clone(),
                    saga_id: id,
                },
            ),
            Op::put(Tree::AccountBookings, index, &()),
            self.put(record),
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
        // The record last: it makes the others count (see the module doc).
        let mut ops = Vec::with_capacity(3);
        if let Some(email) = write.email {
            ops.push(Op::put(Tree::Outbox, email.id.as_bytes().to_vec(), email));
        }
        if let Some((_, booking)) = write.finished {
            ops.push(self.put(booking));
        }
        ops.push(self.put(write.record));
        if let Err(e) = self.store.write_in_order(ops) {
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

#[cfg(test)]
mod tests {
    //! What a crash may leave of a write in order (a prefix of it; see the module doc),
    //! and what a restarted store makes of each prefix.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::{NaiveDate, Utc};

    use super::*;
    use crate::domain::money::{Currency, Money};
    use crate::domain::outbox::EmailKind;
    use crate::domain::saga::{email_for, new_booking, BookingId};
    use crate::store::sled::SledStore;
    use crate::store::{Entry, Outbox as _};

    /// A store that "crashes" part way through every write in order: it applies the first
    /// `keep` ops and refuses the rest, as if the process died with only those in sled's
    /// log.
    struct CutShort {
        inner: Arc<SledStore>,
        keep: AtomicUsize,
    }

    impl Store for CutShort {
        fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(tree, key)
        }
        fn scan(
            &self,
            tree: Tree,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            self.inner.scan(tree, prefix, after, limit)
        }
        fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
            self.inner.write(ops)
        }
        fn write_in_order(&self, ops: Vec<Op>) -> Result<(), StoreError> {
            let keep = self.keep.load(Ordering::SeqCst);
            let cut = ops.len() > keep;
            self.inner
                .write_in_order(ops.into_iter().take(keep).collect())?;
            if cut {
                return Err(StoreError::Io("crashed part way".into()));
            }
            Ok(())
        }
        fn flush(&self) -> StoreFuture<()> {
            self.inner.flush()
        }
    }

    fn booking(account: AccountId, key: &str) -> SagaRecord {
        let eur = |minor| Money::new(minor, Currency::EUR);
        let request = BookingRequest {
            account_id: account,
            seller: "alpha".into(),
            sku: "hotel:test:h1:double".into(),
            start: NaiveDate::from_ymd_opt(2031, 5, 1).unwrap(),
            end: NaiveDate::from_ymd_opt(2031, 5, 3).unwrap(),
            wallet_points: eur(0),
            card_token: "tok_approve".into(),
            offer_price: eur(40_000),
            idempotency_key: key.into(),
        };
        new_booking(BookingId::new(), request, Utc::now()).unwrap()
    }

    #[tokio::test]
    async fn every_prefix_of_a_new_booking_leaves_one_booking_per_key_after_a_restart() {
        // The creation writes 3 ops: key, index, saga.
        for keep in 0..=3 {
            let dir = tempfile::tempdir().unwrap();
            let sled = Arc::new(SledStore::open(dir.path()).unwrap());
            let account = AccountId::random();
            let key = format!("{account}/client-key");
            let crashing = SledSagas::new(Arc::new(CutShort {
                inner: sled.clone(),
                keep: AtomicUsize::new(keep),
            }));
            let first = booking(account, "client-key");
            let created = crashing.create_booking(&first, &key).await;
            assert_eq!(created.is_ok(), keep == 3, "keep {keep}: {created:?}");

            // The restarted process: the client retries with the same key.
            let sagas = SledSagas::new(sled.clone());
            let resumable = sagas.resumable().await.unwrap();
            let retry = booking(account, "client-key");
            let answer = sagas.create_booking(&retry, &key).await.unwrap();
            let first_id = first.saga_id.to_string();
            if keep == 3 {
                assert_eq!(answer, NewBooking::Existing(first_id.clone()));
                assert_eq!(resumable.unfinished, vec![first_id.clone()]);
            } else {
                // Never acknowledged, never resumed: the retry makes the booking.
                assert_eq!(answer, NewBooking::Created, "keep {keep}");
                assert!(resumable.unfinished.is_empty(), "keep {keep}");
                assert!(sagas.load(&first_id).await.unwrap().is_none());
            }
            // Whatever the cut, the key now names one saga and that saga exists.
            let owner = match sagas.find_booking(&retry, &key).await.unwrap() {
                Some(NewBooking::Existing(id)) => id,
                other => panic!("keep {keep}: the key names no saga: {other:?}"),
            };
            assert!(sagas.load(&owner).await.unwrap().is_some());
            // The index may hold an entry of the cut creation (listings skip it), and
            // always holds the booking that counts.
            let listed = sagas.account_bookings(account, None, 10).await.unwrap();
            assert!(listed.contains(&owner), "keep {keep}: {listed:?}");
            assert!(listed.len() <= 2);
        }
    }

    #[tokio::test]
    async fn every_prefix_of_a_step_with_an_email_resumes_from_a_record_it_can_redo() {
        // A confirming step writes 2 ops: the email, then the record.
        for keep in 0..=2 {
            let dir = tempfile::tempdir().unwrap();
            let sled = Arc::new(SledStore::open(dir.path()).unwrap());
            let account = AccountId::random();
            let first = booking(account, "k");
            let id = first.saga_id.to_string();
            SledSagas::new(sled.clone())
                .create_booking(&first, &format!("{account}/k"))
                .await
                .unwrap();
            let mut confirmed = first.clone();
            confirmed.state = SagaState::Confirmed;
            let email = email_for(
                &confirmed,
                EmailKind::Confirmed,
                "a@example.com",
                Utc::now(),
            );
            let crashing = SledSagas::new(Arc::new(CutShort {
                inner: sled.clone(),
                keep: AtomicUsize::new(keep),
            }));
            let saved = crashing
                .save(SagaWrite {
                    record: &confirmed,
                    was: Some(first.state),
                    email: Some(&email),
                    finished: None,
                })
                .await;
            assert_eq!(saved.is_ok(), keep == 2);

            let sagas = SledSagas::new(sled.clone());
            let outbox = crate::store::sled::SledOutbox::new(sled.clone());
            let queued: Vec<_> = outbox
                .claim(10)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.email)
                .collect();
            let state = sagas.load(&id).await.unwrap().unwrap().state;
            match keep {
                // Nothing kept: the saga redoes the step from its first record.
                0 => assert!(queued.is_empty() && state == SagaState::Pending),
                // The email without the record: the saga redoes the step and writes
                // the same email (same id) again.
                1 => {
                    assert_eq!(state, SagaState::Pending);
                    assert_eq!(queued.len(), 1);
                    assert_eq!(queued[0].id, email.id);
                }
                // Never the record without its email.
                _ => assert!(state == SagaState::Confirmed && queued.len() == 1),
            }
            let resumable = sagas.resumable().await.unwrap();
            assert_eq!(resumable.unfinished.is_empty(), keep == 2);
        }
    }
}
