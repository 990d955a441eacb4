//! Dynamic supervisors: children added at run time (one per unit of work, e.g. a booking
//! saga), up to a child limit, each restarted after a crash by the same [`RestartPolicy`]
//! as every static subtree.
//!
//! - a child that exits normally is removed (it is `transient`: its work is done);
//! - a child that crashes is restarted with exponential backoff and jitter; each restart
//!   counts toward the supervisor's restart intensity, so a storm of crashes escalates to
//!   the parent like in any other subtree;
//! - a child that keeps crashing past its own budget (`max_restarts` consecutive
//!   restarts, reset after `reset_after` of quiet) is removed and reported to the
//!   [`on_child_end`](DynamicSupervisor::on_child_end) callback with its last failure, so
//!   the owner can park the work for an operator instead of leaving it half done;
//! - the supervisor is a child of a static supervisor ([`SupervisorBuilder::dynamic`]), so
//!   its children appear in snapshots; when its parent restarts it, it restarts the
//!   children it still holds.
//!
//! [`SupervisorBuilder::dynamic`]: super::SupervisorBuilder::dynamic

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::{Actor, Context};
use actix_rt::ArbiterHandle;
use chrono::Utc;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};

use super::child::{ActorChild, BoxFuture, Child, ChildSpec, Running};
use super::handle::{ActorHandle, AskError, Liveness};
use super::policy::{backoff_delay, Exit, IntensityWindow, Restart, RestartPolicy, Strategy};
use super::tree::{lock, ChildSnapshot, ChildState, Failure, SupervisorSnapshot, SupervisorState};

/// Bounds of a dynamic supervisor and of each child it starts.
#[derive(Debug, Clone)]
pub struct DynamicSpec {
    /// Supervisor name in snapshots and logs.
    pub name: String,
    /// Children running (or reserved) at once; beyond it, [`DynamicSupervisor::reserve`]
    /// answers `Overloaded`.
    pub max_children: usize,
    /// Prefix of each child's name (`saga-`), followed by its key.
    pub child_prefix: String,
    /// Admission bound of each child's mailbox.
    pub mailbox_capacity: usize,
    /// Default deadline of a request to a child.
    pub deadline: Duration,
    /// How long an orderly stop of a child may take.
    pub shutdown_timeout: Duration,
}

/// How a child left a dynamic supervisor, as told to the owner's callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEnd {
    /// It stopped on its own: its work is done.
    Finished,
    /// It kept failing past its restart budget; the reason of the last failure.
    GaveUp(String),
}

type EndFn = Arc<dyn Fn(&str, ChildEnd) + Send + Sync>;

/// One child held by the supervisor.
struct Entry {
    child: Arc<dyn Child>,
    /// The typed `ActorHandle<A>`, for [`DynamicSupervisor::child`].
    handle: Arc<dyn Any + Send + Sync>,
    state: ChildState,
    restarts: u64,
    last_failure: Option<Failure>,
    /// Consecutive restarts, against the per-child budget and for the backoff.
    consecutive: u32,
    last_failure_at: Option<Instant>,
}

#[derive(Default)]
struct Table {
    children: BTreeMap<String, Entry>,
    /// Slots promised by [`DynamicSupervisor::reserve`] and not yet used.
    reserved: usize,
    /// The running loop's inbox; `None` while the supervisor is not running.
    inbox: Option<mpsc::UnboundedSender<Event>>,
    state: Option<SupervisorState>,
    restarts_in_window: usize,
    failure: Option<Failure>,
}

struct Shared {
    spec: DynamicSpec,
    policy: RestartPolicy,
    table: Mutex<Table>,
    on_end: OnceLock<EndFn>,
    crashes: AtomicU64,
}

impl Shared {
    fn snapshot(&self) -> SupervisorSnapshot {
        let table = lock(&self.table);
        let children = table
            .children
            .values()
            .map(|e| {
                let mailbox = e.child.mailbox();
                ChildSnapshot {
                    name: e.child.name().to_owned(),
                    restart: e.child.restart(),
                    state: e.state,
                    restarts: e.restarts,
                    last_failure: e.last_failure.clone(),
                    mailbox_depth: mailbox.map(|m| m.0),
                    mailbox_capacity: mailbox.map(|m| m.1),
                    supervisor: None,
                    status: e.child.status(),
                }
            })
            .collect();
        SupervisorSnapshot {
            name: self.spec.name.clone(),
            strategy: Strategy::OneForOne,
            state: table.state.unwrap_or(SupervisorState::Running),
            max_restarts: self.policy.max_restarts,
            within_secs: self.policy.within.as_secs_f64(),
            restarts_in_window: table.restarts_in_window,
            failure: table.failure.clone(),
            children,
        }
    }

    fn end(&self, key: &str, end: ChildEnd) {
        if let Some(f) = self.on_end.get() {
            f(key, end);
        }
    }
}

/// A supervisor of children added at run time. Cheap to clone; every clone is the same
/// supervisor.
pub struct DynamicSupervisor<A: Actor<Context = Context<A>>> {
    shared: Arc<Shared>,
    _actor: std::marker::PhantomData<fn() -> A>,
}

impl<A: Actor<Context = Context<A>>> Clone for DynamicSupervisor<A> {
    fn clone(&self) -> Self {
        DynamicSupervisor {
            shared: self.shared.clone(),
            _actor: std::marker::PhantomData,
        }
    }
}

impl<A: Actor<Context = Context<A>>> std::fmt::Debug for DynamicSupervisor<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicSupervisor")
            .field("name", &self.shared.spec.name)
            .field("children", &self.len())
            .finish()
    }
}

/// A slot under a dynamic supervisor's child limit, taken before the work is created and
/// used by [`DynamicSupervisor::start_reserved`]; dropping it unused frees the slot.
pub struct ChildPermit {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ChildPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildPermit")
            .field("supervisor", &self.shared.spec.name)
            .finish()
    }
}

impl Drop for ChildPermit {
    fn drop(&mut self) {
        let mut table = lock(&self.shared.table);
        table.reserved = table.reserved.saturating_sub(1);
    }
}

impl<A: Actor<Context = Context<A>>> DynamicSupervisor<A> {
    /// A supervisor with no children; it runs once added to a tree with
    /// [`SupervisorBuilder::dynamic`](super::SupervisorBuilder::dynamic).
    pub fn new(spec: DynamicSpec, policy: RestartPolicy) -> Self {
        DynamicSupervisor {
            shared: Arc::new(Shared {
                spec,
                policy,
                table: Mutex::new(Table::default()),
                on_end: OnceLock::new(),
                crashes: AtomicU64::new(0),
            }),
            _actor: std::marker::PhantomData,
        }
    }

    /// Sets (once) what happens when a child leaves: finished, or given up on. Called on
    /// the supervisor's task; it must not block.
    pub fn on_child_end(&self, f: impl Fn(&str, ChildEnd) + Send + Sync + 'static) {
        if self.shared.on_end.set(Arc::new(f)).is_err() {
            tracing::warn!(supervisor = %self.shared.spec.name, "Child-end callback already set; ignored.");
        }
    }

    /// Takes a slot under the child limit, or `Overloaded` when every slot is used.
    pub fn reserve(&self) -> Result<ChildPermit, AskError> {
        let mut table = lock(&self.shared.table);
        if table.children.len() + table.reserved >= self.shared.spec.max_children {
            return Err(AskError::Overloaded {
                actor: Arc::from(self.shared.spec.name.as_str()),
            });
        }
        table.reserved += 1;
        Ok(ChildPermit {
            shared: self.shared.clone(),
        })
    }

    /// Starts child `key` within the child limit (`Overloaded` beyond it). A key already
    /// running is not started twice: its handle is returned.
    pub fn try_start_child(
        &self,
        key: &str,
        arbiter: ArbiterHandle,
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> Result<ActorHandle<A>, AskError> {
        if let Some(handle) = self.child(key) {
            return Ok(handle);
        }
        let permit = self.reserve()?;
        Ok(self.start_reserved(permit, key, arbiter, factory))
    }

    /// Starts child `key` with a slot taken before by [`reserve`](Self::reserve).
    pub fn start_reserved(
        &self,
        permit: ChildPermit,
        key: &str,
        arbiter: ArbiterHandle,
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> ActorHandle<A> {
        let handle = self.start_child(key, arbiter, factory);
        drop(permit);
        handle
    }

    /// Starts child `key` whatever the limit: for work that already exists and must finish
    /// (resumed at start-up, follow-ups, operator retries). A key already running is not
    /// started twice: its handle is returned.
    pub fn start_child(
        &self,
        key: &str,
        arbiter: ArbiterHandle,
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> ActorHandle<A> {
        let mut table = lock(&self.shared.table);
        if let Some(handle) = table.children.get(key).and_then(typed::<A>) {
            return handle;
        }
        let spec = &self.shared.spec;
        let child_spec = ChildSpec {
            name: format!("{}{key}", spec.child_prefix),
            restart: Restart::Transient,
            mailbox_capacity: spec.mailbox_capacity,
            deadline: spec.deadline,
            shutdown_timeout: spec.shutdown_timeout,
        };
        let (child, handle) = ActorChild::new(child_spec, arbiter, factory);
        table.children.insert(
            key.to_owned(),
            Entry {
                child: Arc::new(child),
                handle: Arc::new(handle.clone()),
                state: ChildState::Starting,
                restarts: 0,
                last_failure: None,
                consecutive: 0,
                last_failure_at: None,
            },
        );
        // Not running (between a give-up and the parent's restart): the next run starts it.
        if let Some(inbox) = &table.inbox {
            let _ = inbox.send(Event::Start(key.to_owned()));
        }
        handle
    }

    /// The handle of child `key`, while it is held (running or restarting).
    pub fn child(&self, key: &str) -> Option<ActorHandle<A>> {
        lock(&self.shared.table)
            .children
            .get(key)
            .and_then(typed::<A>)
    }

    /// The most children held at once (`DynamicSpec::max_children`).
    pub fn max_children(&self) -> usize {
        self.shared.spec.max_children
    }

    /// Children held now (running or restarting).
    pub fn len(&self) -> usize {
        lock(&self.shared.table).children.len()
    }

    /// True when no child is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Child failures (panics, failed starts) since the runtime started.
    pub fn crashes(&self) -> u64 {
        self.shared.crashes.load(Ordering::Relaxed)
    }

    /// This supervisor and its children as they are now.
    pub fn snapshot(&self) -> SupervisorSnapshot {
        self.shared.snapshot()
    }

    pub(crate) fn as_child(&self, restart: Restart, shutdown_timeout: Duration) -> Arc<dyn Child> {
        Arc::new(AsChild {
            shared: self.shared.clone(),
            restart,
            shutdown_timeout,
        })
    }
}

fn typed<A: Actor<Context = Context<A>>>(e: &Entry) -> Option<ActorHandle<A>> {
    e.handle.downcast_ref::<ActorHandle<A>>().cloned()
}

/// The dynamic supervisor as a child of a static one.
struct AsChild {
    shared: Arc<Shared>,
    restart: Restart,
    shutdown_timeout: Duration,
}

impl Child for AsChild {
    fn name(&self) -> &str {
        &self.shared.spec.name
    }

    fn restart(&self) -> Restart {
        self.restart
    }

    fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    fn start(&self) -> BoxFuture<Running> {
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(self.shared.clone(), stop_rx));
        let abort = task.abort_handle();
        Box::pin(async move {
            Running {
                exit: Box::pin(async move { task.await.unwrap_or(Exit::Killed) }),
                stop: Box::new(move || {
                    let _ = stop_tx.send(());
                }),
                abort: Box::new(move || abort.abort()),
            }
        })
    }

    fn set_down(&self, liveness: Liveness) {
        let mut table = lock(&self.shared.table);
        for entry in table.children.values() {
            entry.child.set_down(liveness);
        }
        if liveness == Liveness::Stopped {
            // Not coming back: drop the children, whose factories may hold what holds
            // this supervisor (a cycle that would outlive the runtime otherwise).
            table.children.clear();
        }
    }

    fn mailbox(&self) -> Option<(usize, usize)> {
        None
    }

    fn subtree(&self) -> Option<SupervisorSnapshot> {
        Some(self.shared.snapshot())
    }

    fn status(&self) -> Option<serde_json::Value> {
        None
    }
}

enum Event {
    Start(String),
    Exited {
        key: String,
        generation: u64,
        exit: Exit,
    },
    RestartDue {
        key: String,
        token: u64,
    },
}

/// A running child instance, as the loop tracks it.
struct Run {
    generation: u64,
    stop: Box<dyn FnOnce() + Send>,
    abort: Box<dyn FnOnce() + Send>,
    done: oneshot::Receiver<()>,
}

/// One run of the supervisor loop.
struct Loop {
    shared: Arc<Shared>,
    events_tx: mpsc::UnboundedSender<Event>,
    runs: HashMap<String, Run>,
    /// Restart tokens of children waiting for their backoff.
    pending: HashMap<String, u64>,
    next_generation: u64,
    window: IntensityWindow,
}

async fn run(shared: Arc<Shared>, mut stop_rx: oneshot::Receiver<()>) -> Exit {
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let keys: Vec<String> = {
        // The inbox is installed under the same lock `start_child` adds under, so a child
        // added now is either in this list or announced on the inbox, never both or neither.
        let mut table = lock(&shared.table);
        table.inbox = Some(events_tx.clone());
        table.state = Some(SupervisorState::Running);
        table.restarts_in_window = 0;
        table.children.keys().cloned().collect()
    };
    let mut sup = Loop {
        shared,
        events_tx,
        runs: HashMap::new(),
        pending: HashMap::new(),
        next_generation: 0,
        window: IntensityWindow::default(),
    };
    for key in keys {
        sup.start_child(&key).await;
    }
    loop {
        tokio::select! {
            _ = &mut stop_rx => {
                sup.stop_all(Liveness::Stopped).await;
                // The children stay held: a parent restarting this supervisor gets them
                // back; one stopping it for good drops them (see `set_down`).
                lock(&sup.shared.table).state = Some(SupervisorState::Stopped);
                return Exit::Normal;
            }
            Some(event) = events_rx.recv() => match event {
                Event::Start(key) => sup.start_child(&key).await,
                Event::Exited { key, generation, exit } => {
                    if let Some(gave_up) = sup.on_exit(key, generation, exit).await {
                        return gave_up;
                    }
                }
                Event::RestartDue { key, token } => {
                    if sup.pending.get(&key) == Some(&token) {
                        sup.pending.remove(&key);
                        sup.start_child(&key).await;
                    }
                }
            }
        }
    }
}

impl Loop {
    async fn start_child(&mut self, key: &str) {
        if self.runs.contains_key(key) {
            return;
        }
        let child = match lock(&self.shared.table).children.get(key) {
            Some(entry) => entry.child.clone(),
            None => return,
        };
        self.next_generation += 1;
        let generation = self.next_generation;
        let running = child.start().await;
        if let Some(entry) = lock(&self.shared.table).children.get_mut(key) {
            entry.state = ChildState::Running;
        }
        let (done_tx, done_rx) = oneshot::channel();
        let events = self.events_tx.clone();
        let exit = running.exit;
        let owned = key.to_owned();
        tokio::spawn(async move {
            let exit = exit.await;
            let _ = done_tx.send(());
            let _ = events.send(Event::Exited {
                key: owned,
                generation,
                exit,
            });
        });
        self.runs.insert(
            key.to_owned(),
            Run {
                generation,
                stop: running.stop,
                abort: running.abort,
                done: done_rx,
            },
        );
    }

    /// Stops every running child (orderly, then aborted after its shutdown timeout) and
    /// tells callers they are down. The children stay held, for the next run.
    async fn stop_all(&mut self, liveness: Liveness) {
        lock(&self.shared.table).inbox = None;
        self.pending.clear();
        let timeout = self.shared.spec.shutdown_timeout;
        for (key, run) in self.runs.drain() {
            (run.stop)();
            let mut done = run.done;
            if tokio::time::timeout(timeout, &mut done).await.is_err() {
                tracing::warn!(child = %key, "Child did not stop in time; aborting it.");
                (run.abort)();
                let _ = tokio::time::timeout(Duration::from_secs(1), done).await;
            }
        }
        let mut table = lock(&self.shared.table);
        for entry in table.children.values_mut() {
            entry.child.set_down(liveness);
            entry.state = ChildState::Stopped;
        }
    }

    /// Removes child `key` for good and tells the owner why.
    fn remove(&mut self, key: &str, end: ChildEnd) {
        let removed = lock(&self.shared.table).children.remove(key);
        if let Some(entry) = removed {
            entry.child.set_down(Liveness::Stopped);
        }
        self.shared.end(key, end);
    }

    /// Handles the exit of child `key`; returns `Some` when the supervisor gives up.
    async fn on_exit(&mut self, key: String, generation: u64, exit: Exit) -> Option<Exit> {
        match self.runs.get(&key) {
            Some(run) if run.generation == generation => {}
            _ => return None, // An instance this loop stopped on purpose.
        }
        self.runs.remove(&key);
        if !Restart::Transient.restarts_after(&exit) {
            self.remove(&key, ChildEnd::Finished);
            return None;
        }
        self.shared.crashes.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let failure = Failure {
            reason: exit.reason(),
            at: Utc::now(),
        };
        let policy = self.shared.policy;
        // The per-child budget first: a child past it is given up on alone, without
        // counting a restart that will not happen against the whole supervisor.
        let attempt = {
            let mut table = lock(&self.shared.table);
            let entry = table.children.get_mut(&key)?;
            entry.last_failure = Some(failure.clone());
            let quiet = entry
                .last_failure_at
                .is_none_or(|at| now.duration_since(at) > policy.reset_after);
            if quiet {
                entry.consecutive = 0;
            }
            entry.last_failure_at = Some(now);
            let attempt = entry.consecutive;
            entry.consecutive = entry.consecutive.saturating_add(1);
            attempt
        };
        if attempt >= policy.max_restarts {
            tracing::error!(
                supervisor = %self.shared.spec.name,
                child = %key,
                reason = %failure.reason,
                restarts = attempt,
                "Child keeps failing past its restart budget; giving up on it."
            );
            self.remove(&key, ChildEnd::GaveUp(failure.reason));
            return None;
        }
        let within = self.window.admit(now, &policy);
        lock(&self.shared.table).restarts_in_window = self.window.len();
        if !within {
            let reason = format!(
                "{} gave up: more than {} restarts within {:?}; last: {key} {}",
                self.shared.spec.name, policy.max_restarts, policy.within, failure.reason
            );
            tracing::error!(supervisor = %self.shared.spec.name, %reason, "Supervisor exceeded its restart intensity; escalating.");
            self.stop_all(Liveness::Stopped).await;
            let mut table = lock(&self.shared.table);
            table.state = Some(SupervisorState::Failed);
            table.failure = Some(Failure {
                reason: reason.clone(),
                at: failure.at,
            });
            return Some(Exit::Failed(reason));
        }
        {
            let mut table = lock(&self.shared.table);
            if let Some(entry) = table.children.get_mut(&key) {
                entry.child.set_down(Liveness::Restarting);
                entry.state = ChildState::Restarting;
                entry.restarts += 1;
            }
        }
        let delay = backoff_delay(attempt, &policy, rand::thread_rng().gen::<f64>());
        tracing::warn!(
            supervisor = %self.shared.spec.name,
            child = %key,
            reason = %failure.reason,
            delay_ms = delay.as_millis() as u64,
            "Child failed; restarting after backoff."
        );
        self.next_generation += 1;
        let token = self.next_generation;
        self.pending.insert(key.clone(), token);
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::RestartDue { key, token });
        });
        None
    }
}
