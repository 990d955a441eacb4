//! A bounded latency histogram for percentiles (p50, p99) of seller calls, in the manner of
//! HdrHistogram: log-linear buckets, so every recorded value lands in a bucket at most
//! 1/[`SUB_BUCKETS`] (12.5%) wider than the value, from 1 µs to about two minutes, in a
//! fixed [`BUCKETS`] counters whatever the traffic.
//!
//! [`LatencyHistogram`] is shared and lock-free (one atomic add per call); readers take
//! [`LatencyCounts`] (a plain copy) and subtract an earlier copy to get the percentiles of
//! a recent window rather than of the whole uptime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per power of two: the resolution (a bucket spans at most 1/8 of its values).
pub const SUB_BUCKETS: u64 = 8;
/// Values at or above this many microseconds (about 134 s) share the last bucket.
pub const MAX_TRACKED_US: u64 = (1 << 27) - 1;
/// Number of buckets: exact ones below [`SUB_BUCKETS`] µs, then [`SUB_BUCKETS`] per
/// power of two up to [`MAX_TRACKED_US`].
pub const BUCKETS: usize = 200;

/// The bucket of a value in microseconds.
fn index(us: u64) -> usize {
    let us = us.min(MAX_TRACKED_US);
    if us < SUB_BUCKETS {
        return us as usize;
    }
    let exp = 63 - u64::from(us.leading_zeros()); // >= 3
    let shift = exp - 3;
    let sub = (us >> shift) - SUB_BUCKETS; // 0..8
    (SUB_BUCKETS + shift * SUB_BUCKETS + sub) as usize
}

/// The values a bucket holds, in microseconds: `lower..upper`.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB_BUCKETS {
        return (i, i + 1);
    }
    let shift = (i - SUB_BUCKETS) / SUB_BUCKETS;
    let sub = (i - SUB_BUCKETS) % SUB_BUCKETS;
    let lower = (SUB_BUCKETS + sub) << shift;
    (lower, lower + (1 << shift))
}

/// A shared histogram; see the module docs.
#[derive(Debug)]
pub struct LatencyHistogram {
    counts: [AtomicU64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyHistogram {
    /// Counts one call that took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.counts[index(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counts so far.
    pub fn counts(&self) -> LatencyCounts {
        LatencyCounts {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// Counts per bucket at one moment (or of a window, after [`LatencyCounts::since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyCounts {
    counts: Vec<u64>,
}

impl Default for LatencyCounts {
    fn default() -> Self {
        LatencyCounts {
            counts: vec![0; BUCKETS],
        }
    }
}

impl LatencyCounts {
    /// The calls counted after `earlier` was taken (counts only grow, so this is the
    /// window between the two copies; a counter that went backwards counts as zero).
    pub fn since(&self, earlier: &LatencyCounts) -> LatencyCounts {
        LatencyCounts {
            counts: self
                .counts
                .iter()
                .zip(earlier.counts.iter().chain(std::iter::repeat(&0)))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
        }
    }

    /// Calls counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The latency at or under which a share `q` (0..=1) of the calls finished, rounded up
    /// to its bucket's upper bound (so never under-reported, over-reported by at most
    /// 12.5% + 1 µs); `None` without calls.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // The rank of the wanted call, 1-based: the ceil keeps p99 of 100 calls at the 99th.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(bounds(i).1));
            }
        }
        Some(Duration::from_micros(MAX_TRACKED_US + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_range_without_gaps_and_stay_narrow() {
        assert_eq!(index(MAX_TRACKED_US), BUCKETS - 1);
        let mut expected_lower = 0;
        for i in 0..BUCKETS {
            let (lower, upper) = bounds(i);
            assert_eq!(
                lower,
                expected_lower,
                "bucket {i} starts where {} ended",
                i - 1
            );
            assert!(upper > lower);
            // Width at most 1/8 of the smallest value held (exact buckets below 8 µs).
            assert!(lower < SUB_BUCKETS || (upper - lower) * SUB_BUCKETS <= lower);
            assert_eq!(index(lower), i);
            assert_eq!(index(upper - 1), i);
            expected_lower = upper;
        }
        assert_eq!(expected_lower, MAX_TRACKED_US + 1);
    }

    #[test]
    fn values_past_the_range_land_in_the_last_bucket() {
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        let h = LatencyHistogram::default();
        h.record(Duration::from_secs(3600));
        assert_eq!(h.counts().total(), 1);
        assert_eq!(
            h.counts().quantile(0.5),
            Some(Duration::from_micros(MAX_TRACKED_US + 1))
        );
    }

    #[test]
    fn quantiles_are_within_one_bucket_of_the_truth() {
        let h = LatencyHistogram::default();
        // 1..=1000 ms, one call each: p50 is 500 ms, p99 990 ms.
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let c = h.counts();
        assert_eq!(c.total(), 1000);
        for (q, truth_ms) in [(0.5, 500u64), (0.99, 990), (1.0, 1000), (0.0, 1)] {
            let got = c.quantile(q).unwrap().as_micros() as u64;
            let truth = truth_ms * 1000;
            assert!(got > truth, "q{q}: {got} µs not above {truth}");
            assert!(
                got <= truth + truth / 8 + 1,
                "q{q}: {got} µs more than 12.5% above {truth}"
            );
        }
    }

    #[test]
    fn empty_has_no_quantile() {
        assert_eq!(LatencyCounts::default().quantile(0.99), None);
        assert_eq!(LatencyHistogram::default().counts().quantile(0.5), None);
    }

    #[test]
    fn a_window_forgets_what_came_before_it() {
        let h = LatencyHistogram::default();
        for _ in 0..100 {
            h.record(Duration::from_secs(2));
        }
        let before = h.counts();
        for _ in 0..10 {
            h.record(Duration::from_millis(3));
        }
        let window = h.counts().since(&before);
        assert_eq!(window.total(), 10);
        let p99 = window.quantile(0.99).unwrap();
        assert!(p99 > Duration::from_millis(3) && p99 < Duration::from_millis(4));
        // The other way round (a counter reset) is empty, not negative.
        assert_eq!(before.since(&h.counts()).total(), 0);
    }
}
