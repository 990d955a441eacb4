//! A circuit breaker as a plain struct with the clock passed in, so every transition is
//! tested without sleeping. A `SellerAdapter` owns one per seller.
//!
//! States: **closed** (calls flow; outcomes fill a count-based sliding window), **open**
//! (calls are refused until the open duration passes), **half-open** (a few probe calls are
//! let through; any bad probe reopens, all good probes close). The breaker trips when the
//! window holds at least `minimum_calls` outcomes and either the failure rate or the slow
//! call rate reaches its threshold. Defaults follow Hystrix.
//!
//! Permits are tokens: [`CircuitBreaker::try_acquire`] hands one out, and the caller gives it
//! back with [`CircuitBreaker::record`] or, if the call was cancelled, [`CircuitBreaker::release`]
//! so a half-open probe slot is never leaked. [`SharedCircuitBreaker`] wraps the breaker in
//! a mutex and returns an RAII [`PermitGuard`] that releases itself when dropped, for call
//! futures that may be dropped on timeout. Each permit remembers the breaker's epoch (bumped
//! on every transition), so a slow call started before a transition cannot skew the new state.
//!
//! [`BreakerTimeline`] keeps the last few transitions with wall-clock times, for operators.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// A configuration value that failed validation, naming its key.
///
/// Shared by the config structs of the search and seller modules; the top-level config
/// loader prefixes `key` with the section (see [`InvalidSetting::within`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{key}`: {problem}")]
pub struct InvalidSetting {
    /// Dotted key path, e.g. `failure_rate_percent` or `sellers.a.hang_rate`.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl InvalidSetting {
    /// An invalid `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        InvalidSetting {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// The same error with `section.` prepended to the key.
    pub fn within(self, section: &str) -> Self {
        InvalidSetting {
            key: format!("{section}.{}", self.key),
            problem: self.problem,
        }
    }

    /// Checks a probability or fraction is a number within `0..=1`.
    pub fn check_fraction(key: &str, value: f64) -> Result<(), InvalidSetting> {
        if (0.0..=1.0).contains(&value) {
            Ok(())
        } else {
            Err(InvalidSetting::new(
                key,
                format!("must be within 0..=1, got {value}"),
            ))
        }
    }
}

/// Breaker settings. Defaults after Hystrix: trip at 50% failures over the last 20 calls
/// (with at least 20 seen), stay open 5 s, then let one probe through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Number of most recent calls whose outcomes are kept. Default 20.
    pub window: u32,
    /// Calls the window must hold before rates are judged, so one early failure does not
    /// trip the breaker. Default 20.
    pub minimum_calls: u32,
    /// Trip when failures reach this share of the window, in percent. Default 50.
    pub failure_rate_percent: u8,
    /// A call taking at least this long counts as slow. Default 1000 ms.
    pub slow_call_ms: u64,
    /// Trip when slow calls reach this share of the window, in percent; 100 means "only
    /// when every call is slow". Default 100.
    pub slow_call_rate_percent: u8,
    /// How long the breaker stays open before probing. Default 5000 ms.
    pub open_ms: u64,
    /// Probe calls let through while half-open; all must succeed to close. Default 1.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: 20,
            minimum_calls: 20,
            failure_rate_percent: 50,
            slow_call_ms: 1_000,
            slow_call_rate_percent: 100,
            open_ms: 5_000,
            half_open_probes: 1,
        }
    }
}

/// Upper bound on the window: outcomes are kept per call.
pub const MAX_BREAKER_WINDOW: u32 = 10_000;

impl BreakerConfig {
    /// Checks every key, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.window == 0 || self.window > MAX_BREAKER_WINDOW {
            return Err(InvalidSetting::new(
                "window",
                format!("must be within 1..={MAX_BREAKER_WINDOW}"),
            ));
        }
        if self.minimum_calls == 0 || self.minimum_calls > self.window {
            return Err(InvalidSetting::new(
                "minimum_calls",
                "must be within 1..=window",
            ));
        }
        if self.failure_rate_percent == 0 || self.failure_rate_percent > 100 {
            return Err(InvalidSetting::new(
                "failure_rate_percent",
                "must be within 1..=100",
            ));
        }
        if self.slow_call_rate_percent == 0 || self.slow_call_rate_percent > 100 {
            return Err(InvalidSetting::new(
                "slow_call_rate_percent",
                "must be within 1..=100",
            ));
        }
        if self.slow_call_ms == 0 {
            return Err(InvalidSetting::new("slow_call_ms", "must be positive"));
        }
        if self.open_ms == 0 {
            return Err(InvalidSetting::new("open_ms", "must be positive"));
        }
        if self.half_open_probes == 0 || self.half_open_probes > 100 {
            return Err(InvalidSetting::new(
                "half_open_probes",
                "must be within 1..=100",
            ));
        }
        Ok(())
    }
}

/// The breaker's state as reported to health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probes are let through.
    HalfOpen,
}

/// How a permitted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// Answered (a business refusal is still a success for the breaker).
    Success,
    /// Error or timeout.
    Failure,
}

/// Permission for one call. Give it back with `record` or `release`.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit must be recorded or released, or a half-open slot leaks"]
pub struct Permit {
    epoch: u64,
}

/// A refused call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry after {retry_after:?}")]
pub struct BreakerOpen {
    /// Time until the breaker will let a probe through (zero when half-open probes are all
    /// in flight: retry once one reports).
    pub retry_after: Duration,
}

/// Numbers for health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: BreakerState,
    /// Outcomes in the window (closed state only).
    pub calls_in_window: u32,
    /// Failure share of the window, percent.
    pub failure_rate_percent: u8,
    /// Slow share of the window, percent.
    pub slow_rate_percent: u8,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, succeeded: u32 },
}

/// A circuit breaker; see the module docs.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
    /// `(failed, slow)` per recent call, oldest first; only used while closed.
    window: VecDeque<(bool, bool)>,
    epoch: u64,
}

impl CircuitBreaker {
    /// A closed breaker. `config` should have been validated; zero sizes are clamped to 1 so
    /// an unvalidated config cannot make the breaker divide by zero.
    pub fn new(mut config: BreakerConfig) -> Self {
        config.window = config.window.max(1);
        config.minimum_calls = config.minimum_calls.clamp(1, config.window);
        config.half_open_probes = config.half_open_probes.max(1);
        CircuitBreaker {
            window: VecDeque::with_capacity(config.window as usize),
            config,
            state: State::Closed,
            epoch: 0,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// State at `now`; an open breaker whose time is up reports half-open.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Numbers for health and metrics.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let (failure_rate_percent, slow_rate_percent) = self.rates();
        BreakerSnapshot {
            state: self.state(now),
            calls_in_window: self.window.len() as u32,
            failure_rate_percent,
            slow_rate_percent,
        }
    }

    /// Asks to make a call at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, BreakerOpen> {
        if let State::Open { until } = self.state {
            if now < until {
                return Err(BreakerOpen {
                    retry_after: until - now,
                });
            }
            self.transition(State::HalfOpen {
                in_flight: 0,
                succeeded: 0,
            });
        }
        let probes = self.config.half_open_probes;
        if let State::HalfOpen {
            in_flight,
            succeeded,
        } = &mut self.state
        {
            if *in_flight + *succeeded >= probes {
                return Err(BreakerOpen {
                    retry_after: Duration::ZERO,
                });
            }
            *in_flight += 1;
        }
        Ok(Permit { epoch: self.epoch })
    }

    /// Reports how a permitted call ended, `elapsed` after it started.
    pub fn record(
        &mut self,
        permit: Permit,
        outcome: CallOutcome,
        elapsed: Duration,
        now: Instant,
    ) {
        if permit.epoch != self.epoch {
            // Started under an earlier state; its result says nothing about this one.
            return;
        }
        let failed = outcome == CallOutcome::Failure;
        let slow = elapsed >= Duration::from_millis(self.config.slow_call_ms);
        match &mut self.state {
            State::Closed => {
                if self.window.len() == self.config.window as usize {
                    self.window.pop_front();
                }
                self.window.push_back((failed, slow));
                if self.should_trip() {
                    self.open(now);
                }
            }
            State::HalfOpen {
                in_flight,
                succeeded,
            } => {
                *in_flight = in_flight.saturating_sub(1);
                if failed || slow {
                    self.open(now);
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.config.half_open_probes {
                        self.transition(State::Closed);
                    }
                }
            }
            // Same epoch while open is impossible: opening bumps the epoch.
            State::Open { .. } => {}
        }
    }

    /// Gives back a permit whose call was cancelled before it produced an outcome: frees the
    /// half-open slot without judging the seller.
    pub fn release(&mut self, permit: Permit) {
        if permit.epoch != self.epoch {
            return;
        }
        if let State::HalfOpen { in_flight, .. } = &mut self.state {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    fn rates(&self) -> (u8, u8) {
        let n = self.window.len();
        if n == 0 {
            return (0, 0);
        }
        let failed = self.window.iter().filter(|(f, _)| *f).count();
        let slow = self.window.iter().filter(|(_, s)| *s).count();
        ((failed * 100 / n) as u8, (slow * 100 / n) as u8)
    }

    fn should_trip(&self) -> bool {
        let n = self.window.len();
        if n < self.config.minimum_calls as usize {
            return false;
        }
        let failed = self.window.iter().filter(|(f, _)| *f).count();
        let slow = self.window.iter().filter(|(_, s)| *s).count();
        // Integer comparison of failed/n >= percent/100, exact at the threshold.
        failed * 100 >= usize::from(self.config.failure_rate_percent) * n
            || slow * 100 >= usize::from(self.config.slow_call_rate_percent) * n
    }

    fn open(&mut self, now: Instant) {
        let until = now + Duration::from_millis(self.config.open_ms);
        self.transition(State::Open { until });
    }

    fn transition(&mut self, to: State) {
        self.epoch += 1;
        self.window.clear();
        self.state = to;
    }
}

/// A breaker shared between an adapter and the call futures it spawns.
#[derive(Debug, Clone)]
pub struct SharedCircuitBreaker {
    inner: Arc<Mutex<CircuitBreaker>>,
}

/// An RAII permit: report the outcome with [`PermitGuard::finish`]; dropping it unfinished
/// (the call future was cancelled) releases the slot.
#[derive(Debug)]
#[must_use = "dropping the guard at once releases the permit without making the call"]
pub struct PermitGuard {
    breaker: Arc<Mutex<CircuitBreaker>>,
    permit: Option<Permit>,
}

fn lock(m: &Mutex<CircuitBreaker>) -> MutexGuard<'_, CircuitBreaker> {
    // The breaker's methods never panic midway, so a poisoned value is still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SharedCircuitBreaker {
    /// A closed shared breaker.
    pub fn new(config: BreakerConfig) -> Self {
        SharedCircuitBreaker {
            inner: Arc::new(Mutex::new(CircuitBreaker::new(config))),
        }
    }

    /// Asks to make a call at `now`.
    pub fn acquire(&self, now: Instant) -> Result<PermitGuard, BreakerOpen> {
        let permit = lock(&self.inner).try_acquire(now)?;
        Ok(PermitGuard {
            breaker: Arc::clone(&self.inner),
            permit: Some(permit),
        })
    }

    /// State at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        lock(&self.inner).state(now)
    }

    /// Numbers for health and metrics.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        lock(&self.inner).snapshot(now)
    }
}

impl PermitGuard {
    /// Reports how the call ended.
    pub fn finish(mut self, outcome: CallOutcome, elapsed: Duration, now: Instant) {
        if let Some(permit) = self.permit.take() {
            lock(&self.breaker).record(permit, outcome, elapsed, now);
        }
    }
}

impl Drop for PermitGuard {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            lock(&self.breaker).release(permit);
        }
    }
}

/// Transitions a [`BreakerTimeline`] keeps.
pub const TIMELINE_LEN: usize = 32;

/// One change of a breaker's state, stamped with the wall clock for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BreakerTransition {
    /// When the change was seen.
    pub at: DateTime<Utc>,
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
}

/// The last [`TIMELINE_LEN`] transitions of a breaker, oldest first, fed by whoever
/// publishes its state (the `SellerAdapter`), so memory stays fixed however often it flaps.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BreakerTimeline {
    /// The kept transitions, oldest first.
    transitions: VecDeque<BreakerTransition>,
    /// Transitions seen in all, kept or not.
    total: u64,
    /// The state last noted.
    #[serde(skip)]
    last: Option<BreakerState>,
}

impl BreakerTimeline {
    /// Notes the state published at `at`; a state other than the last one noted is a
    /// transition (the first note only sets the starting point). True when it was one.
    pub fn note(&mut self, state: BreakerState, at: DateTime<Utc>) -> bool {
        let from = match self.last.replace(state) {
            Some(from) if from != state => from,
            _ => return false,
        };
        if self.transitions.len() == TIMELINE_LEN {
            self.transitions.pop_front();
        }
        self.transitions.push_back(BreakerTransition {
            at,
            from,
            to: state,
        });
        self.total += 1;
        true
    }

    /// The kept transitions, oldest first.
    pub fn transitions(&self) -> impl Iterator<Item = &BreakerTransition> {
        self.transitions.iter()
    }

    /// Transitions seen in all.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(10);
    const SLOW: Duration = Duration::from_millis(1_500);

    fn small() -> BreakerConfig {
        BreakerConfig {
            window: 4,
            minimum_calls: 4,
            half_open_probes: 2,
            ..Default::default()
        }
    }

    fn call(b: &mut CircuitBreaker, outcome: CallOutcome, elapsed: Duration, now: Instant) {
        let permit = b.try_acquire(now).expect("permitted");
        b.record(permit, outcome, elapsed, now);
    }

    fn trip(b: &mut CircuitBreaker, now: Instant) {
        for _ in 0..b.config().window {
            call(b, CallOutcome::Failure, FAST, now);
        }
        assert_eq!(b.state(now), BreakerState::Open);
    }

    #[test]
    fn defaults_follow_hystrix_and_validate() {
        let c = BreakerConfig::default();
        assert_eq!(
            (c.window, c.minimum_calls, c.failure_rate_percent, c.open_ms),
            (20, 20, 50, 5_000)
        );
        assert!(c.validate().is_ok());
        let bad = |c: BreakerConfig| c.validate().unwrap_err().key;
        assert_eq!(
            bad(BreakerConfig {
                window: 0,
                ..c.clone()
            }),
            "window"
        );
        assert_eq!(
            bad(BreakerConfig {
                minimum_calls: 21,
                ..c.clone()
            }),
            "minimum_calls"
        );
        assert_eq!(
            bad(BreakerConfig {
                failure_rate_percent: 101,
                ..c.clone()
            }),
            "failure_rate_percent"
        );
        assert_eq!(
            bad(BreakerConfig {
                slow_call_rate_percent: 0,
                ..c.clone()
            }),
            "slow_call_rate_percent"
        );
        assert_eq!(
            bad(BreakerConfig {
                open_ms: 0,
                ..c.clone()
            }),
            "open_ms"
        );
        assert_eq!(
            bad(BreakerConfig {
                half_open_probes: 0,
                ..c.clone()
            }),
            "half_open_probes"
        );
        assert_eq!(
            InvalidSetting::new("window", "x").within("breaker").key,
            "breaker.window"
        );
        let parsed: BreakerConfig = serde_json::from_str(r#"{"open_ms": 100}"#).unwrap();
        assert_eq!(
            parsed,
            BreakerConfig {
                open_ms: 100,
                ..Default::default()
            }
        );
        assert!(serde_json::from_str::<BreakerConfig>(r#"{"opn_ms": 100}"#).is_err());
    }

    #[test]
    fn stays_closed_below_minimum_volume() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(small());
        for _ in 0..3 {
            call(&mut b, CallOutcome::Failure, FAST, now);
        }
        assert_eq!(b.state(now), BreakerState::Closed, "3 of a minimum 4 calls");
        call(&mut b, CallOutcome::Failure, FAST, now);
        assert_eq!(b.state(now), BreakerState::Open);
    }

    #[test]
    fn trips_exactly_at_the_failure_rate_threshold() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(small());
        for outcome in [
            CallOutcome::Success,
            CallOutcome::Success,
            CallOutcome::Success,
            CallOutcome::Failure,
        ] {
            call(&mut b, outcome, FAST, now);
        }
        assert_eq!(b.state(now), BreakerState::Closed, "25% < 50%");
        call(&mut b, CallOutcome::Failure, FAST, now); // window now S S F F
        assert_eq!(b.state(now), BreakerState::Open, "50% trips");
    }

    #[test]
    fn sliding_window_forgets_old_failures() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_rate_percent: 75,
            ..small()
        });
        for outcome in [
            CallOutcome::Failure,
            CallOutcome::Failure,
            CallOutcome::Success,
            CallOutcome::Success,
        ] {
            call(&mut b, outcome, FAST, now);
        }
        for _ in 0..10 {
            call(&mut b, CallOutcome::Success, FAST, now);
        }
        assert_eq!(b.snapshot(now).failure_rate_percent, 0);
        call(&mut b, CallOutcome::Failure, FAST, now);
        assert_eq!(b.state(now), BreakerState::Closed);
        assert_eq!(b.snapshot(now).calls_in_window, 4);
    }

    #[test]
    fn trips_on_slow_call_rate() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            slow_call_rate_percent: 75,
            ..small()
        });
        call(&mut b, CallOutcome::Success, FAST, now);
        for _ in 0..2 {
            call(&mut b, CallOutcome::Success, SLOW, now);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
        call(&mut b, CallOutcome::Success, SLOW, now);
        assert_eq!(b.state(now), BreakerState::Open, "3 of 4 slow successes");
        assert_eq!(
            b.snapshot(now).calls_in_window,
            0,
            "window cleared on opening"
        );
    }

    #[test]
    fn default_slow_rate_needs_every_call_slow() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        call(&mut b, CallOutcome::Success, FAST, now);
        for _ in 0..19 {
            call(&mut b, CallOutcome::Success, SLOW, now);
        }
        assert_eq!(b.state(now), BreakerState::Closed, "19 of 20 slow");
        call(&mut b, CallOutcome::Success, SLOW, now); // the fast one slid out
        assert_eq!(b.state(now), BreakerState::Open);
    }

    #[test]
    fn open_refuses_until_the_open_duration_passes() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(small());
        trip(&mut b, t0);
        let refused = b.try_acquire(t0 + Duration::from_secs(2)).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(3));
        assert_eq!(b.state(t0 + Duration::from_secs(5)), BreakerState::HalfOpen);
        assert!(b.try_acquire(t0 + Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn half_open_limits_probes_and_closes_after_all_succeed() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(6);
        let mut b = CircuitBreaker::new(small());
        trip(&mut b, t0);
        let p1 = b.try_acquire(t1).unwrap();
        let p2 = b.try_acquire(t1).unwrap();
        assert_eq!(
            b.try_acquire(t1).unwrap_err().retry_after,
            Duration::ZERO,
            "two probes at most"
        );
        b.record(p1, CallOutcome::Success, FAST, t1);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert!(
            b.try_acquire(t1).is_err(),
            "a succeeded probe still uses its slot"
        );
        b.record(p2, CallOutcome::Success, FAST, t1);
        assert_eq!(b.state(t1), BreakerState::Closed);
        assert!(b.try_acquire(t1).is_ok());
    }

    #[test]
    fn a_failed_or_slow_probe_reopens() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(6);
        let mut b = CircuitBreaker::new(small());
        trip(&mut b, t0);
        let p = b.try_acquire(t1).unwrap();
        b.record(p, CallOutcome::Failure, FAST, t1);
        assert_eq!(b.state(t1), BreakerState::Open);
        assert_eq!(
            b.try_acquire(t1).unwrap_err().retry_after,
            Duration::from_secs(5),
            "open again for the full duration"
        );

        let t2 = t1 + Duration::from_secs(5);
        let p = b.try_acquire(t2).unwrap();
        b.record(p, CallOutcome::Success, SLOW, t2);
        assert_eq!(b.state(t2), BreakerState::Open);
    }

    #[test]
    fn released_probe_frees_its_slot_without_judging() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(6);
        let mut b = CircuitBreaker::new(BreakerConfig {
            half_open_probes: 1,
            ..small()
        });
        trip(&mut b, t0);
        let p = b.try_acquire(t1).unwrap();
        assert!(b.try_acquire(t1).is_err());
        b.release(p);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        let p = b.try_acquire(t1).expect("slot freed");
        b.record(p, CallOutcome::Success, FAST, t1);
        assert_eq!(b.state(t1), BreakerState::Closed);
    }

    #[test]
    fn permits_from_an_earlier_state_are_ignored() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(small());
        let stale = b.try_acquire(t0).unwrap();
        trip(&mut b, t0);
        let t1 = t0 + Duration::from_secs(6);
        let probe = b.try_acquire(t1).unwrap();
        b.record(stale, CallOutcome::Failure, FAST, t1);
        assert_eq!(
            b.state(t1),
            BreakerState::HalfOpen,
            "a late failure from the closed era does not reopen"
        );
        b.record(probe, CallOutcome::Success, FAST, t1);
        let probe2 = b.try_acquire(t1).unwrap();
        b.record(probe2, CallOutcome::Success, FAST, t1);
        assert_eq!(b.state(t1), BreakerState::Closed);
    }

    #[test]
    fn dropped_guard_releases_half_open_slot() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(6);
        let shared = SharedCircuitBreaker::new(BreakerConfig {
            half_open_probes: 1,
            ..small()
        });
        for _ in 0..4 {
            shared
                .acquire(t0)
                .unwrap()
                .finish(CallOutcome::Failure, FAST, t0);
        }
        assert_eq!(shared.state(t0), BreakerState::Open);
        let guard = shared.acquire(t1).unwrap();
        assert!(shared.acquire(t1).is_err());
        drop(guard); // the call future was cancelled
        let guard = shared.acquire(t1).expect("slot released by drop");
        guard.finish(CallOutcome::Success, FAST, t1);
        assert_eq!(shared.snapshot(t1).state, BreakerState::Closed);
    }

    #[test]
    fn unvalidated_zero_config_does_not_panic() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            window: 0,
            minimum_calls: 0,
            half_open_probes: 0,
            ..Default::default()
        });
        call(&mut b, CallOutcome::Failure, FAST, now);
        assert_eq!(b.state(now), BreakerState::Open);
    }

    #[test]
    fn timeline_records_changes_only_and_keeps_the_last_few() {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let mut t = BreakerTimeline::default();
        assert!(
            !t.note(BreakerState::Closed, at(0)),
            "the first note is the start"
        );
        assert!(
            !t.note(BreakerState::Closed, at(1)),
            "no change, no transition"
        );
        assert!(t.note(BreakerState::Open, at(2)));
        assert!(t.note(BreakerState::HalfOpen, at(7)));
        assert!(t.note(BreakerState::Closed, at(8)));
        let seen: Vec<_> = t.transitions().map(|x| (x.from, x.to, x.at)).collect();
        assert_eq!(
            seen,
            vec![
                (BreakerState::Closed, BreakerState::Open, at(2)),
                (BreakerState::Open, BreakerState::HalfOpen, at(7)),
                (BreakerState::HalfOpen, BreakerState::Closed, at(8)),
            ]
        );
        // Flapping for a long time keeps memory fixed: the oldest go first.
        for i in 0..100 {
            let state = if i % 2 == 0 {
                BreakerState::Open
            } else {
                BreakerState::Closed
            };
            t.note(state, at(10 + i));
        }
        assert_eq!(t.total(), 103);
        assert_eq!(t.transitions().count(), TIMELINE_LEN);
        assert_eq!(t.transitions().last().unwrap().at, at(109));
        assert_eq!(
            t.transitions().next().unwrap().at,
            at(110 - TIMELINE_LEN as i64)
        );
    }
}
