//! The embedded default: sled 0.34, one sled tree per [`Tree`].

use std::path::Path;

use sled::Transactional;

use super::{Entry, Op, Store, StoreError, StoreFuture, Tree};

/// sled-backed [`Store`].
#[derive(Clone, Debug)]
pub struct SledStore {
    trees: Vec<sled::Tree>,
    flusher: Flusher,
}

/// Group commit: one thread runs sled's blocking `flush()` for every caller waiting at
/// that moment, so concurrent writers share one disk sync.
///
/// Why not `Db::flush_async`: under concurrent writers it can wedge sled 0.34 for good
/// (both arbiters blocked in sled, flushers parked; seen here under a mixed load, and
/// reported upstream as sled issues #1308 and #1412).
#[derive(Clone, Debug)]
struct Flusher {
    inner: std::sync::Arc<FlusherThread>,
}

type FlushWaiter = tokio::sync::oneshot::Sender<Result<(), StoreError>>;

#[derive(Debug)]
struct FlusherThread {
    requests: std::sync::Mutex<Option<std::sync::mpsc::Sender<FlushWaiter>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for FlusherThread {
    /// The last store handle stops the thread and waits for it, so the database (and its
    /// file lock) is released when the store is dropped, not some time later.
    fn drop(&mut self) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Flusher {
    fn start(db: sled::Db) -> Result<Self, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<FlushWaiter>();
        let thread = std::thread::Builder::new()
            .name("wayfare-flusher".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiters = vec![first];
                    waiters.extend(rx.try_iter());
                    let result = db.flush().map(|_| ()).map_err(io);
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .map_err(|e| StoreError::Io(format!("cannot start the flusher thread: {e}")))?;
        Ok(Flusher {
            inner: std::sync::Arc::new(FlusherThread {
                requests: std::sync::Mutex::new(Some(tx)),
                thread: std::sync::Mutex::new(Some(thread)),
            }),
        })
    }

    fn request(&self, waiter: FlushWaiter) -> bool {
        let requests = self
            .inner
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        requests.as_ref().is_some_and(|tx| tx.send(waiter).is_ok())
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Io(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|e| StoreError::Io(format!("cannot open store in {}: {e}", dir.display())))?;
        let trees = Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()).map_err(io))
            .collect::<Result<_, _>>()?;
        let flusher = Flusher::start(db.clone())?;
        Ok(SledStore { trees, flusher })
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        // Invariant: `trees` holds Tree::ALL in order.
        let index = Tree::ALL
            .iter()
            .position(|t| *t == tree)
            .expect("known tree");
        &self.trees[index]
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(tree).get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let t = self.tree(tree);
        let iter = match after {
            Some(after) => {
                let mut start = after.to_vec();
                start.push(0); // the smallest key strictly after `after`
                t.range(start..)
            }
            None => t.range(prefix.to_vec()..),
        };
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(io)?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut used: Vec<Tree> = Vec::new();
        for op in &ops {
            let t = match op {
                Op::Put { tree, .. } | Op::Delete { tree, .. } => *tree,
            };
            if !used.contains(&t) {
                used.push(t);
            }
        }
        let trees: Vec<sled::Tree> = used.iter().map(|t| self.tree(*t).clone()).collect();
        trees
            .as_slice()
            .transaction(|txs| {
                for op in &ops {
                    match op {
                        Op::Put { tree, key, value } => {
                            let i = used.iter().position(|t| t == tree).unwrap_or(0);
                            txs[i].insert(key.as_slice(), value.as_slice())?;
                        }
                        Op::Delete { tree, key } => {
                            let i = used.iter().position(|t| t == tree).unwrap_or(0);
                            txs[i].remove(key.as_slice())?;
                        }
                    }
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => io(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Io("transaction aborted".into())
                }
            })
    }

    fn flush(&self) -> StoreFuture<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.flusher.request(tx);
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Io("the flusher thread has stopped".into()));
            }
            rx.await
                .map_err(|_| StoreError::Io("the flusher thread has stopped".into()))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_scans_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.write(vec![
                Op::put(Tree::Accounts, b"a1".to_vec(), &1u32),
                Op::put(Tree::Ledger, b"a1/1".to_vec(), &10u32),
                Op::put(Tree::Ledger, b"a1/2".to_vec(), &20u32),
                Op::put(Tree::Ledger, b"a2/1".to_vec(), &30u32),
            ])
            .unwrap();
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(s.flush())
                .unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        let all = s.scan(Tree::Ledger, b"a1/", None, 10).unwrap();
        assert_eq!(all.len(), 2);
        let after = s.scan(Tree::Ledger, b"a1/", Some(b"a1/1"), 10).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].0, b"a1/2");
        assert_eq!(s.scan(Tree::Ledger, b"a1/", None, 1).unwrap().len(), 1);
        let v: Option<u32> = super::super::get_record(&s, Tree::Accounts, b"a1").unwrap();
        assert_eq!(v, Some(1));
    }

    #[test]
    fn corrupt_records_are_reported_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.write(vec![Op::Put {
            tree: Tree::Accounts,
            key: b"acct-1".to_vec(),
            value: vec![7, 1, 2],
        }])
        .unwrap();
        let err = super::super::get_record::<u32>(&s, Tree::Accounts, b"acct-1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "record accounts/acct-1 is unreadable: unknown format version 7 (this build reads version 1)"
        );
    }
}
