//! [`SledOutbox`]: the outbox tree of one process. Only this process sends, so a claim
//! holds nothing: it reads the oldest entries that are not waiting out a retry (off the
//! async threads, since sled may go to its log) and sending removes them.
//!
//! A failed attempt is counted in the entry (`attempts`); the wait before its next
//! attempt is kept in memory (after a restart an email is tried once more at once, which
//! delivery at least once allows). An email past its last attempt moves to the parked
//! tree with its reason, in one atomic write.

use std::collections::HashMap;
use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::domain::outbox::{
    after_failure, AfterFailure, EmailCounts, OutboxEmail, ParkedEmail, PARKED_EMAILS_LISTED,
};
use crate::store::outbox::{ClaimedEmail, Outbox};
use crate::store::{decode_record, Op, Store, StoreError, StoreFuture, Tree};

/// A parked email as stored: the email whole (an operator may resend it) and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ParkedEntry {
    email: OutboxEmail,
    reason: String,
    parked_at: chrono::DateTime<Utc>,
}

/// The outbox in a sled [`Store`].
pub struct SledOutbox {
    store: Arc<dyn Store>,
    /// Emails waiting out a retry: not claimed before this instant.
    not_before: Arc<Mutex<HashMap<String, Instant>>>,
    counts: Mutex<EmailCounts>,
}

impl SledOutbox {
    /// The outbox in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let outbox = SledOutbox {
            store,
            not_before: Arc::default(),
            counts: Mutex::default(),
        };
        if let Err(e) = outbox.count_parked() {
            tracing::error!(error = %e, "Cannot count parked emails.");
        }
        outbox
    }

    /// Counts the parked tree (a handful of entries at most, normally none).
    fn count_parked(&self) -> Result<(), StoreError> {
        let entries = self.store.scan(Tree::ParkedEmails, b"", None, usize::MAX)?;
        let mut counts = EmailCounts {
            parked: entries.len() as u64,
            parked_listed: Vec::new(),
        };
        for (key, value) in entries.iter().take(PARKED_EMAILS_LISTED) {
            let entry: ParkedEntry = decode_record(Tree::ParkedEmails, key, value)?;
            counts
                .parked_listed
                .push(ParkedEmail::of(&entry.email, &entry.reason));
        }
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = counts;
        Ok(())
    }
}

fn joined<T>(r: Result<Result<T, StoreError>, tokio::task::JoinError>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Io(format!("outbox task failed: {e}")))?
}

impl Outbox for SledOutbox {
    fn claim(&self, max: usize) -> StoreFuture<Vec<ClaimedEmail>> {
        let (store, waiting) = (self.store.clone(), self.not_before.clone());
        let read = tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            let waiting: HashMap<String, Instant> = {
                let mut map = waiting.lock().unwrap_or_else(|p| p.into_inner());
                map.retain(|_, until| *until > now);
                map.clone()
            };
            // Enough entries that the ones waiting out a retry cannot hide the others.
            let entries = store.scan(Tree::Outbox, b"", None, max + waiting.len())?;
            let mut emails = Vec::with_capacity(entries.len().min(max));
            for (key, value) in entries {
                match decode_record::<OutboxEmail>(Tree::Outbox, &key, &value) {
                    Ok(email) if waiting.contains_key(&email.id) => {}
                    Ok(email) => {
                        let attempt = email.attempts.saturating_add(1);
                        // One process: an attempt that ended unrecorded is known only
                        // to the mailer that made it (its mark failed), not after a crash.
                        emails.push(ClaimedEmail {
                            email,
                            epoch: 0,
                            attempt,
                            unresolved_before: false,
                        });
                    }
                    // Reported, left in place for an operator; never silently dropped.
                    Err(e) => tracing::error!(error = %e, "Unreadable outbox entry."),
                }
                if emails.len() == max {
                    break;
                }
            }
            Ok(emails)
        });
        Box::pin(async move { joined(read.await) })
    }

    fn mark_sent(&self, sent: Vec<ClaimedEmail>) -> StoreFuture<()> {
        let deletes = sent
            .into_iter()
            .map(|c| Op::Delete {
                tree: Tree::Outbox,
                key: c.email.id.into_bytes(),
            })
            .collect();
        Box::pin(ready(self.store.write(deletes)))
    }

    fn failed(&self, claimed: ClaimedEmail, reason: &str) -> StoreFuture<AfterFailure> {
        let verdict = after_failure(claimed.attempt);
        let mut email = claimed.email;
        email.attempts = claimed.attempt;
        let key = email.id.clone().into_bytes();
        let written = match verdict {
            AfterFailure::RetryAfter(wait) => {
                self.not_before
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(email.id.clone(), Instant::now() + wait);
                self.store.write(vec![Op::put(Tree::Outbox, key, &email)])
            }
            AfterFailure::Park => {
                let parked = ParkedEntry {
                    email,
                    reason: reason.to_owned(),
                    parked_at: Utc::now(),
                };
                self.store
                    .write(vec![
                        Op::Delete {
                            tree: Tree::Outbox,
                            key: key.clone(),
                        },
                        Op::put(Tree::ParkedEmails, key, &parked),
                    ])
                    .and_then(|()| self.count_parked())
            }
        };
        Box::pin(ready(written.map(|()| verdict)))
    }

    fn counts(&self) -> EmailCounts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counted as emails are parked; a refresh recounts (cheap: the tree is tiny).
    fn refresh_counts(&self) -> StoreFuture<()> {
        Box::pin(ready(self.count_parked()))
    }
}

impl std::fmt::Debug for SledOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledOutbox").finish()
    }
}
