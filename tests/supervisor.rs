//! Supervision behaviour against real actix actors: panics restart a fresh instance,
//! strategies pick the right siblings, intensity escalates, deadlines and mailbox bounds
//! give typed errors, and in-flight callers of a crashing actor never hang.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use common::wait_until;
use wayfare::supervisor::{
    ActorHandle, AskError, ChildEnd, ChildSpec, ChildState, DynamicSpec, DynamicSupervisor,
    Restart, RestartPolicy, Strategy, SupervisorBuilder, SupervisorRef, SupervisorState,
};

/// A test actor that knows which instance it is.
struct Worker {
    instance: usize,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

/// Replies with the instance number.
#[derive(Message)]
#[rtype(result = "usize")]
struct Ping;

/// Panics inside the handler.
#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

/// Holds the actor (its mailbox blocked) for the given time, then replies.
#[derive(Message)]
#[rtype(result = "()")]
struct Hold(Duration);

impl Handler<Ping> for Worker {
    type Result = usize;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> usize {
        self.instance
    }
}

impl Handler<Crash> for Worker {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("worker {} asked to crash", self.instance);
    }
}

impl Handler<Hold> for Worker {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, Hold(d): Hold, ctx: &mut Context<Self>) -> Self::Result {
        let _ = ctx;
        Box::pin(actix::fut::wrap_future(tokio::time::sleep(d)))
    }
}

fn spec(name: &str) -> ChildSpec {
    ChildSpec {
        name: name.to_owned(),
        restart: Restart::Permanent,
        mailbox_capacity: 16,
        deadline: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(1),
    }
}

fn quick_policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        within: Duration::from_secs(60),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        reset_after: Duration::from_secs(60),
    }
}

/// Adds a worker whose instances are numbered by a shared counter.
fn add_worker(
    sup: &mut SupervisorBuilder,
    spec: ChildSpec,
    counter: &Arc<AtomicUsize>,
) -> ActorHandle<Worker> {
    let counter = counter.clone();
    sup.actor(spec, actix_rt::Arbiter::current(), move || Worker {
        instance: counter.fetch_add(1, Ordering::SeqCst),
    })
}

/// Waits until `f` holds, for at most 5 s (the shared poll helper of `tests/common`).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    wait_until(Duration::from_secs(5), what, async || f().then_some(())).await;
}

fn child_restarts(root: &SupervisorRef, name: &str) -> u64 {
    let mut found = None;
    root.snapshot().for_each_child(&mut |_, c| {
        if c.name == name {
            found = Some(c.restarts);
        }
    });
    found.expect("child in snapshot")
}

#[actix_rt::test]
async fn panic_restarts_a_fresh_instance_that_answers_the_next_message() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut sup = SupervisorBuilder::new("root", Strategy::OneForOne, quick_policy(5));
    let worker = add_worker(&mut sup, spec("worker"), &counter);
    let root = sup.start();

    assert_eq!(worker.ask(Ping).await, Ok(0));
    assert_eq!(
        worker.ask(Crash).await,
        Err(AskError::Crashed {
            actor: "worker".into()
        })
    );
    // The same handle reaches the new instance (it waits out the restart backoff).
    assert_eq!(worker.ask(Ping).await, Ok(1));
    assert_eq!(child_restarts(&root, "worker"), 1);
    let snap = root.snapshot();
    let failure = snap.children[0]
        .last_failure
        .as_ref()
        .expect("failure recorded");
    assert!(
        failure.reason.contains("asked to crash"),
        "{}",
        failure.reason
    );
    assert!(snap.is_healthy());
    root.shutdown().await;
    assert_eq!(
        worker.ask(Ping).await,
        Err(AskError::Unavailable {
            actor: "worker".into()
        })
    );
}

#[actix_rt::test]
async fn actor_on_another_arbiter_is_restarted_after_a_panic() {
    let arbiter = actix_rt::Arbiter::new();
    let counter = Arc::new(AtomicUsize::new(0));
    let mut sup = SupervisorBuilder::new("root", Strategy::OneForOne, quick_policy(5));
    let c = counter.clone();
    let worker = sup.actor(spec("remote"), arbiter.handle(), move || Worker {
        instance: c.fetch_add(1, Ordering::SeqCst),
    });
    let root = sup.start();
    assert_eq!(worker.ask(Ping).await, Ok(0));
    assert!(matches!(
        worker.ask(Crash).await,
        Err(AskError::Crashed { .. })
    ));
    assert_eq!(worker.ask(Ping).await, Ok(1));
    root.shutdown().await;
    arbiter.stop();
}

#[actix_rt::test]
async fn exceeding_intensity_gives_up_and_escalates_to_the_parent() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut inner = SupervisorBuilder::new("inner", Strategy::OneForOne, quick_policy(1));
    let worker = add_worker(&mut inner, spec("fragile"), &counter);
    // The root tolerates no restart of its own, so the escalation ends the tree.
    let mut root = SupervisorBuilder::new("root", Strategy::OneForOne, quick_policy(0));
    root.supervisor(inner, Restart::Permanent, Duration::from_secs(1));
    let root = root.start();

    assert!(matches!(
        worker.ask(Crash).await,
        Err(AskError::Crashed { .. })
    ));
    assert_eq!(worker.ask(Ping).await, Ok(1)); // first restart is within intensity
    assert!(matches!(
        worker.ask(Crash).await,
        Err(AskError::Crashed { .. })
    ));

    eventually("root to give up", || {
        root.snapshot().state == SupervisorState::Failed
    })
    .await;
    let snap = root.snapshot();
    assert!(!snap.is_healthy());
    let reason = &snap.failure.as_ref().unwrap().reason;
    assert!(reason.contains("inner gave up"), "{reason}");
    assert_eq!(
        worker.ask(Ping).await,
        Err(AskError::Unavailable {
            actor: "fragile".into()
        })
    );
}

#[actix_rt::test]
async fn escalation_restarts_the_subtree_when_the_parent_allows_it() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut inner = SupervisorBuilder::new("inner", Strategy::OneForOne, quick_policy(0));
    let worker = add_worker(&mut inner, spec("w"), &counter);
    let mut root = SupervisorBuilder::new("root", Strategy::OneForOne, quick_policy(5));
    root.supervisor(inner, Restart::Permanent, Duration::from_secs(1));
    let root = root.start();

    assert_eq!(worker.ask(Ping).await, Ok(0));
    assert!(matches!(
        worker.ask(Crash).await,
        Err(AskError::Crashed { .. })
    ));
    // The inner supervisor gave up; the root restarted it with a fresh worker.
    assert_eq!(worker.ask(Ping).await, Ok(1));
    eventually("subtree restart recorded", || {
        child_restarts(&root, "inner") == 1
    })
    .await;
    assert!(root.snapshot().is_healthy());
    root.shutdown().await;
}

#[actix_rt::test]
async fn one_for_all_restarts_every_sibling() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut sup = SupervisorBuilder::new("root", Strategy::OneForAll, quick_policy(5));
    let a = add_worker(&mut sup, spec("a"), &counter);
    let b = add_worker(&mut sup, spec("b"), &counter);
    let c = add_worker(&mut sup, spec("c"), &counter);
    let root = sup.start();
    let before = [a.ask(Ping).await, b.ask(Ping).await, c.ask(Ping).await];
    assert!(matches!(b.ask(Crash).await, Err(AskError::Crashed { .. })));
    eventually("all restarted", || {
        ["a", "b", "c"]
            .iter()
            .all(|n| child_restarts(&root, n) == 1)
    })
    .await;
    let after = [a.ask(Ping).await, b.ask(Ping).await, c.ask(Ping).await];
    for (x, y) in before.iter().zip(&after) {
        assert_ne!(x, y, "every sibling is a fresh instance");
    }
    root.shutdown().await;
}

#[actix_rt::test]
async fn rest_for_one_restarts_only_later_siblings() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut sup = SupervisorBuilder::new("root", Strategy::RestForOne, quick_policy(5));
    let a = add_worker(&mut sup, spec("a"), &counter);
    let b = add_worker(&mut sup, spec("b"), &counter);
    let c = add_worker(&mut sup, spec("c"), &counter);
    let root = sup.start();
    let a0 = a.ask(Ping).await.unwrap();
    let b0 = b.ask(Ping).await.unwrap();
    let c0 = c.ask(Ping).await.unwrap();
    assert!(matches!(b.ask(Crash).await, Err(AskError::Crashed { .. })));
    eventually("b and c restarted", || {
        child_restarts(&root, "b") == 1 && child_restarts(&root, "c") == 1
    })
    .await;
    assert_eq!(a.ask(Ping).await.unwrap(), a0, "earlier sibling untouched");
    assert_ne!(b.ask(Ping).await.unwrap(), b0);
    assert_ne!(c.ask(Ping).await.unwrap(), c0);
    assert_eq!(child_restarts(&root, "a"), 0);
    root.shutdown().await;
}

#[actix_rt::test]
async fn temporary_child_is_not_restarted() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut sup = SupervisorBuilder::new("root", Strategy::OneForOne, quick_policy(5));
    let mut s = spec("temp");
    s.restart = Restart::Temporary;
    let temp = add_worker(&mut sup, s, &counter);
    let root = sup.start();
    assert!(matches!(
        temp.ask(Crash).await,
        Err(AskError::Crashed { .. })
    ));
    eventually("temp stopped", || {
        root.snapshot().children[0].state == ChildState::Stopped
    })
    .await;
    assert!(matches!(
        temp.ask(Ping).await,
        Err(AskError::Unavailable { .. })
    ));
    root.shutdown().await;
}

#[actix_rt::test]
async fn a_hanging_handler_gives_timeout_within_the_deadline() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut sup = SupervisorBuilder::new("root", Strategy::OneForOne, quick_policy(5));
    let worker = add_worker(&mut sup, spec("slow"), &counter);
    let root = sup.start();
    let deadline = Duration::from_millis(100);
    let started = Instant::now();
    let result = worker
        .ask_within(Hold(Duration::from_secs(30)), deadline)
        .await;
    assert_eq!(
        result,
        Err(AskError::Timeout {
            actor: "slow".into(),
            after: deadline
        })
    );
    // Generous bound: this only proves the caller is not held for the 30 s hang.
    assert!(started.elapsed() < Duration::from_secs(5));
    root.shutdown().await;
}

#[actix_rt::test]
async fn a_full_mailbox_answers_overloaded_at_once() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut sup = SupervisorBuilder::new("root", Strategy::OneForOne, quick_policy(5));
    let mut s = spec("busy");
    s.mailbox_capacity = 2;
    let worker = add_worker(&mut sup, s, &counter);
    let root = sup.start();
    let w1 = worker.clone();
    let w2 = worker.clone();
    let h1 = tokio::spawn(async move { w1.ask(Hold(Duration::from_millis(300))).await });
    let h2 = tokio::spawn(async move { w2.ask(Hold(Duration::from_millis(300))).await });
    eventually("two requests admitted", || worker.depth() == 2).await;
    assert_eq!(
        worker.ask(Ping).await,
        Err(AskError::Overloaded {
            actor: "busy".into()
        })
    );
    assert_eq!(h1.await.unwrap(), Ok(()));
    assert_eq!(h2.await.unwrap(), Ok(()));
    assert_eq!(worker.depth(), 0);
    assert_eq!(worker.ask(Ping).await, Ok(0), "admits again once drained");
    root.shutdown().await;
}

#[actix_rt::test]
async fn shutdown_fails_in_flight_callers_promptly() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut sup = SupervisorBuilder::new("root", Strategy::OneForOne, quick_policy(5));
    let worker = add_worker(&mut sup, spec("victim"), &counter);
    let root = sup.start();
    let w = worker.clone();
    let in_flight = tokio::spawn(async move { w.ask(Hold(Duration::from_secs(30))).await });
    eventually("hold admitted", || worker.depth() == 1).await;
    let started = Instant::now();
    root.shutdown().await;
    let in_flight = in_flight.await.unwrap();
    assert!(
        matches!(in_flight, Err(AskError::Crashed { .. })),
        "{in_flight:?}"
    );
    // Generous bound: only proves the caller is not held for the 30 s hold.
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Holds the actor with `ctx.wait`, so later messages queue behind it, then panics.
#[derive(Message)]
#[rtype(result = "()")]
struct HoldThenCrash(Duration);

impl Handler<HoldThenCrash> for Worker {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, HoldThenCrash(d): HoldThenCrash, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            actix::fut::wrap_future(tokio::time::sleep(d))
                .map(|_, _: &mut Worker, _| panic!("crashed while callers waited")),
        )
    }
}

#[actix_rt::test]
async fn panic_with_callers_waiting_fails_them_and_recovers() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut sup = SupervisorBuilder::new("root", Strategy::OneForOne, quick_policy(5));
    let worker = add_worker(&mut sup, spec("victim"), &counter);
    let root = sup.start();
    let w = worker.clone();
    let crasher =
        tokio::spawn(async move { w.ask(HoldThenCrash(Duration::from_millis(100))).await });
    eventually("crasher admitted", || worker.depth() == 1).await;
    let w = worker.clone();
    let queued = tokio::spawn(async move { w.ask(Hold(Duration::from_secs(30))).await });
    assert!(matches!(
        crasher.await.unwrap(),
        Err(AskError::Crashed { .. })
    ));
    let queued = queued.await.unwrap();
    // Queued behind a crash: failed with Crashed, or (if it arrived after the restart)
    // answered by the new instance; never left hanging for its 30 s.
    assert!(
        matches!(queued, Err(AskError::Crashed { .. }) | Ok(())),
        "{queued:?}"
    );
    assert_eq!(worker.ask(Ping).await, Ok(1));
    root.shutdown().await;
}

/// Stops the worker in an orderly way (its work is done).
#[derive(Message)]
#[rtype(result = "()")]
struct Finish;

impl Handler<Finish> for Worker {
    type Result = ();
    fn handle(&mut self, _: Finish, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A worker that panics as soon as it starts, every time.
struct Doomed;

impl Actor for Doomed {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        panic!("doomed worker cannot start");
    }
}

fn dynamic_spec(max_children: usize) -> DynamicSpec {
    DynamicSpec {
        name: "workers".into(),
        max_children,
        child_prefix: "worker-".into(),
        mailbox_capacity: 4,
        deadline: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(1),
    }
}

/// A root supervisor holding `dynamic`, and a channel of the children that left it.
fn start_dynamic<A: Actor<Context = Context<A>>>(
    dynamic: &DynamicSupervisor<A>,
) -> (
    SupervisorRef,
    tokio::sync::mpsc::UnboundedReceiver<(String, ChildEnd)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    dynamic.on_child_end(move |key, end| {
        let _ = tx.send((key.to_owned(), end));
    });
    let mut root = SupervisorBuilder::new("root", Strategy::OneForOne, quick_policy(5));
    root.dynamic(dynamic, Restart::Permanent, Duration::from_secs(1));
    (root.start(), rx)
}

fn numbered(counter: &Arc<AtomicUsize>) -> impl Fn() -> Worker + Send + Sync + 'static {
    let counter = counter.clone();
    move || Worker {
        instance: counter.fetch_add(1, Ordering::SeqCst),
    }
}

#[actix_rt::test]
async fn dynamic_supervisor_refuses_children_beyond_its_limit_as_overloaded() {
    let dynamic = DynamicSupervisor::<Worker>::new(dynamic_spec(2), quick_policy(5));
    let (root, _ends) = start_dynamic(&dynamic);
    let counter = Arc::new(AtomicUsize::new(0));
    let here = actix_rt::Arbiter::current;
    let a = dynamic
        .try_start_child("a", here(), numbered(&counter))
        .unwrap();
    // A reserved slot counts toward the limit too.
    let permit = dynamic.reserve().expect("second slot");
    assert!(matches!(
        dynamic.try_start_child("c", here(), numbered(&counter)),
        Err(AskError::Overloaded { .. })
    ));
    assert!(matches!(
        dynamic.reserve(),
        Err(AskError::Overloaded { .. })
    ));
    // The same key is not started twice, and is not refused.
    let again = dynamic
        .try_start_child("a", here(), numbered(&counter))
        .unwrap();
    assert_eq!(again.name(), "worker-a");
    let b = dynamic.start_reserved(permit, "b", here(), numbered(&counter));
    assert_eq!(a.ask(Ping).await, Ok(0));
    assert_eq!(b.ask(Ping).await, Ok(1));
    // Past the limit on purpose: work that already exists must run.
    let c = dynamic.start_child("c", here(), numbered(&counter));
    assert_eq!(c.ask(Ping).await, Ok(2));
    assert_eq!(dynamic.len(), 3);
    let mut names = Vec::new();
    root.snapshot()
        .for_each_child(&mut |sup, c| names.push(format!("{sup}/{}", c.name)));
    assert_eq!(
        names,
        [
            "root/workers",
            "workers/worker-a",
            "workers/worker-b",
            "workers/worker-c"
        ]
    );
    root.shutdown().await;
}

#[actix_rt::test]
async fn dynamic_children_are_restarted_after_a_panic_and_removed_when_they_finish() {
    let dynamic = DynamicSupervisor::<Worker>::new(dynamic_spec(4), quick_policy(5));
    let (root, mut ends) = start_dynamic(&dynamic);
    let counter = Arc::new(AtomicUsize::new(0));
    let worker = dynamic.start_child("a", actix_rt::Arbiter::current(), numbered(&counter));
    assert_eq!(worker.ask(Ping).await, Ok(0));
    assert_eq!(
        worker.ask(Crash).await,
        Err(AskError::Crashed {
            actor: "worker-a".into()
        })
    );
    // Transient: a crash restarts a fresh instance behind the same handle.
    assert_eq!(worker.ask(Ping).await, Ok(1));
    assert_eq!(dynamic.crashes(), 1);
    assert_eq!(child_restarts(&root, "worker-a"), 1);
    let snap = root.snapshot();
    assert_eq!(
        snap.children[0]
            .supervisor
            .as_ref()
            .unwrap()
            .restarts_in_window,
        1
    );

    // A normal exit is the end of its work: removed, not restarted.
    worker.ask(Finish).await.unwrap();
    let (key, end) = ends.recv().await.expect("end reported");
    assert_eq!((key.as_str(), end), ("a", ChildEnd::Finished));
    assert!(dynamic.child("a").is_none());
    assert!(dynamic.is_empty());
    assert!(dynamic.snapshot().children.is_empty());
    assert_eq!(
        worker.ask(Ping).await,
        Err(AskError::Unavailable {
            actor: "worker-a".into()
        })
    );
    assert_eq!(
        counter.load(Ordering::SeqCst),
        2,
        "no restart after a normal exit"
    );
    root.shutdown().await;
}

#[actix_rt::test]
async fn a_dynamic_child_past_its_restart_budget_is_given_up_with_its_last_panic() {
    // Budget: 2 restarts, so the third crash gives up on the child.
    let dynamic = DynamicSupervisor::<Doomed>::new(dynamic_spec(4), quick_policy(2));
    let (root, mut ends) = start_dynamic(&dynamic);
    let handle = dynamic.start_child("x", actix_rt::Arbiter::current(), || Doomed);
    let (key, end) = ends.recv().await.expect("end reported");
    assert_eq!(key, "x");
    match end {
        ChildEnd::GaveUp(reason) => {
            assert!(reason.contains("doomed worker cannot start"), "{reason}")
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert_eq!(dynamic.crashes(), 3);
    assert!(dynamic.is_empty());
    assert_eq!(handle.liveness(), wayfare::supervisor::Liveness::Stopped);
    // One child's bad luck is not the supervisor's: it keeps running.
    let snap = root.snapshot();
    let workers = snap.children[0].supervisor.as_ref().unwrap();
    assert_eq!(workers.state, SupervisorState::Running);
    assert_eq!(workers.restarts_in_window, 2);
    assert!(snap.is_healthy());
    root.shutdown().await;
}

#[actix_rt::test]
async fn crashes_of_many_dynamic_children_count_toward_restart_intensity() {
    // Intensity: 2 restarts in the window; three children crashing once each exceed it.
    let dynamic = DynamicSupervisor::<Worker>::new(dynamic_spec(8), quick_policy(2));
    let (root, _ends) = start_dynamic(&dynamic);
    let counter = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|k| dynamic.start_child(k, actix_rt::Arbiter::current(), numbered(&counter)))
        .collect();
    for w in &workers {
        let _ = w.ask(Crash).await;
    }
    // The parent restarts the dynamic supervisor, which restarts the children it held.
    eventually(
        "the dynamic supervisor to be restarted by its parent",
        || child_restarts(&root, "workers") >= 1,
    )
    .await;
    for w in &workers {
        assert!(w.ask(Ping).await.is_ok());
    }
    assert_eq!(dynamic.len(), 3);
    root.shutdown().await;
}
