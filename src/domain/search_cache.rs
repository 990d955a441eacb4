//! A bounded TTL cache of merged search results, keyed by the normalized query key, with an
//! index from SKU to keys so a booking can drop every cached result that holds its SKU.
//!
//! The clock is passed in. When full, an insert first drops expired entries, then the least
//! recently used ones, so the cache never holds more than its capacity.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
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

#[derive(Debug)]
struct Entry<V> {
    value: Arc<V>,
    skus: Vec<String>,
    expires_at: Instant,
    /// Recency stamp; the smallest live stamp is the least recently used entry.
    used: u64,
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
    clock: u64,
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
            clock: 0,
        }
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
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Arc<V>> {
        let expired = now >= self.entries.get(key)?.expires_at;
        if expired {
            self.remove(key);
            return None;
        }
        let used = self.tick();
        let entry = self.entries.get_mut(key)?;
        self.by_use.remove(&entry.used);
        entry.used = used;
        self.by_use.insert(used, key.to_string());
        Some(Arc::clone(&entry.value))
    }

    /// Caches `value` under `key` for `ttl`, indexed by the SKUs it holds; replaces any
    /// previous entry for the key. A zero TTL or capacity stores nothing.
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
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
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
        let used = self.tick();
        let expires_at = now + ttl;
        self.by_use.insert(used, key.clone());
        self.by_expiry.insert((expires_at, key.clone()));
        self.entries.insert(
            key,
            Entry {
                value: Arc::new(value),
                skus,
                expires_at,
                used,
            },
        );
    }

    /// Drops every cached result holding `sku`; returns how many were dropped.
    pub fn invalidate_sku(&mut self, sku: &str) -> usize {
        let keys = self.by_sku.remove(sku).unwrap_or_default();
        for key in &keys {
            self.remove(key);
        }
        keys.len()
    }

    /// Drops the entry under `key`, if any.
    pub fn remove(&mut self, key: &str) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        self.by_use.remove(&entry.used);
        self.by_expiry.remove(&(entry.expires_at, key.to_string()));
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

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
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
}
