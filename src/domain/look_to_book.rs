//! Look-to-book meter: searches sent to a seller versus bookings made with it, over a
//! sliding time window, with the clock passed in.
//!
//! Sellers charge or cut off partners whose searches vastly outnumber their bookings. Past
//! the configured ratio, the `SellerAdapter` serves searches from cache or skips them with
//! status `throttled`. Counts are kept in a fixed number of time buckets, so memory stays
//! constant however many searches arrive.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::breaker::InvalidSetting;

/// Buckets per window: the window slides in steps of `window / BUCKETS`.
pub const BUCKETS: u32 = 60;

/// Look-to-book settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LookToBookConfig {
    /// Searches allowed per booking within the window. Default 1000.
    pub max_searches_per_booking: u32,
    /// Window length in seconds. Default 3600.
    pub window_secs: u64,
    /// Searches within the window before any throttling, so a quiet seller or a fresh start
    /// is never throttled. Default 100.
    pub min_searches: u32,
}

impl Default for LookToBookConfig {
    fn default() -> Self {
        LookToBookConfig {
            max_searches_per_booking: 1_000,
            window_secs: 3_600,
            min_searches: 100,
        }
    }
}

impl LookToBookConfig {
    /// Checks every key, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.max_searches_per_booking == 0 {
            return Err(InvalidSetting::new(
                "max_searches_per_booking",
                "must be positive",
            ));
        }
        if self.window_secs < u64::from(BUCKETS) || self.window_secs > 7 * 24 * 3_600 {
            return Err(InvalidSetting::new(
                "window_secs",
                format!("must be within {BUCKETS}..=604800"),
            ));
        }
        Ok(())
    }
}

/// Counts within the window, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LookToBookCounts {
    /// Searches sent.
    pub searches: u64,
    /// Bookings made.
    pub bookings: u64,
}

/// The meter; see the module docs.
#[derive(Debug)]
pub struct LookToBookMeter {
    config: LookToBookConfig,
    origin: Instant,
    bucket_width: Duration,
    /// `(bucket index, searches, bookings)`, oldest first, at most `BUCKETS` long.
    buckets: VecDeque<(u64, u64, u64)>,
}

impl LookToBookMeter {
    /// An empty meter whose buckets are measured from `now`.
    pub fn new(config: LookToBookConfig, now: Instant) -> Self {
        let window = Duration::from_secs(config.window_secs.max(u64::from(BUCKETS)));
        LookToBookMeter {
            bucket_width: window / BUCKETS,
            config,
            origin: now,
            buckets: VecDeque::with_capacity(BUCKETS as usize),
        }
    }

    /// Whether a search may be sent at `now`: always below `min_searches`, then only while
    /// searches stay within `max_searches_per_booking` per booking (a window without bookings
    /// counts as one booking, so a new seller gets a first allowance).
    pub fn allow_search(&mut self, now: Instant) -> bool {
        let counts = self.counts(now);
        if counts.searches < u64::from(self.config.min_searches) {
            return true;
        }
        let allowance =
            u64::from(self.config.max_searches_per_booking).saturating_mul(counts.bookings.max(1));
        counts.searches < allowance
    }

    /// Records a search sent at `now`.
    pub fn record_search(&mut self, now: Instant) {
        self.bucket(now).1 += 1;
    }

    /// Records a booking made at `now`.
    pub fn record_booking(&mut self, now: Instant) {
        self.bucket(now).2 += 1;
    }

    /// Searches and bookings within the window ending at `now`.
    pub fn counts(&mut self, now: Instant) -> LookToBookCounts {
        self.expire(now);
        let (searches, bookings) = self
            .buckets
            .iter()
            .fold((0u64, 0u64), |(s, b), (_, bs, bb)| (s + bs, b + bb));
        LookToBookCounts { searches, bookings }
    }

    fn index(&self, now: Instant) -> u64 {
        // A clock reading before the origin lands in bucket 0 rather than panicking.
        let since = now.saturating_duration_since(self.origin);
        (since.as_nanos() / self.bucket_width.as_nanos().max(1)) as u64
    }

    fn expire(&mut self, now: Instant) {
        let current = self.index(now);
        while let Some((i, _, _)) = self.buckets.front() {
            if *i + u64::from(BUCKETS) <= current {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    fn bucket(&mut self, now: Instant) -> &mut (u64, u64, u64) {
        self.expire(now);
        let current = self.index(now);
        let is_current = matches!(self.buckets.back(), Some((i, _, _)) if *i >= current);
        if !is_current {
            self.buckets.push_back((current, 0, 0));
        }
        // Invariant: just ensured non-empty.
        self.buckets.back_mut().expect("bucket present")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LookToBookConfig {
        LookToBookConfig {
            max_searches_per_booking: 10,
            window_secs: 60,
            min_searches: 5,
        }
    }

    fn search_until_throttled(m: &mut LookToBookMeter, now: Instant, limit: u32) -> u32 {
        let mut sent = 0;
        while sent < limit && m.allow_search(now) {
            m.record_search(now);
            sent += 1;
        }
        sent
    }

    #[test]
    fn validates_keys() {
        assert!(LookToBookConfig::default().validate().is_ok());
        assert_eq!(
            LookToBookConfig {
                max_searches_per_booking: 0,
                ..config()
            }
            .validate()
            .unwrap_err()
            .key,
            "max_searches_per_booking"
        );
        assert_eq!(
            LookToBookConfig {
                window_secs: 1,
                ..config()
            }
            .validate()
            .unwrap_err()
            .key,
            "window_secs"
        );
    }

    #[test]
    fn throttles_past_the_ratio_without_bookings() {
        let now = Instant::now();
        let mut m = LookToBookMeter::new(config(), now);
        assert_eq!(
            search_until_throttled(&mut m, now, 1_000),
            10,
            "one booking's worth of allowance"
        );
        assert!(!m.allow_search(now));
    }

    #[test]
    fn bookings_raise_the_allowance() {
        let now = Instant::now();
        let mut m = LookToBookMeter::new(config(), now);
        search_until_throttled(&mut m, now, 1_000);
        m.record_booking(now);
        m.record_booking(now);
        m.record_booking(now);
        assert_eq!(
            search_until_throttled(&mut m, now, 1_000),
            20,
            "3 bookings allow 30 searches"
        );
        assert_eq!(
            m.counts(now),
            LookToBookCounts {
                searches: 30,
                bookings: 3
            }
        );
    }

    #[test]
    fn min_searches_protects_a_quiet_seller() {
        let now = Instant::now();
        let mut m = LookToBookMeter::new(
            LookToBookConfig {
                max_searches_per_booking: 1,
                min_searches: 5,
                ..config()
            },
            now,
        );
        assert_eq!(search_until_throttled(&mut m, now, 1_000), 5);
    }

    #[test]
    fn window_slides_and_old_searches_expire() {
        let t0 = Instant::now();
        let mut m = LookToBookMeter::new(config(), t0);
        search_until_throttled(&mut m, t0, 1_000);
        assert!(!m.allow_search(t0 + Duration::from_secs(59)));
        assert!(m.allow_search(t0 + Duration::from_secs(61)));
        assert_eq!(m.counts(t0 + Duration::from_secs(61)).searches, 0);
    }

    #[test]
    fn bucket_memory_stays_bounded() {
        let t0 = Instant::now();
        let mut m = LookToBookMeter::new(config(), t0);
        for s in 0..10_000u64 {
            m.record_search(t0 + Duration::from_millis(s * 37));
        }
        assert!(m.buckets.len() <= BUCKETS as usize);
        let earlier = t0.checked_sub(Duration::from_secs(1)).unwrap_or(t0);
        m.record_booking(earlier); // clock before origin: no panic
    }
}
