//! `examples/partners.toml` as shipped works: the two fake sellers and the fake gateway
//! started with only `--bind` and `--data-dir` (their own processes, ephemeral ports
//! rewritten into the file), and the real `wayfare` binary with that file, search, book
//! and cancel; the partners' own ledgers show the reservation, the authorization and its
//! capture, and the cancellation, each under the booking's keys.

mod common;
mod fakes;

use std::time::Duration;

use chrono::{Days, Utc};
use serde_json::{json, Value};
use wayfare::domain::account::AccountId;
use wayfare_drill::fakes::ledgers;

use common::wait_until;

const OPERATOR_TOKEN: &str = "partners-test-operator-token-0123";
const WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_toml_searches_books_and_cancels_through_the_fakes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let alpha = fakes::fake_seller(&d.join("alpha"), &d.join("alpha.log"), &[]);
    let bravo = fakes::fake_seller(&d.join("bravo"), &d.join("bravo.log"), &[]);
    let gateway = fakes::fake_gateway(&d.join("gateway"), &d.join("gateway.log"), &[]);

    // The shipped file, with only the partners' ports rewritten.
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/partners.toml"
    ))
    .unwrap();
    let mut config = shipped.clone();
    for (port, fake) in [("9001", &alpha), ("9002", &bravo), ("9100", &gateway)] {
        let shipped_url = format!("http://127.0.0.1:{port}/");
        assert!(
            config.contains(&shipped_url),
            "partners.toml has no {shipped_url}"
        );
        config = config.replace(&shipped_url, &fake.url());
    }
    std::fs::write(d.join("partners.toml"), &config).unwrap();
    let command = fakes::wayfare_command(
        d,
        &d.join("partners.toml"),
        &d.join("wayfare.log"),
        OPERATOR_TOKEN,
    );
    let server = fakes::spawn_listening(command, "wayfare listening on ")
        .unwrap_or_else(|| panic!("wayfare exited at start: {}", log(d, "wayfare.log")));
    let base = server.addr.clone();
    assert!(
        d.join("data-partners").is_dir(),
        "wayfare keeps its data in ./data-partners"
    );
    let http = fakes::operator_client(OPERATOR_TOKEN, Duration::from_secs(10));

    // Search: offers of both HTTP sellers.
    let day = |n| {
        Utc::now()
            .date_naive()
            .checked_add_days(Days::new(n))
            .unwrap()
    };
    let url = format!(
        "{base}/v1/search/hotels?city=Lisbon&check_in={}&check_out={}",
        day(30),
        day(32)
    );
    let offers: Vec<Value> = wait_until(WITHIN, "Lisbon offers of alpha and bravo", async || {
        let body: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        let offers = body["offers"].as_array()?.clone();
        let sellers: Vec<&str> = offers.iter().filter_map(|o| o["seller"].as_str()).collect();
        (sellers.contains(&"alpha") && sellers.contains(&"bravo")).then_some(offers)
    })
    .await;
    let offer = offers
        .iter()
        .find(|o| o["seller"] == "bravo")
        .expect("a bravo offer");
    let price = offer["price"]["minor"].as_i64().unwrap();

    // Book with a card and some wallet points of a demo account.
    let account = AccountId::demo(0).to_string();
    let points = 500.min(price - 1);
    let reply = http
        .post(format!("{base}/v1/bookings"))
        .header("Idempotency-Key", "partners-test-1")
        .json(&json!({
            "account_id": account,
            "seller": "bravo",
            "sku": offer["sku"],
            "start": day(30),
            "end": day(32),
            "offer_price": {"minor": price, "currency": "EUR"},
            "wallet_points": {"minor": points, "currency": "EUR"},
            "card_token": "tok_approve",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.status().as_u16(),
        202,
        "{}",
        reply.text().await.unwrap()
    );
    let booking: Value = reply.json().await.unwrap();
    let id = booking["id"].as_str().unwrap().to_owned();
    wait_for_state(&http, &base, &id, "confirmed").await;

    // The partners' own books.
    let seller = ledgers::fetch_seller(&http, &bravo.url()).await.unwrap();
    let reservation = seller
        .reservations
        .iter()
        .find(|r| r.key == id)
        .unwrap_or_else(|| panic!("bravo holds no reservation of {id}: {seller:?}"));
    assert_eq!(reservation.price.minor, price);
    assert_eq!(reservation.sku, offer["sku"].as_str().unwrap());
    assert!(reservation.fee.is_none(), "live, not cancelled");
    let other = ledgers::fetch_seller(&http, &alpha.url()).await.unwrap();
    assert!(other.reservations.is_empty(), "{other:?}");
    let gw = ledgers::fetch_gateway(&http, &gateway.url()).await.unwrap();
    let paid = gw.seen().unwrap();
    let auth = paid
        .ledger
        .authorizations
        .iter()
        .find(|a| a.key == format!("{id}:authorize"))
        .unwrap_or_else(|| panic!("no authorization of {id}: {gw:?}"));
    assert_eq!(auth.amount.minor, price - points);
    let captures: Vec<_> = paid
        .ledger
        .captures
        .iter()
        .filter(|c| c.authorization_id == auth.authorization_id)
        .collect();
    assert_eq!(captures.len(), 1, "captured once: {gw:?}");
    assert_eq!(captures[0].key, format!("{id}:capture"));
    assert!(paid.open_authorizations.is_empty());

    // Cancel: the seller journals the cancellation with its fee.
    let status = http
        .post(format!("{base}/v1/bookings/{id}/cancel"))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "cancel answered {status}");
    wait_for_state(&http, &base, &id, "cancelled").await;
    let seller = ledgers::fetch_seller(&http, &bravo.url()).await.unwrap();
    let cancellation = seller
        .cancellations
        .iter()
        .find(|c| c.key == id)
        .unwrap_or_else(|| panic!("bravo has no cancellation of {id}: {seller:?}"));
    assert_eq!(cancellation.price.minor, price);
    assert_eq!(cancellation.fee.minor, price / 10);
    assert_eq!(
        cancellation.fee.minor + cancellation.refund.minor,
        price,
        "fee and refund make the price"
    );
    drop(server);
}

/// Waits until booking `id` is in `state` (its cancellation settled too, for `cancelled`).
async fn wait_for_state(http: &reqwest::Client, base: &str, id: &str, state: &str) {
    wait_until(
        WITHIN,
        format_args!("booking {id} is {state}"),
        async || {
            let body: Value = http
                .get(format!("{base}/v1/bookings/{id}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            assert_ne!(
                body["state"], "needs_attention",
                "booking {id} parked: {body}"
            );
            (body["state"] == state).then_some(())
        },
    )
    .await
}

fn log(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// The fake seller on its own: `--api-key` refuses callers without it, and a reservation
/// and its cancellation survive the fake's own kill -9 and restart on its data dir (same
/// answer for the same key, nothing reserved twice).
#[tokio::test]
async fn the_fake_seller_checks_its_key_and_keeps_its_book_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let flags = ["--api-key", "seller-key-0123", "--coverage", "1.0"];
    let fake = fakes::fake_seller(&d.join("s"), &d.join("s.log"), &flags);
    let http = reqwest::Client::new();
    let day = |n| {
        Utc::now()
            .date_naive()
            .checked_add_days(Days::new(n))
            .unwrap()
    };
    let query = json!({"city_or_hotel": "Lisbon", "check_in": day(30), "check_out": day(32)});
    let refused = http
        .post(format!("{}search/hotels", fake.url()))
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let keyed = fakes::operator_client("seller-key-0123", Duration::from_secs(10));
    let search: Value = keyed
        .post(format!("{}search/hotels", fake.url()))
        .json(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let offer = &search["offers"][0];
    let mut request = json!({
        "idempotency_key": "restart-1",
        "sku": offer["sku"],
        "query": query,
        "expected_price": offer["price"],
    });
    request["query"]["vertical"] = json!("hotel");
    let book = async |url: String| -> Value {
        keyed
            .post(format!("{url}bookings"))
            .json(&request)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let first = book(fake.url()).await;
    assert_eq!(first["status"], "confirmed", "{first}");
    let cancelled: Value = keyed
        .post(format!("{}bookings/restart-1/cancel", fake.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    fake.kill();
    let fake = fakes::fake_seller(&d.join("s"), &d.join("s2.log"), &flags);
    assert_eq!(
        book(fake.url()).await,
        first,
        "the same key, the first answer"
    );
    let status: Value = keyed
        .get(format!("{}bookings/restart-1", fake.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "cancelled", "{status}");
    let ledger = ledgers::fetch_seller(&http, &fake.url()).await.unwrap();
    assert_eq!(ledger.reservations.len(), 1, "{ledger:?}");
    assert_eq!(ledger.cancellations.len(), 1, "{ledger:?}");
    assert_eq!(ledger.reservations[0].key, "restart-1");
}
