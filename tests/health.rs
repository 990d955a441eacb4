//! `/health` is cheap enough that anyone may call it as often as they like: it writes
//! nothing per call (the store probe runs on its own schedule and is reported with its
//! age), yet a store that has failed is reported at once.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;
use wayfare::store::{Entry, Op, Store, StoreError, StoreFuture, Tree};

/// Counts writes and can be switched to fail-stop, like the sled store after an I/O error.
struct CountingStore {
    inner: Arc<dyn Store>,
    writes: Arc<AtomicU64>,
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl Store for CountingStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(tree, key)
    }

    fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan(tree, prefix, after, limit)
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.write(ops)
    }

    fn flush(&self) -> StoreFuture<()> {
        self.inner.flush()
    }

    fn failure_cause(&self) -> Option<String> {
        self.failed
            .load(Ordering::SeqCst)
            .then(|| "disk on fire (test)".to_owned())
    }
}

#[actix_rt::test]
async fn health_writes_nothing_per_call_and_reports_a_failed_store_at_once() {
    let writes = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (w, f) = (writes.clone(), failed.clone());
    let s = common::TestServer::start_built(
        |_| {},
        move |b| {
            b.store_layer(move |inner| {
                Arc::new(CountingStore {
                    inner,
                    writes: w,
                    failed: f,
                })
            })
        },
    )
    .await;
    let started = std::time::Instant::now();
    let before = writes.load(Ordering::SeqCst);
    for _ in 0..1_000 {
        let res = s.anonymous.get(s.url("/health")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let during = writes.load(Ordering::SeqCst) - before;
    // Only the scheduled probe may have written meanwhile (one per 5 s).
    let probes = started.elapsed().as_secs() / 5 + 1;
    assert!(
        during <= probes,
        "1,000 health checks made {during} store writes (scheduled probes allowed: {probes})"
    );
    let body: Value = s
        .http
        .get(s.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["store"]["ok"], true, "{body}");
    assert!(body["store_probe_age_ms"].as_u64().is_some(), "{body}");

    failed.store(true, Ordering::SeqCst);
    let res = s.http.get(s.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["store"]["ok"], false, "{body}");
    assert_eq!(body["store"]["detail"], "disk on fire (test)", "{body}");
    s.stop().await;
}
