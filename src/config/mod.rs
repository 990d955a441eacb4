//! Configuration: where it comes from, what it holds, and what is refused.
//!
//! # Layers
//!
//! Lowest first, each overriding the one before:
//!
//! 1. **Code defaults**: every key has one (`Default` impls), so an empty file is valid.
//! 2. **One TOML file**: the `--config` path (which must exist), else `./config.toml` when
//!    present, else the shipped `config.toml` compiled into the binary
//!    ([`SHIPPED_CONFIG`], the demo: three simulated sellers and ten demo accounts). A
//!    file replaces the shipped one wholly, so a production file never inherits demo data.
//! 3. **Environment**: `WAYFARE__SECTION__KEY=value` (double underscore between levels,
//!    see [`ENV_PREFIX`]).
//!
//! Then validation. Every error names the key and where it came from: the file and its
//! line, or the environment variable ([`ConfigSource`]). An unknown key or a bad value
//! fails start-up; nothing is ignored.
//!
//! # Where a key lives
//!
//! | TOML path | file |
//! |---|---|
//! | `[server]`, `[store]`, `[runtime]`, `[log]`, `[admin]` | `service.rs` |
//! | `[accounts]`, `[supervisor]`, `[demo]` | `accounts.rs` |
//! | `[search]`, `[[sellers]]`, `[bookings]` | `market.rs` |
//! | `[faults]` | `faults.rs` |
//! | `[limits]` | `limits.rs` |
//! | `[telemetry]` (and the `OTEL_*` variables) | `telemetry.rs` |
//! | `[payments]` | `market.rs` (`PaymentsConfig`; `[payments.simulated]`, `[payments.http]`) |
//! | layering, sources, error locations | `load.rs` |
//! | range checks, production rules | `validate.rs` |

mod accounts;
mod adapters;
mod faults;
mod limits;
mod load;
mod market;
mod service;
mod telemetry;
mod validate;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use accounts::{AccountsConfig, DemoConfig, SupervisorConfig};
pub use adapters::{AdapterConfig, GatewayAdapterConfig};
pub use faults::FaultsConfig;
pub use limits::{LimitsConfig, Network};
pub use load::{env_overrides, ConfigSource, LoadedConfig, Location, SHIPPED_CONFIG};
pub use market::{
    BookingsConfig, PaymentsConfig, PaymentsKind, SearchConfig, SellerEntry, SellerKind,
};
pub use service::{
    AdminConfig, ClusterConfig, LogConfig, LogFormat, RuntimeConfig, Secret, ServerConfig,
    StoreBackend, StoreConfig,
};
pub use telemetry::{TelemetryConfig, OTEL_VARIABLES};

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
    /// A refused key with where it was set: a file line, a variable or a flag.
    #[error("{error} ({at})")]
    Located {
        /// The refusal.
        error: Box<ConfigError>,
        /// Where the refused value was set.
        at: Location,
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
    /// The card gateway.
    pub payments: PaymentsConfig,
    /// Operator access.
    pub admin: AdminConfig,
    /// Rate limits per API key and per client address.
    pub limits: LimitsConfig,
    /// This node among others sharing one PostgreSQL database.
    pub cluster: ClusterConfig,
    /// Distributed tracing (OTLP export); off by default.
    pub telemetry: TelemetryConfig,
}

impl Config {
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

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::domain::money::Currency;
    use crate::faults::ActorKind;

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
