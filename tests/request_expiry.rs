//! Requests a trusted load balancer stamped too long ago (`X-Request-Start`) are refused
//! unprocessed: a node that was frozen must not run requests whose clients were told they
//! failed. Against a real server; the "load balancer" is this test, on 127.0.0.1.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{assert_problem, TestServer};
use serde_json::{json, Value};

/// A stamp `ago` in the past, as HAProxy's `t=%[date(0,us)]` writes it.
fn stamped(ago: Duration) -> String {
    let at = SystemTime::now() - ago;
    format!("t={}", at.duration_since(UNIX_EPOCH).unwrap().as_micros())
}

fn credit(s: &TestServer, key: &str, stamp: &str) -> reqwest::RequestBuilder {
    s.http
        .post(s.url(&format!(
            "/v1/accounts/{}/wallet/credits",
            "00000000-0000-4000-8000-000000000001"
        )))
        .header("Idempotency-Key", key)
        .header("X-Request-Start", stamp)
        .json(&json!({"amount": {"minor": 500, "currency": "EUR"}}))
}

async fn balance(s: &TestServer) -> i64 {
    let body: Value = s
        .http
        .get(s.url("/v1/accounts/00000000-0000-4000-8000-000000000001"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["wallet"]["balance"]["minor"].as_i64().unwrap()
}

#[actix_rt::test]
async fn a_stale_stamp_from_a_trusted_proxy_is_refused_and_nothing_is_done() {
    let s = TestServer::start_with(|c| {
        c.demo.accounts = 2;
        c.limits.trusted_proxies = vec!["127.0.0.1".into()];
        c.server.max_request_age_ms = 2_000;
    })
    .await;
    let before = balance(&s).await;

    let res = credit(&s, "stale-1", &stamped(Duration::from_secs(10)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    let problem = assert_problem(res, 503, "request-expired", None).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was done"),
        "{problem}"
    );
    assert_eq!(
        balance(&s).await,
        before,
        "the refused credit changed nothing"
    );

    // The client's retry, stamped afresh, is taken once.
    let res = credit(&s, "stale-1", &stamped(Duration::from_millis(10)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(balance(&s).await, before + 500);
    s.stop().await;
}

#[actix_rt::test]
async fn without_a_trusted_proxy_the_stamp_is_not_believed() {
    let s = TestServer::start_with(|c| {
        c.demo.accounts = 2;
        c.server.max_request_age_ms = 2_000;
    })
    .await;
    let before = balance(&s).await;
    // Anyone could forge an old stamp to have requests refused: from an untrusted peer it
    // is ignored, and the request runs.
    let res = credit(&s, "forged-1", &stamped(Duration::from_secs(60)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(balance(&s).await, before + 500);
    s.stop().await;
}
