//! Access control over real HTTP: every refusal of the scheme in `domain::access` (and the
//! README), one request at a time, plus hostile `Authorization` headers and a check that
//! secrets stay out of the server's log.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use chrono::{Days, Utc};
use common::fake::FixedSeller;
use common::{assert_problem, client_with, FetchJson, TestServer, OPERATOR_TOKEN};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use wayfare::actors::seller::AdapterConfig;

async fn status(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.unwrap().status().as_u16()
}

#[actix_rt::test]
async fn a_customer_key_acts_on_its_own_account_only() {
    let s = TestServer::start().await;
    let res = s
        .anonymous
        .post(s.url("/v1/accounts"))
        .json(&json!({"name": "Ann", "email": "ann@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let ann = body["id"].as_str().unwrap().to_owned();
    let ann_key = body["api_key"].as_str().unwrap().to_owned();
    assert!(
        ann_key.starts_with("wf_") && ann_key.len() == 67,
        "{ann_key}"
    );
    let ann_http = client_with(&ann_key);
    let (bob, bob_http) = s.create_customer("Bob").await;

    // Ann reads her own account and ledger.
    let account = s.url(&format!("/v1/accounts/{ann}"));
    let ledger = s.url(&format!("/v1/accounts/{ann}/wallet/ledger"));
    assert_eq!(status(ann_http.get(&account)).await, 200);
    assert_eq!(status(ann_http.get(&ledger)).await, 200);
    // The key is never shown again.
    let again: Value = ann_http.get(&account).fetch_json().await;
    assert!(again.get("api_key").is_none(), "{again}");

    // No credential: 401 with a challenge, before anything is looked up.
    let res = s.anonymous.get(&account).send().await.unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_problem(res, 401, "unauthorized", None).await;
    let res = s.anonymous.get(&ledger).send().await.unwrap();
    assert_problem(res, 401, "unauthorized", None).await;
    // A malformed header: 401, naming the expected form.
    let res = s
        .anonymous
        .get(&account)
        .header("Authorization", format!("Basic {ann_key}"))
        .send()
        .await
        .unwrap();
    let body = assert_problem(res, 401, "unauthorized", None).await;
    assert!(
        body["detail"].as_str().unwrap().contains("Bearer"),
        "{body}"
    );
    // Bob's key on Ann's account: 404, as if it did not exist (ids cannot be probed),
    // both ways round.
    let res = bob_http.get(&account).send().await.unwrap();
    let theirs = assert_problem(res, 404, "not-found", None).await;
    // Exactly what an id that does not exist gets, id aside.
    let nobody = "00000000-0000-4000-8000-00000000beef";
    let res = bob_http
        .get(s.url(&format!("/v1/accounts/{nobody}")))
        .send()
        .await
        .unwrap();
    let missing = assert_problem(res, 404, "not-found", None).await;
    assert_eq!(
        theirs["detail"].as_str().unwrap().replace(&ann, "ID"),
        missing["detail"].as_str().unwrap().replace(nobody, "ID"),
    );
    let res = bob_http.get(&ledger).send().await.unwrap();
    assert_problem(res, 404, "not-found", None).await;
    let res = ann_http
        .get(s.url(&format!("/v1/accounts/{bob}")))
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not-found", None).await;
    // A made-up key is no credential we know: 401 with a challenge, not 403 (issue 11),
    // whether it is not even shaped like a key or a well-formed key that no account has.
    let unknown = wayfare::domain::access::ApiKey::generate();
    for made_up in ["wf_made_up_key_made_up_key", unknown.reveal()] {
        for url in [&account, &ledger] {
            let res = client_with(made_up).get(url).send().await.unwrap();
            assert_eq!(res.headers()["www-authenticate"], "Bearer", "{made_up}");
            let body = assert_problem(res, 401, "unauthorized", None).await;
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("unknown credential"),
                "{body}"
            );
        }
    }
    // The same unknown key on an account cached before and after: still 401 (the read
    // model and the shard apply one rule).
    let res = client_with(unknown.reveal())
        .get(s.url(&format!("/v1/accounts/{bob}")))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "unauthorized", None).await;

    // Customers do not mint points: credits take the operator token.
    let credits = s.url(&format!("/v1/accounts/{ann}/wallet/credits"));
    let credit = json!({"amount": {"currency": "EUR", "minor": 1000}});
    let res = ann_http
        .post(&credits)
        .header("Idempotency-Key", "own-credit")
        .json(&credit)
        .send()
        .await
        .unwrap();
    assert_problem(res, 403, "forbidden", None).await;
    let res = s
        .http
        .post(&credits)
        .header("Idempotency-Key", "operator-credit")
        .json(&credit)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let wallet: Value = ann_http.get(&account).fetch_json().await;
    assert_eq!(wallet["wallet"]["available"]["minor"], 1000, "{wallet}");
    s.stop().await;
}

#[actix_rt::test]
async fn keys_can_be_replaced_and_the_old_one_stops_working() {
    let s = TestServer::start().await;
    let (ann, ann_http) = s.create_customer("Ann").await;
    let account = s.url(&format!("/v1/accounts/{ann}"));
    let rotate = s.url(&format!("/v1/accounts/{ann}/api-key"));
    let (_, bob_http) = s.create_customer("Bob").await;
    let res = bob_http.post(&rotate).send().await.unwrap();
    assert_problem(res, 404, "not-found", None).await;
    let res = s.anonymous.post(&rotate).send().await.unwrap();
    assert_problem(res, 401, "unauthorized", None).await;

    let res = ann_http.post(&rotate).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let new_http = client_with(body["api_key"].as_str().unwrap());
    assert_eq!(status(new_http.get(&account)).await, 200);
    // The replaced key is no longer anyone's: unknown, so 401.
    let res = ann_http.get(&account).send().await.unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_problem(res, 401, "unauthorized", None).await;
    // Bob's key is still a key, just not Ann's: 404, as if the account did not exist.
    let res = bob_http.get(&account).send().await.unwrap();
    assert_problem(res, 404, "not-found", None).await;

    // An account opened by an embedding program has no key until the operator issues one.
    let new = wayfare::domain::account::NewAccount::new("Kim", "kim@example.com").unwrap();
    let kim = s.runtime.create_account(new).await.unwrap().id;
    let kim_account = s.url(&format!("/v1/accounts/{kim}"));
    assert_eq!(status(s.http.get(&kim_account)).await, 200);
    let res = new_http.get(&kim_account).send().await.unwrap();
    assert_problem(res, 404, "not-found", None).await;
    let res = s
        .http
        .post(s.url(&format!("/v1/accounts/{kim}/api-key")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        status(client_with(body["api_key"].as_str().unwrap()).get(&kim_account)).await,
        200
    );
    s.stop().await;
}

#[actix_rt::test]
async fn bookings_and_personal_searches_belong_to_their_account() {
    let (seller, _knobs) = FixedSeller::new("test", 20_000);
    let s =
        TestServer::start_custom(|_| {}, vec![seller.into_custom(AdapterConfig::default())]).await;
    let (ann, ann_http) = s.create_customer("Ann").await;
    let (bob, bob_http) = s.create_customer("Bob").await;
    let start = Utc::now()
        .date_naive()
        .checked_add_days(Days::new(30))
        .unwrap();
    let end = start.checked_add_days(Days::new(2)).unwrap();

    // Searching needs no key; naming an account (for its wallet markdown) does.
    let search = |account: Option<&str>| {
        let mut url = s.url(&format!(
            "/v1/search/hotels?city=Testville&check_in={start}&check_out={end}"
        ));
        if let Some(account) = account {
            url.push_str(&format!("&account_id={account}"));
        }
        url
    };
    assert_eq!(status(s.anonymous.get(search(None))).await, 200);
    let res = s.anonymous.get(search(Some(&ann))).send().await.unwrap();
    assert_problem(res, 401, "unauthorized", None).await;
    let res = bob_http.get(search(Some(&ann))).send().await.unwrap();
    assert_problem(res, 404, "not-found", None).await;
    let res = ann_http.get(search(Some(&ann))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let found: Value = res.json().await.unwrap();
    assert_eq!(found["wallet_available"]["minor"], 0, "{found}");

    let order = |account: &str| {
        json!({
            "account_id": account,
            "seller": "test",
            "sku": "hotel:test:h1:double",
            "start": start.to_string(),
            "end": end.to_string(),
            "offer_price": {"currency": "EUR", "minor": 20_000},
            "card_token": "tok_approve",
        })
    };
    let post = |http: &Client, key: &str, body: Value| {
        http.post(s.url("/v1/bookings"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    // Bob cannot book on Ann's account; nobody can book anonymously.
    let res = post(&bob_http, "bob-on-ann", order(&ann)).await.unwrap();
    assert_problem(res, 404, "not-found", None).await;
    let res = post(&s.anonymous, "nobody", order(&ann)).await.unwrap();
    assert_problem(res, 401, "unauthorized", None).await;
    let stranger = client_with(wayfare::domain::access::ApiKey::generate().reveal());
    let res = post(&stranger, "stranger", order(&ann)).await.unwrap();
    assert_problem(res, 401, "unauthorized", None).await;
    let res = post(&ann_http, "ann-1", order(&ann)).await.unwrap();
    assert_eq!(res.status(), 202);
    let booking: Value = res.json().await.unwrap();
    let id = booking["id"].as_str().unwrap().to_owned();

    // Ann's booking is hers: Bob can neither read it, list it, nor cancel it.
    let one = s.url(&format!("/v1/bookings/{id}"));
    let cancel = s.url(&format!("/v1/bookings/{id}/cancel"));
    let list = s.url(&format!("/v1/accounts/{ann}/bookings"));
    for res in [
        bob_http.get(&one).send().await.unwrap(),
        bob_http.post(&cancel).send().await.unwrap(),
        bob_http.get(&list).send().await.unwrap(),
    ] {
        assert_problem(res, 404, "not-found", None).await;
    }
    for res in [
        s.anonymous.get(&one).send().await.unwrap(),
        s.anonymous.post(&cancel).send().await.unwrap(),
        s.anonymous.get(&list).send().await.unwrap(),
    ] {
        assert_problem(res, 401, "unauthorized", None).await;
    }
    assert_eq!(status(ann_http.get(&one)).await, 200);
    let mine: Value = ann_http.get(&list).fetch_json().await;
    assert_eq!(mine["bookings"].as_array().unwrap().len(), 1, "{mine}");
    assert!(mine["next_after"].is_null(), "{mine}");
    let theirs: Value = bob_http
        .get(s.url(&format!("/v1/accounts/{bob}/bookings")))
        .fetch_json()
        .await;
    assert_eq!(theirs["bookings"].as_array().unwrap().len(), 0, "{theirs}");
    // The operator sees everything.
    assert_eq!(status(s.http.get(&one)).await, 200);
    assert_eq!(status(s.http.get(&list)).await, 200);
    s.stop().await;
}

#[actix_rt::test]
async fn operator_routes_take_the_operator_token_only() {
    let s = TestServer::start().await;
    let (_, customer) = s.create_customer("Ann").await;
    for path in ["/v1/system/supervisors", "/metrics"] {
        let url = s.url(path);
        assert_eq!(status(s.http.get(&url)).await, 200, "{path}");
        let res = s.anonymous.get(&url).send().await.unwrap();
        assert_problem(res, 401, "unauthorized", None).await;
        let res = customer.get(&url).send().await.unwrap();
        assert_problem(res, 403, "forbidden", None).await;
        // Almost the token is not the token, and no credential at all: 401 (issue 11).
        let near = format!("{}x", &OPERATOR_TOKEN[..OPERATOR_TOKEN.len() - 1]);
        let res = client_with(&near).get(&url).send().await.unwrap();
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        assert_problem(res, 401, "unauthorized", None).await;
        // A well-formed API key that no account has: unknown too.
        let unknown = wayfare::domain::access::ApiKey::generate();
        let res = client_with(unknown.reveal())
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_problem(res, 401, "unauthorized", None).await;
    }
    let retry = s.url("/v1/admin/sagas/00000000-0000-4000-8000-000000000001/retry");
    let res = customer.post(&retry).send().await.unwrap();
    assert_problem(res, 403, "forbidden", None).await;
    // Health and the API description stay open (load balancers, client generators).
    assert_eq!(status(s.anonymous.get(s.url("/health"))).await, 200);
    assert_eq!(
        status(s.anonymous.get(s.url("/v1/openapi.json"))).await,
        200
    );
    s.stop().await;

    // With no token configured, operator routes are closed to everyone.
    let s = TestServer::start_with(|c| c.admin.token = None).await;
    for path in ["/v1/system/supervisors", "/metrics"] {
        let res = s.http.get(s.url(path)).send().await.unwrap();
        let body = assert_problem(res, 403, "forbidden", None).await;
        assert!(
            body["detail"].as_str().unwrap().contains("admin.token"),
            "{body}"
        );
    }
    s.stop().await;

    // Metrics can be opened on purpose.
    let s = TestServer::start_with(|c| c.admin.protect_metrics = false).await;
    assert_eq!(status(s.anonymous.get(s.url("/metrics"))).await, 200);
    let res = s
        .anonymous
        .get(s.url("/v1/system/supervisors"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "unauthorized", None).await;
    s.stop().await;
}

/// Arbitrary `Authorization` values: always a clean 200/401/403, never a 5xx.
#[actix_rt::test]
async fn hostile_authorization_headers() {
    // Hundreds of refused credentials from one address: past its rate limit, on purpose.
    let s = TestServer::start_with(|c| c.limits.enabled = false).await;
    let (ann, _) = s.create_customer("Ann").await;
    let account = s.url(&format!("/v1/accounts/{ann}"));
    let strategy = prop_oneof![
        "Bearer [ -~]{0,200}",
        "[Bb]earer\\s{0,3}[A-Za-z0-9_]{0,40}",
        "[ -~]{0,64}",
        Just(format!("Bearer {OPERATOR_TOKEN} ")),
        Just(format!("Bearer  {OPERATOR_TOKEN}")),
    ];
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut tried = 0;
    for _ in 0..200 {
        let value = strategy.new_tree(&mut runner).unwrap().current();
        let Ok(header) = reqwest::header::HeaderValue::from_str(&value) else {
            continue;
        };
        tried += 1;
        let res = s
            .anonymous
            .get(&account)
            .header("Authorization", header)
            .send()
            .await
            .unwrap();
        let code = res.status();
        assert!(
            [
                StatusCode::OK,
                StatusCode::UNAUTHORIZED,
                StatusCode::FORBIDDEN
            ]
            .contains(&code),
            "{value:?} gave {code}"
        );
        if code != StatusCode::OK {
            assert_eq!(res.headers()["content-type"], "application/problem+json");
        }
    }
    eprintln!("hostile Authorization headers tried: {tried}");
    assert!(tried >= 150);
    s.stop().await;
}

/// The real binary at debug log level never writes the operator token or an API key.
#[test]
fn secrets_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wayfare"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .env("RUST_LOG", "trace")
        .env("WAYFARE__ADMIN__TOKEN", OPERATOR_TOKEN)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start wayfare");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("wayfare listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = runtime.block_on(async {
        let anonymous = Client::new();
        let body: Value = anonymous
            .post(format!("{base}/v1/accounts"))
            .json(&json!({"name": "Ann", "email": "ann@example.com"}))
            .fetch_json()
            .await;
        let key = body["api_key"].as_str().unwrap().to_owned();
        let id = body["id"].as_str().unwrap();
        let account = format!("{base}/v1/accounts/{id}");
        assert_eq!(status(client_with(&key).get(&account)).await, 200);
        assert_eq!(status(client_with(OPERATOR_TOKEN).get(&account)).await, 200);
        // A mistyped key is unknown: 401.
        assert_eq!(
            status(client_with(&format!("{key}x")).get(&account)).await,
            401
        );
        let metrics = format!("{base}/metrics");
        assert_eq!(status(client_with(OPERATOR_TOKEN).get(&metrics)).await, 200);
        key
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.len() > 1000,
        "the log is too short to prove anything:\n{log}"
    );
    assert!(!log.contains(OPERATOR_TOKEN), "operator token in the log");
    assert!(!log.contains(&key[3..]), "API key in the log");
    // `check-config` prints the config, secrets redacted.
    let out = Command::new(env!("CARGO_BIN_EXE_wayfare"))
        .args(["check-config"])
        .current_dir(dir.path())
        .env("WAYFARE__ADMIN__TOKEN", OPERATOR_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("<redacted>"), "{printed}");
    assert!(!printed.contains(OPERATOR_TOKEN));
}

/// `Authorization` schemes are case-insensitive (RFC 9110); a request with two
/// `Authorization` headers is refused with 400 naming the header, whichever is valid.
#[actix_rt::test]
async fn bearer_in_any_case_and_never_two_credentials() {
    let s = TestServer::start().await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let res = s
            .anonymous
            .get(s.url("/metrics"))
            .header("Authorization", format!("{scheme} {OPERATOR_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{scheme}");
    }
    let (id, _) = s.create_customer("Twice").await;
    let res = s
        .anonymous
        .get(s.url(&format!("/v1/accounts/{id}")))
        .header("Authorization", format!("Bearer {OPERATOR_TOKEN}"))
        .header("Authorization", "Bearer wf_not_a_key")
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalid-input", Some("Authorization")).await;
    s.stop().await;
}

/// A made-up key learns nothing about which bookings exist: the same 401 for a booking
/// that exists and one that does not.
#[actix_rt::test]
async fn a_made_up_key_cannot_tell_which_bookings_exist() {
    let (seller, _) = FixedSeller::new("test", 20_000);
    let s =
        TestServer::start_custom(|_| {}, vec![seller.into_custom(AdapterConfig::default())]).await;
    let account = s.create_account("Probed").await;
    let start = Utc::now().date_naive() + Days::new(10);
    let res = s
        .http
        .post(s.url("/v1/bookings"))
        .header("Idempotency-Key", "probed-1")
        .json(&json!({
            "account_id": account, "seller": "test", "sku": "hotel:test:h1:double",
            "start": start, "end": start + Days::new(2),
            "offer_price": {"minor": 20_000, "currency": "EUR"},
            "wallet_points": {"minor": 0, "currency": "EUR"}, "card_token": "tok_approve",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let made_up = client_with(wayfare::domain::access::ApiKey::generate().reveal());
    let missing = uuid::Uuid::new_v4();
    let mut answers = Vec::new();
    for path in [
        format!("/v1/bookings/{id}"),
        format!("/v1/bookings/{missing}"),
    ] {
        let res = made_up.get(s.url(&path)).send().await.unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        answers.push((status, body));
    }
    assert_eq!(answers[0].0, 401, "{answers:?}");
    assert_eq!(answers[0], answers[1]);
    s.stop().await;
}
