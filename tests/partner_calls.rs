//! A booking's partner calls, from its saga's own record: the real `wayfare` binary, the
//! out-of-process fake gateway, and the fake seller behind a proxy in this test that
//! answers the first reservation with a 503. The booking shows two reserve attempts (the
//! first failed, with its status), the lookup between them and the gateway's calls, each
//! with a duration; the calls survive a restart of the server; a customer's key does not
//! see them.

mod common;
mod fakes;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{client_with, wait_until};

const OPERATOR_TOKEN: &str = "partner-calls-test-operator-token-0123";
const WITHIN: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"
[server]
workers = 2
[runtime]
arbiters = 2
[demo]
accounts = 1
credit_minor = 100000
[bookings.saga]
backoff_base_ms = 20
backoff_max_ms = 200
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

/// One HTTP/1.1 request as the proxy read it.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// A proxy to the seller at `upstream` that answers the first `POST /bookings` itself
/// with a 503 (before the seller sees it: nothing is reserved) and forwards everything
/// else. One request per connection.
async fn failing_first_booking(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let failed = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::new();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (failed, client, upstream) = (failed.clone(), client.clone(), upstream.clone());
            tokio::spawn(async move {
                let Some(req) = read_request(&mut socket).await else {
                    return;
                };
                let (status, body) = if req.method == "POST"
                    && req.path == "/bookings"
                    && !failed.swap(true, Ordering::SeqCst)
                {
                    (503, br#"{"error":"unavailable"}"#.to_vec())
                } else {
                    let method = req.method.parse().unwrap();
                    let mut forward =
                        client.request(method, format!("{upstream}{}", &req.path[1..]));
                    for (k, v) in &req.headers {
                        if !matches!(k.as_str(), "host" | "content-length" | "connection") {
                            forward = forward.header(k, v);
                        }
                    }
                    match forward.body(req.body).send().await {
                        Ok(r) => (
                            r.status().as_u16(),
                            r.bytes().await.unwrap_or_default().to_vec(),
                        ),
                        Err(_) => (502, Vec::new()),
                    }
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

fn in_days(n: u64) -> String {
    (Utc::now().date_naive() + Days::new(n)).to_string()
}

fn serve(d: &std::path::Path) -> fakes::Process {
    let command = fakes::wayfare_command(
        d,
        &d.join("config.toml"),
        &d.join("wayfare.log"),
        OPERATOR_TOKEN,
    );
    fakes::spawn_listening(command, "wayfare listening on http://").expect("wayfare started")
}

/// The calls of `saga` (a booking or its `cancellation`) as (partner, operation, step,
/// attempt, outcome).
fn summary(saga: &Value) -> Vec<(String, String, String, u64, String)> {
    saga["partner_calls"]["calls"]
        .as_array()
        .unwrap_or_else(|| panic!("no partner calls: {saga}"))
        .iter()
        .map(|c| {
            (
                c["partner"].as_str().unwrap().to_owned(),
                c["operation"].as_str().unwrap().to_owned(),
                c["step"].as_str().unwrap().to_owned(),
                c["attempt"].as_u64().unwrap(),
                c["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn call(
    p: &str,
    op: &str,
    step: &str,
    n: u64,
    outcome: &str,
) -> (String, String, String, u64, String) {
    (p.into(), op.into(), step.into(), n, outcome.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_shows_its_partner_calls_per_attempt_to_the_operator_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let seller = fakes::fake_seller(
        &d.join("seller"),
        &d.join("seller.log"),
        &["--name", "alpha", "--seed", "1", "--coverage", "1.0"],
    );
    let gateway = fakes::fake_gateway(&d.join("gateway"), &d.join("gateway.log"), &[]);
    let proxy = failing_first_booking(seller.url()).await;
    let config = CONFIG
        .replace("{gateway}", &gateway.url())
        .replace("{alpha}", &proxy);
    std::fs::write(d.join("config.toml"), config).unwrap();
    let server = serve(d);
    let base = format!("http://{}", server.addr);
    let http = fakes::operator_client(OPERATOR_TOKEN, Duration::from_secs(10));

    // A customer of their own, with their own key.
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/accounts"))
        .json(&json!({"name": "Calls", "email": "calls@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let account: Value = res.json().await.unwrap();
    let customer = client_with(account["api_key"].as_str().expect("an api key"));
    let url = format!(
        "{base}/v1/search/hotels?city=Lisbon&check_in={}&check_out={}",
        in_days(30),
        in_days(32)
    );
    let offer = wait_until(WITHIN, "an offer", async || {
        let body: Value = customer.get(&url).send().await.ok()?.json().await.ok()?;
        body["offers"].as_array()?.first().cloned()
    })
    .await;
    let reply = customer
        .post(format!("{base}/v1/bookings"))
        .header("Idempotency-Key", "calls-1")
        .json(&json!({
            "account_id": account["id"],
            "seller": offer["seller"],
            "sku": offer["sku"],
            "start": in_days(30),
            "end": in_days(32),
            "offer_price": offer["price"],
            "card_token": "tok_approve",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 202, "{}", reply.text().await.unwrap());
    let id = reply.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let booking_url = format!("{base}/v1/bookings/{id}");
    let booking = wait_until(WITHIN, "the booking confirmed", async || {
        let b: Value = http
            .get(&booking_url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (b["state"] == "confirmed").then_some(b)
    })
    .await;

    // The failed reservation had an unknown outcome: looked up by key, found absent, made
    // again.
    assert_eq!(
        summary(&booking),
        vec![
            call("gateway", "authorize", "authorize", 1, "ok"),
            call("alpha", "book", "reserve", 1, "failed"),
            call("alpha", "status", "reconcile_reservation", 1, "ok"),
            call("alpha", "book", "reserve", 2, "ok"),
            call("gateway", "capture", "capture_payment", 1, "ok"),
        ],
        "{booking:#}"
    );
    let calls = booking["partner_calls"]["calls"].as_array().unwrap();
    assert_eq!(booking["partner_calls"]["dropped"], 0);
    assert_eq!(calls[1]["http_status"], 503, "{}", calls[1]);
    for c in calls.iter().filter(|c| c["outcome"] == "ok") {
        assert!(
            c["http_status"]
                .as_u64()
                .is_some_and(|s| (200..500).contains(&s)),
            "an answered call has its status: {c}"
        );
    }
    assert!(
        calls[1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("503") || d.contains("unavailable")),
        "the failed attempt says why: {}",
        calls[1]
    );
    for c in calls {
        assert!(c["duration_ms"].is_u64(), "{c}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(c["started_at"].as_str().unwrap()).is_ok(),
            "{c}"
        );
    }
    let started: Vec<_> = calls
        .iter()
        .map(|c| {
            c["started_at"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<Utc>>()
                .unwrap()
        })
        .collect();
    assert!(
        started.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {started:?}"
    );

    // The customer sees the booking, not its partner calls.
    let own: Value = customer
        .get(&booking_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(own["state"], "confirmed");
    assert!(own["partner_calls"].is_null(), "{own:#}");

    // A cancellation has its own calls: the seller's cancel, then the gateway's refund.
    let res = customer
        .post(format!("{booking_url}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let cancelled = wait_until(WITHIN, "the booking cancelled", async || {
        let b: Value = http
            .get(&booking_url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (b["cancellation"]["state"] == "cancelled").then_some(b)
    })
    .await;
    assert_eq!(
        summary(&cancelled["cancellation"]),
        vec![
            call("alpha", "cancel", "seller_cancel", 1, "ok"),
            call("gateway", "refund", "cancellation_refund", 1, "ok"),
        ],
        "{cancelled:#}"
    );
    let own: Value = customer
        .get(&booking_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(own["cancellation"]["partner_calls"].is_null(), "{own:#}");

    // A restart reads them back from the store.
    drop(server);
    let server = serve(d);
    let again: Value = http
        .get(format!("http://{}/v1/bookings/{id}", server.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["partner_calls"], cancelled["partner_calls"],
        "{again:#}"
    );
    assert_eq!(
        again["cancellation"]["partner_calls"], cancelled["cancellation"]["partner_calls"],
        "{again:#}"
    );
}
