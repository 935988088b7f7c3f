//! kiln-node: the node agent. It joins a cluster's API server as a Node, heartbeats with a
//! Lease, and runs the pods bound to it as containers of kiln's runtime, with the
//! kubelet's image semantics (pull policies, back-off, pull secrets, serial or parallel
//! pulls) and its status, probe and termination rules. It serves `kubectl logs` and
//! `kubectl exec` for the API server.

pub mod apiclient;
pub mod backoff;
pub mod config;
pub mod events;
pub mod image_gc;
pub mod image_gc_manager;
pub mod images;
pub mod keyring;
pub mod network;
pub mod node_status;
pub mod pod;
pub mod probes;
pub mod server;
pub mod status;
pub mod worker;

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_runtime::container::Runtime;
use serde_json::Value;
use tokio::sync::watch;

use crate::apiclient::{ApiClient, ApiError, Connection};
use crate::backoff::Backoff;
use crate::config::KubeletConfig;
use crate::events::Recorder;
use crate::images::{ImageManager, PullConcurrency};
use crate::network::NetworkConfig;
use crate::worker::{PodView, Worker};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error("{0}")]
    Config(String),
}

/// Everything a node agent needs to start.
pub struct NodeConfig {
    /// The Node's name (the host name unless overridden).
    pub name: String,
    pub connection: Connection,
    /// kiln's root: images in its store, containers under `runtime/`, node state under `node/`.
    pub root: PathBuf,
    /// The OCI runtime binary.
    pub runtime_binary: String,
    /// The command that runs a container's shim; the container's ID is appended.
    pub shim: Vec<OsString>,
    /// Where the node's HTTPS endpoint listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The address the node reports; by default the one on the route to the API server.
    pub node_ip: Option<IpAddr>,
    /// PEM certificate and key the node's endpoint serves with (from the cluster's CA).
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub kubelet: KubeletConfig,
    pub network: NetworkConfig,
    /// Registries reached over plain HTTP or without certificate checks.
    pub insecure_registries: Vec<String>,
    /// A docker `config.json` whose credentials the node adds to every pod's keyring.
    pub docker_config: Option<PathBuf>,
}

/// What the node's tasks share.
pub struct Shared {
    pub name: String,
    pub host_ip: String,
    pub api: ApiClient,
    pub recorder: Recorder,
    pub images: ImageManager,
    pub runtime: Arc<Runtime>,
    pub network: NetworkConfig,
    /// The node's own state (pod sandboxes).
    pub dir: PathBuf,
    /// The image store's root.
    pub image_root: PathBuf,
    shim: Vec<OsString>,
    pub crash_backoff: Mutex<Backoff>,
    views: Mutex<HashMap<(String, String), PodView>>,
}

impl Shared {
    pub fn shim_command(&self, id: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.shim[0]);
        cmd.args(&self.shim[1..]).arg(id);
        cmd
    }

    pub fn view(&self, namespace: &str, name: &str) -> Option<PodView> {
        self.views
            .lock()
            .ok()?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub(crate) fn publish_view(&self, pod: &pod::Pod, view: PodView) {
        if let Ok(mut v) = self.views.lock() {
            v.insert(
                (pod.metadata.namespace.clone(), pod.metadata.name.clone()),
                view,
            );
        }
    }

    pub(crate) fn forget_pod(&self, pod: &pod::Pod) {
        if let Ok(mut v) = self.views.lock() {
            let key = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
            if v.get(&key).is_some_and(|view| view.uid == pod.metadata.uid) {
                v.remove(&key);
            }
        }
    }
}

/// The address this host uses to reach `server` (`https://host:port`).
fn route_to(server: &str) -> Option<IpAddr> {
    let rest = server.split("://").nth(1)?;
    let authority = rest.split('/').next()?;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    let addr: SocketAddr = authority.parse().ok().or_else(|| {
        use std::net::ToSocketAddrs;
        authority.to_socket_addrs().ok()?.next()
    })?;
    socket.connect(addr).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Runs the node agent until the process ends.
pub async fn run(config: NodeConfig) -> Result<(), NodeError> {
    if config.shim.is_empty() {
        return Err(NodeError::Config("no shim command".into()));
    }
    let api = ApiClient::new(&config.connection)?;
    let host_ip = config
        .node_ip
        .or_else(|| route_to(&config.connection.server))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
        .to_string();
    let recorder = Recorder::new(api.clone(), &config.name);
    let kubelet = &config.kubelet;
    let concurrency = if kubelet.serialize_image_pulls {
        PullConcurrency::Serial
    } else {
        PullConcurrency::Parallel(kubelet.max_parallel_image_pulls)
    };
    let node_keyring = match &config.docker_config {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => keyring::from_docker_config(&bytes)
                .map(|entries| {
                    keyring::Keyring::from(keyring::BasicKeyring::from_entries(&entries))
                })
                .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?,
            Err(e) => return Err(NodeError::Config(format!("{}: {e}", path.display()))),
        },
        None => keyring::Keyring::new(),
    };
    let transport = kiln_client::TransportOptions {
        insecure: config.insecure_registries.clone(),
        ..kiln_client::TransportOptions::default()
    };
    let images = ImageManager::new(
        config.root.clone(),
        recorder.clone(),
        concurrency,
        (
            kubelet.image_pull_backoff.initial,
            kubelet.image_pull_backoff.max,
        ),
        node_keyring,
        transport,
    );
    let shared = Arc::new(Shared {
        name: config.name.clone(),
        host_ip,
        api: api.clone(),
        recorder,
        images,
        runtime: Arc::new(Runtime::new(
            &config.runtime_binary,
            &config.root.join("runtime"),
        )),
        network: config.network.clone(),
        dir: config.root.join("node"),
        image_root: config.root.clone(),
        shim: config.shim.clone(),
        crash_backoff: Mutex::new(Backoff::new(
            kubelet.crash_loop_backoff.initial,
            kubelet.crash_loop_backoff.max,
        )),
        views: Mutex::default(),
    });

    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|source| server::ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| server::ServerError::Bind {
            addr: config.listen,
            source,
        })?
        .port();
    listener
        .set_nonblocking(true)
        .map_err(|source| server::ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let tls = server::tls_config(
        &config.connection.ca_pem,
        &config.serving_cert_pem,
        &config.serving_key_pem,
    )?;
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = server::serve(shared, listener, tls).await {
                tracing::error!(error = %e, "the node's endpoint stopped");
            }
        });
    }
    node_status::register(&shared, port).await?;
    node_status::spawn_heartbeats(shared.clone(), port, config.kubelet.clone());
    image_gc_manager::spawn(
        shared.clone(),
        image_gc::ImageGcPolicy {
            high_threshold_percent: kubelet.image_gc_high_threshold_percent,
            low_threshold_percent: kubelet.image_gc_low_threshold_percent,
            min_age: kubelet.image_minimum_gc_age,
            max_age: kubelet.image_maximum_gc_age,
        },
    );
    watch_pods(shared).await;
    Ok(())
}

/// Lists and watches the pods bound to this node, keeping one worker per pod.
async fn watch_pods(node: Arc<Shared>) {
    let mut workers: HashMap<String, watch::Sender<Option<Value>>> = HashMap::new();
    let collection = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}", node.name);
    let mut cleaned = false;
    loop {
        let list = match node.api.get(&collection).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing this node's pods failed");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut present = std::collections::HashSet::new();
        for pod in list["items"].as_array().cloned().unwrap_or_default() {
            let uid = pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            present.insert(uid.clone());
            deliver(&node, &mut workers, &uid, Some(pod));
        }
        // Pods that vanished while the watch was down.
        let gone: Vec<String> = workers
            .keys()
            .filter(|uid| !present.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            deliver(&node, &mut workers, &uid, None);
        }
        if !cleaned {
            cleaned = true;
            remove_orphans(&node, &present).await;
        }
        let mut rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        loop {
            let result = node
                .api
                .watch(&collection, &rv, |event| {
                    let uid = event.object["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let object = (event.kind != "DELETED").then_some(event.object);
                    deliver(&node, &mut workers, &uid, object);
                })
                .await;
            match result {
                Ok(last) => rv = last,
                Err(e) => {
                    tracing::info!(error = %e, "the pod watch ended; listing again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

/// Hands the newest pod object (or its deletion) to its worker, starting one if needed.
fn deliver(
    node: &Arc<Shared>,
    workers: &mut HashMap<String, watch::Sender<Option<Value>>>,
    uid: &str,
    object: Option<Value>,
) {
    workers.retain(|_, tx| !tx.is_closed());
    match workers.get(uid) {
        Some(tx) => {
            let _ = tx.send(object);
        }
        None => {
            let Some(object) = object else { return };
            let (tx, rx) = watch::channel(Some(object.clone()));
            workers.insert(uid.to_string(), tx);
            let worker = Worker::new(node.clone(), object);
            tokio::spawn(worker.run(rx));
        }
    }
}

/// Stops and removes the containers and sandboxes of pods this node no longer has (they
/// were deleted while the node agent was down).
async fn remove_orphans(node: &Arc<Shared>, present: &std::collections::HashSet<String>) {
    let runtime = node.runtime.clone();
    let keep = present.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for r in runtime.records().unwrap_or_default() {
            if let Some(uid) = r.labels.get(worker::LABEL_POD_UID)
                && !keep.contains(uid)
            {
                let _ = runtime.stop(&r.id, Duration::from_secs(2));
                let _ = runtime.remove(&r.id);
            }
        }
    })
    .await;
    let pods_dir = node.dir.join("pods");
    let Ok(mut entries) = tokio::fs::read_dir(&pods_dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let uid = entry.file_name().to_string_lossy().into_owned();
        if present.contains(&uid) {
            continue;
        }
        if let Ok(bytes) = tokio::fs::read(entry.path().join("sandbox.json")).await
            && let Ok(sandbox) = serde_json::from_slice::<worker::Sandbox>(&bytes)
            && sandbox.network.is_some()
        {
            let config = node.network.clone();
            let _ = tokio::task::spawn_blocking(move || config.teardown(&sandbox.id)).await;
        }
        let _ = tokio::fs::remove_dir_all(entry.path()).await;
    }
}
