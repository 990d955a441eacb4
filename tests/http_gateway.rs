//! The HTTP payment gateway client against `examples/fake_gateway.rs` running as its own
//! process on an ephemeral port: approvals, typed declines, and every kind of unknown
//! outcome (5xx, hang, act-then-drop) reconciled by idempotency key, also across a restart
//! of the fake on its data dir; then a booking saga paying through it; and `https://` with
//! a self-signed certificate made by the test, trusted through `ca_cert` or refused.
//!
//! `cargo test` builds the examples before it runs tests; run alone, this file needs
//! `cargo build --example fake_gateway` first (the test says so if the binary is missing).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wayfare::actors::seller::AdapterConfig;
use wayfare::config::Secret;
use wayfare::domain::money::{Currency, Money};
use wayfare::domain::saga::SagaState;
use wayfare::payments::http::{HttpGateway, HttpGatewayConfig};
use wayfare::payments::{
    AuthOutcome, CaptureOutcome, PaymentError, PaymentGateway, PaymentOpStatus, RefundOutcome,
    VoidOutcome,
};
use wayfare::sellers::simulated::{SimulatedSeller, SimulatedSellerConfig};
use wayfare::sellers::Vertical;
use wayfare::CustomSeller;

const API_KEY: &str = "gw-test-key-0123";

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

/// The fake gateway binary that `cargo test` built next to this test's own binary.
fn fake_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join("fake_gateway");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --example fake_gateway` (plain `cargo test` builds it)",
        bin.display()
    );
    bin
}

/// A fake gateway process; killed when dropped.
struct Fake {
    child: Child,
    url: String,
    /// The test's own client, for `/_fake/ledger`.
    http: reqwest::Client,
}

impl Fake {
    fn start(data: &Path, extra: &[&str]) -> Fake {
        Self::spawn(data, extra, None)
    }

    /// The fake serving `https://` with `tls`'s certificate.
    fn start_tls(data: &Path, tls: &common::SelfSigned, extra: &[&str]) -> Fake {
        Self::spawn(data, extra, Some(tls))
    }

    fn spawn(data: &Path, extra: &[&str], tls: Option<&common::SelfSigned>) -> Fake {
        let mut command = Command::new(fake_binary());
        command
            .args(["--bind", "127.0.0.1:0", "--api-key", API_KEY, "--data-dir"])
            .arg(data)
            .args(extra);
        if let Some(tls) = tls {
            command
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("fake gateway starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("fake_gateway listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let (scheme, http) = match tls {
            Some(tls) => ("https", tls.trusting_client()),
            None => ("http", reqwest::Client::new()),
        };
        Fake {
            child,
            url: format!("{scheme}://{addr}/"),
            http,
        }
    }

    fn client(&self, timeout_ms: u64) -> HttpGateway {
        HttpGateway::new(HttpGatewayConfig {
            base_url: self.url.clone(),
            api_key: Some(Secret::new(API_KEY)),
            request_timeout_ms: timeout_ms,
            ..Default::default()
        })
        .unwrap()
    }

    async fn ledger(&self) -> Value {
        self.http
            .get(format!("{}_fake/ledger", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn authorization_id(outcome: AuthOutcome) -> String {
    match outcome {
        AuthOutcome::Authorized {
            authorization_id, ..
        } => authorization_id,
        other => panic!("expected an authorization, got {other:?}"),
    }
}

#[tokio::test]
async fn approve_capture_refund_and_replays_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start(dir.path(), &[]);
    let gw = fake.client(2_000);
    let auth = authorization_id(
        gw.authorize("s1:authorize", "tok_approve", eur(10_000))
            .await
            .unwrap(),
    );
    let again = authorization_id(
        gw.authorize("s1:authorize", "tok_approve", eur(10_000))
            .await
            .unwrap(),
    );
    assert_eq!(auth, again, "a replayed key answers the first result");
    let capture = gw.capture("s1:capture", &auth, eur(8_000)).await.unwrap();
    assert!(
        matches!(capture, CaptureOutcome::Captured { .. }),
        "{capture:?}"
    );
    let refund = gw.refund("s1:refund", &auth, eur(3_000)).await.unwrap();
    assert!(
        matches!(refund, RefundOutcome::Refunded { .. }),
        "{refund:?}"
    );
    // Refusals are outcomes, not errors.
    let twice = gw.capture("s1:capture-2", &auth, eur(1)).await.unwrap();
    assert!(
        matches!(&twice, CaptureOutcome::Rejected { reason } if reason.starts_with("already_captured")),
        "{twice:?}"
    );
    let void = gw.void("s1:void", &auth).await.unwrap();
    assert!(matches!(void, VoidOutcome::Rejected { .. }), "{void:?}");
    // The same key for another request can never succeed.
    let conflict = gw.authorize("s1:authorize", "tok_approve", eur(1)).await;
    assert!(
        matches!(conflict, Err(PaymentError::Permanent(_))),
        "{conflict:?}"
    );

    let ledger = fake.ledger().await;
    assert_eq!(
        ledger["authorizations"].as_array().unwrap().len(),
        1,
        "{ledger}"
    );
    assert_eq!(ledger["captures"][0]["key"], "s1:capture", "{ledger}");
    assert_eq!(ledger["captures"][0]["amount"]["minor"], 8_000);
    assert_eq!(ledger["refunds"][0]["key"], "s1:refund");
    assert_eq!(ledger["refunds"][0]["amount"]["minor"], 3_000);
}

#[tokio::test]
async fn declines_are_typed_outcomes_and_bad_credentials_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start(dir.path(), &[]);
    let gw = fake.client(2_000);
    for (token, code) in [
        ("tok_decline", "card_declined"),
        ("tok_insufficient", "insufficient_funds"),
        ("tok_expired", "expired_card"),
    ] {
        let key = format!("d:{token}");
        match gw.authorize(&key, token, eur(500)).await.unwrap() {
            AuthOutcome::Declined { reason } => assert!(reason.starts_with(code), "{reason}"),
            other => panic!("{token}: {other:?}"),
        }
        let status = gw.status(&key).await.unwrap();
        assert!(
            matches!(status, Some(PaymentOpStatus::Declined { .. })),
            "{status:?}"
        );
    }
    assert_eq!(gw.status("never-sent").await.unwrap(), None);
    let stranger = HttpGateway::new(HttpGatewayConfig {
        base_url: fake.url.clone(),
        api_key: Some(Secret::new("wrong-key")),
        ..Default::default()
    })
    .unwrap();
    let refused = stranger.authorize("x", "tok_approve", eur(1)).await;
    assert!(
        matches!(refused, Err(PaymentError::Permanent(_))),
        "{refused:?}"
    );
}

/// 5xx, a hang before acting and acting-then-dropping all leave the outcome unknown; the
/// key tells afterwards, also from a restarted fake on the same data dir.
#[tokio::test]
async fn unknown_outcomes_are_reconciled_by_key_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    for (fault, took_effect) in [
        ("--error-rate", false),
        ("--hang-rate", false),
        ("--drop-rate", true),
    ] {
        let key = format!("u{fault}:authorize");
        let faulty = Fake::start(dir.path(), &[fault, "1"]);
        let reply = faulty
            .client(300)
            .authorize(&key, "tok_approve", eur(700))
            .await;
        assert_eq!(
            reply,
            Err(PaymentError::Timeout),
            "{fault}: a 5xx or silence is never a decline"
        );
        drop(faulty);

        let fake = Fake::start(dir.path(), &[]);
        let gw = fake.client(2_000);
        let status = gw.status(&key).await.unwrap();
        if took_effect {
            let Some(PaymentOpStatus::Authorized {
                authorization_id,
                amount,
            }) = status
            else {
                panic!("{fault}: the authorization that happened is found: {status:?}");
            };
            assert_eq!(amount, eur(700));
            // Retrying with the key finds the same authorization: nothing doubles.
            let retried = authorization_id_of(gw.authorize(&key, "tok_approve", eur(700)).await);
            assert_eq!(retried, authorization_id);
        } else {
            assert_eq!(status, None, "{fault}: nothing happened");
        }
    }
    let fake = Fake::start(dir.path(), &[]);
    let ledger = fake.ledger().await;
    assert_eq!(
        ledger["authorizations"].as_array().unwrap().len(),
        1,
        "only the dropped reply's authorization exists, once: {ledger}"
    );
}

fn authorization_id_of(reply: Result<AuthOutcome, PaymentError>) -> String {
    authorization_id(reply.unwrap())
}

/// A booking saga paying through the HTTP gateway: confirmed, and the fake's own ledger
/// holds one authorization and one capture under the saga's keys.
#[actix_rt::test]
async fn a_booking_pays_through_the_http_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start(dir.path(), &[]);
    let gateway: Arc<dyn PaymentGateway> = Arc::new(fake.client(2_000));
    let seller = SimulatedSeller::new(SimulatedSellerConfig {
        name: "sim".into(),
        coverage: 1.0,
        latency_ms: (0, 2),
        ..SimulatedSellerConfig::default()
    })
    .unwrap();
    let seller = CustomSeller {
        api: Arc::new(seller),
        verticals: vec![Vertical::Hotel],
        adapter: AdapterConfig::default(),
    };
    let server = common::TestServer::start_built(
        |_| {},
        move |builder| builder.payment_gateway(gateway).seller(seller),
    )
    .await;
    let account: wayfare::domain::account::AccountId = server
        .create_account("Gateway Payer")
        .await
        .parse()
        .unwrap();
    let start = chrono::Utc::now().date_naive() + chrono::Days::new(30);
    let search = server
        .runtime
        .search_hotels(
            wayfare::sellers::HotelQuery {
                city_or_hotel: "Lisbon".into(),
                check_in: start,
                check_out: start + chrono::Days::new(2),
            },
            None,
        )
        .await
        .unwrap();
    let offer = &search.offers[0];
    let (booking, _) = server
        .runtime
        .book(wayfare::BookingOrder {
            account_id: account,
            seller: offer.seller.clone(),
            sku: offer.sku.clone(),
            start,
            end: start + chrono::Days::new(2),
            offer_price: offer.price,
            wallet_points: eur(0),
            card_token: "tok_approve".into(),
            idempotency_key: "gateway-booking-1".into(),
        })
        .await
        .unwrap();
    let id = booking.id.clone();
    // The saga runs in the background: wait until it leaves the in-flight states.
    let finished = common::wait_until(
        Duration::from_secs(10),
        "the booking finished",
        async || {
            let b = server.runtime.booking(id.parse().unwrap()).await.ok()?;
            let in_flight = matches!(
                b.state,
                SagaState::Pending | SagaState::PaymentAuthorized | SagaState::SellerConfirmed
            );
            (!in_flight).then_some(b)
        },
    )
    .await;
    assert_eq!(finished.state, SagaState::Confirmed, "{finished:?}");
    let ledger = fake.ledger().await;
    let auths = ledger["authorizations"].as_array().unwrap();
    let captures = ledger["captures"].as_array().unwrap();
    assert_eq!((auths.len(), captures.len()), (1, 1), "{ledger}");
    assert!(
        auths[0]["key"].as_str().unwrap().starts_with(&id),
        "keys are the saga's: {ledger}"
    );
    assert_eq!(captures[0]["amount"]["minor"], offer.price.minor);
    server.stop().await;
}

/// The gateway adapter's breaker: a failing gateway opens it, and while open, calls are
/// refused as `Unavailable` (nothing sent) without reaching the gateway; the adapter is a
/// supervised child that the snapshot shows with its breaker.
#[actix_rt::test]
async fn a_failing_gateway_opens_the_adapter_breaker() {
    use wayfare::actors::guard::PartnerStats;
    use wayfare::actors::payment::{GatewayAdapterConfig, PaymentAdapter, SupervisedGateway};
    use wayfare::domain::breaker::{BreakerConfig, BreakerState};
    use wayfare::supervisor::{ChildSpec, Restart, RestartPolicy, Strategy, SupervisorBuilder};

    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start(dir.path(), &["--error-rate", "1"]);
    let gateway: Arc<dyn PaymentGateway> = Arc::new(fake.client(2_000));
    let config = GatewayAdapterConfig {
        breaker: BreakerConfig {
            window: 4,
            minimum_calls: 4,
            open_ms: 60_000,
            ..BreakerConfig::default()
        },
        ..GatewayAdapterConfig::default()
    };
    let stats = Arc::new(PartnerStats::default());
    let mut sup = SupervisorBuilder::new("payments", Strategy::OneForOne, RestartPolicy::default());
    let spec = ChildSpec {
        name: "payment-gateway".into(),
        restart: Restart::Permanent,
        mailbox_capacity: 16,
        deadline: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(1),
    };
    let (s, for_snapshot) = (stats.clone(), stats.clone());
    let handle = sup.actor_with_status(
        spec,
        actix_rt::Arbiter::current(),
        move || PaymentAdapter::new(gateway.clone(), &config, s.clone()),
        move || for_snapshot.to_json(),
    );
    let tree = sup.start();
    let gw = SupervisedGateway::new(handle);
    for i in 0..4 {
        let reply = gw
            .authorize(&format!("b{i}"), "tok_approve", eur(100))
            .await;
        assert_eq!(
            reply,
            Err(PaymentError::Timeout),
            "a 5xx is an unknown outcome"
        );
    }
    assert_eq!(stats.breaker_state(), BreakerState::Open);
    let sent = stats.calls.load(std::sync::atomic::Ordering::Relaxed);
    let refused = gw.authorize("b-open", "tok_approve", eur(100)).await;
    assert!(
        matches!(&refused, Err(PaymentError::Unavailable(why)) if why.contains("circuit open")),
        "{refused:?}"
    );
    assert_eq!(
        stats.calls.load(std::sync::atomic::Ordering::Relaxed),
        sent,
        "an open breaker sends nothing"
    );
    let snapshot = serde_json::to_value(tree.snapshot()).unwrap();
    assert!(
        snapshot.to_string().contains("payment-gateway"),
        "the adapter is in the tree: {snapshot}"
    );
    assert_eq!(
        snapshot["children"][0]["status"]["breaker"]["state"], "open",
        "{snapshot}"
    );
    tree.shutdown().await;
}

/// Replies are untrusted: a 2xx body over the size cap (declared or not), garbage, or a
/// redirect (never followed: it points at a port where nothing listens, which would be
/// `Unavailable`) leave the outcome unknown (`Timeout`, reconciled by key), never an
/// authorization; a look-up answered so is no answer (`Unavailable`), never "never
/// received". A well-formed reply for another amount is passed on as reported, for the
/// saga's amount rule to refuse.
#[tokio::test]
async fn oversized_and_malformed_replies_are_unknown_outcomes() {
    use common::raw::{bad_server, reply};
    let against = |response: Vec<u8>| {
        HttpGateway::new(HttpGatewayConfig {
            base_url: format!("http://{}/", bad_server(response)),
            ..Default::default()
        })
        .unwrap()
    };
    let huge = vec![b' '; wayfare::payments::wire::MAX_REPLY_BYTES + 1];
    let wrong_amount =
        br#"{"authorization_id": "auth_1", "amount": {"minor": 1, "currency": "EUR"}}"#;
    for (what, response) in [
        ("oversized", reply("201 Created", &huge, true)),
        ("oversized, no length", reply("201 Created", &huge, false)),
        (
            "garbage",
            reply("201 Created", b"<html>surprise</html>", true),
        ),
        (
            "redirect",
            b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/v1/authorizations\r\n\
              content-length: 0\r\nconnection: close\r\n\r\n"
                .to_vec(),
        ),
    ] {
        let gw = against(response);
        let outcome = gw.authorize("k:authorize", "tok_approve", eur(500)).await;
        assert_eq!(outcome, Err(PaymentError::Timeout), "{what}");
        let status = gw.status("k:authorize").await;
        assert!(
            matches!(status, Err(PaymentError::Unavailable(_))),
            "{what}: {status:?}"
        );
    }
    let gw = against(reply("201 Created", wrong_amount, true));
    assert_eq!(
        gw.authorize("k:authorize", "tok_approve", eur(500)).await,
        Ok(AuthOutcome::Authorized {
            authorization_id: "auth_1".into(),
            amount: eur(1),
        })
    );
}

/// `https://` with a self-signed certificate the test made: trusted through `ca_cert`,
/// approvals, declines, captures and look-ups go through TLS; without `ca_cert` the
/// handshake fails before anything is sent (`Unavailable`, naming the certificate), never
/// a success, and the fake's ledger shows that nothing from that client arrived.
#[tokio::test]
async fn tls_with_a_self_signed_certificate_trusted_through_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let tls = common::SelfSigned::new(dir.path());
    let fake = Fake::start_tls(&dir.path().join("data"), &tls, &[]);
    assert!(fake.url.starts_with("https://127.0.0.1:"), "{}", fake.url);
    let trusting = HttpGateway::new(HttpGatewayConfig {
        base_url: fake.url.clone(),
        api_key: Some(Secret::new(API_KEY)),
        ca_cert: Some(tls.cert.clone()),
        ..Default::default()
    })
    .unwrap();
    let auth = authorization_id(
        trusting
            .authorize("t1:authorize", "tok_approve", eur(4_200))
            .await
            .unwrap(),
    );
    let capture = trusting
        .capture("t1:capture", &auth, eur(4_200))
        .await
        .unwrap();
    assert!(
        matches!(capture, CaptureOutcome::Captured { .. }),
        "{capture:?}"
    );
    let declined = trusting
        .authorize("t2:authorize", "tok_decline", eur(100))
        .await
        .unwrap();
    assert!(
        matches!(declined, AuthOutcome::Declined { .. }),
        "{declined:?}"
    );
    let status = trusting.status("t1:authorize").await.unwrap();
    assert!(
        matches!(status, Some(PaymentOpStatus::Authorized { .. })),
        "{status:?}"
    );

    // The public roots do not vouch for the certificate: a transport failure before the
    // request left, for every call.
    let untrusting = fake.client(2_000);
    let refused = untrusting
        .authorize("t3:authorize", "tok_approve", eur(100))
        .await;
    match &refused {
        Err(PaymentError::Unavailable(why)) => {
            assert!(why.contains("certificate"), "{why}")
        }
        other => panic!("an untrusted certificate must fail the call: {other:?}"),
    }
    let looked_up = untrusting.status("t1:authorize").await;
    assert!(
        matches!(looked_up, Err(PaymentError::Unavailable(_))),
        "{looked_up:?}"
    );

    let ledger = fake.ledger().await;
    let keys = |list: &str| -> Vec<String> {
        ledger[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys("authorizations"), ["t1:authorize"], "{ledger}");
    assert_eq!(keys("captures"), ["t1:capture"], "{ledger}");
    assert_eq!(keys("declines"), ["t2:authorize"], "{ledger}");
}

/// `[payments.http] ca_cert` is read when the configuration loads: a missing file, a file
/// without a PEM certificate and a certificate for a plain `http://` URL are refused, the
/// key and the path named; a good one is accepted, from the file or the environment.
#[test]
fn a_gateway_ca_cert_is_checked_when_the_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    let tls = common::SelfSigned::new(dir.path());
    let file = |base_url: &str, ca_cert: &Path| {
        format!(
            "[payments]\nkind = \"http\"\n[payments.http]\nbase_url = \"{base_url}\"\n\
             ca_cert = {:?}\n",
            ca_cert.display().to_string()
        )
    };
    let https = "https://gateway.example:8443/";
    let config = wayfare::Config::parse(&file(https, &tls.cert), Vec::new()).unwrap();
    assert_eq!(
        config.payments.http.ca_cert.as_deref(),
        Some(tls.cert.as_path())
    );

    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (base_url, path, why) in [
        (https, &missing, "cannot read"),
        (https, &tls.key, "no PEM certificate"),
        (https, &not_pem, "no PEM certificate"),
        ("http://127.0.0.1:9100/", &tls.cert, "https://"),
    ] {
        let e = wayfare::Config::parse(&file(base_url, path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("payments.http.ca_cert"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains(why), "{e}");
    }

    let env = |path: &Path| {
        vec![(
            "WAYFARE__PAYMENTS__HTTP__CA_CERT".to_string(),
            path.display().to_string(),
        )]
    };
    let base = format!("[payments.http]\nbase_url = \"{https}\"\n");
    let config = wayfare::Config::parse(&base, env(&tls.cert)).unwrap();
    assert_eq!(
        config.payments.http.ca_cert.as_deref(),
        Some(tls.cert.as_path())
    );
    let e = wayfare::Config::parse(&base, env(&missing))
        .unwrap_err()
        .to_string();
    assert!(e.contains("payments.http.ca_cert"), "{e}");
    assert!(e.contains("WAYFARE__PAYMENTS__HTTP__CA_CERT"), "{e}");
}
