//! `FaultyStore`: a [`Store`] around another that refuses some writes and holds back
//! flushes, as `[faults]` asks (`store_write_failure_rate`, `store_write_delay_ms`).
//!
//! A refused write is refused before it reaches the inner store, so it is atomic like any
//! other failed write: nothing of the batch is written. Reads are passed through untouched.
//! The delay is applied to flushes, which every acknowledged write waits for, rather than
//! to the synchronous `write` call, which would stall the actor thread that made it.

use std::sync::Arc;
use std::time::Duration;

use super::{Entry, Op, Store, StoreError, StoreFuture, Tree};
use crate::faults::{roll, Fault, FaultCounters};

/// A store that fails and delays writes on purpose.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    write_failure_rate: f64,
    write_delay: Duration,
    counters: Arc<FaultCounters>,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("write_failure_rate", &self.write_failure_rate)
            .field("write_delay", &self.write_delay)
            .finish()
    }
}

impl FaultyStore {
    /// Wraps `inner`: each write is refused with probability `write_failure_rate`, and each
    /// flush completes `write_delay` late; fired faults are counted in `counters`.
    pub fn new(
        inner: Arc<dyn Store>,
        write_failure_rate: f64,
        write_delay: Duration,
        counters: Arc<FaultCounters>,
    ) -> Self {
        FaultyStore {
            inner,
            write_failure_rate,
            write_delay,
            counters,
        }
    }
}

impl FaultyStore {
    /// Refuses a write of `changes` ops (before any reaches the inner store) when the
    /// dice say so.
    fn maybe_refuse(&self, changes: usize) -> Result<(), StoreError> {
        if roll(self.write_failure_rate) {
            self.counters.count(Fault::StoreWriteFailure);
            return Err(StoreError::Io(format!(
                "injected fault: write of {changes} change(s) refused, nothing written \
                 (faults.store_write_failure_rate)"
            )));
        }
        Ok(())
    }
}

impl Store for FaultyStore {
    fn failure_cause(&self) -> Option<String> {
        self.inner.failure_cause()
    }

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
        self.maybe_refuse(ops.len())?;
        self.inner.write(ops)
    }

    fn write_in_order(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.maybe_refuse(ops.len())?;
        self.inner.write_in_order(ops)
    }

    fn flush(&self) -> StoreFuture<()> {
        if self.write_delay.is_zero() {
            return self.inner.flush();
        }
        self.counters.count(Fault::StoreWriteDelay);
        let (inner, delay) = (self.inner.clone(), self.write_delay);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            inner.flush().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{get_record, SledStore};

    fn sled(dir: &std::path::Path) -> Arc<dyn Store> {
        Arc::new(SledStore::open(dir).expect("open sled"))
    }

    #[tokio::test]
    async fn a_refused_write_leaves_nothing_behind_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let inner = sled(dir.path());
        let counters = Arc::new(FaultCounters::default());
        let always = FaultyStore::new(inner.clone(), 1.0, Duration::ZERO, counters.clone());
        let batch = vec![
            Op::put(Tree::Meta, b"a".to_vec(), &1u32),
            Op::put(Tree::Accounts, b"b".to_vec(), &2u32),
        ];
        let e = always.write(batch.clone()).unwrap_err();
        assert!(
            matches!(&e, StoreError::Io(m) if m.contains("faults.store_write_failure_rate")),
            "{e}"
        );
        assert_eq!(get_record::<u32>(&*inner, Tree::Meta, b"a").unwrap(), None);
        assert_eq!(
            get_record::<u32>(&*inner, Tree::Accounts, b"b").unwrap(),
            None
        );
        assert_eq!(counters.snapshot().store_write_failures, 1);

        let never = FaultyStore::new(inner.clone(), 0.0, Duration::ZERO, counters.clone());
        never.write(batch).unwrap();
        never.flush().await.unwrap();
        assert_eq!(
            get_record::<u32>(&never, Tree::Meta, b"a").unwrap(),
            Some(1)
        );
        assert_eq!(
            get_record::<u32>(&never, Tree::Accounts, b"b").unwrap(),
            Some(2)
        );
        assert_eq!(counters.snapshot().store_write_failures, 1);
    }

    #[tokio::test]
    async fn flushes_are_held_back_by_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(FaultCounters::default());
        let slow = FaultyStore::new(
            sled(dir.path()),
            0.0,
            Duration::from_millis(50),
            counters.clone(),
        );
        slow.write(vec![Op::put(Tree::Meta, b"k".to_vec(), &7u8)])
            .unwrap();
        let started = std::time::Instant::now();
        slow.flush().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(counters.snapshot().store_write_delays, 1);
    }
}
