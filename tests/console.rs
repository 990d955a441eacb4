//! The operator console: its HTTP contract (headers, access, the live feed) and the page
//! itself driven in a real headless Chromium through chromedriver, with plain W3C
//! WebDriver JSON over HTTP.
//!
//! The browser test needs Debian's `chromium` and `chromium-driver`; without them it
//! fails and names the install command (it never passes silently).
//! `screenshot_under_load` (ignored; run with `--ignored`) writes `docs/console.png`.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use common::fake::{FixedSeller, Knobs};
use common::{client_with, FetchJson, TestServer, OPERATOR_TOKEN};
use serde_json::{json, Value};
use wayfare::actors::seller::AdapterConfig;
use wayfare::domain::account::{AccountId, NewAccount};
use wayfare::domain::breaker::{BreakerConfig, BreakerState};
use wayfare::domain::money::{Currency, Money};
use wayfare::domain::saga::SagaState;
use wayfare::sellers::HotelQuery;
use wayfare::{BookingOrder, Config, Runtime};

const INSTALL: &str = "apt-get install -y chromium chromium-driver";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// ---------------------------------------------------------------------------------------
// Waiting on observable state.

/// A deadline for one awaited condition: [`Deadline::tick`] pauses briefly between two
/// looks at the condition, and fails the test naming the condition once time is up.
struct Deadline {
    what: String,
    until: Instant,
}

impl Deadline {
    fn new(what: impl Into<String>, within: Duration) -> Self {
        Deadline {
            what: what.into(),
            until: Instant::now() + within,
        }
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.until
    }

    async fn tick(&self, last_seen: impl std::fmt::Debug) {
        assert!(
            Instant::now() < self.until,
            "timed out waiting for {}; last seen: {last_seen:?}",
            self.what
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn in_days(n: u64) -> NaiveDate {
    Utc::now()
        .date_naive()
        .checked_add_days(Days::new(n))
        .unwrap()
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

/// Quick sagas and a short graceful-shutdown wait (a console's feed is a long response).
fn quick(c: &mut Config) {
    c.bookings.step_timeout_ms = 500;
    c.bookings.saga.backoff_base_ms = 1;
    c.bookings.saga.backoff_max_ms = 5;
    c.server.shutdown_timeout_secs = 1;
}

/// Account shards that panic on every message (`[faults]`), to watch restarts.
fn panicking_accounts(c: &mut Config) {
    quick(c);
    c.faults.enabled = true;
    c.faults.account_panic_rate = 1.0;
}

/// A breaker that opens after four failed calls in a row.
fn twitchy_breaker() -> AdapterConfig {
    AdapterConfig {
        search_retries: 0,
        breaker: BreakerConfig {
            window: 4,
            minimum_calls: 4,
            open_ms: 60_000,
            ..BreakerConfig::default()
        },
        ..AdapterConfig::default()
    }
}

/// A server with two fixed sellers: `steady` (for bookings) and `flaky` (to trip).
async fn two_sellers() -> (TestServer, Arc<Knobs>, Arc<Knobs>) {
    let (steady, steady_knobs) = FixedSeller::new("steady", 20_000);
    let (flaky, flaky_knobs) = FixedSeller::new("flaky", 20_000);
    let s = TestServer::start_built(quick, move |b| {
        b.seller(steady.into_custom(AdapterConfig::default()))
            .seller(flaky.into_custom(twitchy_breaker()))
    })
    .await;
    (s, steady_knobs, flaky_knobs)
}

/// Makes `flaky` fail until its breaker opens (distinct dates, so no search is answered
/// from the cache).
async fn trip_flaky(rt: &Runtime, knobs: &Knobs) {
    knobs.failing.store(true, Ordering::SeqCst);
    let deadline = Deadline::new(
        "the flaky seller's breaker to open",
        Duration::from_secs(20),
    );
    for day in 10.. {
        let state = rt
            .seller_stats()
            .iter()
            .find(|(name, _)| name == "flaky")
            .map(|(_, s)| s.breaker_state());
        if state == Some(BreakerState::Open) {
            return;
        }
        let q = HotelQuery {
            city_or_hotel: "Testville".into(),
            check_in: in_days(day),
            check_out: in_days(day + 1),
        };
        let _ = rt.search_hotels(q, None).await;
        deadline.tick(state).await;
    }
}

/// Books with `steady` so that capture fails and so does cancelling the reservation: the
/// saga parks as `needs_attention`. Returns its id.
async fn park_a_saga(rt: &Runtime, knobs: &Knobs, key: &str) -> String {
    let account = rt
        .create_account(NewAccount::new("P", "p@example.com").unwrap())
        .await
        .unwrap()
        .id;
    knobs.cancel_failing.store(true, Ordering::SeqCst);
    let order = BookingOrder {
        account_id: account,
        seller: "steady".into(),
        sku: "hotel:test:h1:double".into(),
        start: in_days(10),
        end: in_days(12),
        offer_price: eur(20_000),
        wallet_points: eur(0),
        card_token: "tok_fail_capture".into(),
        idempotency_key: key.into(),
    };
    let (b, _) = rt.book(order).await.unwrap();
    let deadline = Deadline::new("the saga to park", Duration::from_secs(20));
    loop {
        let now = rt.booking(b.id.parse().unwrap()).await.unwrap();
        if now.state == SagaState::NeedsAttention {
            return b.id;
        }
        deadline.tick(now.state).await;
    }
}

/// The account shard that restarted, and its restart count, once one has.
fn restarted_shard(rt: &Runtime) -> Option<(String, u64)> {
    let mut found = None;
    rt.supervision_tree().for_each_child(&mut |sup, child| {
        if sup == "accounts" && child.restarts > 0 {
            found = Some((child.name.clone(), child.restarts));
        }
    });
    found
}

// ---------------------------------------------------------------------------------------
// The HTTP contract.

#[actix_rt::test]
async fn page_and_assets_are_static_with_strict_headers() {
    let s = TestServer::start_with(quick).await;
    for (path, ctype) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/app.css", "text/css; charset=utf-8"),
    ] {
        // No credential needed: the assets hold no data.
        let res = s.anonymous.get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers().clone();
        let header = |name: &str| h.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header("content-type").as_deref(), Some(ctype), "{path}");
        assert_eq!(
            header("content-security-policy").as_deref(),
            Some(CSP),
            "{path}"
        );
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(header("referrer-policy").as_deref(), Some("no-referrer"));
        assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
        let etag = header("etag").expect("an ETag");
        let body = res.text().await.unwrap();
        assert!(!body.is_empty());
        // Revalidation with the ETag costs no body.
        let again = s
            .anonymous
            .get(s.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.text().await.unwrap(), "");
    }
    // The shell: script and style from files (the CSP allows nothing inline), no data.
    let html = s.anonymous.get(s.url("/console")).fetch_text().await;
    assert!(html.contains(r#"<script src="/console/app.js" defer></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="/console/app.css">"#));
    assert!(!html.contains("<style") && !html.contains(" style="));
    let inline_handler = html.match_indices(" on").any(|(at, _)| {
        let rest = &html[at + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    });
    assert!(!inline_handler, "no inline event handler");
    assert_eq!(html.matches("<script").count(), 1, "no inline script");
    assert!(!html.contains("account-shard") && !html.contains(OPERATOR_TOKEN));
    s.stop().await;
}

#[actix_rt::test]
async fn the_feed_is_for_the_operator_only() {
    let s = TestServer::start_with(quick).await;
    let feed = s.url("/v1/system/events");
    let res = s.anonymous.get(&feed).send().await.unwrap();
    common::assert_problem(res, 401, "unauthorized", None).await;
    let (_, customer) = s.create_customer("C").await;
    let res = customer.get(&feed).send().await.unwrap();
    common::assert_problem(res, 403, "forbidden", None).await;
    s.stop().await;

    let closed = TestServer::start_with(|c| {
        quick(c);
        c.admin.token = None;
    })
    .await;
    let res = client_with("anything-at-all-here")
        .get(closed.url("/v1/system/events"))
        .send()
        .await
        .unwrap();
    common::assert_problem(res, 403, "forbidden", None).await;
    closed.stop().await;
}

/// Reads the next complete line of an NDJSON response.
async fn next_line(res: &mut reqwest::Response, buffered: &mut Vec<u8>) -> Value {
    loop {
        if let Some(nl) = buffered.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffered.drain(..=nl).collect();
            return serde_json::from_slice(&line).expect("each line is one JSON object");
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await
            .expect("a snapshot at least every second")
            .expect("the stream goes on")
            .expect("the stream did not end");
        buffered.extend_from_slice(&chunk);
    }
}

#[actix_rt::test]
async fn the_feed_streams_snapshots_and_reports_a_restart_at_once() {
    let s = TestServer::start_with(panicking_accounts).await;
    // Without asking for the stream: one snapshot as JSON.
    let res = s.http.get(s.url("/v1/system/events")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let one: Value = res.json().await.unwrap();
    assert_eq!(one["seq"], 1);
    assert_eq!(one["tree"]["name"], "root");
    assert!(one["faults"].is_object(), "fault injection is on: {one}");

    let mut res = s
        .http
        .get(s.url("/v1/system/events"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let mut buf = Vec::new();
    let hello = next_line(&mut res, &mut buf).await;
    assert_eq!(hello["reasons"], json!(["hello"]));
    for key in ["tree", "sellers", "partners", "sagas", "http"] {
        assert!(!hello[key].is_null(), "{key} missing: {hello}");
    }
    // Then one a second, numbered in order.
    let deadline = Deadline::new(
        "a snapshot sent because a second passed",
        Duration::from_secs(10),
    );
    let mut seq = 1;
    loop {
        let snap = next_line(&mut res, &mut buf).await;
        seq += 1;
        assert_eq!(snap["seq"], seq);
        if snap["reasons"] == json!(["tick"]) {
            break;
        }
        deadline.tick(&snap["reasons"]).await;
    }

    // A shard panics: the next snapshot says why it came early.
    let missing = AccountId::random();
    let crashed = s
        .http
        .get(s.url(&format!("/v1/accounts/{missing}")))
        .send()
        .await
        .unwrap();
    assert_eq!(crashed.status(), 503);
    let deadline = Deadline::new("a snapshot with reason restart", Duration::from_secs(10));
    loop {
        let snap = next_line(&mut res, &mut buf).await;
        if snap["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("restart"))
        {
            let (name, restarts) = restarted_shard(&s.runtime).expect("a shard restarted");
            let mut seen = None;
            for sup in snap["tree"]["children"].as_array().unwrap() {
                for child in sup["supervisor"]["children"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if child["name"] == name.as_str() {
                        seen = child["restarts"].as_u64();
                    }
                }
            }
            assert!(seen.is_some_and(|n| n >= 1 && n <= restarts), "{snap}");
            break;
        }
        deadline.tick(&snap["reasons"]).await;
    }
    // The feed counts HTTP figures as /metrics does: the 503 above is there.
    let deadline = Deadline::new("the 503 in the HTTP figures", Duration::from_secs(10));
    loop {
        let snap = next_line(&mut res, &mut buf).await;
        if snap["http"]["status"]["503"].as_u64() >= Some(1) {
            assert!(snap["http"]["requests"].as_u64() >= Some(2), "{snap}");
            break;
        }
        deadline.tick(&snap["http"]).await;
    }
    drop(res);
    s.stop().await;
}

#[actix_rt::test]
async fn feeds_are_bounded_and_a_client_that_leaves_frees_its_place() {
    let s = TestServer::start_with(quick).await;
    let open = || {
        s.http
            .get(s.url("/v1/system/events"))
            .header("accept", "application/x-ndjson")
            .send()
    };
    let mut feeds = Vec::new();
    for _ in 0..8 {
        let mut res = open().await.unwrap();
        assert_eq!(res.status(), 200);
        next_line(&mut res, &mut Vec::new()).await;
        feeds.push(res);
    }
    // The test server has one HTTP worker: the ninth is refused.
    let res = open().await.unwrap();
    assert_eq!(res.headers()["retry-after"], "5");
    common::assert_problem(res, 503, "overloaded", None).await;
    // One client goes away; the server notices at its next write and frees the place.
    drop(feeds.pop());
    let deadline = Deadline::new("a place after a client left", Duration::from_secs(10));
    loop {
        let res = open().await.unwrap();
        if res.status() == 200 {
            break;
        }
        deadline.tick(res.status()).await;
    }
    drop(feeds);
    s.stop().await;
}

#[actix_rt::test]
async fn the_feed_shows_breaker_transitions_latency_and_parked_sagas() {
    let (s, steady, flaky) = two_sellers().await;
    let parked = park_a_saga(&s.runtime, &steady, "k-feed").await;
    trip_flaky(&s.runtime, &flaky).await;
    let snap: Value = s
        .http
        .get(s.url("/v1/system/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sellers = snap["sellers"].as_array().unwrap();
    let flaky_view = sellers.iter().find(|x| x["name"] == "flaky").unwrap();
    assert_eq!(flaky_view["breaker"]["state"], "open", "{flaky_view}");
    let last = flaky_view["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(
        (&last["from"], &last["to"]),
        (&json!("closed"), &json!("open"))
    );
    assert!(last["at"].is_string());
    assert_eq!(flaky_view["bulkhead_limit"], 64);
    // A single request has no window yet; the latency view still says so plainly.
    assert!(flaky_view["latency"]["window_secs"].is_number());
    let steady_view = sellers.iter().find(|x| x["name"] == "steady").unwrap();
    assert_eq!(steady_view["breaker"]["state"], "closed");
    assert!(steady_view["calls"].as_u64() >= Some(2), "{steady_view}");
    assert_eq!(snap["sagas"]["needs_attention"], 1);
    assert_eq!(snap["sagas"]["parked"][0]["id"], parked.as_str());
    // The payment gateway's adapter is the one partner; the parked saga paid through it.
    let partners = snap["partners"].as_array().unwrap();
    assert_eq!(partners.len(), 1, "{snap}");
    assert_eq!(partners[0]["name"], "payment-gateway");
    assert_eq!(partners[0]["breaker"]["state"], "closed");
    assert!(partners[0]["calls"].as_u64() >= Some(1), "{}", partners[0]);

    // Over a stream, the window fills: p50 and p99 of the flaky seller's calls.
    let mut res = s
        .http
        .get(s.url("/v1/system/events"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    let mut buf = Vec::new();
    next_line(&mut res, &mut buf).await;
    flaky.failing.store(false, Ordering::SeqCst);
    for day in 100..104 {
        let q = HotelQuery {
            city_or_hotel: "Testville".into(),
            check_in: in_days(day),
            check_out: in_days(day + 1),
        };
        s.runtime.search_hotels(q, None).await.unwrap();
    }
    let deadline = Deadline::new("steady's latency percentiles", Duration::from_secs(10));
    loop {
        let snap = next_line(&mut res, &mut buf).await;
        let steady = snap["sellers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "steady")
            .unwrap()
            .clone();
        let latency = &steady["latency"];
        if latency["count"].as_u64() >= Some(4) {
            let (p50, p99) = (
                latency["p50_ms"].as_f64().unwrap(),
                latency["p99_ms"].as_f64().unwrap(),
            );
            assert!(p50 > 0.0 && p50 <= p99 && p99 < 1000.0, "{latency}");
            break;
        }
        deadline.tick(latency.clone()).await;
    }
    drop(res);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// A real browser through chromedriver (W3C WebDriver over HTTP).

/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `name` on the PATH (or in /usr/bin), or a failure naming the install command.
fn require_binary(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: the console test drives a real browser. Install it with: {INSTALL}")
        })
}

/// A headless Chromium session driven through a chromedriver child process.
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Browser {
        let chromium = require_binary("chromium");
        let chromedriver = require_binary("chromedriver");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let profile = tempfile::tempdir().unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            http,
            session: base.clone(),
            driver,
            _profile: profile,
        };
        let deadline = Deadline::new("chromedriver to listen", Duration::from_secs(20));
        loop {
            let ready = browser.http.get(format!("{base}/status")).send().await;
            if let Ok(res) = &ready {
                if res.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = browser.driver.try_wait() {
                panic!("chromedriver exited at start ({status}); is it installed? {INSTALL}");
            }
            deadline.tick(ready.map(|r| r.status())).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                    "--window-size=1280,800",
                ]
            }
        }}});
        let created = browser
            .raw(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(caps),
            )
            .await;
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"));
        browser.session = format!("{base}/session/{id}");
        browser
    }

    async fn raw(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method.clone(), url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
        let status = res.status();
        let body: Value = res.json().await.expect("WebDriver answers JSON");
        assert!(
            status.is_success(),
            "WebDriver {method} {url}: {status} {body}"
        );
        body["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        self.raw(reqwest::Method::POST, &url, Some(body)).await
    }

    async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// Polls `script` until it returns something truthy, and returns that.
    async fn wait_for(&self, what: &str, script: &str) -> Value {
        self.wait_within(what, script, Duration::from_secs(20))
            .await
    }

    /// [`Browser::wait_for`], for conditions that take a while by nature.
    async fn wait_within(&self, what: &str, script: &str, within: Duration) -> Value {
        let deadline = Deadline::new(what, within);
        loop {
            let v = self.eval(script).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if deadline.expired() {
                // Say what the page looked like: the feed's pill carries its errors.
                let page = self
                    .eval("return [document.getElementById('pill-feed').textContent, document.body.innerText.slice(0, 3000)]")
                    .await;
                panic!("timed out waiting for {what}; last seen {v:?}; the page: {page:#}");
            }
            deadline.tick(&v).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/console")).await;
        self.wait_for(
            "the sign-in form",
            "return !document.getElementById('signin').hidden",
        )
        .await;
        self.type_into("#token", token).await;
        self.click("#signin-button").await;
    }

    async fn screenshot(&self) -> Vec<u8> {
        let url = format!("{}/screenshot", self.session);
        let png = self.raw(reqwest::Method::GET, &url, None).await;
        base64_decode(png.as_str().expect("base64 PNG"))
    }

    async fn quit(self) {
        let session = self.session.clone();
        self.raw(reqwest::Method::DELETE, &session, None).await;
    }
}

/// Standard base64 (the screenshot's encoding), without pulling in a crate.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        let take = chunk.len() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8hIQ=="), b"hello!!");
    assert_eq!(base64_decode("YWJj"), b"abc");
}

/// The restart count the page shows for an account shard.
fn shown_restarts(name: &str) -> String {
    format!("return document.querySelector('[data-child=\"{name}\"]')?.dataset.restarts")
}

#[actix_rt::test]
async fn the_console_in_a_real_browser() {
    let browser = Browser::start().await;

    // --- A server whose account shards panic: sign in, see the tree, watch a restart.
    let a = TestServer::start_with(panicking_accounts).await;
    browser.goto(&a.url("/console")).await;
    browser
        .wait_for(
            "the sign-in form",
            "return !document.getElementById('signin').hidden",
        )
        .await;
    let before = browser
        .eval(
            "return { console: document.getElementById('console').hidden,
                      rows: document.querySelectorAll('[data-child]').length }",
        )
        .await;
    assert_eq!(
        before,
        json!({"console": true, "rows": 0}),
        "no data before sign-in"
    );

    // A wrong token is refused and nothing is shown.
    browser.type_into("#token", "not-the-operator-token").await;
    browser.click("#signin-button").await;
    let refused = browser
        .wait_for(
            "the refusal",
            "const e = document.getElementById('signin-error'); return !e.hidden && e.textContent",
        )
        .await;
    assert!(refused.as_str().unwrap().contains("refused"), "{refused}");
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('[data-child]').length")
            .await,
        0
    );

    browser.sign_in(&a.base, OPERATOR_TOKEN).await;
    browser
        .wait_for(
            "the supervision tree",
            "return document.querySelectorAll('[data-child^=\"account-shard-\"]').length === 2",
        )
        .await;
    let shown = browser
        .eval(
            "return [...document.querySelectorAll('#tree .sup > .head .name')].map(e => e.textContent)",
        )
        .await;
    for sup in [
        "root", "accounts", "sellers", "search", "notifier", "bookings",
    ] {
        assert!(shown.as_array().unwrap().contains(&json!(sup)), "{shown}");
    }
    // The token stays out of the URL and cookies, and lives in this tab's storage.
    let kept = browser
        .eval("return [location.href, document.cookie, sessionStorage.getItem('wayfare.console.token')]")
        .await;
    assert_eq!(
        kept,
        json!([a.url("/console"), "", OPERATOR_TOKEN]),
        "token handling"
    );

    // A panic in a shard: its restart count rises on the page without a reload.
    browser.eval("window.__sameDocument = true").await;
    let crashed = a
        .http
        .get(a.url(&format!("/v1/accounts/{}", AccountId::random())))
        .send()
        .await
        .unwrap();
    assert_eq!(crashed.status(), 503);
    let deadline = Deadline::new("the shard's restart", Duration::from_secs(10));
    let (shard, restarts) = loop {
        match restarted_shard(&a.runtime) {
            Some(found) => break found,
            None => deadline.tick("no restart yet").await,
        }
    };
    browser
        .wait_for(
            &format!("{shard}'s restart count on the page"),
            &format!(
                "const n = Number(document.querySelector('[data-child=\"{shard}\"]')?.dataset.restarts); return n >= {restarts}"
            ),
        )
        .await;
    let row = browser
        .eval(&format!(
            "const li = document.querySelector('[data-child=\"{shard}\"]');
             return [window.__sameDocument === true, li.querySelector('.child').classList.contains('flash'),
                     li.querySelector('.failure').textContent]"
        ))
        .await;
    assert_eq!(row[0], true, "the page was not reloaded");
    assert_eq!(row[1], true, "the restart flashes where it happened");
    assert!(
        row[2].as_str().unwrap().contains("injected fault"),
        "last failure reason shown: {row}"
    );
    let other = if shard.ends_with('0') {
        "account-shard-1"
    } else {
        "account-shard-0"
    };
    assert_eq!(browser.eval(&shown_restarts(other)).await, "0");

    // --- A server with sellers to trip and a saga to park (another origin: sign in again).
    let (b, steady, flaky) = two_sellers().await;
    browser.sign_in(&b.base, OPERATOR_TOKEN).await;
    browser
        .wait_for(
            "the flaky seller's card, closed",
            "return document.querySelector('[data-seller=\"flaky\"]')?.dataset.breaker === 'closed'",
        )
        .await;
    trip_flaky(&b.runtime, &flaky).await;
    browser
        .wait_for(
            "the flaky seller's breaker to show open",
            "return document.querySelector('[data-seller=\"flaky\"]')?.dataset.breaker === 'open'",
        )
        .await;
    let card = browser
        .eval(
            "const c = document.querySelector('[data-seller=\"flaky\"]');
             return [c.querySelector('.breaker-state').textContent,
                     c.querySelector('.transitions').textContent,
                     c.querySelectorAll('.timeline rect.open').length,
                     document.querySelector('[data-seller=\"steady\"]').dataset.breaker]",
        )
        .await;
    assert_eq!(card[0], "open");
    assert!(
        card[1].as_str().unwrap().contains("closed → open"),
        "{card}"
    );
    assert!(
        card[2].as_u64() >= Some(1),
        "the timeline shows the open band: {card}"
    );
    assert_eq!(card[3], "closed");

    let id = park_a_saga(&b.runtime, &steady, "k-browser").await;
    let item = format!("[data-saga=\"{id}\"]");
    let reason = browser
        .wait_for(
            "the parked saga in the list",
            &format!("return document.querySelector('{item} .reason')?.textContent"),
        )
        .await;
    assert!(!reason.as_str().unwrap().is_empty());
    // Its history, fetched on demand with the same token.
    browser.click(&format!("{item} summary")).await;
    let history = browser
        .wait_for(
            "the parked saga's history",
            &format!(
                "const li = document.querySelectorAll('{item} details li');
                 return li.length > 1 && [...li].map(e => e.textContent).join('\\n')"
            ),
        )
        .await;
    assert!(
        history.as_str().unwrap().contains("needs_attention"),
        "{history}"
    );
    // With the partner calls under their steps: the failed undoing of the reservation,
    // attempt by attempt, with duration and outcome.
    // Each call with the history line it is listed under.
    let placed = browser
        .eval(&format!(
            "return [...document.querySelectorAll('{item} details li.call')].map(e => {{
                 let p = e.previousElementSibling;
                 while (p && p.classList.contains('call')) p = p.previousElementSibling;
                 return [e.textContent, p ? p.textContent : ''];
             }})"
        ))
        .await;
    let placed: Vec<(&str, &str)> = placed
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| (pair[0].as_str().unwrap(), pair[1].as_str().unwrap()))
        .collect();
    for (call, line) in &placed {
        let step = call.split(" [").nth(1).and_then(|r| r.split(']').next());
        let step = step.unwrap_or_else(|| panic!("no step in {call:?}"));
        assert!(
            line.contains(&format!("[{step}]")),
            "{call:?} is listed under {line:?}, not under its step"
        );
    }
    let calls: Vec<&str> = placed.iter().map(|(call, _)| *call).collect();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("↳ steady book #1 [reserve] ") && c.contains(" ok")),
        "{calls:#?}"
    );
    assert!(
        calls.iter().any(
            |c| c.starts_with("↳ steady cancel #2 [cancel_reservation] ")
                && c.contains(" ms failed: seller unavailable")
        ),
        "{calls:#?}"
    );

    // Fixed at the seller; the operator retries from the page, after confirming.
    steady.cancel_failing.store(false, Ordering::SeqCst);
    browser.click(&format!("{item} .retry")).await;
    assert_eq!(
        b.runtime.booking(id.parse().unwrap()).await.unwrap().state,
        SagaState::NeedsAttention,
        "nothing happens before the confirmation"
    );
    browser.click(&format!("{item} .confirm-retry")).await;
    let result = browser
        .wait_for(
            "the retry's result",
            "return document.getElementById('retry-result').textContent",
        )
        .await;
    assert!(result.as_str().unwrap().contains("accepted"), "{result}");
    let deadline = Deadline::new("the retried saga to compensate", Duration::from_secs(20));
    loop {
        let state = b.runtime.booking(id.parse().unwrap()).await.unwrap().state;
        if state == SagaState::Failed {
            break;
        }
        deadline.tick(state).await;
    }
    browser
        .wait_for(
            "the saga to leave the parked list",
            &format!(
                "return !document.querySelector('{item}') && document.getElementById('parked-count').textContent === '0'"
            ),
        )
        .await;

    // Sign out forgets the token.
    browser.click("#signout").await;
    let out = browser
        .eval("return [sessionStorage.getItem('wayfare.console.token'), document.getElementById('console').hidden]")
        .await;
    assert_eq!(out, json!([null, true]));

    browser.quit().await;
    a.stop().await;
    b.stop().await;
}

/// Writes `docs/console.png`: the console at 1280x800 over a server under some load
/// (searches, bookings, a flapping seller, a parked saga, a few injected panics).
#[actix_rt::test]
#[ignore = "writes docs/console.png; run with --ignored"]
async fn screenshot_under_load() {
    use wayfare::sellers::simulated::{SimulatedSeller, SimulatedSellerConfig};
    let (steady, steady_knobs) = FixedSeller::new("steady", 20_000);
    let (flaky, flaky_knobs) = FixedSeller::new("flaky", 20_000);
    let s = TestServer::start_built(
        |c| {
            quick(c);
            // The load below searches without a key as fast as it can, from one address.
            c.limits.enabled = false;
            c.faults.enabled = true;
            c.faults.panic_rate = 0.01;
            c.faults.panic_actors = vec![wayfare::faults::ActorKind::Search];
        },
        move |mut b| {
            for (name, seed, latency) in [("atlas", 1, (20, 80)), ("meridian", 2, (5, 30))] {
                let cfg = SimulatedSellerConfig {
                    name: name.into(),
                    seed,
                    latency_ms: latency,
                    ..SimulatedSellerConfig::default()
                };
                b = b.seller(wayfare::CustomSeller {
                    api: Arc::new(SimulatedSeller::new(cfg).unwrap()),
                    verticals: vec![wayfare::sellers::Vertical::Hotel],
                    adapter: AdapterConfig::default(),
                });
            }
            b.seller(steady.into_custom(AdapterConfig::default()))
                .seller(flaky.into_custom(AdapterConfig {
                    breaker: BreakerConfig {
                        open_ms: 4_000,
                        ..twitchy_breaker().breaker
                    },
                    ..twitchy_breaker()
                }))
        },
    )
    .await;
    park_a_saga(&s.runtime, &steady_knobs, "k-shot").await;
    steady_knobs.cancel_failing.store(false, Ordering::SeqCst);
    let browser = Browser::start().await;
    browser.sign_in(&s.base, OPERATOR_TOKEN).await;
    // Load: searches over HTTP (so the HTTP figures move), a booking now and then, and
    // the flaky seller flapping.
    let base = s.base.clone();
    let rt = s.runtime.clone();
    let account = rt
        .create_account(NewAccount::new("L", "l@example.com").unwrap())
        .await
        .unwrap()
        .id;
    let load = actix_rt::spawn(async move {
        let http = reqwest::Client::new();
        for i in 0u64.. {
            if i % 7 == 0 {
                let _ = rt
                    .book(BookingOrder {
                        account_id: account,
                        seller: "steady".into(),
                        sku: "hotel:test:h1:double".into(),
                        start: in_days(10),
                        end: in_days(12),
                        offer_price: eur(20_000),
                        wallet_points: eur(0),
                        card_token: "tok_approve".into(),
                        idempotency_key: format!("load-{i}"),
                    })
                    .await;
            }
            let (from, to) = (in_days(5 + i % 300), in_days(6 + i % 300));
            let city = if i % 2 == 0 { "Lisbon" } else { "Testville" };
            let _ = http
                .get(format!(
                    "{base}/v1/search/hotels?city={city}&check_in={from}&check_out={to}"
                ))
                .send()
                .await;
            flaky_knobs
                .failing
                .store((i / 40) % 3 == 0, Ordering::SeqCst);
        }
    });
    browser
        .wait_within(
            "45 s of sparkline",
            "return Number(document.getElementById('spark-http-rps').dataset.points) >= 45",
            Duration::from_secs(120),
        )
        .await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");
    std::fs::write(&path, png).unwrap();
    load.abort();
    browser.quit().await;
    s.stop().await;
}
