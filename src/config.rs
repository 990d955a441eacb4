//! Configuration: `config.toml`, then `WAYFARE__SECTION__KEY` environment overrides, then
//! validation. Every key has a default, so an empty file is a valid config; an unknown key
//! or a bad value fails start-up with the key named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::actors::seller::AdapterConfig;
use crate::domain::money::Currency;
use crate::domain::saga::SagaConfig;
use crate::domain::search::validate_ttl_table;
use crate::domain::search_cache::SearchCacheConfig;
use crate::faults::ActorKind;
use crate::payments::simulated::SimulatedGatewayConfig;
use crate::sellers::http::HttpSellerConfig;
use crate::sellers::simulated::SimulatedSellerConfig;
use crate::sellers::Vertical;
use crate::supervisor::RestartPolicy;

/// Prefix of environment overrides: `WAYFARE__ACCOUNTS__SHARDS=8` sets `accounts.shards`.
pub const ENV_PREFIX: &str = "WAYFARE__";

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// Path.
        path: PathBuf,
        /// OS error.
        reason: String,
    },
    /// The TOML does not parse or does not fit the schema (unknown key, wrong type).
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value in a nested section is out of range; the text starts with the key.
    #[error("invalid config key {0}")]
    Nested(String),
    /// A value is out of its allowed range.
    #[error("invalid config key {key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `accounts.shards`.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP server.
    pub server: ServerConfig,
    /// Storage.
    pub store: StoreConfig,
    /// Threads that run actors.
    pub runtime: RuntimeConfig,
    /// Account shards.
    pub accounts: AccountsConfig,
    /// Restart policy of every supervisor.
    pub supervisor: SupervisorConfig,
    /// Demo data created on an empty store.
    pub demo: DemoConfig,
    /// Logging.
    pub log: LogConfig,
    /// Fault injection for tests and chaos drills; everything off by default.
    pub faults: FaultsConfig,
    /// Search aggregators and their cache.
    pub search: SearchConfig,
    /// The sellers, one `[[sellers]]` table each.
    pub sellers: Vec<SellerEntry>,
    /// Booking sagas.
    pub bookings: BookingsConfig,
    /// The simulated payment gateway.
    pub payments: SimulatedGatewayConfig,
    /// Operator access.
    pub admin: AdminConfig,
}

/// `[bookings]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BookingsConfig {
    /// Sagas running at once; new bookings beyond it get 503.
    pub max_in_flight: usize,
    /// Deadline of one saga step's call (seller, gateway, wallet), in ms. A step without an
    /// answer by then has an unknown outcome and is reconciled.
    pub step_timeout_ms: u64,
    /// Requests queued or in flight at the coordinator.
    pub mailbox_capacity: usize,
    /// Retry budgets and backoff of saga steps.
    pub saga: SagaConfig,
}

impl Default for BookingsConfig {
    fn default() -> Self {
        BookingsConfig {
            max_in_flight: 10_000,
            step_timeout_ms: 5_000,
            mailbox_capacity: 4096,
            saga: SagaConfig::default(),
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token of operator endpoints (`/v1/system/*`, `/v1/admin/*`, `/metrics`),
    /// which also acts on every account; without one, operator endpoints are refused.
    /// Prefer setting it through `WAYFARE__ADMIN__TOKEN`.
    pub token: Option<Secret>,
    /// Whether `/metrics` needs the operator token too (turn off only when the port is
    /// reachable by the scraper alone).
    pub protect_metrics: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token: None,
            protect_metrics: true,
        }
    }
}

/// A secret from config: `Debug` and serialization (`check-config`) print `<redacted>`,
/// so it never reaches a log or a terminal by accident.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret in clear, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// `[search]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Aggregator actors; 0 means one per core.
    pub aggregators: usize,
    /// How long a search waits for sellers, in ms; it answers with what arrived.
    pub deadline_ms: u64,
    /// Requests queued or in flight per aggregator.
    pub mailbox_capacity: usize,
    /// The merged-result cache of each aggregator.
    pub cache: SearchCacheConfig,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            aggregators: 0,
            deadline_ms: 1000,
            mailbox_capacity: 4096,
            cache: SearchCacheConfig::default(),
        }
    }
}

/// Which implementation talks to a seller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SellerKind {
    /// In-process simulated seller (`[sellers.simulated]`).
    Simulated,
    /// JSON over HTTP (`[sellers.http]`), wire format in docs/seller-wire-format.md.
    Http,
}

/// `[[sellers]]`: one seller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SellerEntry {
    /// Unique name (letters, digits, `-`, `_`), used in offers, metrics and logs.
    pub name: String,
    /// Implementation.
    pub kind: SellerKind,
    /// Verticals it serves.
    #[serde(default = "all_verticals")]
    pub verticals: Vec<Vertical>,
    /// Settings of a simulated seller (its `name` is taken from the entry).
    #[serde(default)]
    pub simulated: SimulatedSellerConfig,
    /// Settings of an HTTP seller (its `name` is taken from the entry).
    #[serde(default)]
    pub http: HttpSellerConfig,
    /// Timeouts, retries, breaker, bulkhead, look-to-book.
    #[serde(default)]
    pub adapter: AdapterConfig,
}

fn all_verticals() -> Vec<Vertical> {
    vec![Vertical::Hotel, Vertical::Flight]
}

/// `[faults]`: deliberate failures, for tests and chaos drills only. Everything is off by
/// default, nothing acts unless `enabled` is true, and `--production` refuses a config with
/// `enabled = true` (see [`FaultsConfig::refuse_in_production`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    /// Master switch: nothing below has any effect unless this is true.
    pub enabled: bool,
    /// Delay added to every account shard reply, in milliseconds.
    pub account_reply_delay_ms: u64,
    /// Probability (0..=1) that an account shard panics while handling a message. Kept
    /// for existing configs; an account shard panics with the larger of this and
    /// `panic_rate` when `panic_actors` lists `account`.
    pub account_panic_rate: f64,
    /// Probability (0..=1) that a handler of an actor kind in `panic_actors` panics. The
    /// actor's supervisor restarts it; the caller in flight gets `Crashed`.
    pub panic_rate: f64,
    /// Actor kinds `panic_rate` applies to: `account`, `seller`, `search`, `saga`,
    /// `mailer`.
    pub panic_actors: Vec<ActorKind>,
    /// Delay before each store flush completes, in milliseconds: every acknowledged write
    /// waits for a flush, so this delays acknowledgements as a slow disk would. (The
    /// synchronous write call itself is not slowed: that would stall an actor thread.)
    pub store_write_delay_ms: u64,
    /// Probability (0..=1) that a store write is refused with an I/O error. The write is
    /// atomic, so a refused one leaves nothing behind.
    pub store_write_failure_rate: f64,
    /// Probability (0..=1) that a call to a seller fails with `Unavailable` before it
    /// reaches the seller. Applies to simulated sellers and sellers added in code, not to
    /// HTTP sellers (their fake server has its own knobs).
    pub seller_failure_rate: f64,
    /// Probability (0..=1) that a seller call never answers (the adapter's timeout ends
    /// it); half of those hang after the seller acted, so the outcome is unknown.
    pub seller_hang_rate: f64,
    /// Probability (0..=1) that a seller answers garbage: a reply that fails the wire
    /// validation an HTTP seller's reply goes through (negative price, unknown currency,
    /// empty SKU or reservation id). For a booking or cancellation the seller acted first.
    pub seller_garbage_rate: f64,
    /// Probability (0..=1) that a payment gateway call fails with `Unavailable` before it
    /// reaches the gateway.
    pub payment_failure_rate: f64,
    /// Probability (0..=1) that a payment gateway call never answers (the saga step
    /// timeout ends it); half of those hang after the gateway acted.
    pub payment_hang_rate: f64,
}

impl FaultsConfig {
    /// Range checks, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        for (key, rate) in [
            ("faults.account_panic_rate", self.account_panic_rate),
            ("faults.panic_rate", self.panic_rate),
            (
                "faults.store_write_failure_rate",
                self.store_write_failure_rate,
            ),
            ("faults.seller_failure_rate", self.seller_failure_rate),
            ("faults.seller_hang_rate", self.seller_hang_rate),
            ("faults.seller_garbage_rate", self.seller_garbage_rate),
            ("faults.payment_failure_rate", self.payment_failure_rate),
            ("faults.payment_hang_rate", self.payment_hang_rate),
        ] {
            // `contains` is false for NaN too.
            if !(0.0..=1.0).contains(&rate) {
                return bad(key, "must be between 0 and 1");
            }
        }
        for (key, ms) in [
            ("faults.account_reply_delay_ms", self.account_reply_delay_ms),
            ("faults.store_write_delay_ms", self.store_write_delay_ms),
        ] {
            if ms > 600_000 {
                return bad(key, "must be at most 600000");
            }
        }
        if self.panic_rate > 0.0 && self.panic_actors.is_empty() {
            return bad(
                "faults.panic_actors",
                "must name at least one of account, seller, search, saga, mailer when faults.panic_rate is set",
            );
        }
        Ok(())
    }

    /// The production rule: a process started with `--production` (or
    /// `WAYFARE_PRODUCTION=1`) refuses a config with fault injection enabled.
    pub fn refuse_in_production(&self) -> Result<(), ConfigError> {
        if self.enabled {
            return Err(ConfigError::Invalid {
                key: "faults.enabled",
                reason: "must be false in production mode (--production or WAYFARE_PRODUCTION): \
                         fault injection crashes actors and fails writes on purpose"
                    .into(),
            });
        }
        Ok(())
    }

    /// Probability that a handler of `kind` panics: 0 unless enabled.
    pub fn panic_rate_of(&self, kind: ActorKind) -> f64 {
        if !self.enabled {
            return 0.0;
        }
        let listed = if self.panic_actors.contains(&kind) {
            self.panic_rate
        } else {
            0.0
        };
        if kind == ActorKind::Account {
            listed.max(self.account_panic_rate)
        } else {
            listed
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address.
    pub bind: String,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Connections served at once per worker; more wait in the accept backlog.
    pub max_connections: usize,
    /// Seconds to finish in-flight requests on shutdown.
    pub shutdown_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            max_body_bytes: 64 * 1024,
            max_connections: 25_000,
            shutdown_timeout_secs: 10,
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the sled database.
    pub data_dir: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("./data"),
        }
    }
}

/// `[runtime]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Actor threads (arbiters); 0 means half the cores, at least one (the HTTP workers
    /// take the other half: measured best on 2 cores, see BENCHMARKS.md).
    pub arbiters: usize,
}

/// `[accounts]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// Number of account shards; 0 means two per core.
    pub shards: usize,
    /// Requests queued or in flight per shard before callers get `Overloaded`.
    pub mailbox_capacity: usize,
    /// Deadline of a request to a shard, in milliseconds.
    pub deadline_ms: u64,
    /// Accounts kept in memory per shard (the store holds them all).
    pub cache_capacity: usize,
    /// Currency of every wallet.
    pub currency: Currency,
    /// Largest ledger page a client may ask for.
    pub max_page_size: usize,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            shards: 0,
            mailbox_capacity: 1024,
            deadline_ms: 2000,
            cache_capacity: 100_000,
            currency: Currency::EUR,
            max_page_size: 500,
        }
    }
}

/// `[supervisor]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// At most this many restarts...
    pub max_restarts: u32,
    /// ...within this many seconds, else the supervisor gives up and escalates.
    pub within_secs: u64,
    /// First restart backoff, in milliseconds.
    pub backoff_min_ms: u64,
    /// Largest restart backoff, in milliseconds.
    pub backoff_max_ms: u64,
    /// A child quiet this long (seconds) starts again from the smallest backoff.
    pub reset_after_secs: u64,
    /// Time an actor gets to stop before it is aborted, in milliseconds.
    pub shutdown_timeout_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: 10,
            within_secs: 10,
            backoff_min_ms: 10,
            backoff_max_ms: 2000,
            reset_after_secs: 30,
            shutdown_timeout_ms: 5000,
        }
    }
}

impl SupervisorConfig {
    /// The policy every supervisor uses.
    pub fn policy(&self) -> RestartPolicy {
        RestartPolicy {
            max_restarts: self.max_restarts,
            within: Duration::from_secs(self.within_secs),
            backoff_min: Duration::from_millis(self.backoff_min_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            reset_after: Duration::from_secs(self.reset_after_secs),
        }
    }
}

/// `[demo]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Demo accounts (Person_0, Person_1, ...) created at start if missing; 0 for none.
    pub accounts: u64,
    /// Wallet credit of each demo account, in minor units.
    pub credit_minor: i64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            accounts: 0,
            credit_minor: 10_000,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Filter in `tracing_subscriber::EnvFilter` syntax (`RUST_LOG` wins when set).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Loads `path` (or defaults when `None`), applies `WAYFARE__*` overrides from the
    /// process environment, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`load`](Self::load) with an explicit environment (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.to_owned(),
                reason: e.to_string(),
            })?,
            None => String::new(),
        };
        Self::parse(&text, env)
    }

    /// Parses TOML text, applies overrides and validates.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        for (name, raw) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
            set_path(&mut table, &keys, env_value(&raw))
                .map_err(|reason| ConfigError::Parse(format!("{name}: {reason}")))?;
        }
        // Re-rendering lets toml's own deserializer report errors with the key and line.
        let merged = toml::to_string(&table).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let config: Config =
            toml::from_str(&merged).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The production rules (`--production` or `WAYFARE_PRODUCTION=1`): no fault injection,
    /// and no demo accounts, whose API keys are published in the README.
    pub fn refuse_in_production(&self) -> Result<(), ConfigError> {
        self.faults.refuse_in_production()?;
        if self.demo.accounts > 0 {
            return Err(ConfigError::Invalid {
                key: "demo.accounts",
                reason: "must be 0 in production mode: demo accounts have well-known API keys"
                    .into(),
            });
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
        if self.server.workers > 256 {
            return bad("server.workers", "must be at most 256");
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
        if let Err(e) = self.bookings.saga.validate() {
            return Err(ConfigError::Nested(format!(
                "bookings.{}: {}",
                e.key, e.reason
            )));
        }
        if let Err(e) = self.payments.validate() {
            return Err(ConfigError::Nested(format!("{}: {}", e.key, e.reason)));
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

    /// Search aggregators after resolving 0 to the core count.
    pub fn search_aggregators(&self) -> usize {
        if self.search.aggregators == 0 {
            cores()
        } else {
            self.search.aggregators
        }
    }

    /// HTTP workers after resolving 0 to the core count.
    pub fn http_workers(&self) -> usize {
        if self.server.workers == 0 {
            cores()
        } else {
            self.server.workers
        }
    }

    /// Actor arbiters after resolving 0 to half the cores (at least one).
    pub fn arbiters(&self) -> usize {
        if self.runtime.arbiters == 0 {
            (cores() / 2).max(1)
        } else {
            self.runtime.arbiters
        }
    }

    /// Account shards after resolving 0 to two per core.
    pub fn account_shards(&self) -> usize {
        if self.accounts.shards == 0 {
            2 * cores()
        } else {
            self.accounts.shards
        }
    }
}

/// An environment value as TOML: numbers and booleans keep their type, anything else is
/// a string (so `WAYFARE__STORE__DATA_DIR=/tmp/x` needs no quotes).
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    match keys {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("{first} is not a section")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn empty_config_is_all_defaults() {
        let c = Config::parse("", no_env()).unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:8080");
        assert_eq!(c.accounts.currency, Currency::EUR);
    }

    #[test]
    fn shipped_config_toml_is_valid() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
            .expect("config.toml at the repository root");
        Config::parse(&text, no_env()).unwrap();
    }

    #[test]
    fn env_overrides_win_and_keep_types() {
        let env = vec![
            ("WAYFARE__ACCOUNTS__SHARDS".to_string(), "7".to_string()),
            (
                "WAYFARE__STORE__DATA_DIR".to_string(),
                "/tmp/x y".to_string(),
            ),
            ("UNRELATED".to_string(), "1".to_string()),
        ];
        let c = Config::parse("[accounts]\nshards = 3\n", env).unwrap();
        assert_eq!(c.accounts.shards, 7);
        assert_eq!(c.store.data_dir, PathBuf::from("/tmp/x y"));
    }

    #[test]
    fn seller_errors_name_the_seller_and_key() {
        let text = "[[sellers]]\nname = \"a\"\nkind = \"simulated\"\n[sellers.simulated]\nerror_rate = 2.0\n";
        let e = Config::parse(text, no_env()).unwrap_err();
        assert!(
            e.to_string().contains("sellers[0].simulated.error_rate"),
            "{e}"
        );
        let text = "[[sellers]]\nname = \"a\"\nkind = \"simulated\"\n[[sellers]]\nname = \"a\"\nkind = \"http\"\n";
        let e = Config::parse(text, no_env()).unwrap_err();
        assert!(e.to_string().contains("sellers[1].name"), "{e}");
        let text = "[[sellers]]\nname = \"a\"\nkind = \"carrier-pigeon\"\n";
        let e = Config::parse(text, no_env()).unwrap_err();
        assert!(e.to_string().contains("kind"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[accounts]\nshards = \"many\"\n", no_env()).unwrap_err();
        assert!(e.to_string().contains("shards"), "{e}");
        let e = Config::parse("[accounts]\nshardz = 1\n", no_env()).unwrap_err();
        assert!(e.to_string().contains("shardz"), "{e}");
        let e = Config::parse("[accounts]\ndeadline_ms = 0\n", no_env()).unwrap_err();
        assert!(e.to_string().contains("accounts.deadline_ms"), "{e}");
        let e = Config::parse("[accounts]\ncurrency = \"XXX\"\n", no_env()).unwrap_err();
        assert!(e.to_string().contains("currency"), "{e}");
        let e = Config::parse("[server]\nbind = \"nowhere\"\n", no_env()).unwrap_err();
        assert!(e.to_string().contains("server.bind"), "{e}");
        let env = vec![("WAYFARE__DEMO__ACCOUNTS".into(), "-1".into())];
        let e = Config::parse("", env).unwrap_err();
        assert!(e.to_string().contains("accounts"), "{e}");
    }

    #[test]
    fn faults_are_off_by_default_and_validated_with_the_key_named() {
        let c = Config::parse("", no_env()).unwrap();
        assert!(!c.faults.enabled);
        for kind in ActorKind::ALL {
            assert_eq!(c.faults.panic_rate_of(kind), 0.0);
        }
        for (text, key) in [
            (
                "panic_rate = 1.5\npanic_actors = [\"saga\"]",
                "faults.panic_rate",
            ),
            ("panic_rate = 0.1", "faults.panic_actors"),
            (
                "store_write_failure_rate = -0.1",
                "faults.store_write_failure_rate",
            ),
            (
                "store_write_delay_ms = 600001",
                "faults.store_write_delay_ms",
            ),
            ("seller_failure_rate = 2.0", "faults.seller_failure_rate"),
            ("seller_hang_rate = 1.01", "faults.seller_hang_rate"),
            ("seller_garbage_rate = nan", "faults.seller_garbage_rate"),
            ("payment_failure_rate = 3.0", "faults.payment_failure_rate"),
            ("payment_hang_rate = -1.0", "faults.payment_hang_rate"),
            ("account_panic_rate = 1.1", "faults.account_panic_rate"),
            (
                "account_reply_delay_ms = 700000",
                "faults.account_reply_delay_ms",
            ),
            ("panic_actors = [\"coordinator\"]", "panic_actors"),
        ] {
            let e = Config::parse(&format!("[faults]\nenabled = true\n{text}\n"), no_env())
                .unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        let env = vec![("WAYFARE__FAULTS__SELLER_HANG_RATE".into(), "7".into())];
        let e = Config::parse("", env).unwrap_err();
        assert!(e.to_string().contains("faults.seller_hang_rate"), "{e}");
    }

    #[test]
    fn panic_rates_apply_to_the_listed_kinds_only_when_enabled() {
        let text = "[faults]\nenabled = true\npanic_rate = 0.2\npanic_actors = [\"saga\", \"search\"]\naccount_panic_rate = 0.05\n";
        let c = Config::parse(text, no_env()).unwrap();
        assert_eq!(c.faults.panic_rate_of(ActorKind::Saga), 0.2);
        assert_eq!(c.faults.panic_rate_of(ActorKind::Search), 0.2);
        assert_eq!(c.faults.panic_rate_of(ActorKind::Seller), 0.0);
        assert_eq!(c.faults.panic_rate_of(ActorKind::Account), 0.05);
        let mut listed = c.faults.clone();
        listed.panic_actors.push(ActorKind::Account);
        assert_eq!(listed.panic_rate_of(ActorKind::Account), 0.2);
        listed.enabled = false;
        assert_eq!(listed.panic_rate_of(ActorKind::Saga), 0.0);
        assert_eq!(listed.panic_rate_of(ActorKind::Account), 0.0);
    }

    #[test]
    fn production_refuses_enabled_faults_naming_the_key() {
        let off = Config::parse("", no_env()).unwrap();
        off.faults.refuse_in_production().unwrap();
        // Rates set but the switch off: nothing acts, so production accepts it.
        let idle = Config::parse("[faults]\nseller_hang_rate = 0.5\n", no_env()).unwrap();
        idle.faults.refuse_in_production().unwrap();
        let on = Config::parse("[faults]\nenabled = true\n", no_env()).unwrap();
        let e = on.faults.refuse_in_production().unwrap_err();
        assert!(e.to_string().contains("faults.enabled"), "{e}");
        assert!(e.to_string().contains("production"), "{e}");
    }
}
