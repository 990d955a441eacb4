//! The `wayfare` command: parses flags, starts tracing, loads config, calls the library.
//!
//! `--production` (or `WAYFARE_PRODUCTION=1`; one underscore, since `WAYFARE__*` variables
//! are config keys) marks a production process: it refuses to start with fault injection
//! enabled (`faults.enabled = true`), so a chaos config cannot reach real customers, with
//! demo accounts (`demo.accounts > 0`), whose API keys are public, with simulated sellers or
//! a simulated payment gateway, which book and charge no one, or with a partner reached over
//! plain http on a non-loopback address.
//!
//! Any failure prints `error: <message>` (and its causes, one per line) on stderr and
//! exits with status 1; never a backtrace.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use wayfare::config::{env_overrides, LoadedConfig, LogFormat};
use wayfare::telemetry::TelemetryGuard;
use wayfare::{Config, Runtime};

/// Actor-based runtime for a travel marketplace.
#[derive(Debug, Parser)]
#[command(name = "wayfare", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API server until SIGINT or SIGTERM.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Listen address (overrides server.bind); port 0 picks a free port.
        #[arg(long)]
        bind: Option<String>,
    },
    /// Create demo accounts Person_0..Person_{N-1} (existing ones are left alone).
    Seed {
        #[command(flatten)]
        common: Common,
        /// How many demo accounts.
        #[arg(long)]
        accounts: u64,
        /// Wallet credit of each, in minor units (default: demo.credit_minor).
        #[arg(long)]
        credit_minor: Option<i64>,
    },
    /// Apply the PostgreSQL schema migrations this binary carries (store.backend =
    /// "postgres"); safe to run from several nodes at once: one applies, the others wait.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Validate the configuration (file + environment) and print it resolved.
    CheckConfig {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Config file; it must exist (default: ./config.toml when present, else the built-in
    /// defaults, which are the shipped config.toml: the demo with three simulated sellers
    /// and ten demo accounts).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (overrides store.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Production mode: refuse to start with fault injection (faults.enabled), demo
    /// accounts (demo.accounts > 0), simulated sellers or payment gateway, or a partner
    /// URL in plain http to a non-loopback host. Also WAYFARE_PRODUCTION=1 (or true, yes, on).
    #[arg(long, env = "WAYFARE_PRODUCTION", value_parser = clap::builder::BoolishValueParser::new())]
    production: bool,
}

impl Common {
    /// Loads the config as every subcommand does: the file layer, `WAYFARE__*` variables,
    /// then the flags, validated; refusals name the file line, variable or flag at fault.
    fn load(&self) -> anyhow::Result<LoadedConfig> {
        let default = Path::new("config.toml");
        let path = match &self.config {
            // An explicit path must exist: falling back to the demo would run something
            // the operator did not ask for.
            Some(p) => Some(p.as_path()),
            None if default.exists() => Some(default),
            None => None,
        };
        let mut loaded = Config::load_layered(path, env_overrides()?)?;
        if let Some(dir) = &self.data_dir {
            loaded.config.store.data_dir = dir.clone();
            loaded.set_by_flag("--data-dir", "store.data_dir");
        }
        if let Some(format) = self.log_format {
            loaded.config.log.format = format;
            loaded.set_by_flag("--log-format", "log.format");
        }
        loaded.apply_otel_env(|name| std::env::var(name).ok())?;
        if self.production {
            loaded.refuse_in_production()?;
        }
        Ok(loaded)
    }
}

/// `wayfare migrate`: applies the PostgreSQL schema (see `Command::Migrate`).
#[cfg(feature = "postgres")]
async fn migrate(store: &wayfare::config::StoreConfig) -> anyhow::Result<()> {
    let pg = wayfare::store::postgres::PgStore::connect(store)?;
    let migrated = pg.migrate().await?;
    match migrated.applied.as_slice() {
        [] => println!("schema at version {} (already current)", migrated.version),
        applied => println!(
            "schema at version {} (applied {})",
            migrated.version,
            applied
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    Ok(())
}

/// `wayfare migrate` in a build without the PostgreSQL store.
#[cfg(not(feature = "postgres"))]
async fn migrate(_: &wayfare::config::StoreConfig) -> anyhow::Result<()> {
    anyhow::bail!(
        "this wayfare was built without the PostgreSQL store (--no-default-features): build it with its default features"
    )
}

/// Starts tracing with the config's settings (span export too, for `serve` with an OTLP
/// endpoint) and logs where the config came from (names only: a variable's value may be a
/// secret).
fn init_tracing(loaded: &LoadedConfig, export: bool) -> anyhow::Result<TelemetryGuard> {
    let config = &loaded.config;
    let guard = if export {
        wayfare::telemetry::init_with(config.log.format, &config.log.level, &config.telemetry)
            .context("cannot start the OTLP trace exporter ([telemetry])")?
    } else {
        wayfare::telemetry::init(config.log.format, &config.log.level);
        TelemetryGuard::default()
    };
    let sources = loaded
        .sources
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(%sources, "Loaded configuration.");
    if let Some(endpoint) = config.telemetry.otlp_endpoint.as_deref().filter(|_| export) {
        tracing::info!(endpoint, sample_ratio = config.telemetry.sample_ratio, service = %config.telemetry.service_name, "Exporting spans over OTLP/HTTP.");
    }
    Ok(guard)
}

/// Any start-up or run failure: `error: <message>` and its causes on stderr, exit 1. No
/// backtrace, whatever `RUST_BACKTRACE` says: these are operator errors, not bugs.
fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match actix_web::rt::System::new().block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Caps glibc's malloc arenas at two, before any thread starts. By default every thread
/// that allocates may get an arena of its own (up to eight per core), and the pages freed
/// into each stay resident: with wayfare's dozen threads that cost about 1 MB of idle RSS
/// (BENCHMARKS.md) and bought nothing, since its threads rarely allocate at once. An
/// operator's own `MALLOC_ARENA_MAX` wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes an allocator setting; no thread has started yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { common, bind } => {
            let mut loaded = common.load()?;
            if let Some(bind) = bind {
                loaded.config.server.bind = bind;
                loaded.set_by_flag("--bind", "server.bind");
                loaded.validate()?;
            }
            let telemetry = init_tracing(&loaded, true)?;
            let config = loaded.config;
            let listener = TcpListener::bind(&config.server.bind)
                .with_context(|| format!("cannot listen on {}", config.server.bind))?;
            let addr = listener.local_addr()?;
            // Handlers first: a SIGTERM during start-up must still shut down gracefully.
            let shutdown = wayfare::shutdown_signal();
            let runtime = Runtime::start(config).await?;
            // A stable line on stdout so scripts and tests learn the (possibly ephemeral) port.
            println!("wayfare listening on http://{addr}");
            tracing::info!(%addr, "Serving HTTP.");
            let served = wayfare::http::serve(runtime.clone(), listener, shutdown).await;
            let stopped = runtime.shutdown().await;
            telemetry.shutdown();
            served?;
            stopped.context("the store failed before shutdown; see the log")?;
        }
        Command::Seed {
            common,
            accounts,
            credit_minor,
        } => {
            let loaded = common.load()?;
            init_tracing(&loaded, false)?;
            let mut config = loaded.config;
            let credit = credit_minor.unwrap_or(config.demo.credit_minor);
            config.demo.accounts = 0;
            let runtime = Runtime::start(config).await?;
            let created = runtime.seed_demo(accounts, credit).await;
            runtime.shutdown().await?;
            println!("created {} demo accounts", created?);
        }
        Command::Migrate { common } => {
            let loaded = common.load()?;
            init_tracing(&loaded, false)?;
            let store = &loaded.config.store;
            if store.backend != wayfare::config::StoreBackend::Postgres {
                anyhow::bail!(
                    "store.backend is \"sled\", which needs no migrations; migrate applies the \
                     PostgreSQL schema (set store.backend = \"postgres\" and store.url)"
                );
            }
            migrate(store).await?;
        }
        Command::CheckConfig { common } => {
            let loaded = common.load()?;
            print!("{}", toml::to_string(&loaded.config)?);
            let sources = loaded
                .sources
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            eprintln!("config is valid (from {sources})");
        }
    }
    Ok(())
}
