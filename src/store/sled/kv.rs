//! The embedded default: sled 0.34, one sled tree per [`Tree`].
//!
//! # Storage faults
//!
//! sled 0.34 makes any I/O error of its log sticky: after a failed write or flush (disk
//! full, file system gone read-only) every later flush fails until the database is opened
//! again. Writes that were applied in memory but not flushed may never reach the disk,
//! and a later flush must not seem to vouch for them. So this store is **fail-stop**: the
//! first I/O error latches it failed ([`SledStore::failure`]), and from then on every
//! write and flush is refused with that first cause, so nothing is acknowledged that
//! might not be durable. Reads keep working where sled has the data in memory (they may
//! show changes that were never acknowledged and will be gone after a restart); a read
//! that needs sled to go to its log fails too, since sled first makes that part of the
//! log durable, which the sticky error refuses. `/health` reports the
//! latched cause. Recovery is a process restart on the same directory once space is free
//! or the file system is writable again: sled reopens from its last flushed state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sled::Transactional;

use crate::store::{Entry, Op, Store, StoreError, StoreFuture, Tree};

/// sled-backed [`Store`].
#[derive(Clone, Debug)]
pub struct SledStore {
    trees: Vec<sled::Tree>,
    flusher: Flusher,
    failure: Arc<FailureLatch>,
}

/// The first I/O error the store met, kept until the process ends (see the module doc).
#[derive(Debug)]
struct FailureLatch {
    dir: PathBuf,
    first: std::sync::OnceLock<String>,
}

impl FailureLatch {
    /// Latches `cause` unless an earlier one is latched; logs the first one, once.
    fn trip(&self, cause: &str) {
        if self.first.set(cause.to_owned()).is_ok() {
            tracing::error!(
                data_dir = %self.dir.display(),
                error = %cause,
                "Store failed; refusing writes until the process is restarted on this directory."
            );
        }
    }

    /// The error every write and flush gets once the latch is tripped.
    fn check(&self) -> Result<(), StoreError> {
        match self.described() {
            None => Ok(()),
            Some(text) => Err(StoreError::Io(text)),
        }
    }

    /// The latched failure with the data dir named (what `/health` shows the operator).
    fn described(&self) -> Option<String> {
        self.first.get().map(|cause| {
            format!(
                "sled store in data dir {} failed: {cause}; writes are refused until wayfare is \
                 restarted once the fault is fixed",
                self.dir.display()
            )
        })
    }
}

/// Group commit: one thread runs sled's blocking `flush()` for every caller waiting at
/// that moment, so concurrent writers share one disk sync. While writers are concurrent
/// (the last sync served more than one), it first waits [`GROUP_COMMIT_WAIT`] for more
/// of them, as PostgreSQL's `commit_delay` does: each sync writes out sled's log buffer
/// through its I/O thread pool, so fewer, fuller syncs cost less CPU per write. A lone
/// writer never waits.
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

/// How long the flusher gathers writers before a sync while they are concurrent: small
/// next to a booking's latency budget, and long enough at 1,000 bookings/s (4 synced
/// writes each) to gather several writers per sync.
const GROUP_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// Longest wait for the lock of a data dir that a store just closed in this process.
const RELOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens sled in `dir`. Sled's own background thread keeps a dropped database (and its
/// file lock) alive until it next wakes, so reopening a data dir right after closing it
/// can meet a held lock: that is retried for up to [`RELOCK_WAIT`]. A lock held by another
/// process is reported once the wait ends.
fn open_db(dir: &Path) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()
        {
            Err(e) if is_held_lock(&e) && started.elapsed() < RELOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Whether sled refused to open because another open database holds the directory's
/// file lock. sled 0.34 reports it as an `Other` I/O error whose text is "could not
/// acquire lock on ...: Os { code: 11, kind: WouldBlock, .. }", so the text is checked too.
fn is_held_lock(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(e) => {
            e.kind() == std::io::ErrorKind::WouldBlock
                || e.to_string().starts_with("could not acquire lock")
        }
        _ => false,
    }
}

impl Flusher {
    fn start(db: sled::Db, latch: Arc<FailureLatch>) -> Result<Self, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<FlushWaiter>();
        let thread = std::thread::Builder::new()
            .name("wayfare-flusher".into())
            .spawn(move || {
                // Whether the last sync served more than one writer: the sign that others
                // are about to ask too.
                let mut shared = false;
                while let Ok(first) = rx.recv() {
                    let mut waiters = vec![first];
                    if shared {
                        std::thread::sleep(GROUP_COMMIT_WAIT);
                    }
                    waiters.extend(rx.try_iter());
                    shared = waiters.len() > 1;
                    // Once latched, never flush again: a later success would seem to vouch
                    // for writes made around the failure.
                    let result = latch.check().and_then(|()| {
                        db.flush().map(|_| ()).map_err(|e| {
                            let cause = format!("flush failed: {}", describe(&e));
                            latch.trip(&cause);
                            latch.check().unwrap_err()
                        })
                    });
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

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(describe(&e))
}

/// The OS error as operators read it ("No space left on device (os error 28)"). sled's own
/// text is the `Debug` form, and the sticky copy it hands out after a failure carries only
/// that text (`Os { code: 28, kind: StorageFull, .. }`), so the code is recovered from it.
fn describe(e: &sled::Error) -> String {
    let sled::Error::Io(e) = e else {
        return e.to_string();
    };
    if e.raw_os_error().is_some() {
        return e.to_string();
    }
    let text = e.to_string();
    let code = text
        .strip_prefix("Os { code: ")
        .and_then(|rest| rest.split(',').next())
        .and_then(|code| code.parse::<i32>().ok());
    match code {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => text,
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir` and proves it writable: a probe record is
    /// written and flushed before this returns, so a read-only or full disk fails start-up
    /// with the data dir and the cause named, instead of failing the first request.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let refused = |what: &str, e: String| {
            StoreError::Io(format!("{what} data dir {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| refused("cannot create", e.to_string()))?;
        let db = open_db(dir).map_err(|e| match e {
            // sled takes an exclusive file lock on the directory; `open_db` already waited
            // out this process's own just-closed store, so the holder is another process.
            e if is_held_lock(&e) => StoreError::Io(format!(
                "data dir {} is held by another wayfare process (one process per data \
                     dir); stop it or choose another --data-dir",
                dir.display()
            )),
            e => refused("cannot open the store in", describe(&e)),
        })?;
        let trees: Vec<sled::Tree> = Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<_, _>>()
            .map_err(|e| refused("cannot open the store in", describe(&e)))?;
        let probe = trees[Tree::ALL.iter().position(|t| *t == Tree::Meta).unwrap_or(0)]
            .insert(
                b"open_probe",
                crate::store::codec::encode(&chrono::Utc::now().timestamp_millis()),
            )
            .and_then(|_| db.flush());
        if let Err(e) = probe {
            return Err(refused("cannot write to the store in", describe(&e)));
        }
        let failure = Arc::new(FailureLatch {
            dir: dir.to_owned(),
            first: std::sync::OnceLock::new(),
        });
        let flusher = Flusher::start(db.clone(), failure.clone())?;
        Ok(SledStore {
            trees,
            flusher,
            failure,
        })
    }

    /// The first I/O error this store met, if any: it then refuses writes until the process
    /// is restarted (see the module doc).
    pub fn failure(&self) -> Option<&str> {
        self.failure.first.get().map(String::as_str)
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

impl SledStore {
    /// A write of one op needs no transaction: sled applies a single-key change atomically,
    /// and skipping the transaction skips sled's global transaction lock, which every
    /// multi-op write takes (under a booking load, saga records are most writes and nearly
    /// all of them are one put).
    fn write_one(&self, op: Op) -> Result<(), StoreError> {
        let storage = |e: sled::Error| {
            self.failure
                .trip(&format!("write failed: {}", describe(&e)));
            self.failure.check().unwrap_err()
        };
        match op {
            Op::Put { tree, key, value } => {
                self.tree(tree).insert(key, value).map_err(storage)?;
            }
            Op::Insert { tree, key, value } => {
                let swapped = self
                    .tree(tree)
                    .compare_and_swap(key.as_slice(), None as Option<&[u8]>, Some(value))
                    .map_err(storage)?;
                if swapped.is_err() {
                    return Err(StoreError::Taken {
                        tree: tree.name(),
                        key: crate::store::printable_key(&key),
                    });
                }
            }
            Op::Delete { tree, key } => {
                self.tree(tree).remove(key).map_err(storage)?;
            }
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn failure_cause(&self) -> Option<String> {
        self.failure.described()
    }

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

    fn write(&self, mut ops: Vec<Op>) -> Result<(), StoreError> {
        use sled::transaction::ConflictableTransactionError;
        self.failure.check()?;
        if ops.len() == 1 {
            return self.write_one(ops.pop().expect("one op"));
        }
        let mut used: Vec<Tree> = Vec::new();
        for op in &ops {
            let t = op.tree();
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
                        Op::Insert { tree, key, value } => {
                            let i = used.iter().position(|t| t == tree).unwrap_or(0);
                            if txs[i].get(key.as_slice())?.is_some() {
                                return Err(ConflictableTransactionError::Abort((
                                    *tree,
                                    key.clone(),
                                )));
                            }
                            txs[i].insert(key.as_slice(), value.as_slice())?;
                        }
                        Op::Delete { tree, key } => {
                            let i = used.iter().position(|t| t == tree).unwrap_or(0);
                            txs[i].remove(key.as_slice())?;
                        }
                    }
                }
                Ok::<(), ConflictableTransactionError<(Tree, Vec<u8>)>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => {
                    self.failure
                        .trip(&format!("write failed: {}", describe(&e)));
                    self.failure.check().unwrap_err()
                }
                sled::transaction::TransactionError::Abort((tree, key)) => StoreError::Taken {
                    tree: tree.name(),
                    key: crate::store::printable_key(&key),
                },
            })
    }

    /// One op at a time, without sled's transaction (as a one-op `write` is). The
    /// ops of one call get increasing log positions, and sled replays its log in order on
    /// recovery, so a crash keeps a prefix of them.
    fn write_in_order(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.failure.check()?;
        for op in ops {
            self.write_one(op)?;
        }
        Ok(())
    }

    fn flush(&self) -> StoreFuture<()> {
        if let Err(e) = self.failure.check() {
            return Box::pin(async move { Err(e) });
        }
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
        let v: Option<u32> = crate::store::get_record(&s, Tree::Accounts, b"a1").unwrap();
        assert_eq!(v, Some(1));
    }

    #[test]
    fn an_insert_over_an_existing_key_refuses_the_whole_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.write(vec![Op::insert(Tree::Emails, b"a@x.io".to_vec(), &1u32)])
            .unwrap();
        let refused = s.write(vec![
            Op::put(Tree::Accounts, b"acct2".to_vec(), &2u32),
            Op::insert(Tree::Emails, b"a@x.io".to_vec(), &2u32),
        ]);
        assert_eq!(
            refused,
            Err(StoreError::Taken {
                tree: "emails",
                key: "a@x.io".into()
            })
        );
        assert_eq!(s.get(Tree::Accounts, b"acct2").unwrap(), None);
        let owner: Option<u32> = crate::store::get_record(&s, Tree::Emails, b"a@x.io").unwrap();
        assert_eq!(owner, Some(1));
        // A lone insert (written without a transaction) is refused the same way.
        let alone = s.write(vec![Op::insert(Tree::Emails, b"a@x.io".to_vec(), &4u32)]);
        assert!(matches!(
            alone,
            Err(StoreError::Taken { tree: "emails", .. })
        ));
        let owner: Option<u32> = crate::store::get_record(&s, Tree::Emails, b"a@x.io").unwrap();
        assert_eq!(owner, Some(1));
        // The store is not latched by a refused insert: later writes go through.
        s.write(vec![Op::insert(Tree::Emails, b"b@x.io".to_vec(), &3u32)])
            .unwrap();
        s.write(vec![Op::Delete {
            tree: Tree::Emails,
            key: b"b@x.io".to_vec(),
        }])
        .unwrap();
        assert_eq!(s.get(Tree::Emails, b"b@x.io").unwrap(), None);
    }

    #[test]
    fn os_errors_read_as_the_os_says_them() {
        let raw = sled::Error::Io(std::io::Error::from_raw_os_error(28));
        assert_eq!(describe(&raw), "No space left on device (os error 28)");
        // What sled hands out once the error is sticky.
        let copied = sled::Error::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("{:?}", std::io::Error::from_raw_os_error(28)),
        ));
        assert_eq!(describe(&copied), "No space left on device (os error 28)");
        let other = sled::Error::Io(std::io::Error::other("odd"));
        assert_eq!(describe(&other), "odd");
    }

    #[test]
    fn a_failed_store_refuses_writes_and_flushes_but_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.write(vec![Op::put(Tree::Accounts, b"a1".to_vec(), &1u32)])
            .unwrap();
        assert_eq!(s.failure(), None);
        s.failure
            .trip("flush failed: No space left on device (os error 28)");
        s.failure.trip("a later cause is not kept");
        let err = s
            .write(vec![Op::put(Tree::Accounts, b"a2".to_vec(), &2u32)])
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("No space left on device"), "{text}");
        let flushed = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(s.flush());
        assert_eq!(flushed, Err(err));
        assert!(s.get(Tree::Accounts, b"a1").unwrap().is_some());
        assert!(s.get(Tree::Accounts, b"a2").unwrap().is_none());
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
        let err = crate::store::get_record::<u32>(&s, Tree::Accounts, b"acct-1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "record accounts/acct-1 is unreadable: unknown format version 7 (this build reads version 1)"
        );
    }
}
