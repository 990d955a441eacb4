//! Stable, typed handles to supervised actors.
//!
//! A raw actix `Addr` of a dead actor stays dead forever, so callers never hold one. They
//! hold an [`ActorHandle`], which follows the child across restarts and turns every way a
//! request can go wrong into a typed [`AskError`]:
//!
//! - admission is checked first: more than `capacity` requests queued or in flight gives
//!   `Overloaded` at once, so memory stays bounded under overload;
//! - while the child is restarting, a request waits for the new instance (within its
//!   deadline) instead of failing;
//! - one deadline covers waiting for a restart and the round trip itself;
//! - a request that was queued or in flight when the actor crashed gets `Crashed` as soon as
//!   the dead mailbox is dropped. Queued messages are never replayed into the new instance:
//!   replay could repeat a side effect, and callers hold idempotency keys to retry safely.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message};
use arc_swap::ArcSwapOption;
use tokio::sync::Notify;

/// Why a request to a supervised actor got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The actor crashed (or was stopped) with the request queued or in flight.
    #[error("actor {actor} crashed before answering")]
    Crashed {
        /// Name of the child.
        actor: Arc<str>,
    },
    /// No answer within the deadline (restart wait included).
    #[error("actor {actor} did not answer within {after:?}")]
    Timeout {
        /// Name of the child.
        actor: Arc<str>,
        /// The deadline that expired.
        after: Duration,
    },
    /// The mailbox is full; retry later.
    #[error("actor {actor} is overloaded")]
    Overloaded {
        /// Name of the child.
        actor: Arc<str>,
    },
    /// The child is stopped for good: shut down, or its supervisor gave up on it.
    #[error("actor {actor} is unavailable")]
    Unavailable {
        /// Name of the child.
        actor: Arc<str>,
    },
}

/// Lifecycle of the instance behind a handle, as seen by callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Liveness {
    /// Not started yet, or between a failure and its restart.
    Restarting = 0,
    /// An instance is accepting messages.
    Running = 1,
    /// Stopped for good.
    Stopped = 2,
}

/// A handle that stays valid across restarts of the child it names.
pub struct ActorHandle<A: Actor> {
    inner: Arc<Slot<A>>,
}

impl<A: Actor> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        ActorHandle {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Actor> std::fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHandle")
            .field("name", &self.inner.name)
            .field("liveness", &self.liveness())
            .field("depth", &self.depth())
            .finish()
    }
}

struct Slot<A: Actor> {
    name: Arc<str>,
    addr: ArcSwapOption<Addr<A>>,
    liveness: AtomicU8,
    changed: Notify,
    /// Requests admitted and not yet answered: the effective mailbox depth.
    depth: AtomicUsize,
    capacity: usize,
    deadline: Duration,
}

/// Releases an admission slot however the request ends (answer, error or cancellation).
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<A: Actor> ActorHandle<A> {
    /// A handle with no instance yet; the supervisor installs one when it starts the child.
    pub(crate) fn new(name: &str, capacity: usize, deadline: Duration) -> Self {
        ActorHandle {
            inner: Arc::new(Slot {
                name: Arc::from(name),
                addr: ArcSwapOption::empty(),
                liveness: AtomicU8::new(Liveness::Restarting as u8),
                changed: Notify::new(),
                depth: AtomicUsize::new(0),
                capacity: capacity.max(1),
                deadline,
            }),
        }
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Requests admitted and not yet answered.
    pub fn depth(&self) -> usize {
        self.inner.depth.load(Ordering::Acquire)
    }

    /// The admission bound.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// The default deadline of [`ask`](Self::ask).
    pub fn deadline(&self) -> Duration {
        self.inner.deadline
    }

    /// Whether an instance is running.
    pub fn liveness(&self) -> Liveness {
        match self.inner.liveness.load(Ordering::Acquire) {
            1 => Liveness::Running,
            2 => Liveness::Stopped,
            _ => Liveness::Restarting,
        }
    }

    pub(crate) fn install(&self, addr: Addr<A>) {
        self.inner.addr.store(Some(Arc::new(addr)));
        self.set_liveness(Liveness::Running);
    }

    pub(crate) fn clear(&self, liveness: Liveness) {
        self.inner.addr.store(None);
        self.set_liveness(liveness);
    }

    fn set_liveness(&self, liveness: Liveness) {
        self.inner.liveness.store(liveness as u8, Ordering::Release);
        self.inner.changed.notify_waiters();
    }

    /// Sends `msg` and waits for the reply within the handle's deadline.
    pub async fn ask<M>(&self, msg: M) -> Result<M::Result, AskError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.ask_within(msg, self.inner.deadline).await
    }

    /// Sends `msg` and waits for the reply within `deadline`.
    pub async fn ask_within<M>(&self, msg: M, deadline: Duration) -> Result<M::Result, AskError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let slot = &*self.inner;
        if slot.depth.fetch_add(1, Ordering::AcqRel) >= slot.capacity {
            slot.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(AskError::Overloaded {
                actor: slot.name.clone(),
            });
        }
        let _admitted = Admitted(&slot.depth);
        match tokio::time::timeout(deadline, self.deliver(msg)).await {
            Ok(result) => result,
            Err(_) => Err(AskError::Timeout {
                actor: slot.name.clone(),
                after: deadline,
            }),
        }
    }

    async fn deliver<M>(&self, msg: M) -> Result<M::Result, AskError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let slot = &*self.inner;
        let request = loop {
            // Register interest before looking, so a restart between the look and the
            // wait cannot be missed.
            let changed = slot.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(addr) = &*slot.addr.load() {
                break addr.send(msg);
            }
            if self.liveness() == Liveness::Stopped {
                return Err(AskError::Unavailable {
                    actor: slot.name.clone(),
                });
            }
            changed.await;
        };
        request.await.map_err(|_| AskError::Crashed {
            actor: slot.name.clone(),
        })
    }
}
