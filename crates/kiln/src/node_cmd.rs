//! `kiln node`: the node agent, joining an API server; also what `kiln up` embeds.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

/// Node options shared by `kiln node` and `kiln up`.
#[derive(Args, Clone, Debug)]
pub struct NodeOptions {
    /// The Node's name [default: the host name]
    #[arg(long = "node-name", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where the node's endpoint (logs, exec) listens; port 0 picks a free one
    #[arg(
        long = "node-listen",
        default_value = "0.0.0.0:10250",
        value_name = "ADDR"
    )]
    pub node_listen: SocketAddr,
    /// The address the node reports [default: the one on the route to the API server]
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ip: Option<IpAddr>,
    /// A KubeletConfiguration file (kubelet.config.k8s.io/v1beta1)
    #[arg(long = "node-config", value_name = "FILE")]
    pub node_config: Option<PathBuf>,
    /// The pods' address range
    #[arg(long = "pod-cidr", default_value = "10.42.0.0/16", value_name = "CIDR")]
    pub pod_cidr: String,
    /// The pods' bridge
    #[arg(long = "pod-bridge", default_value = "kiln0", value_name = "NAME")]
    pub bridge: String,
    /// The OCI runtime that runs the pods' containers
    #[arg(
        long = "container-runtime",
        default_value = "runc",
        value_name = "BINARY"
    )]
    pub runtime: String,
    /// A registry pods pull from over plain HTTP or without certificate checks (repeatable)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// A docker config.json whose credentials every pull may use
    #[arg(long = "node-docker-config", value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
}

#[derive(Args)]
pub struct NodeArgs {
    /// The API server (https://HOST:PORT) [default: the kubeconfig's]
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The node's kubeconfig [default: <root>/cluster/node/kubeconfig, written by `kiln up`]
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The node's serving certificate, from the cluster's CA [default: <root>/cluster/node/kubelet.crt]
    #[arg(long = "tls-cert-file", value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,
    /// Its key [default: <root>/cluster/node/kubelet.key]
    #[arg(long = "tls-private-key-file", value_name = "FILE")]
    tls_private_key_file: Option<PathBuf>,
    #[command(flatten)]
    options: NodeOptions,
}

/// Where `kiln up` leaves the node's credentials.
pub fn credentials_dir(root: &Path) -> PathBuf {
    root.join("cluster").join("node")
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kiln-node".into())
}

fn shim_command(root: &Path, runtime: &str) -> Result<Vec<OsString>> {
    let exe = std::env::current_exe().context("finding the kiln executable")?;
    Ok(vec![
        exe.into_os_string(),
        "--root".into(),
        root.as_os_str().to_owned(),
        "container-shim".into(),
        "--runtime".into(),
        runtime.into(),
    ])
}

/// The node agent's configuration from its options and credentials.
pub fn config(
    root: &Path,
    options: &NodeOptions,
    connection: kiln_node::apiclient::Connection,
    serving_cert_pem: String,
    serving_key_pem: String,
) -> Result<kiln_node::NodeConfig> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the node agent needs root: it makes network namespaces and runs containers for pods"
        );
    }
    let kubelet = match &options.node_config {
        Some(path) => {
            let loaded = kiln_node::config::KubeletConfig::from_file(path)
                .with_context(|| format!("reading {}", path.display()))?;
            for field in &loaded.unknown_fields {
                tracing::warn!(field, "unknown KubeletConfiguration field ignored");
            }
            loaded.config
        }
        None => kiln_node::config::KubeletConfig::default(),
    };
    Ok(kiln_node::NodeConfig {
        name: options.node_name.clone().unwrap_or_else(host_name),
        connection,
        root: root.to_path_buf(),
        runtime_binary: options.runtime.clone(),
        shim: shim_command(root, &options.runtime)?,
        listen: options.node_listen,
        node_ip: options.node_ip,
        serving_cert_pem,
        serving_key_pem,
        kubelet,
        network: kiln_node::network::NetworkConfig {
            subnet: options.pod_cidr.clone(),
            bridge: options.bridge.clone(),
            ..kiln_node::network::NetworkConfig::default()
        },
        insecure_registries: options.insecure_registries.clone(),
        docker_config: options.docker_config.clone(),
    })
}

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(root: &Path, args: NodeArgs) -> Result<()> {
    init_logging();
    let dir = credentials_dir(root);
    let read = |explicit: &Option<PathBuf>, default: &str| -> Result<String> {
        let path = explicit.clone().unwrap_or_else(|| dir.join(default));
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (`kiln up` writes the node's credentials there)",
                path.display()
            )
        })
    };
    let kubeconfig = read(&args.kubeconfig, "kubeconfig")?;
    let connection =
        kiln_node::apiclient::Connection::from_kubeconfig(&kubeconfig, args.server.as_deref())
            .context("reading the node's kubeconfig")?;
    let cert = read(&args.tls_cert_file, "kubelet.crt")?;
    let key = read(&args.tls_private_key_file, "kubelet.key")?;
    let config = config(root, &args.options, connection, cert, key)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(kiln_node::run(config))
        .context("running the node agent")
}
