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

impl MailTransport for FileTransport {
    fn send(&self, email: &OutboxEmail) -> Result<(), String> {
        let line = serde_json::to_string(email).map_err(|e| e.to_string())?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        writeln!(file, "{line}").map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())
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
    panics: PanicFaults,
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
            panics: PanicFaults::default(),
        }
    }

    /// Makes handlers panic now and then (`[faults]`), to exercise restarts.
    pub(crate) fn with_panic_faults(mut self, panics: PanicFaults) -> Self {
        self.panics = panics;
        self
    }

    /// One pass on a blocking thread (file and disk I/O never run on the arbiter).
    fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        self.draining = true;
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
            for (key, value) in entries {
                let email: OutboxEmail = match decode_record(Tree::Outbox, &key, &value) {
                    Ok(email) => email,
                    Err(e) => {
                        // Reported, left in place for an operator; never silently dropped.
                        tracing::error!(error = %e, "Unreadable outbox entry.");
                        continue;
                    }
                };
                match transport.send(&email) {
                    Ok(()) => {
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                        let delete = crate::store::Op::Delete {
                            tree: Tree::Outbox,
                            key,
                        };
                        if let Err(e) = store.write(vec![delete]) {
                            tracing::error!(error = %e, email = %email.id, "Sent email stays in the outbox; it will be sent again.");
                        }
                    }
                    Err(e) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, email = %email.id, "Email transport failed; will retry.");
                        break;
                    }
                }
            }
        });
        ctx.wait(pass.into_actor(self).map(|_, act, _| act.draining = false));
    }
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
