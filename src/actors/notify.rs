//! `Mailer`: drains the durable outbox of customer emails (booking confirmed, failed,
//! cancelled) to a [`MailTransport`]. Emails enter the outbox in the same store write as
//! the saga transition that causes them, so none is lost; the mailer deletes an entry only
//! after the transport accepted it, so delivery is **at least once**: a crash between the
//! two sends that email again. Every attempt at one email carries the same `Message-ID`
//! (from its outbox id), so a receiving mail system drops the repeat, and a send after an
//! attempt whose outcome was never recorded counts in `wayfare_emails_repeated_total`.
//!
//! Retries are bounded: an email the transport refuses waits longer after each failed
//! attempt and is parked with its last error after `domain::outbox::MAX_DELIVERY_ATTEMPTS`
//! (shown in `/health`, metrics and the console), never retried forever.
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
use crate::domain::outbox::{AfterFailure, OutboxEmail};
use crate::store::outbox::ClaimedEmail;
use crate::store::Outbox;

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
            let line = EmailLine {
                message_id: email.message_id(),
                email,
            };
            serde_json::to_writer(&mut lines, &line).map_err(|e| e.to_string())?;
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

/// One line of the file: the email with its `Message-ID`, the header a mail system drops
/// a repeat by.
#[derive(serde::Serialize)]
struct EmailLine<'a> {
    message_id: String,
    #[serde(flatten)]
    email: &'a OutboxEmail,
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
    /// Transport failures (the email stays queued, or is parked after its last attempt).
    pub failed: AtomicU64,
    /// Emails parked by this process after their last failed attempt.
    pub parked: AtomicU64,
    /// Emails sent again after an attempt whose outcome was never recorded.
    pub repeated: AtomicU64,
    /// Ids of emails the transport took whose "sent" mark failed: sending one again is a
    /// repeat. Kept here, beside the counters, so it outlives a restart of the mailer.
    unmarked: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl MailerStats {
    /// Counts the emails of `sent` that are repeats: the store says an earlier claim ended
    /// unrecorded, or this process failed to mark them sent before.
    fn count_repeats(&self, sent: &[ClaimedEmail]) {
        let mut unmarked = self.unmarked.lock().unwrap_or_else(|p| p.into_inner());
        let repeats = sent
            .iter()
            .filter(|c| unmarked.remove(&c.email.id) | c.unresolved_before)
            .inspect(|c| tracing::warn!(email = %c.email.id, message_id = %c.email.message_id(), "Email sent again: an earlier attempt's outcome was never recorded."))
            .count();
        self.repeated.fetch_add(repeats as u64, Ordering::Relaxed);
    }

    /// Remembers that `sent` went out but are still in the outbox.
    fn unmarked(&self, sent: &[ClaimedEmail]) {
        let mut unmarked = self.unmarked.lock().unwrap_or_else(|p| p.into_inner());
        unmarked.extend(sent.iter().map(|c| c.email.id.clone()));
    }
}

/// How often the outbox is polled when nobody wakes the mailer.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Emails sent per drain pass.
const BATCH: usize = 100;
/// How often the parked-email counts are refreshed from the outbox.
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// The mailer actor.
pub struct Mailer {
    outbox: Arc<dyn Outbox>,
    transport: Arc<dyn MailTransport>,
    stats: Arc<MailerStats>,
    draining: bool,
    /// A wake-up came during a pass: run another when it ends.
    again: bool,
    panics: PanicFaults,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").finish()
    }
}

impl Mailer {
    /// A mailer draining `outbox`.
    pub fn new(
        outbox: Arc<dyn Outbox>,
        transport: Arc<dyn MailTransport>,
        stats: Arc<MailerStats>,
    ) -> Self {
        Mailer {
            outbox,
            transport,
            stats,
            draining: false,
            again: false,
            panics: PanicFaults::default(),
        }
    }

    /// Makes handlers panic now and then (`[faults]`), to exercise restarts.
    pub(crate) fn with_panic_faults(mut self, panics: PanicFaults) -> Self {
        self.panics = panics;
        self
    }

    /// One pass, spawned rather than awaited under `ctx.wait`, so the mailbox stays open
    /// meanwhile: a saga's `OutboxChanged` is answered at once, and all the wake-ups that
    /// arrive during a pass make one more pass, so confirmed sagas never hold their
    /// `bookings.max_in_flight` slots waiting behind the mailer's disk syncs.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            self.again = true;
            return;
        }
        self.draining = true;
        self.again = false;
        let pass = drain_pass(
            self.outbox.clone(),
            self.transport.clone(),
            self.stats.clone(),
        );
        ctx.spawn(pass.into_actor(self).map(|full, act, ctx| {
            act.draining = false;
            if act.again || full {
                act.drain(ctx);
            }
        }));
    }
}

/// One pass over the outbox: claims up to a batch of pending emails, sends them on a
/// blocking thread (file and disk I/O never run on the arbiter), and marks those the
/// transport took as sent. True when the batch was full and all went (another pass
/// follows at once).
async fn drain_pass(
    outbox: Arc<dyn Outbox>,
    transport: Arc<dyn MailTransport>,
    stats: Arc<MailerStats>,
) -> bool {
    let claimed = match outbox.claim(BATCH).await {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::error!(error = %e, "Cannot read the outbox.");
            return false;
        }
    };
    if claimed.is_empty() {
        return false;
    }
    let full = claimed.len() == BATCH;
    let emails: Vec<OutboxEmail> = claimed.iter().map(|c| c.email.clone()).collect();
    let send = tokio::task::spawn_blocking(move || transport.send_all(&emails));
    let (sent, failure) = match send.await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "Email transport panicked.");
            return false;
        }
    };
    let all = sent == claimed.len();
    let mut claimed = claimed;
    let unsent = claimed.split_off(sent.min(claimed.len()));
    if let (Some(e), Some(first)) = (failure, unsent.into_iter().next()) {
        // The email the transport refused counts an attempt; any after it in the batch
        // were not tried and stay as they are.
        stats.failed.fetch_add(1, Ordering::Relaxed);
        let (id, attempt) = (first.email.id.clone(), first.attempt);
        match outbox.failed(first, &e).await {
            Ok(AfterFailure::RetryAfter(wait)) => {
                tracing::warn!(error = %e, email = %id, attempt, retry_in_ms = wait.as_millis() as u64, "Email transport failed; will retry.");
            }
            Ok(AfterFailure::Park) => {
                stats.parked.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, email = %id, attempt, "Email transport kept failing; email parked for an operator.");
            }
            Err(store) => {
                tracing::error!(error = %store, email = %id, "Cannot count a failed email attempt; it will be retried.");
            }
        }
    }
    if sent == 0 {
        return false;
    }
    stats.sent.fetch_add(sent as u64, Ordering::Relaxed);
    stats.count_repeats(&claimed);
    let done = claimed.clone();
    if let Err(e) = outbox.mark_sent(done).await {
        stats.unmarked(&claimed);
        tracing::error!(error = %e, emails = sent, "Sent emails stay in the outbox; they will be sent again.");
    }
    full && all
}

impl Actor for Mailer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.drain(ctx);
        ctx.run_interval(POLL_EVERY, |act, ctx| act.drain(ctx));
        ctx.run_interval(COUNT_EVERY, |act, ctx| {
            let refresh = act.outbox.refresh_counts();
            ctx.spawn(
                async move {
                    if let Err(e) = refresh.await {
                        tracing::warn!(error = %e, "Cannot count parked emails.");
                    }
                }
                .into_actor(act),
            );
        });
    }
}

/// New emails are in the outbox: drain now rather than at the next poll.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct OutboxChanged {
    /// The sender's span and when it sent this.
    pub origin: crate::telemetry::Origin,
}

/// Starts a drain pass (one at a time).
impl Handler<OutboxChanged> for Mailer {
    type Result = ();
    fn handle(&mut self, msg: OutboxChanged, ctx: &mut Context<Self>) {
        let span = msg.origin.handling("mailer outbox_changed");
        let _enter = span.enter();
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
        // Each line carries its email's Message-ID, the same for every attempt.
        for (line, email) in std::fs::read_to_string(&path).unwrap().lines().zip(&lines) {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(line["message_id"], email.message_id());
        }
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

    /// An outbox of pending emails whose first `fail_marks` marks fail, as a store
    /// failing mid-restart does.
    struct Marks {
        pending: std::sync::Mutex<Vec<OutboxEmail>>,
        fail_marks: std::sync::atomic::AtomicUsize,
        unresolved: bool,
    }

    impl Outbox for Marks {
        fn claim(&self, max: usize) -> crate::store::StoreFuture<Vec<ClaimedEmail>> {
            let pending = self.pending.lock().unwrap().clone();
            let unresolved = self.unresolved;
            Box::pin(async move {
                Ok(pending
                    .into_iter()
                    .take(max)
                    .map(|email| ClaimedEmail {
                        email,
                        epoch: 0,
                        attempt: 1,
                        unresolved_before: unresolved,
                    })
                    .collect())
            })
        }
        fn mark_sent(&self, sent: Vec<ClaimedEmail>) -> crate::store::StoreFuture<()> {
            let fail = self
                .fail_marks
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if !fail {
                self.pending
                    .lock()
                    .unwrap()
                    .retain(|e| sent.iter().all(|c| c.email.id != e.id));
            }
            Box::pin(async move {
                match fail {
                    true => Err(crate::store::StoreError::Io("disk gone".into())),
                    false => Ok(()),
                }
            })
        }
        fn failed(&self, _: ClaimedEmail, _: &str) -> crate::store::StoreFuture<AfterFailure> {
            unreachable!("the transport never fails here")
        }
        fn counts(&self) -> crate::domain::outbox::EmailCounts {
            Default::default()
        }
        fn refresh_counts(&self) -> crate::store::StoreFuture<()> {
            Box::pin(async { Ok(()) })
        }
    }

    async fn pass(outbox: &Arc<Marks>, transport: &Arc<Flaky>, stats: &Arc<MailerStats>) {
        drain_pass(outbox.clone(), transport.clone(), stats.clone()).await;
    }

    #[tokio::test]
    async fn an_email_sent_again_after_a_lost_mark_is_counted_as_a_repeat() {
        let transport = Arc::new(Flaky {
            fail_at: usize::MAX,
            sent: Default::default(),
        });
        let stats = Arc::new(MailerStats::default());
        let outbox = Arc::new(Marks {
            pending: std::sync::Mutex::new(vec![email(1), email(2)]),
            fail_marks: 1.into(),
            unresolved: false,
        });
        pass(&outbox, &transport, &stats).await;
        assert_eq!(stats.repeated.load(Ordering::Relaxed), 0, "first sends");
        pass(&outbox, &transport, &stats).await;
        assert_eq!(transport.sent.lock().unwrap().len(), 4, "both went twice");
        assert_eq!(stats.repeated.load(Ordering::Relaxed), 2);
        assert!(outbox.pending.lock().unwrap().is_empty());
        // Marked now: nothing more is sent, nothing more counted.
        pass(&outbox, &transport, &stats).await;
        assert_eq!(stats.repeated.load(Ordering::Relaxed), 2);

        // Another node's claim that ran out unrecorded: the store says so.
        let stats = Arc::new(MailerStats::default());
        let outbox = Arc::new(Marks {
            pending: std::sync::Mutex::new(vec![email(3)]),
            fail_marks: 0.into(),
            unresolved: true,
        });
        pass(&outbox, &transport, &stats).await;
        assert_eq!(stats.repeated.load(Ordering::Relaxed), 1);
    }
}
