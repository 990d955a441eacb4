//! Group commit of saga writes: concurrent sagas' writes share one statement and one
//! transaction ([`PgStore::save_sagas`]), so the database parses, plans and commits (and
//! flushes its WAL) once for many bookings instead of once for each.
//!
//! No task of its own: a write is queued, and whichever waiting writer gets one of
//! [`BATCHES_IN_FLIGHT`] permits takes everything queued (up to [`MOST_PER_BATCH`]) and
//! sends it as one batch, then hands each writer its own answer. A write that finds a
//! permit free goes at once (a batch of one: no added wait when the node is idle); under
//! load, writes arriving while the batches in flight run are sent together next.
//!
//! Each saga keeps its own fence: a saga whose lease was lost is refused alone, the rest
//! of its batch is written. A batch the database refuses as a whole is retried one write
//! at a time, so one bad write cannot fail the others.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

use super::sagas::{FencedWrite, SagaWriteError};
use super::{PgError, PgStore};

/// Batches one node sends at once (each on its own pooled connection).
pub(super) const BATCHES_IN_FLIGHT: usize = 4;

/// Most writes in one batch (bounds one statement's size and its row locks).
pub(super) const MOST_PER_BATCH: usize = 64;

type Answer = Result<bool, SagaWriteError>;

/// A node's queue of saga writes, sent in batches.
#[derive(Debug)]
pub(super) struct GroupWriter {
    queue: Mutex<Vec<(FencedWrite, oneshot::Sender<Answer>)>>,
    permits: Semaphore,
}

impl Default for GroupWriter {
    fn default() -> Self {
        GroupWriter {
            queue: Mutex::default(),
            permits: Semaphore::new(BATCHES_IN_FLIGHT),
        }
    }
}

impl GroupWriter {
    /// Writes `write` (renewing its lease for `lease_for`) in the next batch; its own
    /// answer, as [`PgStore::save_sagas`] gives it.
    pub(super) async fn save(
        &self,
        db: &PgStore,
        lease_for: Duration,
        write: FencedWrite,
    ) -> Answer {
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
                    send(db, lease_for, batch).await;
                    drop(permit);
                    // Ours was in it (answered now), or is still queued behind a full
                    // batch (sent by the next permit's holder, maybe this writer).
                }
            }
        }
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, Vec<(FencedWrite, oneshot::Sender<Answer>)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
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

/// Sends one batch and answers each of its writers.
async fn send(
    db: &PgStore,
    lease_for: Duration,
    batch: Vec<(FencedWrite, oneshot::Sender<Answer>)>,
) {
    let (writes, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    match db.save_sagas(lease_for, &writes).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        // Refused as a whole (a statement error, not a lost lease): each write alone, so
        // only the one the database refuses fails.
        Err(PgError::Statement(_)) if writes.len() > 1 => {
            for (write, reply) in writes.into_iter().zip(replies) {
                let answer = match db.save_sagas(lease_for, std::slice::from_ref(&write)).await {
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
