//! The HTTP API against a real server on an ephemeral port with sled in a temp dir:
//! happy paths, idempotency, and a problem response for every kind of bad input.

mod common;

use std::time::Duration;

use common::{assert_problem, wait_until, FetchJson, TestServer};
use serde_json::{json, Value};

#[actix_rt::test]
async fn account_lifecycle_credit_replay_and_ledger_pages() {
    let s = TestServer::start().await;
    let id = s.create_account("Ada").await;
    let res = s
        .http
        .get(s.url(&format!("/v1/accounts/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let acct: Value = res.json().await.unwrap();
    assert_eq!(acct["name"], "Ada");
    assert_eq!(
        acct["wallet"]["balance"],
        json!({"minor": 0, "currency": "EUR"})
    );

    let credit = |key: &str, minor: i64| {
        s.http
            .post(s.url(&format!("/v1/accounts/{id}/wallet/credits")))
            .header("Idempotency-Key", key)
            .json(&json!({"amount": {"minor": minor, "currency": "EUR"}}))
            .send()
    };
    let first = credit("k1", 10_000).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["replayed"], false);
    // Replay: same key, same content, same entry.
    let replay = credit("k1", 10_000).await.unwrap();
    assert_eq!(replay.status(), 200);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["replayed"], true);
    assert_eq!(replay["entry"], first["entry"]);
    // Same key, different content: conflict, nothing applied.
    assert_problem(credit("k1", 5).await.unwrap(), 409, "conflict", None).await;
    credit("k2", 2_000).await.unwrap();
    credit("k3", 3_000).await.unwrap();
    let acct: Value = s
        .http
        .get(s.url(&format!("/v1/accounts/{id}")))
        .fetch_json()
        .await;
    assert_eq!(acct["wallet"]["balance"]["minor"], 15_000);

    let page: Value = s
        .http
        .get(s.url(&format!("/v1/accounts/{id}/wallet/ledger?limit=2")))
        .fetch_json()
        .await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_after"], 2);
    let page: Value = s
        .http
        .get(s.url(&format!("/v1/accounts/{id}/wallet/ledger?after=2&limit=2")))
        .fetch_json()
        .await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["seq"], 3);
    assert_eq!(entries[0]["balance_after"], 15_000);
    assert_eq!(page["next_after"], Value::Null);
    s.stop().await;
}

#[actix_rt::test]
async fn bad_input_gets_a_problem_naming_what_is_wrong() {
    let s = TestServer::start().await;
    let id = s.create_account("Bob").await;
    let credits = s.url(&format!("/v1/accounts/{id}/wallet/credits"));
    let post = |url: String, body: Vec<u8>| {
        s.http
            .post(url)
            .header("content-type", "application/json")
            .header("Idempotency-Key", "key-1")
            .body(body)
    };

    /// (what, body, status, problem type, field)
    type Case = (
        &'static str,
        Vec<u8>,
        u16,
        &'static str,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            b"{not json".to_vec(),
            400,
            "invalid-json",
            None,
        ),
        (
            "wrong type",
            br#"{"amount":{"minor":"ten","currency":"EUR"}}"#.to_vec(),
            400,
            "invalid-json",
            Some("amount.minor"),
        ),
        (
            "unknown field",
            br#"{"amount":{"minor":1,"currency":"EUR"},"bonus":1}"#.to_vec(),
            400,
            "invalid-json",
            Some("bonus"),
        ),
        (
            "missing field",
            br#"{}"#.to_vec(),
            400,
            "invalid-json",
            Some("amount"),
        ),
        (
            "non-UTF-8",
            b"{\"amount\":\"\xff\xfe\"}".to_vec(),
            400,
            "invalid-json",
            Some("amount"),
        ),
        (
            "negative amount",
            br#"{"amount":{"minor":-5,"currency":"EUR"}}"#.to_vec(),
            400,
            "invalid-input",
            Some("amount.minor"),
        ),
        (
            "overflowing amount",
            br#"{"amount":{"minor":99999999999999999999,"currency":"EUR"}}"#.to_vec(),
            400,
            "invalid-json",
            Some("amount.minor"),
        ),
        (
            "amount beyond the wallet bound",
            br#"{"amount":{"minor":9000000000000000000,"currency":"EUR"}}"#.to_vec(),
            400,
            "invalid-input",
            Some("amount.minor"),
        ),
        (
            "unknown currency",
            br#"{"amount":{"minor":5,"currency":"XXX"}}"#.to_vec(),
            400,
            "invalid-json",
            Some("amount.currency"),
        ),
        (
            "other currency",
            br#"{"amount":{"minor":5,"currency":"USD"}}"#.to_vec(),
            400,
            "invalid-input",
            Some("amount.currency"),
        ),
        (
            "huge body",
            vec![b' '; 200_000],
            413,
            "body-too-large",
            None,
        ),
    ];
    for (what, body, status, kind, field) in cases {
        println!("case: {what}");
        let res = post(credits.clone(), body).send().await.unwrap();
        assert_problem(res, status, kind, field).await;
    }

    let res = s
        .http
        .post(&credits)
        .header("content-type", "text/plain")
        .header("Idempotency-Key", "k")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(res, 415, "unsupported-media-type", None).await;
    let res = s
        .http
        .post(&credits)
        .json(&json!({"amount": {"minor": 1, "currency": "EUR"}}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalid-input", Some("Idempotency-Key")).await;
    let res = s
        .http
        .post(&credits)
        .header("Idempotency-Key", "has spaces")
        .json(&json!({"amount": {"minor": 1, "currency": "EUR"}}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalid-input", Some("Idempotency-Key")).await;

    let res = s
        .http
        .post(s.url("/v1/accounts"))
        .json(&json!({"name": "", "email": "x@example.com"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalid-input", Some("name")).await;
    let res = s
        .http
        .post(s.url("/v1/accounts"))
        .json(&json!({"name": "Eve", "email": "nope"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalid-input", Some("email")).await;

    for path in [
        "/v1/accounts/not-an-id",
        "/v1/accounts/12345",
        "/v1/accounts/%FF%FE",
    ] {
        let res = s.http.get(s.url(path)).send().await.unwrap();
        assert_problem(res, 400, "invalid-input", Some("id")).await;
    }
    let res = s
        .http
        .get(s.url("/v1/accounts/00000000-0000-4000-8000-00000000abcd"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not-found", None).await;
    let res = s.http.get(s.url("/v1/nowhere")).send().await.unwrap();
    assert_problem(res, 404, "not-found", None).await;
    let ledger = s.url(&format!("/v1/accounts/{id}/wallet/ledger"));
    let res = s
        .http
        .get(format!("{ledger}?limit=abc"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalid-query", Some("limit")).await;
    let res = s
        .http
        .get(format!("{ledger}?limit=100000"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalid-input", Some("limit")).await;
    let res = s
        .http
        .get(format!("{ledger}?after=-1"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalid-query", Some("after")).await;

    // Nothing above changed the wallet.
    let acct: Value = s
        .http
        .get(s.url(&format!("/v1/accounts/{id}")))
        .fetch_json()
        .await;
    assert_eq!(acct["wallet"]["balance"]["minor"], 0);
    s.stop().await;
}

#[actix_rt::test]
async fn request_ids_go_in_and_out_and_system_routes_report_real_state() {
    let s = TestServer::start().await;
    let res = s
        .http
        .get(s.url("/health"))
        .header("X-Request-Id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "trace-abc-123");
    let health: Value = res.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"]["ok"], true);
    // A hostile id is replaced, not echoed.
    let res = s
        .http
        .get(s.url("/health"))
        .header("X-Request-Id", "x".repeat(500))
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "x".repeat(500).as_str());

    let tree: Value = s
        .http
        .get(s.url("/v1/system/supervisors"))
        .fetch_json()
        .await;
    assert_eq!(tree["name"], "root");
    let accounts = &tree["children"][0]["supervisor"];
    assert_eq!(accounts["name"], "accounts");
    assert_eq!(accounts["children"].as_array().unwrap().len(), 2);
    assert_eq!(accounts["children"][0]["state"], "running");
    assert_eq!(accounts["children"][0]["mailbox_capacity"], 1024);

    let metrics = s.http.get(s.url("/metrics")).fetch_text().await;
    for needle in [
        "wayfare_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 2",
        "wayfare_http_request_duration_seconds_bucket",
        "wayfare_actor_mailbox_depth{child=\"account-shard-0\"",
        "wayfare_actor_restarts_total{supervisor=\"accounts\",child=\"account-shard-1\"} 0",
        "wayfare_supervisor_up{supervisor=\"root\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    s.stop().await;
}

#[actix_rt::test]
async fn slow_actor_gives_504_and_full_mailbox_gives_503_with_retry_after() {
    let s = TestServer::start_with(|c| {
        c.accounts.shards = 1;
        c.accounts.mailbox_capacity = 1;
        c.accounts.deadline_ms = 1500;
        c.faults.enabled = true;
        c.faults.account_reply_delay_ms = 1000;
    })
    .await;
    let url = s.url("/v1/accounts/00000000-0000-4000-8000-000000000001");
    let first = tokio::spawn(s.http.get(&url).send());
    // Wait until the first request is admitted; it holds the only mailbox slot for 1 s.
    let metrics = s.url("/metrics");
    wait_until(
        Duration::from_millis(900),
        "the first request holds the account shard's only mailbox slot",
        async || {
            let text = s.http.get(&metrics).send().await.ok()?.text().await.ok()?;
            text.lines()
                .any(|l| {
                    l == "wayfare_actor_mailbox_depth{child=\"account-shard-0\",capacity=\"1\"} 1"
                })
                .then_some(())
        },
    )
    .await;
    let res = s.http.get(&url).send().await.unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    assert_problem(res, 503, "overloaded", None).await;
    assert_eq!(first.await.unwrap().unwrap().status(), 404);
    s.stop().await;

    let s = TestServer::start_with(|c| {
        c.accounts.deadline_ms = 50;
        c.faults.enabled = true;
        c.faults.account_reply_delay_ms = 2000;
    })
    .await;
    let res = s
        .http
        .get(s.url("/v1/accounts/00000000-0000-4000-8000-000000000001"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 504, "deadline-exceeded", None).await;
    s.stop().await;
}

#[actix_rt::test]
async fn crashing_actors_give_503_then_health_turns_503_when_intensity_is_exceeded() {
    let s = TestServer::start_with(|c| {
        c.supervisor.max_restarts = 1;
        c.supervisor.within_secs = 60;
        c.faults.enabled = true;
        c.faults.account_panic_rate = 1.0;
    })
    .await;
    let url = s.url("/v1/accounts/00000000-0000-4000-8000-000000000001");
    let res = s.http.get(&url).send().await.unwrap();
    assert_problem(res, 503, "actor-crashed", None).await;
    // Each crash is restarted until the accounts supervisor gives up; the root restarts
    // that subtree once (its own intensity), and gives up on the next escalation.
    wait_until(
        Duration::from_secs(5),
        "the root supervisor gives up (state failed)",
        async || {
            let _ = s.http.get(&url).send().await.unwrap();
            let tree: Value = s
                .http
                .get(s.url("/v1/system/supervisors"))
                .fetch_json()
                .await;
            (tree["state"] == "failed").then_some(())
        },
    )
    .await;
    let res = s.http.get(s.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["supervisors"]["ok"], false);
    let detail = body["supervisors"]["detail"].as_str().unwrap();
    assert!(detail.contains("gave up"), "{detail}");
    let res = s.http.get(&url).send().await.unwrap();
    assert_problem(res, 503, "unavailable", None).await;
    // The panics were injected, and /metrics counts them.
    let metrics = s.http.get(s.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let panics = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wayfare_faults_injected_total{kind=\"account_panics\"} "))
        .unwrap_or_else(|| panic!("no account_panics counter in\n{metrics}"));
    assert!(panics.parse::<u64>().unwrap() >= 2, "{panics}");
    s.stop().await;
}

#[actix_rt::test]
async fn json_and_problem_bodies_end_with_a_newline() {
    let s = TestServer::start().await;
    let id = s.create_account("Nell").await;
    for (path, status, ct) in [
        (format!("/v1/accounts/{id}"), 200, "application/json"),
        ("/health".to_owned(), 200, "application/json"),
        ("/v1/system/supervisors".to_owned(), 200, "application/json"),
        ("/v1/openapi.json".to_owned(), 200, "application/json"),
        (
            "/v1/no-such-route".to_owned(),
            404,
            "application/problem+json",
        ),
        (
            "/v1/accounts/not-an-id".to_owned(),
            400,
            "application/problem+json",
        ),
    ] {
        let res = s.http.get(s.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), status, "{path}");
        assert_eq!(res.headers()["content-type"], ct, "{path}");
        let body = res.bytes().await.unwrap();
        assert!(body.ends_with(b"}\n"), "{path}: {body:?}");
        serde_json::from_slice::<Value>(&body).expect("the body is one JSON document");
    }
    s.stop().await;
}

#[actix_rt::test]
async fn wrong_method_on_a_known_path_is_405_with_allow() {
    let s = TestServer::start().await;
    let id = s.create_account("Mo").await;
    for (method, path, allow) in [
        (reqwest::Method::POST, "/health".to_owned(), "GET"),
        (reqwest::Method::GET, "/v1/accounts".to_owned(), "POST"),
        (reqwest::Method::DELETE, format!("/v1/accounts/{id}"), "GET"),
        (reqwest::Method::PUT, "/v1/bookings".to_owned(), "POST"),
        (
            reqwest::Method::GET,
            format!("/v1/bookings/{id}/cancel"),
            "POST",
        ),
    ] {
        let res = s
            .http
            .request(method.clone(), s.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        let body = assert_problem(res, 405, "method-not-allowed", None).await;
        assert!(body["detail"].as_str().unwrap().contains(allow), "{body}");
    }
    // Unknown paths stay 404, whatever the method.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let res = s
            .http
            .request(method, s.url("/v1/no-such-route"))
            .send()
            .await
            .unwrap();
        assert!(res.headers().get("allow").is_none());
        assert_problem(res, 404, "not-found", None).await;
    }
    s.stop().await;
}

#[actix_rt::test]
async fn a_body_is_exactly_one_json_document_of_the_expected_shape() {
    let s = TestServer::start().await;
    let id = s.create_account("Strict").await;
    let post = |path: String, body: Vec<u8>| {
        s.http
            .post(s.url(&path))
            .header("content-type", "application/json")
            .header("Idempotency-Key", "strict-1")
            .body(body)
            .send()
    };
    let account = br#"{"name":"Ann","email":"ann@example.com"}"#.to_vec();
    let with = |tail: &[u8]| [account.as_slice(), tail].concat();
    for (what, body, field) in [
        ("trailing garbage", with(b"x"), None),
        (
            "a second document",
            with(br#"{"name":"B","email":"b@example.com"}"#),
            None,
        ),
        ("garbage after whitespace", with(b" \n\t]"), None),
        ("a trailing NUL", with(b"\0"), None),
        (
            "a UTF-8 BOM",
            [b"\xEF\xBB\xBF".as_slice(), &account].concat(),
            None,
        ),
        (
            "a duplicate key",
            br#"{"name":"Ann","name":"Bob","email":"ann@example.com"}"#.to_vec(),
            Some("name"),
        ),
    ] {
        let res = post("/v1/accounts".to_owned(), body).await.unwrap();
        let problem = assert_problem(res, 400, "invalid-json", field).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(!detail.is_empty(), "{what}: {problem}");
    }
    // Whitespace after the document is not data: `curl -d @file` sends a final newline.
    let res = post("/v1/accounts".to_owned(), with(b" \r\n\t"))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // Nested objects are held to their shape too.
    let credit = format!("/v1/accounts/{id}/wallet/credits");
    let body = br#"{"amount":{"minor":1,"currency":"EUR","extra":1}}"#.to_vec();
    let res = post(credit.clone(), body).await.unwrap();
    assert_problem(res, 400, "invalid-json", Some("amount.extra")).await;
    let body =
        br#"{"amount":{"minor":1,"currency":"EUR"}} {"amount":{"minor":9,"currency":"EUR"}}"#;
    let res = post(credit, body.to_vec()).await.unwrap();
    assert_problem(res, 400, "invalid-json", None).await;
    let acct: Value = s
        .http
        .get(s.url(&format!("/v1/accounts/{id}")))
        .fetch_json()
        .await;
    assert_eq!(
        acct["wallet"]["balance"]["minor"], 0,
        "nothing was credited"
    );
    s.stop().await;
}
