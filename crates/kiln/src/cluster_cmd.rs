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
    /// Run only the control plane: no node agent in this process (`kiln node` joins later)
    #[arg(long)]
    no_node: bool,
    #[command(flatten)]
    node: crate::node_cmd::NodeOptions,
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
    // SAFETY: geteuid has no preconditions.
    if !args.no_node && unsafe { libc::geteuid() } != 0 {
        bail!("the node agent needs root (network namespaces, containers); run as root, or with --no-node for the control plane alone");
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
    if args.no_node {
        cmd.arg("--no-node");
    }
    forward_node_options(&mut cmd, &args.node);
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

/// Passes the node options on to the background server.
fn forward_node_options(cmd: &mut std::process::Command, o: &crate::node_cmd::NodeOptions) {
    if let Some(name) = &o.node_name {
        cmd.arg("--node-name").arg(name);
    }
    cmd.arg("--node-listen").arg(o.node_listen.to_string());
    if let Some(ip) = o.node_ip {
        cmd.arg("--node-ip").arg(ip.to_string());
    }
    if let Some(c) = &o.node_config {
        cmd.arg("--node-config")
            .arg(std::path::absolute(c).unwrap_or_else(|_| c.clone()));
    }
    cmd.arg("--pod-cidr").arg(&o.pod_cidr);
    cmd.arg("--pod-bridge").arg(&o.bridge);
    cmd.arg("--container-runtime").arg(&o.runtime);
    for r in &o.insecure_registries {
        cmd.arg("--insecure-registry").arg(r);
    }
    if let Some(c) = &o.docker_config {
        cmd.arg("--node-docker-config")
            .arg(std::path::absolute(c).unwrap_or_else(|_| c.clone()));
    }
}

/// The node's credentials from the cluster's CA: a kubeconfig for `system:node:NAME` and a
/// serving certificate for its endpoint. Written under the root for `kiln node`.
fn node_credentials(
    root: &Path,
    url: &str,
    name: &str,
    extra_names: &[String],
) -> Result<(kiln_node::apiclient::Connection, String, String)> {
    let ca = kiln_cluster::pki::Authority::load_or_create(&data_dir(root).join("pki"))
        .context("loading the cluster's CA")?;
    let client = ca
        .client(&format!("system:node:{name}"), &["system:nodes"])
        .context("issuing the node's client certificate")?;
    let mut names = vec![
        name.to_string(),
        crate::node_cmd::host_name(),
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    names.extend(extra_names.iter().cloned());
    names.sort();
    names.dedup();
    let serving = ca
        .serving(&names)
        .context("issuing the node's serving certificate")?;
    let dir = crate::node_cmd::credentials_dir(root);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let kubeconfig = kiln_cluster::pki::kubeconfig("kiln-node", url, &ca.cert_pem, &client);
    for (file, text) in [
        ("kubeconfig", &kubeconfig),
        ("kubelet.crt", &serving.cert_pem),
        ("kubelet.key", &serving.key_pem),
    ] {
        kiln_cluster::pki::write_private(&dir.join(file), text)
            .with_context(|| format!("writing {}", dir.join(file).display()))?;
    }
    let connection = kiln_node::apiclient::Connection::from_kubeconfig(&kubeconfig, None)
        .context("the node's kubeconfig")?;
    Ok((connection, serving.cert_pem, serving.key_pem))
}

fn serve(root: &Path, args: UpArgs) -> Result<()> {
    crate::node_cmd::init_logging();
    let kubeconfig = kubeconfig_path(args.kubeconfig.as_deref());
    let admission = args.admission();
    let config = kiln_cluster::server::ServeConfig {
        admission,
        data_dir: data_dir(root),
        listen: args.listen,
        insecure_listen: args.insecure_listen,
        tls_sans: args.tls_sans.clone(),
        datastore: args.datastore.clone(),
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
            let mut extra = args.tls_sans.clone();
            if let Some(ip) = args.node.node_ip {
                extra.push(ip.to_string());
            }
            if !args.listen.ip().is_unspecified() {
                extra.push(args.listen.ip().to_string());
            }
            let node_name = args
                .node
                .node_name
                .clone()
                .unwrap_or_else(crate::node_cmd::host_name);
            let (connection, cert, key) = node_credentials(root, &ready.url, &node_name, &extra)?;
            if !args.no_node {
                let config = crate::node_cmd::config(root, &args.node, connection, cert, key)?;
                tokio::spawn(async move {
                    if let Err(e) = kiln_node::run(config).await {
                        tracing::error!(error = %e, "the node agent stopped");
                    }
                });
            }
            // Written whole and renamed into place: the starting `kiln up` polls for this
            // file and must never read it half-written.
            let staging = ready_path(root).with_extension("tmp");
            std::fs::write(&staging, marker).context("writing the ready marker")?;
            std::fs::rename(&staging, ready_path(root)).context("writing the ready marker")?;
            print_ready(&ready.url, ready.insecure_url.as_deref(), &kubeconfig);
            Ok(())
        })();
        if let Err(e) = &setup {
            // Serving goes on forever; a half-started cluster must not.
            eprintln!("Error: {e:#}");
            std::process::exit(1);
        }
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
