//! `kiln login`, `kiln logout`, `kiln push`, `kiln pull`: docker's commands and output.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_client::{
    Client, CredentialProvider, Credentials, DockerConfig, Progress, PullOptions, TransportOptions,
};
use kiln_image::{ImageStore, Platform, Reference};

use crate::transfer_progress::{Display, TransferKind};

/// How to reach registries; shared by every command that talks to one.
#[derive(Args, Clone, Default)]
pub struct RegistryArgs {
    /// Require HTTPS and verified certificates for this registry [default: true]; `false`
    /// also allows plain HTTP. Loopback registries may always use plain HTTP.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// A PEM file of certificate authorities to trust beside the system's (also read:
    /// /etc/containers/certs.d/HOST/*.crt and /etc/docker/certs.d/HOST/*.crt)
    #[arg(long, value_name = "FILE")]
    ca_file: Vec<PathBuf>,
    /// Credentials file [default: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json,
    /// ~/.docker/config.json]
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
}

impl RegistryArgs {
    fn auth_path(&self) -> PathBuf {
        self.authfile
            .clone()
            .unwrap_or_else(DockerConfig::default_path)
    }

    fn options(&self, registry: &str) -> TransportOptions {
        let mut options = TransportOptions {
            extra_ca: self
                .ca_file
                .iter()
                .cloned()
                .chain(certs_d(registry))
                .collect(),
            ..TransportOptions::default()
        };
        if !self.tls_verify {
            options.insecure.push(registry.to_string());
        }
        if let Ok(list) = std::env::var("KILN_INSECURE_REGISTRIES") {
            options.insecure.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(String::from),
            );
        }
        options
    }

    fn client(&self, registry: &str, concurrency: usize) -> Result<Client> {
        let config = DockerConfig::load(&self.auth_path())?;
        let credentials: Arc<dyn CredentialProvider> = Arc::new(config);
        Ok(Client::new(self.options(registry), credentials)?.with_concurrency(concurrency))
    }
}

/// CA certificates configured per registry host, where docker and podman look for them.
fn certs_d(registry: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for base in ["/etc/containers/certs.d", "/etc/docker/certs.d"] {
        let Ok(entries) = std::fs::read_dir(Path::new(base).join(registry)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[derive(Args)]
pub struct LoginArgs {
    /// Registry host [default: docker.io]
    server: Option<String>,
    #[arg(short, long)]
    username: Option<String>,
    /// Password (visible to other users of this machine: prefer --password-stdin)
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// Registry host [default: docker.io]
    server: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct PullArgs {
    /// Image to pull: NAME[:TAG|@DIGEST]
    image: String,
    /// Platform to pull from a multi-platform image: os/arch[/variant] [default: the host's]
    #[arg(long)]
    platform: Option<String>,
    /// Pull every platform of a multi-platform image
    #[arg(short = 'a', long, conflicts_with = "platform")]
    all_platforms: bool,
    /// Print only the image name
    #[arg(short, long)]
    quiet: bool,
    /// Blobs downloaded at once
    #[arg(long, default_value_t = kiln_client::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct PushArgs {
    /// Image to push: NAME[:TAG] as named in the local store
    image: String,
    /// Print only the digest
    #[arg(short, long)]
    quiet: bool,
    /// Blobs uploaded at once
    #[arg(long, default_value_t = kiln_client::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Print nothing at all (a push inside `kiln build -q --push`).
    #[arg(skip)]
    silent: bool,
}

/// Normalizes a server argument (`https://host/v1/`, `host`) to a registry host.
fn server_host(server: Option<&str>) -> String {
    let Some(server) = server.map(str::trim).filter(|s| !s.is_empty()) else {
        return "docker.io".into();
    };
    let s = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

pub fn login(args: LoginArgs) -> Result<()> {
    let registry = server_host(args.server.as_deref());
    let stdin_is_terminal = std::io::stdin().is_terminal();
    let username = match args.username {
        Some(u) => u,
        None if stdin_is_terminal && !args.password_stdin => prompt("Username: ")?,
        None => bail!("kiln login {registry}: give --username (no terminal to ask on)"),
    };
    let password = if args.password_stdin {
        if args.password.is_some() {
            bail!("--password and --password-stdin are mutually exclusive");
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if stdin_is_terminal {
        prompt_hidden("Password: ")?
    } else {
        bail!("kiln login {registry}: give --password-stdin or --password (no terminal to ask on)");
    };
    if username.is_empty() || password.is_empty() {
        bail!("kiln login {registry}: username and password must not be empty");
    }
    let creds = Credentials::new(username, password);
    let client = Client::new(
        args.registry.options(&registry),
        Arc::new(kiln_client::Anonymous),
    )?;
    let checked = runtime()?.block_on(client.check_login(&registry, &creds));
    if let Err(e) = checked {
        let path = args.registry.auth_path();
        return Err(anyhow::Error::new(e).context(format!(
            "login to {registry} failed; nothing was saved to {}",
            path.display()
        )));
    }
    let mut config = DockerConfig::load(&args.registry.auth_path())?;
    config
        .store(&registry, &creds)
        .with_context(|| format!("saving credentials for {registry}"))?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(args: LogoutArgs) -> Result<()> {
    let registry = server_host(args.server.as_deref());
    let mut config = DockerConfig::load(&args.registry.auth_path())?;
    if config.erase(&registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}

fn prompt(label: &str) -> Result<String> {
    eprint!("{label}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Reads a line with the terminal's echo off.
fn prompt_hidden(label: &str) -> Result<String> {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal descriptor.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is stdin, checked to be a terminal by the caller.
    let have_termios = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_termios {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above; restores below.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let line = prompt(label);
    if have_termios {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
        eprintln!();
    }
    line
}

pub fn pull(root: &Path, args: PullArgs) -> Result<()> {
    let mut reference = Reference::parse_normalized(&args.image)?;
    if reference.tag().is_none() && reference.digest().is_none() {
        if !args.quiet {
            println!("Using default tag: latest");
        }
        reference = reference.with_default_tag();
    }
    let platform = args.platform.as_deref().map(Platform::parse).transpose()?;
    let options = PullOptions {
        platform,
        all_platforms: args.all_platforms,
    };
    let store = ImageStore::open(root)?;
    let client = args.registry.client(reference.domain(), args.concurrency)?;
    let display = Arc::new(Display::new(TransferKind::Pull, args.quiet));
    if !args.quiet {
        let what = reference
            .tag()
            .map(str::to_string)
            .or_else(|| reference.digest().map(|d| d.to_string()))
            .unwrap_or_default();
        println!("{what}: Pulling from {}", reference.familiar_repository());
    }
    let lease = store.lease()?;
    let progress: Arc<dyn Progress> = display.clone();
    let pulled =
        runtime()?.block_on(client.pull(store.blobs(), &reference, &options, progress.as_ref()))?;
    let key = reference.store_key();
    let before = store.refs().get(&key)?;
    store.tag(&pulled.target, &reference)?;
    drop(lease);
    display.finish();
    if args.quiet {
        println!("{}", reference);
        return Ok(());
    }
    println!("Digest: {}", pulled.digest);
    let up_to_date = before.is_some_and(|b| b.target == pulled.target) && !pulled.downloaded;
    if up_to_date {
        println!("Status: Image is up to date for {}", reference.familiar());
    } else {
        println!(
            "Status: Downloaded newer image for {}",
            reference.familiar()
        );
    }
    println!("{reference}");
    Ok(())
}

impl PushArgs {
    /// `kiln push IMAGE` with these registry settings (`kiln build --push`).
    pub fn for_image(image: &str, registry: RegistryArgs, silent: bool) -> PushArgs {
        PushArgs {
            image: image.to_string(),
            quiet: silent,
            concurrency: kiln_client::DEFAULT_CONCURRENCY,
            registry,
            silent,
        }
    }
}

/// Pulls `reference` for `platform` into the store without printing anything: a build's
/// base image that is not in the store yet.
pub fn fetch(
    root: &Path,
    reference: &Reference,
    platform: &Platform,
    registry: &RegistryArgs,
) -> Result<()> {
    let store = ImageStore::open(root)?;
    let client = registry.client(reference.domain(), kiln_client::DEFAULT_CONCURRENCY)?;
    let display = Display::new(TransferKind::Pull, true);
    let options = PullOptions {
        platform: Some(platform.clone()),
        all_platforms: false,
    };
    let lease = store.lease()?;
    let pulled = runtime()?
        .block_on(client.pull(store.blobs(), reference, &options, &display))
        .with_context(|| format!("pulling {reference}"))?;
    store.tag(&pulled.target, reference)?;
    drop(lease);
    Ok(())
}

pub fn push(root: &Path, args: PushArgs) -> Result<()> {
    let store = ImageStore::open(root)?;
    let found = store.find(&args.image)?;
    let destination = match &found.name {
        Some(n) => n.clone(),
        None => bail!(
            "{}: push needs a name with a registry (kiln tag {} REGISTRY/NAME:TAG first)",
            args.image,
            args.image
        ),
    };
    let client = args
        .registry
        .client(destination.domain(), args.concurrency)?;
    let mounts = kiln_client::mount_sources(&store, destination.domain())?;
    if !args.quiet {
        println!(
            "The push refers to repository [{}]",
            destination.repository()
        );
    }
    let display = Arc::new(Display::new(TransferKind::Push, args.quiet));
    let progress: Arc<dyn Progress> = display.clone();
    let _lease = store.lease()?;
    let pushed = runtime()?
        .block_on(client.push(
            store.blobs(),
            &found.target,
            &destination,
            &mounts,
            &progress,
        ))
        .with_context(|| format!("pushing {}", destination.familiar()))?;
    display.finish();
    if args.silent {
        return Ok(());
    }
    if args.quiet {
        println!("{}", pushed.digest);
    } else {
        let tag = destination
            .tag()
            .map(str::to_string)
            .unwrap_or_else(|| pushed.digest.to_string());
        println!("{tag}: digest: {} size: {}", pushed.digest, pushed.size);
    }
    Ok(())
}
