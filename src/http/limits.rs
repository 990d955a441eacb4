//! Rate limits (`[limits]`): a token bucket per account for requests with a customer's API
//! key, and one per client address for requests without a valid key (opening an account,
//! anonymous search, and whatever is refused with 401 or 404). The buckets and their
//! bounded tables are `domain::rate_limit`'s; this file chooses the bucket, shards the
//! tables across workers, and answers an empty bucket with a 429 problem and
//! `Retry-After`.
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
//! [`EXEMPT`] paths are not limited for callers without a credential or with a good one:
//! `/health` (load balancers probe it, and a refused probe would take the instance out of
//! service), `/metrics` (the scraper), the OpenAPI document and the console's static files:
//! each is answered from memory. A credential those paths refuse (malformed, or a key no
//! account holds) draws on the address's bucket like anywhere else, so `/metrics` is no
//! unthrottled way to tell a good key from a bad one.
//!
//! Opening an account (`POST /v1/accounts`) also draws on a bucket of its own per address,
//! far slower than the request buckets: each account brings its own request bucket, so
//! without it a client would multiply its budget by opening accounts.
//!
//! Memory: each table holds at most `limits.max_tracked` buckets; past that it forgets
//! full buckets, then the least recently used, never all of them
//! (`domain::rate_limit`).

use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use crate::config::Network;
use crate::domain::rate_limit::{BucketTable, Quota};

use super::problem::Problem;
use super::AppState;
use crate::config::LimitsConfig;
use crate::domain::access::Caller;
use crate::domain::account::AccountId;

/// Paths not limited for a request without a credential or with a good one: probes and
/// static documents, each cheap to answer. A credential they refuse is limited.
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

/// Which bucket refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The account's, for a request with its API key.
    Key,
    /// The client address's, for a request without a valid API key.
    Address,
    /// The client address's account openings.
    AccountCreation,
}

impl Scope {
    /// Every scope, for the metric's labels.
    pub(crate) const ALL: [Scope; 3] = [Scope::Key, Scope::Address, Scope::AccountCreation];

    /// The `scope` label of `wayfare_http_rate_limited_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::Address => "address",
            Scope::AccountCreation => "account_creation",
        }
    }
}

/// The route that opens accounts.
const ACCOUNT_CREATION: (&str, &str) = ("POST", "/v1/accounts");

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
    account_creations: Buckets<IpAddr>,
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
                Quota::per_second(config.per_key_per_second, config.per_key_burst),
                config.max_tracked,
            ),
            per_address: Buckets::new(
                Quota::per_second(config.per_address_per_second, config.per_address_burst),
                config.max_tracked,
            ),
            account_creations: Buckets::new(
                Quota::per_second(
                    config.account_creations_per_second,
                    config.account_creations_burst,
                ),
                config.max_tracked,
            ),
        }
    }

    /// Takes a token for this request from its bucket, or says why not.
    fn admit(&self, req: &ServiceRequest, state: &AppState) -> Result<(), Refusal> {
        let exempt = is_exempt(req.path());
        match super::auth::caller(req.request(), state) {
            Ok(Caller::Operator) => return Ok(()),
            Ok(Caller::Anonymous) if exempt => return Ok(()),
            Ok(Caller::Customer(digest)) => {
                // A store failure falls through to the address: the handler answers it.
                if let Ok(Some(account)) = state.runtime.key_owner(&digest) {
                    if exempt {
                        return Ok(());
                    }
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
        let client = address_key(client_ip(peer.ip(), req.headers(), &self.trusted));
        self.per_address.check(&client).map_err(|wait| Refusal {
            scope: Scope::Address,
            wait,
        })?;
        if (req.method().as_str(), req.path()) == ACCOUNT_CREATION {
            self.account_creations
                .check(&client)
                .map_err(|wait| Refusal {
                    scope: Scope::AccountCreation,
                    wait,
                })?;
        }
        Ok(())
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
            Scope::AccountCreation => format!(
                "too many accounts opened from this address: {} at once and {} a second \
                 after that (limits.account_creations_burst, \
                 limits.account_creations_per_second); retry after {secs} s",
                c.account_creations_burst, c.account_creations_per_second
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

/// Shards of a bucket table: requests of different clients on different workers rarely
/// wait on the same lock.
const SHARDS: usize = 16;

/// One table of buckets keyed by `K` (the rules are `domain::rate_limit`), split in
/// [`SHARDS`] locked parts by key, with `max_tracked` buckets in all.
pub(crate) struct Buckets<K: Hash + Eq + Clone> {
    shards: Vec<Mutex<BucketTable<K>>>,
    hasher: std::collections::hash_map::RandomState,
    epoch: Instant,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub(crate) fn new(quota: Quota, max_tracked: usize) -> Self {
        let per_shard = max_tracked.div_ceil(SHARDS).max(1);
        Buckets {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(BucketTable::new(quota, per_shard)))
                .collect(),
            hasher: Default::default(),
            epoch: Instant::now(),
        }
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, BucketTable<K>> {
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        // A panic cannot leave a table half-changed in a way that matters: recover it.
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a token from `key`'s bucket; when it is empty, how long until it holds one.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        let now = self.epoch.elapsed();
        self.shard(key).check(key, now)
    }

    /// Buckets in the table.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|t| t.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
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
