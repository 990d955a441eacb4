//! The `wayfare` command: parses flags, starts tracing, loads config, calls the library.
//!
//! `--production` (or `WAYFARE_PRODUCTION=1`; one underscore, since `WAYFARE__*` variables
//! are config keys) marks a production process: it refuses to start with fault injection
//! enabled (`faults.enabled = true`), so a chaos config cannot reach real customers, or with
//! demo accounts (`demo.accounts > 0`), whose API keys are public.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use wayfare::config::LogFormat;
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
    /// Validate the configuration (file + environment) and print it resolved.
    CheckConfig {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Config file (default: ./config.toml when present, else built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (overrides store.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Production mode: refuse to start when fault injection is enabled (faults.enabled).
    /// Also WAYFARE_PRODUCTION=1 (or true, yes, on).
    #[arg(long, env = "WAYFARE_PRODUCTION", value_parser = clap::builder::BoolishValueParser::new())]
    production: bool,
}

impl Common {
    fn load(&self) -> anyhow::Result<Config> {
        let default = Path::new("config.toml");
        let path = match &self.config {
            Some(p) => Some(p.as_path()),
            None if default.exists() => Some(default),
            None => None,
        };
        let mut config = Config::load(path)?;
        if let Some(dir) = &self.data_dir {
            config.store.data_dir = dir.clone();
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        config.validate()?;
        if self.production {
            config.refuse_in_production()?;
        }
        Ok(config)
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { common, bind } => {
            let mut config = common.load()?;
            if let Some(bind) = bind {
                config.server.bind = bind;
                config.validate()?;
            }
            wayfare::telemetry::init(config.log.format, &config.log.level);
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
            served?;
            stopped.context("the store failed before shutdown; see the log")?;
        }
        Command::Seed {
            common,
            accounts,
            credit_minor,
        } => {
            let mut config = common.load()?;
            wayfare::telemetry::init(config.log.format, &config.log.level);
            let credit = credit_minor.unwrap_or(config.demo.credit_minor);
            config.demo.accounts = 0;
            let runtime = Runtime::start(config).await?;
            let created = runtime.seed_demo(accounts, credit).await;
            runtime.shutdown().await?;
            println!("created {} demo accounts", created?);
        }
        Command::CheckConfig { common } => {
            let config = common.load()?;
            print!("{}", toml::to_string(&config)?);
            eprintln!("config is valid");
        }
    }
    Ok(())
}
