//! A short chaos drill (`wayfare_drill::run`, the logic behind `examples/chaos.rs`): traffic
//! while every kind of fault fires, a restart on the same data directory, settling, and
//! the invariant checks, which must find nothing. That the checks can fail is tested in
//! `wayfare-drill/src/check.rs` by planting violations; here a run with no faults fired would prove
//! nothing, so the test also insists that faults of every kind did fire.

use std::time::Duration;

use wayfare::config::LogFormat;
use wayfare_drill::{ChaosPlan, ChaosWorld};

#[actix_rt::test]
async fn bookings_stay_consistent_while_faults_fire() {
    wayfare::telemetry::init(LogFormat::Human, "off");
    let dir = tempfile::tempdir().unwrap();
    let mut plan = ChaosPlan::quick(dir.path().to_owned());
    plan.duration = Duration::from_secs(4);
    plan.max_ops = 400;
    // Higher rates than the defaults, so a short run still fires every kind of fault.
    plan.faults.panic_rate = 0.03;
    plan.faults.store_write_failure_rate = 0.05;
    plan.faults.seller_garbage_rate = 0.05;
    plan.faults.payment_hang_rate = 0.05;
    let world = ChaosWorld::new(plan.seed);
    let report = wayfare_drill::run(&plan, &world)
        .await
        .expect("the drill runs");
    println!("{report}");

    assert!(
        report.violations.is_empty(),
        "{} violations:\n{report}",
        report.violations.len()
    );
    let ops = |kind: &str| report.ops.get(kind).copied().unwrap_or_default();
    assert!(
        ops("book").succeeded > 10,
        "too few bookings to mean anything:\n{report}"
    );
    assert!(ops("search").succeeded > 10, "{report}");
    let f = report.faults;
    for (kind, fired) in [
        (
            "panics",
            f.account_panics + f.seller_panics + f.search_panics + f.saga_panics,
        ),
        ("store write failures", f.store_write_failures),
        ("store write delays", f.store_write_delays),
        ("seller failures", f.seller_failures),
        ("seller garbage", f.seller_garbage),
        ("payment failures", f.payment_failures),
    ] {
        assert!(fired > 0, "no {kind} fired:\n{report}");
    }
    let settled: usize = report.bookings.values().sum();
    assert!(settled > 0 && report.unsettled == 0, "{report}");
}
