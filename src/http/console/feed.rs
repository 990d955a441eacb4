//! The live feed behind the console: snapshots of supervision, sellers, sagas and HTTP,
//! one a second and at once when something an operator must see changes.
//!
//! Change detection compares a cheap [`Signature`] (restart counts, child and supervisor
//! states, breaker states, how many sagas were ever parked: all in memory) on a short
//! tick, so a restart, a breaker transition or a newly parked saga reaches the page within
//! [`CHANGE_TICK`], and the snapshot says why (`reasons`: `restart`, `breaker`, `parked`).
//!
//! Rates (calls/s, requests/s, bookings/s) are left to the page, which divides counter
//! deltas by time; percentiles are computed here, over the last [`WINDOW`], from
//! cumulative histograms kept per feed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::actors::guard::PartnerStats;
use crate::domain::breaker::{BreakerSnapshot, BreakerState, BreakerTransition};
use crate::domain::latency::LatencyCounts;
use crate::domain::saga::SagaCounts;
use crate::faults::FaultCounts;
use crate::http::HttpMetrics;
use crate::supervisor::{ChildState, SupervisorSnapshot, SupervisorState};
use crate::Runtime;

/// Longest time between two snapshots.
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// How often the cheap signature is compared, so a change is sent within this long.
pub(crate) const CHANGE_TICK: Duration = Duration::from_millis(200);
/// Percentiles cover this much recent time.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// Parked sagas listed per snapshot (the count is always complete).
pub(crate) const MAX_PARKED_LISTED: usize = 50;

/// One line of the feed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ConsoleSnapshot {
    /// Sequence number within this feed, from 1.
    pub seq: u64,
    /// Server time of the snapshot.
    pub at: DateTime<Utc>,
    /// Why it was sent now: `hello` (first), `tick`, `restart`, `breaker`, `parked`.
    pub reasons: Vec<&'static str>,
    /// The supervision tree.
    pub tree: SupervisorSnapshot,
    /// Seller adapters.
    pub sellers: Vec<SellerView>,
    /// Other partners behind an adapter: the payment gateway (`payment-gateway`).
    pub partners: Vec<SellerView>,
    /// Saga figures; `None` when the coordinator did not answer.
    #[schema(required = true)]
    pub sagas: Option<SagaCounts>,
    /// HTTP figures.
    pub http: HttpView,
    /// Faults fired on purpose, when `[faults]` is on.
    #[schema(required = true)]
    pub faults: Option<FaultCounts>,
}

/// One seller adapter as the console shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SellerView {
    /// Seller name.
    pub name: String,
    /// Last published breaker snapshot (state, window rates).
    #[schema(required = true)]
    pub breaker: Option<BreakerSnapshot>,
    /// The breaker's last transitions, oldest first.
    pub transitions: Vec<BreakerTransition>,
    /// Transitions in all.
    pub transitions_total: u64,
    /// Calls made (attempts), failed, timed out; refused by breaker, bulkhead, meter.
    pub calls: u64,
    /// Calls that failed (error or timeout).
    pub failures: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Calls refused: breaker open.
    pub short_circuited: u64,
    /// Calls refused: bulkhead full.
    pub bulkhead_rejected: u64,
    /// Searches refused: look-to-book.
    pub throttled: u64,
    /// Calls in flight (bulkhead in use).
    pub in_flight: u64,
    /// The bulkhead's bound.
    pub bulkhead_limit: u64,
    /// Searches sent (look-to-book numerator), since start.
    pub searches: u64,
    /// Bookings confirmed (look-to-book denominator), since start.
    pub bookings: u64,
    /// Latency percentiles over the window.
    pub latency: LatencyView,
}

/// Percentiles over a recent window.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct LatencyView {
    /// Seconds covered.
    pub window_secs: f64,
    /// Calls (or requests) in the window.
    pub count: u64,
    /// Median, ms; `None` without calls.
    #[schema(required = true)]
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms; `None` without calls.
    #[schema(required = true)]
    pub p99_ms: Option<f64>,
}

/// HTTP figures, as `/metrics` counts them.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct HttpView {
    /// Requests answered since start.
    pub requests: u64,
    /// Requests by status class (`2xx`...) and for the statuses operators watch (`429`,
    /// `503`, `504`), since start.
    pub status: BTreeMap<String, u64>,
    /// Latency over the window.
    pub latency: LatencyView,
}

/// What is compared on the short tick: in-memory figures only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Signature {
    /// `(supervisor/child, restarts, state)` for every child.
    children: Vec<(String, u64, ChildState)>,
    /// Every supervisor's state.
    supervisors: Vec<(String, SupervisorState)>,
    /// Every seller's breaker state.
    breakers: Vec<BreakerState>,
    /// Times a saga became parked.
    parks: u64,
}

impl Signature {
    /// The signature of the runtime now.
    pub(crate) fn of(
        tree: &SupervisorSnapshot,
        sellers: &[(String, std::sync::Arc<PartnerStats>)],
        parks: u64,
    ) -> Self {
        let mut sig = Signature::default();
        tree.for_each_child(&mut |sup, child| {
            sig.children
                .push((format!("{sup}/{}", child.name), child.restarts, child.state));
        });
        tree.for_each_supervisor(&mut |s| sig.supervisors.push((s.name.clone(), s.state)));
        sig.breakers = sellers.iter().map(|(_, s)| s.breaker_state()).collect();
        sig.parks = parks;
        sig
    }

    /// Why `self` differs from `before`, as reasons for the page.
    pub(crate) fn changes_since(&self, before: &Signature) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        if self.children != before.children || self.supervisors != before.supervisors {
            reasons.push("restart");
        }
        if self.breakers != before.breakers {
            reasons.push("breaker");
        }
        if self.parks != before.parks {
            reasons.push("parked");
        }
        reasons
    }
}

/// HTTP counters read from the Prometheus text of [`HttpMetrics::render`]: the same
/// figures a scrape sees, summed over routes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HttpFigures {
    requests: u64,
    by_status: BTreeMap<u16, u64>,
    /// `(upper bound in seconds, cumulative count)`, ascending, `+Inf` last.
    buckets: Vec<(f64, u64)>,
}

/// The payment gateway's card name.
const GATEWAY_NAME: &str = "payment-gateway";
const REQUESTS: &str = "wayfare_http_requests_total";
const BUCKET: &str = "wayfare_http_request_duration_seconds_bucket";

/// The value of `key` in a label set like `a="x",b="y"`.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = labels;
    loop {
        let at = rest.find('=')?;
        let name = rest[..at].trim_start_matches(',').trim();
        let value = rest[at + 1..].strip_prefix('"')?;
        // Label values escape `"` as `\"`; route patterns and statuses never hold one, but
        // skip escapes anyway so a strange value cannot shift the parse.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in value.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end?;
        if name == key {
            return Some(&value[..end]);
        }
        rest = &value[end + 1..];
    }
}

impl HttpFigures {
    /// Reads the HTTP series out of a text exposition; other series are ignored.
    pub(crate) fn parse(text: &str) -> Self {
        let mut figures = HttpFigures::default();
        let mut buckets: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (Some(open), Some(close)) = (line.find('{'), line.rfind('}')) else {
                continue;
            };
            if close < open {
                continue;
            }
            let name = &line[..open];
            let labels = &line[open + 1..close];
            let Ok(value) = line[close + 1..].trim().parse::<f64>() else {
                continue;
            };
            let value = value.max(0.0) as u64;
            if name == REQUESTS {
                figures.requests += value;
                if let Some(status) = label(labels, "status").and_then(|s| s.parse().ok()) {
                    *figures.by_status.entry(status).or_default() += value;
                }
            } else if name == BUCKET {
                let le = match label(labels, "le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => match le.parse::<f64>() {
                        Ok(le) => le,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                // Keyed by the bound's bits: bounds are the same literals on every route.
                buckets.entry(le.to_bits()).or_insert((le, 0)).1 += value;
            }
        }
        figures.buckets = buckets.into_values().collect();
        figures
            .buckets
            .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        figures
    }

    /// Requests by class and watched status, for the page.
    fn status_view(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = ["2xx", "3xx", "4xx", "5xx", "429", "503", "504"]
            .iter()
            .map(|k| ((*k).to_owned(), 0))
            .collect();
        for (status, n) in &self.by_status {
            *out.entry(format!("{}xx", status / 100)).or_default() += n;
            if [429, 503, 504].contains(status) {
                *out.entry(status.to_string()).or_default() += n;
            }
        }
        out
    }

    /// The `q` quantile of the requests counted after `earlier`, in seconds, interpolated
    /// within a bucket as Prometheus' `histogram_quantile` does; `None` without requests.
    pub(crate) fn quantile_since(&self, earlier: &HttpFigures, q: f64) -> Option<f64> {
        let window: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .map(|(le, n)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0, |(_, n)| *n);
                (*le, n.saturating_sub(before))
            })
            .collect();
        let total = window.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for (le, cumulative) in window {
            if cumulative as f64 >= rank && cumulative > below {
                if le.is_infinite() {
                    return Some(lower);
                }
                let within = (rank - below as f64) / (cumulative - below) as f64;
                return Some(lower + (le - lower) * within.clamp(0.0, 1.0));
            }
            lower = le;
            below = cumulative;
        }
        Some(lower)
    }

    fn count_since(&self, earlier: &HttpFigures) -> u64 {
        let last = |f: &HttpFigures| f.buckets.last().map_or(0, |b| b.1);
        last(self).saturating_sub(last(earlier))
    }
}

/// Histograms at one moment, kept to compute windowed percentiles.
#[derive(Debug)]
struct Sample {
    at: Instant,
    http: HttpFigures,
    sellers: Vec<LatencyCounts>,
}

/// One client's feed: the last signature sent and the samples of the window.
#[derive(Debug)]
pub(crate) struct Feed {
    runtime: Runtime,
    metrics: HttpMetrics,
    seq: u64,
    last: Option<(Instant, Signature)>,
    samples: VecDeque<Sample>,
}

impl Feed {
    /// A feed over `runtime`, reading HTTP figures from `metrics`.
    pub(crate) fn new(runtime: Runtime, metrics: HttpMetrics) -> Self {
        Feed {
            runtime,
            metrics,
            seq: 0,
            last: None,
            samples: VecDeque::new(),
        }
    }

    /// Waits until the next snapshot is due (a second after the last one, or a change
    /// seen on the short tick) and returns it.
    pub(crate) async fn next(&mut self) -> ConsoleSnapshot {
        loop {
            let signature = Signature::of(
                &self.runtime.supervision_tree(),
                self.runtime.seller_stats(),
                self.runtime.saga_counts(0).parks,
            );
            let reasons = match &self.last {
                None => vec!["hello"],
                Some((_, before)) if *before != signature => signature.changes_since(before),
                Some((at, _)) if at.elapsed() >= SNAPSHOT_EVERY => vec!["tick"],
                Some(_) => {
                    tokio::time::sleep(CHANGE_TICK).await;
                    continue;
                }
            };
            self.last = Some((Instant::now(), signature));
            return self.snapshot(reasons).await;
        }
    }

    /// Builds a full snapshot now.
    pub(crate) async fn snapshot(&mut self, reasons: Vec<&'static str>) -> ConsoleSnapshot {
        self.seq += 1;
        let tree = self.runtime.supervision_tree();
        let stats = self.runtime.seller_stats();
        let gateway = self.runtime.gateway_stats();
        let now = Instant::now();
        let sample = Sample {
            at: now,
            http: HttpFigures::parse(&self.metrics.render(None)),
            sellers: stats
                .iter()
                .map(|(_, s)| s)
                .chain([gateway])
                .map(|s| s.latency.counts())
                .collect(),
        };
        while self
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > WINDOW)
        {
            self.samples.pop_front();
        }
        let oldest = self.samples.front();
        let window_secs = oldest.map_or(0.0, |o| now.duration_since(o.at).as_secs_f64());
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let mut sellers: Vec<SellerView> = stats
            .iter()
            .map(|(name, s)| (name.as_str(), s))
            .chain([(GATEWAY_NAME, gateway)])
            .enumerate()
            .map(|(i, (name, s))| {
                let earlier = oldest
                    .and_then(|o| o.sellers.get(i).cloned())
                    .unwrap_or_default();
                let window = sample.sellers[i].since(&earlier);
                seller_view(
                    name,
                    s,
                    LatencyView {
                        window_secs,
                        count: window.total(),
                        p50_ms: window.quantile(0.5).map(ms),
                        p99_ms: window.quantile(0.99).map(ms),
                    },
                )
            })
            .collect();
        // The gateway's card is the last one: it goes under partners.
        let partners = sellers.split_off(stats.len());
        let empty = HttpFigures::default();
        let earlier = oldest.map_or(&empty, |o| &o.http);
        let http = HttpView {
            requests: sample.http.requests,
            status: sample.http.status_view(),
            latency: LatencyView {
                window_secs,
                count: sample.http.count_since(earlier),
                p50_ms: sample.http.quantile_since(earlier, 0.5).map(|s| s * 1000.0),
                p99_ms: sample
                    .http
                    .quantile_since(earlier, 0.99)
                    .map(|s| s * 1000.0),
            },
        };
        self.samples.push_back(sample);
        let sagas = Some(self.runtime.saga_counts(MAX_PARKED_LISTED));
        ConsoleSnapshot {
            seq: self.seq,
            at: Utc::now(),
            reasons,
            tree,
            sellers,
            partners,
            sagas,
            http,
            faults: self
                .runtime
                .config()
                .faults
                .enabled
                .then(|| self.runtime.fault_counts()),
        }
    }
}

fn seller_view(name: &str, s: &PartnerStats, latency: LatencyView) -> SellerView {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let timeline = s
        .breaker_timeline
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    SellerView {
        name: name.to_owned(),
        breaker: *s.breaker.lock().unwrap_or_else(|p| p.into_inner()),
        transitions: timeline.transitions().copied().collect(),
        transitions_total: timeline.total(),
        calls: get(&s.calls),
        failures: get(&s.failures),
        timeouts: get(&s.timeouts),
        short_circuited: get(&s.short_circuited),
        bulkhead_rejected: get(&s.bulkhead_rejected),
        throttled: get(&s.throttled),
        in_flight: get(&s.in_flight),
        bulkhead_limit: get(&s.bulkhead_limit),
        searches: get(&s.searches),
        bookings: get(&s.bookings),
        latency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP wayfare_http_requests_total HTTP requests by route and status.
# TYPE wayfare_http_requests_total counter
wayfare_http_requests_total{method="GET",route="/health",status="200"} 7
wayfare_http_requests_total{method="GET",route="/v1/search/hotels",status="503"} 2
wayfare_http_requests_total{method="POST",route="/v1/bookings",status="429"} 1
wayfare_http_requests_total{method="GET",route="/v1/bookings/{id}",status="404"} 3
# TYPE wayfare_http_request_duration_seconds histogram
wayfare_http_request_duration_seconds_bucket{route="/health",le="0.001"} 5
wayfare_http_request_duration_seconds_bucket{route="/health",le="0.01"} 7
wayfare_http_request_duration_seconds_bucket{route="/health",le="+Inf"} 7
wayfare_http_request_duration_seconds_sum{route="/health"} 0.01
wayfare_http_request_duration_seconds_count{route="/health"} 7
wayfare_http_request_duration_seconds_bucket{route="/v1/search/hotels",le="0.001"} 0
wayfare_http_request_duration_seconds_bucket{route="/v1/search/hotels",le="0.01"} 4
wayfare_http_request_duration_seconds_bucket{route="/v1/search/hotels",le="+Inf"} 6
wayfare_actor_restarts_total{supervisor="accounts",child="account-shard-0"} 4
"#;

    #[test]
    fn parses_requests_and_sums_buckets_over_routes() {
        let f = HttpFigures::parse(TEXT);
        assert_eq!(f.requests, 13);
        assert_eq!(f.by_status[&503], 2);
        assert_eq!(f.by_status[&200], 7);
        assert_eq!(f.buckets, vec![(0.001, 5), (0.01, 11), (f64::INFINITY, 13)]);
        let view = f.status_view();
        assert_eq!(view["2xx"], 7);
        assert_eq!(view["4xx"], 4);
        assert_eq!(view["5xx"], 2);
        assert_eq!(view["503"], 2);
        assert_eq!(view["429"], 1);
        assert_eq!(view["504"], 0);
    }

    #[test]
    fn quantiles_interpolate_within_the_window_only() {
        let before = HttpFigures {
            buckets: vec![(0.001, 100), (0.01, 100), (f64::INFINITY, 100)],
            ..Default::default()
        };
        // In the window: 10 requests, all between 1 and 10 ms.
        let now = HttpFigures {
            buckets: vec![(0.001, 100), (0.01, 110), (f64::INFINITY, 110)],
            ..Default::default()
        };
        let p50 = now.quantile_since(&before, 0.5).unwrap();
        assert!((p50 - 0.0055).abs() < 1e-9, "{p50}");
        let p99 = now.quantile_since(&before, 0.99).unwrap();
        assert!(p99 > 0.0099 && p99 <= 0.01, "{p99}");
        assert_eq!(now.count_since(&before), 10);
        assert_eq!(before.quantile_since(&before, 0.99), None, "no requests");
        // Past the last finite bound: the bound is the best answer.
        let slow = HttpFigures {
            buckets: vec![(0.001, 100), (0.01, 100), (f64::INFINITY, 105)],
            ..Default::default()
        };
        assert_eq!(slow.quantile_since(&before, 0.99), Some(0.01));
    }

    #[test]
    fn labels_are_read_by_name_not_position() {
        assert_eq!(label(r#"a="1",le="0.5""#, "le"), Some("0.5"));
        assert_eq!(label(r#"route="/x\"y",le="2""#, "le"), Some("2"));
        assert_eq!(label(r#"a="1""#, "le"), None);
        assert_eq!(label("garbage", "le"), None);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let f = HttpFigures::parse("wayfare_http_requests_total{status=\"200\"} nope\n{}\n}{\n");
        assert_eq!(f, HttpFigures::default());
    }

    #[test]
    fn signature_names_what_changed() {
        let base = Signature {
            children: vec![("accounts/account-shard-0".into(), 0, ChildState::Running)],
            supervisors: vec![("accounts".into(), SupervisorState::Running)],
            breakers: vec![BreakerState::Closed],
            parks: 0,
        };
        assert!(base.changes_since(&base).is_empty());
        let mut restarted = base.clone();
        restarted.children[0].1 = 1;
        assert_eq!(restarted.changes_since(&base), vec!["restart"]);
        let mut opened = base.clone();
        opened.breakers[0] = BreakerState::Open;
        assert_eq!(opened.changes_since(&base), vec!["breaker"]);
        let mut parked = base.clone();
        parked.parks = 1;
        assert_eq!(parked.changes_since(&base), vec!["parked"]);
    }
}
