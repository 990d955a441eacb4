//! Rate limits (`[limits]`): a token bucket per account for requests with a customer's API
//! key, and one per client address for requests without a valid key (opening an account,
//! anonymous search, and whatever is refused with 401 or 404). The buckets are
//! `governor`'s keyed GCRA limiters; this file chooses the bucket, bounds the tables, and
//! answers an empty bucket with a 429 problem and `Retry-After`.
//!
//! The middleware [`limit`] runs before routing and before any body is read, inside the
//! request-id and metrics middleware (so a refusal is counted and carries its id). Who the
//! caller is comes from the same `Authorization` parsing as the `auth.rs` extractors:
//!
//! - the operator token: never limited;
//! - a customer's API key that some account holds: that **account's** bucket (found by the
//!   key's digest in the store: one read; the key itself is neither kept nor logged), so a
//!   new key does not bring a fresh bucket;
//! - anything else (no credential, a malformed one, a key no account holds): the bucket of
//!   client's address, IPv6 by its /64 network (one host's usual share). The client's
//!   address is the TCP peer's, unless the peer is one of `limits.trusted_proxies`: then
//!   it is the nearest address in `X-Forwarded-For` that is not a trusted proxy
//!   ([`client_ip`]). Without trusted proxies, behind a reverse proxy every client shares
//!   the proxy's bucket.
//!
//! [`EXEMPT`] paths are never limited: `/health` (load balancers probe it, and a refused
//! probe would take the instance out of service), `/metrics` (the scraper), the OpenAPI
//! document and the console's static files: each is answered from memory.
//!
//! Memory: a bucket whose tokens have all come back is forgotten at the next sweep; a table
//! holding more than `limits.max_tracked` buckets that are all still busy (an attacker
//! spraying addresses) starts afresh. So each table holds at most `max_tracked` plus the
//! keys of [`SWEEP_EVERY`] requests.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use crate::config::Network;
use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::problem::Problem;
use super::AppState;
use crate::config::LimitsConfig;
use crate::domain::access::Caller;
use crate::domain::account::AccountId;

/// Paths never limited: probes and static documents, each cheap to answer.
pub(crate) const EXEMPT: [&str; 6] = [
    "/health",
    "/metrics",
    "/v1/openapi.json",
    "/console",
    "/console/app.js",
    "/console/app.css",
];

/// Is `path` one of the [`EXEMPT`] paths?
pub(crate) fn is_exempt(path: &str) -> bool {
    EXEMPT.contains(&path)
}

/// A table is looked at (its size, and a sweep when due) once per this many requests.
pub(crate) const SWEEP_EVERY: u64 = 1024;
/// Idle buckets are swept at least this often, while requests come.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Which bucket refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The account's, for a request with its API key.
    Key,
    /// The client address's, for a request without a valid API key.
    Address,
}

impl Scope {
    /// The `scope` label of `wayfare_http_rate_limited_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::Address => "address",
        }
    }
}

/// A refused request: which bucket, and how long until it holds a token again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub scope: Scope,
    pub wait: Duration,
}

/// Both tables of buckets, shared by every HTTP worker.
pub(crate) struct Limits {
    config: LimitsConfig,
    trusted: Vec<Network>,
    per_key: Buckets<AccountId>,
    per_address: Buckets<IpAddr>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config)
            .field("accounts", &self.per_key.len())
            .field("addresses", &self.per_address.len())
            .finish()
    }
}

impl Limits {
    /// The tables of a validated `[limits]`.
    pub(crate) fn new(config: &LimitsConfig) -> Self {
        Limits {
            config: config.clone(),
            // Validated with the config; an entry that does not parse trusts no one.
            trusted: config.trusted_networks().unwrap_or_default(),
            per_key: Buckets::new(
                quota(config.per_key_per_second, config.per_key_burst),
                config.max_tracked,
                DefaultClock::default(),
            ),
            per_address: Buckets::new(
                quota(config.per_address_per_second, config.per_address_burst),
                config.max_tracked,
                DefaultClock::default(),
            ),
        }
    }

    /// Takes a token for this request from its bucket, or says why not.
    fn admit(&self, req: &ServiceRequest, state: &AppState) -> Result<(), Refusal> {
        if is_exempt(req.path()) {
            return Ok(());
        }
        match super::auth::caller(req.request(), state) {
            Ok(Caller::Operator) => return Ok(()),
            Ok(Caller::Customer(digest)) => {
                // A store failure falls through to the address: the handler answers it.
                if let Ok(Some(account)) = state.runtime.key_owner(&digest) {
                    return self.per_key.check(&account).map_err(|wait| Refusal {
                        scope: Scope::Key,
                        wait,
                    });
                }
            }
            Ok(Caller::Anonymous) | Err(_) => {}
        }
        // Every request served here came over TCP; one without a peer is not limited.
        let Some(peer) = req.peer_addr() else {
            return Ok(());
        };
        let client = client_ip(peer.ip(), req.headers(), &self.trusted);
        self.per_address
            .check(&address_key(client))
            .map_err(|wait| Refusal {
                scope: Scope::Address,
                wait,
            })
    }

    /// The 429 problem for `refusal`, naming the limit and the keys that set it.
    pub(crate) fn problem(&self, refusal: Refusal) -> Problem {
        let secs = retry_after_secs(refusal.wait);
        let c = &self.config;
        let detail = match refusal.scope {
            Scope::Key => format!(
                "rate limit per API key reached: an account may send {} requests at once and \
                 {} a second after that (limits.per_key_burst, limits.per_key_per_second); \
                 retry after {secs} s",
                c.per_key_burst, c.per_key_per_second
            ),
            Scope::Address => format!(
                "rate limit per client address reached for requests without an API key: {} \
                 at once and {} a second after that (limits.per_address_burst, \
                 limits.per_address_per_second); retry after {secs} s",
                c.per_address_burst, c.per_address_per_second
            ),
        };
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            detail,
        )
        .retry_after(secs)
    }
}

/// The middleware: passes the request on, or answers 429 without running it (and counts
/// the refusal in `wayfare_http_rate_limited_total`). Installed only when
/// `limits.enabled`.
pub(super) async fn limit<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let refused = req.app_data::<web::Data<AppState>>().and_then(|state| {
        let refusal = state.limits.admit(&req, state).err()?;
        state.metrics.rate_limited(refusal.scope.label());
        tracing::debug!(scope = refusal.scope.label(), "Rate limited.");
        Some(state.limits.problem(refusal))
    });
    match refused {
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Some(problem) => Ok(req
            .into_response(problem.error_response())
            .map_into_right_body()),
    }
}

/// `Retry-After` in whole seconds: rounded up, at least 1 (a client told 0 would retry at
/// once and be refused again).
pub(crate) fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// The client's address: the TCP `peer`'s, unless the peer is a trusted proxy; then the
/// nearest address in `X-Forwarded-For` (read right to left: each proxy appends the
/// address it received from) that is not itself a trusted proxy. A header that does not
/// parse is not believed (the peer's address counts), and a chain of trusted proxies only
/// ends at its leftmost address.
pub(crate) fn client_ip(
    peer: IpAddr,
    headers: &actix_web::http::header::HeaderMap,
    trusted: &[Network],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        for hop in value.split(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                Err(_) => return peer,
            }
        }
    }
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(**ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

/// The bucket key of a client address: IPv4 as it is (an IPv4-mapped IPv6 address too),
/// IPv6 by its /64 network, which one host usually holds whole.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(segments))
        }
        v4 => v4,
    }
}

/// A bucket refilling at `per_second` (one token every `1 / per_second` s) up to `burst`,
/// from values `LimitsConfig::validate` accepted.
fn quota(per_second: f64, burst: u32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

type Keyed<K, C> =
    RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One table of buckets, keyed by `K`, with a bound on how many it holds.
pub(crate) struct Buckets<K: Hash + Eq + Clone, C: Clock + Clone = DefaultClock> {
    table: ArcSwap<Keyed<K, C>>,
    quota: Quota,
    max_tracked: usize,
    clock: C,
    /// Checks so far, to look at the table once per [`SWEEP_EVERY`].
    checks: AtomicU64,
    /// When the table was last swept; held while a sweep runs, so one worker sweeps.
    swept: Mutex<C::Instant>,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Buckets<K, C> {
    pub(crate) fn new(quota: Quota, max_tracked: usize, clock: C) -> Self {
        Buckets {
            table: ArcSwap::from_pointee(RateLimiter::new(
                quota,
                DefaultKeyedStateStore::default(),
                clock.clone(),
            )),
            quota,
            max_tracked,
            swept: Mutex::new(clock.now()),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes a token from `key`'s bucket; when it is empty, how long until it holds one.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.maintain();
        }
        self.table
            .load()
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Buckets in the table (an estimate while requests are being checked).
    pub(crate) fn len(&self) -> usize {
        self.table.load().len()
    }

    /// Forgets full (idle) buckets when the table is over its bound or a sweep is due;
    /// starts a fresh table when it is still over its bound after that.
    fn maintain(&self) {
        let mut swept = match self.swept.try_lock() {
            Ok(swept) => swept,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Another worker is sweeping this table right now.
            Err(TryLockError::WouldBlock) => return,
        };
        let table = self.table.load_full();
        let now = self.clock.now();
        let due = Duration::from(now.duration_since(*swept)) >= SWEEP_INTERVAL;
        if !due && table.len() <= self.max_tracked {
            return;
        }
        *swept = now;
        table.retain_recent();
        table.shrink_to_fit();
        if table.len() > self.max_tracked {
            tracing::warn!(
                tracked = table.len(),
                max_tracked = self.max_tracked,
                "More clients than limits.max_tracked are busy at once; their rate-limit \
                 buckets start afresh."
            );
            self.table.store(Arc::new(RateLimiter::new(
                self.quota,
                DefaultKeyedStateStore::default(),
                self.clock.clone(),
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(90)), 90);
        assert_eq!(retry_after_secs(Duration::MAX), u32::MAX);
    }

    #[test]
    fn addresses_are_keyed_by_host_and_ipv6_by_its_64_network() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_and_refills_at_its_rate() {
        let clock = FakeRelativeClock::default();
        let buckets = Buckets::<u32, _>::new(quota(2.0, 3), 100, clock.clone());
        for _ in 0..3 {
            assert_eq!(buckets.check(&1), Ok(()));
        }
        // Empty: the next token comes in half a second.
        assert_eq!(buckets.check(&1), Err(Duration::from_millis(500)));
        // Another key has its own bucket.
        assert_eq!(buckets.check(&2), Ok(()));
        clock.advance(Duration::from_millis(500));
        assert_eq!(buckets.check(&1), Ok(()));
        assert!(buckets.check(&1).is_err());
        // Slower than one a second: Retry-After says the whole wait.
        let slow = Buckets::<u32, _>::new(quota(0.1, 1), 100, clock.clone());
        assert_eq!(slow.check(&1), Ok(()));
        let wait = slow.check(&1).unwrap_err();
        assert_eq!(retry_after_secs(wait), 10);
    }

    #[test]
    fn tables_stay_bounded_under_a_spray_of_keys() {
        let clock = FakeRelativeClock::default();
        let max = 2_000;
        let buckets = Buckets::<u32, _>::new(quota(1.0, 5), max, clock.clone());
        // Every key busy (none refilled): sweeping cannot drop them, so the table restarts.
        for key in 0..50_000 {
            let _ = buckets.check(&key);
            assert!(
                buckets.len() <= max + SWEEP_EVERY as usize,
                "{} buckets after key {key}",
                buckets.len()
            );
        }
        // Once they have refilled, the next sweep (one a minute) forgets them.
        clock.advance(SWEEP_INTERVAL);
        for _ in 0..SWEEP_EVERY {
            let _ = buckets.check(&0);
        }
        assert!(buckets.len() <= 1, "{} buckets left", buckets.len());
    }

    #[test]
    fn the_refusal_names_the_limit_and_sets_retry_after() {
        let config = LimitsConfig::default();
        let limits = Limits::new(&config);
        let p = limits.problem(Refusal {
            scope: Scope::Address,
            wait: Duration::from_millis(1500),
        });
        assert_eq!(p.status, 429);
        assert_eq!(p.kind, "/problems/rate-limited");
        assert_eq!(p.retry_after, Some(2));
        assert!(
            p.detail.contains("limits.per_address_burst"),
            "{}",
            p.detail
        );
        let p = limits.problem(Refusal {
            scope: Scope::Key,
            wait: Duration::from_millis(10),
        });
        assert_eq!(p.retry_after, Some(1));
        assert!(p.detail.contains("per API key"), "{}", p.detail);
    }

    #[test]
    fn exempt_paths_are_routes() {
        let routes: Vec<String> = super::super::route_table()
            .into_iter()
            .map(|(_, path)| path)
            .collect();
        for path in EXEMPT {
            assert!(routes.iter().any(|r| r == path), "{path} is not routed");
        }
    }
}
