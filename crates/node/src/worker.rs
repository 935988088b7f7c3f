//! One worker per pod: makes the pod's sandbox (network and volumes), pulls images, runs
//! init containers in order and then the containers, restarts them as the restart policy
//! says (with CrashLoopBackOff), probes them, reports status, and on deletion stops them
//! within the grace period and lets the API server forget the pod.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_runtime::bundle::{Network, RunConfig, Volume};
use kiln_runtime::container::Record;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::Shared;
use crate::images::{Ensured, PullFailure};
use crate::network::PodNetwork;
use crate::pod::{self, Container, Pod};
use crate::probes::{self, ProbeResult};
use crate::status::{self, ContainerReport, PodReport, State, Terminated};

/// Labels on every container record, as the CRI names them.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const LABEL_ATTEMPT: &str = "io.kubernetes.container.restartCount";
pub const LABEL_SANDBOX: &str = "io.kubernetes.sandbox.id";
pub const LABEL_IMAGE_ID: &str = "io.kubernetes.container.imageID";
/// A digest of the container's spec when it was started: a changed spec (a new image set on
/// the pod) restarts it, as the kubelet's container hash does.
pub const LABEL_HASH: &str = "io.kubernetes.container.hash";

/// How often ConfigMap and Secret volumes are written again from the API.
const VOLUME_REFRESH: Duration = Duration::from_secs(60);

/// A pod's sandbox: what its containers share.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub created: i64,
    pub host_network: bool,
    pub network: Option<PodNetwork>,
    /// Set once the pod's containers are stopped and the network is gone.
    #[serde(default)]
    pub stopped: bool,
}

impl Sandbox {
    pub fn ip(&self) -> Option<String> {
        self.network
            .as_ref()
            .and_then(|n| n.ip)
            .map(|ip| ip.to_string())
    }
}

/// The running (or last) instance of one container.
#[derive(Debug, Clone)]
struct Instance {
    id: String,
    started: i64,
    image_id: String,
    hash: String,
}

#[derive(Debug, Default)]
struct ContainerState {
    current: Option<Instance>,
    /// The instance before the current one (for `logs --previous`).
    previous: Option<String>,
    restart_count: u32,
    last: Option<Terminated>,
    /// The current instance ended and will not be restarted (or an init container finished).
    done: Option<Terminated>,
    waiting: Option<(String, String)>,
    ready: bool,
    started_probe_ok: bool,
    readiness: probes::Tracker,
    liveness: probes::Tracker,
    startup: probes::Tracker,
    image_id: String,
}

/// What other parts of the node (the kubelet server, crictl) need about a pod.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    pub uid: String,
    /// Container name -> (current id, previous id).
    pub containers: HashMap<String, (Option<String>, Option<String>)>,
}

pub struct Worker {
    node: Arc<Shared>,
    object: Value,
    pod: Pod,
    sandbox: Option<Sandbox>,
    states: BTreeMap<String, ContainerState>,
    last_status: Option<Value>,
    /// When ConfigMap and Secret volumes were last written from the API.
    volumes_refreshed: Option<Instant>,
    start_time: i64,
    volumes: HashMap<String, PathBuf>,
}

/// How the worker ended.
enum Next {
    /// Wake again after this long (or when the pod changes).
    After(Duration),
    Finished,
}

impl Worker {
    pub fn new(node: Arc<Shared>, object: Value) -> Worker {
        let pod = Pod::from_value(&object).unwrap_or_default();
        Worker {
            node,
            object,
            pod,
            sandbox: None,
            states: BTreeMap::new(),
            last_status: None,
            volumes_refreshed: None,
            start_time: kiln_runtime::container::unix_now(),
            volumes: HashMap::new(),
        }
    }

    fn uid(&self) -> &str {
        &self.pod.metadata.uid
    }

    fn pod_dir(&self) -> PathBuf {
        self.node.dir.join("pods").join(self.uid())
    }

    /// Runs until the pod is gone. `updates` carries the newest pod object; `None` means it
    /// was deleted from the API (or bound elsewhere).
    pub async fn run(mut self, mut updates: watch::Receiver<Option<Value>>) {
        self.adopt().await;
        loop {
            let next = match self.sync().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(pod = %self.pod.key(), error = %e, "pod sync failed");
                    Next::After(Duration::from_secs(2))
                }
            };
            let wait = match next {
                Next::Finished => break,
                Next::After(d) => d,
            };
            // Wait for the timer, or for a change that matters: the node's own status writes
            // come back through the watch and must not cut a back-off short.
            let deadline = tokio::time::Instant::now() + wait;
            let mut gone = false;
            loop {
                tokio::select! {
                    changed = updates.changed() => {
                        if changed.is_err() {
                            gone = true;
                            break;
                        }
                        let latest = updates.borrow_and_update().clone();
                        let Some(object) = latest else {
                            self.terminate(false).await;
                            gone = true;
                            break;
                        };
                        let relevant = object["spec"] != self.object["spec"]
                            || object["metadata"]["deletionTimestamp"]
                                != self.object["metadata"]["deletionTimestamp"];
                        self.pod = Pod::from_value(&object).unwrap_or_else(|_| self.pod.clone());
                        self.object = object;
                        if relevant {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            if gone {
                break;
            }
        }
        self.node.forget_pod(&self.pod);
    }

    /// Takes over what an earlier node agent left for this pod: its sandbox and containers.
    async fn adopt(&mut self) {
        let path = self.pod_dir().join("sandbox.json");
        if let Ok(bytes) = tokio::fs::read(&path).await
            && let Ok(sandbox) = serde_json::from_slice::<Sandbox>(&bytes)
        {
            self.start_time = sandbox.created;
            self.sandbox = Some(sandbox);
        }
        let uid = self.uid().to_string();
        let runtime = self.node.runtime.clone();
        let records = tokio::task::spawn_blocking(move || {
            runtime
                .records()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.labels.get(LABEL_POD_UID) == Some(&uid))
                .map(|r| {
                    let ended = runtime.ended(&r.id);
                    (r, ended)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut by_name: BTreeMap<
            String,
            Vec<(u32, Record, Option<kiln_runtime::container::Ended>)>,
        > = BTreeMap::new();
        for (record, ended) in records {
            let name = record
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            let attempt = record
                .labels
                .get(LABEL_ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            by_name
                .entry(name)
                .or_default()
                .push((attempt, record, ended));
        }
        for (name, mut instances) in by_name {
            instances.sort_by_key(|i| i.0);
            let state = self.states.entry(name).or_default();
            if let Some((attempt, record, ended)) = instances.pop() {
                state.restart_count = attempt;
                state.image_id = record
                    .labels
                    .get(LABEL_IMAGE_ID)
                    .cloned()
                    .unwrap_or_default();
                let instance = Instance {
                    id: record.id.clone(),
                    started: record.created,
                    image_id: state.image_id.clone(),
                    hash: record.labels.get(LABEL_HASH).cloned().unwrap_or_default(),
                };
                state.current = Some(instance);
                if let Some(e) = ended {
                    // Its end is handled by the next sync, as if it had just happened.
                    tracing::debug!(id = %record.id, code = e.code, "adopted an ended container");
                }
            }
            if let Some((_, prev, ended)) = instances.pop() {
                state.previous = Some(prev.id.clone());
                if let Some(e) = ended {
                    state.last = Some(Terminated::new(
                        e.code,
                        prev.created,
                        e.finished,
                        &container_id(&prev.id),
                    ));
                }
            }
        }
        self.publish_view();
    }

    async fn sync(&mut self) -> Result<Next, String> {
        if self.pod.metadata.deletion_timestamp.is_some() {
            self.terminate(true).await;
            return Ok(Next::Finished);
        }
        if self.pod.spec.node_name != self.node.name {
            self.terminate(false).await;
            return Ok(Next::Finished);
        }
        if self.sandbox.as_ref().is_none_or(|s| s.stopped)
            && let Err(e) = self.make_sandbox().await
        {
            let message = format!("Failed to create pod sandbox: {e}");
            self.event("Warning", "FailedCreatePodSandBox", &message, None);
            self.report().await;
            return Ok(Next::After(Duration::from_secs(5)));
        }
        if let Err(e) = self.prepare_volumes().await {
            self.event("Warning", "FailedMount", &e, None);
            self.report().await;
            return Ok(Next::After(Duration::from_secs(5)));
        }
        let mut wake = Duration::from_secs(if self.any_running() { 1 } else { 10 });

        // Init containers, one after another; the regular ones only when all succeeded.
        let inits = self.pod.spec.init_containers.clone();
        let mut initialized = true;
        for container in &inits {
            let done_ok = self
                .states
                .get(&container.name)
                .and_then(|s| s.done.as_ref())
                .is_some_and(|t| t.exit_code == 0);
            if done_ok {
                continue;
            }
            initialized = false;
            if let Some(d) = self.reconcile(container, true).await {
                wake = wake.min(d);
            }
            break;
        }
        if initialized {
            let containers = self.pod.spec.containers.clone();
            for container in &containers {
                if let Some(d) = self.reconcile(container, false).await {
                    wake = wake.min(d);
                }
            }
            if let Some(d) = self.probe_all().await {
                wake = wake.min(d);
            }
        }
        self.publish_view();
        self.report().await;
        Ok(Next::After(wake))
    }

    fn any_running(&self) -> bool {
        self.states
            .values()
            .any(|s| s.current.is_some() && s.done.is_none())
    }

    fn event(&self, kind: &str, reason: &str, message: &str, container: Option<&str>) {
        let field = container.map(|c| self.field_path(c));
        self.node
            .recorder
            .record(&self.object, kind, reason, message, field.as_deref());
    }

    fn field_path(&self, container: &str) -> String {
        let index = |list: &[Container]| list.iter().position(|c| c.name == container);
        match index(&self.pod.spec.containers) {
            Some(i) => format!("spec.containers{{{container}}}").replace("{}", &i.to_string()),
            None => format!("spec.initContainers{{{container}}}"),
        }
    }

    /// Brings one container to where the spec and restart policy want it; returns when to
    /// look again if sooner than the usual poll.
    async fn reconcile(&mut self, container: &Container, init: bool) -> Option<Duration> {
        let name = container.name.clone();
        let policy = self.pod.restart_policy().to_string();
        // Has the current instance ended?
        let current = self.states.get(&name).and_then(|s| s.current.clone());
        if let Some(instance) = &current {
            let done = self.states.get(&name).is_some_and(|s| s.done.is_some());
            if done {
                return None;
            }
            let Some(ended) = self.node.runtime.ended(&instance.id) else {
                let hash = self.spec_hash(&name);
                if instance.hash.is_empty() || instance.hash == hash {
                    return None; // still running, as specified
                }
                self.event(
                    "Normal",
                    "Killing",
                    &format!("Container {name} definition changed, will be restarted"),
                    Some(&name),
                );
                let grace = Duration::from_secs(self.pod.grace_period_seconds() as u64);
                let runtime = self.node.runtime.clone();
                let id = instance.id.clone();
                let _ = tokio::task::spawn_blocking(move || runtime.stop(&id, grace)).await;
                let ended = self.node.runtime.ended(&instance.id);
                if let Some(state) = self.states.get_mut(&name) {
                    // Restarted whatever the restart policy: the definition changed.
                    state.last = Some(Terminated::new(
                        ended.as_ref().map_or(137, |e| e.code),
                        instance.started,
                        ended.map_or_else(kiln_runtime::container::unix_now, |e| e.finished),
                        &container_id(&instance.id),
                    ));
                    state.previous = Some(instance.id.clone());
                    state.current = None;
                    state.ready = false;
                    state.started_probe_ok = false;
                }
                return Some(Duration::ZERO);
            };
            let terminated = Terminated::new(
                ended.code,
                instance.started,
                ended.finished,
                &container_id(&instance.id),
            );
            let restart = match policy.as_str() {
                "Always" => !init || ended.code != 0,
                "OnFailure" => ended.code != 0,
                _ => false,
            } && !(init && ended.code == 0);
            let state = self.states.entry(name.clone()).or_default();
            state.ready = false;
            state.started_probe_ok = false;
            if !restart {
                state.done = Some(terminated);
                return None;
            }
            state.last = Some(terminated);
            state.previous = Some(instance.id.clone());
            state.current = None;
            self.prune_old_instances(&name);
        }
        // Start (or restart) it, unless back-off says wait.
        let restarting = self.states.get(&name).is_some_and(|s| s.last.is_some());
        let key = format!(
            "{}_{}_{}_{name}",
            self.pod.metadata.name,
            self.pod.metadata.namespace,
            self.uid()
        );
        if restarting {
            let now = Instant::now();
            let (in_backoff, remaining, current) = self
                .node
                .crash_backoff
                .lock()
                .map(|b| {
                    (
                        b.is_in_backoff_since_update(&key, now),
                        b.remaining(&key, now),
                        b.get(&key),
                    )
                })
                .unwrap_or((false, Duration::ZERO, Duration::ZERO));
            if in_backoff {
                let pod_name = format!(
                    "{}_{}({})",
                    self.pod.metadata.name,
                    self.pod.metadata.namespace,
                    self.uid()
                );
                let message = format!(
                    "back-off {} restarting failed container={name} pod={pod_name}",
                    crate::images::go_duration(current)
                );
                let state = self.states.entry(name.clone()).or_default();
                let first = !matches!(&state.waiting, Some((r, _)) if r == "CrashLoopBackOff");
                state.waiting = Some(("CrashLoopBackOff".into(), message));
                if first {
                    self.event(
                        "Warning",
                        "BackOff",
                        &format!("Back-off restarting failed container {name} in pod {pod_name}"),
                        Some(&name),
                    );
                }
                return Some(remaining.max(Duration::from_millis(100)));
            }
        }
        // Read only when an image is about to be ensured, not on every sync of a running pod.
        let secrets = self.pull_secrets().await;
        let ensured = match self
            .node
            .images
            .ensure(&self.object, container, &self.field_path(&name), &secrets)
            .await
        {
            Ok(e) => e,
            Err(PullFailure { reason, message }) => {
                self.event(
                    "Warning",
                    "Failed",
                    &format!("Error: {reason}"),
                    Some(&name),
                );
                let state = self.states.entry(name.clone()).or_default();
                state.waiting = Some((reason.to_string(), message));
                // ErrImagePull shows until the next look, which finds the back-off; then the
                // next attempt comes when the back-off ends.
                let retry = match reason {
                    "ErrImagePull" => Duration::from_secs(1),
                    "ImagePullBackOff" => self
                        .node
                        .images
                        .backoff_remaining(self.uid(), &container.image)
                        .max(Duration::from_millis(100)),
                    _ => Duration::from_secs(10),
                };
                return Some(retry);
            }
        };
        let attempt = self.states.get(&name).map_or(0, |s| s.restart_count) + u32::from(restarting);
        match self.start(container, &ensured, attempt).await {
            Ok(instance) => {
                if restarting && let Ok(mut b) = self.node.crash_backoff.lock() {
                    b.next(&key, Instant::now());
                }
                self.event(
                    "Normal",
                    "Created",
                    &format!("Created container: {name}"),
                    Some(&name),
                );
                self.event(
                    "Normal",
                    "Started",
                    &format!("Started container {name}"),
                    Some(&name),
                );
                let state = self.states.entry(name.clone()).or_default();
                state.restart_count = attempt;
                state.image_id = instance.image_id.clone();
                state.current = Some(instance);
                state.waiting = None;
                state.done = None;
                state.readiness = probes::Tracker::default();
                state.liveness = probes::Tracker::default();
                state.startup = probes::Tracker::default();
                Some(Duration::from_millis(200))
            }
            Err(e) => {
                self.event("Warning", "Failed", &format!("Error: {e}"), Some(&name));
                let state = self.states.entry(name.clone()).or_default();
                state.waiting = Some(("CreateContainerError".into(), e));
                Some(Duration::from_secs(5))
            }
        }
    }

    /// The digest of what a container is started from: its entry in the pod's spec as the
    /// API server holds it (keys sorted, so stable across versions of kiln).
    fn spec_hash(&self, name: &str) -> String {
        use sha2::Digest;
        let entry = ["containers", "initContainers"]
            .iter()
            .filter_map(|list| self.object["spec"][*list].as_array())
            .flatten()
            .find(|c| c["name"] == name)
            .map(|c| c.to_string())
            .unwrap_or_default();
        let digest = sha2::Sha256::digest(entry.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Keeps the current and one previous instance of a container; removes older ones.
    fn prune_old_instances(&self, name: &str) {
        let keep: Vec<String> = self
            .states
            .get(name)
            .map(|s| {
                s.current
                    .iter()
                    .map(|c| c.id.clone())
                    .chain(s.previous.clone())
                    .collect()
            })
            .unwrap_or_default();
        let uid = self.uid().to_string();
        let name = name.to_string();
        let runtime = self.node.runtime.clone();
        tokio::task::spawn_blocking(move || {
            for r in runtime.records().unwrap_or_default() {
                if r.labels.get(LABEL_POD_UID) == Some(&uid)
                    && r.labels.get(LABEL_CONTAINER_NAME) == Some(&name)
                    && !keep.contains(&r.id)
                    && runtime.ended(&r.id).is_some()
                {
                    let _ = runtime.remove(&r.id);
                }
            }
        });
    }

    /// Creates and starts one instance of `container`.
    async fn start(
        &self,
        container: &Container,
        image: &Ensured,
        attempt: u32,
    ) -> Result<Instance, String> {
        let env = self.environment(container).await?;
        let lookup: BTreeMap<String, String> = env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let expand = |list: &Option<Vec<String>>| {
            list.as_ref().map(|l| {
                l.iter()
                    .map(|s| pod::expand(s, &lookup))
                    .collect::<Vec<_>>()
            })
        };
        let mut volumes = Vec::new();
        for m in &container.volume_mounts {
            let Some(source) = self.volumes.get(&m.name) else {
                return Err(format!("volume {:?} is not defined in the pod", m.name));
            };
            let source = match &m.sub_path {
                Some(sub) if !sub.is_empty() => {
                    if sub.split('/').any(|c| c == "..") || sub.starts_with('/') {
                        return Err(format!(
                            "subPath {sub:?} must be a relative path without '..'"
                        ));
                    }
                    let p = source.join(sub);
                    let _ = std::fs::create_dir_all(&p);
                    p
                }
                _ => source.clone(),
            };
            volumes.push(Volume {
                source,
                destination: m.mount_path.clone(),
                read_only: m.read_only,
            });
        }
        let pod_dir = self.pod_dir();
        let sandbox = self.sandbox.clone().ok_or("the pod has no sandbox")?;
        if !sandbox.host_network {
            for (file, dest) in [
                ("etc-hosts", "/etc/hosts"),
                ("resolv.conf", "/etc/resolv.conf"),
            ] {
                volumes.push(Volume {
                    source: pod_dir.join(file),
                    destination: dest.into(),
                    read_only: false,
                });
            }
        }
        let user = container
            .security_context
            .as_ref()
            .or(self.pod.spec.security_context.as_ref())
            .and_then(|s| {
                s.run_as_user.map(|u| match s.run_as_group {
                    Some(g) => format!("{u}:{g}"),
                    None => u.to_string(),
                })
            });
        let run = RunConfig {
            entrypoint: expand(&container.command),
            cmd: expand(&container.args).unwrap_or_default(),
            env,
            workdir: container.working_dir.clone().filter(|w| !w.is_empty()),
            user,
            network: match &sandbox.network {
                Some(n) if !sandbox.host_network => Network::Join(n.netns.clone()),
                _ => Network::Host,
            },
            terminal: container.tty,
            volumes,
            hostname: self
                .pod
                .spec
                .hostname
                .clone()
                .unwrap_or_else(|| self.pod.metadata.name.clone()),
            rootless: kiln_runtime::bundle::HostUser::unprivileged(),
        };
        let id = new_id();
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_POD_NAME.into(), self.pod.metadata.name.clone());
        labels.insert(
            LABEL_POD_NAMESPACE.into(),
            self.pod.metadata.namespace.clone(),
        );
        labels.insert(LABEL_POD_UID.into(), self.uid().to_string());
        labels.insert(LABEL_CONTAINER_NAME.into(), container.name.clone());
        labels.insert(LABEL_ATTEMPT.into(), attempt.to_string());
        labels.insert(LABEL_SANDBOX.into(), sandbox.id.clone());
        labels.insert(LABEL_IMAGE_ID.into(), image.image_id.clone());
        let hash = self.spec_hash(&container.name);
        labels.insert(LABEL_HASH.into(), hash.clone());
        let node = self.node.clone();
        let image = image.clone();
        let display_image = container.image.clone();
        let started = tokio::task::spawn_blocking(move || -> Result<Instance, String> {
            let store =
                kiln_image::ImageStore::open(&node.image_root).map_err(|e| e.to_string())?;
            let found = store.find(&image.store_name).map_err(|e| e.to_string())?;
            let img = store
                .image(&found.target, &kiln_image::Platform::host())
                .map_err(|e| e.to_string())?;
            let command =
                kiln_runtime::bundle::command(&img.config, &run).map_err(|e| e.to_string())?;
            node.runtime
                .create_bundle(store.blobs(), &img, &id, &run)
                .map_err(|e| e.to_string())?;
            let record = Record {
                id: id.clone(),
                image: display_image,
                command,
                created: kiln_runtime::container::unix_now(),
                auto_remove: false,
                labels,
            };
            node.runtime
                .save_record(&record)
                .map_err(|e| e.to_string())?;
            let mut shim = node.shim_command(&id);
            if let Err(e) = node.runtime.start_detached(&id, &mut shim) {
                let _ = node.runtime.remove(&id);
                return Err(e.to_string());
            }
            Ok(Instance {
                id,
                started: record.created,
                image_id: image.image_id,
                hash,
            })
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(started)
    }

    /// The container's environment: `env` entries resolved (values, field references,
    /// ConfigMap and Secret keys), in order.
    async fn environment(&self, container: &Container) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for var in &container.env {
            let value = if let Some(v) = &var.value {
                pod::expand(v, &seen)
            } else if let Some(from) = &var.value_from {
                self.value_from(from).await?
            } else {
                String::new()
            };
            seen.insert(var.name.clone(), value.clone());
            out.push(format!("{}={value}", var.name));
        }
        Ok(out)
    }

    async fn value_from(&self, from: &Value) -> Result<String, String> {
        if let Some(field) = from["fieldRef"]["fieldPath"].as_str() {
            let ip = self
                .sandbox
                .as_ref()
                .and_then(Sandbox::ip)
                .unwrap_or_default();
            return Ok(match field {
                "metadata.name" => self.pod.metadata.name.clone(),
                "metadata.namespace" => self.pod.metadata.namespace.clone(),
                "metadata.uid" => self.pod.metadata.uid.clone(),
                "spec.nodeName" => self.pod.spec.node_name.clone(),
                "spec.serviceAccountName" => self
                    .pod
                    .spec
                    .service_account_name
                    .clone()
                    .unwrap_or_default(),
                "status.podIP" => ip,
                "status.hostIP" => self.node.host_ip.clone(),
                other => {
                    if let Some(label) = other
                        .strip_prefix("metadata.labels['")
                        .and_then(|l| l.strip_suffix("']"))
                    {
                        self.pod
                            .metadata
                            .labels
                            .get(label)
                            .cloned()
                            .unwrap_or_default()
                    } else {
                        return Err(format!("unsupported fieldRef {other:?}"));
                    }
                }
            });
        }
        for (kind, plural, secret) in [
            ("configMapKeyRef", "configmaps", false),
            ("secretKeyRef", "secrets", true),
        ] {
            let r = &from[kind];
            if r.is_null() {
                continue;
            }
            let name = r["name"].as_str().unwrap_or_default();
            let key = r["key"].as_str().unwrap_or_default();
            let optional = r["optional"].as_bool().unwrap_or(false);
            let path = format!(
                "/api/v1/namespaces/{}/{plural}/{name}",
                self.pod.metadata.namespace
            );
            let object = match self.node.api.get(&path).await {
                Ok(o) => o,
                Err(_) if optional => return Ok(String::new()),
                Err(e) => return Err(format!("{kind} {name}: {e}")),
            };
            let value = if secret {
                object["data"][key].as_str().and_then(|b| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .ok()
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                })
            } else {
                object["data"][key].as_str().map(str::to_string)
            };
            return match value {
                Some(v) => Ok(v),
                None if optional => Ok(String::new()),
                None => Err(format!(
                    "couldn't find key {key} in {} {name}",
                    &plural[..plural.len() - 1]
                )),
            };
        }
        Err("unsupported valueFrom".into())
    }

    /// The pod's pull secrets, read from its namespace. Missing ones are reported, as the
    /// kubelet does, and the pull goes on without them.
    async fn pull_secrets(&self) -> Vec<Value> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for s in &self.pod.spec.image_pull_secrets {
            let path = format!(
                "/api/v1/namespaces/{}/secrets/{}",
                self.pod.metadata.namespace, s.name
            );
            match self.node.api.get(&path).await {
                Ok(secret) => found.push(secret),
                Err(_) => missing.push(s.name.clone()),
            }
        }
        if !missing.is_empty() {
            self.event(
                "Warning",
                "FailedToRetrieveImagePullSecret",
                &format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    missing.join(", ")
                ),
                None,
            );
        }
        found
    }

    async fn make_sandbox(&mut self) -> Result<(), String> {
        let dir = self.pod_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let id = self
            .sandbox
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_else(new_id);
        let host_network = self.pod.spec.host_network;
        let network = if host_network {
            None
        } else {
            let config = self.node.network.clone();
            let sandbox_id = id.clone();
            Some(
                tokio::task::spawn_blocking(move || config.setup(&sandbox_id))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?,
            )
        };
        let sandbox = Sandbox {
            id,
            uid: self.uid().to_string(),
            name: self.pod.metadata.name.clone(),
            namespace: self.pod.metadata.namespace.clone(),
            created: kiln_runtime::container::unix_now(),
            host_network,
            network,
            stopped: false,
        };
        let hostname = self
            .pod
            .spec
            .hostname
            .clone()
            .unwrap_or_else(|| self.pod.metadata.name.clone());
        let mut hosts = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        if let Some(ip) = sandbox.ip() {
            hosts.push_str(&format!("{ip}\t{hostname}\n"));
        }
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let writes = [
            ("etc-hosts", hosts),
            ("resolv.conf", resolv),
            (
                "sandbox.json",
                serde_json::to_string_pretty(&sandbox).unwrap_or_default(),
            ),
        ];
        for (file, text) in writes {
            let path = dir.join(file);
            tokio::fs::write(&path, text)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        self.start_time = sandbox.created;
        self.sandbox = Some(sandbox);
        Ok(())
    }

    /// Makes each volume's directory: emptyDir, hostPath, and the files of ConfigMap and
    /// Secret volumes.
    async fn prepare_volumes(&mut self) -> Result<(), String> {
        let base = self.pod_dir().join("volumes");
        // ConfigMap and Secret contents are written again at most once per sync period (the
        // kubelet's syncFrequency), not on every look at the pod.
        let refresh = self
            .volumes_refreshed
            .is_none_or(|at| at.elapsed() >= VOLUME_REFRESH);
        if refresh {
            self.volumes_refreshed = Some(Instant::now());
        }
        for v in self.pod.spec.volumes.clone() {
            let keyed = v.config_map.is_some() || v.secret.is_some();
            if self.volumes.contains_key(&v.name) && !(keyed && refresh) {
                continue;
            }
            let path = if v.empty_dir.is_some() {
                let p = base.join(&v.name);
                tokio::fs::create_dir_all(&p)
                    .await
                    .map_err(|e| e.to_string())?;
                p
            } else if let Some(h) = &v.host_path {
                let p = PathBuf::from(&h.path);
                match h.kind.as_deref() {
                    Some("DirectoryOrCreate") => tokio::fs::create_dir_all(&p)
                        .await
                        .map_err(|e| e.to_string())?,
                    Some("Directory") if !p.is_dir() => {
                        return Err(format!(
                            "MountVolume.SetUp failed for volume {:?} : hostPath type check failed: {} is not a directory",
                            v.name, h.path
                        ));
                    }
                    _ => {}
                }
                p
            } else if let Some(source) = v.config_map.as_ref().or(v.secret.as_ref()) {
                let secret = v.secret.is_some();
                let p = base.join(&v.name);
                tokio::fs::create_dir_all(&p)
                    .await
                    .map_err(|e| e.to_string())?;
                let name = if secret {
                    source.secret_name.clone()
                } else {
                    source.name.clone()
                }
                .unwrap_or_default();
                let plural = if secret { "secrets" } else { "configmaps" };
                let url = format!(
                    "/api/v1/namespaces/{}/{plural}/{name}",
                    self.pod.metadata.namespace
                );
                match self.node.api.get(&url).await {
                    Ok(object) => write_keys(&p, &object, source, secret).await?,
                    Err(e) if !source.optional.unwrap_or(false) => {
                        return Err(format!(
                            "MountVolume.SetUp failed for volume {:?} : {} {name:?} not found: {e}",
                            v.name,
                            if secret { "secret" } else { "configmap" }
                        ));
                    }
                    Err(_) => {}
                }
                p
            } else {
                // Other volume kinds: an empty directory stands in.
                let p = base.join(&v.name);
                tokio::fs::create_dir_all(&p)
                    .await
                    .map_err(|e| e.to_string())?;
                p
            };
            self.volumes.insert(v.name.clone(), path);
        }
        Ok(())
    }

    /// Runs every due probe; returns when the next one is due.
    async fn probe_all(&mut self) -> Option<Duration> {
        let ip = self
            .sandbox
            .as_ref()
            .and_then(|s| if s.host_network { None } else { s.ip() })
            .unwrap_or_else(|| "127.0.0.1".into());
        let mut next: Option<Duration> = None;
        let containers = self.pod.spec.containers.clone();
        for c in &containers {
            let Some(state) = self.states.get(&c.name) else {
                continue;
            };
            let Some(instance) = state.current.clone() else {
                continue;
            };
            if state.done.is_some() || self.node.runtime.ended(&instance.id).is_some() {
                continue;
            }
            let started_at = instance.started;
            let now = Instant::now();
            // Startup probe gates the others.
            let mut started = state.started_probe_ok || c.startup_probe.is_none();
            if let Some(p) = &c.startup_probe
                && !started
            {
                let (due, wait) = self
                    .states
                    .get_mut(&c.name)?
                    .startup
                    .due(p, started_at, now);
                next = min_opt(next, wait);
                if due {
                    let r = probes::run(p, c, &ip, &self.node.runtime, &instance.id).await;
                    let state = self.states.get_mut(&c.name)?;
                    match state.startup.record(p, r.clone(), now) {
                        Some(true) => {
                            state.started_probe_ok = true;
                            started = true;
                        }
                        Some(false) => {
                            self.unhealthy(c, "Startup", &r, &instance.id).await;
                            continue;
                        }
                        None => {}
                    }
                }
            }
            if !started {
                continue;
            }
            if let Some(p) = &c.liveness_probe {
                let (due, wait) = self
                    .states
                    .get_mut(&c.name)?
                    .liveness
                    .due(p, started_at, now);
                next = min_opt(next, wait);
                if due {
                    let r = probes::run(p, c, &ip, &self.node.runtime, &instance.id).await;
                    let state = self.states.get_mut(&c.name)?;
                    if state.liveness.record(p, r.clone(), now) == Some(false) {
                        self.unhealthy(c, "Liveness", &r, &instance.id).await;
                        continue;
                    }
                }
            }
            match &c.readiness_probe {
                Some(p) => {
                    let (due, wait) = self
                        .states
                        .get_mut(&c.name)?
                        .readiness
                        .due(p, started_at, now);
                    next = min_opt(next, wait);
                    if due {
                        let r = probes::run(p, c, &ip, &self.node.runtime, &instance.id).await;
                        if let ProbeResult::Failure(why) = &r {
                            self.event(
                                "Warning",
                                "Unhealthy",
                                &format!("Readiness probe failed: {why}"),
                                Some(&c.name),
                            );
                        }
                        let state = self.states.get_mut(&c.name)?;
                        if let Some(ok) = state.readiness.record(p, r, now) {
                            state.ready = ok;
                        }
                    }
                }
                None => {
                    if let Some(state) = self.states.get_mut(&c.name) {
                        state.ready = true;
                    }
                }
            }
        }
        next
    }

    /// A liveness or startup probe failed past its threshold: the container is killed and
    /// restarted as its restart policy says.
    async fn unhealthy(&mut self, c: &Container, kind: &str, result: &ProbeResult, id: &str) {
        if let ProbeResult::Failure(why) = result {
            self.event(
                "Warning",
                "Unhealthy",
                &format!("{kind} probe failed: {why}"),
                Some(&c.name),
            );
        }
        self.event(
            "Normal",
            "Killing",
            &format!(
                "Container {} failed {} probe, will be restarted",
                c.name,
                kind.to_lowercase()
            ),
            Some(&c.name),
        );
        let grace = Duration::from_secs(self.pod.grace_period_seconds() as u64);
        let runtime = self.node.runtime.clone();
        let id = id.to_string();
        let _ = tokio::task::spawn_blocking(move || runtime.stop(&id, grace)).await;
    }

    /// Stops every container (SIGTERM, then SIGKILL after the grace period), removes the
    /// pod's network and, if the API asked for the deletion, confirms it.
    async fn terminate(&mut self, confirm: bool) {
        let grace = Duration::from_secs(self.pod.grace_period_seconds() as u64);
        let mut stops = Vec::new();
        let running: Vec<(String, String)> = self
            .states
            .iter()
            .filter_map(|(name, s)| s.current.as_ref().map(|c| (name.clone(), c.id.clone())))
            .filter(|(_, id)| self.node.runtime.ended(id).is_none())
            .collect();
        for (name, id) in &running {
            self.event(
                "Normal",
                "Killing",
                &format!("Stopping container {name}"),
                Some(name),
            );
            let runtime = self.node.runtime.clone();
            let id = id.clone();
            stops.push(tokio::task::spawn_blocking(move || {
                runtime.stop(&id, grace)
            }));
        }
        for s in stops {
            let _ = s.await;
        }
        // Containers, then network, then the pod's directory.
        let uid = self.uid().to_string();
        let runtime = self.node.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for r in runtime.records().unwrap_or_default() {
                if r.labels.get(LABEL_POD_UID) == Some(&uid) {
                    let _ = runtime.remove(&r.id);
                }
            }
        })
        .await;
        if let Some(sandbox) = &self.sandbox
            && sandbox.network.is_some()
        {
            let config = self.node.network.clone();
            let id = sandbox.id.clone();
            let _ = tokio::task::spawn_blocking(move || config.teardown(&id)).await;
        }
        let _ = tokio::fs::remove_dir_all(self.pod_dir()).await;
        self.node.recorder.forget(self.uid());
        if confirm {
            let path = format!(
                "/api/v1/namespaces/{}/pods/{}",
                self.pod.metadata.namespace, self.pod.metadata.name
            );
            let options = json!({
                "apiVersion": "v1", "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid()},
            });
            if let Err(e) = self.node.api.delete(&path, &options).await
                && !e.is_not_found()
                && !e.is_conflict()
            {
                tracing::warn!(pod = %self.pod.key(), error = %e, "confirming the deletion failed");
            }
        }
    }

    fn publish_view(&self) {
        let view = PodView {
            uid: self.uid().to_string(),
            containers: self
                .states
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        (s.current.as_ref().map(|c| c.id.clone()), s.previous.clone()),
                    )
                })
                .collect(),
        };
        self.node.publish_view(&self.pod, view);
    }

    fn container_report(&self, c: &Container) -> ContainerReport {
        let state = self.states.get(&c.name);
        let current = state.and_then(|s| s.current.as_ref());
        let st = match state {
            Some(s) if s.done.is_some() => State::Terminated(
                s.done
                    .clone()
                    .unwrap_or_else(|| Terminated::new(0, 0, 0, "")),
            ),
            Some(s)
                if s.waiting.is_some()
                    && (current.is_none()
                        || s.waiting
                            .as_ref()
                            .is_some_and(|w| w.0 == "CrashLoopBackOff")) =>
            {
                let (reason, message) = s.waiting.clone().unwrap_or_default();
                State::Waiting { reason, message }
            }
            Some(ContainerState {
                current: Some(i), ..
            }) => State::Running { started: i.started },
            _ => State::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
        };
        let running = matches!(st, State::Running { .. });
        ContainerReport {
            name: c.name.clone(),
            image: c.image.clone(),
            image_id: state.map(|s| s.image_id.clone()).unwrap_or_default(),
            container_id: current.map(|i| container_id(&i.id)),
            state: st,
            last_state: state.and_then(|s| s.last.clone()),
            ready: running && state.is_some_and(|s| s.ready),
            started: running
                && state.is_some_and(|s| s.started_probe_ok || c.startup_probe.is_none()),
            restart_count: state.map(|s| s.restart_count).unwrap_or(0),
        }
    }

    /// Writes the pod's status if it changed.
    async fn report(&mut self) {
        let inits: Vec<ContainerReport> = self
            .pod
            .spec
            .init_containers
            .iter()
            .map(|c| self.container_report(c))
            .collect();
        let initialized = self.pod.spec.init_containers.iter().all(|c| {
            self.states
                .get(&c.name)
                .and_then(|s| s.done.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        });
        let containers: Vec<ContainerReport> = self
            .pod
            .spec
            .containers
            .iter()
            .map(|c| {
                let mut r = self.container_report(c);
                if !initialized {
                    r.state = State::Waiting {
                        reason: "PodInitializing".into(),
                        message: String::new(),
                    };
                }
                r
            })
            .collect();
        let phase = status::phase(self.pod.restart_policy(), &inits, initialized, &containers);
        let sandbox = self.sandbox.as_ref();
        let report = PodReport {
            phase,
            host_ip: self.node.host_ip.clone(),
            pod_ip: sandbox.and_then(|s| {
                if s.host_network {
                    Some(self.node.host_ip.clone())
                } else {
                    s.ip()
                }
            }),
            start_time: self.start_time,
            sandbox_ready: sandbox.is_some_and(|s| !s.stopped),
            initialized,
            init_containers: inits,
            containers,
        };
        let status = report.to_json(&self.object["status"]);
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/status",
            self.pod.metadata.namespace, self.pod.metadata.name
        );
        match self
            .node
            .api
            .merge_patch(&path, &json!({"status": status}))
            .await
        {
            Ok(updated) => {
                self.object["status"] = updated["status"].clone();
                self.last_status = Some(status);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(pod = %self.pod.key(), error = %e, "status update failed"),
        }
    }
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Writes the keys of a ConfigMap or Secret as files (all, or the listed items).
async fn write_keys(
    dir: &std::path::Path,
    object: &Value,
    source: &pod::KeyedSource,
    secret: bool,
) -> Result<(), String> {
    use base64::Engine;
    let data = object["data"].as_object().cloned().unwrap_or_default();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let value = |key: &str| -> Option<Vec<u8>> {
        let v = data.get(key)?.as_str()?;
        if secret {
            base64::engine::general_purpose::STANDARD.decode(v).ok()
        } else {
            Some(v.as_bytes().to_vec())
        }
    };
    if source.items.is_empty() {
        for key in data.keys() {
            if let Some(v) = value(key) {
                files.push((key.clone(), v));
            }
        }
    } else {
        for item in &source.items {
            match value(&item.key) {
                Some(v) => files.push((item.path.clone(), v)),
                None => return Err(format!("key {:?} not found", item.key)),
            }
        }
    }
    for (path, bytes) in files {
        if path.split('/').any(|c| c == "..") || path.starts_with('/') {
            return Err(format!("invalid path {path:?}"));
        }
        let target = dir.join(&path);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| e.to_string())?;
        }
        tokio::fs::write(&target, bytes)
            .await
            .map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

/// A new 64-hex container or sandbox ID, as containerd makes them.
pub fn new_id() -> String {
    format!(
        "{:032x}{:032x}",
        uuid::Uuid::new_v4().as_u128(),
        uuid::Uuid::new_v4().as_u128()
    )
}

/// The `containerID` a status reports: runtime type and ID.
pub fn container_id(id: &str) -> String {
    format!("kiln://{id}")
}
