//! Prometheus metrics: HTTP request counts and latencies recorded by the middleware, plus
//! actor figures read from the supervision tree at scrape time (so they are never stale
//! and cost nothing per request).

use std::fmt::Write as _;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

use crate::supervisor::{ChildState, SupervisorSnapshot, SupervisorState};

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

    /// The text exposition: registered metrics plus the actor figures of `tree`.
    pub fn render(&self, tree: &SupervisorSnapshot) -> String {
        let mut out = TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default();
        render_tree(&mut out, tree);
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
