//! Children a supervisor can own: actix actors (built fresh by a factory on every start)
//! and nested supervisors.
//!
//! actix 0.13 does not restart an actor whose handler panics (its mailbox just closes), so
//! each actor instance is run here by hand: a new `Context`, its address handed to the
//! stable [`ActorHandle`], and its context future spawned on the child's arbiter. The
//! task's `JoinHandle` tells how it ended: `JoinError::is_panic()` is a crash.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use actix_rt::ArbiterHandle;
use futures_util::FutureExt;
use tokio::sync::oneshot;

use super::handle::{ActorHandle, Liveness};
use super::policy::{Exit, Restart};
use super::tree::SupervisorSnapshot;

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A started child instance, as its supervisor sees it.
pub(crate) struct Running {
    /// Resolves once the instance has ended, with how.
    pub exit: BoxFuture<Exit>,
    /// Asks the instance to stop in an orderly way.
    pub stop: Box<dyn FnOnce() + Send>,
    /// Ends the instance at once (after its shutdown timeout).
    pub abort: Box<dyn FnOnce() + Send>,
}

/// Something a supervisor starts, watches and restarts.
pub(crate) trait Child: Send + Sync + 'static {
    /// Name in logs, errors and snapshots.
    fn name(&self) -> &str;
    /// When the child is restarted.
    fn restart(&self) -> Restart;
    /// How long an orderly stop may take before the instance is aborted.
    fn shutdown_timeout(&self) -> Duration;
    /// Starts a fresh instance.
    fn start(&self) -> BoxFuture<Running>;
    /// Tells callers the instance is gone: coming back (`Restarting`) or not (`Stopped`).
    fn set_down(&self, liveness: Liveness);
    /// Live mailbox depth and capacity, for actors.
    fn mailbox(&self) -> Option<(usize, usize)>;
    /// The subtree, for nested supervisors.
    fn subtree(&self) -> Option<SupervisorSnapshot>;
    /// Actor-specific figures for the snapshot.
    fn status(&self) -> Option<serde_json::Value>;
}

/// Produces a child's published figures.
pub(crate) type StatusFn = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Per-child settings shared by every kind of actor.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Unique name under its supervisor (`account-shard-3`, `seller-acme`).
    pub name: String,
    /// Restart type.
    pub restart: Restart,
    /// Admission bound of the mailbox.
    pub mailbox_capacity: usize,
    /// Default deadline of a request to this child.
    pub deadline: Duration,
    /// How long an orderly stop may take.
    pub shutdown_timeout: Duration,
}

/// An actix actor under supervision: the factory builds a fresh instance on every start,
/// so state is rebuilt from the store and never resumed from a half-mutated value.
pub(crate) struct ActorChild<A: Actor<Context = Context<A>>> {
    spec: ChildSpec,
    factory: Arc<dyn Fn() -> A + Send + Sync>,
    arbiter: ArbiterHandle,
    handle: ActorHandle<A>,
    status: Option<StatusFn>,
}

impl<A: Actor<Context = Context<A>>> ActorChild<A> {
    pub(crate) fn new(
        spec: ChildSpec,
        arbiter: ArbiterHandle,
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> (Self, ActorHandle<A>) {
        let handle = ActorHandle::new(&spec.name, spec.mailbox_capacity, spec.deadline);
        let child = ActorChild {
            spec,
            factory: Arc::new(factory),
            arbiter,
            handle: handle.clone(),
            status: None,
        };
        (child, handle)
    }

    pub(crate) fn set_status(&mut self, status: StatusFn) {
        self.status = Some(status);
    }
}

impl<A: Actor<Context = Context<A>>> Child for ActorChild<A> {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn restart(&self) -> Restart {
        self.spec.restart
    }

    fn shutdown_timeout(&self) -> Duration {
        self.spec.shutdown_timeout
    }

    fn start(&self) -> BoxFuture<Running> {
        let (exit_tx, exit_rx) = oneshot::channel::<Exit>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let factory = self.factory.clone();
        let handle = self.handle.clone();
        let capacity = self.spec.mailbox_capacity;
        let name = self.spec.name.clone();
        let spawned = self.arbiter.spawn_fn(move || {
            // The factory runs on the arbiter thread, so actors need not be Send.
            let actor = match std::panic::catch_unwind(AssertUnwindSafe(|| factory())) {
                Ok(actor) => actor,
                Err(payload) => {
                    let _ = exit_tx.send(Exit::Failed(format!(
                        "factory panicked: {}",
                        panic_message(payload.as_ref())
                    )));
                    let _ = ready_tx.send(None);
                    return;
                }
            };
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let mut ctx = Context::<A>::new();
            ctx.set_mailbox_capacity(capacity);
            // An orderly stop request (or the supervisor dropping the sender) stops the
            // actor through its own context, so `stopping`/`stopped` run as usual.
            ctx.spawn(stop_rx.into_actor(&actor).map(|_, _, ctx| ctx.stop()));
            let addr = ctx.address();
            handle.install(addr.clone());
            let context = Watched::new(Box::pin(ctx.into_future(actor)), handle.clone(), addr);
            let dying = handle.clone();
            // The unwind is caught inside the actor's own task: the handle was already
            // marked down by the panic hook (see `Watched`), and stays down until the
            // supervisor restarts the child.
            let task = actix_rt::spawn(async move {
                let outcome = AssertUnwindSafe(context).catch_unwind().await;
                if outcome.is_err() {
                    dying.clear(Liveness::Restarting);
                }
                outcome.map_err(|payload| panic_message(payload.as_ref()))
            });
            let abort = task.abort_handle();
            let watcher_handle = handle.clone();
            actix_rt::spawn(async move {
                let exit = match task.await {
                    Ok(Ok(())) => Exit::Normal,
                    Ok(Err(msg)) => Exit::Panicked(msg),
                    Err(e) if e.is_panic() => {
                        let payload = e.into_panic();
                        Exit::Panicked(panic_message(payload.as_ref()))
                    }
                    Err(_) => Exit::Killed,
                };
                // Callers arriving from now on wait for the restart instead of hitting the
                // dead mailbox; the supervisor decides later whether it comes back.
                watcher_handle.clear(Liveness::Restarting);
                if let Exit::Panicked(msg) = &exit {
                    tracing::error!(actor = %name, panic = %msg, "Actor panicked.");
                }
                let _ = exit_tx.send(exit);
            });
            let _ = ready_tx.send(Some((stop_tx, abort)));
        });
        Box::pin(async move {
            let ready = if spawned {
                ready_rx.await.ok().flatten()
            } else {
                None
            };
            match ready {
                Some((stop_tx, abort)) => Running {
                    exit: Box::pin(async move { exit_rx.await.unwrap_or(Exit::Killed) }),
                    stop: Box::new(move || {
                        let _ = stop_tx.send(());
                    }),
                    abort: Box::new(move || abort.abort()),
                },
                None => {
                    let exit = match exit_rx.await {
                        Ok(exit) => exit,
                        Err(_) => Exit::Failed("its arbiter is not running".into()),
                    };
                    Running {
                        exit: Box::pin(async move { exit }),
                        stop: Box::new(|| {}),
                        abort: Box::new(|| {}),
                    }
                }
            }
        })
    }

    fn set_down(&self, liveness: Liveness) {
        self.handle.clear(liveness);
    }

    fn mailbox(&self) -> Option<(usize, usize)> {
        Some((self.handle.depth(), self.handle.capacity()))
    }

    fn subtree(&self) -> Option<SupervisorSnapshot> {
        None
    }

    fn status(&self) -> Option<serde_json::Value> {
        self.status.as_ref().map(|f| f())
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

thread_local! {
    /// The actor being polled on this thread, for the panic hook.
    static POLLING: std::cell::Cell<Option<Arc<dyn Fn() + Send + Sync>>> =
        const { std::cell::Cell::new(None) };
}

/// Installs (once) a panic hook that marks the handle of the actor being polled as down
/// *before* the stack unwinds. Unwinding is slow (it drops the in-flight caller's reply
/// early in the unwind, then walks many frames); without this, that caller could be woken
/// on another core and queue its next request into the dying mailbox. The previous hook
/// (logging) runs after.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            mark_polling_actor_down();
            previous(info);
        }));
    });
}

/// Marks the actor being polled on this thread (if any) as down. Called from panic hooks;
/// a hook installed later (logging) must call it too.
pub fn mark_polling_actor_down() {
    if let Some(mark_down) = POLLING.take() {
        mark_down();
        POLLING.set(Some(mark_down));
    }
}

/// An actor's context future, polled with the thread-local above set.
struct Watched<F, A: Actor> {
    inner: Pin<Box<F>>,
    mark_down: Arc<dyn Fn() + Send + Sync>,
    fired: Arc<std::sync::atomic::AtomicBool>,
    handle: ActorHandle<A>,
    addr: actix::Addr<A>,
}

impl<F, A: Actor> Watched<F, A> {
    fn new(inner: Pin<Box<F>>, handle: ActorHandle<A>, addr: actix::Addr<A>) -> Self {
        install_panic_hook();
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, f) = (handle.clone(), fired.clone());
        Watched {
            inner,
            mark_down: Arc::new(move || {
                f.store(true, std::sync::atomic::Ordering::SeqCst);
                h.clear(Liveness::Restarting);
            }),
            fired,
            handle,
            addr,
        }
    }
}

/// Restores the thread-local when a poll ends, unwinding included.
struct Restore(Option<Arc<dyn Fn() + Send + Sync>>);

impl Drop for Restore {
    fn drop(&mut self) {
        POLLING.set(self.0.take());
    }
}

impl<F: Future<Output = ()>, A: Actor> Future for Watched<F, A> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let _restore = Restore(POLLING.replace(Some(self.mark_down.clone())));
        let poll = self.inner.as_mut().poll(cx);
        // A panic the handler caught itself did not kill the actor: put it back.
        if self.fired.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.handle.install(self.addr.clone());
        }
        poll
    }
}
