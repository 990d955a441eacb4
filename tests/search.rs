//! Search behaviour against real actors: fan-out and merge, deadlines with a hanging
//! seller, the circuit breaker's whole cycle, the bulkhead, search-only retries,
//! look-to-book throttling, the cache, the wallet markdown, coalescing, and untrusted
//! seller replies (the http adapter against a real fake seller and a garbage server).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use common::fake::FixedSeller;
use common::{wait_until, FetchJson, TestServer};
use serde_json::Value;
use wayfare::actors::search::SellerStatus;
use wayfare::actors::seller::AdapterConfig;
use wayfare::config::{SellerEntry, SellerKind};
use wayfare::domain::account::NewAccount;
use wayfare::domain::money::{Currency, Money};
use wayfare::sellers::simulated::SimulatedSellerConfig;
use wayfare::sellers::{HotelQuery, Vertical};

fn in_days(n: u64) -> NaiveDate {
    Utc::now()
        .date_naive()
        .checked_add_days(Days::new(n))
        .unwrap()
}

fn stay(place: &str, from_day: u64) -> HotelQuery {
    HotelQuery {
        city_or_hotel: place.into(),
        check_in: in_days(from_day),
        check_out: in_days(from_day + 2),
    }
}

fn simulated(name: &str, seed: u64, latency: (u64, u64)) -> SellerEntry {
    SellerEntry {
        name: name.into(),
        kind: SellerKind::Simulated,
        verticals: vec![Vertical::Hotel, Vertical::Flight],
        simulated: SimulatedSellerConfig {
            seed,
            latency_ms: latency,
            ..SimulatedSellerConfig::default()
        },
        http: Default::default(),
        adapter: AdapterConfig::default(),
    }
}

/// Adapter settings that make breaker behaviour quick to observe.
fn twitchy() -> AdapterConfig {
    let mut a = AdapterConfig {
        search_retries: 0,
        ..AdapterConfig::default()
    };
    a.breaker.window = 4;
    a.breaker.minimum_calls = 4;
    a.breaker.failure_rate_percent = 50;
    a.breaker.open_ms = 300;
    a
}

fn status_of(resp: &wayfare::SearchResponse, seller: &str) -> SellerStatus {
    resp.sellers
        .iter()
        .find(|s| s.seller == seller)
        .unwrap()
        .status
}

#[actix_rt::test]
async fn offers_from_every_seller_are_merged_one_per_sku_cheapest_first() {
    let s = TestServer::start_with(|c| {
        c.sellers = vec![
            simulated("alpha", 1, (1, 5)),
            simulated("bravo", 2, (1, 5)),
            simulated("charlie", 3, (1, 5)),
        ];
    })
    .await;
    let q = stay("Lisbon", 40);
    let resp = s.runtime.search_hotels(q.clone(), None).await.unwrap();
    assert_eq!(resp.sellers.len(), 3);
    assert!(resp.sellers.iter().all(|x| x.status == SellerStatus::Ok));
    let total: usize = resp.sellers.iter().map(|x| x.offers).sum();
    assert!(!resp.offers.is_empty());
    assert!(total > resp.offers.len(), "overlapping SKUs were deduped");
    let mut skus: Vec<_> = resp.offers.iter().map(|o| o.sku.clone()).collect();
    skus.sort();
    skus.dedup();
    assert_eq!(skus.len(), resp.offers.len(), "one offer per SKU");
    assert!(resp
        .offers
        .windows(2)
        .all(|w| w[0].price.minor <= w[1].price.minor));
    // The cheapest seller wins each SKU: compare with each seller's own quote.
    let resp2 = s.runtime.search_hotels(q, None).await.unwrap();
    assert!(resp2.cached);
    assert_eq!(
        resp2.offers, resp.offers,
        "cached result is the same merged list"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn a_hanging_seller_times_out_and_the_search_still_answers_by_its_deadline() {
    let (hang, knobs) = FixedSeller::new("hanging", 10_000);
    knobs.delay_ms.store(u64::MAX, Ordering::SeqCst);
    let (ok, _) = FixedSeller::new("quick", 20_000);
    let s = TestServer::start_custom(
        |c| c.search.deadline_ms = 300,
        vec![
            hang.into_custom(AdapterConfig::default()),
            ok.into_custom(AdapterConfig::default()),
        ],
    )
    .await;
    let started = Instant::now();
    let resp = s
        .runtime
        .search_hotels(stay("Testville", 10), None)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(status_of(&resp, "hanging"), SellerStatus::Timeout);
    assert_eq!(status_of(&resp, "quick"), SellerStatus::Ok);
    assert_eq!(resp.offers.len(), 1);
    assert_eq!(resp.offers[0].seller, "quick");
    assert!(!resp.cached);
    // Generous bound: proves the search did not wait for the hang. Latency figures are
    // measured by the benchmarks, not asserted here.
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // Incomplete results are not cached.
    let again = s
        .runtime
        .search_hotels(stay("Testville", 10), None)
        .await
        .unwrap();
    assert!(!again.cached);
    s.stop().await;
}

#[actix_rt::test]
async fn breaker_opens_skips_the_seller_probes_half_open_and_closes_on_success() {
    let (flaky, knobs) = FixedSeller::new("flaky", 10_000);
    knobs.failing.store(true, Ordering::SeqCst);
    let s = TestServer::start_custom(|_| {}, vec![flaky.into_custom(twitchy())]).await;
    for day in 0..4 {
        let r = s
            .runtime
            .search_hotels(stay("x", 10 + day), None)
            .await
            .unwrap();
        assert_eq!(status_of(&r, "flaky"), SellerStatus::Error);
    }
    assert_eq!(knobs.searches.load(Ordering::SeqCst), 4);
    // Open: skipped without a call.
    let r = s.runtime.search_hotels(stay("x", 20), None).await.unwrap();
    assert_eq!(status_of(&r, "flaky"), SellerStatus::CircuitOpen);
    assert_eq!(
        knobs.searches.load(Ordering::SeqCst),
        4,
        "not called while open"
    );
    let metrics = s.http.get(s.url("/metrics")).fetch_text().await;
    assert!(metrics.contains("wayfare_seller_breaker_state{seller=\"flaky\"} 2"));
    // After the open window one probe goes through; it succeeds and closes the breaker.
    // Until then every search is still skipped without a call, and counted as skipped.
    knobs.failing.store(false, Ordering::SeqCst);
    let mut skipped = 1;
    let probed = wait_until(
        Duration::from_secs(3),
        "the breaker lets a probe through after its open window",
        async || {
            let r = s.runtime.search_hotels(stay("x", 21), None).await.unwrap();
            match status_of(&r, "flaky") {
                SellerStatus::CircuitOpen => {
                    assert_eq!(
                        knobs.searches.load(Ordering::SeqCst),
                        4,
                        "called while open"
                    );
                    skipped += 1;
                    None
                }
                status => Some(status),
            }
        },
    )
    .await;
    assert_eq!(probed, SellerStatus::Ok);
    assert_eq!(knobs.searches.load(Ordering::SeqCst), 5);
    let r = s.runtime.search_hotels(stay("x", 22), None).await.unwrap();
    assert_eq!(status_of(&r, "flaky"), SellerStatus::Ok);
    let tree: Value = s
        .http
        .get(s.url("/v1/system/supervisors"))
        .fetch_json()
        .await;
    let sellers = tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sellers")
        .unwrap();
    let status = &sellers["supervisor"]["children"][0]["status"];
    assert_eq!(status["breaker"]["state"], "closed", "{status}");
    assert_eq!(status["short_circuited"], skipped, "{status}");
    s.stop().await;
}

#[actix_rt::test]
async fn the_bulkhead_refuses_calls_beyond_its_limit() {
    let (slow, knobs) = FixedSeller::new("narrow", 10_000);
    knobs.delay_ms.store(400, Ordering::SeqCst);
    let adapter = AdapterConfig {
        max_concurrent_calls: 1,
        ..AdapterConfig::default()
    };
    let s = TestServer::start_custom(|_| {}, vec![slow.into_custom(adapter)]).await;
    let (a, b) = tokio::join!(
        s.runtime.search_hotels(stay("x", 10), None),
        s.runtime.search_hotels(stay("x", 11), None)
    );
    let mut statuses = vec![
        status_of(&a.unwrap(), "narrow"),
        status_of(&b.unwrap(), "narrow"),
    ];
    statuses.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(statuses, vec![SellerStatus::Ok, SellerStatus::Rejected]);
    assert_eq!(knobs.searches.load(Ordering::SeqCst), 1);
    s.stop().await;
}

#[actix_rt::test]
async fn searches_are_retried_and_bookings_are_not() {
    use wayfare::actors::guard::PartnerStats;
    use wayfare::actors::seller::{BookWithSeller, SearchSeller, SellerAdapter};
    use wayfare::sellers::{BookRequest, SearchQuery};
    use wayfare::supervisor::{ChildSpec, Restart, Strategy, SupervisorBuilder};

    let (seller, knobs) = FixedSeller::new("retrying", 10_000);
    knobs.failing.store(true, Ordering::SeqCst);
    let adapter = AdapterConfig {
        search_retries: 2,
        retry_backoff_ms: 1,
        ..AdapterConfig::default()
    };
    let api: Arc<dyn wayfare::sellers::SellerApi> = Arc::new(seller);
    let mut sup = SupervisorBuilder::new("t", Strategy::OneForOne, Default::default());
    let spec = ChildSpec {
        name: "seller".into(),
        restart: Restart::Permanent,
        mailbox_capacity: 8,
        deadline: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(1),
    };
    let handle = sup.actor(spec, actix_rt::Arbiter::current(), move || {
        SellerAdapter::new(
            api.clone(),
            adapter.clone(),
            Arc::new(PartnerStats::default()),
        )
    });
    let root = sup.start();
    let query = SearchQuery::Hotel(stay("x", 10));
    let r = handle
        .ask(SearchSeller {
            query: query.clone(),
            budget: Duration::from_secs(5),
            origin: Default::default(),
        })
        .await
        .unwrap();
    assert!(r.is_err());
    assert_eq!(
        knobs.searches.load(Ordering::SeqCst),
        3,
        "1 try + 2 retries"
    );
    let r = handle
        .ask(BookWithSeller {
            request: BookRequest {
                idempotency_key: "saga-1".into(),
                sku: "hotel:test:h1:double".into(),
                query,
                expected_price: Money::new(10_000, Currency::EUR),
            },
            origin: Default::default(),
            calls: Default::default(),
        })
        .await
        .unwrap();
    assert!(r.is_err());
    assert_eq!(
        knobs.books.load(Ordering::SeqCst),
        1,
        "bookings are never retried here"
    );
    root.shutdown().await;
}

#[actix_rt::test]
async fn look_to_book_throttles_searches_past_the_ratio() {
    let (seller, knobs) = FixedSeller::new("metered", 10_000);
    let mut adapter = AdapterConfig::default();
    adapter.look_to_book.min_searches = 3;
    adapter.look_to_book.max_searches_per_booking = 3;
    let s = TestServer::start_custom(
        |c| c.search.cache.capacity = 0,
        vec![seller.into_custom(adapter)],
    )
    .await;
    for day in 0..3 {
        let r = s
            .runtime
            .search_hotels(stay("x", 10 + day), None)
            .await
            .unwrap();
        assert_eq!(status_of(&r, "metered"), SellerStatus::Ok);
    }
    let r = s.runtime.search_hotels(stay("x", 20), None).await.unwrap();
    assert_eq!(status_of(&r, "metered"), SellerStatus::Throttled);
    assert_eq!(knobs.searches.load(Ordering::SeqCst), 3);
    s.stop().await;
}

/// A throttled seller is served from its last answer to the same query, marked stale with
/// its age, instead of being left out; a booking of a SKU drops that answer too.
#[actix_rt::test]
async fn a_throttled_seller_is_served_from_its_last_answer_marked_stale() {
    let (seller, knobs) = FixedSeller::new("metered", 10_000);
    let mut adapter = AdapterConfig::default();
    adapter.look_to_book.min_searches = 3;
    adapter.look_to_book.max_searches_per_booking = 3;
    // A second seller that always fails keeps every result incomplete, so no merged result
    // is cached and each search reaches the metered seller's adapter.
    let (broken, broken_knobs) = FixedSeller::new("broken", 10_000);
    broken_knobs.failing.store(true, Ordering::SeqCst);
    let s = TestServer::start_custom(
        |_| {},
        vec![
            seller.into_custom(adapter),
            broken.into_custom(AdapterConfig::default()),
        ],
    )
    .await;
    let first = s.runtime.search_hotels(stay("x", 10), None).await.unwrap();
    let line = |r: &wayfare::SearchResponse| {
        r.sellers
            .iter()
            .find(|s| s.seller == "metered")
            .unwrap()
            .clone()
    };
    assert_eq!(line(&first).status, SellerStatus::Ok);
    assert_eq!(line(&first).stale_age_ms, None);
    let fresh_offers = line(&first).offers;
    assert!(fresh_offers > 0);
    for _ in 0..2 {
        let r = s.runtime.search_hotels(stay("x", 10), None).await.unwrap();
        assert_eq!(line(&r).status, SellerStatus::Ok);
    }

    let throttled = s.runtime.search_hotels(stay("x", 10), None).await.unwrap();
    let metered = line(&throttled);
    assert_eq!(metered.status, SellerStatus::Throttled);
    assert_eq!(metered.offers, fresh_offers, "{metered:?}");
    assert!(metered.stale_age_ms.is_some(), "{metered:?}");
    assert_eq!(throttled.offers.len(), fresh_offers);
    assert_eq!(
        knobs.searches.load(Ordering::SeqCst),
        3,
        "not called when throttled"
    );

    // Another query has no last answer: the seller is skipped, as before.
    let other = s.runtime.search_hotels(stay("x", 40), None).await.unwrap();
    assert_eq!(line(&other).status, SellerStatus::Throttled);
    assert_eq!(line(&other).offers, 0);
    assert_eq!(line(&other).stale_age_ms, None);

    // Over HTTP the line says so too.
    let body: Value = s
        .http
        .get(s.url(&format!(
            "/v1/search/hotels?city=x&check_in={}&check_out={}",
            in_days(10),
            in_days(12)
        )))
        .fetch_json()
        .await;
    let line = body["sellers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["seller"] == "metered")
        .unwrap();
    assert_eq!(line["status"], "throttled", "{body}");
    assert!(line["stale_age_ms"].as_u64().is_some(), "{body}");
    s.stop().await;
}

#[actix_rt::test]
async fn cache_hits_misses_invalidation_and_the_never_cached_markdown() {
    let (seller, knobs) = FixedSeller::new("fixed", 50_000);
    let s =
        TestServer::start_custom(|_| {}, vec![seller.into_custom(AdapterConfig::default())]).await;
    let account = s
        .runtime
        .create_account(NewAccount::new("Wanda", "w@example.com").unwrap())
        .await
        .unwrap();
    s.runtime
        .credit_wallet(account.id, "gift", Money::new(10_000, Currency::EUR))
        .await
        .unwrap();
    let q = stay("Testville", 30);
    let anon = s.runtime.search_hotels(q.clone(), None).await.unwrap();
    assert!(!anon.cached);
    assert_eq!(anon.offers[0].price_to_pay.minor, 50_000);
    // 500.00 with 100.00 in the wallet shows 400.00, from the cached merged result.
    let mine = s
        .runtime
        .search_hotels(q.clone(), Some(account.id))
        .await
        .unwrap();
    assert!(mine.cached);
    let offer = &mine.offers[0];
    assert_eq!(offer.price.minor, 50_000);
    assert_eq!(offer.markdown.minor, 10_000);
    assert_eq!(offer.price_to_pay.minor, 40_000);
    assert_eq!(knobs.searches.load(Ordering::SeqCst), 1);
    // The markdown was not cached: an anonymous search still pays full price.
    let anon = s.runtime.search_hotels(q.clone(), None).await.unwrap();
    assert_eq!(anon.offers[0].price_to_pay.minor, 50_000);
    // A booking of the SKU invalidates the cached result holding it.
    assert_eq!(
        s.runtime
            .invalidate_sku("hotel:test:h1:double")
            .await
            .unwrap(),
        1
    );
    let fresh = s.runtime.search_hotels(q.clone(), None).await.unwrap();
    assert!(!fresh.cached);
    assert_eq!(knobs.searches.load(Ordering::SeqCst), 2);
    // Over HTTP, an unknown account is a 404 and the reply has the documented shape.
    let url = format!(
        "/v1/search/hotels?city=Testville&check_in={}&check_out={}",
        q.check_in, q.check_out
    );
    let res = s
        .http
        .get(s.url(&format!(
            "{url}&account_id=00000000-0000-4000-8000-00000000beef"
        )))
        .send()
        .await
        .unwrap();
    common::assert_problem(res, 404, "not-found", None).await;
    let body: Value = s
        .http
        .get(s.url(&format!("{url}&account_id={}", account.id)))
        .fetch_json()
        .await;
    assert_eq!(body["cached"], true);
    assert_eq!(body["offers"][0]["price_to_pay"]["minor"], 40_000);
    assert_eq!(body["sellers"][0]["status"], "ok");
    s.stop().await;
}

#[actix_rt::test]
async fn concurrent_identical_searches_share_one_fan_out() {
    let (seller, knobs) = FixedSeller::new("slowish", 10_000);
    knobs.delay_ms.store(200, Ordering::SeqCst);
    let s =
        TestServer::start_custom(|_| {}, vec![seller.into_custom(AdapterConfig::default())]).await;
    let q = stay("Testville", 12);
    let searches = (0..20).map(|_| s.runtime.search_hotels(q.clone(), None));
    let results = futures_util::future::join_all(searches).await;
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap().offers.len() == 1));
    assert_eq!(
        knobs.searches.load(Ordering::SeqCst),
        1,
        "one fan-out for 20 searches"
    );
    assert_eq!(s.runtime.search_stats().fan_outs.load(Ordering::SeqCst), 1);
    s.stop().await;
}

#[actix_rt::test]
async fn search_input_is_validated_over_http() {
    let s = TestServer::start().await;
    let d = |n| in_days(n).to_string();
    let cases = [
        (
            format!(
                "/v1/search/hotels?city=Lisbon&check_in=2026-13-01&check_out={}",
                d(3)
            ),
            "check_in",
        ),
        (
            format!(
                "/v1/search/hotels?city=Lisbon&check_in={}&check_out={}",
                d(5),
                d(3)
            ),
            "check_out",
        ),
        (
            format!(
                "/v1/search/hotels?city=Lisbon&check_in={}&check_out={}",
                d(1),
                d(60)
            ),
            "check_out",
        ),
        (
            "/v1/search/hotels?city=Lisbon&check_in=2001-01-01&check_out=2001-01-03".to_string(),
            "check_in",
        ),
        (
            format!("/v1/search/hotels?check_in={}&check_out={}", d(1), d(3)),
            "city",
        ),
        (
            format!("/v1/search/flights?from=LIS&to=LIS&date={}", d(3)),
            "to",
        ),
        (
            format!("/v1/search/flights?from=lisbon&to=CDG&date={}", d(3)),
            "from",
        ),
        (
            format!(
                "/v1/search/flights?from=LIS&to=CDG&date={}&return_date={}",
                d(5),
                d(3)
            ),
            "return_date",
        ),
        (
            format!(
                "/v1/search/flights?from=LIS&to=CDG&date={}&account_id=nope",
                d(3)
            ),
            "account_id",
        ),
    ];
    for (path, field) in cases {
        let res = s.http.get(s.url(&path)).send().await.unwrap();
        println!("{path}");
        common::assert_problem(res, 400, "invalid-input", Some(field)).await;
    }
    let res = s
        .http
        .get(s.url(&format!(
            "/v1/search/hotels?city=Lisbon&check_in={}&check_out={}&x=1",
            d(1),
            d(3)
        )))
        .send()
        .await
        .unwrap();
    common::assert_problem(res, 400, "invalid-query", Some("x")).await;
    // A parameter given twice, or a required one missing, is named too.
    for (query, field) in [
        (
            format!(
                "city=Lisbon&city=Porto&check_in={}&check_out={}",
                d(1),
                d(3)
            ),
            "city",
        ),
        (format!("city=Lisbon&check_in={}", d(1)), "check_out"),
        (format!("from=LIS&to=CDG&to=OPO&date={}", d(3)), "to"),
        ("from=LIS&to=CDG".to_string(), "date"),
    ] {
        let route = if query.starts_with("city") {
            "hotels"
        } else {
            "flights"
        };
        let res = s
            .http
            .get(s.url(&format!("/v1/search/{route}?{query}")))
            .send()
            .await
            .unwrap();
        let body = common::assert_problem(res, 400, "invalid-query", Some(field)).await;
        assert!(body["detail"].as_str().unwrap().contains(field), "{body}");
    }
    // An unknown city is an empty result, not an error.
    let body: Value = s
        .http
        .get(s.url(&format!(
            "/v1/search/hotels?city=Atlantis&check_in={}&check_out={}",
            d(1),
            d(3)
        )))
        .fetch_json()
        .await;
    assert_eq!(body["offers"].as_array().unwrap().len(), 0);
    s.stop().await;
}

#[actix_rt::test]
async fn the_http_adapter_works_against_the_fake_seller_and_refuses_garbage() {
    use wayfare::sellers::simulated::SimulatedSeller;
    use wayfare_drill::fakes;

    // A real fake seller over loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let good = format!("http://{}/", listener.local_addr().unwrap());
    let seller = SimulatedSeller::new(SimulatedSellerConfig {
        name: "remote".into(),
        latency_ms: (1, 5),
        ..SimulatedSellerConfig::default()
    })
    .unwrap();
    let server = fakes::seller::build(listener, seller).unwrap();
    let server_handle = server.handle();
    actix_rt::spawn(server);

    // A seller that answers with negative prices.
    let bad_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bad = format!("http://{}/", bad_listener.local_addr().unwrap());
    let bad_server = actix_web::HttpServer::new(|| {
        actix_web::App::new().default_service(actix_web::web::to(|| async {
            actix_web::HttpResponse::Ok()
                .content_type("application/json")
                .body(r#"{"offers":[{"sku":"hotel:lisbon:h1:double","title":"x","price":{"minor":-100,"currency":"EUR"}}]}"#)
        }))
    })
    .workers(1)
    .listen(bad_listener)
    .unwrap()
    .run();
    let bad_handle = bad_server.handle();
    actix_rt::spawn(bad_server);

    let http_seller = |name: &str, url: &str| {
        let mut e = simulated(name, 0, (0, 0));
        e.kind = SellerKind::Http;
        e.http.base_url = url.to_owned();
        e
    };
    let s = TestServer::start_with(|c| {
        c.sellers = vec![http_seller("remote", &good), http_seller("garbage", &bad)];
    })
    .await;
    let q = stay("Lisbon", 40);
    let resp = s.runtime.search_hotels(q.clone(), None).await.unwrap();
    assert_eq!(status_of(&resp, "remote"), SellerStatus::Ok);
    assert_eq!(status_of(&resp, "garbage"), SellerStatus::Error);
    assert!(!resp.offers.is_empty());
    assert!(resp
        .offers
        .iter()
        .all(|o| o.seller == "remote" && o.price.minor > 0));
    let again = s.runtime.search_hotels(q, None).await.unwrap();
    assert!(!again.cached, "a result with a failed seller is not cached");
    s.stop().await;
    server_handle.stop(false).await;
    bad_handle.stop(false).await;
}

/// The value of an unlabelled series in `/metrics`.
async fn metric(s: &TestServer, name: &str) -> u64 {
    let text = s.http.get(s.url("/metrics")).fetch_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .round() as u64
}

/// Searches (hits, misses, fan-outs) and what reached an aggregator, as `/metrics` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    hits: u64,
    misses: u64,
    fan_outs: u64,
    asked: u64,
}

async fn counts(s: &TestServer) -> Counts {
    Counts {
        hits: metric(s, "wayfare_search_cache_hits_total").await,
        misses: metric(s, "wayfare_search_cache_misses_total").await,
        fan_outs: metric(s, "wayfare_search_fan_outs_total").await,
        asked: metric(s, "wayfare_search_aggregator_searches_total").await,
    }
}

fn hotels_url(s: &TestServer, q: &HotelQuery) -> String {
    s.url(&format!(
        "/v1/search/hotels?city={}&check_in={}&check_out={}",
        q.city_or_hotel, q.check_in, q.check_out
    ))
}

async fn search_over_http(client: &reqwest::Client, url: &str) -> Value {
    let res = client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// A fresh hit is answered from the aggregator's cache view: the aggregator is not asked
/// (its count of searches stands still), the hit is counted, and each caller's wallet
/// markdown is applied to the shared result, never kept in it.
#[actix_rt::test]
async fn a_cached_hit_is_served_without_asking_the_aggregator_and_marked_down_per_caller() {
    let (seller, knobs) = FixedSeller::new("fixed", 50_000);
    let s =
        TestServer::start_custom(|_| {}, vec![seller.into_custom(AdapterConfig::default())]).await;
    let q = stay("Testville", 30);
    let url = hotels_url(&s, &q);
    let first = search_over_http(&s.anonymous, &url).await;
    assert_eq!(first["cached"], false);
    let after_miss = counts(&s).await;
    assert_eq!(
        (
            after_miss.misses,
            after_miss.fan_outs,
            after_miss.asked,
            after_miss.hits
        ),
        (1, 1, 1, 0)
    );

    let hit = search_over_http(&s.anonymous, &url).await;
    assert_eq!(hit["cached"], true);
    assert_eq!(hit["offers"], first["offers"]);
    let after_hit = counts(&s).await;
    assert_eq!(after_hit.hits, 1, "{after_hit:?}");
    assert_eq!(
        after_hit.asked, 1,
        "the aggregator was not asked: {after_hit:?}"
    );
    assert_eq!(knobs.searches.load(Ordering::SeqCst), 1);

    // Two customers, each with their own key and wallet, hit the same entry.
    let mut customers = Vec::new();
    for (name, points) in [("Ana", 10_000), ("Bea", 30_000)] {
        let (id, client) = s.create_customer(name).await;
        s.runtime
            .credit_wallet(
                id.parse().unwrap(),
                "gift",
                Money::new(points, Currency::EUR),
            )
            .await
            .unwrap();
        customers.push((id, client, points));
    }
    for (id, client, points) in &customers {
        let body = search_over_http(client, &format!("{url}&account_id={id}")).await;
        assert_eq!(body["cached"], true);
        let offer = &body["offers"][0];
        assert_eq!(offer["price"]["minor"], 50_000);
        assert_eq!(offer["markdown"]["minor"], *points);
        assert_eq!(offer["price_to_pay"]["minor"], 50_000 - points);
        assert_eq!(body["wallet_available"]["minor"], *points);
    }
    // Another customer's account is still refused on a hit (as if it did not exist), and
    // naming one without a key too.
    let res = customers[0]
        .1
        .get(format!("{url}&account_id={}", customers[1].0))
        .send()
        .await
        .unwrap();
    common::assert_problem(res, 404, "not-found", None).await;
    let res = s
        .anonymous
        .get(format!("{url}&account_id={}", customers[1].0))
        .send()
        .await
        .unwrap();
    common::assert_problem(res, 401, "unauthorized", None).await;
    // And the shared result carries no one's markdown.
    let anon = search_over_http(&s.anonymous, &url).await;
    assert_eq!(anon["offers"][0]["price_to_pay"]["minor"], 50_000);
    assert_eq!(anon["wallet_available"], Value::Null);
    let end = counts(&s).await;
    assert_eq!(end.hits, 4, "{end:?}");
    assert_eq!((end.asked, end.misses, end.fan_outs), (1, 1, 1), "{end:?}");
    assert_eq!(knobs.searches.load(Ordering::SeqCst), 1);
    s.stop().await;
}

/// With a one-second TTL, no search that starts after the entry's expiry is answered from
/// the cache: it reaches the aggregator, which fans out again.
#[actix_rt::test]
async fn an_expired_entry_is_not_served_from_the_view() {
    use wayfare::domain::search::TtlRule;
    const TTL: Duration = Duration::from_secs(1);
    let (seller, knobs) = FixedSeller::new("fixed", 50_000);
    let s = TestServer::start_custom(
        |c| {
            c.search.cache.ttl_table = vec![TtlRule {
                max_days_until_travel: 10_000,
                ttl_secs: TTL.as_secs(),
            }]
        },
        vec![seller.into_custom(AdapterConfig::default())],
    )
    .await;
    let url = hotels_url(&s, &stay("Testville", 30));
    let first = search_over_http(&s.anonymous, &url).await;
    assert_eq!(first["cached"], false);
    // The entry was stored before this instant, so it has expired by this plus the TTL.
    let filled_by = Instant::now();
    let mut hits = 0;
    wait_until(
        Duration::from_secs(10),
        "a search past the TTL reaches the aggregator",
        async || {
            let started = Instant::now();
            let body = search_over_http(&s.anonymous, &url).await;
            if body["cached"] == true {
                assert!(
                    started < filled_by + TTL,
                    "served from the cache {:?} after it was filled",
                    started - filled_by
                );
                hits += 1;
                return None;
            }
            Some(())
        },
    )
    .await;
    let c = counts(&s).await;
    assert_eq!(c.hits, hits);
    assert_eq!((c.misses, c.fan_outs, c.asked), (2, 2, 2), "{c:?}");
    assert_eq!(knobs.searches.load(Ordering::SeqCst), 2);
    s.stop().await;
}

/// A confirmed booking of a SKU drops every cached result holding it, from the view too:
/// the next search is a miss that fans out again.
#[actix_rt::test]
async fn a_booking_removes_the_hit_from_the_view() {
    let (seller, knobs) = FixedSeller::new("fixed", 50_000);
    let s =
        TestServer::start_custom(|_| {}, vec![seller.into_custom(AdapterConfig::default())]).await;
    let q = stay("Testville", 30);
    let url = hotels_url(&s, &q);
    search_over_http(&s.anonymous, &url).await;
    let hit = search_over_http(&s.anonymous, &url).await;
    assert_eq!(hit["cached"], true);
    assert_eq!(metric(&s, "wayfare_search_cached_results").await, 1);
    let offer = hit["offers"][0].clone();

    let (id, client) = s.create_customer("Booker").await;
    let res = client
        .post(s.url("/v1/bookings"))
        .header("Idempotency-Key", "book-the-cached-sku")
        .json(&serde_json::json!({
            "account_id": id,
            "seller": offer["seller"],
            "sku": offer["sku"],
            "start": q.check_in,
            "end": q.check_out,
            "offer_price": offer["price"],
            "card_token": "tok_approve",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let booking: Value = res.json().await.unwrap();
    let booking_url = s.url(&format!("/v1/bookings/{}", booking["id"].as_str().unwrap()));
    wait_until(
        Duration::from_secs(10),
        "the booking is confirmed",
        async || {
            let b: Value = client.get(&booking_url).fetch_json().await;
            (b["state"] == "confirmed").then_some(())
        },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the booked SKU's result leaves the cache",
        async || (metric(&s, "wayfare_search_cached_results").await == 0).then_some(()),
    )
    .await;
    let before = counts(&s).await;
    let fresh = search_over_http(&s.anonymous, &url).await;
    assert_eq!(fresh["cached"], false, "the hit went with the booking");
    let after = counts(&s).await;
    assert_eq!(after.asked, before.asked + 1, "{after:?}");
    assert_eq!(after.fan_outs, before.fan_outs + 1, "{after:?}");
    assert_eq!(knobs.searches.load(Ordering::SeqCst), 2);
    s.stop().await;
}

/// Many distinct queries through one aggregator with room for three: its view never shows
/// more than three results, an evicted one is asked for again, and a result kept busy by
/// hits in the view is not the one evicted.
#[actix_rt::test]
async fn the_cache_bound_holds_under_many_distinct_queries() {
    const CAPACITY: usize = 3;
    let (seller, knobs) = FixedSeller::new("fixed", 50_000);
    let s = TestServer::start_custom(
        |c| {
            c.search.aggregators = 1;
            c.search.cache.capacity = CAPACITY;
        },
        vec![seller.into_custom(AdapterConfig::default())],
    )
    .await;
    let url = |day: u64| hotels_url(&s, &stay("Testville", day));
    for day in 10..30 {
        let body = search_over_http(&s.anonymous, &url(day)).await;
        assert_eq!(body["cached"], false);
        let held = metric(&s, "wayfare_search_cached_results").await;
        assert!(held as usize <= CAPACITY, "{held} cached after day {day}");
    }
    assert_eq!(metric(&s, "wayfare_search_cached_results").await, 3);
    // Days 27..=29 are held; 10 was evicted long ago and is asked for again.
    let before = counts(&s).await;
    let evicted = search_over_http(&s.anonymous, &url(10)).await;
    assert_eq!(evicted["cached"], false);
    assert_eq!(counts(&s).await.asked, before.asked + 1);
    // Now 28, 29, 10 are held, 28 least recently used by the aggregator's own account;
    // a hit on 28 through the view makes 29 the one to go.
    let before = counts(&s).await;
    assert_eq!(
        search_over_http(&s.anonymous, &url(28)).await["cached"],
        true
    );
    assert_eq!(counts(&s).await.asked, before.asked, "28 was a view hit");
    search_over_http(&s.anonymous, &url(40)).await;
    let before = counts(&s).await;
    assert_eq!(
        search_over_http(&s.anonymous, &url(28)).await["cached"],
        true
    );
    assert_eq!(
        search_over_http(&s.anonymous, &url(10)).await["cached"],
        true
    );
    assert_eq!(
        search_over_http(&s.anonymous, &url(40)).await["cached"],
        true
    );
    assert_eq!(
        counts(&s).await.asked,
        before.asked,
        "all three from the view"
    );
    assert_eq!(
        search_over_http(&s.anonymous, &url(29)).await["cached"],
        false
    );
    assert_eq!(knobs.searches.load(Ordering::SeqCst), 20 + 1 + 1 + 1);
    assert!(metric(&s, "wayfare_search_cached_results").await as usize <= CAPACITY);
    s.stop().await;
}
