//! Distributed tracing end to end: a real OTLP/HTTP receiver runs inside the test
//! (decoding `ExportTraceServiceRequest` bodies with the `opentelemetry-proto` types), the
//! real `wayfare` binary exports to it, and the partners are the out-of-process fakes
//! (`examples/fake_seller.rs`, `examples/fake_gateway.rs`), whose ledgers list the
//! `traceparent` of every call they received.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Days, Utc};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{json, Value};
use wayfare::domain::account::AccountId;

mod common;
mod fakes;
#[cfg(feature = "postgres")]
mod pg;
use common::wait_until;

const OPERATOR_TOKEN: &str = "tracing-test-operator-token-0123";
const WITHIN: Duration = Duration::from_secs(30);

/// Spans received by the in-test collector.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Span>>>);

impl Received {
    fn of_trace(&self, trace_id: &str) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            AnyValue::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) on an ephemeral port, on a thread
/// of its own; returns its base URL.
fn collector() -> (String, Received) {
    let received = Received::default();
    let store = received.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let store = actix_web::web::Data::new(store);
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new().app_data(store.clone()).route(
                    "/v1/traces",
                    actix_web::web::post().to(
                        |body: actix_web::web::Bytes, store: actix_web::web::Data<Received>| async move {
                            let request = match ExportTraceServiceRequest::decode(body.as_ref()) {
                                Ok(r) => r,
                                Err(_) => return actix_web::HttpResponse::BadRequest().finish(),
                            };
                            let mut spans = store.0.lock().unwrap();
                            for resource in request.resource_spans {
                                for scope in resource.scope_spans {
                                    spans.extend(scope.spans);
                                }
                            }
                            actix_web::HttpResponse::Ok()
                                .content_type("application/x-protobuf")
                                .body(Vec::new())
                        },
                    ),
                )
            })
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")
            .unwrap();
            tx.send(server.addrs()[0]).unwrap();
            server.run().await.unwrap();
        });
    });
    let addr = rx.recv_timeout(WITHIN).expect("collector started");
    (format!("http://{addr}"), received)
}

fn in_days(n: u64) -> String {
    (Utc::now().date_naive() + Days::new(n)).to_string()
}

/// A booking of `offer` (a stay 30 to 32 days out) by demo account `account`, paying
/// `points_minor` with wallet points and the rest with a card the gateway approves.
fn booking(account: u64, offer: &Value, points_minor: i64) -> Value {
    json!({
        "account_id": AccountId::demo(account).to_string(),
        "seller": offer["seller"],
        "sku": offer["sku"],
        "start": in_days(30),
        "end": in_days(32),
        "offer_price": offer["price"],
        "wallet_points": {"minor": points_minor, "currency": "EUR"},
        "card_token": "tok_approve",
    })
}

const CONFIG: &str = r#"
[server]
workers = 2
[runtime]
arbiters = 2
[demo]
accounts = 2
credit_minor = 100000
[log]
level = "warn"
format = "json"
[telemetry]
otlp_endpoint = "{collector}"
sample_ratio = 1.0
export_timeout_ms = 1000
[payments]
kind = "http"
[payments.http]
base_url = "{gateway}"
[[sellers]]
name = "alpha"
kind = "http"
verticals = ["hotel"]
[sellers.http]
base_url = "{alpha}"
"#;

struct World {
    _dir: tempfile::TempDir,
    _seller: fakes::Process,
    _gateway: fakes::Process,
    server: fakes::Process,
    base: String,
    seller_url: String,
    gateway_url: String,
    http: reqwest::Client,
}

fn start(collector: &str) -> World {
    start_logging(collector, DEFAULT_LOG)
}

/// A world whose new traces are kept with probability `ratio`.
fn start_sampling(collector: &str, ratio: f64) -> World {
    start_configured(collector, DEFAULT_LOG, ratio, &[])
}

/// What the tests log: the seller adapter's admission decisions are debug events.
const DEFAULT_LOG: &str = "warn,wayfare=info,wayfare::actors::seller=debug";

/// A world whose server logs at `rust_log` (`RUST_LOG`).
fn start_logging(collector: &str, rust_log: &str) -> World {
    start_configured(collector, rust_log, 1.0, &[])
}

/// A world at `ratio`, logging at `rust_log`, the server given `env` besides.
fn start_configured(collector: &str, rust_log: &str, ratio: f64, env: &[(&str, &str)]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let seller = fakes::fake_seller(
        &d.join("seller"),
        &d.join("seller.log"),
        &["--name", "alpha", "--seed", "1", "--coverage", "1.0"],
    );
    let gateway = fakes::fake_gateway(&d.join("gateway"), &d.join("gateway.log"), &[]);
    let config = CONFIG
        .replace("{collector}", collector)
        .replace("{gateway}", &gateway.url())
        .replace("{alpha}", &seller.url())
        .replace("sample_ratio = 1.0", &format!("sample_ratio = {ratio:?}"));
    let path = d.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let server = serve(d, &path, rust_log, env);
    World {
        base: format!("http://{}", server.addr),
        seller_url: seller.url(),
        gateway_url: gateway.url(),
        server,
        _seller: seller,
        _gateway: gateway,
        _dir: dir,
        http: fakes::operator_client(OPERATOR_TOKEN, Duration::from_secs(10)),
    }
}

/// The seller adapter's admission decisions are debug events inside traced spans: the
/// tests that look for them log at `wayfare::actors::seller=debug`.
fn serve(dir: &Path, config: &Path, rust_log: &str, env: &[(&str, &str)]) -> fakes::Process {
    let mut command = fakes::wayfare_command(dir, config, &dir.join("wayfare.log"), OPERATOR_TOKEN);
    command.env("RUST_LOG", rust_log).envs(env.iter().copied());
    fakes::spawn_listening(command, "wayfare listening on http://").expect("wayfare started")
}

async fn first_offer(w: &World) -> Value {
    let url = format!(
        "{}/v1/search/hotels?city=Lisbon&check_in={}&check_out={}",
        w.base,
        in_days(30),
        in_days(32)
    );
    wait_until(WITHIN, "offers", async || {
        let body: Value = w.http.get(&url).send().await.ok()?.json().await.ok()?;
        body["offers"].as_array()?.first().cloned()
    })
    .await
}

async fn calls_of(http: &reqwest::Client, fake: &str) -> Vec<Value> {
    let ledger: Value = http
        .get(format!("{fake}_fake/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ledger["calls"].as_array().cloned().unwrap_or_default()
}

/// Names of a span's ancestors, nearest first.
fn ancestors<'a>(by_id: &HashMap<Vec<u8>, &'a Span>, mut s: &'a Span) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(p) = by_id.get(&s.parent_span_id) {
        names.push(p.name.clone());
        s = p;
    }
    names
}

fn trace_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_is_one_trace_from_the_client_through_every_partner_call() {
    let (endpoint, received) = collector();
    let w = start(&endpoint);
    let offer = first_offer(&w).await;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let res = w
        .http
        .post(format!("{}/v1/bookings", w.base))
        .header("Idempotency-Key", "trace-1")
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .json(&booking(0, &offer, 100))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let answered = res.headers()["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(
        trace_of(&answered),
        client_trace,
        "the client's trace continues"
    );
    assert_ne!(answered.split('-').nth(2), Some(client_span));
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    wait_until(WITHIN, "booking confirmed", async || {
        let b: Value = w
            .http
            .get(format!("{}/v1/bookings/{id}", w.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (b["state"] == "confirmed").then_some(())
    })
    .await;

    // The booking names its trace, for the console and for clients.
    let booking: Value = w
        .http
        .get(format!("{}/v1/bookings/{id}", w.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(booking["trace_id"], client_trace);

    // Every saga step and partner call of the booking, in the client's trace.
    let spans = wait_until(WITHIN, "the booking's spans exported", async || {
        let spans = received.of_trace(client_trace);
        let steps: HashSet<String> = spans
            .iter()
            .filter(|s| s.name.starts_with("saga "))
            .map(|s| s.name.clone())
            .collect();
        let clients = spans
            .iter()
            .filter(|s| attr(s, "partner").is_some())
            .count();
        ([
            "saga hold_wallet",
            "saga authorize_payment",
            "saga reserve",
            "saga capture_payment",
        ]
        .iter()
        .all(|n| steps.contains(*n))
            && clients >= 3)
            .then_some(spans)
    })
    .await;
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let root = spans
        .iter()
        .find(|s| s.name == "POST /v1/bookings")
        .unwrap_or_else(|| {
            let names: Vec<_> = spans
                .iter()
                .map(|s| (&s.name, hex(&s.parent_span_id)))
                .collect();
            panic!("no request span named POST /v1/bookings among {names:?}")
        });
    assert_eq!(
        hex(&root.parent_span_id),
        client_span,
        "child of the client's span"
    );
    assert_eq!(
        attr(root, "http.response.status_code").as_deref(),
        Some("202")
    );
    assert_eq!(answered.split('-').nth(2).unwrap(), hex(&root.span_id));
    // Parent/child: every other span's parent is in the trace, and following parents
    // from any partner call reaches the request span.
    for span in &spans {
        if span.span_id == root.span_id {
            continue;
        }
        assert!(
            by_id.contains_key(&span.parent_span_id),
            "span {} has a parent outside the trace",
            span.name
        );
    }
    // Actor messages of the booking: the coordinator's, the account shard's and the
    // mailer's, each with its wait in the mailbox, all inside the booking's trace.
    let actor_spans = wait_until(WITHIN, "the booking's actor spans exported", async || {
        let spans = received.of_trace(client_trace);
        let names: HashSet<String> = spans.iter().map(|s| s.name.clone()).collect();
        [
            "coordinator start_booking",
            "change_wallet",
            "mailer outbox_changed",
        ]
        .iter()
        .all(|n| names.contains(*n))
        .then_some(spans)
    })
    .await;
    let actor_by_id: HashMap<Vec<u8>, &Span> =
        actor_spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    for span in actor_spans.iter().filter(|s| {
        [
            "coordinator start_booking",
            "change_wallet",
            "mailer outbox_changed",
        ]
        .contains(&s.name.as_str())
    }) {
        let wait: u64 = attr(span, "actor.mailbox_wait_us")
            .unwrap_or_else(|| panic!("{} has no mailbox wait", span.name))
            .parse()
            .unwrap();
        assert!(wait < 30_000_000, "{}: {wait} µs", span.name);
        let chain = ancestors(&actor_by_id, span);
        assert_eq!(
            chain.last().map(String::as_str),
            Some("POST /v1/bookings"),
            "{}: {chain:?}",
            span.name
        );
    }
    let start = actor_spans
        .iter()
        .find(|s| s.name == "coordinator start_booking")
        .unwrap();
    assert_eq!(start.parent_span_id, root.span_id);
    // The wallet's writes (and their flushes) on sled, inside the shard's work.
    let writes: Vec<&Span> = actor_spans
        .iter()
        .filter(|s| s.name == "sled change_wallet")
        .collect();
    assert!(!writes.is_empty(), "no wallet write span");
    for write in writes {
        assert_eq!(attr(write, "db.system.name").as_deref(), Some("sled"));
        assert_eq!(
            attr(write, "db.operation.name").as_deref(),
            Some("change_wallet")
        );
        assert_eq!(actor_by_id[&write.parent_span_id].name, "change_wallet");
    }
    let partner_calls: Vec<&Span> = spans
        .iter()
        .filter(|s| attr(s, "partner").is_some())
        .collect();
    for call in &partner_calls {
        let chain = ancestors(&by_id, call);
        assert_eq!(
            chain.last().map(String::as_str),
            Some("POST /v1/bookings"),
            "{chain:?}"
        );
        assert!(chain.iter().any(|n| n.starts_with("saga ")), "{chain:?}");
        assert_eq!(
            attr(call, "http.response.status_code")
                .as_deref()
                .map(|c| c.starts_with('2')),
            Some(true)
        );
        assert!(
            attr(call, "server.address").is_some() && attr(call, "http.request.method").is_some()
        );
    }
    let reserve = partner_calls
        .iter()
        .find(|s| attr(s, "partner").as_deref() == Some("seller"))
        .expect("a seller call");
    let attempt = by_id[&reserve.parent_span_id];
    assert_eq!(attempt.name, "seller.attempt");
    assert_eq!(attr(attempt, "attempt").as_deref(), Some("1"));

    // The fakes saw the same trace, with the partner call spans as parents.
    let sent: HashSet<String> = partner_calls.iter().map(|s| hex(&s.span_id)).collect();
    for fake in [&w.gateway_url, &w.seller_url] {
        let calls = calls_of(&w.http, fake).await;
        // The search before the booking is a trace of its own.
        let searches: Vec<&Value> = calls
            .iter()
            .filter(|c| c["path"].as_str().is_some_and(|p| p.starts_with("/search")))
            .collect();
        for call in &searches {
            assert_eq!(
                call["traceparent"].as_str().map(|t| trace_of(t).len()),
                Some(32)
            );
        }
        let booking_calls: Vec<&Value> = calls
            .iter()
            .filter(|c| c["method"] == "POST" && !searches.contains(c))
            .collect();
        assert!(!booking_calls.is_empty(), "{fake}: {calls:?}");
        for call in booking_calls {
            let tp = call["traceparent"].as_str().expect("traceparent sent");
            assert_eq!(trace_of(tp), client_trace, "{fake}: {call}");
            assert!(
                sent.contains(tp.split('-').nth(2).unwrap()),
                "{fake}: {call}"
            );
        }
    }
    // JSON log lines name their trace and span.
    let log = std::fs::read_to_string(w._dir.path().join("wayfare.log")).unwrap();
    let admitted: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["decision"] == "admitted" && l["trace_id"] == client_trace)
        .collect();
    assert!(!admitted.is_empty(), "{log}");
    for line in admitted {
        let span_id = line["span_id"].as_str().unwrap();
        let span = spans
            .iter()
            .find(|s| hex(&s.span_id) == span_id)
            .expect("logged span");
        assert_eq!(span.name, "seller book");
    }
    drop(w.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_traceparent_starts_a_trace_named_by_its_request_id() {
    let (endpoint, received) = collector();
    let w = start(&endpoint);
    let res = w
        .http
        .get(format!("{}/health", w.base))
        .send()
        .await
        .unwrap();
    let tp = res.headers()["traceparent"].to_str().unwrap().to_owned();
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(trace_of(&tp), request_id);
    // An invalid traceparent is ignored: a new trace.
    let res = w
        .http
        .get(format!("{}/health", w.base))
        .header("traceparent", "00-ZZZ-00f067aa0ba902b7-01")
        .header("x-request-id", "mine-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "mine-1");
    let tp2 = res.headers()["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(trace_of(&tp2).len(), 32);
    assert_ne!(trace_of(&tp2), trace_of(&tp));
    wait_until(WITHIN, "health spans exported", async || {
        (!received.of_trace(trace_of(&tp)).is_empty()
            && !received.of_trace(trace_of(&tp2)).is_empty())
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_whatever_the_log_level() {
    // Production logs at warn: the request's info span must still reach the collector.
    let (endpoint, received) = collector();
    let w = start_logging(&endpoint, "warn");
    let res = w
        .http
        .get(format!("{}/health", w.base))
        .send()
        .await
        .unwrap();
    let tp = res.headers()["traceparent"].to_str().unwrap().to_owned();
    let spans = wait_until(WITHIN, "the request span exported", async || {
        let spans = received.of_trace(trace_of(&tp));
        (!spans.is_empty()).then_some(spans)
    })
    .await;
    assert!(
        spans
            .iter()
            .any(|s| attr(s, "http.route").is_some() || s.name.contains("GET")),
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_dropped_spans_not_failed_requests() {
    // A port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let w = start(&endpoint);
    for _ in 0..20 {
        let res = w
            .http
            .get(format!("{}/health", w.base))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }
    let offer = first_offer(&w).await;
    assert!(offer["sku"].is_string());
    let dropped = wait_until(WITHIN, "dropped spans counted", async || {
        let text = w
            .http
            .get(format!("{}/metrics", w.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let n: f64 = text
            .lines()
            .find(|l| l.starts_with("wayfare_trace_spans_dropped_total "))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (n >= 20.0).then_some(n)
    })
    .await;
    assert!(dropped >= 20.0);
}

/// Config of the crash test: quick steps, so a reserve call that hangs is given up fast.
fn crash_config(collector: &str, gateway: &str, seller: &str) -> String {
    let mut config = CONFIG
        .replace("{collector}", collector)
        .replace("{gateway}", gateway)
        .replace("{alpha}", seller);
    config.push_str(
        "[sellers.adapter]\ncall_timeout_ms = 500\n\
         [bookings]\nstep_timeout_ms = 1000\n\
         [bookings.saga]\nbackoff_base_ms = 10\nbackoff_max_ms = 100\n",
    );
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_resumed_after_a_kill_9_link_to_the_booking_s_original_trace() {
    let (endpoint, received) = collector();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let http = fakes::operator_client(OPERATOR_TOKEN, Duration::from_secs(10));
    // A seller that hangs every call before acting holds the saga at its reserve step.
    let seller_args = ["--name", "alpha", "--seed", "1", "--coverage", "1.0"];
    let hanging = fakes::fake_seller(
        &d.join("seller"),
        &d.join("seller-1.log"),
        &[&seller_args[..], &["--hang-rate", "1.0"]].concat(),
    );
    let gateway = fakes::fake_gateway(&d.join("gateway"), &d.join("gateway.log"), &[]);
    // The offer comes from a healthy twin (same name and seed: the same catalog).
    let twin = fakes::fake_seller(&d.join("twin"), &d.join("twin.log"), &seller_args);
    let offers: Value = http
        .post(format!("{}search/hotels", twin.url()))
        .json(
            &json!({"city_or_hotel": "Lisbon", "check_in": in_days(30), "check_out": in_days(32)}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let offer = offers["offers"][0].clone();
    drop(twin);
    let path = d.join("config.toml");
    std::fs::write(
        &path,
        crash_config(&endpoint, &gateway.url(), &hanging.url()),
    )
    .unwrap();
    let server = serve(d, &path, DEFAULT_LOG, &[]);
    let base = format!("http://{}", server.addr);

    let client_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut body = booking(1, &offer, 0);
    // The seller's own wire-format offer does not name the seller.
    body["seller"] = json!("alpha");
    let res = http
        .post(format!("{base}/v1/bookings"))
        .header("Idempotency-Key", "crash-1")
        .header(
            "traceparent",
            format!("00-{client_trace}-b7ad6b7169203331-01"),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reserve_sent = async || {
        calls_of(&http, &hanging.url())
            .await
            .iter()
            .any(|c| {
                c["method"] == "POST"
                    && c["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/bookings"))
            })
            .then_some(())
    };
    wait_until(WITHIN, "the reserve call reached the seller", reserve_sent).await;
    server.kill();
    drop(hanging);

    // The seller is healthy again (its journal kept), and wayfare restarts on the same data.
    let seller = fakes::fake_seller(&d.join("seller"), &d.join("seller-2.log"), &seller_args);
    std::fs::write(
        &path,
        crash_config(&endpoint, &gateway.url(), &seller.url()),
    )
    .unwrap();
    let server = serve(d, &path, DEFAULT_LOG, &[]);
    let base = format!("http://{}", server.addr);
    let state = wait_until(WITHIN, "the resumed booking settles", async || {
        let b: Value = http
            .get(format!("{base}/v1/bookings/{id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let state = b["state"].as_str()?.to_owned();
        ["confirmed", "failed", "cancelled"]
            .contains(&state.as_str())
            .then_some(state)
    })
    .await;

    let resumed = wait_until(WITHIN, "the resume span exported", async || {
        received
            .all()
            .into_iter()
            .find(|s| s.name == "saga.resume" && attr(s, "booking.id").as_deref() == Some(&id))
    })
    .await;
    assert_ne!(hex(&resumed.trace_id), client_trace, "a trace of its own");
    assert!(resumed.parent_span_id.is_empty(), "a root span");
    assert!(
        resumed
            .links
            .iter()
            .any(|l| hex(&l.trace_id) == client_trace && !l.span_id.is_empty()),
        "linked to the original trace: {:?}",
        resumed.links
    );
    let trace = hex(&resumed.trace_id);
    let steps: Vec<Span> = received
        .of_trace(&trace)
        .into_iter()
        .filter(|s| s.name.starts_with("saga ") && s.parent_span_id == resumed.span_id)
        .collect();
    assert!(!steps.is_empty(), "steps under the resume span ({state})");
    for step in &steps {
        assert_eq!(attr(step, "booking.id").as_deref(), Some(id.as_str()));
    }
    // The seller's calls after the restart carry the resumed trace.
    let after: Vec<Value> = calls_of(&http, &seller.url()).await;
    assert!(
        after.iter().any(|c| c["traceparent"]
            .as_str()
            .is_some_and(|t| trace_of(t) == trace)),
        "{after:?}"
    );
}

/// Books `offer` for demo account `account` under `key`, with `traceparent` if given;
/// returns the response's `traceparent` and the booking id.
async fn book(w: &World, offer: &Value, key: &str, traceparent: Option<&str>) -> (String, String) {
    let mut request = w
        .http
        .post(format!("{}/v1/bookings", w.base))
        .header("Idempotency-Key", key);
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let res = request.json(&booking(0, offer, 100)).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let tp = res.headers()["traceparent"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    (tp, body["id"].as_str().unwrap().to_owned())
}

async fn confirmed(w: &World, id: &str) -> Value {
    wait_until(WITHIN, "booking confirmed", async || {
        let b: Value = w
            .http
            .get(format!("{}/v1/bookings/{id}", w.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (b["state"] == "confirmed").then_some(b)
    })
    .await
}

/// Reads demo account 0; returns the response's `traceparent`.
async fn read_account(w: &World, traceparent: Option<&str>) -> String {
    let mut request = w
        .http
        .get(format!("{}/v1/accounts/{}", w.base, AccountId::demo(0)));
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let res = request.send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    res.headers()["traceparent"].to_str().unwrap().to_owned()
}

fn sampled_flag(traceparent: &str) -> &str {
    traceparent.split('-').nth(3).unwrap_or("")
}

/// Waits until the collector has received nothing new for two export periods (500 ms).
async fn quiet(received: &Received) -> Vec<Span> {
    let mut seen = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let now = received.all();
        if now.len() == seen {
            return now;
        }
        seen = now.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sampling_keeps_whole_traces_and_drops_whole_traces() {
    let (endpoint, received) = collector();
    let w = start_sampling(&endpoint, 0.5);
    let offer = first_offer(&w).await;
    // Start-up work (the demo accounts' seeding) makes roots of its own: set them aside.
    let before: HashSet<String> = quiet(&received)
        .await
        .iter()
        .map(|s| hex(&s.trace_id))
        .collect();
    let (mut kept, mut dropped) = (HashSet::new(), HashSet::new());
    let mut bookings = Vec::new();
    for i in 0..40 {
        let tp = if i % 4 == 0 {
            let (tp, id) = book(&w, &offer, &format!("sampled-{i}"), None).await;
            bookings.push(id);
            tp
        } else {
            read_account(&w, None).await
        };
        // Every request answers its trace, kept or not.
        assert_eq!(trace_of(&tp).len(), 32, "{tp}");
        match sampled_flag(&tp) {
            "01" => kept.insert(trace_of(&tp).to_owned()),
            "00" => dropped.insert(trace_of(&tp).to_owned()),
            other => panic!("flags {other:?} in {tp}"),
        };
    }
    for id in &bookings {
        confirmed(&w, id).await;
    }
    let spans = quiet(&received).await;
    let ids: HashSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
    // No orphans: every exported span's parent was exported too, except a request root's.
    let mut roots: HashMap<String, Vec<&Span>> = HashMap::new();
    for s in spans.iter().filter(|s| !before.contains(&hex(&s.trace_id))) {
        if s.parent_span_id.is_empty() || !ids.contains(s.parent_span_id.as_slice()) {
            roots.entry(hex(&s.trace_id)).or_default().push(s);
        }
    }
    for (trace, trace_roots) in &roots {
        let names: Vec<&str> = trace_roots.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(trace_roots.len(), 1, "trace {trace}: roots {names:?}");
        assert!(
            attr(trace_roots[0], "http.request.method").is_some(),
            "trace {trace} starts at {names:?}, not at a request"
        );
    }
    // What the responses said is what was exported.
    let loop_roots: HashSet<String> = roots
        .iter()
        .filter(|(_, r)| {
            ["GET /v1/accounts/{id}", "POST /v1/bookings"].contains(&r[0].name.as_str())
        })
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(
        loop_roots, kept,
        "exported request roots against flag-01 answers"
    );
    assert!(
        !kept.is_empty() && !dropped.is_empty(),
        "kept {} of 40: the head sampler draws per trace",
        kept.len()
    );
    for trace in &dropped {
        assert!(
            received.of_trace(trace).is_empty(),
            "unsampled {trace} exported"
        );
    }
    // A kept booking's saga steps are in its request's trace; a dropped one's nowhere.
    let saga_traces: HashSet<String> = spans
        .iter()
        .filter(|s| s.name.starts_with("saga "))
        .map(|s| hex(&s.trace_id))
        .collect();
    assert!(saga_traces.is_subset(&kept), "{saga_traces:?}");
    drop(w.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_s_sampled_flag_decides_whatever_the_ratio() {
    let (endpoint, received) = collector();
    let w = start_sampling(&endpoint, 0.0);
    let offer = first_offer(&w).await;
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let unsampled = format!("00-{unsampled_trace}-b7ad6b7169203331-00");
    let sampled_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sampled = format!("00-{sampled_trace}-00f067aa0ba902b7-01");

    // Flag 00: the trace continues (same id, flag 00) to the client and the partners,
    // and nothing is exported.
    let (tp, dropped_id) = book(&w, &offer, "flag-00", Some(&unsampled)).await;
    assert_eq!(trace_of(&tp), unsampled_trace);
    assert_eq!(sampled_flag(&tp), "00");
    let dropped_booking = confirmed(&w, &dropped_id).await;
    assert!(
        dropped_booking["trace_id"].is_null(),
        "an unexported trace is not offered for look-up: {dropped_booking}"
    );
    let tp = read_account(&w, Some(&unsampled)).await;
    assert_eq!((trace_of(&tp), sampled_flag(&tp)), (unsampled_trace, "00"));
    // No traceparent at ratio 0: a trace of its own, not kept.
    let mut fresh = Vec::new();
    for _ in 0..5 {
        let tp = read_account(&w, None).await;
        assert_eq!(sampled_flag(&tp), "00", "{tp}");
        fresh.push(trace_of(&tp).to_owned());
    }
    let (tp, _) = book(&w, &offer, "no-parent", None).await;
    assert_eq!(sampled_flag(&tp), "00", "{tp}");
    fresh.push(trace_of(&tp).to_owned());

    // Flag 01 at ratio 0: kept, with its saga and partner calls.
    let (tp, kept_id) = book(&w, &offer, "flag-01", Some(&sampled)).await;
    assert_eq!((trace_of(&tp), sampled_flag(&tp)), (sampled_trace, "01"));
    let kept_booking = confirmed(&w, &kept_id).await;
    assert_eq!(kept_booking["trace_id"], sampled_trace);
    wait_until(WITHIN, "the sampled booking's saga exported", async || {
        let spans = received.of_trace(sampled_trace);
        (spans.iter().any(|s| s.name == "saga capture_payment")
            && spans
                .iter()
                .any(|s| attr(s, "partner").as_deref() == Some("seller")))
        .then_some(())
    })
    .await;
    let spans = quiet(&received).await;
    let traces: HashSet<String> = spans.iter().map(|s| hex(&s.trace_id)).collect();
    assert_eq!(
        traces,
        HashSet::from([sampled_trace.to_owned()]),
        "only the client-sampled trace is exported"
    );

    // The partners were told: flag 00 for the unsampled booking, 01 for the kept one.
    for fake in [&w.gateway_url, &w.seller_url] {
        let calls = calls_of(&w.http, fake).await;
        let flags_of = |trace: &str| -> HashSet<String> {
            calls
                .iter()
                .filter_map(|c| c["traceparent"].as_str())
                .filter(|tp| trace_of(tp) == trace)
                .map(|tp| sampled_flag(tp).to_owned())
                .collect()
        };
        assert_eq!(
            flags_of(unsampled_trace),
            HashSet::from(["00".to_owned()]),
            "{fake}"
        );
        assert_eq!(
            flags_of(sampled_trace),
            HashSet::from(["01".to_owned()]),
            "{fake}"
        );
    }
    drop(w.server);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_statements_are_client_spans_in_the_booking_s_trace() {
    let pg = pg::TempPostgres::start();
    let db = pg.create_db("traced");
    let (endpoint, received) = collector();
    let w = start_configured(
        &endpoint,
        DEFAULT_LOG,
        1.0,
        &[
            ("WAYFARE__STORE__BACKEND", "postgres"),
            ("WAYFARE__STORE__URL", &db),
        ],
    );
    let offer = first_offer(&w).await;
    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let (_, id) = book(
        &w,
        &offer,
        "pg-traced",
        Some(&format!("00-{trace}-00f067aa0ba902b7-01")),
    )
    .await;
    confirmed(&w, &id).await;
    let spans = wait_until(WITHIN, "the booking's statements exported", async || {
        let spans = received.of_trace(trace);
        let names: HashSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        [
            "INSERT sagas booking_keys",
            "UPDATE sagas outbox",
            "SELECT wayfare_wallet_change",
        ]
        .iter()
        .all(|n| names.contains(n))
        .then_some(spans)
    })
    .await;
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let statements: Vec<&Span> = spans
        .iter()
        .filter(|s| attr(s, "db.system.name").as_deref() == Some("postgresql"))
        .collect();
    assert!(statements.len() >= 3);
    for s in statements {
        // Client kind (3), an operation, a single table named only when there is one,
        // and a parent in the booking's trace.
        assert_eq!(s.kind, 3, "{}", s.name);
        let operation = attr(s, "db.operation.name").unwrap();
        assert!(s.name.starts_with(&operation), "{} / {operation}", s.name);
        match attr(s, "db.collection.name") {
            Some(table) => assert_eq!(s.name, format!("{operation} {table}")),
            None => assert!(s.name.split(' ').count() != 2 || s.name.contains("wayfare_")),
        }
        assert!(
            by_id.contains_key(&s.parent_span_id),
            "{} is an orphan",
            s.name
        );
    }
    let wallet = spans
        .iter()
        .find(|s| s.name == "SELECT wayfare_wallet_change")
        .unwrap();
    assert_eq!(by_id[&wallet.parent_span_id].name, "change_wallet");
    drop(w.server);
    drop(pg);
}
