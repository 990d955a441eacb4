//! Account views kept in this node's memory, served only while they are provably current
//! enough: what lets a node sharing PostgreSQL answer account reads without a database
//! round trip, and never with a change older than the bound below.
//!
//! - Every change of an account's view (a wallet change, a new API key) raises the
//!   account's `version` and, inside the same transaction, sends `NOTIFY wayfare_account`
//!   with the id and the new version; every node's listener connection hears it once the
//!   transaction commits and records the version ([`AccountViews::notified`]), dropping an
//!   older view.
//! - A view read from the database is kept with its version and the listener *generation*
//!   of when the read began; it is never kept if a newer version was heard meanwhile.
//! - A view is served only while the listener of that generation is subscribed and has
//!   completed a round trip on its connection that began within [`STALENESS_BOUND`]:
//!   PostgreSQL delivers a committed transaction's notifications to a listening session
//!   before it answers that session's next statement, so every change that committed more
//!   than the bound ago has been heard. A lost listener (a failover, a killed session) ends
//!   its generation: no view is served until a new connection listens again, and views
//!   read before that are never served.
//! - A change acknowledged by this node updates (or drops) its view before the reply, so a
//!   client reads its own writes on the node that acknowledged them.
//!
//! Bounded: at most `capacity` views and as many heard versions; overflowing either starts
//! a new generation (everything is read again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::domain::account::AccountId;
use crate::domain::account::WalletView;
use crate::store::accounts::AccountState;

/// How old the last completed listener round trip may be (measured from when it was sent)
/// for views to be served: a change committed on any node is served stale here for at most
/// this long after its commit.
pub const STALENESS_BOUND: Duration = Duration::from_millis(250);

/// How often the listener's connection makes a round trip (well inside the bound).
pub const LISTENER_HEARTBEAT: Duration = Duration::from_millis(50);

/// The channel account changes are announced on.
pub const ACCOUNT_CHANNEL: &str = "wayfare_account";

#[derive(Debug, Clone)]
struct View {
    state: AccountState,
    version: u64,
    generation: u64,
}

/// When a database read began, as [`AccountViews::keep`] needs it: the listener's
/// generation and how many times the views were emptied since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStart {
    generation: u64,
    cleared: u64,
}

/// This node's account views and what its listener has heard (see the module doc).
#[derive(Debug)]
pub struct AccountViews {
    /// Odd while a listener is subscribed; raised when one subscribes or is lost.
    generation: AtomicU64,
    /// The generation whose listener completed the last round trip (0: none), and when
    /// the latest round trip was sent (nanoseconds after `base`; 0: never). Atomics: every
    /// read checks them.
    heard_generation: AtomicU64,
    heard_sent: AtomicU64,
    base: Instant,
    views: RwLock<HashMap<AccountId, View>>,
    notified: RwLock<HashMap<AccountId, u64>>,
    /// Times the views and heard versions were emptied (overflow).
    cleared: AtomicU64,
    capacity: AtomicUsize,
}

impl AccountViews {
    /// Room for `capacity` views (and as many heard versions).
    pub fn new(capacity: usize) -> Self {
        AccountViews {
            generation: AtomicU64::new(0),
            heard_generation: AtomicU64::new(0),
            heard_sent: AtomicU64::new(0),
            // Earlier than any round trip this node will send (and than `now` minus the
            // bound), so every sent time is after it.
            base: Instant::now()
                .checked_sub(Duration::from_secs(3600))
                .unwrap_or_else(Instant::now),
            views: RwLock::default(),
            notified: RwLock::default(),
            cleared: AtomicU64::new(0),
            capacity: AtomicUsize::new(capacity.max(1)),
        }
    }

    /// Holds at most `capacity` views from now on.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
    }

    fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    fn views(&self) -> std::sync::RwLockReadGuard<'_, HashMap<AccountId, View>> {
        self.views.read().unwrap_or_else(|p| p.into_inner())
    }

    fn views_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<AccountId, View>> {
        self.views.write().unwrap_or_else(|p| p.into_inner())
    }

    fn notified_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<AccountId, u64>> {
        self.notified.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Taken before a database read whose answer may be kept.
    pub fn read_started(&self) -> ReadStart {
        ReadStart {
            cleared: self.cleared.load(Ordering::Acquire),
            generation: self.generation(),
        }
    }

    /// A listener is subscribed (its `LISTEN` is active): a new generation, returned.
    pub fn subscribed(&self) -> u64 {
        self.next_generation(1)
    }

    /// The listener of `generation` is gone: nothing is served until another subscribes.
    pub fn lost(&self, generation: u64) {
        if self
            .generation
            .compare_exchange(
                generation,
                generation + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.heard_generation.store(0, Ordering::Release);
        }
    }

    /// Raises the generation to the next odd (subscribed, `parity` 1) or even number.
    fn next_generation(&self, parity: u64) -> u64 {
        let mut next = 0;
        let _ = self
            .generation
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| {
                next = if (g + 1) % 2 == parity { g + 1 } else { g + 2 };
                Some(next)
            });
        next
    }

    /// The listener of `generation` completed a round trip it sent at `sent`.
    pub fn heard(&self, generation: u64, sent: Instant) {
        if self.generation() != generation {
            return;
        }
        let nanos = sent.saturating_duration_since(self.base).as_nanos() as u64 + 1;
        self.heard_sent.fetch_max(nanos, Ordering::AcqRel);
        self.heard_generation.store(generation, Ordering::Release);
    }

    /// Whether views of the current generation may be served now.
    fn serving(&self) -> Option<u64> {
        let generation = self.generation();
        if generation.is_multiple_of(2)
            || self.heard_generation.load(Ordering::Acquire) != generation
        {
            return None;
        }
        let sent = self.heard_sent.load(Ordering::Acquire);
        let now = self.base.elapsed().as_nanos() as u64 + 1;
        (now.saturating_sub(sent) <= STALENESS_BOUND.as_nanos() as u64).then_some(generation)
    }

    /// Some node committed version `version` of `id` (heard on the listener connection).
    pub fn notified(&self, id: AccountId, version: u64) {
        let overflow = self.record(id, version);
        let stale = self.views().get(&id).is_some_and(|v| v.version < version);
        if stale {
            self.views_mut().remove(&id);
        }
        if overflow {
            self.start_over();
        }
    }

    /// Remembers `version` as the newest of `id` known; whether the memory overflowed.
    fn record(&self, id: AccountId, version: u64) -> bool {
        let mut notified = self.notified_map();
        let newest = notified.entry(id).or_insert(0);
        *newest = (*newest).max(version);
        // Heard versions of accounts this node holds no view of are kept too (a read in
        // flight may come back older), so they get more room.
        notified.len() > self.capacity().saturating_mul(4)
    }

    /// The newest version of `id` heard of, or written by this node (0: none).
    pub fn notified_version(&self, id: AccountId) -> u64 {
        let notified = self.notified.read().unwrap_or_else(|p| p.into_inner());
        notified.get(&id).copied().unwrap_or(0)
    }

    /// Forgets every view and heard version; reads that began before are not kept.
    fn start_over(&self) {
        self.views_mut().clear();
        self.notified_map().clear();
        // Reads in flight may come back with versions older than what was forgotten.
        self.cleared.fetch_add(1, Ordering::AcqRel);
    }

    /// The view of `id`, if it may be served now.
    pub fn fresh(&self, id: AccountId) -> Option<AccountState> {
        let generation = self.serving()?;
        let views = self.views();
        let view = views.get(&id)?;
        if view.generation != generation {
            return None;
        }
        if view.version < self.notified_version(id) {
            return None;
        }
        Some(view.state.clone())
    }

    /// Keeps `state` at `version`, read from the database since `started`, unless a newer
    /// version is known, the listener's generation has ended or the views were emptied.
    pub fn keep(&self, state: AccountState, version: u64, started: ReadStart) {
        let generation = started.generation;
        if generation.is_multiple_of(2) || self.read_started() != started {
            return;
        }
        let id = state.account.id;
        if version < self.notified_version(id) {
            return;
        }
        let mut views = self.views_mut();
        if let Some(current) = views.get(&id) {
            if current.version > version && current.generation == generation {
                return;
            }
        } else if views.len() >= self.capacity() {
            if let Some(victim) = views.keys().next().copied() {
                views.remove(&victim);
            }
        }
        views.insert(
            id,
            View {
                state,
                version,
                generation,
            },
        );
    }

    /// This node committed a wallet change of `id` that made `version`: the view follows
    /// it when it held the version before, else it is dropped. Done before the change is
    /// acknowledged, so the caller reads its own write here.
    pub fn wrote_wallet(&self, id: AccountId, version: u64, wallet: WalletView) {
        let overflow = self.record(id, version);
        {
            let mut views = self.views_mut();
            if let Some(view) = views.get_mut(&id) {
                if view.version + 1 == version {
                    view.version = version;
                    view.state.account.wallet = wallet;
                } else if view.version < version {
                    views.remove(&id);
                }
            }
        }
        if overflow {
            self.start_over();
        }
    }

    /// This node committed another change of `id` that made `version`: its view is
    /// dropped (the next read fetches it).
    pub fn wrote(&self, id: AccountId, version: u64) {
        self.notified(id, version);
    }

    /// Views held now.
    pub fn len(&self) -> usize {
        self.views().len()
    }

    /// No view held?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses a notification's payload: `<account id> <version>`.
pub fn parse_notification(payload: &str) -> Option<(AccountId, u64)> {
    let (id, version) = payload.split_once(' ')?;
    Some((AccountId(id.parse().ok()?), version.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::{AccountRecord, NewAccount};
    use crate::domain::money::Currency;

    fn state(n: u64, balance: i64) -> AccountState {
        let new = NewAccount::new("A", &format!("a{n}@example.com")).unwrap();
        let mut record =
            AccountRecord::open(AccountId::demo(n), new, Currency::EUR, chrono::Utc::now());
        record.wallet.balance = balance;
        AccountState {
            account: record.view(),
            key: None,
        }
    }

    fn listening(views: &AccountViews) -> ReadStart {
        let g = views.subscribed();
        views.heard(g, Instant::now());
        views.read_started()
    }

    #[test]
    fn nothing_is_served_without_a_listener_that_answered_within_the_bound() {
        let views = AccountViews::new(8);
        let id = AccountId::demo(1);
        // Not listening: a read is not kept.
        views.keep(state(1, 10), 1, views.read_started());
        assert!(views.fresh(id).is_none());
        let g = views.subscribed();
        views.keep(state(1, 10), 1, views.read_started());
        assert!(
            views.fresh(id).is_none(),
            "served before the first round trip"
        );
        views.heard(g, Instant::now());
        assert!(views.fresh(id).is_some());
        std::thread::sleep(STALENESS_BOUND + Duration::from_millis(10));
        assert!(
            views.fresh(id).is_none(),
            "served on a round trip older than the bound"
        );
        views.heard(g, Instant::now());
        assert_eq!(views.fresh(id).unwrap().account.wallet.balance.minor, 10);
        views.lost(g);
        assert!(
            views.fresh(id).is_none(),
            "served after the listener was lost"
        );
        // A new listener: views read before it are never served.
        listening(&views);
        assert!(views.fresh(id).is_none());
    }

    #[test]
    fn a_heard_version_drops_older_views_and_refuses_late_reads() {
        let views = AccountViews::new(8);
        let g = listening(&views);
        let id = AccountId::demo(1);
        views.keep(state(1, 10), 1, g);
        views.notified(id, 2);
        assert!(views.fresh(id).is_none());
        // A read that began before the change and answers after the notification.
        views.keep(state(1, 10), 1, g);
        assert!(views.fresh(id).is_none());
        views.keep(state(1, 20), 2, g);
        assert_eq!(views.fresh(id).unwrap().account.wallet.balance.minor, 20);
        // A read from a generation that ended is not kept, nor served.
        views.lost(g.generation);
        let again = listening(&views);
        views.keep(state(1, 30), 3, g);
        assert!(views.fresh(id).is_none());
        views.keep(state(1, 30), 3, again);
        assert_eq!(views.fresh(id).unwrap().account.wallet.balance.minor, 30);
    }

    #[test]
    fn this_nodes_writes_are_read_back_at_once() {
        let views = AccountViews::new(8);
        let g = listening(&views);
        let id = AccountId::demo(1);
        views.keep(state(1, 10), 1, g);
        views.wrote_wallet(id, 2, state(1, 15).account.wallet);
        assert_eq!(views.fresh(id).unwrap().account.wallet.balance.minor, 15);
        // A change this view missed (version 3 never seen): dropped, not patched.
        views.wrote_wallet(id, 4, state(1, 99).account.wallet);
        assert!(views.fresh(id).is_none());
        views.keep(state(1, 20), 4, g);
        views.wrote(id, 5);
        assert!(views.fresh(id).is_none());
    }

    #[test]
    fn views_stay_bounded() {
        let views = AccountViews::new(2);
        let g = listening(&views);
        for n in 0..5 {
            views.keep(state(n, 1), 1, g);
            assert!(views.len() <= 2);
        }
        for n in 0..5 {
            views.notified(AccountId::demo(n), 2);
        }
        for n in 0..20 {
            views.notified(AccountId::demo(n), 2);
        }
        assert!(views.notified_map().len() <= 8);
        // Emptied meanwhile: a read that began before is not kept; the listener goes on.
        views.keep(state(1, 1), 2, g);
        assert!(views.fresh(AccountId::demo(1)).is_none());
        let now = views.read_started();
        views.keep(state(1, 1), 2, now);
        assert!(views.fresh(AccountId::demo(1)).is_some());
    }

    #[test]
    fn notifications_parse() {
        let id = AccountId::demo(3);
        assert_eq!(parse_notification(&format!("{} 7", id.0)), Some((id, 7)));
        assert_eq!(parse_notification("nonsense"), None);
        assert_eq!(parse_notification(&format!("{} x", id.0)), None);
    }
}
