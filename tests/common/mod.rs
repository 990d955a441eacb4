//! Test support: a real wayfare server on 127.0.0.1:0 with sled in a temp dir.

#![allow(dead_code)]

use std::net::TcpListener;

use tokio::sync::oneshot;
use wayfare::{Config, Runtime};

/// A running server; dropped at the end of the test.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The runtime behind it.
    pub runtime: Runtime,
    /// HTTP client.
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// A config for tests: small, quick, no demo data, data in `dir`.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.store.data_dir = dir.to_owned();
    config.server.bind = "127.0.0.1:0".into();
    config.server.workers = 1;
    config.runtime.arbiters = 1;
    config.accounts.shards = 2;
    config.supervisor.backoff_min_ms = 1;
    config.supervisor.backoff_max_ms = 10;
    config
}

impl TestServer {
    /// Starts a server with the default test config.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` adjusts the test config.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let runtime = Runtime::start(config).await.expect("runtime starts");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = actix_rt::spawn(wayfare::http::serve(runtime.clone(), listener, async {
            let _ = stopped.await;
        }));
        TestServer {
            base,
            runtime,
            http: reqwest::Client::new(),
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
        let res = self
            .http
            .post(self.url("/v1/accounts"))
            .json(&serde_json::json!({"name": name, "email": "t@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: serde_json::Value = res.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Stops the server and the runtime.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
        self.runtime.shutdown().await;
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
