//! What the drill drives and against what: the plan, the outside world (sellers and a
//! gateway that outlive a runtime restart) and the runtime configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wayfare::actors::seller::AdapterConfig;
use wayfare::config::FaultsConfig;
use wayfare::faults::ActorKind;
use wayfare::payments::{SimulatedGateway, SimulatedGatewayConfig};
use wayfare::sellers::simulated::{SimulatedSeller, SimulatedSellerConfig};
use wayfare::sellers::Vertical;
use wayfare::{Config, CustomSeller, Error, Runtime};

/// Pause between attempts to take the data directory after a stop.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Longest wait for the data directory's lock after the first runtime stopped.
const RESTART_WITHIN: Duration = Duration::from_secs(10);

/// What to drive and for how long.
#[derive(Debug, Clone)]
pub struct ChaosPlan {
    /// Data directory of the runtime (both starts); should be empty.
    pub data_dir: PathBuf,
    /// Longest the traffic phase runs before the restart.
    pub duration: Duration,
    /// Operations (searches, bookings, resubmissions, cancellations, credits) at most.
    pub max_ops: u64,
    /// Clients issuing operations at once.
    pub concurrency: usize,
    /// Accounts the traffic is spread over.
    pub accounts: u64,
    /// Seed of the plan (operations, accounts, cards, dates).
    pub seed: u64,
    /// The faults (`enabled` is forced on).
    pub faults: FaultsConfig,
    /// Longest wait for every booking to settle after the restart.
    pub settle_within: Duration,
}

impl ChaosPlan {
    /// A drill of up to thirty seconds of traffic with [`default_faults`].
    pub fn new(data_dir: PathBuf) -> Self {
        ChaosPlan {
            data_dir,
            duration: Duration::from_secs(30),
            max_ops: 20_000,
            concurrency: 8,
            accounts: 20,
            seed: 0xC4A0_5EED,
            faults: default_faults(),
            settle_within: Duration::from_secs(60),
        }
    }

    /// A short drill (a few seconds of traffic), for tests and `--quick`.
    pub fn quick(data_dir: PathBuf) -> Self {
        ChaosPlan {
            duration: Duration::from_secs(5),
            max_ops: 1_500,
            concurrency: 6,
            accounts: 10,
            settle_within: Duration::from_secs(30),
            ..ChaosPlan::new(data_dir)
        }
    }
}

/// Every kind of fault at a low rate: enough to fire hundreds of times in a drill, low
/// enough that retry budgets usually win (what is left is parked, which is allowed).
pub fn default_faults() -> FaultsConfig {
    FaultsConfig {
        enabled: true,
        account_reply_delay_ms: 0,
        account_panic_rate: 0.0,
        panic_rate: 0.01,
        panic_actors: ActorKind::ALL.to_vec(),
        store_write_delay_ms: 2,
        store_write_failure_rate: 0.02,
        seller_failure_rate: 0.05,
        seller_hang_rate: 0.02,
        seller_garbage_rate: 0.03,
        payment_failure_rate: 0.05,
        payment_hang_rate: 0.02,
    }
}

/// The outside world of the drill: sellers and a payment gateway that outlive runtime
/// restarts and whose books are read by the checks.
#[derive(Debug, Clone)]
pub struct ChaosWorld {
    /// Simulated sellers of hotels and flights.
    pub sellers: Vec<SimulatedSeller>,
    /// The simulated card gateway.
    pub gateway: SimulatedGateway,
}

impl ChaosWorld {
    /// Two sellers with the whole catalog and quick answers, and a quick gateway.
    pub fn new(seed: u64) -> Self {
        let seller = |name: &str, n: u64| {
            SimulatedSeller::new(SimulatedSellerConfig {
                name: name.into(),
                seed: seed.wrapping_add(n),
                latency_ms: (2, 20),
                coverage: 1.0,
                // A business refusal now and then; the faults come from `[faults]`.
                reject_rate: 0.05,
                ..SimulatedSellerConfig::default()
            })
            .expect("valid simulated seller config")
        };
        ChaosWorld {
            sellers: vec![seller("alpha", 1), seller("bravo", 2)],
            gateway: SimulatedGateway::new(SimulatedGatewayConfig {
                latency_min_ms: 1,
                latency_max_ms: 5,
                seed,
                ..SimulatedGatewayConfig::default()
            }),
        }
    }
}

/// The runtime configuration of the drill: short timeouts and backoffs so sagas retry
/// quickly, and restart intensity high enough that injected panics are restarted rather
/// than escalated (the drill is about consistency under crashes, not the intensity limit).
pub fn drill_config(plan: &ChaosPlan) -> Config {
    let mut config = Config::default();
    config.store.data_dir = plan.data_dir.clone();
    config.runtime.arbiters = 2;
    config.accounts.shards = 4;
    config.search.aggregators = 2;
    config.search.deadline_ms = 400;
    config.supervisor.max_restarts = 100_000;
    config.supervisor.backoff_min_ms = 1;
    config.supervisor.backoff_max_ms = 50;
    config.bookings.step_timeout_ms = 500;
    config.bookings.saga.backoff_base_ms = 10;
    config.bookings.saga.backoff_max_ms = 200;
    config.log.level = "warn".into();
    config.faults = FaultsConfig {
        enabled: true,
        ..plan.faults.clone()
    };
    config
}

fn adapter_config() -> AdapterConfig {
    let mut adapter = AdapterConfig {
        call_timeout_ms: 200,
        ..AdapterConfig::default()
    };
    adapter.breaker.open_ms = 300;
    adapter
}

/// Starts a runtime of the drill over `world`, waiting (bounded) for the data directory
/// of a runtime that just stopped to be released.
pub async fn start_runtime(plan: &ChaosPlan, world: &ChaosWorld) -> Result<Runtime, Error> {
    let deadline = Instant::now() + RESTART_WITHIN;
    loop {
        let mut builder =
            Runtime::builder(drill_config(plan)).payment_gateway(Arc::new(world.gateway.clone()));
        for seller in &world.sellers {
            builder = builder.seller(CustomSeller {
                api: Arc::new(seller.clone()),
                verticals: vec![Vertical::Hotel, Vertical::Flight],
                adapter: adapter_config(),
            });
        }
        match builder.start().await {
            Ok(runtime) => return Ok(runtime),
            // sled's file lock is released once the last handle of the old store drops.
            Err(Error::Store(e)) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "Data directory not released yet; retrying.");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}
