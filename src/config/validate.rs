//! Range checks serde cannot express, each naming its dotted key, and the production
//! rules. Types and ranges of single values are serde's job (see the section files).

use std::net::SocketAddr;

use super::{Config, ConfigError, PaymentsKind, SellerKind, StoreBackend, StoreConfig};
use crate::domain::search::validate_ttl_table;

impl Config {
    /// The production rules (`--production` or `WAYFARE_PRODUCTION=1`): no fault injection,
    /// no demo accounts (their API keys are published in the README), no simulated seller
    /// or gateway, and no plain `http://` partner URL off the loopback interface.
    pub fn refuse_in_production(&self) -> Result<(), ConfigError> {
        self.faults.refuse_in_production()?;
        if self.demo.accounts > 0 {
            return Err(ConfigError::Invalid {
                key: "demo.accounts",
                reason: "must be 0 in production mode: demo accounts have well-known API keys"
                    .into(),
            });
        }
        // Simulated partners "confirm" bookings without anyone being charged or booked.
        if self.payments.kind == PaymentsKind::Simulated {
            return Err(ConfigError::Invalid {
                key: "payments.kind",
                reason: "must be \"http\" in production mode: the simulated gateway charges no one"
                    .into(),
            });
        }
        refuse_plain_remote_url("payments.http.base_url", &self.payments.http.base_url)?;
        for seller in &self.sellers {
            match seller.kind {
                SellerKind::Simulated => {
                    return Err(ConfigError::Nested(format!(
                        "sellers.{}.kind: must be \"http\" in production mode: a simulated \
                         seller books nothing",
                        seller.name
                    )))
                }
                SellerKind::Http => refuse_plain_remote_url(
                    &format!("sellers.{}.http.base_url", seller.name),
                    &seller.http.base_url,
                )?,
            }
        }
        Ok(())
    }

    /// Range checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        }
        if self.server.bind.parse::<SocketAddr>().is_err() {
            return bad("server.bind", "must be an address like 127.0.0.1:8080");
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.server.max_body_bytes) {
            return bad("server.max_body_bytes", "must be between 1024 and 16777216");
        }
        if !(100..=600_000).contains(&self.server.body_timeout_ms) {
            return bad("server.body_timeout_ms", "must be between 100 and 600000");
        }
        if !(1..=1_000_000_000).contains(&self.server.min_body_bytes_per_sec) {
            return bad(
                "server.min_body_bytes_per_sec",
                "must be between 1 and 1000000000",
            );
        }
        self.store.validate()?;
        self.telemetry.validate()?;
        if !(500..=600_000).contains(&self.cluster.lease_ms) {
            return bad(
                "cluster.lease_ms",
                "must be between 500 and 600000 (10 minutes)",
            );
        }
        if self.cluster.node_id.len() > 128
            || self
                .cluster
                .node_id
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return bad(
                "cluster.node_id",
                "must be at most 128 characters, without spaces or control characters",
            );
        }
        if !self.cluster.address.is_empty()
            && (self.cluster.address.len() > 256
                || self
                    .cluster
                    .address
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace()))
        {
            return bad(
                "cluster.address",
                "must be at most 256 characters, without spaces or control characters",
            );
        }
        if self.server.workers > 256 {
            return bad("server.workers", "must be at most 256");
        }
        if !(100..=600_000).contains(&self.server.max_request_age_ms) {
            return bad(
                "server.max_request_age_ms",
                "must be between 100 and 600000",
            );
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections", "must be at least 1");
        }
        if self.runtime.arbiters > 256 {
            return bad("runtime.arbiters", "must be at most 256");
        }
        if self.accounts.shards > 1024 {
            return bad("accounts.shards", "must be at most 1024");
        }
        if !(1..=1_000_000).contains(&self.accounts.mailbox_capacity) {
            return bad("accounts.mailbox_capacity", "must be between 1 and 1000000");
        }
        if !(1..=600_000).contains(&self.accounts.deadline_ms) {
            return bad("accounts.deadline_ms", "must be between 1 and 600000");
        }
        if self.accounts.cache_capacity == 0 {
            return bad("accounts.cache_capacity", "must be at least 1");
        }
        if !(1..=10_000).contains(&self.accounts.max_page_size) {
            return bad("accounts.max_page_size", "must be between 1 and 10000");
        }
        if self.supervisor.within_secs == 0 {
            return bad("supervisor.within_secs", "must be at least 1");
        }
        if self.supervisor.backoff_min_ms > self.supervisor.backoff_max_ms {
            return bad(
                "supervisor.backoff_min_ms",
                "must not exceed supervisor.backoff_max_ms",
            );
        }
        if self.supervisor.shutdown_timeout_ms == 0 {
            return bad("supervisor.shutdown_timeout_ms", "must be at least 1");
        }
        if self.demo.accounts > 100_000 {
            return bad("demo.accounts", "must be at most 100000");
        }
        if !(0..=crate::domain::wallet::MAX_AMOUNT_MINOR).contains(&self.demo.credit_minor) {
            return bad("demo.credit_minor", "must be between 0 and 1000000000000");
        }
        self.faults.validate()?;
        self.limits.validate()?;
        if self.search.aggregators > 256 {
            return bad("search.aggregators", "must be at most 256");
        }
        if !(1..=60_000).contains(&self.search.deadline_ms) {
            return bad("search.deadline_ms", "must be between 1 and 60000");
        }
        if !(1..=1_000_000).contains(&self.search.mailbox_capacity) {
            return bad("search.mailbox_capacity", "must be between 1 and 1000000");
        }
        if let Err(e) = self.search.cache.validate() {
            return Err(ConfigError::Nested(format!(
                "search.cache.{}: {}",
                e.key, e.problem
            )));
        }
        if let Err(e) = validate_ttl_table(&self.search.cache.ttl_table) {
            return Err(ConfigError::Nested(format!(
                "search.cache.{}: {}",
                e.key, e.problem
            )));
        }
        self.validate_sellers()?;
        if self.bookings.max_in_flight == 0 {
            return bad("bookings.max_in_flight", "must be at least 1");
        }
        if !(1..=600_000).contains(&self.bookings.step_timeout_ms) {
            return bad("bookings.step_timeout_ms", "must be between 1 and 600000");
        }
        if !(1..=1_000_000).contains(&self.bookings.mailbox_capacity) {
            return bad("bookings.mailbox_capacity", "must be between 1 and 1000000");
        }
        // The wire formats' own bound on a price: nothing above it can be sold.
        if !(1..=10_000_000_000).contains(&self.bookings.max_offer_price_minor) {
            return bad(
                "bookings.max_offer_price_minor",
                "must be between 1 and 10000000000",
            );
        }
        if let Err(e) = self.bookings.saga.validate() {
            return Err(ConfigError::Nested(format!(
                "bookings.{}: {}",
                e.key, e.reason
            )));
        }
        if let Err(e) = self.payments.simulated.validate() {
            return Err(ConfigError::Nested(format!("{}: {}", e.key, e.reason)));
        }
        if let Err(e) = self.payments.adapter.validate() {
            return Err(ConfigError::Nested(format!(
                "payments.adapter.{}: {}",
                e.key, e.problem
            )));
        }
        let http = &self.payments.http;
        let checked = match self.payments.kind {
            super::PaymentsKind::Http => http.validate(),
            super::PaymentsKind::Simulated => http.validate_unused(),
        };
        if let Err(e) = checked {
            return Err(ConfigError::Nested(format!(
                "payments.http.{}: {}",
                e.key, e.problem
            )));
        }
        if let Some(token) = &self.admin.token {
            if let Err(e) = crate::domain::access::validate_token("admin.token", token.expose()) {
                return bad("admin.token", &e.message);
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return bad(
                "log.level",
                "must be a tracing filter such as info or wayfare=debug",
            );
        }
        Ok(())
    }

    fn validate_sellers(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, seller) in self.sellers.iter().enumerate() {
            let at = |key: &str, problem: &str| {
                ConfigError::Nested(format!("sellers[{i}].{key}: {problem}"))
            };
            let valid_name = !seller.name.is_empty()
                && seller.name.len() <= 64
                && seller
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name {
                return Err(at("name", "must be 1..64 letters, digits, '-' or '_'"));
            }
            if !seen.insert(seller.name.as_str()) {
                return Err(at("name", "is used by another seller"));
            }
            if seller.verticals.is_empty() {
                return Err(at("verticals", "must name at least one of hotel, flight"));
            }
            let specific = match seller.kind {
                SellerKind::Simulated => seller
                    .simulated
                    .validate()
                    .map_err(|e| e.within("simulated")),
                SellerKind::Http => seller.http.validate().map_err(|e| e.within("http")),
            };
            if let Err(e) =
                specific.and_then(|()| seller.adapter.validate().map_err(|e| e.within("adapter")))
            {
                return Err(at(&e.key, &e.problem));
            }
        }
        Ok(())
    }
}

/// In production, partners (card data, bookings) are reached over `https://`, or over plain
/// `http://` only on the loopback interface (a local TLS sidecar); anything else would cross
/// a network in clear.
fn refuse_plain_remote_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Ok(()); // `validate` names a URL that does not parse.
    };
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if parsed.scheme() == "http" && !loopback {
        return Err(ConfigError::Nested(format!(
            "{key}: plain http:// to {} is refused in production mode: partner traffic would \
             cross the network in clear; use https:// (ca_cert trusts a private CA) or a \
             TLS proxy on the loopback interface",
            parsed.host_str().unwrap_or("?")
        )));
    }
    Ok(())
}

impl StoreConfig {
    /// `[store]`: a PostgreSQL backend needs a URL that parses, and a URL is only accepted
    /// where it is used (so a typo in `backend` cannot leave a node on sled unnoticed).
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        if !(1..=1024).contains(&self.pool_size) {
            return bad("store.pool_size", "must be between 1 and 1024".into());
        }
        if !(1..=600_000).contains(&self.statement_timeout_ms) {
            return bad(
                "store.statement_timeout_ms",
                "must be between 1 and 600000 (10 minutes)".into(),
            );
        }
        match (self.backend, &self.url) {
            (StoreBackend::Postgres, None) => bad(
                "store.url",
                "is required when store.backend = \"postgres\" (e.g. \
                 WAYFARE__STORE__URL=postgres://wayfare@127.0.0.1:5432/wayfare)"
                    .into(),
            ),
            (StoreBackend::Postgres, Some(url)) => crate::store::check_database_url(url.expose())
                .map_err(|(key, reason)| ConfigError::Invalid { key, reason }),
            (StoreBackend::Sled, Some(_)) => bad(
                "store.url",
                "is only used with store.backend = \"postgres\" (the backend is \"sled\")".into(),
            ),
            (StoreBackend::Sled, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    /// The refusal of `text`, as the operator reads it.
    fn refused(text: &str) -> String {
        Config::parse(text, Vec::<(String, String)>::new())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn partner_and_body_bounds_are_checked_naming_the_key() {
        let c = Config::parse("", Vec::<(String, String)>::new()).unwrap();
        assert_eq!(c.bookings.max_offer_price_minor, 10_000_000);
        assert_eq!(
            (c.server.body_timeout_ms, c.server.min_body_bytes_per_sec),
            (10_000, 1_024)
        );
        assert_eq!(c.limits.account_creations_burst, 3);
        for (text, key) in [
            (
                "[bookings]\nmax_offer_price_minor = 0\n",
                "bookings.max_offer_price_minor",
            ),
            (
                "[bookings]\nmax_offer_price_minor = 10000000001\n",
                "bookings.max_offer_price_minor",
            ),
            ("[server]\nbody_timeout_ms = 50\n", "server.body_timeout_ms"),
            (
                "[server]\nmin_body_bytes_per_sec = 0\n",
                "server.min_body_bytes_per_sec",
            ),
            (
                "[limits]\naccount_creations_burst = 0\n",
                "limits.account_creations_burst",
            ),
            (
                "[limits]\naccount_creations_per_second = 0.0\n",
                "limits.account_creations_per_second",
            ),
        ] {
            let e = refused(text);
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
