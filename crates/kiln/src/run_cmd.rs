//! `kiln run`: an image as a container, in the foreground, through an OCI runtime.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_image::{ImageStore, Platform};
use kiln_runtime::bundle::{Network, RunConfig, Volume};
use kiln_runtime::container::Runtime;

#[derive(Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Container name [default: a random one]
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable: KEY=VALUE, or KEY to pass the host's value
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Replace the image's entrypoint (as one program; arguments follow the image name)
    #[arg(long)]
    entrypoint: Option<String>,
    /// Network: host (the host's interfaces) or none (loopback only)
    #[arg(long, default_value = "host")]
    network: String,
    /// Bind mount: SRC:DST[:ro]
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// User: name|uid[:group|gid]
    #[arg(short, long)]
    user: Option<String>,
    /// Keep standard input open
    #[arg(short, long)]
    interactive: bool,
    /// OCI runtime binary [default: runc]
    #[arg(long, default_value = "runc")]
    runtime: String,
    /// Image to run
    image: String,
    /// Command and arguments (replace the image's Cmd)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn container_id(name: Option<&str>) -> Result<String> {
    match name {
        Some(n) => {
            let valid = !n.is_empty()
                && n.len() <= 128
                && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                bail!("invalid container name {n:?}: must match [a-zA-Z0-9][a-zA-Z0-9_.-]*");
            }
            Ok(n.to_string())
        }
        None => {
            let mut bytes = [0u8; 6];
            let f = std::fs::File::open("/dev/urandom").context("reading /dev/urandom")?;
            std::io::Read::read_exact(&mut &f, &mut bytes).context("reading /dev/urandom")?;
            Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
        }
    }
}

pub fn run(root: &Path, args: RunArgs) -> Result<ExitCode> {
    if !args.rm {
        bail!("kiln run keeps no containers yet: pass --rm");
    }
    let store = ImageStore::open(root)?;
    let found = store.find(&args.image)?;
    let image = store.image(&found.target, &Platform::host())?;
    let network = match args.network.as_str() {
        "host" => Network::Host,
        "none" => Network::None,
        other => bail!("--network {other}: expected host or none"),
    };
    let id = container_id(args.name.as_deref())?;
    let volumes = args
        .volume
        .iter()
        .map(|v| Volume::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    let run = RunConfig {
        entrypoint: args.entrypoint.map(|e| vec![e]),
        cmd: args.command,
        env: args.env,
        workdir: args.workdir,
        user: args.user,
        network,
        terminal: false,
        volumes,
        hostname: id.chars().take(12).collect(),
    };
    let runtime = Runtime::new(&args.runtime, &root.join("runtime"));
    if runtime.bundle_dir(&id).exists() {
        bail!("a container named {id} already exists");
    }
    let rootfs = runtime
        .create_bundle(store.blobs(), &image, &id, &run)
        .with_context(|| format!("preparing container {id}"))?;
    let exit = runtime.run_foreground(&id, args.interactive);
    let removed = runtime.remove_bundle(&id, &rootfs);
    let exit = exit.with_context(|| format!("running container {id}"))?;
    removed.with_context(|| format!("removing container {id}"))?;
    Ok(ExitCode::from(exit.code.clamp(0, 255) as u8))
}
