//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get`
//! requests with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! kubectl prints whatever cells the server sends, so the columns and the
//! text of each cell follow the Kubernetes printers (`pkg/printers/
//! internalversion`) closely: users compare this output with real clusters,
//! and scripts parse it. As in the real API server, every column is always
//! filled; kubectl hides the priority-1 columns unless `-o wide` is given.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::{datetime, format_description};
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::selector::LabelSelector;

/// What each row carries besides its cells (the `includeObject` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// Cells only.
    None,
    /// A `PartialObjectMetadata`, which kubectl uses for `--show-labels`,
    /// `-L` and `--sort-by` on metadata. This is the API server's default.
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

/// An `includeObject` value other than `None`, `Metadata` or `Object`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognized includeObject value: {0:?}")]
pub struct UnknownIncludeObject(pub String);

impl IncludeObject {
    /// Reads the query parameter; absent or empty means the default.
    pub fn parse(s: Option<&str>) -> Result<IncludeObject, UnknownIncludeObject> {
        match s {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(UnknownIncludeObject(other.to_string())),
        }
    }
}

/// Builds the `Table` for `objects`, all of kind `kind`, with ages measured
/// from `now` so that output is reproducible.
pub fn table(
    kind: &str,
    objects: &[Value],
    now: OffsetDateTime,
    include: IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
) -> Value {
    let printer = Printer::for_kind(kind);
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let printed = printer.print(object, now);
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(printed.cells));
            if let Some(conditions) = printed.conditions {
                row.insert("conditions".into(), conditions);
            }
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert("object".into(), partial_object_metadata(object));
                }
                IncludeObject::Object => {
                    row.insert("object".into(), object.clone());
                }
            }
            Value::Object(row)
        })
        .collect();

    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), resource_version.into());
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), token.into());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": printer.columns().iter().map(|c| c.to_json()).collect::<Vec<_>>(),
        "rows": rows,
    })
}

fn partial_object_metadata(object: &Value) -> Value {
    let metadata = match object.get("metadata") {
        Some(m @ Value::Object(_)) => m.clone(),
        _ => Value::Object(Map::new()),
    };
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
    })
}

/// Formats an elapsed time the way `duration.HumanDuration` does: about two
/// significant figures, switching units at fixed thresholds (seconds below 2
/// minutes, minutes with seconds below 10 minutes, and so on). Up to one
/// second in the future still reads "0s" to absorb clock skew; further in
/// the future is "<invalid>".
pub fn human_duration(d: Duration) -> String {
    // Go's durations are int64 nanoseconds and saturate; do the same so the
    // extremes print as a real cluster would.
    let nanos = i64::try_from(d.whole_nanoseconds()).unwrap_or(if d.is_negative() {
        i64::MIN
    } else {
        i64::MAX
    });
    const SECOND: i64 = 1_000_000_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;

    let seconds = nanos / SECOND;
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age column's text: `<unknown>` for a missing timestamp, as
/// `translateTimestampSince` prints for a zero time.
pub fn age(timestamp: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    match timestamp {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

/// Reads a `metav1.Time`/`MicroTime`. Go's zero time is how Kubernetes
/// spells "unset", so it reads as absent, and so does anything unparseable.
fn parse_time(value: Option<&Value>) -> Option<OffsetDateTime> {
    let t = OffsetDateTime::parse(value?.as_str()?, &Rfc3339).ok()?;
    (t != datetime!(0001-01-01 0:00 UTC)).then_some(t)
}

// ---------------------------------------------------------------------------
// JSON access helpers: objects come from storage and may be incomplete, so
// every accessor has a default rather than an error.

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(key))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

fn int(v: &Value, path: &[&str]) -> Option<i64> {
    let n = at(v, path)?;
    n.as_i64()
        .or_else(|| n.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
}

fn list<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn time_at(v: &Value, path: &[&str]) -> Option<OffsetDateTime> {
    parse_time(at(v, path))
}

fn name(v: &Value) -> Value {
    text(v, &["metadata", "name"]).into()
}

fn creation_age(v: &Value, now: OffsetDateTime) -> Value {
    age(time_at(v, &["metadata", "creationTimestamp"]), now).into()
}

fn or_placeholder(s: &str, placeholder: &str) -> String {
    if s.is_empty() {
        placeholder.to_string()
    } else {
        s.to_string()
    }
}

/// Container names and images of a pod template joined by commas
/// (`layoutContainerCells`).
fn container_cells(template_spec_containers: &[Value]) -> (Value, Value) {
    let names: Vec<&str> = template_spec_containers
        .iter()
        .map(|c| text(c, &["name"]))
        .collect();
    let images: Vec<&str> = template_spec_containers
        .iter()
        .map(|c| text(c, &["image"]))
        .collect();
    (names.join(",").into(), images.join(",").into())
}

// ---------------------------------------------------------------------------
// Column definitions.

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATED_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

#[derive(Debug, Clone, Copy)]
struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

impl Column {
    const fn new(name: &'static str, kind: &'static str, description: &'static str) -> Self {
        Column {
            name,
            kind,
            format: "",
            description,
            priority: 0,
        }
    }

    const fn wide(self) -> Self {
        Column {
            priority: 1,
            ..self
        }
    }

    const fn formatted(self, format: &'static str) -> Self {
        Column { format, ..self }
    }

    fn to_json(self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

const NAME: Column = Column::new("Name", "string", NAME_DOC).formatted("name");
const AGE: Column = Column::new("Age", "string", CREATED_DOC);

const POD_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    Column::new("Status", "string", "The aggregate status of the containers in this pod."),
    Column::new("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    Column::new("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.").wide(),
    Column::new("Node", "string", "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename").wide(),
    Column::new("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.").wide(),
    Column::new("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates").wide(),
];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Ready", "string", "Number of the pod with ready state"),
    Column::new("Up-to-date", "string", "Total number of non-terminating pods targeted by this deployment that have the desired template spec."),
    Column::new("Available", "string", "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    Column::new("Containers", "string", CONTAINERS_DOC).wide(),
    Column::new("Images", "string", IMAGES_DOC).wide(),
    Column::new("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.").wide(),
];

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Desired", "integer", "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
    Column::new("Current", "integer", "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
    Column::new("Ready", "integer", "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
    AGE,
    Column::new("Containers", "string", CONTAINERS_DOC).wide(),
    Column::new("Images", "string", IMAGES_DOC).wide(),
    Column::new("Selector", "string", "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors").wide(),
];

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Status", "string", "The status of the namespace"),
    AGE,
];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Type", "string", "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types"),
    Column::new("Data", "string", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4"),
    AGE,
];

const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret"),
    AGE,
];

const EVENT_COLUMNS: &[Column] = &[
    Column::new("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    Column::new("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    Column::new("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    Column::new("Object", "string", "The object that this event is about."),
    Column::new("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.").wide(),
    Column::new("Source", "string", "The component reporting this event. Should be a short machine understandable string.").wide(),
    Column::new("Message", "string", "A human-readable description of the status of this operation."),
    Column::new("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)").wide(),
    Column::new("Count", "string", "The number of times this event has occurred.").wide(),
    NAME.wide(),
];

const NODE_ADDRESSES_DOC: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";

const NODE_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Status", "string", "The status of the node"),
    Column::new("Roles", "string", "The roles of the node"),
    AGE,
    Column::new("Version", "string", "Kubelet Version reported by the node."),
    Column::new("Internal-IP", "string", NODE_ADDRESSES_DOC).wide(),
    Column::new("External-IP", "string", NODE_ADDRESSES_DOC).wide(),
    Column::new("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).").wide(),
    Column::new("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).").wide(),
    Column::new("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).").wide(),
];

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Holder", "string", "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field."),
    AGE,
];

/// The API server's fallback for kinds without a printer.
const DEFAULT_COLUMNS: &[Column] = &[NAME, Column::new("Created At", "date", CREATED_DOC)];

// ---------------------------------------------------------------------------
// Printers.

struct Printed {
    cells: Vec<Value>,
    conditions: Option<Value>,
}

impl From<Vec<Value>> for Printed {
    fn from(cells: Vec<Value>) -> Self {
        Printed {
            cells,
            conditions: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    Deployment,
    ReplicaSet,
    Namespace,
    Secret,
    ServiceAccount,
    Event,
    Node,
    Lease,
    Default,
}

impl Printer {
    fn for_kind(kind: &str) -> Self {
        match kind {
            "Pod" => Printer::Pod,
            "Deployment" => Printer::Deployment,
            "ReplicaSet" => Printer::ReplicaSet,
            "Namespace" => Printer::Namespace,
            "Secret" => Printer::Secret,
            "ServiceAccount" => Printer::ServiceAccount,
            "Event" => Printer::Event,
            "Node" => Printer::Node,
            "Lease" => Printer::Lease,
            _ => Printer::Default,
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Pod => POD_COLUMNS,
            Printer::Deployment => DEPLOYMENT_COLUMNS,
            Printer::ReplicaSet => REPLICA_SET_COLUMNS,
            Printer::Namespace => NAMESPACE_COLUMNS,
            Printer::Secret => SECRET_COLUMNS,
            Printer::ServiceAccount => SERVICE_ACCOUNT_COLUMNS,
            Printer::Event => EVENT_COLUMNS,
            Printer::Node => NODE_COLUMNS,
            Printer::Lease => LEASE_COLUMNS,
            Printer::Default => DEFAULT_COLUMNS,
        }
    }

    fn print(self, object: &Value, now: OffsetDateTime) -> Printed {
        match self {
            Printer::Pod => print_pod(object, now),
            Printer::Deployment => print_deployment(object, now).into(),
            Printer::ReplicaSet => print_replica_set(object, now).into(),
            Printer::Namespace => vec![
                name(object),
                text(object, &["status", "phase"]).into(),
                creation_age(object, now),
            ]
            .into(),
            Printer::Secret => print_secret(object, now).into(),
            Printer::ServiceAccount => vec![
                name(object),
                Value::from(list(object, &["secrets"]).len()),
                creation_age(object, now),
            ]
            .into(),
            Printer::Event => print_event(object, now).into(),
            Printer::Node => print_node(object, now).into(),
            Printer::Lease => vec![
                name(object),
                text(object, &["spec", "holderIdentity"]).into(),
                creation_age(object, now),
            ]
            .into(),
            Printer::Default => print_default(object).into(),
        }
    }
}

/// The generic convertor prints the creation time itself (RFC 3339, UTC,
/// whole seconds), with Go's zero time standing in when there is none.
fn print_default(object: &Value) -> Vec<Value> {
    // A timestamp whose UTC form leaves the representable range (year 9999
    // with a negative offset) is as unusable as a missing one.
    let created = time_at(object, &["metadata", "creationTimestamp"])
        .and_then(|t| t.checked_to_offset(UtcOffset::UTC))
        .unwrap_or(datetime!(0001-01-01 0:00 UTC));
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let created = created.format(&format).unwrap_or_default();
    vec![name(object), created.into()]
}

fn print_secret(secret: &Value, now: OffsetDateTime) -> Vec<Value> {
    // API defaulting makes an untyped secret Opaque, and stringData is merged
    // into data on the way in, so both count towards the keys.
    let secret_type = match text(secret, &["type"]) {
        "" => "Opaque",
        t => t,
    };
    let keys: BTreeSet<&String> = ["data", "stringData"]
        .iter()
        .filter_map(|field| secret.get(field).and_then(Value::as_object))
        .flat_map(Map::keys)
        .collect();
    vec![
        name(secret),
        secret_type.into(),
        Value::from(keys.len()),
        creation_age(secret, now),
    ]
}

/// `spec.replicas` defaults to 1 in apps/v1, so an object stored without it
/// reads as the API server would have defaulted it.
fn desired_replicas(object: &Value) -> i64 {
    match at(object, &["spec", "replicas"]) {
        None | Some(Value::Null) => 1,
        Some(_) => int(object, &["spec", "replicas"]).unwrap_or(0),
    }
}

fn print_deployment(deployment: &Value, now: OffsetDateTime) -> Vec<Value> {
    let desired = desired_replicas(deployment);
    let ready = int(deployment, &["status", "readyReplicas"]).unwrap_or(0);
    let (containers, images) = container_cells(list(
        deployment,
        &["spec", "template", "spec", "containers"],
    ));
    // Deployments print the bare selector string, "<invalid>" if it does not
    // convert, unlike ReplicaSets which use FormatLabelSelector.
    let selector = match LabelSelector::from_object(
        at(deployment, &["spec", "selector"]).unwrap_or(&Value::Null),
    ) {
        Ok(selector) => selector.to_string(),
        Err(_) => "<invalid>".to_string(),
    };
    vec![
        name(deployment),
        format!("{ready}/{desired}").into(),
        int(deployment, &["status", "updatedReplicas"])
            .unwrap_or(0)
            .into(),
        int(deployment, &["status", "availableReplicas"])
            .unwrap_or(0)
            .into(),
        creation_age(deployment, now),
        containers,
        images,
        selector.into(),
    ]
}

/// `metav1.FormatLabelSelector`: `<error>` when the selector does not
/// convert, `<none>` when it prints as nothing.
fn format_label_selector(selector: Option<&Value>) -> String {
    match LabelSelector::from_object(selector.unwrap_or(&Value::Null)) {
        Ok(selector) => or_placeholder(&selector.to_string(), "<none>"),
        Err(_) => "<error>".to_string(),
    }
}

fn print_replica_set(replica_set: &Value, now: OffsetDateTime) -> Vec<Value> {
    let (containers, images) = container_cells(list(
        replica_set,
        &["spec", "template", "spec", "containers"],
    ));
    vec![
        name(replica_set),
        desired_replicas(replica_set).into(),
        int(replica_set, &["status", "replicas"])
            .unwrap_or(0)
            .into(),
        int(replica_set, &["status", "readyReplicas"])
            .unwrap_or(0)
            .into(),
        creation_age(replica_set, now),
        containers,
        images,
        format_label_selector(at(replica_set, &["spec", "selector"])).into(),
    ]
}

fn print_node(node: &Value, now: OffsetDateTime) -> Vec<Value> {
    // Only the Ready condition is shown; if it appears twice the last wins,
    // as the map Kubernetes builds keeps the last entry.
    let ready = list(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| text(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if text(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if at(node, &["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }

    let mut roles = BTreeSet::new();
    if let Some(labels) = at(node, &["metadata", "labels"]).and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role);
                }
            } else if key == "kubernetes.io/role" {
                if let Some(role) = value.as_str().filter(|r| !r.is_empty()) {
                    roles.insert(role);
                }
            }
        }
    }
    let roles = or_placeholder(&roles.into_iter().collect::<Vec<_>>().join(","), "<none>");

    let address = |kind: &str| {
        list(node, &["status", "addresses"])
            .iter()
            .find(|a| text(a, &["type"]) == kind)
            .map_or_else(
                || "<none>".to_string(),
                |a| text(a, &["address"]).to_string(),
            )
    };
    let info =
        |field: &str| or_placeholder(text(node, &["status", "nodeInfo", field]), "<unknown>");
    vec![
        name(node),
        status.join(",").into(),
        roles.into(),
        creation_age(node, now),
        text(node, &["status", "nodeInfo", "kubeletVersion"]).into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ]
}

/// Reads both `core/v1` events and `events.k8s.io/v1` events, which the API
/// server prints with the same printer after converting the latter (whose
/// fields carry different names).
fn print_event(event: &Value, now: OffsetDateTime) -> Vec<Value> {
    let new_api = text(event, &["apiVersion"]).starts_with("events.k8s.io/");
    let field = |core: &'static str, events: &'static str| if new_api { events } else { core };

    let first = time_at(
        event,
        &[field("firstTimestamp", "deprecatedFirstTimestamp")],
    );
    let first_seen = match first {
        Some(t) => age(Some(t), now),
        None => age(time_at(event, &["eventTime"]), now),
    };
    let mut last_seen = match time_at(event, &[field("lastTimestamp", "deprecatedLastTimestamp")]) {
        Some(t) => age(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = int(event, &[field("count", "deprecatedCount")]).unwrap_or(0);
    match at(event, &["series"]) {
        Some(series @ Value::Object(_)) => {
            last_seen = age(time_at(series, &["lastObservedTime"]), now);
            count = int(series, &["count"]).unwrap_or(0);
        }
        // Singleton events of the newer API carry no count.
        _ if count == 0 => count = 1,
        _ => {}
    }

    let regarding = at(event, &[field("involvedObject", "regarding")]).unwrap_or(&Value::Null);
    let kind = text(regarding, &["kind"]).to_lowercase();
    let target = match text(regarding, &["name"]) {
        "" => kind,
        object_name => format!("{kind}/{object_name}"),
    };

    let source = at(event, &[field("source", "deprecatedSource")]).unwrap_or(&Value::Null);
    let component = match text(source, &["component"]) {
        "" => text(event, &[field("reportingComponent", "reportingController")]),
        c => c,
    };
    let instance = match text(source, &["host"]) {
        "" => text(event, &["reportingInstance"]),
        h => h,
    };
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };

    vec![
        last_seen.into(),
        text(event, &["type"]).into(),
        text(event, &["reason"]).into(),
        target.into(),
        text(regarding, &["fieldPath"]).into(),
        source.into(),
        text(event, &[field("message", "note")]).trim().into(),
        first_seen.into(),
        count.into(),
        name(event),
    ]
}

// ---------------------------------------------------------------------------
// Pods.

fn condition_status<'a>(pod: &'a Value, condition_type: &str) -> Option<&'a str> {
    list(pod, &["status", "conditions"])
        .iter()
        .find(|c| text(c, &["type"]) == condition_type)
        .map(|c| text(c, &["status"]))
}

/// Whether the pod has any `Ready=True` condition.
fn has_ready_condition(pod: &Value) -> bool {
    list(pod, &["status", "conditions"])
        .iter()
        .any(|c| text(c, &["type"]) == "Ready" && text(c, &["status"]) == "True")
}

/// The latest `lastState.terminated.finishedAt` of a container status.
fn last_termination(status: &Value) -> Option<OffsetDateTime> {
    time_at(status, &["lastState", "terminated", "finishedAt"])
}

fn signal_or_exit_code(terminated: &Value, prefix: &str) -> String {
    match int(terminated, &["signal"]).unwrap_or(0) {
        0 => format!(
            "{prefix}ExitCode:{}",
            int(terminated, &["exitCode"]).unwrap_or(0)
        ),
        signal => format!("{prefix}Signal:{signal}"),
    }
}

fn non_empty(v: Option<&Value>, field: &str) -> Option<String> {
    v.map(|v| text(v, &[field]))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The row of `printPod`, including its summary of init containers, sidecars
/// (init containers with `restartPolicy: Always`, which count as regular
/// containers for READY), container states and deletion.
fn print_pod(pod: &Value, now: OffsetDateTime) -> Printed {
    let phase = text(pod, &["status", "phase"]);
    let mut reason = match text(pod, &["status", "reason"]) {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    let gated = list(pod, &["status", "conditions"])
        .iter()
        .any(|c| text(c, &["type"]) == "PodScheduled" && text(c, &["reason"]) == "SchedulingGated");
    if gated {
        reason = "SchedulingGated".to_string();
    }

    let conditions = match phase {
        "Succeeded" => Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }])),
        "Failed" => Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": "Failed",
            "message": "The pod failed.",
        }])),
        _ => None,
    };

    let init_specs = list(pod, &["spec", "initContainers"]);
    let is_sidecar = |spec: &Value| text(spec, &["restartPolicy"]) == "Always";
    // Kubernetes looks specs up in a map by name, so with duplicate names
    // the last spec decides; mirror that.
    let sidecar_by_name = |name: &str| {
        init_specs
            .iter()
            .rev()
            .find(|s| text(s, &["name"]) == name)
            .is_some_and(is_sidecar)
    };
    let total = list(pod, &["spec", "containers"]).len()
        + init_specs.iter().filter(|s| is_sidecar(s)).count();

    let mut ready = 0usize;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<OffsetDateTime> = None;
    let mut last_sidecar_restart: Option<OffsetDateTime> = None;
    let mut initializing = false;

    for (index, status) in list(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let restart_count = int(status, &["restartCount"]).unwrap_or(0);
        restarts = restarts.saturating_add(restart_count);
        last_restart = last_restart.max(last_termination(status));
        let sidecar = sidecar_by_name(text(status, &["name"]));
        if sidecar {
            sidecar_restarts = sidecar_restarts.saturating_add(restart_count);
            last_sidecar_restart = last_sidecar_restart.max(last_termination(status));
        }

        let state = at(status, &["state"]).unwrap_or(&Value::Null);
        let terminated = state.get("terminated").filter(|t| t.is_object());
        let waiting = state.get("waiting").filter(|w| w.is_object());
        if terminated.is_some_and(|t| int(t, &["exitCode"]).unwrap_or(0) == 0) {
            continue;
        }
        if sidecar && at(status, &["started"]).and_then(Value::as_bool) == Some(true) {
            if at(status, &["ready"]).and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        initializing = true;
        reason = if let Some(terminated) = terminated {
            match non_empty(Some(terminated), "reason") {
                Some(r) => format!("Init:{r}"),
                None => signal_or_exit_code(terminated, "Init:"),
            }
        } else {
            match non_empty(waiting, "reason").filter(|r| r != "PodInitializing") {
                Some(r) => format!("Init:{r}"),
                None => format!("Init:{index}/{}", init_specs.len()),
            }
        };
        break;
    }

    if !initializing || condition_status(pod, "Initialized") == Some("True") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for status in list(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts = restarts.saturating_add(int(status, &["restartCount"]).unwrap_or(0));
            last_restart = last_restart.max(last_termination(status));

            let state = at(status, &["state"]).unwrap_or(&Value::Null);
            let terminated = state.get("terminated").filter(|t| t.is_object());
            let waiting = state.get("waiting").filter(|w| w.is_object());
            let running = state.get("running").is_some_and(Value::is_object);
            if let Some(r) = non_empty(waiting, "reason") {
                reason = r;
            } else if let Some(r) = non_empty(terminated, "reason") {
                reason = r;
            } else if let Some(terminated) = terminated {
                reason = signal_or_exit_code(terminated, "");
            } else if running && at(status, &["ready"]).and_then(Value::as_bool) == Some(true) {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose last-listed container completed but which still has a
        // running one is shown as running (or not ready).
        if reason == "Completed" && has_running {
            reason = if has_ready_condition(pod) {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = at(pod, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null());
    if deleting && text(pod, &["status", "reason"]) == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_text = match last_restart {
        Some(last) if restarts != 0 => format!("{restarts} ({} ago)", age(Some(last), now)),
        _ => restarts.to_string(),
    };

    // The internal PodIPs list starts with status.podIP when it is set.
    let pod_ip = match text(pod, &["status", "podIP"]) {
        "" => list(pod, &["status", "podIPs"])
            .first()
            .map_or("", |ip| text(ip, &["ip"])),
        ip => ip,
    };
    let gates = list(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let satisfied = gates
            .iter()
            .filter(|gate| condition_status(pod, text(gate, &["conditionType"])) == Some("True"))
            .count();
        format!("{satisfied}/{}", gates.len())
    };

    Printed {
        cells: vec![
            name(pod),
            format!("{ready}/{total}").into(),
            reason.into(),
            restarts_text.into(),
            creation_age(pod, now),
            or_placeholder(pod_ip, "<none>").into(),
            or_placeholder(text(pod, &["spec", "nodeName"]), "<none>").into(),
            or_placeholder(text(pod, &["status", "nominatedNodeName"]), "<none>").into(),
            readiness_gates.into(),
        ],
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: OffsetDateTime = datetime!(2024-06-01 12:00 UTC);

    fn ago(d: Duration) -> String {
        match (NOW - d).format(&Rfc3339) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    fn cells(kind: &str, object: Value) -> Vec<Value> {
        let t = table(kind, &[object], NOW, IncludeObject::None, "", None);
        match t.pointer("/rows/0/cells") {
            Some(Value::Array(c)) => c.clone(),
            other => panic!("no cells: {other:?}"),
        }
    }

    fn column_names(kind: &str) -> Vec<(String, i64)> {
        let t = table(kind, &[], NOW, IncludeObject::None, "", None);
        t["columnDefinitions"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or("").to_string(),
                            c["priority"].as_i64().unwrap_or(-1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// READY, STATUS and RESTARTS of a pod.
    fn pod_summary(pod: Value) -> (String, String, String) {
        let c = cells("Pod", pod);
        let s = |i: usize| c[i].as_str().unwrap_or("").to_string();
        (s(1), s(2), s(3))
    }

    fn summary(ready: &str, status: &str, restarts: &str) -> (String, String, String) {
        (ready.into(), status.into(), restarts.into())
    }

    fn pod(spec: Value, status: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "creationTimestamp": ago(Duration::minutes(90))},
            "spec": spec,
            "status": status,
        })
    }

    fn one_container() -> Value {
        json!({"containers": [{"name": "app", "image": "nginx"}]})
    }

    #[test]
    fn human_duration_boundaries() {
        let cases = [
            (Duration::seconds(-3), "<invalid>"),
            (Duration::seconds(-2), "<invalid>"),
            (Duration::milliseconds(-1999), "0s"),
            (Duration::milliseconds(-1500), "0s"),
            (Duration::seconds(-1), "0s"),
            (Duration::ZERO, "0s"),
            (Duration::milliseconds(999), "0s"),
            (Duration::seconds(5), "5s"),
            (Duration::seconds(119), "119s"),
            (Duration::seconds(120), "2m"),
            (Duration::seconds(121), "2m1s"),
            (Duration::seconds(200), "3m20s"),
            (Duration::seconds(599), "9m59s"),
            (Duration::minutes(10), "10m"),
            (Duration::seconds(10 * 60 + 59), "10m"),
            (Duration::minutes(179), "179m"),
            (Duration::minutes(180), "3h"),
            (Duration::minutes(181), "3h1m"),
            (Duration::minutes(8 * 60 - 1), "7h59m"),
            (Duration::hours(8), "8h"),
            (Duration::hours(47), "47h"),
            (Duration::hours(48), "2d"),
            (Duration::hours(49), "2d1h"),
            (Duration::hours(24 * 8 - 1), "7d23h"),
            (Duration::days(8), "8d"),
            (Duration::days(5), "5d"),
            (Duration::days(729), "729d"),
            (Duration::days(730), "2y"),
            (Duration::days(731), "2y1d"),
            (Duration::days(365 * 8 - 1), "7y364d"),
            (Duration::days(365 * 8), "8y"),
            (Duration::days(365 * 100), "100y"),
            (Duration::days(365 * 1000), "292y"),
            (Duration::days(-365 * 1000), "<invalid>"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn age_of_missing_or_invalid_timestamps_is_unknown() {
        assert_eq!(age(None, NOW), "<unknown>");
        assert_eq!(parse_time(Some(&json!("not a time"))), None);
        assert_eq!(parse_time(Some(&json!("0001-01-01T00:00:00Z"))), None);
        assert_eq!(parse_time(Some(&json!(12))), None);
        assert!(parse_time(Some(&json!("2024-01-01T00:00:00.123456Z"))).is_some());
        let c = cells(
            "Namespace",
            json!({"metadata": {"name": "x", "creationTimestamp": "yesterday"}}),
        );
        assert_eq!(c[2], "<unknown>");
    }

    #[test]
    fn pod_columns_and_wide_cells() {
        assert_eq!(
            column_names("Pod"),
            [
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1)
            ]
            .map(|(n, p)| (n.to_string(), p))
        );
        let p = pod(
            json!({
                "nodeName": "node-1",
                "containers": [{"name": "app"}],
                "readinessGates": [{"conditionType": "example.com/a"}, {"conditionType": "example.com/b"}]
            }),
            json!({
                "phase": "Running",
                "podIPs": [{"ip": "10.0.0.7"}],
                "conditions": [
                    {"type": "Ready", "status": "False"},
                    {"type": "example.com/a", "status": "True"},
                    {"type": "example.com/b", "status": "False"}
                ],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]
            }),
        );
        assert_eq!(
            cells("Pod", p),
            vec![
                json!("p"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("90m"),
                json!("10.0.0.7"),
                json!("node-1"),
                json!("<none>"),
                json!("1/2"),
            ]
        );
        let bare = cells("Pod", json!({"metadata": {"name": "bare"}}));
        assert_eq!(
            bare,
            vec![
                json!("bare"),
                json!("0/0"),
                json!(""),
                json!("0"),
                json!("<unknown>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
        let p = pod(
            one_container(),
            json!({"podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.8"}]}),
        );
        assert_eq!(cells("Pod", p)[5], "10.0.0.9");
    }

    #[test]
    fn pod_pending_and_running() {
        assert_eq!(
            pod_summary(pod(one_container(), json!({"phase": "Pending"}))),
            summary("0/1", "Pending", "0")
        );
        assert_eq!(
            pod_summary(pod(
                one_container(),
                json!({
                    "phase": "Pending",
                    "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}}}]
                })
            )),
            summary("0/1", "ContainerCreating", "0")
        );
        assert_eq!(
            pod_summary(pod(
                one_container(),
                json!({
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": ago(Duration::minutes(5))}}}]
                })
            )),
            summary("1/1", "Running", "0")
        );
        // Running but failing its readiness probe.
        assert_eq!(
            pod_summary(pod(
                one_container(),
                json!({
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0, "state": {"running": {}}}]
                })
            )),
            summary("0/1", "Running", "0")
        );
    }

    #[test]
    fn pod_completed_container_beside_running_one() {
        let spec = json!({"containers": [{"name": "app"}, {"name": "job"}]});
        let status = |ready: &str| {
            json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}},
                    {"name": "job", "ready": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
                ]
            })
        };
        assert_eq!(
            pod_summary(pod(spec.clone(), status("False"))),
            summary("1/2", "NotReady", "0")
        );
        assert_eq!(
            pod_summary(pod(spec, status("True"))),
            summary("1/2", "Running", "0")
        );
    }

    #[test]
    fn pod_crash_loop_with_restart_age() {
        let p = pod(
            one_container(),
            json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{
                    "name": "app", "ready": false, "restartCount": 5,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                        "finishedAt": ago(Duration::seconds(200))}}
                }]
            }),
        );
        assert_eq!(
            pod_summary(p),
            summary("0/1", "CrashLoopBackOff", "5 (3m20s ago)")
        );

        // Restarts without a recorded termination time show the bare count.
        let p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [{"name": "app", "restartCount": 2, "ready": true, "state": {"running": {}}}]}),
        );
        assert_eq!(pod_summary(p), summary("1/1", "Running", "2"));
    }

    #[test]
    fn pod_image_pull_errors_and_terminations() {
        for reason in ["ErrImagePull", "ImagePullBackOff"] {
            let p = pod(
                one_container(),
                json!({"phase": "Pending", "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": reason}}}]}),
            );
            assert_eq!(pod_summary(p), summary("0/1", reason, "0"));
        }
        let terminated = |t: Value| {
            pod(
                one_container(),
                json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                    "state": {"terminated": t}}]}),
            )
        };
        assert_eq!(
            pod_summary(terminated(json!({"exitCode": 137, "signal": 9}))).1,
            "Signal:9"
        );
        assert_eq!(
            pod_summary(terminated(json!({"exitCode": 3}))).1,
            "ExitCode:3"
        );
        assert_eq!(
            pod_summary(terminated(json!({"exitCode": 137, "reason": "OOMKilled"}))).1,
            "OOMKilled"
        );
    }

    #[test]
    fn pod_completed_and_failed_carry_row_conditions() {
        let p = pod(
            one_container(),
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        let t = table("Pod", &[p], NOW, IncludeObject::None, "", None);
        assert_eq!(t.pointer("/rows/0/cells/2"), Some(&json!("Completed")));
        assert_eq!(t.pointer("/rows/0/cells/1"), Some(&json!("0/1")));
        assert_eq!(
            t.pointer("/rows/0/conditions"),
            Some(
                &json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                "message": "The pod has completed successfully."}])
            )
        );
        let failed = pod(
            one_container(),
            json!({"phase": "Failed", "reason": "Evicted"}),
        );
        let t = table("Pod", &[failed], NOW, IncludeObject::None, "", None);
        assert_eq!(t.pointer("/rows/0/cells/2"), Some(&json!("Evicted")));
        assert_eq!(
            t.pointer("/rows/0/conditions/0/reason"),
            Some(&json!("Failed"))
        );
        let running = pod(one_container(), json!({"phase": "Running"}));
        let t = table("Pod", &[running], NOW, IncludeObject::None, "", None);
        assert_eq!(t.pointer("/rows/0/conditions"), None);
    }

    #[test]
    fn pod_terminating_and_node_lost() {
        let mut p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
        );
        p["metadata"]["deletionTimestamp"] = json!(ago(Duration::seconds(10)));
        assert_eq!(pod_summary(p.clone()), summary("1/1", "Terminating", "0"));

        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(pod_summary(p).1, "Unknown");

        let mut done = pod(
            one_container(),
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "app", "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        done["metadata"]["deletionTimestamp"] = json!(ago(Duration::seconds(10)));
        assert_eq!(pod_summary(done).1, "Completed");
    }

    #[test]
    fn pod_init_containers() {
        let spec = json!({
            "initContainers": [{"name": "setup"}, {"name": "migrate"}],
            "containers": [{"name": "app"}]
        });
        let with_init = |statuses: Value| {
            pod(
                spec.clone(),
                json!({
                    "phase": "Pending",
                    "conditions": [{"type": "Initialized", "status": "False"}],
                    "initContainerStatuses": statuses,
                    "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "PodInitializing"}}}]
                }),
            )
        };
        let done = json!({"name": "setup", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});

        assert_eq!(
            pod_summary(with_init(json!([
                {"name": "setup", "restartCount": 0, "state": {"running": {}}},
                {"name": "migrate", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
            ]))),
            summary("0/1", "Init:0/2", "0")
        );
        assert_eq!(
            pod_summary(with_init(
                json!([done, {"name": "migrate", "restartCount": 0, "state": {"running": {}}}])
            )),
            summary("0/1", "Init:1/2", "0")
        );
        assert_eq!(
            pod_summary(with_init(
                json!([done, {"name": "migrate", "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(Duration::seconds(30))}}}])
            )),
            summary("0/1", "Init:CrashLoopBackOff", "3 (30s ago)")
        );
        assert_eq!(
            pod_summary(with_init(json!([{"name": "setup", "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}])))
            .1,
            "Init:Error"
        );
        assert_eq!(
            pod_summary(with_init(json!([{"name": "setup", "restartCount": 0,
                "state": {"terminated": {"exitCode": 2}}}])))
            .1,
            "Init:ExitCode:2"
        );
        assert_eq!(
            pod_summary(with_init(json!([{"name": "setup", "restartCount": 0,
                "state": {"terminated": {"exitCode": 143, "signal": 15}}}])))
            .1,
            "Init:Signal:15"
        );
        // A waiting init container without a reason still reports progress.
        assert_eq!(
            pod_summary(with_init(
                json!([{"name": "setup", "restartCount": 0, "state": {"waiting": {}}}])
            ))
            .1,
            "Init:0/2"
        );
    }

    #[test]
    fn pod_sidecars_count_as_containers() {
        let spec = json!({
            "initContainers": [
                {"name": "setup"},
                {"name": "proxy", "restartPolicy": "Always"}
            ],
            "containers": [{"name": "app"}]
        });
        let p = pod(
            spec.clone(),
            json!({
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [
                    {"name": "setup", "restartCount": 1, "ready": false,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(Duration::hours(1))}}},
                    {"name": "proxy", "restartCount": 2, "ready": true, "started": true,
                        "state": {"running": {}},
                        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(Duration::minutes(20))}}}
                ],
                "containerStatuses": [{"name": "app", "restartCount": 1, "ready": true, "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(Duration::minutes(40))}}}]
            }),
        );
        // Restarts of completed regular init containers are dropped once the
        // pod is initialised; sidecar restarts stay.
        assert_eq!(pod_summary(p), summary("2/2", "Running", "3 (20m ago)"));

        // A sidecar that has not started yet holds initialisation up.
        let p = pod(
            spec,
            json!({
                "phase": "Pending",
                "initContainerStatuses": [
                    {"name": "setup", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
                    {"name": "proxy", "restartCount": 0, "started": false, "ready": false, "state": {"running": {}}}
                ],
                "containerStatuses": [{"name": "app", "restartCount": 0, "ready": false,
                    "state": {"waiting": {"reason": "PodInitializing"}}}]
            }),
        );
        assert_eq!(pod_summary(p), summary("0/2", "Init:1/2", "0"));
    }

    #[test]
    fn pod_scheduling_gated() {
        let p = pod(
            one_container(),
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(pod_summary(p), summary("0/1", "SchedulingGated", "0"));
    }

    fn template(containers: Value) -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}})
    }

    #[test]
    fn deployment_wide_columns() {
        assert_eq!(
            column_names("Deployment"),
            [
                ("Name", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1)
            ]
            .map(|(n, p)| (n.to_string(), p))
        );
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": ago(Duration::days(3) + Duration::hours(4))},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                "template": template(json!([{"name": "nginx", "image": "nginx:1.25"}, {"name": "log", "image": "busybox"}]))
            },
            "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}
        });
        assert_eq!(
            cells("Deployment", d.clone()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("3d4h"),
                json!("nginx,log"),
                json!("nginx:1.25,busybox"),
                json!("app=web,tier in (a,b)"),
            ]
        );
        let mut defaulted = d.clone();
        if let Some(spec) = defaulted["spec"].as_object_mut() {
            spec.remove("replicas");
        }
        defaulted["status"] = json!({});
        let c = cells("Deployment", defaulted);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], 0);

        let mut invalid = d;
        invalid["spec"]["selector"] = json!({"matchExpressions": [{"key": "a", "operator": "Gt"}]});
        assert_eq!(cells("Deployment", invalid)[7], "<invalid>");
    }

    #[test]
    fn replica_set_wide_columns() {
        assert_eq!(
            column_names("ReplicaSet"),
            [
                ("Name", 0),
                ("Desired", 0),
                ("Current", 0),
                ("Ready", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1)
            ]
            .map(|(n, p)| (n.to_string(), p))
        );
        let rs = json!({
            "metadata": {"name": "web-5d9c", "creationTimestamp": ago(Duration::minutes(7))},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d9c"}},
                "template": template(json!([{"name": "nginx", "image": "nginx"}]))},
            "status": {"replicas": 2, "readyReplicas": 1}
        });
        assert_eq!(
            cells("ReplicaSet", rs.clone()),
            vec![
                json!("web-5d9c"),
                json!(2),
                json!(2),
                json!(1),
                json!("7m"),
                json!("nginx"),
                json!("nginx"),
                json!("app=web,pod-template-hash=5d9c"),
            ]
        );
        for (selector, want) in [
            (json!({}), "<none>"),
            (Value::Null, "<none>"),
            (json!({"matchLabels": {"a": "-"}}), "<error>"),
        ] {
            let mut rs = rs.clone();
            rs["spec"]["selector"] = selector;
            assert_eq!(cells("ReplicaSet", rs)[7], want);
        }
    }

    #[test]
    fn simple_kinds() {
        let created = ago(Duration::days(40));
        assert_eq!(
            cells(
                "Namespace",
                json!({"metadata": {"name": "dev", "creationTimestamp": created}, "status": {"phase": "Active"}})
            ),
            vec![json!("dev"), json!("Active"), json!("40d")]
        );
        assert_eq!(
            cells(
                "Secret",
                json!({"metadata": {"name": "s", "creationTimestamp": created},
                "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}})
            ),
            vec![
                json!("s"),
                json!("kubernetes.io/tls"),
                json!(2),
                json!("40d")
            ]
        );
        assert_eq!(
            cells(
                "Secret",
                json!({"metadata": {"name": "s"}, "data": {"a": ""}, "stringData": {"a": "x", "b": "y"}})
            ),
            vec![json!("s"), json!("Opaque"), json!(2), json!("<unknown>")]
        );
        assert_eq!(
            cells(
                "ServiceAccount",
                json!({"metadata": {"name": "default", "creationTimestamp": created}, "secrets": [{"name": "t"}]})
            ),
            vec![json!("default"), json!(1), json!("40d")]
        );
        assert_eq!(
            cells(
                "Lease",
                json!({"metadata": {"name": "kube-scheduler", "creationTimestamp": created},
                "spec": {"holderIdentity": "node-1_abc"}})
            ),
            vec![json!("kube-scheduler"), json!("node-1_abc"), json!("40d")]
        );
        assert_eq!(
            cells("Lease", json!({"metadata": {"name": "l"}, "spec": {}}))[1],
            ""
        );
    }

    #[test]
    fn nodes() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": ago(Duration::days(12)),
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "",
                    "kubernetes.io/role": "worker", "other": "x"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.1.5"}],
                "nodeInfo": {"kubeletVersion": "v1.31.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.0"}
            }
        });
        assert_eq!(
            cells("Node", node),
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("12d"),
                json!("v1.31.0"),
                json!("192.168.1.5"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0"),
                json!("containerd://1.7.0"),
            ]
        );
        let bare = cells(
            "Node",
            json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        );
        assert_eq!(bare[1], "NotReady");
        assert_eq!(bare[2], "<none>");
        assert_eq!(bare[7], "<unknown>");
        assert_eq!(
            cells("Node", json!({"metadata": {"name": "n3"}}))[1],
            "Unknown"
        );
        assert_eq!(column_names("Node").len(), 10);
    }

    #[test]
    fn events() {
        assert_eq!(
            column_names("Event"),
            [
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1)
            ]
            .map(|(n, p)| (n.to_string(), p))
        );
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "p.17a"},
            "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning", "message": "  Back-off restarting failed container\n",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": ago(Duration::minutes(30)), "lastTimestamp": ago(Duration::seconds(45)),
            "count": 7
        });
        assert_eq!(
            cells("Event", event),
            vec![
                json!("45s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/p"),
                json!("spec.containers{app}"),
                json!("kubelet, n1"),
                json!("Back-off restarting failed container"),
                json!("30m"),
                json!(7),
                json!("p.17a"),
            ]
        );
        // Newer-style events: eventTime, series, reporting fields.
        let event = json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Node"},
            "reason": "Started", "type": "Normal", "message": "m",
            "eventTime": "2024-06-01T11:50:00.000000Z",
            "reportingComponent": "kiln-controller", "reportingInstance": "",
            "series": {"count": 4, "lastObservedTime": "2024-06-01T11:59:00.000000Z"}
        });
        let c = cells("Event", event);
        assert_eq!(c[0], "60s");
        assert_eq!(c[3], "node");
        assert_eq!(c[5], "kiln-controller");
        assert_eq!(c[7], "10m");
        assert_eq!(c[8], 4);
        let singleton = cells("Event", json!({"metadata": {"name": "e"}}));
        assert_eq!(singleton[0], "<unknown>");
        assert_eq!(singleton[8], 1);
        // events.k8s.io/v1 spells the same fields differently.
        let c = cells(
            "Event",
            json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "e2"},
                "regarding": {"kind": "Deployment", "name": "web"},
                "note": "Scaled up", "reason": "ScalingReplicaSet", "type": "Normal",
                "reportingController": "deployment-controller", "reportingInstance": "cp-1",
                "eventTime": ago(Duration::minutes(3)),
                "deprecatedCount": 2
            }),
        );
        assert_eq!(c[0], "3m");
        assert_eq!(c[3], "deployment/web");
        assert_eq!(c[5], "deployment-controller, cp-1");
        assert_eq!(c[6], "Scaled up");
        assert_eq!(c[8], 2);
    }

    #[test]
    fn generic_fallback_prints_created_at() {
        assert_eq!(
            column_names("ConfigMap"),
            vec![("Name".to_string(), 0), ("Created At".to_string(), 0)]
        );
        let t = table(
            "ConfigMap",
            &[
                json!({"metadata": {"name": "cm", "creationTimestamp": "2024-05-01T12:30:15+02:00"}}),
                json!({"metadata": {"name": "old"}}),
            ],
            NOW,
            IncludeObject::None,
            "",
            None,
        );
        assert_eq!(t.pointer("/columnDefinitions/1/type"), Some(&json!("date")));
        assert_eq!(
            t.pointer("/rows/0/cells"),
            Some(&json!(["cm", "2024-05-01T10:30:15Z"]))
        );
        assert_eq!(
            t.pointer("/rows/1/cells"),
            Some(&json!(["old", "0001-01-01T00:00:00Z"]))
        );
    }

    #[test]
    fn include_modes_and_list_metadata() {
        let object = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "dev", "labels": {"a": "b"}, "resourceVersion": "12"},
            "status": {"phase": "Active"}
        });
        let objects = [object.clone()];

        let t = table(
            "Namespace",
            &objects,
            NOW,
            IncludeObject::Metadata,
            "42",
            Some("tok"),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": "tok"})
        );
        assert_eq!(
            t.pointer("/rows/0/object"),
            Some(
                &json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "dev", "labels": {"a": "b"}, "resourceVersion": "12"}})
            )
        );
        assert_eq!(
            t.pointer("/columnDefinitions/0"),
            Some(
                &json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DOC, "priority": 0})
            )
        );

        let t = table("Namespace", &objects, NOW, IncludeObject::Object, "", None);
        assert_eq!(t["metadata"], json!({}));
        assert_eq!(t.pointer("/rows/0/object"), Some(&object));

        let t = table("Namespace", &objects, NOW, IncludeObject::None, "1", None);
        assert_eq!(t.pointer("/rows/0/object"), None);
        assert!(t.pointer("/rows/0/cells").is_some());

        let empty = table("Pod", &[], NOW, IncludeObject::Metadata, "7", None);
        assert_eq!(empty["rows"], json!([]));

        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("")), Ok(IncludeObject::Metadata));
        assert_eq!(
            IncludeObject::parse(Some("Metadata")),
            Ok(IncludeObject::Metadata)
        );
        assert_eq!(IncludeObject::parse(Some("None")), Ok(IncludeObject::None));
        assert_eq!(
            IncludeObject::parse(Some("Object")),
            Ok(IncludeObject::Object)
        );
        assert_eq!(
            IncludeObject::parse(Some("object")),
            Err(UnknownIncludeObject("object".into()))
        );
        assert_eq!(IncludeObject::default(), IncludeObject::Metadata);
    }

    #[test]
    fn malformed_objects_never_panic() {
        let weird = [
            json!(null),
            json!(3),
            json!("pod"),
            json!([]),
            json!({"metadata": 5, "spec": [], "status": "x"}),
            json!({"spec": {"containers": {}, "initContainers": [1, null, {"restartPolicy": 3}], "replicas": "3",
                "selector": "app=web", "template": {"spec": {"containers": [1]}}, "readinessGates": [null]},
                "status": {"conditions": [null, 1], "containerStatuses": [null, {"state": 1}, {"state": {"terminated": 1}}],
                    "initContainerStatuses": [{"state": {"waiting": "x"}, "restartCount": u64::MAX}, {"restartCount": i64::MAX}],
                    "podIPs": [7], "addresses": {}, "replicas": -1}}),
            json!({"metadata": {"creationTimestamp": "9999-12-31T23:59:59Z", "deletionTimestamp": null, "labels": [1]},
                "series": {"count": "x"}, "involvedObject": [], "source": 3, "data": [1], "secrets": {}}),
            json!({"metadata": {"creationTimestamp": "0000-01-01T00:00:00Z"}}),
            json!({"metadata": {"creationTimestamp": "9999-12-31T23:59:59-23:59"}}),
            json!({"metadata": {"creationTimestamp": "0000-01-01T00:00:00+23:59"}}),
        ];
        for kind in [
            "Pod",
            "Deployment",
            "ReplicaSet",
            "Namespace",
            "Secret",
            "ServiceAccount",
            "Event",
            "Node",
            "Lease",
            "Widget",
        ] {
            for include in [
                IncludeObject::None,
                IncludeObject::Metadata,
                IncludeObject::Object,
            ] {
                let t = table(kind, &weird, NOW, include, "", None);
                let columns = t["columnDefinitions"].as_array().map_or(0, Vec::len);
                for row in t["rows"].as_array().into_iter().flatten() {
                    assert_eq!(
                        row["cells"].as_array().map_or(0, Vec::len),
                        columns,
                        "{kind}"
                    );
                }
            }
        }
        assert_eq!(
            cells(
                "Pod",
                json!({"metadata": {"creationTimestamp": "9999-12-31T23:59:59Z"}})
            )[4],
            "<invalid>"
        );
    }
}
