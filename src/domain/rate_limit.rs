//! Token buckets keyed by client, in a table of bounded size: the rules behind `[limits]`
//! (`http::limits` chooses the key and answers 429).
//!
//! Each bucket is a GCRA cell (the "virtual scheduling" form of a token bucket): it keeps
//! one instant, the theoretical arrival time `tat` of the next request. A request at
//! `now` is admitted when `tat <= now + tolerance` (the tolerance is `burst - 1`
//! emission intervals) and then pushes `tat` on by one interval; otherwise it must wait
//! `tat - tolerance - now`. A bucket whose `tat` is in the past is full, and forgetting
//! it changes nothing.
//!
//! The table holds at most `max_tracked` buckets. Past that, it first forgets full
//! buckets; if it is still over, it forgets the least recently used eighth of its buckets
//! (a refused request counts as a use). It never forgets everything: a client that keeps
//! calling stays tracked, so an exhausted bucket cannot be refilled by spraying other keys
//! until those keys alone outnumber the table, and even then only the quietest go first.
//! Evicting an eighth at a time keeps the cost of eviction (a pass over the table) at a
//! constant per request on average.
//!
//! Time is a [`Duration`] since an epoch the caller picks (a monotonic clock's start), so
//! the rules are tested with plain numbers.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// How fast a bucket refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// One token comes back every `interval`.
    pub interval: Duration,
    /// Tokens a full bucket holds (at least 1).
    pub burst: u32,
}

impl Quota {
    /// `per_second` tokens a second (fractions allowed, positive), up to `burst`.
    pub fn per_second(per_second: f64, burst: u32) -> Quota {
        let interval = Duration::try_from_secs_f64(1.0 / per_second)
            .unwrap_or(Duration::MAX)
            .max(Duration::from_nanos(1));
        Quota {
            interval,
            burst: burst.max(1),
        }
    }

    /// How far ahead of now a bucket's `tat` may be and still admit a request.
    fn tolerance(&self) -> Duration {
        self.interval.saturating_mul(self.burst - 1)
    }
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    /// Theoretical arrival time of the next request.
    tat: Duration,
    /// The table's use counter at this bucket's last request.
    used: u64,
}

/// A bounded table of buckets keyed by `K`.
#[derive(Debug)]
pub struct BucketTable<K> {
    quota: Quota,
    max_tracked: usize,
    cells: HashMap<K, Cell>,
    uses: u64,
}

impl<K: Hash + Eq + Clone> BucketTable<K> {
    /// An empty table of buckets with `quota`, holding at most `max_tracked` (at least 1).
    pub fn new(quota: Quota, max_tracked: usize) -> Self {
        BucketTable {
            quota,
            max_tracked: max_tracked.max(1),
            cells: HashMap::new(),
            uses: 0,
        }
    }

    /// Takes a token from `key`'s bucket at `now`; when it is empty, how long until it
    /// holds one.
    pub fn check(&mut self, key: &K, now: Duration) -> Result<(), Duration> {
        self.uses += 1;
        let used = self.uses;
        let tolerance = self.quota.tolerance();
        if let Some(cell) = self.cells.get_mut(key) {
            cell.used = used;
            let tat = cell.tat.max(now);
            let allowed_from = tat.saturating_sub(tolerance);
            if allowed_from > now {
                return Err(allowed_from - now);
            }
            cell.tat = tat.saturating_add(self.quota.interval);
            return Ok(());
        }
        // A new bucket is full: the first request is always admitted.
        self.cells.insert(
            key.clone(),
            Cell {
                tat: now.saturating_add(self.quota.interval),
                used,
            },
        );
        if self.cells.len() > self.max_tracked {
            self.evict(now);
        }
        Ok(())
    }

    /// Buckets tracked now.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether no bucket is tracked.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Whether `key` has a bucket in the table.
    pub fn tracks(&self, key: &K) -> bool {
        self.cells.contains_key(key)
    }

    /// Forgets full buckets, then, while still over the bound, the least recently used
    /// eighth of the table.
    fn evict(&mut self, now: Duration) {
        self.cells.retain(|_, c| c.tat > now);
        if self.cells.len() <= self.max_tracked {
            return;
        }
        let keep = self.max_tracked - self.max_tracked / 8;
        let drop = self.cells.len().saturating_sub(keep).max(1);
        let mut uses: Vec<u64> = self.cells.values().map(|c| c.used).collect();
        let (_, cutoff, _) = uses.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        // Uses are distinct (one counter), so exactly `drop` buckets go.
        self.cells.retain(|_, c| c.used > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_and_refills_at_its_rate() {
        let mut t = BucketTable::new(Quota::per_second(2.0, 3), 100);
        for _ in 0..3 {
            assert_eq!(t.check(&1, ms(0)), Ok(()));
        }
        assert_eq!(t.check(&1, ms(0)), Err(ms(500)));
        assert_eq!(t.check(&2, ms(0)), Ok(()), "another key has its own bucket");
        assert_eq!(t.check(&1, ms(500)), Ok(()));
        assert!(t.check(&1, ms(500)).is_err());
        // Idle for long: full again, never more than the burst.
        for _ in 0..3 {
            assert_eq!(t.check(&1, ms(100_000)), Ok(()));
        }
        assert!(t.check(&1, ms(100_000)).is_err());
    }

    #[test]
    fn an_exhausted_bucket_survives_a_spray_of_new_keys() {
        let max = 1_000;
        let mut t = BucketTable::new(Quota::per_second(1.0, 5), max);
        let now = ms(0);
        for _ in 0..5 {
            t.check(&u32::MAX, now).unwrap();
        }
        for key in 0..50_000u32 {
            let _ = t.check(&key, now);
            // The attacker keeps knocking with its exhausted key between sprays.
            if key % 100 == 0 {
                assert!(t.check(&u32::MAX, now).is_err(), "refilled at key {key}");
            }
            assert!(t.len() <= max, "{} buckets", t.len());
        }
        assert!(t.tracks(&u32::MAX));
        assert!(t.check(&u32::MAX, now).is_err());
    }

    #[test]
    fn eviction_forgets_full_buckets_first_then_the_least_recently_used() {
        let mut t = BucketTable::new(Quota::per_second(1.0, 2), 8);
        // Keys 0..4 used long ago: full by now.
        for key in 0..4 {
            t.check(&key, ms(0)).unwrap();
        }
        // Keys 10..18 busy now.
        for key in 10..18 {
            t.check(&key, ms(10_000)).unwrap();
        }
        assert!(t.len() <= 8);
        for key in 0..4 {
            assert!(!t.tracks(&key), "full bucket {key} kept");
        }
        // All busy: one more evicts the least recently used, not everything.
        t.check(&10, ms(10_000)).unwrap();
        t.check(&99, ms(10_000)).unwrap();
        assert!(t.len() <= 8 && t.len() >= 7, "{}", t.len());
        assert!(t.tracks(&10), "recently used kept");
        assert!(t.tracks(&99));
        assert!(!t.tracks(&11), "least recently used dropped");
    }

    #[test]
    fn slow_quotas_and_extremes_do_not_overflow() {
        let q = Quota::per_second(0.001, 1);
        assert_eq!(q.interval, Duration::from_secs(1000));
        let mut t = BucketTable::new(q, 1);
        t.check(&1, ms(0)).unwrap();
        assert_eq!(t.check(&1, ms(0)), Err(Duration::from_secs(1000)));
        let q = Quota::per_second(f64::MIN_POSITIVE, u32::MAX);
        let mut t = BucketTable::new(q, 1);
        t.check(&1, Duration::MAX).unwrap();
        let _ = t.check(&1, Duration::MAX);
    }
}
