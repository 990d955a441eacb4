//! A seller and a gateway that lie: the fake seller and the fake gateway (their own
//! processes, keeping the true books) behind tampering proxies (`common::tamper`) that
//! redirect a chosen call to another host, rewrite the amount in a chosen reply, or swallow
//! a reply after the fake acted. For each case: nothing reaches the other host, the
//! booking ends where the rules say (a mismatch fails it with its code, or parks it), and
//! at the end the invariant checker (`wayfare_drill::check`) finds wallets equal to their
//! ledgers and the partners' own books in agreement with wayfare's bookings.

mod common;
mod fakes;

use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use serde_json::{json, Value};
use wayfare_drill::fakes::ledgers;
use wayfare_drill::{check, BookingSeen, HttpObserver, KeySeen, Observations};

use common::tamper::{Act, Rule, Tamper};
use common::{wait_until, TestServer};

const SELLER: &str = "evil";
const CREDIT: i64 = 2_000;
const WITHIN: Duration = Duration::from_secs(30);

/// What a case ends in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The booking failed with this `failure_code`.
    Failed(&'static str),
    /// The booking is parked for an operator.
    Parked,
    /// The booking stays confirmed and its cancellation is parked or failed (a partner
    /// misbehaved on the cancellation's calls).
    CancellationStuck,
}

struct Case {
    name: &'static str,
    seller: Vec<Rule>,
    gateway: Vec<Rule>,
    /// Cancel once confirmed (the rules apply from the cancel on).
    cancel: bool,
    expect: Expect,
}

fn rule(method: &'static str, path: fn(&str) -> bool, act: Act) -> Rule {
    Rule { method, path, act }
}

fn is_book(p: &str) -> bool {
    p == "/bookings"
}
fn is_seller_cancel(p: &str) -> bool {
    p.starts_with("/bookings/") && p.ends_with("/cancel")
}
fn is_seller_status(p: &str) -> bool {
    p.starts_with("/bookings/") && !p.ends_with("/cancel")
}
fn is_authorize(p: &str) -> bool {
    p == "/v1/authorizations"
}
fn is_capture(p: &str) -> bool {
    p.ends_with("/capture")
}
fn is_void(p: &str) -> bool {
    p.ends_with("/void")
}
fn is_refund(p: &str) -> bool {
    p == "/v1/refunds"
}
fn is_lookup(p: &str) -> bool {
    p.starts_with("/v1/operations/")
}

fn cases() -> Vec<Case> {
    use Act::*;
    vec![
        Case {
            name: "seller confirms at ten times the price",
            seller: vec![rule(
                "POST",
                is_book,
                Scale {
                    field: "price",
                    times: 10,
                },
            )],
            gateway: vec![],
            cancel: false,
            expect: Expect::Failed("price_mismatch"),
        },
        Case {
            name: "seller confirms at 0.01",
            seller: vec![rule(
                "POST",
                is_book,
                SetMinor {
                    field: "price",
                    minor: 1,
                },
            )],
            gateway: vec![],
            cancel: false,
            expect: Expect::Failed("price_mismatch"),
        },
        Case {
            name: "seller reply lost, its status names another price",
            seller: vec![
                rule("POST", is_book, Swallow),
                rule(
                    "GET",
                    is_seller_status,
                    Scale {
                        field: "price",
                        times: 3,
                    },
                ),
            ],
            gateway: vec![],
            cancel: false,
            expect: Expect::Failed("price_mismatch"),
        },
        Case {
            name: "gateway authorizes ten times the amount",
            seller: vec![],
            gateway: vec![rule(
                "POST",
                is_authorize,
                Scale {
                    field: "amount",
                    times: 10,
                },
            )],
            cancel: false,
            expect: Expect::Failed("payment_mismatch"),
        },
        Case {
            name: "authorization reply lost, the look-up names another amount",
            seller: vec![],
            gateway: vec![
                rule("POST", is_authorize, Swallow),
                rule(
                    "GET",
                    is_lookup,
                    Scale {
                        field: "amount",
                        times: 10,
                    },
                ),
            ],
            cancel: false,
            // The authorize budget ran out first: a technical failure; the mismatch found
            // by the look-up is voided all the same.
            expect: Expect::Failed("technical"),
        },
        Case {
            name: "gateway captures another amount",
            seller: vec![],
            gateway: vec![rule(
                "POST",
                is_capture,
                SetMinor {
                    field: "amount",
                    minor: 1,
                },
            )],
            cancel: false,
            expect: Expect::Parked,
        },
        Case {
            name: "gateway refunds another amount",
            seller: vec![],
            gateway: vec![rule(
                "POST",
                is_refund,
                Scale {
                    field: "amount",
                    times: 2,
                },
            )],
            cancel: true,
            expect: Expect::CancellationStuck,
        },
        Case {
            name: "seller redirects the booking",
            seller: vec![rule("POST", is_book, Redirect)],
            gateway: vec![],
            cancel: false,
            expect: Expect::Failed("technical"),
        },
        Case {
            name: "seller redirects the status look-up",
            seller: vec![
                rule("POST", is_book, Swallow),
                rule("GET", is_seller_status, Redirect),
            ],
            gateway: vec![],
            cancel: false,
            expect: Expect::Parked,
        },
        Case {
            name: "seller redirects the cancellation",
            seller: vec![rule("POST", is_seller_cancel, Redirect)],
            gateway: vec![],
            cancel: true,
            expect: Expect::CancellationStuck,
        },
        Case {
            name: "gateway redirects the authorization",
            seller: vec![],
            gateway: vec![rule("POST", is_authorize, Redirect)],
            cancel: false,
            expect: Expect::Failed("technical"),
        },
        Case {
            name: "gateway redirects the capture",
            seller: vec![],
            gateway: vec![rule("POST", is_capture, Redirect)],
            cancel: false,
            expect: Expect::Parked,
        },
        Case {
            name: "gateway redirects the void",
            seller: vec![rule(
                "POST",
                is_book,
                Scale {
                    field: "price",
                    times: 2,
                },
            )],
            gateway: vec![rule("POST", is_void, Redirect)],
            cancel: false,
            expect: Expect::Parked,
        },
        Case {
            name: "gateway redirects the refund",
            seller: vec![],
            gateway: vec![rule("POST", is_refund, Redirect)],
            cancel: true,
            expect: Expect::CancellationStuck,
        },
        Case {
            name: "gateway redirects the look-up",
            seller: vec![],
            gateway: vec![
                rule("POST", is_authorize, Swallow),
                rule("GET", is_lookup, Redirect),
            ],
            cancel: false,
            expect: Expect::Parked,
        },
    ]
}

#[actix_rt::test]
async fn lying_partners_are_caught_and_the_books_still_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let seller = fakes::fake_seller(
        &d.join("seller"),
        &d.join("seller.log"),
        &["--coverage", "1.0"],
    );
    let gateway = fakes::fake_gateway(&d.join("gateway"), &d.join("gateway.log"), &[]);
    let seller_proxy = Tamper::start(&seller.url());
    let gateway_proxy = Tamper::start(&gateway.url());
    let (seller_url, gateway_url) = (seller_proxy.url(), gateway_proxy.url());
    let server = TestServer::start_with(move |config| {
        // Calm partners' breakers: every case misbehaves on purpose.
        let breaker = json!({"window": 1000, "minimum_calls": 1000});
        config.sellers = vec![serde_json::from_value(json!({
            "name": SELLER,
            "kind": "http",
            "verticals": ["hotel"],
            "http": {"base_url": seller_url, "request_timeout_ms": 3000},
            "adapter": {"breaker": breaker},
        }))
        .unwrap()];
        config.payments = serde_json::from_value(json!({
            "kind": "http",
            "http": {"base_url": gateway_url, "request_timeout_ms": 3000},
            "adapter": {"breaker": breaker},
        }))
        .unwrap();
        config.bookings.step_timeout_ms = 4_000;
        config.bookings.saga.backoff_base_ms = 5;
        config.bookings.saga.backoff_max_ms = 20;
    })
    .await;
    let http = &server.http;

    // A search redirected elsewhere: the other host's (empty) answer is not the seller's.
    seller_proxy.set(vec![rule("POST", |p| p == "/search/hotels", Act::Redirect)]);
    let start = Utc::now().date_naive() + Days::new(19);
    let url = server.url(&format!(
        "/v1/search/hotels?city=Lisbon&check_in={start}&check_out={}",
        start + Days::new(2)
    ));
    let search: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(search["sellers"][0]["seller"], SELLER, "{search}");
    assert_eq!(search["sellers"][0]["status"], "error", "{search}");
    assert_eq!(search["offers"], json!([]), "{search}");
    assert!(seller_proxy.tampered() >= 1, "the search reached the proxy");
    seller_proxy.set(vec![]);

    let mut keys = Vec::new();
    let mut bookings = Vec::new();
    let mut accounts = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let account = server.create_account(&format!("Case {i}")).await;
        credit(&server, &account, i).await;
        accounts.push(account.clone());
        // A fresh date per case: no cached search hides the seller.
        let start = Utc::now().date_naive() + Days::new(20 + 3 * i as u64);
        let (sku, price) = offer(&server, start).await;
        let (seller_before, gateway_before) = (seller_proxy.tampered(), gateway_proxy.tampered());
        if !case.cancel {
            seller_proxy.set(case.seller.clone());
            gateway_proxy.set(case.gateway.clone());
        }
        let key = format!("case-{i}");
        let id = book(&server, &account, &key, &sku, start, price).await;
        let booking = settled(&server, &id).await;
        if case.cancel {
            assert_eq!(booking["state"], "confirmed", "{}: {booking}", case.name);
            seller_proxy.set(case.seller.clone());
            gateway_proxy.set(case.gateway.clone());
            let res = http
                .post(server.url(&format!("/v1/bookings/{id}/cancel")))
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "{}: {}", case.name, res.status());
        }
        let booking = settled(&server, &id).await;
        seller_proxy.set(vec![]);
        gateway_proxy.set(vec![]);
        assert!(
            seller_proxy.tampered() + gateway_proxy.tampered() > seller_before + gateway_before,
            "{}: no rule fired",
            case.name
        );
        match case.expect {
            Expect::Failed(code) => {
                assert_eq!(booking["state"], "failed", "{}: {booking}", case.name);
                assert_eq!(booking["failure_code"], code, "{}: {booking}", case.name);
            }
            Expect::Parked => {
                assert_eq!(
                    booking["state"], "needs_attention",
                    "{}: {booking}",
                    case.name
                )
            }
            Expect::CancellationStuck => {
                assert_eq!(booking["state"], "confirmed", "{}: {booking}", case.name);
                let c = booking["cancellation"]["state"]
                    .as_str()
                    .unwrap_or_default();
                assert!(
                    c == "needs_attention" || c == "failed",
                    "{}: {booking}",
                    case.name
                );
            }
        }
        keys.push(KeySeen {
            key,
            account: account.clone(),
            ids: [id.clone()].into(),
        });
        bookings.push(id);
    }
    assert_eq!(seller_proxy.trapped(), 0, "a seller redirect was followed");
    assert_eq!(
        gateway_proxy.trapped(),
        0,
        "a gateway redirect was followed"
    );

    // The mismatches and redirects are counted.
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (partner, kind) in [
        ("seller", "amount_mismatch"),
        ("gateway", "amount_mismatch"),
        ("seller", "redirect"),
        ("gateway", "redirect"),
    ] {
        let line = format!(
            "wayfare_partner_untrusted_replies_total{{partner=\"{partner}\",kind=\"{kind}\"}}"
        );
        let n: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in /metrics"))
            .trim()
            .parse()
            .unwrap();
        assert!(n >= 1.0, "{line} {n}");
    }

    // The partners' books and wayfare's agree; wallets are their ledgers.
    let mut observer =
        HttpObserver::new(http.clone(), server.base.clone(), Instant::now() + WITHIN);
    let mut seen: Vec<BookingSeen> = Vec::new();
    for id in &bookings {
        seen.push(observer.booking(id).await.expect("booking readable"));
    }
    let mut accounts_seen = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        accounts_seen.push(observer.account(account, Some(credit_of(i))).await);
    }
    let plain = reqwest::Client::new();
    let payments = ledgers::fetch_gateway(&plain, &gateway.url())
        .await
        .unwrap()
        .seen()
        .unwrap();
    let sellers = vec![ledgers::fetch_seller(&plain, &seller.url())
        .await
        .unwrap()
        .seen(SELLER)];
    // The price mismatches were reserved at the seller and cancelled there.
    let seller_book = ledgers::fetch_seller(&plain, &seller.url()).await.unwrap();
    for id in &bookings[..3] {
        assert!(
            seller_book.cancellations.iter().any(|c| &c.key == id),
            "the reservation of {id} is not cancelled at the seller: {seller_book:?}"
        );
    }
    let observations = Observations {
        accounts: accounts_seen,
        bookings: seen,
        keys,
        payments: Some(payments),
        sellers: Some(sellers),
    };
    let violations = check(&observations);
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(observer.take_problems().is_empty());
    server.stop().await;
}

/// Points credited to case `i`'s account: some, so holds and releases are exercised.
fn credit_of(i: usize) -> i64 {
    CREDIT + i as i64
}

async fn credit(server: &TestServer, account: &str, i: usize) {
    let res = server
        .http
        .post(server.url(&format!("/v1/accounts/{account}/wallet/credits")))
        .header("Idempotency-Key", format!("chaos-credit-{i}"))
        .json(&json!({"amount": {"minor": credit_of(i), "currency": "EUR"}}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "credit: {}", res.status());
}

/// The first Lisbon offer for two nights from `start`, searched with no rule in force.
async fn offer(server: &TestServer, start: NaiveDate) -> (String, i64) {
    let url = server.url(&format!(
        "/v1/search/hotels?city=Lisbon&check_in={start}&check_out={}",
        start + Days::new(2)
    ));
    wait_until(WITHIN, "an offer of the seller", async || {
        let body: Value = server.http.get(&url).send().await.ok()?.json().await.ok()?;
        let o = body["offers"].as_array()?.first()?.clone();
        Some((o["sku"].as_str()?.to_owned(), o["price"]["minor"].as_i64()?))
    })
    .await
}

async fn book(
    server: &TestServer,
    account: &str,
    key: &str,
    sku: &str,
    start: NaiveDate,
    price: i64,
) -> String {
    let res = server
        .http
        .post(server.url("/v1/bookings"))
        .header("Idempotency-Key", key)
        .json(&json!({
            "account_id": account,
            "seller": SELLER,
            "sku": sku,
            "start": start,
            "end": start + Days::new(2),
            "offer_price": {"minor": price, "currency": "EUR"},
            "wallet_points": {"minor": 500, "currency": "EUR"},
            "card_token": "tok_approve",
        }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status.as_u16(), 202, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The booking once it and its cancellation (if any) are final or parked.
async fn settled(server: &TestServer, id: &str) -> Value {
    let settled = |s: &str| matches!(s, "confirmed" | "failed" | "cancelled" | "needs_attention");
    wait_until(WITHIN, format_args!("booking {id} settles"), async || {
        let body: Value = server
            .http
            .get(server.url(&format!("/v1/bookings/{id}")))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let state = body["state"].as_str()?;
        let cancellation = body["cancellation"]["state"].as_str();
        (settled(state) && cancellation.is_none_or(settled)).then_some(body)
    })
    .await
}

/// A gateway that echoes the card token in its error messages, in a 402, in a 500 and in
/// a malformed 201, never gets it into wayfare's log (the real binary at trace level) nor
/// into what the operator reads of the booking: of a refusal only its status and code are
/// kept, and a malformed reply is described by where it broke, not by what it holds.
#[actix_rt::test]
async fn a_gateway_echoing_the_card_token_keeps_it_out_of_the_log() {
    const TOKEN: &str = "tok_echoed_4242424242424242";
    const OPERATOR: &str = "echo-test-operator-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let seller = fakes::fake_seller(
        &d.join("seller"),
        &d.join("seller.log"),
        &["--coverage", "1.0"],
    );
    let gateway = fakes::fake_gateway(&d.join("gateway"), &d.join("gateway.log"), &[]);
    let proxy = Tamper::start(&gateway.url());
    std::fs::write(
        d.join("wayfare.toml"),
        format!(
            "[store]\ndata_dir = \"./data\"\n\n[[sellers]]\nname = \"{SELLER}\"\nkind = \"http\"\n\
             verticals = [\"hotel\"]\n[sellers.http]\nbase_url = \"{}\"\n\n[payments]\n\
             kind = \"http\"\n[payments.http]\nbase_url = \"{}\"\n\n[bookings.saga]\n\
             backoff_base_ms = 5\nbackoff_max_ms = 20\n",
            seller.url(),
            proxy.url()
        ),
    )
    .unwrap();
    let mut command =
        fakes::wayfare_command(d, &d.join("wayfare.toml"), &d.join("wayfare.log"), OPERATOR);
    command.env("RUST_LOG", "trace");
    let server = fakes::spawn_listening(command, "wayfare listening on ")
        .unwrap_or_else(|| panic!("wayfare exited: {}", read(&d.join("wayfare.log"))));
    let base = server.addr.clone();
    let http = fakes::operator_client(OPERATOR, Duration::from_secs(10));
    let res = http
        .post(format!("{base}/v1/accounts"))
        .json(&json!({"name": "Echo", "email": "echo@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let account = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let echo = |code: &str| {
        format!(
            r#"{{"error": {{"code": "{code}", "message": "card {TOKEN} refused; you sent {TOKEN}"}}}}"#
        )
    };
    let replies = [
        (402, echo("card_declined"), "payment_declined"),
        (500, echo("internal"), "technical"),
        (
            201,
            format!(r#"{{"authorization_id": 42, "amount": "{TOKEN}"}}"#),
            "technical",
        ),
    ];
    for (i, (status, body, code)) in replies.into_iter().enumerate() {
        proxy.set(vec![rule(
            "POST",
            is_authorize,
            Act::Respond { status, body },
        )]);
        let start = Utc::now().date_naive() + Days::new(20 + 3 * i as u64);
        let url = format!(
            "{base}/v1/search/hotels?city=Lisbon&check_in={start}&check_out={}",
            start + Days::new(2)
        );
        let (sku, price) = wait_until(WITHIN, "an offer", async || {
            let body: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            let o = body["offers"].as_array()?.first()?.clone();
            Some((o["sku"].as_str()?.to_owned(), o["price"]["minor"].as_i64()?))
        })
        .await;
        let res = http
            .post(format!("{base}/v1/bookings"))
            .header("Idempotency-Key", format!("echo-{i}"))
            .json(&json!({
                "account_id": account, "seller": SELLER, "sku": sku,
                "start": start, "end": start + Days::new(2),
                "offer_price": {"minor": price, "currency": "EUR"},
                "wallet_points": {"minor": 0, "currency": "EUR"},
                "card_token": TOKEN,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        let id = res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let booking = wait_until(WITHIN, format_args!("booking {id} fails"), async || {
            let b: Value = http
                .get(format!("{base}/v1/bookings/{id}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (b["state"] == "failed").then_some(b)
        })
        .await;
        assert_eq!(booking["failure_code"], code, "{booking}");
        assert!(
            !booking.to_string().contains(TOKEN),
            "the operator's view: {booking}"
        );
    }
    assert_eq!(
        proxy.tampered(),
        3 + 2 * 2,
        "each echo answered every authorize attempt"
    );
    drop(server);
    let log = read(&d.join("wayfare.log"));
    assert!(
        log.contains("Payment gateway"),
        "the gateway's failures were logged"
    );
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(TOKEN)).take(3).collect();
    assert!(
        leaks.is_empty(),
        "the card token reached the log:\n{}",
        leaks.join("\n")
    );
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
