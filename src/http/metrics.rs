//! Prometheus metrics: HTTP request counts and latencies recorded by the middleware, plus
//! actor figures read from the supervision tree at scrape time (so they are never stale
//! and cost nothing per request).

use std::fmt::Write as _;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

use std::sync::atomic::Ordering;

use crate::actors::coordinator::SagaCounts;
use crate::actors::guard::LATENCY_BUCKETS_MS;
use crate::domain::breaker::BreakerState;
use crate::faults::FaultCounts;
use crate::supervisor::{ChildState, SupervisorSnapshot, SupervisorState};
use crate::Runtime;

/// The HTTP layer's metrics.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetrics {
    /// Registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "wayfare_http_requests_total",
                "HTTP requests by route and status.",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "wayfare_http_request_duration_seconds",
                "HTTP request latency by route.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(latency.clone()))
            .expect("unique metric");
        HttpMetrics {
            registry,
            requests,
            latency,
        }
    }

    /// Records one finished request. `route` is the route pattern, never the raw path, so
    /// label cardinality stays bounded.
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition: registered metrics plus the runtime's actor, seller and
    /// search figures.
    pub fn render(&self, runtime: &Runtime, sagas: Option<&SagaCounts>) -> String {
        let mut out = TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default();
        render_tree(&mut out, &runtime.supervision_tree());
        render_sellers(&mut out, runtime);
        if let Some(sagas) = sagas {
            render_sagas(&mut out, sagas);
        }
        if runtime.config().faults.enabled {
            render_faults(&mut out, &runtime.fault_counts());
        }
        let sent = runtime.mailer_stats().sent.load(Ordering::Relaxed);
        let failed = runtime.mailer_stats().failed.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP wayfare_emails_sent_total Emails accepted by the transport (at least once).\n# TYPE wayfare_emails_sent_total counter\nwayfare_emails_sent_total {sent}\n\
             # HELP wayfare_email_failures_total Email transport failures (retried).\n# TYPE wayfare_email_failures_total counter\nwayfare_email_failures_total {failed}\n"
        );
        out
    }
}

fn render_tree(out: &mut String, tree: &SupervisorSnapshot) {
    let mut depth = String::new();
    let mut restarts = String::new();
    let mut up = String::new();
    tree.for_each_child(&mut |sup, child| {
        let _ = writeln!(
            restarts,
            "wayfare_actor_restarts_total{{supervisor=\"{sup}\",child=\"{}\"}} {}",
            child.name, child.restarts
        );
        let _ = writeln!(
            up,
            "wayfare_actor_up{{supervisor=\"{sup}\",child=\"{}\"}} {}",
            child.name,
            u8::from(child.state == ChildState::Running)
        );
        if let (Some(d), Some(c)) = (child.mailbox_depth, child.mailbox_capacity) {
            let _ = writeln!(
                depth,
                "wayfare_actor_mailbox_depth{{child=\"{}\",capacity=\"{c}\"}} {d}",
                child.name
            );
        }
    });
    let mut sups = String::new();
    tree.for_each_supervisor(&mut |s| {
        let _ = writeln!(
            sups,
            "wayfare_supervisor_up{{supervisor=\"{}\"}} {}",
            s.name,
            u8::from(s.state == SupervisorState::Running)
        );
    });
    let _ = write!(
        out,
        "# HELP wayfare_actor_mailbox_depth Requests queued or in flight per actor.\n# TYPE wayfare_actor_mailbox_depth gauge\n{depth}\
         # HELP wayfare_actor_restarts_total Restarts per supervised child.\n# TYPE wayfare_actor_restarts_total counter\n{restarts}\
         # HELP wayfare_actor_up 1 when the child is running.\n# TYPE wayfare_actor_up gauge\n{up}\
         # HELP wayfare_supervisor_up 1 when the supervisor is within its restart intensity.\n# TYPE wayfare_supervisor_up gauge\n{sups}"
    );
}

fn render_sellers(out: &mut String, runtime: &Runtime) {
    let sellers = runtime.seller_stats();
    let counter = |out: &mut String,
                   name: &str,
                   help: &str,
                   get: &dyn Fn(&crate::actors::guard::PartnerStats) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (seller, stats) in sellers {
            let _ = writeln!(out, "{name}{{seller=\"{seller}\"}} {}", get(stats));
        }
    };
    let r = Ordering::Relaxed;
    counter(
        out,
        "wayfare_seller_calls_total",
        "Calls made to the seller, retries included.",
        &|s| s.calls.load(r),
    );
    counter(
        out,
        "wayfare_seller_failures_total",
        "Seller calls that failed or timed out.",
        &|s| s.failures.load(r),
    );
    counter(
        out,
        "wayfare_seller_timeouts_total",
        "Seller calls that timed out.",
        &|s| s.timeouts.load(r),
    );
    counter(
        out,
        "wayfare_seller_short_circuited_total",
        "Calls refused because the breaker was open.",
        &|s| s.short_circuited.load(r),
    );
    counter(
        out,
        "wayfare_seller_bulkhead_rejected_total",
        "Calls refused because the bulkhead was full.",
        &|s| s.bulkhead_rejected.load(r),
    );
    counter(
        out,
        "wayfare_seller_throttled_total",
        "Searches refused by the look-to-book meter.",
        &|s| s.throttled.load(r),
    );
    counter(
        out,
        "wayfare_seller_searches_total",
        "Searches sent (look-to-book numerator).",
        &|s| s.searches.load(r),
    );
    counter(
        out,
        "wayfare_seller_bookings_total",
        "Bookings confirmed (look-to-book denominator).",
        &|s| s.bookings.load(r),
    );
    let _ = writeln!(out, "# HELP wayfare_seller_breaker_state 0 closed, 1 half-open, 2 open.\n# TYPE wayfare_seller_breaker_state gauge");
    for (seller, stats) in sellers {
        let v = match stats.breaker_state() {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        let _ = writeln!(
            out,
            "wayfare_seller_breaker_state{{seller=\"{seller}\"}} {v}"
        );
    }
    let _ = writeln!(out, "# HELP wayfare_seller_call_duration_seconds Seller call latency.\n# TYPE wayfare_seller_call_duration_seconds histogram");
    for (seller, stats) in sellers {
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += stats.latency_buckets[i].load(r);
            let _ = writeln!(out, "wayfare_seller_call_duration_seconds_bucket{{seller=\"{seller}\",le=\"{}\"}} {cumulative}", *bound as f64 / 1000.0);
        }
        cumulative += stats.latency_buckets[LATENCY_BUCKETS_MS.len()].load(r);
        let _ = writeln!(out, "wayfare_seller_call_duration_seconds_bucket{{seller=\"{seller}\",le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "wayfare_seller_call_duration_seconds_sum{{seller=\"{seller}\"}} {}",
            stats.latency_us_sum.load(r) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "wayfare_seller_call_duration_seconds_count{{seller=\"{seller}\"}} {cumulative}"
        );
    }
    let search = runtime.search_stats();
    for (name, help, v) in [
        (
            "wayfare_search_cache_hits_total",
            "Searches answered from the cache.",
            search.cache_hits.load(r),
        ),
        (
            "wayfare_search_cache_misses_total",
            "Searches that needed a fan-out.",
            search.cache_misses.load(r),
        ),
        (
            "wayfare_search_coalesced_total",
            "Searches that joined a fan-out in flight.",
            search.coalesced.load(r),
        ),
        (
            "wayfare_search_fan_outs_total",
            "Fan-outs started.",
            search.fan_outs.load(r),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
}

fn render_sagas(out: &mut String, sagas: &SagaCounts) {
    let _ = writeln!(out, "# HELP wayfare_sagas Sagas by state (outcomes of bookings and cancellations).\n# TYPE wayfare_sagas gauge");
    for state in [
        "pending",
        "payment_authorized",
        "seller_confirmed",
        "confirmed",
        "compensating",
        "failed",
        "cancelled",
        "needs_attention",
    ] {
        let n = sagas.by_state.get(state).copied().unwrap_or(0);
        let _ = writeln!(out, "wayfare_sagas{{state=\"{state}\"}} {n}");
    }
    let _ = write!(
        out,
        "# HELP wayfare_sagas_running Saga actors running.\n# TYPE wayfare_sagas_running gauge\nwayfare_sagas_running {}\n\
         # HELP wayfare_saga_crashes_total Saga actor crashes (each restarted from its record).\n# TYPE wayfare_saga_crashes_total counter\nwayfare_saga_crashes_total {}\n",
        sagas.running, sagas.crashes
    );
}

/// Faults fired on purpose (`[faults]`), so a drill can be read off the same dashboards.
fn render_faults(out: &mut String, faults: &FaultCounts) {
    let _ = writeln!(out, "# HELP wayfare_faults_injected_total Faults fired on purpose by [faults], by kind.\n# TYPE wayfare_faults_injected_total counter");
    for (kind, n) in faults.rows() {
        let _ = writeln!(out, "wayfare_faults_injected_total{{kind=\"{kind}\"}} {n}");
    }
}
