//! A bounded TTL cache of merged search results, keyed by the normalized query key, with an
//! index from SKU to keys so a booking can drop every cached result that holds its SKU.
//!
//! The clock is passed in. When full, an insert first drops expired entries, then the least
//! recently used ones, so the cache never holds more than its capacity.
//!
//! A cache may publish a read-only [`CacheView`] of itself: other threads look results up
//! there without asking the cache's owner. The cache is the view's only writer and changes
//! it in the same call as itself (insert, replace, evict, invalidate, expire, purge), so the
//! view holds a subset of the cache's entries at every moment, never more. A reader checks
//! the entry's own expiry at read time, so an expired entry is never answered even before
//! the owner purges it. A hit in the view counts as a use: the entry carries an atomic
//! recency stamp, taken from a clock the cache and its view share, and eviction reads it
//! (see [`SearchCache::insert`]), so an entry kept busy by view hits is not evicted as
//! least recently used.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::breaker::InvalidSetting;
use super::search::{default_ttl_table, validate_ttl_table, TtlRule};

/// Default capacity: enough for every popular city and route for the next months.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Largest capacity accepted from config; each entry holds a whole merged result.
pub const MAX_CACHE_CAPACITY: usize = 1_000_000;

/// Search cache settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchCacheConfig {
    /// Most cached results per aggregator; 0 disables caching. Default 10000.
    pub capacity: usize,
    /// TTL by days until travel; see [`super::search::ttl_for`]. Default
    /// [`default_ttl_table`].
    pub ttl_table: Vec<TtlRule>,
    /// How long a seller's last answer to a query is kept to serve, marked stale with its
    /// age, while the look-to-book meter throttles that seller; 0 disables. Default 3600.
    pub stale_for_secs: u64,
}

/// Longest `stale_for_secs` accepted: a week.
pub const MAX_STALE_FOR_SECS: u64 = 7 * 24 * 3_600;

impl Default for SearchCacheConfig {
    fn default() -> Self {
        SearchCacheConfig {
            capacity: DEFAULT_CACHE_CAPACITY,
            ttl_table: default_ttl_table(),
            stale_for_secs: 3_600,
        }
    }
}

impl SearchCacheConfig {
    /// Checks every key, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.capacity > MAX_CACHE_CAPACITY {
            return Err(InvalidSetting::new(
                "capacity",
                format!("must be at most {MAX_CACHE_CAPACITY}"),
            ));
        }
        if self.stale_for_secs > MAX_STALE_FOR_SECS {
            return Err(InvalidSetting::new(
                "stale_for_secs",
                format!("must be at most {MAX_STALE_FOR_SECS}"),
            ));
        }
        validate_ttl_table(&self.ttl_table)
    }
}

/// One cached result, shared by the cache and its view.
#[derive(Debug)]
pub struct Cached<V> {
    value: V,
    expires_at: Instant,
    /// The latest recency stamp of a use, from the owner or from the view; eviction reads it.
    used: AtomicU64,
}

impl<V> Cached<V> {
    /// The cached result.
    pub fn value(&self) -> &V {
        &self.value
    }

    /// When the result stops being served.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    fn touch(&self, clock: &AtomicU64) {
        // Relaxed: the stamp only orders uses for eviction; nothing else is published by it.
        let stamp = clock.fetch_add(1, Ordering::Relaxed) + 1;
        self.used.fetch_max(stamp, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Entry<V> {
    shared: Arc<Cached<V>>,
    skus: Vec<String>,
    /// The entry's key in `by_use`: its recency as the owner last filed it. A view hit
    /// since then makes `shared.used` newer, and eviction refiles the entry under it.
    filed: u64,
}

/// What readers of a view see; written only by the cache of the current generation.
#[derive(Debug)]
struct ViewEntries<V> {
    /// Bumped by each cache that attaches, so a superseded cache (an aggregator that
    /// crashed and is being dropped while its fresh replacement already runs) can no
    /// longer change the view.
    generation: u64,
    entries: HashMap<String, Arc<Cached<V>>>,
}

/// A read-only view of a [`SearchCache`], read from any thread; see the module docs.
#[derive(Debug)]
pub struct CacheView<V> {
    entries: RwLock<ViewEntries<V>>,
    /// The recency clock, shared with the cache that writes the view.
    clock: Arc<AtomicU64>,
}

impl<V> Default for CacheView<V> {
    fn default() -> Self {
        CacheView {
            entries: RwLock::new(ViewEntries {
                generation: 0,
                entries: HashMap::new(),
            }),
            clock: Arc::default(),
        }
    }
}

impl<V> CacheView<V> {
    /// An empty view, until a cache attaches to it.
    pub fn new() -> Self {
        Self::default()
    }

    /// The result cached under `key` if it is still fresh at `now`, counted as a use of
    /// it. `None` (a miss, or an entry expired and not yet purged) is not an answer: ask
    /// the cache's owner.
    pub fn get(&self, key: &str, now: Instant) -> Option<Arc<Cached<V>>> {
        let entries = self.read();
        let hit = entries.entries.get(key)?;
        if now >= hit.expires_at {
            return None;
        }
        hit.touch(&self.clock);
        Some(Arc::clone(hit))
    }

    /// Entries visible, expired ones included until their cache purges them.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Whether the view shows nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is visible, expired or not, without counting a use.
    #[cfg(test)]
    fn holds(&self, key: &str) -> bool {
        self.read().entries.contains_key(key)
    }

    /// Makes the caller the only writer: a new generation, with nothing visible.
    fn attach(&self) -> u64 {
        let mut entries = self.write();
        entries.generation += 1;
        entries.entries.clear();
        entries.generation
    }

    /// Applies `change` if `generation` is still the view's writer.
    fn change(&self, generation: u64, change: impl FnOnce(&mut HashMap<String, Arc<Cached<V>>>)) {
        let mut entries = self.write();
        if entries.generation == generation {
            change(&mut entries.entries);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ViewEntries<V>> {
        // Poisoning cannot leave the map half-changed: every change is one map call.
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ViewEntries<V>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The cache; see the module docs. `V` is the cached result (the aggregator stores its merged
/// offers); values are shared as `Arc` so a hit costs no copy.
#[derive(Debug)]
pub struct SearchCache<V> {
    capacity: usize,
    entries: HashMap<String, Entry<V>>,
    by_sku: HashMap<String, HashSet<String>>,
    by_use: BTreeMap<u64, String>,
    by_expiry: BTreeSet<(Instant, String)>,
    clock: Arc<AtomicU64>,
    /// The view this cache writes, with its generation there.
    view: Option<(Arc<CacheView<V>>, u64)>,
}

impl<V> SearchCache<V> {
    /// An empty cache holding at most `capacity` results (zero disables caching).
    pub fn new(capacity: usize) -> Self {
        SearchCache {
            capacity,
            entries: HashMap::new(),
            by_sku: HashMap::new(),
            by_use: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            clock: Arc::default(),
            view: None,
        }
    }

    /// An empty cache that publishes into `view`, emptying it first: from now on this
    /// cache is the view's only writer (a cache that wrote it before no longer can).
    pub fn with_view(capacity: usize, view: Arc<CacheView<V>>) -> Self {
        let generation = view.attach();
        let mut cache = Self::new(capacity);
        cache.clock = view.clock.clone();
        cache.view = Some((view, generation));
        cache
    }

    /// Number of entries held, expired ones included until they are purged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The result cached under `key`, if still fresh at `now`.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<&V> {
        let expired = now >= self.entries.get(key)?.shared.expires_at;
        if expired {
            self.remove(key);
            return None;
        }
        let entry = self.entries.get(key)?;
        entry.shared.touch(&self.clock);
        Some(&entry.shared.value)
    }

    /// Caches `value` under `key` for `ttl`, indexed by the SKUs it holds; replaces any
    /// previous entry for the key. A zero TTL or capacity stores nothing.
    ///
    /// When full, the expired entries go first, then the least recently used: the entry
    /// filed oldest in `by_use` is evicted only if no use was stamped on it since it was
    /// filed (a hit in the view); otherwise it is refiled under that newer stamp and the
    /// next oldest is looked at. Every stamp comes from one clock, so the entry evicted
    /// is the one whose latest use, by the owner or through the view, is the oldest.
    pub fn insert(
        &mut self,
        key: String,
        value: V,
        skus: impl IntoIterator<Item = String>,
        ttl: Duration,
        now: Instant,
    ) {
        self.remove(&key);
        if self.capacity == 0 || ttl.is_zero() {
            return;
        }
        self.purge_expired(now);
        while self.entries.len() >= self.capacity {
            let Some((filed, oldest)) = self.by_use.pop_first() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&oldest) else {
                continue;
            };
            let used = entry.shared.used.load(Ordering::Relaxed);
            if used > filed {
                entry.filed = used;
                self.by_use.insert(used, oldest);
                continue;
            }
            self.remove(&oldest);
        }
        let mut skus: Vec<String> = skus.into_iter().collect();
        skus.sort();
        skus.dedup();
        for sku in &skus {
            self.by_sku
                .entry(sku.clone())
                .or_default()
                .insert(key.clone());
        }
        let used = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let expires_at = now + ttl;
        let shared = Arc::new(Cached {
            value,
            expires_at,
            used: AtomicU64::new(used),
        });
        self.by_use.insert(used, key.clone());
        self.by_expiry.insert((expires_at, key.clone()));
        if let Some((view, generation)) = &self.view {
            let (key, shared) = (key.clone(), shared.clone());
            view.change(*generation, |entries| {
                entries.insert(key, shared);
            });
        }
        self.entries.insert(
            key,
            Entry {
                shared,
                skus,
                filed: used,
            },
        );
    }

    /// Drops every cached result holding `sku`; returns how many were dropped. They are
    /// gone from the view when this returns.
    pub fn invalidate_sku(&mut self, sku: &str) -> usize {
        let keys = self.by_sku.remove(sku).unwrap_or_default();
        for key in &keys {
            self.remove(key);
        }
        keys.len()
    }

    /// Drops the entry under `key`, if any (from the view first).
    pub fn remove(&mut self, key: &str) -> bool {
        if !self.entries.contains_key(key) {
            return false;
        }
        if let Some((view, generation)) = &self.view {
            view.change(*generation, |entries| {
                entries.remove(key);
            });
        }
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        self.by_use.remove(&entry.filed);
        self.by_expiry
            .remove(&(entry.shared.expires_at, key.to_string()));
        for sku in &entry.skus {
            if let Some(keys) = self.by_sku.get_mut(sku) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_sku.remove(sku);
                }
            }
        }
        true
    }

    /// Drops every entry expired at `now`; returns how many.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some((expires_at, key)) = self.by_expiry.first().cloned() {
            if expires_at > now {
                break;
            }
            self.remove(&key);
            dropped += 1;
        }
        dropped
    }
}

/// A cache that goes away (its aggregator stopped or crashed) takes its view's entries
/// with it: nothing it can no longer invalidate stays visible.
impl<V> Drop for SearchCache<V> {
    fn drop(&mut self) {
        if let Some((view, generation)) = &self.view {
            view.change(*generation, HashMap::clear);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn skus(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hit_then_miss_after_expiry() {
        let t0 = Instant::now();
        let mut cache = SearchCache::new(10);
        assert!(cache.get("k", t0).is_none(), "miss on empty");
        cache.insert("k".into(), vec![1, 2], skus(&["a"]), MIN, t0);
        assert_eq!(*cache.get("k", t0 + MIN / 2).unwrap(), vec![1, 2]);
        assert!(cache.get("k", t0 + MIN).is_none(), "expired at exactly ttl");
        assert!(cache.is_empty(), "expired entry dropped on read");
        assert_eq!(cache.invalidate_sku("a"), 0, "its sku index went with it");
    }

    #[test]
    fn insert_replaces_and_reindexes() {
        let t0 = Instant::now();
        let mut cache = SearchCache::new(10);
        cache.insert("k".into(), 1, skus(&["a"]), MIN, t0);
        cache.insert("k".into(), 2, skus(&["b"]), MIN, t0);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.invalidate_sku("a"), 0);
        assert_eq!(*cache.get("k", t0).unwrap(), 2);
    }

    #[test]
    fn capacity_is_a_hard_bound_evicting_expired_first_then_lru() {
        let t0 = Instant::now();
        let mut cache = SearchCache::new(3);
        cache.insert("short".into(), 0, skus(&[]), Duration::from_secs(1), t0);
        cache.insert("a".into(), 1, skus(&[]), MIN, t0);
        cache.insert("b".into(), 2, skus(&[]), MIN, t0);
        let t1 = t0 + Duration::from_secs(2);
        cache.insert("c".into(), 3, skus(&[]), MIN, t1);
        assert_eq!(cache.len(), 3);
        assert!(
            cache.get("a", t1).is_some(),
            "expired `short` went first, not `a`"
        );
        cache.get("a", t1); // touch a: b is now least recently used
        cache.insert("d".into(), 4, skus(&[]), MIN, t1);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("b", t1).is_none(), "LRU evicted");
        for k in ["a", "c", "d"] {
            assert!(cache.get(k, t1).is_some(), "{k} kept");
        }
        for i in 0..100 {
            cache.insert(format!("k{i}"), i, skus(&["x"]), MIN, t1);
            assert!(cache.len() <= 3);
        }
        assert_eq!(
            cache.invalidate_sku("x"),
            3,
            "index tracks only live entries"
        );
    }

    #[test]
    fn invalidate_sku_drops_every_result_holding_it() {
        let t0 = Instant::now();
        let mut cache = SearchCache::new(10);
        cache.insert(
            "lisbon-may".into(),
            "r1",
            skus(&["hotel:lisbon:h1:double", "hotel:lisbon:h2:suite"]),
            MIN,
            t0,
        );
        cache.insert(
            "alfama-may".into(),
            "r2",
            skus(&["hotel:lisbon:h1:double"]),
            MIN,
            t0,
        );
        cache.insert(
            "paris-may".into(),
            "r3",
            skus(&["hotel:paris:h1:double"]),
            MIN,
            t0,
        );
        assert_eq!(cache.invalidate_sku("hotel:lisbon:h1:double"), 2);
        assert!(cache.get("lisbon-may", t0).is_none());
        assert!(cache.get("alfama-may", t0).is_none());
        assert!(cache.get("paris-may", t0).is_some());
        assert_eq!(
            cache.invalidate_sku("hotel:lisbon:h2:suite"),
            0,
            "no stale index entries"
        );
    }

    #[test]
    fn config_defaults_and_validation() {
        let config = SearchCacheConfig::default();
        assert!(config.validate().is_ok());
        assert_eq!(config.capacity, DEFAULT_CACHE_CAPACITY);
        let parsed: SearchCacheConfig = serde_json::from_str(
            r#"{"capacity": 5, "ttl_table": [{"max_days_until_travel": 0, "ttl_secs": 10}]}"#,
        )
        .unwrap();
        assert!(parsed.validate().is_ok());
        let too_big = SearchCacheConfig {
            capacity: MAX_CACHE_CAPACITY + 1,
            ..Default::default()
        };
        assert_eq!(too_big.validate().unwrap_err().key, "capacity");
        let empty = SearchCacheConfig {
            ttl_table: vec![],
            ..Default::default()
        };
        assert_eq!(empty.validate().unwrap_err().key, "ttl_table");
    }

    #[test]
    fn zero_capacity_or_ttl_stores_nothing() {
        let t0 = Instant::now();
        let mut off = SearchCache::new(0);
        off.insert("k".into(), 1, skus(&[]), MIN, t0);
        assert!(off.get("k", t0).is_none());
        let mut cache = SearchCache::new(5);
        cache.insert("k".into(), 1, skus(&[]), Duration::ZERO, t0);
        assert!(cache.is_empty());
        cache.insert("k".into(), 1, skus(&[]), MIN, t0);
        assert_eq!(cache.purge_expired(t0 + MIN * 2), 1);
    }

    fn viewed(capacity: usize) -> (SearchCache<u32>, Arc<CacheView<u32>>) {
        let view = Arc::new(CacheView::new());
        (SearchCache::with_view(capacity, view.clone()), view)
    }

    #[test]
    fn the_view_follows_every_change_of_its_cache() {
        let t0 = Instant::now();
        let (mut cache, view) = viewed(10);
        assert!(view.get("k", t0).is_none());
        cache.insert("k".into(), 1, skus(&["a"]), MIN, t0);
        cache.insert("j".into(), 2, skus(&["b"]), MIN, t0);
        assert_eq!(*view.get("k", t0).unwrap().value(), 1);
        // Replaced: the view shows the new value at once.
        cache.insert("k".into(), 3, skus(&["a"]), MIN, t0);
        assert_eq!(*view.get("k", t0).unwrap().value(), 3);
        // Invalidated: gone from the view when the call returns.
        assert_eq!(cache.invalidate_sku("a"), 1);
        assert!(view.get("k", t0).is_none());
        assert!(cache.remove("j"));
        assert!(view.is_empty());
    }

    #[test]
    fn the_view_never_answers_an_expired_entry() {
        let t0 = Instant::now();
        let (mut cache, view) = viewed(10);
        cache.insert("k".into(), 1, skus(&[]), Duration::from_secs(5), t0);
        assert!(view.get("k", t0 + Duration::from_millis(4_999)).is_some());
        // Still held (nobody purged it), but past its expiry: not an answer.
        assert!(view.get("k", t0 + Duration::from_secs(5)).is_none());
        assert_eq!(view.len(), 1);
        // The owner's read drops it, from the view too.
        assert!(cache.get("k", t0 + Duration::from_secs(5)).is_none());
        assert!(view.is_empty());
        cache.insert("p".into(), 1, skus(&[]), Duration::from_secs(5), t0);
        assert_eq!(cache.purge_expired(t0 + MIN), 1);
        assert!(view.is_empty(), "purged from the view");
    }

    #[test]
    fn hits_in_the_view_count_as_uses_when_evicting() {
        let t0 = Instant::now();
        let (mut cache, view) = viewed(3);
        for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
            cache.insert(k.into(), v, skus(&[]), MIN, t0);
        }
        // Only the view sees `a` used: the owner filed it oldest.
        assert!(view.get("a", t0).is_some());
        cache.insert("d".into(), 4, skus(&[]), MIN, t0);
        assert!(view.holds("a"), "used through the view, so kept");
        assert!(
            !view.holds("b") && cache.get("b", t0).is_none(),
            "b was LRU"
        );
        // Uses by the owner and through the view are on one clock.
        assert!(cache.get("c", t0).is_some());
        assert!(view.get("a", t0).is_some());
        cache.insert("e".into(), 5, skus(&[]), MIN, t0);
        assert!(!view.holds("d"), "d, used least recently, went");
        for k in ["a", "c", "e"] {
            assert!(view.holds(k), "{k} kept");
        }
    }

    #[test]
    fn a_superseded_cache_no_longer_writes_the_view_and_a_dropped_one_empties_it() {
        let t0 = Instant::now();
        let view = Arc::new(CacheView::new());
        let mut old = SearchCache::with_view(10, view.clone());
        old.insert("k".into(), 1, skus(&["a"]), MIN, t0);
        assert!(view.holds("k"));
        // A restarted owner attaches a fresh cache: the view starts empty.
        let mut fresh = SearchCache::with_view(10, view.clone());
        assert!(view.is_empty());
        fresh.insert("j".into(), 2, skus(&[]), MIN, t0);
        // The old cache, dropped late, touches nothing.
        old.insert("x".into(), 3, skus(&[]), MIN, t0);
        drop(old);
        assert!(view.holds("j") && !view.holds("x"));
        drop(fresh);
        assert!(
            view.is_empty(),
            "nothing outlives the cache that could invalidate it"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u64, u8),
        OwnerGet(u8),
        ViewGet(u8),
        Invalidate(u8),
        Advance(u64),
        Purge,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0u8..6, 1u64..5, 0u8..3).prop_map(|(k, t, s)| Op::Insert(k, t, s)),
            2 => (0u8..6).prop_map(Op::OwnerGet),
            3 => (0u8..6).prop_map(Op::ViewGet),
            1 => (0u8..3).prop_map(Op::Invalidate),
            1 => (0u64..3).prop_map(Op::Advance),
            1 => Just(Op::Purge),
        ]
    }

    proptest::proptest! {
        /// Against a plain model of the rules (TTL, LRU over every use, SKU invalidation),
        /// the cache holds exactly the model's entries, the view exactly the cache's, and
        /// the view answers only what is fresh.
        #[test]
        fn cache_and_view_follow_the_model(ops in proptest::collection::vec(op(), 1..80)) {
            const CAP: usize = 3;
            let t0 = Instant::now();
            let mut now = t0;
            let (mut cache, view) = viewed(CAP);
            // key -> (expires_at, last use, sku)
            let mut model: HashMap<String, (Instant, u64, u8)> = HashMap::new();
            let mut seq = 0u64;
            for op in ops {
                match op {
                    Op::Insert(k, ttl, sku) => {
                        let key = format!("k{k}");
                        model.remove(&key);
                        model.retain(|_, e| e.0 > now);
                        while model.len() >= CAP {
                            let lru = model.iter().min_by_key(|(_, e)| e.1).unwrap().0.clone();
                            model.remove(&lru);
                        }
                        seq += 1;
                        let ttl = Duration::from_secs(ttl);
                        model.insert(key.clone(), (now + ttl, seq, sku));
                        cache.insert(key, u32::from(k), vec![format!("s{sku}")], ttl, now);
                    }
                    Op::OwnerGet(k) => {
                        let key = format!("k{k}");
                        let want = match model.get_mut(&key) {
                            Some(e) if now >= e.0 => { model.remove(&key); false }
                            Some(e) => { seq += 1; e.1 = seq; true }
                            None => false,
                        };
                        proptest::prop_assert_eq!(cache.get(&key, now).is_some(), want);
                    }
                    Op::ViewGet(k) => {
                        let key = format!("k{k}");
                        let want = match model.get_mut(&key) {
                            Some(e) if now < e.0 => { seq += 1; e.1 = seq; true }
                            _ => false,
                        };
                        let got = view.get(&key, now);
                        if let Some(hit) = &got {
                            proptest::prop_assert!(now < hit.expires_at(), "expired served");
                        }
                        proptest::prop_assert_eq!(got.is_some(), want);
                    }
                    Op::Invalidate(sku) => {
                        let before = model.len();
                        model.retain(|_, e| e.2 != sku);
                        let n = cache.invalidate_sku(&format!("s{sku}"));
                        proptest::prop_assert_eq!(n, before - model.len());
                    }
                    Op::Advance(secs) => now += Duration::from_secs(secs),
                    Op::Purge => {
                        model.retain(|_, e| e.0 > now);
                        cache.purge_expired(now);
                    }
                }
                proptest::prop_assert!(view.len() <= CAP);
                proptest::prop_assert_eq!(cache.len(), model.len());
                proptest::prop_assert_eq!(view.len(), model.len());
                for key in model.keys() {
                    proptest::prop_assert!(view.holds(key), "{} missing from the view", key);
                }
            }
        }
    }
}
