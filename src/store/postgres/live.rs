//! The pool's live state: whether this node has a writable database *now*, as its own
//! connections show it, and the rule that pooled connections to a server that went away or
//! stopped taking writes are dropped instead of reused.
//!
//! Every pooled connection is made by [`WatchedConnect`], which drives the connection
//! itself instead of leaving it to deadpool, so it sees what the server says outside any
//! statement:
//!
//! - a connection that ends while its client still uses it (the server died, restarted,
//!   or ended the session) turns the state red at once;
//! - a server that reports `default_transaction_read_only = on` or `in_hot_standby = on`
//!   (PostgreSQL 14 and later report both as they change, with the next reply) is no place
//!   for writes: the connection is closed at once and the state turns red. A connection
//!   made to such a server is closed before its first use.
//!
//! Red also marks every connection made before that moment for discarding: deadpool's
//! `pre_recycle` hook refuses them, so the next statement runs on a fresh connection,
//! which (with a multi-host URL and `target_session_attrs=read-write`) reaches whichever
//! server takes writes now. A connection made successfully to a writable server turns the
//! state green: after an outage every old connection is gone, so the first good statement
//! is the first one on a new connection. While red, `/health` also pings (at most every
//! [`REVIVE_EVERY`]), so a node the load balancer took out of rotation sees the database
//! come back without a request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use deadpool_postgres::{Connect, HookError};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, Socket};

/// Longest pause between two pings while the state is red (asked by `/health`).
pub(super) const REVIVE_EVERY: Duration = Duration::from_millis(200);

/// Whether the database takes this node's writes now.
#[derive(Debug)]
pub(super) struct Live {
    ok: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Why the state is red (kept for `/health` while red).
    cause: Option<String>,
    /// Connections made before this instant are not reused.
    discard_before: Option<Instant>,
    /// When `/health` last pinged to see the database come back.
    last_revive: Option<Instant>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            ok: AtomicBool::new(true),
            inner: Mutex::new(Inner {
                cause: None,
                discard_before: None,
                last_revive: None,
            }),
        }
    }
}

impl Live {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database failed this node: red now, and no connection made so far is reused.
    pub(super) fn failed(&self, cause: String) {
        let mut inner = self.inner();
        if self.ok.swap(false, Ordering::AcqRel) {
            tracing::warn!(cause = %cause, "The database is not usable: health is red.");
        }
        inner.cause = Some(cause);
        inner.discard_before = Some(Instant::now());
    }

    /// A good answer from a writable server: green.
    pub(super) fn answered(&self) {
        if !self.ok.load(Ordering::Acquire) {
            let mut inner = self.inner();
            if !self.ok.swap(true, Ordering::AcqRel) {
                tracing::info!("The database answers again: health is green.");
            }
            inner.cause = None;
        }
    }

    /// `Ok` while green, else why not.
    pub(super) fn state(&self) -> Result<(), String> {
        if self.ok.load(Ordering::Acquire) {
            return Ok(());
        }
        match &self.inner().cause {
            Some(cause) => Err(cause.clone()),
            // Turned green between the two reads.
            None => Ok(()),
        }
    }

    /// Whether a ping is due to see a red database come back (and, if so, takes the turn).
    pub(super) fn revive_due(&self) -> bool {
        if self.ok.load(Ordering::Acquire) {
            return false;
        }
        let mut inner = self.inner();
        let due = inner
            .last_revive
            .is_none_or(|at| at.elapsed() >= REVIVE_EVERY);
        if due {
            inner.last_revive = Some(Instant::now());
        }
        due
    }

    /// Whether a connection made at `created` predates the last failure.
    fn stale(&self, created: Instant) -> bool {
        self.inner()
            .discard_before
            .is_some_and(|before| created <= before)
    }
}

/// What the server reports that makes it no place for writes, if anything.
fn read_only(connection: &Connection<Socket, NoTlsStream>) -> Option<&'static str> {
    if connection.parameter("in_hot_standby") == Some("on") {
        Some("the server is a standby (in_hot_standby = on)")
    } else if connection.parameter("default_transaction_read_only") == Some("on") {
        Some("the server does not allow writes (default_transaction_read_only = on)")
    } else {
        None
    }
}

/// Makes the pool's connections (see the module doc).
pub(super) struct WatchedConnect {
    pub(super) live: Arc<Live>,
}

type Connected = Result<(Client, JoinHandle<()>), tokio_postgres::Error>;

impl Connect for WatchedConnect {
    fn connect(&self, config: &Config) -> Pin<Box<dyn Future<Output = Connected> + Send + '_>> {
        let (config, live) = (config.clone(), self.live.clone());
        Box::pin(async move {
            let (client, mut connection) = match config.connect(tokio_postgres::NoTls).await {
                Ok(made) => made,
                Err(e) => {
                    live.failed(format!("cannot connect: {}", super::describe(&e)));
                    return Err(e);
                }
            };
            let refused = read_only(&connection);
            match refused {
                Some(why) => live.failed(why.to_owned()),
                None => live.answered(),
            }
            let task = tokio::spawn(async move {
                if refused.is_some() {
                    // Dropping the connection closes it: the client's first statement fails
                    // at once, and the pool discards it.
                    return;
                }
                let ended = std::future::poll_fn(|cx| loop {
                    match connection.poll_message(cx) {
                        // Notices: nothing to do but keep the connection going.
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(e.to_string())),
                        // The client was dropped: the pool let the connection go.
                        Poll::Ready(None) => return Poll::Ready(None),
                        Poll::Pending => {
                            return match read_only(&connection) {
                                Some(why) => Poll::Ready(Some(why.to_owned())),
                                None => Poll::Pending,
                            }
                        }
                    }
                })
                .await;
                if let Some(cause) = ended {
                    live.failed(format!("lost a connection: {cause}"));
                }
            });
            Ok((client, task))
        })
    }
}

/// deadpool's `pre_recycle` check: a connection made before the last failure is not
/// handed out again (the pool makes a new one).
pub(super) fn recycle_check(live: &Live, created: Instant) -> Result<(), HookError> {
    if live.stale(created) {
        Err(HookError::message(
            "the connection predates a database failure",
        ))
    } else {
        Ok(())
    }
}
