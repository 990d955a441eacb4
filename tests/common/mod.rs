//! Test support: a real wayfare server on 127.0.0.1:0 with sled in a temp dir.

#![allow(dead_code)]

pub mod raw;
pub mod tamper;

use std::fmt::Display;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wayfare::{Config, Runtime};

/// A running server; dropped at the end of the test.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The runtime behind it.
    pub runtime: Runtime,
    /// HTTP client acting as the operator (sends [`OPERATOR_TOKEN`]).
    pub http: reqwest::Client,
    /// HTTP client with no credential.
    pub anonymous: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// First pause between two looks of [`wait_until`]; it doubles up to [`POLL_MAX_PAUSE`], so
/// a condition that holds soon is seen soon and a slow one is not polled in a busy loop.
const POLL_FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between two looks of [`wait_until`].
const POLL_MAX_PAUSE: Duration = Duration::from_millis(200);

/// Waits until `look` sees what the test waits for (returns `Some`), and returns it; looks
/// at least once, and once more at the deadline. After `timeout` the test fails with a
/// message naming `what` it waited for. Tests wait on observable state with this, never
/// with a bare sleep.
pub async fn wait_until<T>(
    timeout: Duration,
    what: impl Display,
    look: impl AsyncFnMut() -> Option<T>,
) -> T {
    match poll_until(timeout, look).await {
        Some(found) => found,
        None => panic!("timed out after {timeout:?} waiting until {what}"),
    }
}

/// [`wait_until`] for a test that reports what is left instead of failing at once: `None`
/// when `timeout` passed without `look` returning `Some`.
pub async fn poll_until<T>(
    timeout: Duration,
    mut look: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = POLL_FIRST_PAUSE;
    loop {
        if let Some(found) = look().await {
            return Some(found);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(POLL_MAX_PAUSE);
    }
}

/// The operator token of test servers; [`TestServer::http`] sends it on every request.
pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789";

/// A client that sends `Authorization: Bearer <credential>` on every request.
pub fn client_with(credential: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {credential}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A config for tests: small, quick, no demo data, data in `dir`, operator token set.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.store.data_dir = dir.to_owned();
    config.server.bind = "127.0.0.1:0".into();
    config.server.workers = 1;
    config.runtime.arbiters = 1;
    config.accounts.shards = 2;
    config.supervisor.backoff_min_ms = 1;
    config.supervisor.backoff_max_ms = 10;
    config.admin.token = Some(wayfare::config::Secret::new(OPERATOR_TOKEN));
    // Tests open their customers' accounts from one address; `tests/limits.rs` checks the
    // account-opening limit with values of its own.
    config.limits.account_creations_burst = 1_000;
    config
}

impl TestServer {
    /// Starts a server with the default test config.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` adjusts the test config.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_custom(tweak, Vec::new()).await
    }

    /// Starts a server with extra sellers given as code.
    pub async fn start_custom(
        tweak: impl FnOnce(&mut Config),
        sellers: Vec<wayfare::CustomSeller>,
    ) -> TestServer {
        Self::start_built(tweak, move |mut builder| {
            for seller in sellers {
                builder = builder.seller(seller);
            }
            builder
        })
        .await
    }

    /// Starts a server whose runtime builder `build` completes (sellers, gateway, mail).
    pub async fn start_built(
        tweak: impl FnOnce(&mut Config),
        build: impl FnOnce(wayfare::RuntimeBuilder) -> wayfare::RuntimeBuilder,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let runtime = build(Runtime::builder(config))
            .start()
            .await
            .expect("runtime starts");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = actix_rt::spawn(wayfare::http::serve(runtime.clone(), listener, async {
            let _ = stopped.await;
        }));
        TestServer {
            base,
            runtime,
            http: client_with(OPERATOR_TOKEN),
            anonymous: reqwest::Client::new(),
            stop: Some(stop),
            served: Some(served),
            _dir: dir,
        }
    }

    /// `base + path`
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Creates an account over HTTP and returns its id.
    pub async fn create_account(&self, name: &str) -> String {
        self.create_customer(name).await.0
    }

    /// Creates an account over HTTP, as a customer would (no credential), and returns its
    /// id and a client that sends its API key.
    pub async fn create_customer(&self, name: &str) -> (String, reqwest::Client) {
        let res = self
            .anonymous
            .post(self.url("/v1/accounts"))
            // One address opens one account: each customer gets its own.
            .json(&serde_json::json!({
                "name": name,
                "email": format!("t-{}@example.com", uuid::Uuid::new_v4().simple()),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: serde_json::Value = res.json().await.unwrap();
        let key = body["api_key"].as_str().expect("api_key issued");
        (body["id"].as_str().unwrap().to_owned(), client_with(key))
    }

    /// Stops the server and the runtime.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
        self.runtime.shutdown().await.expect("clean shutdown");
    }
}

/// Asserts a problem response: status, content type, stable type, and field.
pub async fn assert_problem(
    res: reqwest::Response,
    status: u16,
    kind: &str,
    field: Option<&str>,
) -> serde_json::Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/problem+json"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["type"], format!("/problems/{kind}"), "{body}");
    assert_eq!(body["status"], status);
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(body["field"].as_str(), field, "{body}");
    body
}

/// A seller under the test's control: fixed offers, a call counter, and knobs.
pub mod fake {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use wayfare::actors::seller::AdapterConfig;
    use wayfare::domain::money::{Currency, Money};
    use wayfare::sellers::*;

    /// Knobs and counters of a [`FixedSeller`].
    #[derive(Debug, Default)]
    pub struct Knobs {
        /// Searches received.
        pub searches: AtomicU64,
        /// Bookings received.
        pub books: AtomicU64,
        /// Fail every call with `Unavailable`.
        pub failing: std::sync::atomic::AtomicBool,
        /// Fail cancellations with `Unavailable`.
        pub cancel_failing: std::sync::atomic::AtomicBool,
        /// Delay of every call, ms (u64::MAX: hang).
        pub delay_ms: AtomicU64,
        /// Price of its one hotel offer, minor units.
        pub price: Mutex<i64>,
    }

    /// Answers every hotel search with one offer `hotel:test:h1:double` at `price`.
    pub struct FixedSeller {
        pub name: String,
        pub knobs: Arc<Knobs>,
    }

    impl FixedSeller {
        pub fn new(name: &str, price: i64) -> (Self, Arc<Knobs>) {
            let knobs = Arc::new(Knobs::default());
            *knobs.price.lock().unwrap() = price;
            (
                FixedSeller {
                    name: name.into(),
                    knobs: knobs.clone(),
                },
                knobs,
            )
        }

        pub fn into_custom(self, adapter: AdapterConfig) -> wayfare::CustomSeller {
            wayfare::CustomSeller {
                api: Arc::new(self),
                verticals: vec![Vertical::Hotel, Vertical::Flight],
                adapter,
            }
        }

        fn wait(&self) -> impl std::future::Future<Output = Result<(), SellerError>> + Send {
            let delay = self.knobs.delay_ms.load(Ordering::SeqCst);
            let failing = self.knobs.failing.load(Ordering::SeqCst);
            async move {
                if delay == u64::MAX {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(delay)).await;
                if failing {
                    return Err(SellerError::Unavailable("knob says fail".into()));
                }
                Ok(())
            }
        }
    }

    impl SellerApi for FixedSeller {
        fn name(&self) -> &str {
            &self.name
        }

        fn search_hotels(&self, q: HotelQuery) -> SellerFuture<Vec<Offer>> {
            self.knobs.searches.fetch_add(1, Ordering::SeqCst);
            let wait = self.wait();
            let offer = Offer {
                seller: self.name.clone(),
                sku: "hotel:test:h1:double".into(),
                title: "Test Hotel double".into(),
                price: Money::new(*self.knobs.price.lock().unwrap(), Currency::EUR),
                details: OfferDetails::Hotel(HotelDetails {
                    city: "Testville".into(),
                    hotel: "Test Hotel".into(),
                    room: "double".into(),
                    check_in: q.check_in,
                    check_out: q.check_out,
                    nights: q.nights() as u32,
                }),
            };
            Box::pin(async move {
                wait.await?;
                Ok(vec![offer])
            })
        }

        fn search_flights(&self, _: FlightQuery) -> SellerFuture<Vec<Offer>> {
            self.knobs.searches.fetch_add(1, Ordering::SeqCst);
            let wait = self.wait();
            Box::pin(async move {
                wait.await?;
                Ok(Vec::new())
            })
        }

        fn book(&self, req: BookRequest) -> SellerFuture<BookOutcome> {
            self.knobs.books.fetch_add(1, Ordering::SeqCst);
            let wait = self.wait();
            Box::pin(async move {
                wait.await?;
                Ok(BookOutcome::Confirmed {
                    reservation_id: format!("r-{}", req.idempotency_key),
                    price: req.expected_price,
                })
            })
        }

        fn cancel(&self, key: String) -> SellerFuture<CancelOutcome> {
            let failing = self.knobs.cancel_failing.load(Ordering::SeqCst);
            let price = *self.knobs.price.lock().unwrap();
            Box::pin(async move {
                if failing {
                    return Err(SellerError::Unavailable("cancel knob says fail".into()));
                }
                Ok(CancelOutcome::Cancelled {
                    reservation_id: format!("r-{key}"),
                    fee: Money::new(0, Currency::EUR),
                    refund: Money::new(price, Currency::EUR),
                })
            })
        }

        fn booking_status(&self, _: String) -> SellerFuture<Option<ReservationStatus>> {
            Box::pin(async { Ok(None) })
        }
    }
}

/// Sends a request and reads its body as JSON, failing the test on a transport or decode
/// error.
pub trait FetchJson {
    /// The body of the answer, decoded.
    fn fetch_json<T: serde::de::DeserializeOwned>(self) -> impl std::future::Future<Output = T>;

    /// The body of the answer as text (a page, the Prometheus exposition).
    fn fetch_text(self) -> impl std::future::Future<Output = String>;
}

impl FetchJson for reqwest::RequestBuilder {
    async fn fetch_json<T: serde::de::DeserializeOwned>(self) -> T {
        self.send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("a JSON body")
    }

    async fn fetch_text(self) -> String {
        self.send()
            .await
            .expect("request sent")
            .text()
            .await
            .expect("a text body")
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, made for one test with
/// `rcgen` and written as PEM files into a directory: `cert` is what a fake partner serves
/// and what a client trusts as its `ca_cert`; `key` is the fake's private key.
pub struct SelfSigned {
    /// The certificate, PEM.
    pub cert: std::path::PathBuf,
    /// Its private key, PEM.
    pub key: std::path::PathBuf,
}

impl SelfSigned {
    /// Makes a fresh certificate and writes `partner-cert.pem`, `partner-key.pem` in `dir`.
    pub fn new(dir: &std::path::Path) -> SelfSigned {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a self-signed certificate");
        let (cert, key) = (dir.join("partner-cert.pem"), dir.join("partner-key.pem"));
        std::fs::write(&cert, made.cert.pem()).expect("write the certificate");
        std::fs::write(&key, made.key_pair.serialize_pem()).expect("write the key");
        SelfSigned { cert, key }
    }

    /// A plain reqwest client (the tests' own, e.g. for `/_fake/ledger`) that trusts it.
    pub fn trusting_client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.cert).expect("read the certificate");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    }
}
