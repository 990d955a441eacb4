//! `[server]`, `[store]`, `[runtime]`, `[log]` and `[admin]`: how the process serves,
//! stores, schedules, logs and lets operators in.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// A request that a trusted load balancer stamped (`X-Request-Start`) longer ago than
    /// this is refused unprocessed (503): its client has been told it failed. Keep it
    /// below the balancer's own server timeout. Only with `limits.trusted_proxies`.
    pub max_request_age_ms: u64,
    /// Milliseconds a request body may take to arrive, plus the time its bytes earn at
    /// `min_body_bytes_per_sec`; past that the request gets 408 and its connection is
    /// closed. (Headers have their own, fixed, deadline in the HTTP server.)
    pub body_timeout_ms: u64,
    /// Slowest body accepted, in bytes a second: each byte received extends the body's
    /// deadline by `1 / min_body_bytes_per_sec` s, so a large body sent at a fair pace
    /// finishes and a body trickled in at a byte a second does not hold its connection.
    pub min_body_bytes_per_sec: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            max_body_bytes: 64 * 1024,
            max_connections: 25_000,
            shutdown_timeout_secs: 10,
            max_request_age_ms: 5_000,
            body_timeout_ms: 10_000,
            min_body_bytes_per_sec: 1_024,
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Which store: the embedded sled database (one node) or a PostgreSQL server.
    pub backend: StoreBackend,
    /// Directory of the sled database.
    pub data_dir: PathBuf,
    /// PostgreSQL connection URL (`postgres://user:password@host:port/db`), required when
    /// `backend = "postgres"`. A secret: it may hold a password.
    pub url: Option<Secret>,
    /// PostgreSQL connections kept open by this node.
    pub pool_size: usize,
    /// PostgreSQL `statement_timeout` of every connection, in milliseconds.
    pub statement_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sled,
            data_dir: PathBuf::from("./data"),
            url: None,
            pool_size: 16,
            statement_timeout_ms: 5_000,
        }
    }
}

/// `store.backend`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// The embedded sled database in `store.data_dir`: one node.
    Sled,
    /// A PostgreSQL server at `store.url`, shared by every node of a cluster.
    Postgres,
}

/// `[cluster]`: how this node shows itself to the others when several share one
/// PostgreSQL database (`store.backend = "postgres"`); unused on sled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name in the cluster, unique among the nodes: it owns sagas by it. Empty:
    /// `node-` and the address (`cluster.address`, else `server.bind`).
    pub node_id: String,
    /// The address other nodes and operators reach this node at. Empty: `server.bind`.
    pub address: String,
    /// How long a node's claim on a saga (its lease) lasts without renewal. A node that
    /// dies has its unfinished sagas taken over by another node after about this long.
    pub lease_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            address: String::new(),
            lease_ms: 5_000,
        }
    }
}

impl ClusterConfig {
    /// The address this node advertises.
    pub fn address_or(&self, bind: &str) -> String {
        if self.address.is_empty() {
            bind.to_owned()
        } else {
            self.address.clone()
        }
    }

    /// This node's id.
    pub fn node_id_or(&self, bind: &str) -> String {
        if self.node_id.is_empty() {
            format!("node-{}", self.address_or(bind))
        } else {
            self.node_id.clone()
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
