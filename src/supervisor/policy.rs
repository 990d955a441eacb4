//! Restart policy as plain rules: which children a failure affects, whether a child is
//! restarted at all, the restart-intensity window and the backoff between restarts.
//!
//! Kept free of tasks and timers so every rule is unit-tested with a hand-made clock.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When a child that exited is restarted (Erlang/OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum Restart {
    /// Always restarted, whether it crashed or stopped on its own.
    Permanent,
    /// Restarted only after an abnormal exit (a panic or a failure).
    Transient,
    /// Never restarted.
    Temporary,
}

impl Restart {
    /// Whether a child of this type is restarted after `exit`.
    pub fn restarts_after(self, exit: &Exit) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => !exit.is_normal(),
            Restart::Temporary => false,
        }
    }
}

/// Which siblings are restarted together with a failed child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum Strategy {
    /// Only the failed child.
    OneForOne,
    /// Every child: they depend on each other.
    OneForAll,
    /// The failed child and every child started after it.
    RestForOne,
}

impl Strategy {
    /// Indices of the children (out of `count`) restarted when child `failed` fails.
    pub fn affected(self, failed: usize, count: usize) -> Range<usize> {
        match self {
            Strategy::OneForOne => failed..failed + 1,
            Strategy::OneForAll => 0..count,
            Strategy::RestForOne => failed..count,
        }
    }
}

/// How a child instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It stopped on its own or was asked to.
    Normal,
    /// A handler panicked; the message is the panic payload.
    Panicked(String),
    /// It failed without panicking (a nested supervisor that gave up, a factory error).
    Failed(String),
    /// It did not stop within its shutdown timeout and was aborted.
    Killed,
}

impl Exit {
    /// True for an orderly stop.
    pub fn is_normal(&self) -> bool {
        matches!(self, Exit::Normal)
    }

    /// A one-line reason for logs and snapshots.
    pub fn reason(&self) -> String {
        match self {
            Exit::Normal => "stopped".to_owned(),
            Exit::Panicked(msg) => format!("panicked: {msg}"),
            Exit::Failed(msg) => format!("failed: {msg}"),
            Exit::Killed => "killed after its shutdown timeout".to_owned(),
        }
    }
}

/// Restart limits and pacing of one supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// At most this many restarts within `within`; one more and the supervisor gives up.
    pub max_restarts: u32,
    /// The sliding window of the intensity check.
    pub within: Duration,
    /// First backoff before restarting a child that failed.
    pub backoff_min: Duration,
    /// Cap of the exponential backoff.
    pub backoff_max: Duration,
    /// A child quiet for this long has its backoff reset to `backoff_min`.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            within: Duration::from_secs(10),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(2),
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Restarts seen within the intensity window.
#[derive(Debug, Default)]
pub struct IntensityWindow {
    restarts: VecDeque<Instant>,
}

impl IntensityWindow {
    /// Records a restart at `now`; false when it exceeds `max_restarts` within `within`.
    pub fn admit(&mut self, now: Instant, policy: &RestartPolicy) -> bool {
        while let Some(first) = self.restarts.front() {
            if now.saturating_duration_since(*first) > policy.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() <= policy.max_restarts as usize
    }

    /// Restarts currently inside the window.
    pub fn len(&self) -> usize {
        self.restarts.len()
    }

    /// True when no restart is inside the window.
    pub fn is_empty(&self) -> bool {
        self.restarts.is_empty()
    }
}

/// Delay before the `attempt`-th consecutive restart of a child (0-based), with "equal
/// jitter": half the exponential delay is fixed, the other half scaled by `jitter` in
/// `[0, 1)`, so restarts of many children spread out but never collapse to zero.
pub fn backoff_delay(attempt: u32, policy: &RestartPolicy, jitter: f64) -> Duration {
    crate::domain::backoff::equal_jitter(policy.backoff_min, policy.backoff_max, attempt, jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_pick_the_right_siblings() {
        assert_eq!(Strategy::OneForOne.affected(1, 4), 1..2);
        assert_eq!(Strategy::OneForAll.affected(1, 4), 0..4);
        assert_eq!(Strategy::RestForOne.affected(1, 4), 1..4);
    }

    #[test]
    fn restart_types_follow_otp() {
        let crash = Exit::Panicked("boom".into());
        assert!(Restart::Permanent.restarts_after(&Exit::Normal));
        assert!(Restart::Permanent.restarts_after(&crash));
        assert!(!Restart::Transient.restarts_after(&Exit::Normal));
        assert!(Restart::Transient.restarts_after(&crash));
        assert!(!Restart::Temporary.restarts_after(&crash));
    }

    #[test]
    fn intensity_window_slides() {
        let policy = RestartPolicy {
            max_restarts: 2,
            within: Duration::from_secs(10),
            ..RestartPolicy::default()
        };
        let t0 = Instant::now();
        let mut w = IntensityWindow::default();
        assert!(w.admit(t0, &policy));
        assert!(w.admit(t0 + Duration::from_secs(1), &policy));
        assert!(!w.admit(t0 + Duration::from_secs(2), &policy));
        // Far later, the old restarts have left the window.
        let mut w = IntensityWindow::default();
        assert!(w.admit(t0, &policy));
        assert!(w.admit(t0 + Duration::from_secs(1), &policy));
        assert!(w.admit(t0 + Duration::from_secs(30), &policy));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        let p = RestartPolicy {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..RestartPolicy::default()
        };
        assert_eq!(backoff_delay(0, &p, 0.0), Duration::from_millis(50));
        assert_eq!(backoff_delay(0, &p, 1.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(2, &p, 1.0), Duration::from_millis(400));
        assert_eq!(backoff_delay(10, &p, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(u32::MAX, &p, 0.5), Duration::from_millis(750));
    }
}
