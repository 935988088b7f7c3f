//! `kiln registry serve` and `kiln registry gc`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kiln_registry::{Config, Registry};

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Serve the OCI distribution API
    Serve(ServeArgs),
    /// Delete blobs no manifest references (safe while the registry serves)
    Gc(GcArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// Configuration file (TOML; see docs/registry.example.toml)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long)]
    addr: Option<SocketAddr>,
}

#[derive(Args)]
pub struct GcArgs {
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

/// The registry's storage root: `--root`, else the config's `storage.root`, else `registry/`
/// under kiln's data root (never the image store's own directory: their blobs must not mix).
fn storage_root(explicit: Option<&Path>, config: &Config) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| config.storage.root.clone())
        .unwrap_or_else(|| kiln_image::store::default_root().join("registry"))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

pub fn run(root: Option<&Path>, command: RegistryCommand) -> Result<()> {
    match command {
        RegistryCommand::Serve(args) => {
            let mut config = load_config(args.config.as_deref())?;
            if let Some(addr) = args.addr {
                config.http.addr = addr;
                config.validate()?;
            }
            init_logging(&config);
            let root = storage_root(root, &config);
            let registry = Registry::open(config, &root)
                .with_context(|| format!("opening the registry at {}", root.display()))?;
            kiln_registry::tune_process();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(kiln_registry::serve(registry, |addr, tls| {
                let scheme = if tls { "https" } else { "http" };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "listening on {scheme}://{addr}");
                let _ = out.flush();
                tracing::info!(%addr, root = %root.display(), "registry serving");
            }))?;
            Ok(())
        }
        RegistryCommand::Gc(args) => {
            let config = load_config(args.config.as_deref())?;
            init_logging(&config);
            let root = storage_root(root, &config);
            let registry = Registry::open(config, &root)
                .with_context(|| format!("opening the registry at {}", root.display()))?;
            let report = registry.collect_garbage()?;
            println!(
                "deleted {} blob(s), expired {} upload session(s)",
                report.blobs_deleted, report.uploads_expired
            );
            Ok(())
        }
    }
}
