//! `Mailer`: drains the durable outbox of customer emails (booking confirmed, failed,
//! cancelled) to a [`MailTransport`]. Emails enter the outbox in the same store write as
//! the saga transition that causes them, so none is lost; the mailer deletes an entry only
//! after the transport accepted it, so delivery is **at least once**: a crash between the
//! two sends that email again (counted in `wayfare_emails_sent_total`; the email id is in
//! every line, so duplicates are recognisable).
//!
//! State owned: nothing but its transport; the outbox is the queue. Woken by a timer and by
//! `OutboxChanged` from sagas.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::PanicFaults;
use crate::domain::outbox::OutboxEmail;
use crate::store::{decode_record, Store, Tree};

/// How emails leave wayfare.
pub trait MailTransport: Send + Sync + 'static {
    /// Sends one email; an error keeps it in the outbox for a later try.
    fn send(&self, email: &OutboxEmail) -> Result<(), String>;

    /// Sends `emails` in order and says how many went before the first failure (with
    /// it), so the mailer removes exactly those from the outbox. One at a time unless a
    /// transport can do better (the file transport syncs the disk once per batch).
    fn send_all(&self, emails: &[OutboxEmail]) -> (usize, Option<String>) {
        for (i, email) in emails.iter().enumerate() {
            if let Err(e) = self.send(email) {
                return (i, Some(e));
            }
        }
        (emails.len(), None)
    }
}

/// The default transport: one JSON line per email appended to a file (`outbox.log` in the
/// data directory).
#[derive(Debug, Clone)]
pub struct FileTransport {
    path: PathBuf,
}

impl FileTransport {
    /// Appends to `path`.
    pub fn new(path: PathBuf) -> Self {
        FileTransport { path }
    }
}

impl FileTransport {
    /// Appends one line per email with a single write, then one `fdatasync`: a batch
    /// costs one disk sync, not one per email. Nothing counts as sent before the sync.
    fn append(&self, emails: &[OutboxEmail]) -> Result<(), String> {
        let mut lines = Vec::new();
        for email in emails {
            serde_json::to_writer(&mut lines, email).map_err(|e| e.to_string())?;
            lines.push(b'\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        file.write_all(&lines).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())
    }
}

impl MailTransport for FileTransport {
    fn send(&self, email: &OutboxEmail) -> Result<(), String> {
        self.append(std::slice::from_ref(email))
    }

    /// All or none: a failed append may have written part of the batch, which is then
    /// sent again (delivery is at least once; each line carries its email's id).
    fn send_all(&self, emails: &[OutboxEmail]) -> (usize, Option<String>) {
        match self.append(emails) {
            Ok(()) => (emails.len(), None),
            Err(e) => (0, Some(e)),
        }
    }
}

/// Emails handed to the transport, for metrics.
#[derive(Debug, Default)]
pub struct MailerStats {
    /// Accepted by the transport.
    pub sent: AtomicU64,
    /// Transport failures (the email stays queued).
    pub failed: AtomicU64,
}

/// How often the outbox is polled when nobody wakes the mailer.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Emails sent per drain pass.
const BATCH: usize = 100;

/// The mailer actor.
pub struct Mailer {
    store: Arc<dyn Store>,
    transport: Arc<dyn MailTransport>,
    stats: Arc<MailerStats>,
    draining: bool,
    /// A wake-up came during a pass: run another when it ends.
    again: bool,
    panics: PanicFaults,
    /// In a cluster the outbox is the database's: emails are claimed under a lease, so
    /// one node sends each (see [`Mailer::with_cluster`]).
    #[cfg(feature = "postgres")]
    cluster: Option<Arc<super::cluster::Cluster>>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").finish()
    }
}

impl Mailer {
    /// A mailer over the outbox in `store`.
    pub fn new(
        store: Arc<dyn Store>,
        transport: Arc<dyn MailTransport>,
        stats: Arc<MailerStats>,
    ) -> Self {
        Mailer {
            store,
            transport,
            stats,
            draining: false,
            again: false,
            panics: PanicFaults::default(),
            #[cfg(feature = "postgres")]
            cluster: None,
        }
    }

    /// Drains the shared outbox of a cluster instead of `store`'s.
    #[cfg(feature = "postgres")]
    pub(crate) fn with_cluster(mut self, cluster: Option<Arc<super::cluster::Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Makes handlers panic now and then (`[faults]`), to exercise restarts.
    pub(crate) fn with_panic_faults(mut self, panics: PanicFaults) -> Self {
        self.panics = panics;
        self
    }

    /// One pass on a blocking thread (file and disk I/O never run on the arbiter). The
    /// mailbox stays open meanwhile (the pass is spawned, not awaited under `ctx.wait`):
    /// a saga's `OutboxChanged` is answered at once, and all the wake-ups that arrive
    /// during a pass make one more pass. Before, each wake-up waited out a whole pass
    /// (with its disk sync) behind the others, and confirmed sagas held their
    /// `bookings.max_in_flight` slots in that queue.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            self.again = true;
            return;
        }
        self.draining = true;
        self.again = false;
        #[cfg(feature = "postgres")]
        if let Some(cluster) = self.cluster.clone() {
            let pass = claimed_pass(cluster, self.transport.clone(), self.stats.clone());
            ctx.spawn(pass.into_actor(self).map(|full, act, ctx| {
                act.draining = false;
                if act.again || full {
                    act.drain(ctx);
                }
            }));
            return;
        }
        let (store, transport, stats) = (
            self.store.clone(),
            self.transport.clone(),
            self.stats.clone(),
        );
        let pass = tokio::task::spawn_blocking(move || {
            let entries = match store.scan(Tree::Outbox, b"", None, BATCH) {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot read the outbox.");
                    return;
                }
            };
            let mut keys = Vec::new();
            let mut emails = Vec::new();
            for (key, value) in entries {
                match decode_record::<OutboxEmail>(Tree::Outbox, &key, &value) {
                    Ok(email) => {
                        keys.push(key);
                        emails.push(email);
                    }
                    // Reported, left in place for an operator; never silently dropped.
                    Err(e) => tracing::error!(error = %e, "Unreadable outbox entry."),
                }
            }
            if emails.is_empty() {
                return;
            }
            let (sent, failure) = transport.send_all(&emails);
            if let Some(e) = failure {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                let id = emails
                    .get(sent)
                    .map(|m| m.id.to_string())
                    .unwrap_or_default();
                tracing::warn!(error = %e, email = %id, "Email transport failed; will retry.");
            }
            if sent == 0 {
                return;
            }
            stats.sent.fetch_add(sent as u64, Ordering::Relaxed);
            let deletes = keys
                .into_iter()
                .take(sent)
                .map(|key| crate::store::Op::Delete {
                    tree: Tree::Outbox,
                    key,
                })
                .collect();
            if let Err(e) = store.write(deletes) {
                tracing::error!(error = %e, emails = sent, "Sent emails stay in the outbox; they will be sent again.");
            }
        });
        ctx.spawn(pass.into_actor(self).map(|_, act, ctx| {
            act.draining = false;
            if act.again {
                act.drain(ctx);
            }
        }));
    }
}

/// How long a node may take to send the emails it claimed before another node may.
#[cfg(feature = "postgres")]
const EMAIL_LEASE: Duration = Duration::from_secs(30);

/// One pass over a cluster's outbox: claims up to a batch of pending emails nobody holds
/// (`FOR UPDATE SKIP LOCKED`), sends them, and marks those sent under their lease. An email
/// whose lease ran out meanwhile may be sent again by another node (at least once, as on
/// one node). True when the batch was full (another pass follows at once).
#[cfg(feature = "postgres")]
async fn claimed_pass(
    cluster: Arc<super::cluster::Cluster>,
    transport: Arc<dyn MailTransport>,
    stats: Arc<MailerStats>,
) -> bool {
    let claimed = match cluster
        .db
        .claim_emails(&cluster.node, BATCH as i64, EMAIL_LEASE)
        .await
    {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::error!(error = %e, "Cannot claim emails from the outbox.");
            return false;
        }
    };
    let full = claimed.len() == BATCH;
    let mut leases = Vec::new();
    let mut emails = Vec::new();
    for (lease, bytes) in claimed {
        match crate::store::codec::decode::<OutboxEmail>(&bytes) {
            Ok(email) => {
                leases.push(lease);
                emails.push(email);
            }
            // Left pending for an operator; never silently dropped.
            Err(e) => tracing::error!(email = %lease.id, error = %e, "Unreadable outbox entry."),
        }
    }
    if emails.is_empty() {
        return full;
    }
    let send = tokio::task::spawn_blocking(move || {
        let result = transport.send_all(&emails);
        (result, emails)
    });
    let ((sent, failure), emails) = match send.await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "Email transport panicked.");
            return false;
        }
    };
    if let Some(e) = failure {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        let id = emails.get(sent).map(|m| m.id.as_str()).unwrap_or_default();
        tracing::warn!(error = %e, email = %id, "Email transport failed; will retry.");
    }
    stats.sent.fetch_add(sent as u64, Ordering::Relaxed);
    for lease in leases.iter().take(sent) {
        if let Err(e) = cluster.db.mark_email_sent(lease).await {
            tracing::warn!(email = %lease.id, error = %e, "Sent email not marked sent; it may be sent again.");
        }
    }
    full && sent == leases.len()
}

impl Actor for Mailer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.drain(ctx);
        ctx.run_interval(POLL_EVERY, |act, ctx| act.drain(ctx));
    }
}

/// New emails are in the outbox: drain now rather than at the next poll.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct OutboxChanged;

/// Starts a drain pass (one at a time).
impl Handler<OutboxChanged> for Mailer {
    type Result = ();
    fn handle(&mut self, _: OutboxChanged, ctx: &mut Context<Self>) {
        self.panics.maybe_panic(&"mailer");
        self.drain(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::outbox::EmailKind;

    fn email(n: usize) -> OutboxEmail {
        OutboxEmail {
            id: format!("saga-{n}:email:confirmed"),
            booking_id: format!("booking-{n}"),
            account_id: "account".into(),
            kind: EmailKind::Confirmed,
            to: "ada@example.com".into(),
            subject: "Booked".into(),
            body: "See you".into(),
            created_at: chrono::Utc::now(),
            attempts: 0,
        }
    }

    /// Fails from the `fail_at`th email on.
    struct Flaky {
        fail_at: usize,
        sent: std::sync::Mutex<Vec<String>>,
    }

    impl MailTransport for Flaky {
        fn send(&self, email: &OutboxEmail) -> Result<(), String> {
            let mut sent = self.sent.lock().unwrap();
            if sent.len() >= self.fail_at {
                return Err("smtp down".into());
            }
            sent.push(email.id.clone());
            Ok(())
        }
    }

    #[test]
    fn a_batch_is_one_append_of_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.log");
        let transport = FileTransport::new(path.clone());
        let batch: Vec<OutboxEmail> = (0..5).map(email).collect();
        assert_eq!(transport.send_all(&batch), (5, None));
        transport.send(&email(5)).unwrap();
        let lines: Vec<OutboxEmail> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ids: Vec<&str> = lines.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), 6);
        assert_eq!(ids[0], "saga-0:email:confirmed");
        assert_eq!(ids[5], "saga-5:email:confirmed");
        // An append that cannot happen sends none of the batch.
        let nowhere = FileTransport::new(dir.path().join("missing-dir").join("outbox.log"));
        let (sent, failure) = nowhere.send_all(&batch);
        assert_eq!(sent, 0);
        assert!(failure.unwrap().contains("cannot open"));
    }

    #[test]
    fn the_default_batch_stops_at_the_first_failure_and_says_where() {
        let flaky = Flaky {
            fail_at: 3,
            sent: Default::default(),
        };
        let batch: Vec<OutboxEmail> = (0..5).map(email).collect();
        let (sent, failure) = flaky.send_all(&batch);
        assert_eq!(sent, 3);
        assert_eq!(failure.as_deref(), Some("smtp down"));
        assert_eq!(flaky.sent.lock().unwrap().len(), 3);
    }
}
