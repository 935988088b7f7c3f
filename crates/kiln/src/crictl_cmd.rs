//! `kiln crictl ...`: the debugging views of Kubernetes' `crictl` (cri-tools v1.32) over the
//! node agent's own state. There is no CRI socket: containers are read from the runtime's
//! records, pod sandboxes from `<root>/node/pods/<uid>/sandbox.json`, images from the store.
//! What users see matches crictl: table columns and widths, 13-character IDs, "X ago"
//! times, state names, and the JSON of `inspect`, `inspectp` and `-o json`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kiln_client::{
    Client, CredentialProvider, Credentials, DockerConfig, PullOptions, Silent, TransportOptions,
};
use kiln_image::{ImageStore, Platform, Reference};
use kiln_node::worker::{
    Sandbox, LABEL_ATTEMPT, LABEL_CONTAINER_NAME, LABEL_IMAGE_ID, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID, LABEL_SANDBOX,
};
use kiln_runtime::container::{Record, Runtime, Status};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum CrictlCommand {
    /// List containers
    Ps(PsArgs),
    /// List pods
    Pods(PodsArgs),
    /// List images
    #[command(visible_aliases = ["image", "img"])]
    Images(ImagesArgs),
    /// Display the status of one or more containers
    Inspect(InspectArgs),
    /// Display the status of one or more pods
    Inspectp(InspectArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Pull an image from a registry into the node's store
    Pull(PullArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
}

/// Where the node agent's containers are run; `runc state` tells running from unknown.
#[derive(Args)]
pub struct RuntimeArg {
    /// OCI runtime binary the node agent runs containers with (its --container-runtime)
    #[arg(long = "runtime", default_value = "runc", value_name = "BINARY")]
    binary: String,
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default: running only)
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Filter by container id (a prefix is enough)
    #[arg(long)]
    id: Option<String>,
    /// Filter by container name regular expression pattern
    #[arg(long, value_name = "REGEX")]
    name: Option<String>,
    /// Filter by pod id (a prefix is enough)
    #[arg(short, long)]
    pod: Option<String>,
    /// Filter by pod namespace regular expression pattern
    #[arg(long, value_name = "REGEX")]
    namespace: Option<String>,
    /// Filter by container state: created, running, exited or unknown
    #[arg(short, long)]
    state: Option<String>,
    /// Filter by key=value label
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Output format, One of: json|table
    #[arg(short, long, default_value = "table")]
    output: String,
    /// Show the most recently created container (includes all states)
    #[arg(short, long)]
    latest: bool,
    /// Show last n recently created containers (includes all states). Set 0 for unlimited.
    #[arg(short = 'n', long, default_value_t = 0)]
    last: usize,
    /// Show output without truncating the ID
    #[arg(long)]
    no_trunc: bool,
    #[command(flatten)]
    runtime: RuntimeArg,
}

#[derive(Args)]
pub struct PodsArgs {
    /// List only pod IDs
    #[arg(short, long)]
    quiet: bool,
    /// Filter by pod id (a prefix is enough)
    #[arg(long)]
    id: Option<String>,
    /// Filter by pod name regular expression pattern
    #[arg(long, value_name = "REGEX")]
    name: Option<String>,
    /// Filter by pod namespace regular expression pattern
    #[arg(long, value_name = "REGEX")]
    namespace: Option<String>,
    /// Filter by pod state: ready or notready
    #[arg(short, long)]
    state: Option<String>,
    /// Filter by key=value label
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Output format, One of: json|table
    #[arg(short, long, default_value = "table")]
    output: String,
    /// Show the most recently created pod
    #[arg(short, long)]
    latest: bool,
    /// Show last n recently created pods. Set 0 for unlimited
    #[arg(short = 'n', long, default_value_t = 0)]
    last: usize,
    /// Show output without truncating the ID
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Args)]
pub struct ImagesArgs {
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Show output without truncating the ID
    #[arg(long)]
    no_trunc: bool,
    /// Output format, One of: json|table
    #[arg(short, long, default_value = "table")]
    output: String,
    /// Only this image: REPOSITORY[:TAG], a digest or an image ID
    image: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Output format, One of: json
    #[arg(short, long, default_value = "json")]
    output: String,
    /// Do not show verbose information (the "info" object)
    #[arg(short, long)]
    quiet: bool,
    /// IDs (a unique prefix is enough)
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
    #[command(flatten)]
    runtime: RuntimeArg,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs. Defaults to all
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    tail: i64,
    /// Maximum bytes of logs to return. Defaults to no limit
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    limit_bytes: i64,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    /// Container ID (a unique prefix is enough)
    #[arg(value_name = "CONTAINER-ID")]
    id: String,
    #[command(flatten)]
    runtime: RuntimeArg,
}

#[derive(Args)]
pub struct PullArgs {
    /// Use USERNAME[:PASSWORD] for accessing the registry [default: the docker config's
    /// credentials for it, else none]
    #[arg(long, env = "CRICTL_CREDS", value_name = "USERNAME[:PASSWORD]")]
    creds: Option<String>,
    /// A registry pulled from over plain HTTP or without certificate checks (repeatable;
    /// also $KILN_INSECURE_REGISTRIES, comma-separated)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Image: NAME[:TAG|@DIGEST]
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    image: String,
}

#[derive(Args)]
pub struct RmiArgs {
    /// Images: IDs (a prefix is enough), names or digests
    #[arg(required = true, value_name = "IMAGE-ID")]
    images: Vec<String>,
}

pub fn run(root: &Path, command: CrictlCommand) -> Result<()> {
    match command {
        CrictlCommand::Ps(args) => ps(root, &args),
        CrictlCommand::Pods(args) => pods(root, &args),
        CrictlCommand::Images(args) => images(root, &args),
        CrictlCommand::Inspect(args) => inspect(root, &args),
        CrictlCommand::Inspectp(args) => inspectp(root, &args),
        CrictlCommand::Logs(args) => logs(root, &args),
        CrictlCommand::Pull(args) => pull(root, &args),
        CrictlCommand::Rmi(args) => rmi(root, &args),
    }
}

// ---------------------------------------------------------------------------------------
// The node's state, as the CRI would report it.

fn runtime_at(root: &Path, binary: &str) -> Runtime {
    Runtime::new(binary, &root.join("runtime"))
}

/// A container's CRI state. kiln starts a container as soon as it creates it, so
/// CONTAINER_CREATED never shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CState {
    Running,
    Exited { code: i32, finished: i64 },
    Unknown,
}

impl CState {
    fn of(status: Status) -> CState {
        match status {
            Status::Running => CState::Running,
            Status::Exited { code, finished } => CState::Exited { code, finished },
            Status::Unknown => CState::Unknown,
        }
    }

    /// The CRI enum name, as JSON shows it.
    fn enum_name(self) -> &'static str {
        match self {
            CState::Running => "CONTAINER_RUNNING",
            CState::Exited { .. } => "CONTAINER_EXITED",
            CState::Unknown => "CONTAINER_UNKNOWN",
        }
    }

    /// crictl's `convertContainerState`, as tables show it.
    fn table_name(self) -> &'static str {
        match self {
            CState::Running => "Running",
            CState::Exited { .. } => "Exited",
            CState::Unknown => "Unknown",
        }
    }
}

/// The labels and annotations the kubelet would have put on a container: it sets the
/// restart count as an annotation, the rest of kiln's `io.kubernetes.*` labels stay labels.
fn split_labels(record: &Record) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = record.labels.clone();
    let mut annotations = BTreeMap::new();
    if let Some(v) = labels.remove(LABEL_ATTEMPT) {
        annotations.insert(LABEL_ATTEMPT.to_string(), v);
    }
    (labels, annotations)
}

fn label<'a>(record: &'a Record, key: &str) -> Option<&'a str> {
    record.labels.get(key).map(String::as_str)
}

fn attempt(record: &Record) -> u32 {
    label(record, LABEL_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// The node agent's containers: those with a sandbox label. `kiln run` containers live in
/// the same runtime directory but are no pod's, and the CRI would not know them.
fn pod_containers(runtime: &Runtime) -> Result<Vec<Record>> {
    let records = runtime
        .records()
        .with_context(|| format!("reading containers under {}", runtime.dir.display()))?;
    Ok(records
        .into_iter()
        .filter(|r| r.labels.contains_key(LABEL_SANDBOX))
        .collect())
}

fn pods_dir(root: &Path) -> PathBuf {
    root.join("node").join("pods")
}

/// Every pod sandbox the node agent recorded. A file that does not parse (one being
/// rewritten, say) is reported and skipped, so one bad pod does not hide the others.
fn sandboxes(root: &Path) -> Result<Vec<Sandbox>> {
    let dir = pods_dir(root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path().join("sandbox.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        match serde_json::from_slice::<Sandbox>(&bytes) {
            Ok(s) => out.push(s),
            Err(e) => eprintln!("WARN: skipping {}: {e}", path.display()),
        }
    }
    Ok(out)
}

/// The one ID among `ids` that is `input` or starts with it, as containerd's truncated-ID
/// index resolves them.
fn resolve_prefix<'a>(
    input: &str,
    ids: impl Iterator<Item = &'a str>,
    what: &str,
) -> Result<String> {
    if input.is_empty() {
        bail!("ID cannot be empty");
    }
    let mut matches: Vec<&str> = Vec::new();
    for id in ids {
        if id == input {
            return Ok(id.to_string());
        }
        if id.starts_with(input) && !matches.contains(&id) {
            matches.push(id);
        }
    }
    match matches.len() {
        0 => bail!("no {what} matches {input}"),
        1 => Ok(matches[0].to_string()),
        _ => bail!(
            "{input} is ambiguous: it starts the IDs of {} {what}s ({})",
            matches.len(),
            matches.join(", ")
        ),
    }
}

fn find_container(runtime: &Runtime, input: &str) -> Result<Record> {
    let records = pod_containers(runtime)?;
    let id = resolve_prefix(input, records.iter().map(|r| r.id.as_str()), "container")?;
    records
        .into_iter()
        .find(|r| r.id == id)
        .with_context(|| format!("no container matches {input}"))
}

fn find_sandbox(root: &Path, input: &str) -> Result<Sandbox> {
    let all = sandboxes(root)?;
    let id = resolve_prefix(input, all.iter().map(|s| s.id.as_str()), "pod")?;
    all.into_iter()
        .find(|s| s.id == id)
        .with_context(|| format!("no pod matches {input}"))
}

/// `key=value` selectors, as crictl's `--label` takes them.
fn parse_labels(args: &[String]) -> Result<Vec<(String, String)>> {
    args.iter()
        .map(|s| {
            let mut parts = s.split('=');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(k), Some(v), None) => Ok((k.to_string(), v.to_string())),
                _ => bail!("incorrectly specified label: {s}"),
            }
        })
        .collect()
}

fn labels_match(selector: &[(String, String)], labels: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
}

/// A `--name`/`--namespace` pattern; crictl matches it anywhere in the value.
fn pattern(flag: &str, p: Option<&str>) -> Result<Option<regex::Regex>> {
    p.filter(|p| !p.is_empty())
        .map(|p| {
            regex::Regex::new(p).map_err(|e| {
                anyhow::anyhow!("{flag} {p:?} is not a regular expression kiln understands: {e}")
            })
        })
        .transpose()
}

fn matches(re: &Option<regex::Regex>, value: &str) -> bool {
    re.as_ref().is_none_or(|re| re.is_match(value))
}

/// crictl's `--latest` and `--last N`: the newest N of a list sorted newest first.
fn newest(len: usize, latest: bool, last: usize) -> usize {
    let n = if last > 0 {
        last
    } else if latest {
        1
    } else {
        len
    };
    n.min(len)
}

// ---------------------------------------------------------------------------------------
// Images, as containerd's CRI image service lists them: one entry per image ID (the config
// digest), with every name that reaches it.

#[derive(Debug, Clone, Default)]
struct CriImage {
    /// `sha256:` + the config digest.
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    size: u64,
    uid: Option<i64>,
    username: String,
}

struct Images {
    list: Vec<CriImage>,
    /// A name's target digest (what `repo@digest` names) -> index in `list`.
    by_target: HashMap<String, usize>,
}

impl Images {
    fn load(store: &ImageStore) -> Result<Images> {
        let refs = store
            .refs()
            .list()
            .context("listing the store's image names")?;
        let host = Platform::host();
        let mut list: Vec<CriImage> = Vec::new();
        // A name's target digest -> the image ID it resolves to (each target read once).
        let mut target_ids: HashMap<String, String> = HashMap::new();
        for entry in &refs {
            let target_key = entry.target.digest.to_string();
            let id = match target_ids.get(&target_key) {
                Some(id) => id.clone(),
                None => {
                    let image = describe(store, &entry.target, &host);
                    let id = image.id.clone();
                    if !list.iter().any(|c| c.id == id) {
                        list.push(image);
                    }
                    target_ids.insert(target_key, id.clone());
                    id
                }
            };
            let Some(image) = list.iter_mut().find(|c| c.id == id) else {
                continue;
            };
            let name = &entry.name;
            if name.tag().is_some() {
                image.repo_tags.push(name.to_string());
            }
            // Pulled by tag or by digest, containerd keeps `repo@digest` too; it is also what
            // the node labels containers with (`io.kubernetes.container.imageID`).
            let pinned = format!("{}@{}", name.repository(), entry.target.digest);
            if !image.repo_digests.contains(&pinned) {
                image.repo_digests.push(pinned);
            }
        }
        for image in &mut list {
            image.repo_tags.sort();
            image.repo_digests.sort();
        }
        // crictl's `imageByRef` order.
        list.sort_by(|a, b| match (a.repo_tags.first(), b.repo_tags.first()) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => match (a.repo_digests.first(), b.repo_digests.first()) {
                (Some(x), Some(y)) => x.cmp(y),
                _ => a.id.cmp(&b.id),
            },
        });
        let by_target = target_ids
            .into_iter()
            .filter_map(|(target, id)| list.iter().position(|c| c.id == id).map(|i| (target, i)))
            .collect();
        Ok(Images { list, by_target })
    }

    /// The image a container runs, from its `repo@digest` label.
    fn for_container(&self, record: &Record) -> Option<&CriImage> {
        let (_, digest) = label(record, LABEL_IMAGE_ID)?.rsplit_once('@')?;
        self.by_target.get(digest).map(|&i| &self.list[i])
    }
}

/// One target as the CRI describes it. A target the host platform cannot use still shows,
/// under its own digest and size, as containerd shows what it cannot unpack.
fn describe(store: &ImageStore, target: &kiln_image::Target, host: &Platform) -> CriImage {
    match store.image(target, host) {
        Ok(image) => {
            // containerd counts every descriptor from the name's target down: an index,
            // the platform's manifest, its config and layers.
            let mut size = target.size + image.content_size();
            if image.manifest_digest != target.digest {
                size += store.blobs().size(&image.manifest_digest).unwrap_or(0);
            }
            let user = image
                .config
                .config()
                .as_ref()
                .and_then(|c| c.user().clone())
                .unwrap_or_default();
            let (uid, username) = image_user(&user);
            CriImage {
                id: image.config_digest.to_string(),
                size,
                uid,
                username,
                ..CriImage::default()
            }
        }
        Err(_) => CriImage {
            id: target.digest.to_string(),
            size: target.size,
            ..CriImage::default()
        },
    }
}

/// containerd's `getUserFromImage`: a numeric user is a uid, anything else a user name.
fn image_user(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

fn open_store(root: &Path) -> Result<ImageStore> {
    ImageStore::open(root).with_context(|| format!("opening the image store at {}", root.display()))
}

// ---------------------------------------------------------------------------------------
// ps

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageSpecJson {
    image: String,
    annotations: BTreeMap<String, String>,
    user_specified_image: String,
    runtime_handler: String,
}

#[derive(Serialize)]
struct ContainerMetadataJson {
    name: String,
    attempt: u32,
}

/// A CRI `Container` in protojson's field order (`crictl ps -o json`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerJson {
    id: String,
    pod_sandbox_id: String,
    metadata: ContainerMetadataJson,
    image: ImageSpecJson,
    image_ref: String,
    state: &'static str,
    /// protojson writes int64 as a string.
    created_at: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    image_id: String,
}

fn ps(root: &Path, args: &PsArgs) -> Result<()> {
    let runtime = runtime_at(root, &args.runtime.binary);
    let mut records = pod_containers(&runtime)?;
    let name_re = pattern("--name", args.name.as_deref())?;
    let namespace_re = pattern("--namespace", args.namespace.as_deref())?;
    let selector = parse_labels(&args.label)?;
    let wanted_state = match args.state.as_deref().map(str::to_lowercase).as_deref() {
        None | Some("") => None,
        Some(s @ ("created" | "running" | "exited" | "unknown")) => Some(s.to_string()),
        Some(_) => bail!("--state should be one of created, running, exited or unknown"),
    };
    // crictl shows running containers unless told otherwise; --latest and --last show all.
    let state_filter = if args.latest || args.last > 0 {
        None
    } else if wanted_state.is_some() {
        wanted_state
    } else if args.all {
        None
    } else {
        Some("running".to_string())
    };
    // As containerd: an ID filter that is a unique prefix means that container or pod.
    let id_filter = args.id.as_deref().filter(|s| !s.is_empty()).map(|id| {
        resolve_prefix(id, records.iter().map(|r| r.id.as_str()), "container")
            .unwrap_or_else(|_| id.to_string())
    });
    let pod_filter = match args.pod.as_deref().filter(|s| !s.is_empty()) {
        Some(p) => {
            let pods = sandboxes(root)?;
            let ids = pods
                .iter()
                .map(|s| s.id.as_str())
                .chain(records.iter().filter_map(|r| label(r, LABEL_SANDBOX)));
            Some(resolve_prefix(p, ids, "pod").unwrap_or_else(|_| p.to_string()))
        }
        None => None,
    };
    records.retain(|r| {
        id_filter.as_ref().is_none_or(|id| &r.id == id)
            && pod_filter
                .as_ref()
                .is_none_or(|p| label(r, LABEL_SANDBOX) == Some(p.as_str()))
            && labels_match(&selector, &r.labels)
            && matches(&name_re, label(r, LABEL_CONTAINER_NAME).unwrap_or_default())
            && matches(
                &namespace_re,
                label(r, LABEL_POD_NAMESPACE).unwrap_or("unknown"),
            )
    });
    // Asking the runtime is the slow part: only for what the other filters kept.
    let mut rows: Vec<(Record, CState)> = records
        .into_iter()
        .map(|r| {
            let state = CState::of(runtime.status(&r.id));
            (r, state)
        })
        .filter(|(_, s)| {
            state_filter
                .as_deref()
                .is_none_or(|f| f == s.table_name().to_lowercase())
        })
        .collect();
    rows.sort_by(|(a, _), (b, _)| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    rows.truncate(newest(rows.len(), args.latest, args.last));

    let images = Images::load(&open_store(root)?)?;
    let image_id = |r: &Record| -> String {
        images
            .for_container(r)
            .map(|i| i.id.clone())
            .unwrap_or_else(|| r.image.clone())
    };
    let mut out = std::io::stdout().lock();
    match args.output.as_str() {
        "json" => {
            let containers: Vec<ContainerJson> = rows
                .iter()
                .map(|(r, state)| {
                    let (labels, annotations) = split_labels(r);
                    let id = image_id(r);
                    let resolved = images.for_container(r).map(|i| i.id.clone());
                    ContainerJson {
                        id: r.id.clone(),
                        pod_sandbox_id: label(r, LABEL_SANDBOX).unwrap_or_default().into(),
                        metadata: ContainerMetadataJson {
                            name: label(r, LABEL_CONTAINER_NAME).unwrap_or_default().into(),
                            attempt: attempt(r),
                        },
                        image: ImageSpecJson {
                            image: id.clone(),
                            annotations: BTreeMap::new(),
                            user_specified_image: r.image.clone(),
                            runtime_handler: String::new(),
                        },
                        image_ref: id.clone(),
                        state: state.enum_name(),
                        created_at: (i128::from(r.created) * 1_000_000_000).to_string(),
                        labels,
                        annotations,
                        image_id: resolved.unwrap_or_default(),
                    }
                })
                .collect();
            writeln!(
                out,
                "{}",
                proto_json(&BTreeMap::from([("containers", &containers)]))?
            )?;
            return Ok(());
        }
        "table" => {}
        other => bail!("unsupported output format {other:?}"),
    }
    if args.quiet {
        for (r, _) in &rows {
            writeln!(out, "{}", r.id)?;
        }
        return Ok(());
    }
    let now = unix_now_f64();
    let mut table = vec![[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
        "NAMESPACE",
    ]
    .map(String::from)
    .to_vec()];
    for (r, state) in &rows {
        let mut id = r.id.clone();
        let mut pod_id = label(r, LABEL_SANDBOX).unwrap_or_default().to_string();
        let mut image = image_id(r);
        if !args.no_trunc {
            id = truncate_id(&id, "");
            pod_id = truncate_id(&pod_id, "");
            // Only a digest is shortened (crictl's `godigest.Parse` check).
            if let Some(hex) = image.strip_prefix("sha256:").filter(|h| is_hex64(h)) {
                image = truncate_id(hex, "");
            }
        }
        table.push(vec![
            id,
            image,
            created_ago(r.created, now),
            state.table_name().to_string(),
            label(r, LABEL_CONTAINER_NAME)
                .unwrap_or_default()
                .to_string(),
            attempt(r).to_string(),
            pod_id,
            label(r, LABEL_POD_NAME).unwrap_or("unknown").to_string(),
            label(r, LABEL_POD_NAMESPACE)
                .unwrap_or("unknown")
                .to_string(),
        ]);
    }
    out.write_all(tabwriter(&table).as_bytes())?;
    Ok(())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

// ---------------------------------------------------------------------------------------
// pods

#[derive(Serialize)]
struct PodMetadataJson {
    name: String,
    uid: String,
    namespace: String,
    attempt: u32,
}

/// A CRI `PodSandbox` in protojson's field order (`crictl pods -o json`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodJson {
    id: String,
    metadata: PodMetadataJson,
    state: &'static str,
    created_at: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    runtime_handler: String,
}

fn pod_state(s: &Sandbox) -> (&'static str, &'static str) {
    if s.stopped {
        ("SANDBOX_NOTREADY", "NotReady")
    } else {
        ("SANDBOX_READY", "Ready")
    }
}

/// The labels the kubelet gives a sandbox besides the pod's own (which kiln does not keep).
fn pod_labels(s: &Sandbox) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_POD_NAME.to_string(), s.name.clone()),
        (LABEL_POD_NAMESPACE.to_string(), s.namespace.clone()),
        (LABEL_POD_UID.to_string(), s.uid.clone()),
    ])
}

fn pods(root: &Path, args: &PodsArgs) -> Result<()> {
    let mut list = sandboxes(root)?;
    let name_re = pattern("--name", args.name.as_deref())?;
    let namespace_re = pattern("--namespace", args.namespace.as_deref())?;
    let selector = parse_labels(&args.label)?;
    let state = match args.state.as_deref().map(str::to_lowercase).as_deref() {
        None | Some("") => None,
        Some("ready") => Some(false),
        Some("notready") => Some(true),
        Some(_) => bail!("--state should be ready or notready"),
    };
    let id_filter = args.id.as_deref().filter(|s| !s.is_empty()).map(|id| {
        resolve_prefix(id, list.iter().map(|s| s.id.as_str()), "pod")
            .unwrap_or_else(|_| id.to_string())
    });
    list.retain(|s| {
        id_filter.as_ref().is_none_or(|id| &s.id == id)
            && state.is_none_or(|stopped| s.stopped == stopped)
            && labels_match(&selector, &pod_labels(s))
            && matches(&name_re, &s.name)
            && matches(&namespace_re, &s.namespace)
    });
    list.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    list.truncate(newest(list.len(), args.latest, args.last));
    let mut out = std::io::stdout().lock();
    match args.output.as_str() {
        "json" => {
            let items: Vec<PodJson> = list
                .iter()
                .map(|s| PodJson {
                    id: s.id.clone(),
                    metadata: PodMetadataJson {
                        name: s.name.clone(),
                        uid: s.uid.clone(),
                        namespace: s.namespace.clone(),
                        attempt: 0,
                    },
                    state: pod_state(s).0,
                    created_at: (i128::from(s.created) * 1_000_000_000).to_string(),
                    labels: pod_labels(s),
                    annotations: BTreeMap::new(),
                    runtime_handler: String::new(),
                })
                .collect();
            writeln!(out, "{}", proto_json(&BTreeMap::from([("items", &items)]))?)?;
            return Ok(());
        }
        "table" => {}
        other => bail!("unsupported output format {other:?}"),
    }
    if args.quiet {
        for s in &list {
            writeln!(out, "{}", s.id)?;
        }
        return Ok(());
    }
    let now = unix_now_f64();
    let mut table = vec![[
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ]
    .map(String::from)
    .to_vec()];
    for s in &list {
        let id = if args.no_trunc {
            s.id.clone()
        } else {
            truncate_id(&s.id, "")
        };
        table.push(vec![
            id,
            created_ago(s.created, now),
            pod_state(s).1.to_string(),
            s.name.clone(),
            s.namespace.clone(),
            // kiln never recreates a pod's sandbox, so its attempt stays 0.
            "0".to_string(),
            // The default runtime handler, as crictl names an empty one.
            "(default)".to_string(),
        ]);
    }
    out.write_all(tabwriter(&table).as_bytes())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// images

/// A CRI `Image` in protojson's field order (`crictl images -o json`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageJson {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    size: String,
    /// An `Int64Value`: protojson writes the wrapped int64, as a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    username: String,
    pinned: bool,
}

fn images(root: &Path, args: &ImagesArgs) -> Result<()> {
    let store = open_store(root)?;
    let mut list = Images::load(&store)?.list;
    if let Some(name) = args.image.as_deref().filter(|s| !s.is_empty()) {
        // containerd filters by what the name resolves to.
        let wanted = match store.find(name) {
            Ok(found) => Some(describe(&store, &found.target, &Platform::host()).id),
            Err(_) => None,
        };
        list.retain(|i| Some(&i.id) == wanted.as_ref());
    }
    let mut out = std::io::stdout().lock();
    match args.output.as_str() {
        "json" => {
            let images: Vec<ImageJson> = list
                .iter()
                .map(|i| ImageJson {
                    id: i.id.clone(),
                    repo_tags: i.repo_tags.clone(),
                    repo_digests: i.repo_digests.clone(),
                    size: i.size.to_string(),
                    uid: i.uid.map(|u| u.to_string()),
                    username: i.username.clone(),
                    pinned: false,
                })
                .collect();
            writeln!(
                out,
                "{}",
                proto_json(&BTreeMap::from([("images", &images)]))?
            )?;
            return Ok(());
        }
        "table" => {}
        other => bail!("unsupported output format {other:?}"),
    }
    if args.quiet {
        for i in &list {
            writeln!(out, "{}", i.id)?;
        }
        return Ok(());
    }
    let mut header = vec!["IMAGE".to_string(), "TAG".to_string()];
    if args.digests {
        header.push("DIGEST".into());
    }
    header.extend(["IMAGE ID".to_string(), "SIZE".to_string()]);
    let mut table = vec![header];
    for image in &list {
        for row in image_rows(image, args.digests, args.no_trunc) {
            table.push(row);
        }
    }
    out.write_all(tabwriter(&table).as_bytes())?;
    Ok(())
}

/// crictl's rows for one image: one per tag, or one `<none>` row named after its first
/// repo digest (`normalizeRepoDigest`, `normalizeRepoTagPair`).
fn image_rows(image: &CriImage, digests: bool, no_trunc: bool) -> Vec<Vec<String>> {
    let (repo_name, mut repo_digest) = match image.repo_digests.first() {
        None => ("<none>".to_string(), "<none>".to_string()),
        Some(d) => match d.split('@').collect::<Vec<_>>()[..] {
            [name, digest] => (name.to_string(), digest.to_string()),
            _ => ("errorName".to_string(), "errorRepoDigest".to_string()),
        },
    };
    let mut id = image.id.clone();
    if !no_trunc {
        id = truncate_id(&id, "sha256:");
        repo_digest = truncate_id(&repo_digest, "sha256:");
    }
    let pairs: Vec<(String, String)> = if image.repo_tags.is_empty() {
        vec![(repo_name.clone(), "<none>".to_string())]
    } else {
        image
            .repo_tags
            .iter()
            .map(|t| match t.rfind(':') {
                Some(i) => {
                    let name = &t[..i];
                    let name = if name == "<none>" { &repo_name } else { name };
                    (name.to_string(), t[i + 1..].to_string())
                }
                None => ("errorRepoTag".to_string(), "errorRepoTag".to_string()),
            })
            .collect()
    };
    pairs
        .into_iter()
        .map(|(name, tag)| {
            let mut row = vec![name, tag];
            if digests {
                row.push(repo_digest.clone());
            }
            row.push(id.clone());
            row.push(human_size(image.size));
            row
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// inspect, inspectp

/// The bind mounts of a container's runtime spec, as CRI `Mount`s (protojson fields,
/// defaults included). The runtime's own mounts (proc, dev, sys) are not the kubelet's.
fn cri_mounts(spec: &Value) -> Vec<Value> {
    let Some(mounts) = spec["mounts"].as_array() else {
        return Vec::new();
    };
    mounts
        .iter()
        .filter(|m| m["type"] == "bind" && m["destination"] != "/sys")
        .map(|m| {
            let options: Vec<&str> = m["options"]
                .as_array()
                .map(|o| o.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let propagation = if options.iter().any(|o| *o == "rshared" || *o == "shared") {
                "PROPAGATION_BIDIRECTIONAL"
            } else if options.iter().any(|o| *o == "rslave" || *o == "slave") {
                "PROPAGATION_HOST_TO_CONTAINER"
            } else {
                "PROPAGATION_PRIVATE"
            };
            json!({
                "containerPath": m["destination"].as_str().unwrap_or_default(),
                "hostPath": m["source"].as_str().unwrap_or_default(),
                "readonly": options.contains(&"ro"),
                "selinuxRelabel": false,
                "propagation": propagation,
                "uidMappings": [],
                "gidMappings": [],
                "recursiveReadOnly": false,
            })
        })
        .collect()
}

/// A CRI `ContainerUser` from the spec's process user (int64s as protojson strings).
fn cri_user(spec: &Value) -> Value {
    let user = &spec["process"]["user"];
    if !user.is_object() {
        return Value::Null;
    }
    let id = |v: &Value| v.as_i64().unwrap_or(0).to_string();
    let groups: Vec<String> = user["additionalGids"]
        .as_array()
        .map(|g| g.iter().map(id).collect())
        .unwrap_or_default();
    json!({"linux": {"uid": id(&user["uid"]), "gid": id(&user["gid"]), "supplementalGroups": groups}})
}

/// crictl's `marshalContainerStatus`: the CRI ContainerStatus, every field present (the
/// ones a runtime leaves unset as null), times as RFC 3339 in local time.
fn container_status(
    runtime: &Runtime,
    images: &Images,
    record: &Record,
    state: CState,
    spec: &Value,
) -> Value {
    let (labels, annotations) = split_labels(record);
    let image = images.for_container(record);
    let (finished_at, exit_code, reason) = match state {
        CState::Exited { code, finished } => (
            rfc3339_nano_local(finished),
            code,
            // containerd's reasons for an exit it has no other reason for.
            if code == 0 { "Completed" } else { "Error" },
        ),
        _ => (GO_ZERO_TIME.to_string(), 0, ""),
    };
    json!({
        "id": record.id,
        "metadata": {
            "name": label(record, LABEL_CONTAINER_NAME).unwrap_or_default(),
            "attempt": attempt(record),
        },
        "state": state.enum_name(),
        "createdAt": rfc3339_nano_local(record.created),
        // kiln starts a container when it creates it.
        "startedAt": rfc3339_nano_local(record.created),
        "finishedAt": finished_at,
        "exitCode": exit_code,
        // As containerd: the image's first tag, and its repo digest.
        "image": {
            "image": image
                .and_then(|i| i.repo_tags.first().cloned())
                .unwrap_or_else(|| record.image.clone()),
            "annotations": {},
            "userSpecifiedImage": "",
            "runtimeHandler": "",
        },
        "imageRef": label(record, LABEL_IMAGE_ID)
            .map(str::to_string)
            .or_else(|| image.map(|i| i.id.clone()))
            .unwrap_or_default(),
        "reason": reason,
        "message": "",
        "labels": labels,
        "annotations": annotations,
        "mounts": cri_mounts(spec),
        "logPath": runtime.log_path(&record.id),
        "resources": null,
        "imageId": image.map(|i| i.id.clone()).unwrap_or_default(),
        "user": cri_user(spec),
    })
}

fn inspect(root: &Path, args: &InspectArgs) -> Result<()> {
    check_inspect_output(&args.output)?;
    let runtime = runtime_at(root, &args.runtime.binary);
    let images = Images::load(&open_store(root)?)?;
    let mut statuses = Vec::new();
    for input in &args.ids {
        let record =
            find_container(&runtime, input).with_context(|| format!("crictl inspect {input}"))?;
        let state = CState::of(runtime.status(&record.id));
        let bundle = runtime.bundle_dir(&record.id);
        let spec_path = bundle.join("config.json");
        let spec: Value = std::fs::read(&spec_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let status = container_status(&runtime, &images, &record, state, &spec);
        // What `crictl inspect` shows under "info" for containerd, in kiln's terms.
        let info = (!args.quiet).then(|| {
            json!({
                "sandboxID": label(&record, LABEL_SANDBOX).unwrap_or_default(),
                "bundle": bundle,
                "command": record.command,
                "runtimeSpec": spec,
            })
        });
        statuses.push((status, info));
    }
    println!("{}", status_output(statuses)?);
    Ok(())
}

/// crictl's `marshalPodSandboxStatus` for a kiln sandbox.
fn pod_status(s: &Sandbox) -> Value {
    json!({
        "id": s.id,
        "metadata": {"name": s.name, "uid": s.uid, "namespace": s.namespace, "attempt": 0},
        "state": pod_state(s).0,
        "createdAt": rfc3339_nano_local(s.created),
        // containerd reports no address for a pod on the host's network.
        "network": {
            "ip": if s.host_network { String::new() } else { s.ip().unwrap_or_default() },
            "additionalIps": [],
        },
        // kiln gives each container its own PID and IPC namespaces; only the network one
        // is the pod's (or the node's).
        "linux": {"namespaces": {"options": {
            "network": if s.host_network { "NODE" } else { "POD" },
            "pid": "CONTAINER",
            "ipc": "CONTAINER",
            "targetId": "",
        }}},
        "labels": pod_labels(s),
        "annotations": {},
        "runtimeHandler": "",
    })
}

fn inspectp(root: &Path, args: &InspectArgs) -> Result<()> {
    check_inspect_output(&args.output)?;
    let mut statuses = Vec::new();
    for input in &args.ids {
        let sandbox =
            find_sandbox(root, input).with_context(|| format!("crictl inspectp {input}"))?;
        let info = (!args.quiet).then(|| {
            json!({
                "hostNetwork": sandbox.host_network,
                "netNamespace": sandbox.network.as_ref().map(|n| n.netns.clone()),
                "podDir": pods_dir(root).join(&sandbox.uid),
                "stopped": sandbox.stopped,
            })
        });
        statuses.push((pod_status(&sandbox), info));
    }
    println!("{}", status_output(statuses)?);
    Ok(())
}

fn check_inspect_output(output: &str) -> Result<()> {
    if output != "json" {
        bail!("unsupported output format {output:?}: kiln crictl shows json only");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// logs

fn logs(root: &Path, args: &LogsArgs) -> Result<()> {
    let runtime = runtime_at(root, &args.runtime.binary);
    let record =
        find_container(&runtime, &args.id).with_context(|| format!("crictl logs {}", args.id))?;
    let path = runtime.log_path(&record.id);
    let mut file = std::fs::File::open(&path)
        .with_context(|| format!("failed to open log file {:?}", path.display().to_string()))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut pending = data.split_off(tail_start(&data, args.tail));
    let mut reader = LogReader::new(args.timestamps, args.limit_bytes);
    // Without --follow, --tail also stops after that many lines.
    let mut left = (args.tail >= 0 && !args.follow).then_some(args.tail);
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let mut sink = |stream: Stream, bytes: &[u8]| -> std::io::Result<()> {
        match stream {
            Stream::Stdout => {
                stdout.write_all(bytes)?;
                stdout.flush()
            }
            Stream::Stderr => {
                stderr.write_all(bytes)?;
                stderr.flush()
            }
        }
    };
    let mut running = true;
    loop {
        // Complete lines; an incomplete last one only once nothing more can come.
        loop {
            if left == Some(0) {
                return Ok(());
            }
            let line_end = pending.iter().position(|&b| b == b'\n').map(|i| i + 1);
            let end = match line_end {
                Some(e) => e,
                None if !args.follow && !pending.is_empty() => pending.len(),
                None => break,
            };
            let line: Vec<u8> = pending.drain(..end).collect();
            match reader.line(&line)? {
                Some((stream, bytes)) => {
                    let more = reader.take_budget(bytes.len());
                    sink(stream, &bytes[..more])?;
                    if reader.exhausted() {
                        return Ok(());
                    }
                }
                None => continue,
            }
            if let Some(n) = left.as_mut() {
                *n -= 1;
            }
        }
        if !args.follow {
            return Ok(());
        }
        // Following: read what was appended; stop once the container is not running and
        // everything it wrote has been read, as crictl does.
        let mut more = Vec::new();
        file.read_to_end(&mut more)
            .with_context(|| format!("reading {}", path.display()))?;
        if !more.is_empty() {
            pending.extend_from_slice(&more);
            continue;
        }
        if !running {
            return Ok(());
        }
        running = runtime.status(&record.id) == Status::Running;
        if running {
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Cri,
    DockerJson,
}

/// One parsed log line: its timestamp, stream and content (with its newline, if full).
#[derive(Debug, PartialEq, Eq)]
struct LogMessage {
    timestamp: String,
    stream: Stream,
    content: Vec<u8>,
}

/// The kubelet's log reader (`k8s.io/cri-client/pkg/logs`) as crictl drives it.
struct LogReader {
    format: Option<LogFormat>,
    timestamps: bool,
    /// The previous message ended a line: the next one gets a timestamp prefix.
    at_line_start: bool,
    /// Bytes still allowed by --limit-bytes; None for no limit.
    budget: Option<u64>,
}

impl LogReader {
    fn new(timestamps: bool, limit_bytes: i64) -> LogReader {
        LogReader {
            format: None,
            timestamps,
            at_line_start: true,
            budget: u64::try_from(limit_bytes).ok(),
        }
    }

    /// What one line writes, and where; None for a line that does not parse (skipped).
    /// The first line decides the format, as the kubelet's reader does.
    fn line(&mut self, line: &[u8]) -> Result<Option<(Stream, Vec<u8>)>> {
        let format = match self.format {
            Some(f) => f,
            None => {
                let f = if parse_cri_log(line).is_some() {
                    LogFormat::Cri
                } else if parse_docker_json_log(line).is_some() {
                    LogFormat::DockerJson
                } else {
                    bail!(
                        "failed to get parse function: unsupported log format: {:?}",
                        String::from_utf8_lossy(line)
                    );
                };
                self.format = Some(f);
                f
            }
        };
        let parsed = match format {
            LogFormat::Cri => parse_cri_log(line),
            LogFormat::DockerJson => parse_docker_json_log(line),
        };
        let Some(msg) = parsed else {
            return Ok(None);
        };
        let mut out = Vec::new();
        if self.timestamps && self.at_line_start {
            out.extend_from_slice(msg.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&msg.content);
        self.at_line_start = msg.content.last().is_none_or(|&b| b == b'\n');
        Ok(Some((msg.stream, out)))
    }

    /// How many of `len` bytes may be written, counting them against --limit-bytes.
    fn take_budget(&mut self, len: usize) -> usize {
        match self.budget.as_mut() {
            None => len,
            Some(b) => {
                let n = (len as u64).min(*b);
                *b -= n;
                n as usize
            }
        }
    }

    fn exhausted(&self) -> bool {
        self.budget == Some(0)
    }
}

/// `2016-10-06T00:17:09.669794202Z stdout P content`: a partial line (P) loses its
/// newline, a full one (F) keeps it. The timestamp comes back in the fixed-width form.
fn parse_cri_log(line: &[u8]) -> Option<LogMessage> {
    let mut rest = line;
    let mut field = || -> Option<&[u8]> {
        let i = rest.iter().position(|&b| b == b' ')?;
        let f = &rest[..i];
        rest = &rest[i + 1..];
        Some(f)
    };
    let timestamp = fixed_log_timestamp(std::str::from_utf8(field()?).ok()?)?;
    let stream = match field()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tags = field()?;
    let partial = tags.split(|&b| b == b':').next() == Some(b"P");
    let mut content = rest.to_vec();
    if partial && content.last() == Some(&b'\n') {
        content.pop();
    }
    Some(LogMessage {
        timestamp,
        stream,
        content,
    })
}

/// docker's json-file lines: `{"log":"content\n","stream":"stdout","time":"..."}`.
fn parse_docker_json_log(line: &[u8]) -> Option<LogMessage> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let stream = match v["stream"].as_str()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    Some(LogMessage {
        timestamp: fixed_log_timestamp(v["time"].as_str()?)?,
        stream,
        content: v["log"].as_str().unwrap_or_default().as_bytes().to_vec(),
    })
}

/// Where the last `n` lines of a log start (the kubelet's `findTailLineStartIndex`): all
/// of it for a negative `n`; an incomplete last line does not count as one.
fn tail_start(data: &[u8], n: i64) -> usize {
    let Ok(n) = usize::try_from(n) else {
        return 0;
    };
    let newlines: Vec<usize> = data
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i)
        .collect();
    if newlines.len() <= n {
        return 0;
    }
    newlines[newlines.len() - n - 1] + 1
}

// ---------------------------------------------------------------------------------------
// pull, rmi

/// One credential for whichever registry is asked about (`--creds`).
fn pull(root: &Path, args: &PullArgs) -> Result<()> {
    if args.image.is_empty() {
        bail!("image name cannot be empty");
    }
    // As the kubelet asks the runtime: the name normalized, `latest` by default, the host's
    // platform, and the same store key the node agent pulls into.
    let reference = Reference::parse_normalized(&args.image)
        .with_context(|| format!("crictl pull {}: not an image reference", args.image))?;
    let credentials: Arc<dyn CredentialProvider> = match args.creds.as_deref() {
        Some(c) => {
            let (user, password) = c.split_once(':').unwrap_or((c, ""));
            if user.is_empty() {
                bail!("--creds: username can't be empty");
            }
            Arc::new(kiln_client::credentials::Fixed(Some(Credentials::new(
                user, password,
            ))))
        }
        None => {
            let path = DockerConfig::default_path();
            Arc::new(
                DockerConfig::load(&path)
                    .with_context(|| format!("reading credentials from {}", path.display()))?,
            )
        }
    };
    let mut insecure = args.insecure_registries.clone();
    if let Ok(list) = std::env::var("KILN_INSECURE_REGISTRIES") {
        insecure.extend(
            list.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(String::from),
        );
    }
    let transport = TransportOptions {
        insecure,
        ..TransportOptions::default()
    };
    let client = Client::new(transport, credentials).context("setting up the registry client")?;
    let store = open_store(root)?;
    let platform = Platform::host();
    let options = PullOptions {
        platform: Some(platform.clone()),
        all_platforms: false,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let lease = store.lease()?;
    let pulled = tokio
        .block_on(client.pull(store.blobs(), &reference, &options, &Silent))
        .with_context(|| format!("pulling image {reference}"))?;
    let key = reference.store_key();
    store
        .tag(&pulled.target, &key)
        .with_context(|| format!("naming the pulled image {key}"))?;
    drop(lease);
    let image = store
        .image(&pulled.target, &platform)
        .with_context(|| format!("reading the pulled image {key}"))?;
    // The CRI's image reference is the image ID; crictl says "up to date" whatever happened.
    println!("Image is up to date for {}", image.config_digest);
    Ok(())
}

fn rmi(root: &Path, args: &RmiArgs) -> Result<()> {
    let store = open_store(root)?;
    let host = Platform::host();
    let mut failed = Vec::new();
    for input in &args.images {
        match remove_image(&store, &host, input) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
            }
            Err(e) => {
                eprintln!("ERRO: {e:#}");
                failed.push(input.as_str());
            }
        }
    }
    // Blobs no name reaches any more go now, unless a writer is busy (then `image prune`).
    store.try_prune().context("removing unreferenced blobs")?;
    if !failed.is_empty() {
        bail!("could not remove {}", failed.join(", "));
    }
    Ok(())
}

/// containerd's RemoveImage: every name of the image goes, whichever one was given.
fn remove_image(store: &ImageStore, host: &Platform, input: &str) -> Result<Vec<String>> {
    let found = store
        .find(input)
        .map_err(|_| anyhow::anyhow!("no such image {input}"))?;
    let id = describe(store, &found.target, host).id;
    let images = Images::load(store)?;
    let image = images
        .list
        .iter()
        .find(|i| i.id == id)
        .with_context(|| format!("no such image {input}"))?;
    let refs = store.refs().list()?;
    for entry in &refs {
        if images
            .by_target
            .get(&entry.target.digest.to_string())
            .map(|&i| &images.list[i].id)
            == Some(&id)
        {
            store
                .refs()
                .remove(&entry.name)
                .with_context(|| format!("error of removing image {input:?}: {}", entry.name))?;
        }
    }
    let shown = if image.repo_tags.is_empty() {
        &image.repo_digests
    } else {
        &image.repo_tags
    };
    Ok(shown.iter().map(|n| format!("Deleted: {n}")).collect())
}

// ---------------------------------------------------------------------------------------
// Formatting, as crictl and the Go libraries it uses do it.

/// crictl's `getTruncatedID`: the prefix dropped, then 13 characters.
fn truncate_id(id: &str, prefix: &str) -> String {
    let id = id.strip_prefix(prefix).unwrap_or(id);
    id.chars().take(13).collect()
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The CREATED column: `units.HumanDuration(now - created) + " ago"`.
fn created_ago(created_unix: i64, now: f64) -> String {
    format!("{} ago", human_duration(now - created_unix as f64))
}

/// go-units' `HumanDuration` (v0.5.0). Hours round to the nearest (an hour and a half is
/// "2 hours"); seconds, minutes and years truncate.
fn human_duration(seconds: f64) -> String {
    let s = seconds.trunc() as i64;
    let minutes = (seconds / 60.0).trunc() as i64;
    let hours = (seconds / 3600.0 + 0.5).trunc() as i64;
    if s < 1 {
        "Less than a second".into()
    } else if s == 1 {
        "1 second".into()
    } else if s < 60 {
        format!("{s} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", (seconds / 3600.0).trunc() as i64 / 24 / 365)
    }
}

/// go-units' `HumanSizeWithPrecision(size, 3)`: decimal units, Go's `%.3g`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{}{}", go_g(value, 3), UNITS[unit])
}

/// Go's `%.<precision>g` for a non-negative value: `precision` significant digits,
/// trailing zeros dropped, exponent form when the exponent is below -4 or at least the
/// precision (so 999.5 is "1e+03").
fn go_g(value: f64, precision: usize) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let p = precision.max(1);
    // Rust's exponent form rounds to `p` significant digits exactly once.
    let e_form = format!("{:.*e}", p - 1, value);
    let Some((mantissa, exp)) = e_form.split_once('e') else {
        return e_form;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    if exp < -4 || exp >= p as i32 {
        let mut out = digits[..1].to_string();
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{out}e{sign}{:02}", exp.abs());
    }
    let point = exp + 1;
    if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    }
}

/// Go's text/tabwriter as crictl sets it up (`newTableDisplay(20, 1, 3, ' ', 0)`): every
/// cell but a row's last is padded to its column's width, which is the widest cell plus 3,
/// and at least 20. The last cell is written as is.
fn tabwriter(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter(|r| c + 1 < r.len())
                .map(|r| r[c].chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(20)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < row.len() {
                out.push_str(&" ".repeat(widths[c] - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

/// Go's zero `time.Time` formatted, as crictl shows times a container does not have.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `time.Unix(unix, 0).Format(time.RFC3339Nano)` in this machine's time zone.
fn rfc3339_nano_local(unix: i64) -> String {
    rfc3339_nano(unix, 0, local_offset(unix))
}

/// Go's RFC3339Nano: fraction without trailing zeros (none for whole seconds), `Z` for
/// UTC, else `+hh:mm`.
fn rfc3339_nano(unix: i64, nanos: u32, offset_seconds: i32) -> String {
    let offset =
        time::UtcOffset::from_whole_seconds(offset_seconds).unwrap_or(time::UtcOffset::UTC);
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(unix) else {
        return GO_ZERO_TIME.to_string();
    };
    let t = t.to_offset(offset);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push_str(&go_offset(offset));
    out
}

fn go_offset(offset: time::UtcOffset) -> String {
    if offset.is_utc() {
        return "Z".into();
    }
    let total = offset.whole_seconds();
    let sign = if total < 0 { '-' } else { '+' };
    let minutes = total.abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The local time zone's offset from UTC at `unix`, in seconds ($TZ, /etc/localtime).
fn local_offset(unix: i64) -> i32 {
    let t = unix as libc::time_t;
    // SAFETY: tm is plain data; localtime_r only writes the one we pass.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to locals that outlive the call.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff as i32
    } else {
        0
    }
}

/// A log line's RFC 3339 timestamp in the kubelet's fixed-width output form
/// (`2006-01-02T15:04:05.000000000Z07:00`), keeping its offset; None if it does not parse.
fn fixed_log_timestamp(ts: &str) -> Option<String> {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}{}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond(),
        go_offset(t.offset())
    ))
}

/// Objects with their keys in sorted order at every level, whatever serde_json's map keeps.
fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// Go's encoding/json escapes these in strings (`<`, `>`, `&` and the JS line separators);
/// they can only occur inside strings, so replacing them in the text is safe.
fn go_json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn pretty(v: &impl Serialize) -> Result<String> {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"  ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    v.serialize(&mut ser).context("formatting JSON")?;
    String::from_utf8(buf).context("formatting JSON")
}

/// protojson with a two-space indent, as `crictl ps/pods/images -o json` print lists:
/// fields in the message's order, which is the structs' order here, so `v` must not go
/// through `serde_json::Value` (its maps sort keys). protojson's randomly doubled spaces
/// after colons (meant to keep programs from comparing its text) are not copied.
fn proto_json(v: &impl Serialize) -> Result<String> {
    pretty(v)
}

/// crictl's `outputStatusData` for `-o json`: each entry an object of "status" and the
/// verbose "info"; one entry alone, several in an array; Go's json.Marshal then Indent
/// (keys sorted at every level, HTML characters escaped, two-space indent).
fn status_output(entries: Vec<(Value, Option<Value>)>) -> Result<String> {
    let mut objects: Vec<Value> = entries
        .into_iter()
        .map(|(status, info)| {
            let mut o = serde_json::Map::new();
            o.insert("status".into(), status);
            if let Some(info) = info {
                o.insert("info".into(), info);
            }
            sort_keys(Value::Object(o))
        })
        .collect();
    let v = if objects.len() == 1 {
        objects.remove(0)
    } else {
        Value::Array(objects)
    };
    Ok(go_json_escape(&pretty(&v)?))
}

// ---------------------------------------------------------------------------------------

/// Just enough of Go's RE2 syntax for crictl's `--name` and `--namespace` filters, matched
/// anywhere in the value as `regexp.MatchString` does: literals, `.`, classes (`[a-z]`,
/// `[^...]`, `\d \w \s` and their negations), anchors `^ $`, groups `( )` and `(?: )`,
/// `(?i)`, alternation and the quantifiers `* + ? {m} {m,} {m,n}`. A Pike VM runs it, so
/// no pattern takes exponential time.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go_units() {
        assert_eq!(human_duration(0.4), "Less than a second");
        assert_eq!(human_duration(1.9), "1 second");
        assert_eq!(human_duration(59.9), "59 seconds");
        assert_eq!(human_duration(60.0), "About a minute");
        assert_eq!(human_duration(119.0), "About a minute");
        assert_eq!(human_duration(600.5), "10 minutes");
        assert_eq!(human_duration(3599.0), "59 minutes");
        assert_eq!(human_duration(3600.0), "About an hour");
        // Hours round: 89 minutes is about an hour, 90 minutes two hours.
        assert_eq!(human_duration(89.0 * 60.0), "About an hour");
        assert_eq!(human_duration(90.0 * 60.0), "2 hours");
        assert_eq!(human_duration(47.0 * 3600.0), "47 hours");
        assert_eq!(human_duration(48.0 * 3600.0), "2 days");
        assert_eq!(human_duration(14.0 * 86400.0), "2 weeks");
        assert_eq!(human_duration(60.0 * 86400.0), "2 months");
        assert_eq!(human_duration(3.0 * 365.0 * 86400.0), "3 years");
        assert_eq!(created_ago(1000, 1000.0 + 7200.0), "2 hours ago");
        // A clock behind the record's time still reads sensibly.
        assert_eq!(created_ago(1000, 990.0), "Less than a second ago");
    }

    #[test]
    fn sizes_like_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1_060_000), "1.06MB");
        assert_eq!(human_size(1_065_432), "1.07MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
        // Go's %.3g switches to an exponent when rounding reaches 1000.
        assert_eq!(human_size(999_600), "1e+03kB");
        assert_eq!(go_g(0.000012345, 3), "1.23e-05");
        assert_eq!(go_g(0.00012345, 3), "0.000123");
        assert_eq!(go_g(100.0, 3), "100");
    }

    #[test]
    fn ids_truncate_to_13() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(truncate_id(id, ""), "0123456789abc");
        assert_eq!(
            truncate_id(&format!("sha256:{id}"), "sha256:"),
            "0123456789abc"
        );
        assert_eq!(truncate_id("short", ""), "short");
    }

    #[test]
    fn tables_like_go_tabwriter() {
        let rows = vec![
            vec![
                "POD ID".to_string(),
                "NAME".to_string(),
                "NAMESPACE".to_string(),
            ],
            vec![
                "0123456789abc".to_string(),
                "a-rather-long-pod-name-here".to_string(),
                "default".to_string(),
            ],
        ];
        assert_eq!(
            tabwriter(&rows),
            "POD ID              NAME                          NAMESPACE\n\
             0123456789abc       a-rather-long-pod-name-here   default\n"
        );
        // Empty cells are padded too; the last cell never is.
        let rows = vec![vec![String::new(), "x ".to_string()]];
        assert_eq!(tabwriter(&rows), format!("{}x \n", " ".repeat(20)));
    }

    #[test]
    fn times_like_go_rfc3339nano() {
        assert_eq!(rfc3339_nano(0, 0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(1_700_000_000, 0, 3600),
            "2023-11-14T23:13:20+01:00"
        );
        assert_eq!(
            rfc3339_nano(1_700_000_000, 120_000_000, -5 * 3600 - 1800),
            "2023-11-14T16:43:20.12-05:30"
        );
        assert_eq!(
            fixed_log_timestamp("2016-10-06T00:17:09.669794202Z").as_deref(),
            Some("2016-10-06T00:17:09.669794202Z")
        );
        assert_eq!(
            fixed_log_timestamp("2016-10-06T00:17:09.5+02:00").as_deref(),
            Some("2016-10-06T00:17:09.500000000+02:00")
        );
        assert_eq!(fixed_log_timestamp("yesterday"), None);
    }

    #[test]
    fn tail_counts_complete_lines() {
        let data = b"a\nb\nc\n";
        assert_eq!(tail_start(data, -1), 0);
        assert_eq!(tail_start(data, 0), 6);
        assert_eq!(tail_start(data, 1), 4);
        assert_eq!(tail_start(data, 3), 0);
        assert_eq!(tail_start(data, 10), 0);
        // An incomplete last line rides along with the last complete ones.
        assert_eq!(tail_start(b"a\nb\nc", 1), 2);
    }

    #[test]
    fn cri_log_lines_render_as_crictl() {
        let mut r = LogReader::new(false, -1);
        let full = r
            .line(b"2024-01-02T03:04:05.000000001Z stdout F hello\n")
            .expect("parses");
        assert_eq!(full, Some((Stream::Stdout, b"hello\n".to_vec())));
        let mut r = LogReader::new(true, -1);
        let partial = r
            .line(b"2024-01-02T03:04:05.5Z stderr P par\n")
            .expect("parses");
        assert_eq!(
            partial,
            Some((
                Stream::Stderr,
                b"2024-01-02T03:04:05.500000000Z par".to_vec()
            ))
        );
        // The rest of a partial line gets no second timestamp.
        let rest = r
            .line(b"2024-01-02T03:04:06Z stderr F tial\n")
            .expect("parses");
        assert_eq!(rest, Some((Stream::Stderr, b"tial\n".to_vec())));
        // A bad line after the first is skipped; a bad first line is an error.
        assert_eq!(r.line(b"garbage\n").expect("skipped"), None);
        assert!(LogReader::new(false, -1).line(b"garbage\n").is_err());
        let mut r = LogReader::new(false, -1);
        let docker = r
            .line(br#"{"log":"hi\n","stream":"stdout","time":"2024-01-02T03:04:05Z"}"#)
            .expect("parses");
        assert_eq!(docker, Some((Stream::Stdout, b"hi\n".to_vec())));
        let mut r = LogReader::new(false, 3);
        assert_eq!(r.take_budget(5), 3);
        assert!(r.exhausted());
    }

    #[test]
    fn status_json_like_go() {
        let one = status_output(vec![(json!({"b": 1, "a": "<&>"}), Some(json!({"z": []})))])
            .expect("json");
        assert_eq!(
            one,
            "{\n  \"info\": {\n    \"z\": []\n  },\n  \"status\": {\n    \"a\": \"\\u003c\\u0026\\u003e\",\n    \"b\": 1\n  }\n}"
        );
        let two = status_output(vec![(json!({}), None), (json!({}), None)]).expect("json");
        assert_eq!(
            two,
            "[\n  {\n    \"status\": {}\n  },\n  {\n    \"status\": {}\n  }\n]"
        );
    }

    #[test]
    fn image_rows_as_crictl() {
        let image = CriImage {
            id: format!("sha256:{}", "ab".repeat(32)),
            repo_tags: vec!["docker.io/library/busybox:1.36".into()],
            repo_digests: vec![format!(
                "docker.io/library/busybox@sha256:{}",
                "cd".repeat(32)
            )],
            size: 2_160_000,
            ..CriImage::default()
        };
        assert_eq!(
            image_rows(&image, true, false),
            vec![vec![
                "docker.io/library/busybox".to_string(),
                "1.36".into(),
                "cdcdcdcdcdcdc".into(),
                "ababababababa".into(),
                "2.16MB".into()
            ]]
        );
        let untagged = CriImage {
            repo_tags: Vec::new(),
            ..image
        };
        assert_eq!(
            image_rows(&untagged, false, false)[0][..2],
            ["docker.io/library/busybox".to_string(), "<none>".into()]
        );
    }

    #[test]
    fn image_users() {
        assert_eq!(image_user(""), (None, String::new()));
        assert_eq!(image_user("1000:1000"), (Some(1000), String::new()));
        assert_eq!(image_user("nobody"), (None, "nobody".to_string()));
    }

    #[test]
    fn prefixes_resolve_uniquely() {
        let ids = ["abc123", "abd456"];
        assert_eq!(
            resolve_prefix("abc", ids.iter().copied(), "pod").expect("one"),
            "abc123"
        );
        let err = resolve_prefix("ab", ids.iter().copied(), "pod").expect_err("two");
        assert!(err.to_string().contains("ambiguous"), "{err}");
        let err = resolve_prefix("zz", ids.iter().copied(), "pod").expect_err("none");
        assert_eq!(err.to_string(), "no pod matches zz");
    }

    #[test]
    fn labels_parse_as_crictl() {
        assert_eq!(
            parse_labels(&["a=b".to_string()]).expect("ok"),
            vec![("a".to_string(), "b".to_string())]
        );
        assert!(parse_labels(&["a=b=c".to_string()]).is_err());
        assert!(parse_labels(&["a".to_string()]).is_err());
    }

    #[test]
    fn mounts_from_the_runtime_spec() {
        let spec = json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "/var/data", "options": ["rbind", "rprivate", "ro"]},
        ], "process": {"user": {"uid": 1000, "gid": 1000, "additionalGids": [10]}}});
        let mounts = cri_mounts(&spec);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0]["containerPath"], "/data");
        assert_eq!(mounts[0]["readonly"], true);
        assert_eq!(mounts[0]["propagation"], "PROPAGATION_PRIVATE");
        assert_eq!(
            cri_user(&spec),
            json!({"linux": {"uid": "1000", "gid": "1000", "supplementalGroups": ["10"]}})
        );
        assert_eq!(cri_user(&Value::Null), Value::Null);
    }
}
