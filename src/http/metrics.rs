//! Prometheus metrics on one registry: HTTP request counts and latencies recorded by the
//! middleware, rate-limit refusals, and collectors that read the runtime's snapshots at
//! scrape time (actor mailboxes and restarts, supervisors, sellers and their breakers,
//! search, sagas, email, injected faults), so those figures are never stale and cost
//! nothing per request.
//!
//! The exposition text is the `prometheus` crate's `TextEncoder`, which escapes label
//! values: seller names come from config and must not be able to break a scrape.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::Method;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::actors::guard::{PartnerStats, LATENCY_BUCKETS_MS};
use crate::domain::breaker::BreakerState;
use crate::domain::saga::SagaCounts;
use crate::supervisor::{ChildState, SupervisorState};
use crate::Runtime;

/// The API's metrics: one registry, everything registered once at start.
#[derive(Clone)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    rate_limited: IntCounterVec,
    /// Each route's series, resolved once: by [`RouteIndex`](super::router::RouteIndex),
    /// then the requests that matched no route.
    routes: Arc<[RouteSeries]>,
    /// The saga figures of the scrape in progress: asking the coordinator is async, and a
    /// collector is not, so the `/metrics` handler fetches them and hands them over here.
    sagas: Arc<Mutex<Option<SagaCounts>>>,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics").finish_non_exhaustive()
    }
}

impl HttpMetrics {
    /// Registers the request metrics and the collectors that read `runtime` at scrape time.
    pub fn new(runtime: Runtime) -> Self {
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
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "wayfare_http_rate_limited_total",
                "Requests refused with 429 by the rate limits, by bucket (key, address or \
                 account_creation).",
            ),
            &["scope"],
        )
        .expect("valid metric");
        for scope in super::limits::Scope::ALL {
            rate_limited.with_label_values(&[scope.label()]);
        }
        let sagas = Arc::new(Mutex::new(None));
        let faults_enabled = runtime.config().faults.enabled;
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(rate_limited.clone()),
            Box::new(Scrape::new(TREE, {
                let runtime = runtime.clone();
                move |out| collect_tree(&runtime, out)
            })),
            Box::new(Scrape::new(SELLERS, {
                let runtime = runtime.clone();
                move |out| collect_sellers(&runtime, out)
            })),
            Box::new(Scrape::new(GATEWAY, {
                let runtime = runtime.clone();
                move |out| collect_gateway(&runtime, out)
            })),
            Box::new(Scrape::new(SEARCH_AND_EMAIL, {
                let runtime = runtime.clone();
                move |out| collect_search_and_email(&runtime, out)
            })),
            Box::new(Scrape::new(UNTRUSTED, |out| {
                for (partner, kind) in crate::partner_counts::ALL {
                    let n = crate::partner_counts::count(partner, kind);
                    out[0].sample(&[partner.as_str(), kind.as_str()], n as f64);
                }
            })),
            Box::new(Scrape::new(SAGAS, {
                let sagas = Arc::clone(&sagas);
                move |out| {
                    let latest = sagas.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(counts) = latest.as_ref() {
                        collect_sagas(counts, out);
                    }
                }
            })),
        ];
        for collector in collectors {
            registry.register(collector).expect("unique metric");
        }
        // Fault counters exist only while fault injection is on, so a production scrape
        // never shows a drill's vocabulary.
        if faults_enabled {
            let collector = Scrape::new(FAULTS, move |out| {
                for (kind, n) in runtime.fault_counts().rows() {
                    out[0].sample(&[kind], n as f64);
                }
            });
            registry
                .register(Box::new(collector))
                .expect("unique metric");
        }
        // Only while spans are exported: with telemetry off there is nothing to drop.
        if crate::telemetry::enabled() {
            let collector = Scrape::new(TRACES, |out| {
                out[0].sample(&[], crate::telemetry::dropped_spans() as f64);
            });
            registry
                .register(Box::new(collector))
                .expect("unique metric");
        }
        let routes = super::router()
            .paths_in_order()
            .into_iter()
            .chain(std::iter::once(UNMATCHED.to_owned()))
            .map(|route| RouteSeries {
                latency: latency.with_label_values(&[&route]),
                counts: std::sync::RwLock::default(),
                route,
            })
            .collect();
        HttpMetrics {
            registry,
            requests,
            rate_limited,
            routes,
            sagas,
        }
    }

    /// Records one finished request on its route, the [`RouteIndex`](super::router::RouteIndex)
    /// it was routed to (`None`: no route matched). Labels carry the route pattern, never
    /// the raw path, so their cardinality stays bounded.
    pub(crate) fn observe(
        &self,
        method: &Method,
        route: Option<usize>,
        status: u16,
        elapsed: Duration,
    ) {
        let unmatched = self.routes.len() - 1;
        let series = &self.routes[route.filter(|&i| i < unmatched).unwrap_or(unmatched)];
        series.latency.observe(elapsed.as_secs_f64());
        series.count(&self.requests, method, status).inc();
    }

    /// The index of the route whose pattern is `pattern`, for a request that was refused
    /// before it reached its resource.
    pub(crate) fn route_index(&self, pattern: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|series| series.route == pattern)
    }

    /// Counts one request refused by the rate limits; `scope` is `key` or `address`.
    pub fn rate_limited(&self, scope: &str) {
        self.rate_limited.with_label_values(&[scope]).inc();
    }

    /// The text exposition of every metric; `sagas` are this scrape's saga figures (left
    /// out when the coordinator could not answer).
    pub fn render(&self, sagas: Option<SagaCounts>) -> String {
        *self.sagas.lock().unwrap_or_else(|e| e.into_inner()) = sagas;
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "Metrics did not encode.");
                String::new()
            })
    }
}

/// The `route` label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// One route's series: its latency histogram, and a counter per method and status seen
/// so far (a handful per route), so a request costs no label hashing.
struct RouteSeries {
    route: String,
    latency: Histogram,
    counts: std::sync::RwLock<Vec<(Method, u16, IntCounter)>>,
}

impl RouteSeries {
    /// The counter of `method` and `status` on this route, made on first use.
    fn count(&self, requests: &IntCounterVec, method: &Method, status: u16) -> IntCounter {
        let seen = |counts: &[(Method, u16, IntCounter)]| {
            counts
                .iter()
                .find(|(m, s, _)| *s == status && m == method)
                .map(|(_, _, c)| c.clone())
        };
        if let Some(counter) = seen(&self.counts.read().unwrap_or_else(|e| e.into_inner())) {
            return counter;
        }
        let mut counts = self.counts.write().unwrap_or_else(|e| e.into_inner());
        if let Some(counter) = seen(&counts) {
            return counter;
        }
        let counter =
            requests.with_label_values(&[method.as_str(), &self.route, &status.to_string()]);
        counts.push((method.clone(), status, counter.clone()));
        counter
    }
}

/// A metric family a scrape-time collector emits.
struct Spec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const fn spec(
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        help,
        kind,
        labels,
    }
}

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

const TREE: &[Spec] = &[
    spec(
        "wayfare_actor_mailbox_depth",
        "Requests queued or in flight per actor.",
        GAUGE,
        &["child", "capacity"],
    ),
    spec(
        "wayfare_actor_restarts_total",
        "Restarts per supervised child.",
        COUNTER,
        &["supervisor", "child"],
    ),
    spec(
        "wayfare_actor_up",
        "1 when the child is running.",
        GAUGE,
        &["supervisor", "child"],
    ),
    spec(
        "wayfare_supervisor_up",
        "1 when the supervisor is within its restart intensity.",
        GAUGE,
        &["supervisor"],
    ),
];

const SELLERS: &[Spec] = &[
    spec(
        "wayfare_seller_calls_total",
        "Calls made to the seller, retries included.",
        COUNTER,
        &["seller"],
    ),
    spec(
        "wayfare_seller_failures_total",
        "Seller calls that failed or timed out.",
        COUNTER,
        &["seller"],
    ),
    spec(
        "wayfare_seller_timeouts_total",
        "Seller calls that timed out.",
        COUNTER,
        &["seller"],
    ),
    spec(
        "wayfare_seller_short_circuited_total",
        "Calls refused because the breaker was open.",
        COUNTER,
        &["seller"],
    ),
    spec(
        "wayfare_seller_bulkhead_rejected_total",
        "Calls refused because the bulkhead was full.",
        COUNTER,
        &["seller"],
    ),
    spec(
        "wayfare_seller_throttled_total",
        "Searches refused by the look-to-book meter.",
        COUNTER,
        &["seller"],
    ),
    spec(
        "wayfare_seller_searches_total",
        "Searches sent (look-to-book numerator).",
        COUNTER,
        &["seller"],
    ),
    spec(
        "wayfare_seller_bookings_total",
        "Bookings confirmed (look-to-book denominator).",
        COUNTER,
        &["seller"],
    ),
    spec(
        "wayfare_seller_breaker_state",
        "0 closed, 1 half-open, 2 open.",
        GAUGE,
        &["seller"],
    ),
    spec(
        "wayfare_seller_call_duration_seconds",
        "Seller call latency.",
        HISTOGRAM,
        &["seller"],
    ),
];

const GATEWAY: &[Spec] = &[
    spec(
        "wayfare_payment_gateway_calls_total",
        "Calls made to the payment gateway.",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_payment_gateway_failures_total",
        "Gateway calls that got no answer (timeout, unavailable).",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_payment_gateway_timeouts_total",
        "Gateway calls that timed out (unknown outcome, reconciled by key).",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_payment_gateway_short_circuited_total",
        "Gateway calls refused because the breaker was open.",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_payment_gateway_bulkhead_rejected_total",
        "Gateway calls refused because the bulkhead was full.",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_payment_gateway_breaker_state",
        "0 closed, 1 half-open, 2 open.",
        GAUGE,
        &[],
    ),
    spec(
        "wayfare_payment_gateway_call_duration_seconds",
        "Payment gateway call latency.",
        HISTOGRAM,
        &[],
    ),
];

const SEARCH_AND_EMAIL: &[Spec] = &[
    spec(
        "wayfare_search_cache_hits_total",
        "Searches answered from the cache.",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_search_cache_misses_total",
        "Searches that needed a fan-out.",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_search_coalesced_total",
        "Searches that joined a fan-out in flight.",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_search_fan_outs_total",
        "Fan-outs started.",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_search_aggregator_searches_total",
        "Searches that reached an aggregator (hits answered by its cache view do not).",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_search_cached_results",
        "Results the aggregators' caches hold, expired ones until purged.",
        GAUGE,
        &[],
    ),
    spec(
        "wayfare_emails_sent_total",
        "Emails accepted by the transport (at least once).",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_email_failures_total",
        "Email transport failures (retried until an email's last attempt).",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_emails_repeated_total",
        "Emails sent again after an attempt whose outcome was never recorded (the transport \
         may have had them already; their Message-ID lets the receiver drop the repeat).",
        COUNTER,
        &[],
    ),
    spec(
        "wayfare_emails_parked",
        "Emails parked after their last failed attempt, waiting for an operator.",
        GAUGE,
        &[],
    ),
];

const SAGAS: &[Spec] = &[
    spec(
        "wayfare_sagas",
        "Sagas by state (outcomes of bookings and cancellations).",
        GAUGE,
        &["state"],
    ),
    spec("wayfare_sagas_running", "Saga actors running.", GAUGE, &[]),
    spec(
        "wayfare_saga_crashes_total",
        "Saga actor crashes (each restarted from its record).",
        COUNTER,
        &[],
    ),
];

const UNTRUSTED: &[Spec] = &[spec(
    "wayfare_partner_untrusted_replies_total",
    "Partner replies not taken at their word, by partner (seller, gateway) and kind \
     (redirect: never followed; amount_mismatch: a confirmed price or a payment amount \
     other than the one asked). Process-wide.",
    COUNTER,
    &["partner", "kind"],
)];

const TRACES: &[Spec] = &[spec(
    "wayfare_trace_spans_dropped_total",
    "Finished spans never delivered to the OTLP collector: the export queue was full \
     (telemetry.max_queue) or the collector failed or timed out. Process-wide.",
    COUNTER,
    &[],
)];

const FAULTS: &[Spec] = &[spec(
    "wayfare_faults_injected_total",
    "Faults fired on purpose by [faults], by kind.",
    COUNTER,
    &["kind"],
)];

/// One family being filled during a scrape.
struct Family<'s> {
    spec: &'s Spec,
    family: MetricFamily,
}

impl Family<'_> {
    /// A metric with `values` for the spec's labels (in order).
    fn metric(&self, values: &[&str]) -> proto::Metric {
        debug_assert_eq!(values.len(), self.spec.labels.len(), "{}", self.spec.name);
        let labels = self
            .spec
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut pair = proto::LabelPair::default();
                pair.set_name((*name).to_owned());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect();
        let mut metric = proto::Metric::default();
        metric.set_label(labels);
        metric
    }

    /// Adds a counter or gauge sample.
    fn sample(&mut self, values: &[&str], value: f64) {
        let mut metric = self.metric(values);
        if self.spec.kind == COUNTER {
            let mut counter = proto::Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        } else {
            let mut gauge = proto::Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
        self.family.mut_metric().push(metric);
    }

    /// Adds a histogram sample from cumulative `(upper bound, count)` buckets.
    fn histogram(&mut self, values: &[&str], buckets: &[(f64, u64)], count: u64, sum: f64) {
        let mut metric = self.metric(values);
        let mut histogram = proto::Histogram::default();
        histogram.set_bucket(
            buckets
                .iter()
                .map(|&(bound, n)| {
                    let mut bucket = proto::Bucket::default();
                    bucket.set_upper_bound(bound);
                    bucket.set_cumulative_count(n);
                    bucket
                })
                .collect(),
        );
        histogram.set_sample_count(count);
        histogram.set_sample_sum(sum);
        metric.set_histogram(histogram);
        self.family.mut_metric().push(metric);
    }
}

/// A collector whose figures are read when scraped: `read` fills one [`Family`] per spec,
/// in the order of the specs.
struct Scrape<F> {
    specs: &'static [Spec],
    descs: Vec<Desc>,
    read: F,
}

impl<F: Fn(&mut [Family<'static>])> Scrape<F> {
    fn new(specs: &'static [Spec], read: F) -> Self {
        let descs = specs
            .iter()
            .map(|s| {
                let labels = s.labels.iter().map(|l| (*l).to_owned()).collect();
                Desc::new(s.name.to_owned(), s.help.to_owned(), labels, HashMap::new())
                    .expect("valid metric description")
            })
            .collect();
        Scrape { specs, descs, read }
    }
}

impl<F: Fn(&mut [Family<'static>]) + Send + Sync> Collector for Scrape<F> {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families: Vec<Family<'static>> = self
            .specs
            .iter()
            .map(|spec| {
                let mut family = MetricFamily::default();
                family.set_name(spec.name.to_owned());
                family.set_help(spec.help.to_owned());
                family.set_field_type(spec.kind);
                Family { spec, family }
            })
            .collect();
        (self.read)(&mut families);
        families.into_iter().map(|f| f.family).collect()
    }
}

fn collect_tree(runtime: &Runtime, out: &mut [Family<'static>]) {
    let tree = runtime.supervision_tree();
    tree.for_each_child(&mut |sup, child| {
        if let (Some(depth), Some(capacity)) = (child.mailbox_depth, child.mailbox_capacity) {
            out[0].sample(&[&child.name, &capacity.to_string()], depth as f64);
        }
        out[1].sample(&[sup, &child.name], child.restarts as f64);
        let up = u8::from(child.state == ChildState::Running);
        out[2].sample(&[sup, &child.name], f64::from(up));
    });
    tree.for_each_supervisor(&mut |s| {
        let up = u8::from(s.state == SupervisorState::Running);
        out[3].sample(&[&s.name], f64::from(up));
    });
}

fn collect_sellers(runtime: &Runtime, out: &mut [Family<'static>]) {
    let r = Ordering::Relaxed;
    for (seller, stats) in runtime.seller_stats() {
        let counters = [
            &stats.calls,
            &stats.failures,
            &stats.timeouts,
            &stats.short_circuited,
            &stats.bulkhead_rejected,
            &stats.throttled,
            &stats.searches,
            &stats.bookings,
        ];
        for (family, counter) in out.iter_mut().zip(counters) {
            family.sample(&[seller], counter.load(r) as f64);
        }
        out[8].sample(&[seller], breaker_value(stats));
        let (buckets, count, sum) = latency_histogram(stats);
        out[9].histogram(&[seller], &buckets, count, sum);
    }
}

/// The payment gateway's adapter: the same figures as a seller's, without look-to-book.
fn collect_gateway(runtime: &Runtime, out: &mut [Family<'static>]) {
    let stats = runtime.gateway_stats();
    let counters = [
        &stats.calls,
        &stats.failures,
        &stats.timeouts,
        &stats.short_circuited,
        &stats.bulkhead_rejected,
    ];
    for (family, counter) in out.iter_mut().zip(counters) {
        family.sample(&[], counter.load(Ordering::Relaxed) as f64);
    }
    out[5].sample(&[], breaker_value(stats));
    let (buckets, count, sum) = latency_histogram(stats);
    out[6].histogram(&[], &buckets, count, sum);
}

/// 0 closed, 1 half-open, 2 open.
fn breaker_value(stats: &PartnerStats) -> f64 {
    match stats.breaker_state() {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
    }
}

/// Cumulative buckets (upper bound in seconds, count), count and sum of call latencies.
fn latency_histogram(stats: &PartnerStats) -> (Vec<(f64, u64)>, u64, f64) {
    let r = Ordering::Relaxed;
    let mut cumulative = 0;
    let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_MS
        .iter()
        .enumerate()
        .map(|(i, bound_ms)| {
            cumulative += stats.latency_buckets[i].load(r);
            (*bound_ms as f64 / 1000.0, cumulative)
        })
        .collect();
    cumulative += stats.latency_buckets[LATENCY_BUCKETS_MS.len()].load(r);
    (
        buckets,
        cumulative,
        stats.latency_us_sum.load(r) as f64 / 1e6,
    )
}

fn collect_search_and_email(runtime: &Runtime, out: &mut [Family<'static>]) {
    let r = Ordering::Relaxed;
    let search = runtime.search_stats();
    let mail = runtime.mailer_stats();
    let values = [
        search.cache_hits.load(r),
        search.cache_misses.load(r),
        search.coalesced.load(r),
        search.fan_outs.load(r),
        search.asked.load(r),
        runtime.search_cached_results() as u64,
        mail.sent.load(r),
        mail.failed.load(r),
        mail.repeated.load(r),
        runtime.email_counts().parked,
    ];
    for (family, value) in out.iter_mut().zip(values) {
        family.sample(&[], value as f64);
    }
}

/// Every state is listed, zeros included, so a dashboard's series never vanish.
fn collect_sagas(sagas: &SagaCounts, out: &mut [Family<'static>]) {
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
        out[0].sample(&[state], n as f64);
    }
    out[1].sample(&[], sagas.running as f64);
    out[2].sample(&[], sagas.crashes as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: &[Spec] = &[
        spec("t_calls_total", "Calls.", COUNTER, &["seller"]),
        spec("t_latency_seconds", "Latency.", HISTOGRAM, &["seller"]),
        spec("t_empty", "Never sampled.", GAUGE, &[]),
    ];

    #[test]
    fn scrape_collectors_render_through_the_encoder_with_escaped_labels() {
        let registry = Registry::new();
        let collector = Scrape::new(TEST, |out| {
            out[0].sample(&["a\"b\\c\nd"], 3.0);
            out[1].histogram(&["s"], &[(0.005, 1), (0.01, 4)], 5, 0.25);
        });
        registry.register(Box::new(collector)).unwrap();
        let text = TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("t_calls_total{seller=\"a\\\"b\\\\c\\nd\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE t_calls_total counter\n"), "{text}");
        assert!(text.contains("t_latency_seconds_bucket{seller=\"s\",le=\"0.01\"} 4\n"));
        assert!(text.contains("t_latency_seconds_bucket{seller=\"s\",le=\"+Inf\"} 5\n"));
        assert!(text.contains("t_latency_seconds_sum{seller=\"s\"} 0.25\n"));
        assert!(text.contains("t_latency_seconds_count{seller=\"s\"} 5\n"));
        assert!(
            !text.contains("t_empty"),
            "a family without samples is left out"
        );
    }

    #[test]
    fn specs_are_unique_and_registered_once() {
        let registry = Registry::new();
        for specs in [TREE, SELLERS, GATEWAY, SEARCH_AND_EMAIL, SAGAS, FAULTS] {
            registry
                .register(Box::new(Scrape::new(specs, |_| {})))
                .expect("no name is declared twice");
        }
    }
}
