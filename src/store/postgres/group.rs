//! Group commit of saga writes: concurrent sagas' writes share one statement and one
//! transaction ([`PgStore::save_sagas`], [`PgStore::create_sagas`]), so the database
//! parses, executes and commits (and flushes its WAL) once for many bookings instead of
//! once for each.
//!
//! No task of its own: a write is queued, and whichever waiting writer gets one of
//! [`BATCHES_IN_FLIGHT`] permits takes everything queued (up to [`MOST_PER_BATCH`]) and
//! sends it as one batch, then hands each writer its own answer. A write that finds a
//! permit free goes at once (a batch of one: no added wait when the node is idle); under
//! load, writes arriving while the batches in flight run are sent together next.
//!
//! Each write keeps its own answer: a saga whose lease was lost is refused alone, a
//! booking key used before answers its own saga, and the rest of the batch is written. A
//! batch the database refuses as a whole is retried one write at a time, so one bad write
//! cannot fail the others.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

use super::sagas::{Created, FencedWrite, NewSaga, SagaWriteError};
use super::{PgError, PgStore};

/// Batches of one kind one node sends at once (each on its own pooled connection).
pub(super) const BATCHES_IN_FLIGHT: usize = 4;

/// Most writes in one batch (bounds one statement's size and its row locks).
pub(super) const MOST_PER_BATCH: usize = 64;

/// One write's own answer.
type Answer<A> = Result<A, SagaWriteError>;

/// Sends one batch: each write's answer, in order, or the statement's failure.
type SendBatch<W, A> =
    for<'a> fn(
        &'a PgStore,
        Duration,
        &'a [W],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Answer<A>>, PgError>> + Send + 'a>>;

/// A node's queue of one kind of saga write, sent in batches.
pub(super) struct GroupWriter<W, A> {
    queue: Mutex<Vec<(W, oneshot::Sender<Answer<A>>)>>,
    permits: Semaphore,
    send: SendBatch<W, A>,
}

impl<W, A> std::fmt::Debug for GroupWriter<W, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter")
            .field("queued", &self.queue.lock().map(|q| q.len()).unwrap_or(0))
            .finish()
    }
}

/// Step writes under leases ([`PgStore::save_sagas`]); each answer says whether a
/// customer's cancel is stored for the saga.
pub(super) fn saves() -> GroupWriter<FencedWrite, bool> {
    GroupWriter::new(|db, lease_for, writes| Box::pin(db.save_sagas(lease_for, writes)))
}

/// New sagas, each leased to its node ([`PgStore::create_sagas`]).
pub(super) fn creations() -> GroupWriter<NewSaga, Created> {
    GroupWriter::new(|db, lease_for, writes| Box::pin(db.create_sagas(lease_for, writes)))
}

impl<W, A> GroupWriter<W, A> {
    fn new(send: SendBatch<W, A>) -> Self {
        GroupWriter {
            queue: Mutex::default(),
            permits: Semaphore::new(BATCHES_IN_FLIGHT),
            send,
        }
    }

    /// Writes `write` (with leases for `lease_for`) in the next batch; its own answer.
    pub(super) async fn write(&self, db: &PgStore, lease_for: Duration, write: W) -> Answer<A> {
        let (tx, mut answer) = oneshot::channel();
        self.queued().push((write, tx));
        loop {
            tokio::select! {
                biased;
                answered = &mut answer => return answered.unwrap_or_else(|_| Err(abandoned())),
                permit = self.permits.acquire() => {
                    let Ok(permit) = permit else {
                        return Err(abandoned());
                    };
                    let batch = {
                        let mut queue = self.queued();
                        let n = queue.len().min(MOST_PER_BATCH);
                        queue.drain(..n).collect::<Vec<_>>()
                    };
                    if batch.is_empty() {
                        // Ours is in a batch another writer is sending.
                        drop(permit);
                        return answer.await.unwrap_or_else(|_| Err(abandoned()));
                    }
                    self.send_batch(db, lease_for, batch).await;
                    drop(permit);
                    // Ours was in it (answered now), or is still queued behind a full
                    // batch (sent by the next permit's holder, maybe this writer).
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn queued(&self) -> std::sync::MutexGuard<'_, Vec<(W, oneshot::Sender<Answer<A>>)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one batch and answers each of its writers.
    async fn send_batch(
        &self,
        db: &PgStore,
        lease_for: Duration,
        batch: Vec<(W, oneshot::Sender<Answer<A>>)>,
    ) {
        let (writes, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match (self.send)(db, lease_for, &writes).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            // Refused as a whole (a statement error such as a deadlock with another
            // node's batch, not a lost lease): each write alone, so only the one the
            // database refuses fails.
            Err(PgError::Statement(_)) if writes.len() > 1 => {
                for (write, reply) in writes.iter().zip(replies) {
                    let answer = match (self.send)(db, lease_for, std::slice::from_ref(write)).await
                    {
                        Ok(mut one) => one.pop().unwrap_or_else(|| Err(abandoned())),
                        Err(e) => Err(e.into()),
                    };
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone().into()));
                }
            }
        }
    }
}

/// What a writer hears when the batch holding its write was dropped unsent or unanswered
/// (its sender's future was cancelled): the outcome is unknown, as after a lost
/// connection, and the saga's write is retried as after any store failure.
fn abandoned() -> SagaWriteError {
    SagaWriteError::Store(PgError::Unreachable(
        "the batch holding this saga write was abandoned; its outcome is unknown".into(),
    ))
}
