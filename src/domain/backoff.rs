//! Exponential backoff with "equal jitter", the one rule behind every retry and restart
//! delay in wayfare (supervisor restarts, seller search retries, saga step retries).

use std::time::Duration;

/// Delay before retry number `attempt` (0-based): `base * 2^attempt`, capped at `max`; half
/// of it is fixed and the other half scaled by `jitter` in `[0, 1]`, so many retrying
/// callers spread out but never retry at once.
pub fn equal_jitter(base: Duration, max: Duration, attempt: u32, jitter: f64) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
    let capped = base.saturating_mul(factor).min(max);
    let half = capped / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters_within_bounds() {
        let (b, m) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(equal_jitter(b, m, 0, 0.0), Duration::from_millis(50));
        assert_eq!(equal_jitter(b, m, 0, 1.0), Duration::from_millis(100));
        assert_eq!(equal_jitter(b, m, 2, 1.0), Duration::from_millis(400));
        assert_eq!(equal_jitter(b, m, 10, 1.0), Duration::from_secs(1));
        assert_eq!(
            equal_jitter(b, m, u32::MAX, 0.5),
            Duration::from_millis(750)
        );
        assert_eq!(
            equal_jitter(b, m, 3, 7.0),
            Duration::from_millis(800),
            "jitter clamped"
        );
    }
}
