//! Rate limits (`[limits]`) against a real server: past its burst, an address without an
//! API key and a customer's key are each refused with a 429 problem and `Retry-After`,
//! while other customers, the operator and the probes go on; a new key does not bring a
//! fresh bucket; `enabled = false` (from the environment) lets the same burst through; and
//! bad values are refused naming the key.
//!
//! The buckets refill at the slowest rate accepted (one token every 1,000 s), so what a
//! test sees depends on request counts only, never on how fast the machine is.

mod common;

use common::fake::FixedSeller;
use common::{assert_problem, client_with, FetchJson, TestServer};
use serde_json::{json, Value};
use wayfare::actors::seller::AdapterConfig;
use wayfare::domain::account::NewAccount;
use wayfare::Config;

/// A refill so slow that no token comes back during a test.
const NO_REFILL: f64 = 0.001;

/// A server whose buckets hold `per_key` tokens per account and `per_address` per address,
/// with one seller so that searches answer.
async fn server(per_key: u32, per_address: u32) -> TestServer {
    let (seller, _) = FixedSeller::new("test", 20_000);
    TestServer::start_custom(
        |c| {
            assert!(c.limits.enabled, "limits are on by default");
            c.limits.per_key_burst = per_key;
            c.limits.per_key_per_second = NO_REFILL;
            c.limits.per_address_burst = per_address;
            c.limits.per_address_per_second = NO_REFILL;
        },
        vec![seller.into_custom(AdapterConfig::default())],
    )
    .await
}

fn search_url(s: &TestServer) -> String {
    let day = |n| {
        (chrono::Utc::now().date_naive() + chrono::Days::new(n))
            .format("%Y-%m-%d")
            .to_string()
    };
    s.url(&format!(
        "/v1/search/hotels?city=Testville&check_in={}&check_out={}",
        day(10),
        day(12)
    ))
}

fn open(s: &TestServer, n: usize) -> reqwest::RequestBuilder {
    s.anonymous.post(s.url("/v1/accounts")).json(&json!({
        "name": format!("Visitor {n}"),
        "email": format!("visitor-{n}@example.com"),
    }))
}

/// A customer opened without HTTP (so no address token is spent): its id and a client
/// sending its API key.
async fn customer(s: &TestServer, name: &str) -> (String, reqwest::Client) {
    let (account, key) = s
        .runtime
        .create_customer(NewAccount::new(name, &format!("{name}@example.com")).unwrap())
        .await
        .unwrap();
    (account.id.to_string(), client_with(key.reveal()))
}

/// Asserts a 429 problem naming `limit`, with `Retry-After` in whole seconds (at least 1,
/// at most the 1,000 s one token takes) and the request id every response carries.
async fn assert_limited(res: reqwest::Response, limit: &str) {
    let retry_after = res
        .headers()
        .get("retry-after")
        .expect("Retry-After on a 429")
        .to_str()
        .unwrap()
        .parse::<u32>()
        .expect("Retry-After in whole seconds");
    assert!(
        (1..=1000).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert!(res.headers().contains_key("x-request-id"));
    let body = assert_problem(res, 429, "rate-limited", None).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(limit), "{detail}");
    assert!(detail.contains(&format!("{retry_after} s")), "{detail}");
}

/// `wayfare_http_rate_limited_total{scope}` as the operator reads it.
async fn refused(s: &TestServer, scope: &str) -> u64 {
    let text = s.http.get(s.url("/metrics")).fetch_text().await;
    let line = format!("wayfare_http_rate_limited_total{{scope=\"{scope}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .unwrap_or_else(|| panic!("no {line} in the metrics"))
        .parse()
        .unwrap()
}

#[actix_rt::test]
async fn an_address_without_a_key_is_refused_past_its_burst() {
    let s = server(100, 3).await;
    // Opening accounts and searching share the address's bucket: three tokens.
    assert_eq!(open(&s, 1).send().await.unwrap().status(), 201);
    assert_eq!(open(&s, 2).send().await.unwrap().status(), 201);
    let res = s.anonymous.get(search_url(&s)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_limited(
        s.anonymous.get(search_url(&s)).send().await.unwrap(),
        "limits.per_address_burst",
    )
    .await;
    // Refused before anything is done: no account is opened.
    assert_limited(open(&s, 3).send().await.unwrap(), "per client address").await;
    // Anything else without a key draws on the same bucket, refusals included.
    let res = s.anonymous.get(s.url("/v1/nowhere")).send().await.unwrap();
    assert_eq!(res.status(), 429);

    // The probes and static documents are never limited.
    for path in ["/health", "/v1/openapi.json", "/console"] {
        let res = s.anonymous.get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    // The operator, from the same address, is not limited.
    for _ in 0..10 {
        let res = s.http.get(search_url(&s)).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    // A customer's key has its own bucket, whatever the address's holds.
    let (id, ann) = customer(&s, "ann").await;
    let res = ann.get(search_url(&s)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = ann.get(s.url(&format!("/v1/accounts/{id}"))).send().await;
    assert_eq!(res.unwrap().status(), 200);

    assert_eq!(refused(&s, "address").await, 3);
    assert_eq!(refused(&s, "key").await, 0);
    let metrics = s.http.get(s.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(
            "wayfare_http_requests_total{method=\"GET\",route=\"/v1/search/hotels\",status=\"429\"} 1"
        ),
        "{metrics}"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn a_key_is_refused_past_its_burst_while_other_keys_go_on() {
    let s = server(4, 100).await;
    let (ann_id, ann) = customer(&s, "ann").await;
    let (bob_id, bob) = customer(&s, "bob").await;
    let ann_account = s.url(&format!("/v1/accounts/{ann_id}"));
    let bob_account = s.url(&format!("/v1/accounts/{bob_id}"));
    // Every route the key is used on draws on its account's bucket: four tokens.
    for _ in 0..3 {
        let res = ann.get(&ann_account).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let res = ann.get(search_url(&s)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_limited(
        ann.get(&ann_account).send().await.unwrap(),
        "limits.per_key_burst",
    )
    .await;
    assert_limited(ann.get(search_url(&s)).send().await.unwrap(), "per API key").await;

    // Another customer's key, from the same address, has its own bucket.
    for _ in 0..4 {
        let res = bob.get(&bob_account).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    // The operator acts on the limited account all the same.
    for _ in 0..10 {
        let res = s.http.get(&ann_account).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    // The bucket is the account's, not the key's: a new key does not refill it.
    let rekeyed: Value = s
        .http
        .post(s.url(&format!("/v1/accounts/{ann_id}/api-key")))
        .fetch_json()
        .await;
    let ann = client_with(rekeyed["api_key"].as_str().unwrap());
    assert_limited(ann.get(&ann_account).send().await.unwrap(), "per API key").await;
    assert_eq!(refused(&s, "key").await, 3);
    assert_eq!(refused(&s, "address").await, 0);
    s.stop().await;
}

/// A key that no account holds is no identity: it draws on the address's bucket, so
/// guessing keys (or spraying made-up ones for fresh buckets) is limited per address.
#[actix_rt::test]
async fn unknown_keys_draw_on_the_address_bucket() {
    let s = server(100, 2).await;
    let (id, _) = customer(&s, "ann").await;
    let account = s.url(&format!("/v1/accounts/{id}"));
    for n in 0..2 {
        let guess = client_with(&format!("wf_{:064x}", n + 1));
        let res = guess.get(&account).send().await.unwrap();
        assert_problem(res, 401, "unauthorized", None).await;
    }
    let guess = client_with(&format!("wf_{:064x}", 3));
    let res = guess.get(&account).send().await.unwrap();
    assert_limited(res, "per client address").await;
    // A malformed credential too.
    let res = s
        .anonymous
        .get(&account)
        .header("Authorization", "Bearer x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    s.stop().await;
}

#[actix_rt::test]
async fn limits_off_from_the_environment_let_the_same_burst_through() {
    // The benchmark switch, through the same layering the binary uses.
    let parsed = Config::parse(
        "[limits]\nper_key_burst = 1\nper_address_burst = 1\nper_address_per_second = 0.001\n",
        [("WAYFARE__LIMITS__ENABLED".to_owned(), "false".to_owned())],
    )
    .unwrap();
    assert!(!parsed.limits.enabled);
    let (seller, _) = FixedSeller::new("test", 20_000);
    let s = TestServer::start_custom(
        move |c| c.limits = parsed.limits,
        vec![seller.into_custom(AdapterConfig::default())],
    )
    .await;
    let (id, ann) = customer(&s, "ann").await;
    for n in 0..20 {
        assert_eq!(open(&s, n).send().await.unwrap().status(), 201);
        let res = s.anonymous.get(search_url(&s)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let res = ann.get(s.url(&format!("/v1/accounts/{id}"))).send().await;
        assert_eq!(res.unwrap().status(), 200);
    }
    assert_eq!(refused(&s, "address").await, 0);
    assert_eq!(refused(&s, "key").await, 0);
    s.stop().await;
}

/// The binary in `dir`, with no `WAYFARE*` variable of the caller's environment.
fn wayfare(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wayfare"));
    cmd.current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WAYFARE") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// `wayfare check-config` failed with status 1; its one `error:` line.
fn refusal(cmd: &mut std::process::Command) -> String {
    let out = cmd.arg("check-config").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1,
        "{err}"
    );
    err
}

/// The binary refuses a bad value at start-up in one line naming the key and where it
/// was set.
#[test]
fn bad_limits_are_refused_at_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (var, key) in [
        (
            "WAYFARE__LIMITS__PER_ADDRESS_PER_SECOND",
            "limits.per_address_per_second",
        ),
        ("WAYFARE__LIMITS__PER_KEY_BURST", "limits.per_key_burst"),
        ("WAYFARE__LIMITS__MAX_TRACKED", "limits.max_tracked"),
    ] {
        let err = refusal(wayfare(dir.path()).env(var, "0"));
        assert!(err.contains(key) && err.contains(var), "{err}");
    }
    let err = refusal(wayfare(dir.path()).env("WAYFARE__LIMITS__PER_KEY_PER_SECOND", "fast"));
    assert!(err.contains("per_key_per_second"), "{err}");
    std::fs::write(
        dir.path().join("config.toml"),
        "[limits]\nper_address_burst = 0\n",
    )
    .unwrap();
    let err = refusal(&mut wayfare(dir.path()));
    assert!(
        err.contains("limits.per_address_burst") && err.contains("config.toml, line 2"),
        "{err}"
    );
}

#[actix_rt::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let (seller, _) = FixedSeller::new("test", 20_000);
    let s = TestServer::start_custom(
        |c| {
            c.limits.per_address_burst = 2;
            c.limits.per_address_per_second = NO_REFILL;
            c.limits.trusted_proxies = vec!["127.0.0.1".into(), "10.0.0.0/8".into()];
        },
        vec![seller.into_custom(AdapterConfig::default())],
    )
    .await;
    let via = |forwarded: &str| {
        s.anonymous
            .get(search_url(&s))
            .header("X-Forwarded-For", forwarded)
    };
    for _ in 0..2 {
        assert_eq!(via("203.0.113.1").send().await.unwrap().status(), 200);
    }
    assert_limited(
        via("203.0.113.1").send().await.unwrap(),
        "per client address",
    )
    .await;
    // Another client behind the same proxy has its own bucket.
    assert_eq!(via("203.0.113.2").send().await.unwrap().status(), 200);
    // Through a second trusted proxy, the client is still the nearest untrusted address;
    // what the client itself wrote further left does not count.
    let chained = via("198.51.100.7, 203.0.113.1, 10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(chained.status(), 429);
    // A header that does not parse is not believed: the proxy's own bucket.
    for _ in 0..2 {
        assert_eq!(via("not-an-address").send().await.unwrap().status(), 200);
    }
    assert_eq!(via("garbage, 1.2.3.4").send().await.unwrap().status(), 429);
    s.stop().await;

    // Without trusted proxies the header is ignored: every request is the peer's.
    let s = server(100, 2).await;
    for (i, expected) in [200, 200, 429].into_iter().enumerate() {
        let res = s
            .anonymous
            .get(search_url(&s))
            .header("X-Forwarded-For", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), expected, "request {i}");
    }
    s.stop().await;
}

/// A credential an exempt route refuses draws on the address's bucket: guessing keys
/// against `/metrics` (401 for an unknown key, 403 for a customer's) is throttled like
/// anywhere else, while probes without a credential and the operator go on.
#[actix_rt::test]
async fn refused_credentials_on_exempt_routes_are_limited_per_address() {
    let s = server(100, 3).await;
    let guess = || client_with(wayfare::domain::access::ApiKey::generate().reveal());
    for _ in 0..3 {
        let res = guess().get(s.url("/metrics")).send().await.unwrap();
        assert_eq!(res.status(), 401);
    }
    assert_limited(
        guess().get(s.url("/metrics")).send().await.unwrap(),
        "limits.per_address_burst",
    )
    .await;
    let res = guess().get(s.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 429, "any exempt route, the same bucket");
    // Without a credential, the probes are not limited; nor is the operator.
    for path in ["/health", "/v1/openapi.json"] {
        let res = s.anonymous.get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    assert_eq!(
        s.http.get(s.url("/metrics")).send().await.unwrap().status(),
        200
    );
    assert_eq!(refused(&s, "address").await, 2);
    s.stop().await;
}

/// Opening accounts draws on a slow bucket of its own per address, so new accounts (each
/// with its own request bucket) cannot multiply a client's budget; other requests of the
/// address go on.
#[actix_rt::test]
async fn account_openings_are_limited_per_address() {
    let (seller, _) = FixedSeller::new("test", 20_000);
    let s = TestServer::start_custom(
        |c| {
            c.limits.per_address_burst = 100;
            c.limits.per_address_per_second = NO_REFILL;
            c.limits.account_creations_burst = 2;
            c.limits.account_creations_per_second = NO_REFILL;
        },
        vec![seller.into_custom(AdapterConfig::default())],
    )
    .await;
    assert_eq!(open(&s, 1).send().await.unwrap().status(), 201);
    assert_eq!(open(&s, 2).send().await.unwrap().status(), 201);
    assert_limited(
        open(&s, 3).send().await.unwrap(),
        "limits.account_creations_burst",
    )
    .await;
    assert_eq!(refused(&s, "account_creation").await, 1);
    let res = s.anonymous.get(search_url(&s)).send().await.unwrap();
    assert_eq!(res.status(), 200, "other requests of the address go on");
    // The operator opens accounts for customers without limit.
    for n in 10..15 {
        let res = s
            .http
            .post(s.url("/v1/accounts"))
            .json(&json!({"name": format!("Staff {n}"), "email": format!("s{n}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    s.stop().await;
}
