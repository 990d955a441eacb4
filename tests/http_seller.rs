//! `HttpSeller` end to end: against the fake seller server on `127.0.0.1:0` (search, book,
//! idempotency, cancel, status, faults), and against tiny hand-rolled servers that reply
//! with garbage, so every untrusted-reply check is exercised over a real socket; and over
//! `https://` with a self-signed certificate the test makes, trusted through `ca_cert`.

mod common;

use std::net::{SocketAddr, TcpListener};

use chrono::NaiveDate;
use wayfare::sellers::http::{HttpSeller, HttpSellerConfig};
use wayfare::sellers::simulated::{FaultRates, SimulatedSeller, SimulatedSellerConfig};
use wayfare::sellers::{
    BookOutcome, BookRequest, CancelOutcome, FlightQuery, HotelQuery, OfferDetails,
    ReservationStatus, SearchQuery, SellerApi, SellerError,
};
use wayfare_drill::fakes;

use common::raw::{bad_server, reply};

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn lisbon() -> HotelQuery {
    HotelQuery {
        city_or_hotel: "Lisbon".into(),
        check_in: date("2026-05-04"),
        check_out: date("2026-05-07"),
    }
}

fn client(addr: SocketAddr, request_timeout_ms: u64) -> HttpSeller {
    HttpSeller::new(HttpSellerConfig {
        name: "remote".into(),
        base_url: format!("http://{addr}/"),
        request_timeout_ms,
        ..Default::default()
    })
    .unwrap()
}

/// Starts the fake seller in this test's runtime; the server stops when the test ends.
fn start_fake(seller: &SimulatedSeller) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = fakes::seller::build(listener, seller.clone()).unwrap();
    actix_rt::spawn(server);
    addr
}

fn simulated() -> SimulatedSeller {
    SimulatedSeller::new(SimulatedSellerConfig {
        name: "sim".into(),
        latency_ms: (0, 0),
        coverage: 1.0,
        ..Default::default()
    })
    .unwrap()
}

#[actix_web::test]
async fn search_matches_the_simulated_catalog() {
    let sim = simulated();
    let http = client(start_fake(&sim), 10_000);
    let offers = http.search_hotels(lisbon()).await.unwrap();
    let expected = sim.hotel_offers(&lisbon());
    assert!(!offers.is_empty());
    assert_eq!(offers.len(), expected.len());
    for (got, want) in offers.iter().zip(&expected) {
        assert_eq!(
            got.seller, "remote",
            "offers are attributed to the configured seller name"
        );
        assert_eq!(
            (&got.sku, got.price, &got.details),
            (&want.sku, want.price, &want.details)
        );
    }

    let round_trip = FlightQuery {
        from: "LIS".into(),
        to: "CDG".into(),
        date: date("2026-05-04"),
        return_date: Some(date("2026-05-09")),
    };
    let flights = http.search_flights(round_trip.clone()).await.unwrap();
    assert_eq!(flights.len(), sim.flight_offers(&round_trip).len());
    assert!(flights
        .iter()
        .all(|o| matches!(&o.details, OfferDetails::Flight(f) if f.legs.len() == 2)));
}

#[actix_web::test]
async fn booking_is_idempotent_and_cancel_and_status_follow() {
    let sim = simulated();
    let http = client(start_fake(&sim), 10_000);
    let offer = http.search_hotels(lisbon()).await.unwrap().remove(0);
    let req = BookRequest {
        idempotency_key: "saga/42 x".into(), // needs percent-encoding in paths
        sku: offer.sku.clone(),
        query: SearchQuery::Hotel(lisbon()),
        expected_price: offer.price,
    };
    assert_eq!(
        http.booking_status(req.idempotency_key.clone())
            .await
            .unwrap(),
        None
    );

    let first = http.book(req.clone()).await.unwrap();
    let BookOutcome::Confirmed {
        reservation_id,
        price,
    } = first.clone()
    else {
        panic!("not confirmed: {first:?}")
    };
    assert_eq!(price, offer.price);
    assert_eq!(
        http.book(req.clone()).await.unwrap(),
        first,
        "same key, same answer"
    );
    assert_eq!(sim.reservations_made(), 1, "booked once");
    assert_eq!(
        http.booking_status(req.idempotency_key.clone())
            .await
            .unwrap(),
        Some(ReservationStatus::Booked {
            reservation_id: reservation_id.clone(),
            price
        })
    );

    let cancelled = http.cancel(req.idempotency_key.clone()).await.unwrap();
    let CancelOutcome::Cancelled { fee, refund, .. } = cancelled.clone() else {
        panic!("not cancelled: {cancelled:?}")
    };
    assert_eq!(fee.minor + refund.minor, price.minor);
    assert_eq!(
        http.cancel(req.idempotency_key.clone()).await.unwrap(),
        cancelled,
        "cancel is idempotent"
    );
    assert_eq!(
        http.booking_status(req.idempotency_key.clone())
            .await
            .unwrap(),
        Some(ReservationStatus::Cancelled {
            reservation_id,
            fee
        })
    );
    assert_eq!(
        http.cancel("never-booked".into()).await.unwrap(),
        CancelOutcome::NotBooked
    );
}

#[actix_web::test]
async fn declines_and_price_changes_are_values() {
    let sim = simulated();
    let http = client(start_fake(&sim), 10_000);
    let offer = http.search_hotels(lisbon()).await.unwrap().remove(0);
    let stale = BookRequest {
        idempotency_key: "stale".into(),
        sku: offer.sku.clone(),
        query: SearchQuery::Hotel(lisbon()),
        expected_price: wayfare::domain::money::Money::new(
            offer.price.minor + 100,
            offer.price.currency,
        ),
    };
    assert_eq!(
        http.book(stale).await.unwrap(),
        BookOutcome::PriceChanged {
            current: offer.price
        }
    );
    sim.set_faults(FaultRates {
        reject_rate: 1.0,
        ..FaultRates::NONE
    })
    .unwrap();
    let declined = BookRequest {
        idempotency_key: "declined".into(),
        sku: offer.sku,
        query: SearchQuery::Hotel(lisbon()),
        expected_price: offer.price,
    };
    assert!(matches!(
        http.book(declined).await.unwrap(),
        BookOutcome::Rejected { .. }
    ));
    assert_eq!(
        http.booking_status("declined".into()).await.unwrap(),
        Some(ReservationStatus::Declined)
    );
    assert_eq!(sim.reservations_made(), 0);
}

#[actix_web::test]
async fn seller_faults_become_errors_and_recovery_is_seen() {
    let sim = simulated();
    let addr = start_fake(&sim);
    let http = client(addr, 500);
    sim.set_faults(FaultRates {
        error_rate: 1.0,
        ..FaultRates::NONE
    })
    .unwrap();
    assert!(matches!(
        http.search_hotels(lisbon()).await,
        Err(SellerError::Unavailable(_))
    ));
    sim.set_faults(FaultRates {
        hang_rate: 1.0,
        ..FaultRates::NONE
    })
    .unwrap();
    // The backstop timeout fires; only the kind of error is asserted, not how long it took.
    assert_eq!(
        http.search_hotels(lisbon()).await.unwrap_err(),
        SellerError::Timeout
    );
    sim.set_faults(FaultRates::NONE).unwrap();
    assert!(!http.search_hotels(lisbon()).await.unwrap().is_empty());
}

#[actix_web::test]
async fn invalid_requests_are_refused_by_the_fake_seller() {
    let sim = simulated();
    let http = client(start_fake(&sim), 10_000);
    let backwards = HotelQuery {
        check_out: date("2026-05-01"),
        ..lisbon()
    };
    // The fake seller answers 400, which the client reports as an unexpected status.
    assert!(
        matches!(http.search_hotels(backwards).await, Err(SellerError::InvalidReply(p)) if p.contains("400"))
    );
}

// ---------------------------------------------------------------------------------------
// Hand-rolled bad servers (`common::raw`).

fn offer_json(minor: i64) -> String {
    format!(
        r#"{{"offers":[{{"sku":"hotel:lisbon:h1:double","title":"t","price":{{"minor":{minor},"currency":"EUR"}},
        "details":{{"vertical":"hotel","city":"Lisbon","hotel":"H","room":"double","check_in":"2026-05-04","check_out":"2026-05-07","nights":3}}}}]}}"#
    )
}

async fn search_against(response: Vec<u8>) -> Result<usize, SellerError> {
    let http = client(bad_server(response), 10_000);
    http.search_hotels(lisbon())
        .await
        .map(|offers| offers.len())
}

fn invalid_reply(result: Result<usize, SellerError>) -> String {
    match result {
        Err(SellerError::InvalidReply(problem)) => problem,
        other => panic!("expected InvalidReply, got {other:?}"),
    }
}

#[tokio::test]
async fn the_hand_rolled_server_works_with_a_good_reply() {
    assert_eq!(
        search_against(reply("200 OK", offer_json(100).as_bytes(), true))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn garbage_is_an_invalid_reply() {
    let problem =
        invalid_reply(search_against(reply("200 OK", b"<html>surprise</html>", true)).await);
    assert!(problem.starts_with("malformed JSON"), "{problem}");
}

#[tokio::test]
async fn negative_price_is_an_invalid_reply() {
    let problem =
        invalid_reply(search_against(reply("200 OK", offer_json(-1_000).as_bytes(), true)).await);
    assert!(
        problem.contains("offers[0].price.minor: negative"),
        "{problem}"
    );
}

#[tokio::test]
async fn huge_body_is_refused_with_or_without_content_length() {
    let huge = vec![b' '; 3 << 20];
    let problem = invalid_reply(search_against(reply("200 OK", &huge, true)).await);
    assert!(problem.contains("exceeds"), "{problem}");
    let problem = invalid_reply(search_against(reply("200 OK", &huge, false)).await);
    assert!(problem.contains("exceeds"), "{problem}");
}

#[tokio::test]
async fn unexpected_statuses_map_to_errors() {
    let problem = invalid_reply(search_against(reply("404 Not Found", b"{}", true)).await);
    assert!(problem.contains("404"), "{problem}");
    let http = client(bad_server(reply("404 Not Found", b"", true)), 10_000);
    assert!(
        matches!(
            http.booking_status("k".into()).await,
            Err(SellerError::InvalidReply(_))
        ),
        "a bare 404 must not read as 'never booked'"
    );
    assert!(matches!(
        search_against(reply("503 Service Unavailable", b"", true)).await,
        Err(SellerError::Unavailable(_))
    ));
    assert_eq!(
        search_against(reply("504 Gateway Timeout", b"", true)).await,
        Err(SellerError::Timeout)
    );
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }; // dropped: nothing listens there now
    let http = client(addr, 10_000);
    assert!(matches!(
        http.search_hotels(lisbon()).await,
        Err(SellerError::Transport(_))
    ));
}

/// `https://` with a self-signed certificate made here: trusted through `ca_cert`, search,
/// book and status go through TLS; without `ca_cert` every call fails as a transport error
/// naming the certificate, and nothing was booked.
#[actix_web::test]
async fn tls_with_a_self_signed_certificate_trusted_through_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let tls = common::SelfSigned::new(dir.path());
    let sim = simulated();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = fakes::tls::server_config(&tls.cert, &tls.key).unwrap();
    actix_rt::spawn(fakes::seller::build_tls(listener, sim.clone(), config).unwrap());
    let over_tls = |ca_cert: Option<&std::path::Path>| {
        HttpSeller::new(HttpSellerConfig {
            name: "remote".into(),
            base_url: format!("https://{addr}/"),
            ca_cert: ca_cert.map(ToOwned::to_owned),
            ..Default::default()
        })
        .unwrap()
    };

    let trusting = over_tls(Some(&tls.cert));
    let offers = trusting.search_hotels(lisbon()).await.unwrap();
    assert_eq!(offers.len(), sim.hotel_offers(&lisbon()).len());
    let req = BookRequest {
        idempotency_key: "tls-1".into(),
        sku: offers[0].sku.clone(),
        query: SearchQuery::Hotel(lisbon()),
        expected_price: offers[0].price,
    };
    let booked = trusting.book(req).await.unwrap();
    assert!(
        matches!(booked, BookOutcome::Confirmed { .. }),
        "{booked:?}"
    );
    assert!(matches!(
        trusting.booking_status("tls-1".into()).await.unwrap(),
        Some(ReservationStatus::Booked { .. })
    ));

    let untrusting = over_tls(None);
    let untrusted = |result: Result<(), SellerError>| match result {
        Err(SellerError::Transport(why)) => assert!(why.contains("certificate"), "{why}"),
        other => panic!("an untrusted certificate must fail the call: {other:?}"),
    };
    untrusted(untrusting.search_hotels(lisbon()).await.map(drop));
    let req = BookRequest {
        idempotency_key: "tls-2".into(),
        sku: offers[0].sku.clone(),
        query: SearchQuery::Hotel(lisbon()),
        expected_price: offers[0].price,
    };
    untrusted(untrusting.book(req).await.map(drop));
    assert_eq!(sim.reservations_made(), 1, "only the trusted client booked");
}

/// A seller's `ca_cert` is read when the configuration loads: missing or not a PEM
/// certificate is refused naming the seller's key and the path.
#[test]
fn a_seller_ca_cert_is_checked_when_the_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    let tls = common::SelfSigned::new(dir.path());
    let file = |ca_cert: &std::path::Path| {
        format!(
            "[[sellers]]\nname = \"s\"\nkind = \"http\"\n[sellers.http]\n\
             base_url = \"https://seller.example/\"\nca_cert = {:?}\n",
            ca_cert.display().to_string()
        )
    };
    let config = wayfare::Config::parse(&file(&tls.cert), Vec::new()).unwrap();
    assert_eq!(
        config.sellers[0].http.ca_cert.as_deref(),
        Some(tls.cert.as_path())
    );
    for (path, why) in [
        (dir.path().join("missing.pem"), "cannot read"),
        (tls.key.clone(), "no PEM certificate"),
    ] {
        let e = wayfare::Config::parse(&file(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("sellers[0].http.ca_cert"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains(why), "{e}");
    }
}
