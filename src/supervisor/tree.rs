//! Supervisors: own an ordered list of children, restart them by strategy and policy, give
//! up (escalate) when restarts exceed the intensity limit, and publish a snapshot.
//!
//! A supervisor is itself a child, so trees nest: a nested supervisor that gives up ends
//! with [`Exit::Failed`], which its parent treats like any failed child (restart it per its
//! own strategy, counting towards its own intensity). When the root gives up, the runtime
//! is unhealthy and its handles answer `Unavailable`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, Context};
use actix_rt::ArbiterHandle;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::child::{ActorChild, BoxFuture, Child, ChildSpec, Running};
use super::dynamic::DynamicSupervisor;
use super::handle::{ActorHandle, Liveness};
use super::policy::{backoff_delay, Exit, IntensityWindow, Restart, RestartPolicy, Strategy};

/// State of a child as reported in snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum ChildState {
    /// Not started yet.
    Starting,
    /// Running.
    Running,
    /// Failed (or stopped with a sibling) and waiting for its backoff to restart.
    Restarting,
    /// Stopped and not coming back.
    Stopped,
}

/// State of a supervisor as reported in snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum SupervisorState {
    /// Within its restart intensity, children running or restarting.
    Running,
    /// Shut down in an orderly way.
    Stopped,
    /// Gave up after exceeding its restart intensity (escalated to its parent).
    Failed,
}

/// A failure remembered for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Failure {
    /// What happened (`panicked: ...`).
    pub reason: String,
    /// When it was seen.
    pub at: DateTime<Utc>,
}

/// One child in a snapshot.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChildSnapshot {
    /// Child name.
    pub name: String,
    /// Restart type.
    pub restart: Restart,
    /// Current state.
    pub state: ChildState,
    /// Restarts since the runtime started.
    pub restarts: u64,
    /// The latest abnormal exit.
    #[schema(required = true)]
    pub last_failure: Option<Failure>,
    /// Requests queued or in flight (actors only).
    #[schema(required = true)]
    pub mailbox_depth: Option<usize>,
    /// Admission bound (actors only).
    #[schema(required = true)]
    pub mailbox_capacity: Option<usize>,
    /// The nested tree (supervisors only).
    // The nesting is recursive: name it by reference only, or schema collection loops.
    #[schema(required = true, no_recursion)]
    pub supervisor: Option<SupervisorSnapshot>,
    /// Actor-specific figures (e.g. a seller's breaker), when the actor publishes any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, required = false)]
    pub status: Option<serde_json::Value>,
}

/// A supervisor and its subtree at one moment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SupervisorSnapshot {
    /// Supervisor name.
    pub name: String,
    /// Restart strategy.
    pub strategy: Strategy,
    /// Current state.
    pub state: SupervisorState,
    /// Intensity limit: restarts allowed...
    pub max_restarts: u32,
    /// ...within this many seconds.
    pub within_secs: f64,
    /// Restarts inside the current window.
    pub restarts_in_window: usize,
    /// Why it gave up, when it did.
    #[schema(required = true)]
    pub failure: Option<Failure>,
    /// Children in start order.
    pub children: Vec<ChildSnapshot>,
}

impl SupervisorSnapshot {
    /// True when this supervisor and every nested one are running.
    pub fn is_healthy(&self) -> bool {
        self.state == SupervisorState::Running
            && self
                .children
                .iter()
                .filter_map(|c| c.supervisor.as_ref())
                .all(SupervisorSnapshot::is_healthy)
    }

    /// Visits every child of the tree, depth first, with its supervisor's name.
    pub fn for_each_child<'a>(&'a self, f: &mut impl FnMut(&'a str, &'a ChildSnapshot)) {
        for child in &self.children {
            f(&self.name, child);
            if let Some(sub) = &child.supervisor {
                sub.for_each_child(f);
            }
        }
    }

    /// Visits this supervisor and every nested one.
    pub fn for_each_supervisor<'a>(&'a self, f: &mut impl FnMut(&'a SupervisorSnapshot)) {
        f(self);
        for sub in self.children.iter().filter_map(|c| c.supervisor.as_ref()) {
            sub.for_each_supervisor(f);
        }
    }
}

#[derive(Debug)]
struct ChildStats {
    state: ChildState,
    restarts: u64,
    last_failure: Option<Failure>,
}

#[derive(Debug)]
struct Status {
    state: SupervisorState,
    restarts_in_window: usize,
    failure: Option<Failure>,
}

/// What a supervisor is made of; shared by every run of it, so the handles of its
/// children stay the same when the supervisor itself is restarted.
struct Shared {
    name: String,
    strategy: Strategy,
    policy: RestartPolicy,
    children: Vec<Arc<dyn Child>>,
    stats: Vec<Mutex<ChildStats>>,
    status: Mutex<Status>,
}

impl Shared {
    fn snapshot(&self) -> SupervisorSnapshot {
        let status = lock(&self.status);
        let children = self
            .children
            .iter()
            .zip(&self.stats)
            .map(|(child, stats)| {
                let stats = lock(stats);
                let mailbox = child.mailbox();
                ChildSnapshot {
                    name: child.name().to_owned(),
                    restart: child.restart(),
                    state: stats.state,
                    restarts: stats.restarts,
                    last_failure: stats.last_failure.clone(),
                    mailbox_depth: mailbox.map(|m| m.0),
                    mailbox_capacity: mailbox.map(|m| m.1),
                    supervisor: child.subtree(),
                    status: child.status(),
                }
            })
            .collect();
        SupervisorSnapshot {
            name: self.name.clone(),
            strategy: self.strategy,
            state: status.state,
            max_restarts: self.policy.max_restarts,
            within_secs: self.policy.within.as_secs_f64(),
            restarts_in_window: status.restarts_in_window,
            failure: status.failure.clone(),
            children,
        }
    }

    fn set_child_state(&self, index: usize, state: ChildState) {
        lock(&self.stats[index]).state = state;
    }
}

/// Locks a stats mutex. Stats are plain data written in short sections that cannot panic,
/// so a poisoned lock still holds consistent data and is used as is.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Builds a supervisor: add children in start order, then start it as the root or nest it.
pub struct SupervisorBuilder {
    name: String,
    strategy: Strategy,
    policy: RestartPolicy,
    children: Vec<Arc<dyn Child>>,
}

impl std::fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("name", &self.name)
            .field("children", &self.children.len())
            .finish()
    }
}

impl SupervisorBuilder {
    /// An empty supervisor.
    pub fn new(name: impl Into<String>, strategy: Strategy, policy: RestartPolicy) -> Self {
        SupervisorBuilder {
            name: name.into(),
            strategy,
            policy,
            children: Vec::new(),
        }
    }

    /// Adds an actor child running on `arbiter`; `factory` builds a fresh instance on every
    /// (re)start. Returns the stable handle callers use.
    pub fn actor<A>(
        &mut self,
        spec: ChildSpec,
        arbiter: ArbiterHandle,
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> ActorHandle<A>
    where
        A: Actor<Context = Context<A>>,
    {
        let (child, handle) = ActorChild::new(spec, arbiter, factory);
        self.children.push(Arc::new(child));
        handle
    }

    /// Like [`actor`](Self::actor), with a function whose JSON the snapshot shows as the
    /// child's `status` (breaker state, counters).
    pub fn actor_with_status<A>(
        &mut self,
        spec: ChildSpec,
        arbiter: ArbiterHandle,
        factory: impl Fn() -> A + Send + Sync + 'static,
        status: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> ActorHandle<A>
    where
        A: Actor<Context = Context<A>>,
    {
        let (mut child, handle) = ActorChild::new(spec, arbiter, factory);
        child.set_status(Box::new(status));
        self.children.push(Arc::new(child));
        handle
    }

    /// Adds a nested supervisor as a child.
    pub fn supervisor(
        &mut self,
        child: SupervisorBuilder,
        restart: Restart,
        shutdown_timeout: Duration,
    ) {
        self.children.push(Arc::new(NestedSupervisor {
            shared: child.into_shared(),
            restart,
            shutdown_timeout,
        }));
    }

    /// Adds a [`DynamicSupervisor`] as a child: its children (added at run time) appear
    /// in this tree's snapshots, and its give-up escalates here like any child's failure.
    pub fn dynamic<A>(
        &mut self,
        child: &DynamicSupervisor<A>,
        restart: Restart,
        shutdown_timeout: Duration,
    ) where
        A: Actor<Context = Context<A>>,
    {
        self.children
            .push(child.as_child(restart, shutdown_timeout));
    }

    fn into_shared(self) -> Arc<Shared> {
        let stats = self
            .children
            .iter()
            .map(|_| {
                Mutex::new(ChildStats {
                    state: ChildState::Starting,
                    restarts: 0,
                    last_failure: None,
                })
            })
            .collect();
        Arc::new(Shared {
            name: self.name,
            strategy: self.strategy,
            policy: self.policy,
            children: self.children,
            stats,
            status: Mutex::new(Status {
                state: SupervisorState::Running,
                restarts_in_window: 0,
                failure: None,
            }),
        })
    }

    /// Starts this supervisor as the root of a tree; it runs until shut down or until it
    /// gives up. Must be called inside an actix system.
    pub fn start(self) -> SupervisorRef {
        let shared = self.into_shared();
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(shared.clone(), stop_rx));
        SupervisorRef {
            shared,
            stop: Mutex::new(Some((stop_tx, task))),
        }
    }
}

/// The running root supervisor.
pub struct SupervisorRef {
    shared: Arc<Shared>,
    stop: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<Exit>)>>,
}

impl std::fmt::Debug for SupervisorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorRef")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl SupervisorRef {
    /// The whole tree as it is now.
    pub fn snapshot(&self) -> SupervisorSnapshot {
        self.shared.snapshot()
    }

    /// Stops every child in reverse start order, each within its shutdown timeout.
    /// Calling it again is a no-op.
    pub async fn shutdown(&self) {
        let stop = lock(&self.stop).take();
        if let Some((stop_tx, task)) = stop {
            let _ = stop_tx.send(());
            let _ = task.await;
        }
    }
}

/// A supervisor nested under another.
struct NestedSupervisor {
    shared: Arc<Shared>,
    restart: Restart,
    shutdown_timeout: Duration,
}

impl Child for NestedSupervisor {
    fn name(&self) -> &str {
        &self.shared.name
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
        for child in &self.shared.children {
            child.set_down(liveness);
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
    Exited {
        index: usize,
        generation: u64,
        exit: Exit,
    },
    RestartDue {
        indices: Vec<usize>,
        token: u64,
    },
}

/// A running child instance, as the supervisor loop tracks it.
struct Run {
    stop: Box<dyn FnOnce() + Send>,
    abort: Box<dyn FnOnce() + Send>,
    done: oneshot::Receiver<()>,
}

/// The supervisor loop: one task per running supervisor.
struct Loop {
    shared: Arc<Shared>,
    events_tx: mpsc::UnboundedSender<Event>,
    runs: Vec<Option<Run>>,
    generations: Vec<u64>,
    pending: Vec<u64>,
    next_token: u64,
    consecutive: Vec<u32>,
    last_failure_at: Vec<Option<Instant>>,
    window: IntensityWindow,
}

async fn run(shared: Arc<Shared>, mut stop_rx: oneshot::Receiver<()>) -> Exit {
    let n = shared.children.len();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    {
        let mut status = lock(&shared.status);
        status.state = SupervisorState::Running;
        status.restarts_in_window = 0;
    }
    let mut sup = Loop {
        shared,
        events_tx,
        runs: (0..n).map(|_| None).collect(),
        generations: vec![0; n],
        pending: vec![0; n],
        next_token: 0,
        consecutive: vec![0; n],
        last_failure_at: vec![None; n],
        window: IntensityWindow::default(),
    };
    for index in 0..n {
        sup.start_child(index).await;
    }
    loop {
        tokio::select! {
            _ = &mut stop_rx => {
                sup.stop_all(Liveness::Stopped).await;
                lock(&sup.shared.status).state = SupervisorState::Stopped;
                return Exit::Normal;
            }
            Some(event) = events_rx.recv() => match event {
                Event::Exited { index, generation, exit } => {
                    if let Some(gave_up) = sup.on_exit(index, generation, exit).await {
                        return gave_up;
                    }
                }
                Event::RestartDue { indices, token } => {
                    for index in indices {
                        if sup.pending[index] == token {
                            sup.pending[index] = 0;
                            lock(&sup.shared.stats[index]).restarts += 1;
                            sup.start_child(index).await;
                        }
                    }
                }
            }
        }
    }
}

impl Loop {
    async fn start_child(&mut self, index: usize) {
        self.generations[index] += 1;
        let generation = self.generations[index];
        let child = self.shared.children[index].clone();
        let running = child.start().await;
        self.shared.set_child_state(index, ChildState::Running);
        let (done_tx, done_rx) = oneshot::channel();
        let events = self.events_tx.clone();
        let exit = running.exit;
        tokio::spawn(async move {
            let exit = exit.await;
            let _ = done_tx.send(());
            let _ = events.send(Event::Exited {
                index,
                generation,
                exit,
            });
        });
        self.runs[index] = Some(Run {
            stop: running.stop,
            abort: running.abort,
            done: done_rx,
        });
    }

    /// Stops a running child: orderly first, aborted after its shutdown timeout.
    async fn stop_child(&mut self, index: usize) {
        let Some(run) = self.runs[index].take() else {
            return;
        };
        let child = &self.shared.children[index];
        (run.stop)();
        let mut done = run.done;
        if tokio::time::timeout(child.shutdown_timeout(), &mut done)
            .await
            .is_err()
        {
            tracing::warn!(
                actor = child.name(),
                "Child did not stop in time; aborting it."
            );
            (run.abort)();
            let _ = tokio::time::timeout(Duration::from_secs(1), done).await;
        }
    }

    async fn stop_all(&mut self, liveness: Liveness) {
        for index in (0..self.runs.len()).rev() {
            self.pending[index] = 0;
            self.stop_child(index).await;
            self.shared.children[index].set_down(liveness);
            self.shared.set_child_state(index, ChildState::Stopped);
        }
    }

    /// Handles the exit of child `index`; returns `Some` when the supervisor gives up.
    async fn on_exit(&mut self, index: usize, generation: u64, exit: Exit) -> Option<Exit> {
        if generation != self.generations[index] || self.runs[index].is_none() {
            return None; // An instance this loop stopped on purpose.
        }
        self.runs[index] = None;
        let child = self.shared.children[index].clone();
        if !child.restart().restarts_after(&exit) {
            tracing::info!(actor = child.name(), reason = %exit.reason(), "Child ended; not restarted.");
            child.set_down(Liveness::Stopped);
            self.shared.set_child_state(index, ChildState::Stopped);
            return None;
        }
        let now = Instant::now();
        let failure = Failure {
            reason: exit.reason(),
            at: Utc::now(),
        };
        lock(&self.shared.stats[index]).last_failure = Some(failure.clone());
        let within = self.window.admit(now, &self.shared.policy);
        lock(&self.shared.status).restarts_in_window = self.window.len();
        if !within {
            let policy = &self.shared.policy;
            let reason = format!(
                "{} gave up: more than {} restarts within {:?}; last: {} {}",
                self.shared.name,
                policy.max_restarts,
                policy.within,
                child.name(),
                failure.reason
            );
            tracing::error!(supervisor = %self.shared.name, %reason, "Supervisor exceeded its restart intensity; escalating.");
            self.stop_all(Liveness::Stopped).await;
            let mut status = lock(&self.shared.status);
            status.state = SupervisorState::Failed;
            status.failure = Some(Failure {
                reason: reason.clone(),
                at: failure.at,
            });
            return Some(Exit::Failed(reason));
        }

        let affected: Vec<usize> = self
            .shared
            .strategy
            .affected(index, self.runs.len())
            .filter(|&j| j == index || self.shared.children[j].restart() != Restart::Temporary)
            .collect();
        for &j in affected.iter().rev() {
            if j != index {
                self.stop_child(j).await;
            }
        }
        for &j in &affected {
            self.shared.children[j].set_down(Liveness::Restarting);
            self.shared.set_child_state(j, ChildState::Restarting);
        }
        // Temporary siblings stopped by one_for_all/rest_for_one are not restarted.
        for j in self.shared.strategy.affected(index, self.runs.len()) {
            if !affected.contains(&j) && self.runs[j].is_some() {
                self.stop_child(j).await;
                self.shared.children[j].set_down(Liveness::Stopped);
                self.shared.set_child_state(j, ChildState::Stopped);
            }
        }

        let quiet = self.last_failure_at[index]
            .is_none_or(|at| now.duration_since(at) > self.shared.policy.reset_after);
        if quiet {
            self.consecutive[index] = 0;
        }
        let delay = backoff_delay(
            self.consecutive[index],
            &self.shared.policy,
            rand::thread_rng().gen::<f64>(),
        );
        self.consecutive[index] = self.consecutive[index].saturating_add(1);
        self.last_failure_at[index] = Some(now);
        tracing::warn!(
            actor = child.name(),
            reason = %failure.reason,
            restarting = affected.len(),
            delay_ms = delay.as_millis() as u64,
            "Child failed; restarting after backoff."
        );
        self.next_token += 1;
        let token = self.next_token;
        for &j in &affected {
            self.pending[j] = token;
        }
        // Always restart from a later poll than the one that saw the failure.
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::RestartDue {
                indices: affected,
                token,
            });
        });
        None
    }
}
