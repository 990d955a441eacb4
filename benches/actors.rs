//! Cost of an actor ask round trip, against a bare tokio mpsc + oneshot round trip on the
//! same runtime flavour (an actix system: tokio current-thread runtime + `LocalSet`).
//!
//! Variants, each echoing the same `u64` payload:
//! - same thread: a supervised echo actor on the current arbiter (`ActorHandle::ask`), the
//!   same actor kind through a bare actix `Addr::send`, and a tokio task fed by an mpsc
//!   channel answering on a oneshot;
//! - cross thread: a supervised echo actor on its own arbiter, and an mpsc task on its own
//!   arbiter (the shape `Runtime` has: shards live on arbiter threads);
//! - the real thing: `Runtime::account` on a temp-dir sled store; the account is
//!   published in the shards' read model after the first call, so this times the read
//!   model's path (no message: a shared lock, a clone), as the operator and as the
//!   account's own customer (key digest checked on the published entry).
//!
//! docs/architecture.md target: an actor ask costs at most 2x the mpsc + oneshot round trip.
//! The final lines print those ratios from the mean time per round trip this run saw
//! (criterion's own estimates are in its report above them).
//!
//! Run with: cargo bench --bench actors

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::Criterion;
use tokio::sync::{mpsc, oneshot};
use wayfare::domain::access::{ApiKey, Caller};
use wayfare::domain::account::AccountId;
use wayfare::supervisor::{ChildSpec, Restart, RestartPolicy, Strategy, SupervisorBuilder};
use wayfare::{Config, Runtime};

/// An actor that answers every [`Echo`] with its payload.
struct EchoActor;

impl Actor for EchoActor {
    type Context = Context<Self>;
}

/// Asks for the payload back.
#[derive(Message)]
#[rtype(result = "u64")]
struct Echo(u64);

impl Handler<Echo> for EchoActor {
    type Result = u64;
    fn handle(&mut self, Echo(v): Echo, _: &mut Context<Self>) -> u64 {
        v
    }
}

/// A request to the bare tokio echo task: the payload and where to answer.
type EchoRequest = (u64, oneshot::Sender<u64>);

/// Spawns the bare baseline: a task that answers each request on its oneshot.
fn spawn_echo_task(
    spawn: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
) -> mpsc::Sender<EchoRequest> {
    // Same bound as the supervised echo actor's mailbox, so neither side gets a deeper queue.
    let (tx, mut rx) = mpsc::channel::<EchoRequest>(MAILBOX);
    spawn(Box::pin(async move {
        while let Some((v, reply)) = rx.recv().await {
            let _ = reply.send(v);
        }
    }));
    tx
}

async fn mpsc_round_trip(tx: &mpsc::Sender<EchoRequest>, v: u64) -> u64 {
    let (reply, answer) = oneshot::channel();
    tx.send((v, reply)).await.expect("echo task alive");
    answer.await.expect("echo task answers")
}

const MAILBOX: usize = 1024;

fn spec(name: &str) -> ChildSpec {
    ChildSpec {
        name: name.to_owned(),
        restart: Restart::Permanent,
        mailbox_capacity: MAILBOX,
        deadline: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(1),
    }
}

fn policy() -> RestartPolicy {
    RestartPolicy {
        max_restarts: 10,
        within: Duration::from_secs(10),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(100),
        reset_after: Duration::from_secs(30),
    }
}

thread_local! {
    /// Total time and round trips seen per benchmark (warm-up included), for the ratio lines.
    static SEEN: RefCell<BTreeMap<&'static str, (Duration, u64)>> = const { RefCell::new(BTreeMap::new()) };
}

fn note(name: &'static str, elapsed: Duration, iters: u64) {
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        let e = s.entry(name).or_default();
        e.0 += elapsed;
        e.1 += iters;
    });
}

fn mean_ns(name: &str) -> Option<f64> {
    SEEN.with(|s| {
        s.borrow()
            .get(name)
            .map(|(d, n)| d.as_nanos() as f64 / (*n).max(1) as f64)
    })
}

/// Benchmarks `op` inside the actix system, timing `iters` sequential round trips.
macro_rules! round_trip {
    ($group:expr, $system:expr, $key:literal, $name:literal, |$i:ident| $op:expr) => {
        $group.bench_function($name, |b| {
            b.iter_custom(|iters| {
                let elapsed = $system.block_on(async {
                    let start = Instant::now();
                    for $i in 0..iters {
                        std::hint::black_box($op);
                    }
                    start.elapsed()
                });
                note($key, elapsed, iters);
                elapsed
            })
        });
    };
}

fn main() {
    let system = actix_rt::System::new();
    let data = tempfile::tempdir().expect("temp dir");
    let (local_ask, local_addr, local_tx, remote_ask, remote_tx, root, runtime, arbiter) = system
        .block_on(async {
            let arbiter = actix_rt::Arbiter::new();
            let mut sup = SupervisorBuilder::new("bench", Strategy::OneForOne, policy());
            let local_ask = sup.actor(spec("echo-local"), actix_rt::Arbiter::current(), || {
                EchoActor
            });
            let remote_ask = sup.actor(spec("echo-remote"), arbiter.handle(), || EchoActor);
            let root = sup.start();
            let local_addr = EchoActor.start();
            let local_tx = spawn_echo_task(|f| {
                actix_rt::spawn(f);
            });
            let remote_tx = spawn_echo_task(|f| {
                arbiter.spawn(f);
            });

            let mut config = Config::default();
            config.store.data_dir = data.path().to_owned();
            config.demo.accounts = 10;
            let runtime = Runtime::start(config).await.expect("runtime starts");
            // Let the supervised children come up before anything is timed.
            local_ask.ask(Echo(0)).await.expect("local echo up");
            remote_ask.ask(Echo(0)).await.expect("remote echo up");
            (
                local_ask, local_addr, local_tx, remote_ask, remote_tx, root, runtime, arbiter,
            )
        });
    let account = AccountId::demo(1);

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);

    let mut same = c.benchmark_group("round_trip/same_thread");
    round_trip!(same, system, "same/supervised_ask", "supervised_ask", |i| {
        local_ask.ask(Echo(i)).await.expect("echo")
    });
    round_trip!(
        same,
        system,
        "same/actix_addr_send",
        "actix_addr_send",
        |i| local_addr.send(Echo(i)).await.expect("echo")
    );
    round_trip!(
        same,
        system,
        "same/tokio_mpsc_oneshot",
        "tokio_mpsc_oneshot",
        |i| mpsc_round_trip(&local_tx, i).await
    );
    same.finish();

    let mut cross = c.benchmark_group("round_trip/cross_thread");
    round_trip!(
        cross,
        system,
        "cross/supervised_ask",
        "supervised_ask",
        |i| remote_ask.ask(Echo(i)).await.expect("echo")
    );
    round_trip!(
        cross,
        system,
        "cross/tokio_mpsc_oneshot",
        "tokio_mpsc_oneshot",
        |i| mpsc_round_trip(&remote_tx, i).await
    );
    round_trip!(
        cross,
        system,
        "cross/runtime_get_account",
        "runtime_get_account",
        |_i| runtime.account(account).await.expect("demo account")
    );
    let customer = Caller::Customer(ApiKey::demo(1).digest());
    round_trip!(
        cross,
        system,
        "cross/runtime_get_account_as_customer",
        "runtime_get_account_as_customer",
        |_i| runtime
            .account_as(customer, account)
            .await
            .expect("own demo account")
    );
    cross.finish();

    system.block_on(async {
        runtime.shutdown().await.expect("clean shutdown");
        root.shutdown().await;
    });
    arbiter.stop();
    c.final_summary();

    println!();
    println!("Mean time per round trip this run (warm-up included), as a ratio to mpsc + oneshot:");
    for (label, name, base) in [
        (
            "same thread, supervised ask",
            "same/supervised_ask",
            "same/tokio_mpsc_oneshot",
        ),
        (
            "same thread, bare actix Addr::send",
            "same/actix_addr_send",
            "same/tokio_mpsc_oneshot",
        ),
        (
            "cross thread, supervised ask",
            "cross/supervised_ask",
            "cross/tokio_mpsc_oneshot",
        ),
        (
            "Runtime::account (read model hit, operator)",
            "cross/runtime_get_account",
            "cross/tokio_mpsc_oneshot",
        ),
        (
            "Runtime::account_as (read model hit, own API key)",
            "cross/runtime_get_account_as_customer",
            "cross/tokio_mpsc_oneshot",
        ),
    ] {
        if let (Some(a), Some(b)) = (mean_ns(name), mean_ns(base)) {
            println!("ratio {label}: {a:.0} ns / {b:.0} ns = {:.2}x", a / b);
        }
    }
}
