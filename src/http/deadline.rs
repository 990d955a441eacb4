//! Requests that waited too long before this node read them are refused unprocessed.
//!
//! A node frozen for a while (SIGSTOP, a long GC-like pause of its host, a VM migration)
//! still has the requests its load balancer sent it in its socket buffers. The balancer
//! has long since told those clients "failed" (its own timeout, or the node marked down),
//! and a client may have given up; executing such a request on waking would make a
//! booking its client believes failed. So the load balancer stamps each request with the
//! time it arrived (`X-Request-Start: t=<microseconds since the Unix epoch>`, HAProxy:
//! `http-request set-header X-Request-Start t=%[date(0,us)]`), and a node that reads a
//! request older than `server.max_request_age_ms` answers 503 `request-expired` without
//! doing anything: the client's retry (with its idempotency key) is safe.
//!
//! The stamp is believed only from a peer in `limits.trusted_proxies`: anyone else could
//! forge it to have requests refused. **Clock assumption**: the balancer and the nodes
//! read clocks that agree to well within `max_request_age_ms` (one machine, or NTP); a
//! stamp from the future counts as age 0. What this cannot cover: a node that freezes
//! after it has admitted a request; that request's effects are still idempotent by key.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::ResponseError as _;

use super::problem::Problem;
use crate::config::{Config, Network};

/// The header a trusted load balancer stamps with the request's arrival time.
pub(crate) const REQUEST_START: &str = "x-request-start";

/// What the middleware needs: who may stamp, and the longest wait accepted.
#[derive(Debug, Clone)]
pub(crate) struct RequestExpiry {
    trusted: Vec<Network>,
    max_age: Duration,
}

impl RequestExpiry {
    /// From the validated config.
    pub(crate) fn new(config: &Config) -> Arc<RequestExpiry> {
        Arc::new(RequestExpiry {
            trusted: config.limits.trusted_networks().unwrap_or_default(),
            max_age: Duration::from_millis(config.server.max_request_age_ms),
        })
    }

    /// Whether any stamp can be believed (some proxy is trusted): the middleware is not
    /// installed otherwise.
    pub(crate) fn enabled(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// How long ago a request from `peer` arrived at the balancer, when it says so.
    fn age(&self, peer: Option<IpAddr>, stamp: Option<&str>, now: SystemTime) -> Option<Duration> {
        let peer = peer?;
        if !self.trusted.iter().any(|n| n.contains(peer)) {
            return None;
        }
        let started = parse_request_start(stamp?)?;
        Some(now.duration_since(started).unwrap_or(Duration::ZERO))
    }

    /// Answers 503 without calling the service when the request is too old.
    pub(crate) async fn check<B: MessageBody>(
        self: Arc<Self>,
        req: ServiceRequest,
        next: Next<B>,
    ) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
        let stamp = req
            .headers()
            .get(REQUEST_START)
            .and_then(|v| v.to_str().ok());
        let peer = req.peer_addr().map(|a| a.ip());
        match self.age(peer, stamp, SystemTime::now()) {
            Some(age) if age > self.max_age => {
                let age_ms = age.as_millis();
                tracing::warn!(age_ms, max_ms = self.max_age.as_millis(), path = %req.path(), "Request refused unprocessed: it waited too long before this node read it.");
                let problem = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request-expired",
                    "Request expired",
                    format!(
                        "the request waited {age_ms} ms before this node read it (at most {} ms); nothing was done, retry it",
                        self.max_age.as_millis()
                    ),
                )
                .retry_after(1);
                Ok(req
                    .into_response(problem.error_response())
                    .map_into_right_body())
            }
            _ => next
                .call(req)
                .await
                .map(ServiceResponse::map_into_left_body),
        }
    }
}

/// `t=<microseconds since the Unix epoch>` (HAProxy's `date(0,us)`, the form New Relic
/// popularised). Anything else is not believed.
fn parse_request_start(value: &str) -> Option<SystemTime> {
    let micros: u64 = value.trim().strip_prefix("t=")?.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiry() -> RequestExpiry {
        RequestExpiry {
            trusted: vec!["127.0.0.1".parse().unwrap()],
            max_age: Duration::from_millis(5_000),
        }
    }

    fn stamp(at: SystemTime) -> String {
        format!("t={}", at.duration_since(UNIX_EPOCH).unwrap().as_micros())
    }

    #[test]
    fn the_age_is_believed_only_from_a_trusted_peer_with_a_well_formed_stamp() {
        let now = SystemTime::now();
        let sent = stamp(now - Duration::from_secs(9));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.1.2.3".parse().unwrap();
        let e = expiry();
        let age = e.age(Some(local), Some(&sent), now).unwrap();
        assert!(
            age >= Duration::from_secs(9) && age < Duration::from_secs(10),
            "{age:?}"
        );
        assert_eq!(e.age(Some(other), Some(&sent), now), None);
        assert_eq!(e.age(None, Some(&sent), now), None);
        assert_eq!(e.age(Some(local), None, now), None);
        for bad in ["9", "t=", "t=abc", "t=-5", "1700000000000000", "t=1.5"] {
            assert_eq!(e.age(Some(local), Some(bad), now), None, "{bad}");
        }
    }

    #[test]
    fn a_stamp_from_the_future_is_age_zero() {
        let now = SystemTime::now();
        let ahead = stamp(now + Duration::from_secs(3));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            expiry().age(Some(local), Some(&ahead), now),
            Some(Duration::ZERO)
        );
    }
}
