//! `kiln up` and `kiln down`: the cluster's API server, in the background or the foreground.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args, Clone)]
pub struct UpArgs {
    /// Address of the API server (HTTPS; clients authenticate with certificates)
    #[arg(long, default_value = "127.0.0.1:6443", value_name = "ADDR")]
    listen: SocketAddr,
    /// Also serve plain HTTP, without authentication, on this loopback address
    #[arg(long, value_name = "ADDR")]
    insecure_listen: Option<SocketAddr>,
    /// Where to write the administrator's kubeconfig [default: the first file of
    /// $KUBECONFIG, else ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Another DNS name or IP address for the serving certificate (repeatable)
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// Where objects live: `sqlite` (one file under the root; the default) or
    /// etcd://HOST:PORT[,HOST:PORT...] (an etcd v3 cluster)
    #[arg(long, default_value = "sqlite", value_name = "STORE")]
    datastore: kiln_cluster::server::Datastore,
    /// Set every container's imagePullPolicy to Always (Kubernetes' AlwaysPullImages admission)
    #[arg(long)]
    always_pull_images: bool,
    /// Refuse pods and pod templates whose images are not pinned by digest, in every namespace
    #[arg(long)]
    require_digests: bool,
    /// Refuse images not pinned by digest in this namespace (repeatable)
    #[arg(long = "require-digests-in", value_name = "NAMESPACE")]
    require_digests_in: Vec<String>,
    /// Run in the foreground, logging to stderr, instead of in the background
    #[arg(long)]
    foreground: bool,
}

impl UpArgs {
    fn admission(&self) -> kiln_cluster::admission::Admission {
        use kiln_cluster::admission::DigestPolicy;
        kiln_cluster::admission::Admission {
            always_pull_images: self.always_pull_images,
            digest_policy: if self.require_digests {
                DigestPolicy::AllNamespaces
            } else if self.require_digests_in.is_empty() {
                DigestPolicy::Off
            } else {
                DigestPolicy::Namespaces(self.require_digests_in.clone())
            },
        }
    }
}

#[derive(Args)]
pub struct DownArgs {}

fn data_dir(root: &Path) -> PathBuf {
    root.join("cluster")
}

fn pid_path(root: &Path) -> PathBuf {
    data_dir(root).join("kiln-up.pid")
}

fn ready_path(root: &Path) -> PathBuf {
    data_dir(root).join("kiln-up.ready")
}

fn log_path(root: &Path) -> PathBuf {
    data_dir(root).join("kiln-up.log")
}

fn kubeconfig_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .and_then(|k| std::env::split_paths(&k).find(|p| !p.as_os_str().is_empty()))
    {
        return first;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".kube/config")
}

/// The pid of a running `kiln up`, if any.
fn running(root: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_path(root))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
}

fn print_ready(url: &str, insecure: Option<&str>, kubeconfig: &Path) {
    println!("kiln is up: {url}");
    if let Some(plain) = insecure {
        println!("plain HTTP (loopback, no authentication): {plain}");
    }
    println!("kubeconfig: {}", kubeconfig.display());
    let flag = if kubeconfig == kubeconfig_path(None) {
        String::new()
    } else {
        format!(" --kubeconfig {}", kubeconfig.display())
    };
    println!("try: kubectl{flag} get namespaces");
}

/// Writes the kubeconfig, keeping a copy of a different one that was there.
fn install_kubeconfig(path: &Path, text: &str) -> Result<()> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        if existing != text && !existing.contains("current-context: kiln") {
            let backup = path.with_extension("before-kiln");
            std::fs::copy(path, &backup)
                .with_context(|| format!("keeping a copy of {}", path.display()))?;
            eprintln!("kept the previous kubeconfig as {}", backup.display());
        }
    }
    kiln_cluster::pki::write_kubeconfig(path, text)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn up(root: &Path, args: UpArgs) -> Result<()> {
    if let Some(pid) = running(root) {
        bail!(
            "kiln is already up (pid {pid}); `kiln down` stops it (log: {})",
            log_path(root).display()
        );
    }
    if args.foreground {
        return serve(root, args);
    }
    std::fs::create_dir_all(data_dir(root))
        .with_context(|| format!("creating {}", data_dir(root).display()))?;
    let _ = std::fs::remove_file(ready_path(root));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(root))
        .with_context(|| format!("opening {}", log_path(root).display()))?;
    let exe = std::env::current_exe().context("finding the kiln executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root").arg(root).arg("up").arg("--foreground");
    cmd.arg("--listen").arg(args.listen.to_string());
    if let Some(a) = args.insecure_listen {
        cmd.arg("--insecure-listen").arg(a.to_string());
    }
    cmd.arg("--kubeconfig")
        .arg(kubeconfig_path(args.kubeconfig.as_deref()));
    for san in &args.tls_sans {
        cmd.arg("--tls-san").arg(san);
    }
    if args.always_pull_images {
        cmd.arg("--always-pull-images");
    }
    if args.require_digests {
        cmd.arg("--require-digests");
    }
    for ns in &args.require_digests_in {
        cmd.arg("--require-digests-in").arg(ns);
    }
    if let kiln_cluster::server::Datastore::Etcd(endpoints) = &args.datastore {
        cmd.arg("--datastore")
            .arg(format!("etcd://{}", endpoints.join(",")));
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("log file")?)
        .stderr(log);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe; the server outlives this command.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().context("starting the API server")?;
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(ready_path(root)) {
            let mut lines = text.lines();
            let url = lines.next().unwrap_or_default();
            let insecure = lines.next().filter(|l| !l.is_empty());
            print_ready(url, insecure, &kubeconfig_path(args.kubeconfig.as_deref()));
            return Ok(());
        }
        if let Some(status) = child.try_wait().context("watching the API server")? {
            let log = std::fs::read_to_string(log_path(root)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "the API server exited ({status}):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the API server did not become ready in 60 s; see {}",
                log_path(root).display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(root: &Path, args: UpArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let kubeconfig = kubeconfig_path(args.kubeconfig.as_deref());
    let admission = args.admission();
    let config = kiln_cluster::server::ServeConfig {
        admission,
        data_dir: data_dir(root),
        listen: args.listen,
        insecure_listen: args.insecure_listen,
        tls_sans: args.tls_sans,
        datastore: args.datastore,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut setup: Result<()> = Ok(());
    let served = runtime.block_on(kiln_cluster::server::serve(config, |ready| {
        setup = (|| {
            install_kubeconfig(&kubeconfig, &ready.admin_kubeconfig)?;
            std::fs::write(pid_path(root), std::process::id().to_string())
                .context("writing the pid file")?;
            let marker = format!(
                "{}\n{}\n",
                ready.url,
                ready.insecure_url.as_deref().unwrap_or("")
            );
            std::fs::write(ready_path(root), marker).context("writing the ready marker")?;
            print_ready(&ready.url, ready.insecure_url.as_deref(), &kubeconfig);
            Ok(())
        })();
    }));
    setup?;
    served.context("serving the cluster API")
}

pub fn down(root: &Path, _args: DownArgs) -> Result<()> {
    let Some(pid) = running(root) else {
        println!("kiln is not up");
        let _ = std::fs::remove_file(pid_path(root));
        return Ok(());
    };
    // SAFETY: sending a signal to a process id read from our own pid file.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    // SAFETY: as above; signal 0 checks for existence.
    while unsafe { libc::kill(pid, 0) } == 0 {
        if started.elapsed() > Duration::from_secs(15) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(pid_path(root));
    let _ = std::fs::remove_file(ready_path(root));
    println!("kiln is down");
    Ok(())
}
