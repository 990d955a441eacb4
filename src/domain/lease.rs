//! Saga leases among nodes sharing one database: the rules, as plain functions. The
//! PostgreSQL saga store applies them in SQL (judged by the database's clock, so nodes'
//! clocks never matter); these are their reference, checked by the model tests below,
//! and what the node itself decides (how often it renews, what a refused write means).
//!
//! A lease names its owner node, an expiry and an epoch:
//! 1. A saga is **claimable** when it is unfinished and its lease expired (or it never had
//!    one). A claim makes the claimer the owner, raises the epoch and sets a new expiry.
//! 2. The owner **renews** its lease (a new expiry) while it holds it, under its epoch.
//! 3. A write names owner and epoch and is **fenced**: taken only while both match and the
//!    lease is live. A refused write means another node may have claimed the saga: the
//!    writer must stop driving it, and never retry the write ([`on_refused_write`]).

use std::time::Duration;

/// A lease as the database holds it; times in milliseconds on the database's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The node holding it, if it was ever claimed.
    pub owner: Option<String>,
    /// Raised by every claim.
    pub epoch: i64,
    /// When it runs out.
    pub expires_at_ms: i64,
    /// Whether the saga is over (finished or parked): never claimable.
    pub terminal: bool,
}

/// Rule 1: whether any node may claim the saga at `now_ms`.
pub fn claimable(lease: &LeaseState, now_ms: i64) -> bool {
    !lease.terminal && (lease.owner.is_none() || lease.expires_at_ms <= now_ms)
}

/// Rule 1: `node` claims the saga for `lease_ms`; its new epoch, or `None` when the saga
/// is not claimable.
pub fn claim(lease: &mut LeaseState, node: &str, now_ms: i64, lease_ms: i64) -> Option<i64> {
    if !claimable(lease, now_ms) {
        return None;
    }
    lease.owner = Some(node.to_owned());
    lease.epoch += 1;
    lease.expires_at_ms = now_ms.saturating_add(lease_ms);
    Some(lease.epoch)
}

/// Rule 3: whether a write by `node` under `epoch` is taken at `now_ms`.
pub fn write_allowed(lease: &LeaseState, node: &str, epoch: i64, now_ms: i64) -> bool {
    lease.owner.as_deref() == Some(node) && lease.epoch == epoch && lease.expires_at_ms > now_ms
}

/// Rule 2: `node` renews under `epoch`; false (nothing changed) when the lease is no longer
/// its own, which the node then forgets.
pub fn renew(lease: &mut LeaseState, node: &str, epoch: i64, now_ms: i64, lease_ms: i64) -> bool {
    if lease.terminal || !write_allowed(lease, node, epoch, now_ms) {
        return false;
    }
    lease.expires_at_ms = now_ms.saturating_add(lease_ms);
    true
}

/// What a saga actor does after the store refused its write as fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRefusal {
    /// Stop driving the saga here: the node that claimed it resumes it from the last
    /// record taken, so the refused step is redone there (every step's call carries its
    /// idempotency key, so nothing happens twice at a partner).
    StopHere,
}

/// Rule 3: a refused write is never retried by the node that made it.
pub fn on_refused_write() -> AfterRefusal {
    AfterRefusal::StopHere
}

/// How often a node runs its duties (heartbeat, renewals, take-overs) for leases lasting
/// `lease`: every third of a lease, so a live node renews each lease twice before it could
/// run out, but at least every second, so leases given up by a node stopping cleanly are
/// claimed within about a second, and at most every 100 ms.
pub fn duty_interval(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LEASE_MS: i64 = 300;

    /// What nodes do, in any order, while the clock moves.
    #[derive(Debug, Clone)]
    enum Event {
        Claim(usize),
        Renew(usize),
        Write(usize),
        Tick(i64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0..3usize).prop_map(Event::Claim),
            (0..3usize).prop_map(Event::Renew),
            (0..3usize).prop_map(Event::Write),
            (1..200i64).prop_map(Event::Tick),
        ]
    }

    proptest! {
        /// Whatever the interleaving of claims, renewals, writes and pauses: writes taken
        /// are in epoch order and, between two claims, all come from the one claimer (no
        /// two nodes ever drive the saga at once), and a node whose write was refused is
        /// never allowed to write again under that epoch.
        #[test]
        fn writes_come_from_one_owner_at_a_time(events in prop::collection::vec(event(), 1..80)) {
            let mut lease = LeaseState { owner: None, epoch: 0, expires_at_ms: 0, terminal: false };
            let mut now = 0i64;
            // What each node believes it holds: the epoch it was granted.
            let mut held: [Option<i64>; 3] = [None; 3];
            let mut taken: Vec<(usize, i64)> = Vec::new();
            let mut refused: Vec<(usize, i64)> = Vec::new();
            for e in events {
                match e {
                    Event::Tick(ms) => now += ms,
                    Event::Claim(n) => {
                        if let Some(epoch) = claim(&mut lease, &n.to_string(), now, LEASE_MS) {
                            held[n] = Some(epoch);
                        }
                    }
                    Event::Renew(n) => {
                        if let Some(epoch) = held[n] {
                            if !renew(&mut lease, &n.to_string(), epoch, now, LEASE_MS) {
                                held[n] = None;
                            }
                        }
                    }
                    Event::Write(n) => {
                        if let Some(epoch) = held[n] {
                            if write_allowed(&lease, &n.to_string(), epoch, now) {
                                prop_assert!(!refused.contains(&(n, epoch)));
                                taken.push((n, epoch));
                            } else {
                                prop_assert_eq!(on_refused_write(), AfterRefusal::StopHere);
                                refused.push((n, epoch));
                                held[n] = None;
                            }
                        }
                    }
                }
            }
            for pair in taken.windows(2) {
                let ((a, ea), (b, eb)) = (pair[0], pair[1]);
                prop_assert!(ea <= eb, "epochs go back: {:?}", taken);
                if ea == eb {
                    prop_assert_eq!(a, b, "two owners under one epoch");
                }
            }
        }

        /// A live lease is never claimable; an expired one of an unfinished saga always is.
        #[test]
        fn claimable_exactly_when_expired_and_unfinished(
            expires in 0..1_000i64, now in 0..1_000i64, terminal: bool, owned: bool,
        ) {
            let lease = LeaseState {
                owner: owned.then(|| "a".to_owned()),
                epoch: 1,
                expires_at_ms: expires,
                terminal,
            };
            let expected = !terminal && (!owned || expires <= now);
            prop_assert_eq!(claimable(&lease, now), expected);
        }
    }

    #[test]
    fn a_finished_saga_is_never_claimed_nor_renewed() {
        let mut lease = LeaseState {
            owner: Some("a".into()),
            epoch: 3,
            expires_at_ms: 0,
            terminal: true,
        };
        assert_eq!(claim(&mut lease, "b", 10, LEASE_MS), None);
        assert!(!renew(&mut lease, "a", 3, 0, LEASE_MS));
    }

    #[test]
    fn duties_run_every_third_of_a_lease_within_bounds() {
        assert_eq!(
            duty_interval(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(
            duty_interval(Duration::from_millis(900)),
            Duration::from_millis(300)
        );
        assert_eq!(
            duty_interval(Duration::from_millis(30)),
            Duration::from_millis(100)
        );
    }
}
