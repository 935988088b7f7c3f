//! The decision core of the Deployment controller.
//!
//! Kubernetes' controller interleaves store reads, API writes and informer callbacks inside
//! one sync pass. Here the caller owns the store: [`reconcile`] runs one pass over a
//! Deployment and the ReplicaSets it controls and folds every write that pass would issue
//! into a [`Plan`]. The caller applies the plan and calls again whenever anything changes, so
//! a rollout converges over several passes exactly as the upstream level-triggered loop does
//! (`pkg/controller/deployment`: `syncDeployment`, `sync.go`, `rolling.go`, `recreate.go`,
//! `progress.go`, `util/deployment_util.go`).
//!
//! ReplicaSets are created with the Deployment's pod template copied verbatim plus the
//! `pod-template-hash` label, because `kubectl rollout history/undo` compare templates on the
//! client and find revisions through the `deployment.kubernetes.io/revision` annotation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// The rollout sequence number of a ReplicaSet, mirrored on the Deployment.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet served before its template came back in a later rollout.
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `spec.replicas` when the ReplicaSet was last sized; a mismatch marks a
/// scaling event rather than a rollout.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` when the ReplicaSet was last sized; proportional scaling uses
/// it to keep each ReplicaSet's share.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// The reason for a rollout, shown by `kubectl rollout history`; copied to the new ReplicaSet
/// like every other annotation outside the skip list.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";
/// Label that keeps the pods of different templates apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO_ANNOTATION: &str = "deprecated.deployment.rollback.to";

/// Deployment annotations that describe the Deployment itself and must not leak into its
/// ReplicaSets (`annotationsToSkip` upstream).
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    LAST_APPLIED_ANNOTATION,
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    ROLLBACK_TO_ANNOTATION,
];

/// Upper bound on `revision-history`, so a template toggled back and forth forever cannot
/// grow the annotation without limit.
const MAX_REVISION_HISTORY_CHARS: i64 = 2000;

const I32_MAX: i64 = i32::MAX as i64;

const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
const REPLICA_FAILURE: &str = "ReplicaFailure";

const TRUE: &str = "True";
const FALSE: &str = "False";
const UNKNOWN: &str = "Unknown";

const REASON_NEW_RS_CREATED: &str = "NewReplicaSetCreated";
const REASON_FOUND_NEW_RS: &str = "FoundNewReplicaSet";
const REASON_RS_UPDATED: &str = "ReplicaSetUpdated";
const REASON_NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const REASON_TIMED_OUT: &str = "ProgressDeadlineExceeded";
const REASON_PAUSED: &str = "DeploymentPaused";
const REASON_RESUMED: &str = "DeploymentResumed";
const REASON_MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
const REASON_MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

const NORMAL: &str = "Normal";
const WARNING: &str = "Warning";
const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";

/// Why a Deployment or ReplicaSet could not be reconciled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeploymentError {
    /// A field the controller depends on is missing or holds a value Kubernetes' validation
    /// would have rejected; deciding anyway could scale the wrong thing.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
}

impl DeploymentError {
    /// The offending field as a path (`spec.strategy.rollingUpdate.maxSurge`,
    /// `replicaSets[1].spec.replicas`), for error messages and tests.
    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } => field,
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DeploymentError {
    DeploymentError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Everything one sync pass decided. Applying it in field order (create, update, delete,
/// Deployment annotations, status, events) reproduces the writes Kubernetes would make.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The new ReplicaSet to create, as a complete object.
    pub create: Option<Value>,
    /// ReplicaSets to write back (each a full object carrying its new `spec.replicas`,
    /// annotations and `minReadySeconds`); at most one entry per ReplicaSet.
    pub update: Vec<Value>,
    /// Names of old ReplicaSets beyond `revisionHistoryLimit` to delete.
    pub delete: Vec<String>,
    /// The Deployment's complete `metadata.annotations`, when they changed (the revision).
    pub deployment_annotations: Option<Map<String, Value>>,
    /// The Deployment's new `status`, when it differs from the stored one.
    pub status: Option<Value>,
    /// Events for the Deployment: (type, reason, message).
    pub events: Vec<(String, String, String)>,
    /// Call again after this long even if nothing changes, so a stalled rollout is noticed
    /// when its progress deadline passes.
    pub requeue_after: Option<Duration>,
}

impl Plan {
    /// Whether the pass found nothing to write or record; a requeue alone does not count,
    /// because it changes nothing now.
    pub fn is_empty(&self) -> bool {
        self.create.is_none()
            && self.update.is_empty()
            && self.delete.is_empty()
            && self.deployment_annotations.is_none()
            && self.status.is_none()
            && self.events.is_empty()
    }
}

/// Decides what the Deployment controller does now.
///
/// `replica_sets` are those whose controller reference is `deployment`. `now` stamps the
/// conditions and drives the progress deadline; it is a parameter so decisions are
/// reproducible.
pub fn reconcile(
    deployment: &Value,
    replica_sets: &[Value],
    now: OffsetDateTime,
) -> Result<Plan, DeploymentError> {
    let d = Deployment::parse(deployment)?;
    let rss = replica_sets
        .iter()
        .enumerate()
        .map(|(i, rs)| ReplicaSet::parse(rs, i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut pass = Pass::new(&d, rss, now);
    pass.run()?;
    Ok(pass.into_plan())
}

/// The status to write when creating the new ReplicaSet failed because a ReplicaSet of the
/// same name exists that this Deployment does not control: bumping `collisionCount` changes
/// the hash, and so the name, on the next pass.
pub fn status_after_name_collision(deployment: &Value) -> Result<Value, DeploymentError> {
    let d = Deployment::parse(deployment)?;
    let mut status = d.status.clone();
    status.collision_count = Some(next_collision_count(status.collision_count));
    Ok(status.to_json())
}

fn next_collision_count(current: Option<i64>) -> i64 {
    match current {
        None => 1,
        Some(c) if c < I32_MAX => c + 1,
        // Go's int32 would wrap; restarting keeps the value valid.
        Some(_) => 0,
    }
}

/// The `pod-template-hash` of a pod template.
///
/// Kubernetes hashes a Go dump of the typed template, which cannot be reproduced from
/// JSON; what matters is that the value is stable for equal templates, changes with
/// `collisionCount`, and is a valid label value. So: FNV-32a over the template's canonical
/// JSON (sorted keys, nulls and empty objects/arrays dropped, as Go's zero values are),
/// then the collision count as eight little-endian bytes, rendered with Kubernetes'
/// `SafeEncodeString` alphabet, which has no vowels and so spells no words.
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut canonical = String::new();
    write_canonical(&normalized(template).unwrap_or(Value::Null), &mut canonical);
    let mut hash = Fnv32a::new();
    hash.write(canonical.as_bytes());
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(count as u32).to_le_bytes());
        hash.write(&bytes);
    }
    safe_encode(&hash.0.to_string())
}

/// Whether two pod templates are the same apart from `pod-template-hash`, the test
/// Kubernetes (and kubectl's client-side rollback) uses to recognize a Deployment's
/// ReplicaSet. Absent, null and empty values compare equal, as Go's semantic equality
/// treats nil and empty maps and slices alike.
pub fn equal_ignoring_hash(a: &Value, b: &Value) -> bool {
    normalized(&without_hash_label(a)) == normalized(&without_hash_label(b))
}

fn without_hash_label(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .get_mut("metadata")
        .and_then(|m| m.get_mut("labels"))
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    t
}

struct Fnv32a(u32);

impl Fnv32a {
    fn new() -> Self {
        Self(0x811c_9dc5)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// The value with nulls and empty objects/arrays removed and integral floats made
/// integers; `None` when nothing is left.
fn normalized(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(map) => {
            let out: Map<String, Value> = map
                .iter()
                .filter_map(|(k, v)| normalized(v).map(|n| (k.clone(), n)))
                .collect();
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => (!items.is_empty()).then(|| {
            Value::Array(
                items
                    .iter()
                    .map(|i| normalized(i).unwrap_or(Value::Null))
                    .collect(),
            )
        }),
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
            _ => v.clone(),
        }),
        other => Some(other.clone()),
    }
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(value) = map.get(key) {
                    write_canonical(value, out);
                }
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

// ---------------------------------------------------------------------------------------
// Input parsing: every field the decisions use is checked once, so the decision code below
// works on plain integers and cannot trip over a malformed object.

fn opt_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, DeploymentError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(invalid(field, "must be an object")),
    }
}

fn req_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<&'a Map<String, Value>, DeploymentError> {
    opt_object(obj, key, field)?.ok_or_else(|| invalid(field, "is required"))
}

fn opt_str(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<String>, DeploymentError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn req_str(obj: &Map<String, Value>, key: &str, field: &str) -> Result<String, DeploymentError> {
    match opt_str(obj, key, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(field, "is required")),
    }
}

fn opt_int(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
    max: i64,
) -> Result<Option<i64>, DeploymentError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n < 0 => Err(invalid(
                field,
                format!("must be greater than or equal to 0, got {n}"),
            )),
            Some(n) if n > max => Err(invalid(
                field,
                format!("must be less than or equal to {max}, got {n}"),
            )),
            Some(n) => Ok(Some(n)),
            None => Err(invalid(field, "must be an integer")),
        },
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str, field: &str) -> Result<bool, DeploymentError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(field, "must be a boolean")),
    }
}

fn string_map(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<BTreeMap<String, String>, DeploymentError> {
    let Some(map) = opt_object(obj, key, field)? else {
        return Ok(BTreeMap::new());
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(invalid(format!("{field}.{k}"), "must be a string")),
        })
        .collect()
}

fn parse_time(s: &str, field: &str) -> Result<OffsetDateTime, DeploymentError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| invalid(field, format!("{s:?} is not an RFC 3339 time: {e}")))
}

/// A `maxSurge`/`maxUnavailable` value: an absolute count or a percentage of `replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntOrPercent {
    Int(i64),
    Percent(i64),
}

impl IntOrPercent {
    /// Kubernetes' `GetScaledValueFromIntOrPercent`.
    fn scaled(self, total: i64, round_up: bool) -> i64 {
        match self {
            Self::Int(n) => n,
            Self::Percent(p) => {
                let product = p * total;
                if round_up {
                    (product + 99) / 100
                } else {
                    product / 100
                }
            }
        }
    }

    fn parse(
        v: Option<&Value>,
        field: &str,
        is_unavailable: bool,
    ) -> Result<Self, DeploymentError> {
        let value = match v {
            None | Some(Value::Null) => return Ok(Self::Percent(25)),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) if (0..=I32_MAX).contains(&i) => Self::Int(i),
                Some(i) => {
                    return Err(invalid(
                        field,
                        format!("must be between 0 and {I32_MAX}, got {i}"),
                    ))
                }
                None => return Err(invalid(field, "must be an integer or a percentage")),
            },
            Some(Value::String(s)) => {
                let Some(digits) = s.strip_suffix('%') else {
                    return Err(invalid(
                        field,
                        format!("{s:?} must be an integer or a percentage such as \"25%\""),
                    ));
                };
                match digits.parse::<i64>() {
                    Ok(p) if (0..=I32_MAX).contains(&p) => Self::Percent(p),
                    _ => {
                        return Err(invalid(
                            field,
                            format!("{s:?} must be a non-negative percentage such as \"25%\""),
                        ))
                    }
                }
            }
            Some(_) => return Err(invalid(field, "must be an integer or a percentage")),
        };
        if is_unavailable && matches!(value, Self::Percent(p) if p > 100) {
            return Err(invalid(field, "must not be greater than 100%"));
        }
        Ok(value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Recreate,
    RollingUpdate {
        max_surge: IntOrPercent,
        max_unavailable: IntOrPercent,
    },
}

/// Kubernetes' `ResolveFenceposts`: surge rounds up, unavailability rounds down, and when
/// both come out 0 one pod may be unavailable, or the rollout could never move.
fn resolve_fenceposts(
    max_surge: IntOrPercent,
    max_unavailable: IntOrPercent,
    desired: i64,
) -> (i64, i64) {
    let surge = max_surge.scaled(desired, true);
    let unavailable = max_unavailable.scaled(desired, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    kind: String,
    status: String,
    last_update_time: Option<String>,
    last_transition_time: Option<String>,
    reason: String,
    message: String,
}

impl Condition {
    fn parse(v: &Value, field: &str) -> Result<Self, DeploymentError> {
        let obj = v
            .as_object()
            .ok_or_else(|| invalid(field, "must be an object"))?;
        let s = |key: &str| opt_str(obj, key, &format!("{field}.{key}"));
        Ok(Self {
            kind: s("type")?.unwrap_or_default(),
            status: s("status")?.unwrap_or_default(),
            last_update_time: s("lastUpdateTime")?,
            last_transition_time: s("lastTransitionTime")?,
            reason: s("reason")?.unwrap_or_default(),
            message: s("message")?.unwrap_or_default(),
        })
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), json!(self.kind));
        m.insert("status".into(), json!(self.status));
        m.insert("lastUpdateTime".into(), json!(self.last_update_time));
        m.insert(
            "lastTransitionTime".into(),
            json!(self.last_transition_time),
        );
        if !self.reason.is_empty() {
            m.insert("reason".into(), json!(self.reason));
        }
        if !self.message.is_empty() {
            m.insert("message".into(), json!(self.message));
        }
        Value::Object(m)
    }
}

/// A Deployment's status, typed so that comparing it with the stored one ignores field
/// order and the zero-valued fields Kubernetes omits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Status {
    observed_generation: i64,
    replicas: i64,
    updated_replicas: i64,
    ready_replicas: i64,
    available_replicas: i64,
    unavailable_replicas: i64,
    collision_count: Option<i64>,
    conditions: Vec<Condition>,
}

impl Status {
    fn parse(v: Option<&Value>) -> Result<Self, DeploymentError> {
        let obj = match v {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(invalid("status", "must be an object")),
        };
        let count = |key: &str| -> Result<i64, DeploymentError> {
            Ok(opt_int(obj, key, &format!("status.{key}"), I32_MAX)?.unwrap_or(0))
        };
        let conditions = match obj.get("conditions") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, c)| Condition::parse(c, &format!("status.conditions[{i}]")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("status.conditions", "must be an array")),
        };
        Ok(Self {
            observed_generation: opt_int(
                obj,
                "observedGeneration",
                "status.observedGeneration",
                i64::MAX,
            )?
            .unwrap_or(0),
            replicas: count("replicas")?,
            updated_replicas: count("updatedReplicas")?,
            ready_replicas: count("readyReplicas")?,
            available_replicas: count("availableReplicas")?,
            unavailable_replicas: count("unavailableReplicas")?,
            collision_count: opt_int(obj, "collisionCount", "status.collisionCount", I32_MAX)?,
            conditions,
        })
    }

    /// The status as Kubernetes serializes it: zero counts are omitted.
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (key, value) in [
            ("observedGeneration", self.observed_generation),
            ("replicas", self.replicas),
            ("updatedReplicas", self.updated_replicas),
            ("readyReplicas", self.ready_replicas),
            ("availableReplicas", self.available_replicas),
            ("unavailableReplicas", self.unavailable_replicas),
        ] {
            if value != 0 {
                m.insert(key.into(), json!(value));
            }
        }
        if !self.conditions.is_empty() {
            m.insert(
                "conditions".into(),
                Value::Array(self.conditions.iter().map(Condition::to_json).collect()),
            );
        }
        if let Some(c) = self.collision_count {
            m.insert("collisionCount".into(), json!(c));
        }
        Value::Object(m)
    }

    fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    fn remove_condition(&mut self, kind: &str) {
        self.conditions.retain(|c| c.kind != kind);
    }

    /// Kubernetes' `SetDeploymentCondition`: a condition with the same status and reason is
    /// kept as it is (timestamps and message included); a changed one moves to the end,
    /// keeping its transition time when only the reason changed.
    fn set_condition(&mut self, mut condition: Condition) {
        if let Some(current) = self.condition(&condition.kind) {
            if current.status == condition.status && current.reason == condition.reason {
                return;
            }
            if current.status == condition.status {
                condition.last_transition_time = current.last_transition_time.clone();
            }
        }
        self.remove_condition(&condition.kind);
        self.conditions.push(condition);
    }
}

struct Deployment {
    name: String,
    namespace: Option<String>,
    uid: String,
    generation: i64,
    deleting: bool,
    annotations: BTreeMap<String, String>,
    replicas: i64,
    selector: Value,
    template: Value,
    strategy: Strategy,
    revision_history_limit: Option<i64>,
    progress_deadline_seconds: Option<i64>,
    min_ready_seconds: i64,
    paused: bool,
    status: Status,
}

impl Deployment {
    fn parse(v: &Value) -> Result<Self, DeploymentError> {
        let root = v
            .as_object()
            .ok_or_else(|| invalid("deployment", "must be a JSON object"))?;
        let metadata = req_object(root, "metadata", "metadata")?;
        let spec = req_object(root, "spec", "spec")?;
        let selector = req_object(spec, "selector", "spec.selector")?;
        string_map(selector, "matchLabels", "spec.selector.matchLabels")?;
        let template = req_object(spec, "template", "spec.template")?;
        if let Some(meta) = opt_object(template, "metadata", "spec.template.metadata")? {
            string_map(meta, "labels", "spec.template.metadata.labels")?;
        }
        Ok(Self {
            name: req_str(metadata, "name", "metadata.name")?,
            namespace: opt_str(metadata, "namespace", "metadata.namespace")?,
            uid: req_str(metadata, "uid", "metadata.uid")?,
            generation: opt_int(metadata, "generation", "metadata.generation", i64::MAX)?
                .unwrap_or(0),
            deleting: metadata
                .get("deletionTimestamp")
                .is_some_and(|t| !t.is_null()),
            annotations: string_map(metadata, "annotations", "metadata.annotations")?,
            replicas: opt_int(spec, "replicas", "spec.replicas", I32_MAX)?.unwrap_or(1),
            selector: Value::Object(selector.clone()),
            template: Value::Object(template.clone()),
            strategy: Self::parse_strategy(spec)?,
            revision_history_limit: opt_int(
                spec,
                "revisionHistoryLimit",
                "spec.revisionHistoryLimit",
                I32_MAX,
            )?,
            progress_deadline_seconds: opt_int(
                spec,
                "progressDeadlineSeconds",
                "spec.progressDeadlineSeconds",
                I32_MAX,
            )?,
            min_ready_seconds: opt_int(spec, "minReadySeconds", "spec.minReadySeconds", I32_MAX)?
                .unwrap_or(0),
            paused: opt_bool(spec, "paused", "spec.paused")?,
            status: Status::parse(root.get("status"))?,
        })
    }

    fn parse_strategy(spec: &Map<String, Value>) -> Result<Strategy, DeploymentError> {
        let strategy = opt_object(spec, "strategy", "spec.strategy")?;
        let kind = match strategy {
            Some(s) => opt_str(s, "type", "spec.strategy.type")?,
            None => None,
        };
        match kind.as_deref().unwrap_or("RollingUpdate") {
            "Recreate" => Ok(Strategy::Recreate),
            "RollingUpdate" => {
                let rolling = match strategy {
                    Some(s) => opt_object(s, "rollingUpdate", "spec.strategy.rollingUpdate")?,
                    None => None,
                };
                Ok(Strategy::RollingUpdate {
                    max_surge: IntOrPercent::parse(
                        rolling.and_then(|r| r.get("maxSurge")),
                        "spec.strategy.rollingUpdate.maxSurge",
                        false,
                    )?,
                    max_unavailable: IntOrPercent::parse(
                        rolling.and_then(|r| r.get("maxUnavailable")),
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        true,
                    )?,
                })
            }
            other => Err(invalid(
                "spec.strategy.type",
                format!("unsupported value {other:?}: supported values are \"Recreate\", \"RollingUpdate\""),
            )),
        }
    }

    fn is_rolling(&self) -> bool {
        matches!(self.strategy, Strategy::RollingUpdate { .. })
    }

    /// Kubernetes' `MaxSurge`: 0 for Recreate.
    fn max_surge(&self) -> i64 {
        match self.strategy {
            Strategy::RollingUpdate {
                max_surge,
                max_unavailable,
            } => resolve_fenceposts(max_surge, max_unavailable, self.replicas).0,
            Strategy::Recreate => 0,
        }
    }

    /// Kubernetes' `MaxUnavailable`: 0 for Recreate or no replicas, never above replicas.
    fn max_unavailable(&self) -> i64 {
        match self.strategy {
            Strategy::RollingUpdate {
                max_surge,
                max_unavailable,
            } if self.replicas > 0 => resolve_fenceposts(max_surge, max_unavailable, self.replicas)
                .1
                .min(self.replicas),
            _ => 0,
        }
    }

    /// A deadline of `i32::MAX` is how Kubernetes spells "never".
    fn has_progress_deadline(&self) -> bool {
        matches!(self.progress_deadline_seconds, Some(s) if s != I32_MAX)
    }

    /// Kubernetes' `DeploymentComplete`.
    fn complete(&self, status: &Status) -> bool {
        status.updated_replicas == self.replicas
            && status.replicas == self.replicas
            && status.available_replicas == self.replicas
            && status.observed_generation >= self.generation
    }
}

fn selects_everything(selector: &Value) -> bool {
    selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
        && selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
}

#[derive(Debug, Clone, Copy, Default)]
struct ReplicaSetStatus {
    replicas: i64,
    ready: i64,
    available: i64,
    observed_generation: i64,
}

/// A ReplicaSet as the pass sees it, with the changes decided so far.
struct ReplicaSet {
    raw: Value,
    name: String,
    created: Option<OffsetDateTime>,
    generation: i64,
    deleting: bool,
    replicas: i64,
    min_ready_seconds: i64,
    annotations: BTreeMap<String, String>,
    status: ReplicaSetStatus,
    /// `ReplicaFailure` conditions, already in the Deployment's condition form.
    failures: Vec<Condition>,
    template: Value,
    /// Changed by this pass and must be written.
    dirty: bool,
    /// Created by this pass.
    fresh: bool,
}

impl ReplicaSet {
    fn parse(v: &Value, index: usize) -> Result<Self, DeploymentError> {
        let field = |path: &str| format!("replicaSets[{index}].{path}");
        let root = v
            .as_object()
            .ok_or_else(|| invalid(format!("replicaSets[{index}]"), "must be a JSON object"))?;
        let metadata = req_object(root, "metadata", &field("metadata"))?;
        let spec = req_object(root, "spec", &field("spec"))?;
        let template = req_object(spec, "template", &field("spec.template"))?;
        let created = match opt_str(
            metadata,
            "creationTimestamp",
            &field("metadata.creationTimestamp"),
        )? {
            Some(t) => Some(parse_time(&t, &field("metadata.creationTimestamp"))?),
            None => None,
        };
        let status = opt_object(root, "status", &field("status"))?;
        let count = |key: &str| -> Result<i64, DeploymentError> {
            match status {
                Some(s) => {
                    Ok(opt_int(s, key, &field(&format!("status.{key}")), i64::MAX)?.unwrap_or(0))
                }
                None => Ok(0),
            }
        };
        let mut failures = Vec::new();
        if let Some(conditions) = status.and_then(|s| s.get("conditions")) {
            let items = conditions
                .as_array()
                .ok_or_else(|| invalid(field("status.conditions"), "must be an array"))?;
            for (i, c) in items.iter().enumerate() {
                let c = Condition::parse(c, &field(&format!("status.conditions[{i}]")))?;
                if c.kind == REPLICA_FAILURE {
                    failures.push(Condition {
                        last_update_time: c.last_transition_time.clone(),
                        ..c
                    });
                }
            }
        }
        Ok(Self {
            raw: v.clone(),
            name: req_str(metadata, "name", &field("metadata.name"))?,
            created,
            generation: opt_int(
                metadata,
                "generation",
                &field("metadata.generation"),
                i64::MAX,
            )?
            .unwrap_or(0),
            deleting: metadata
                .get("deletionTimestamp")
                .is_some_and(|t| !t.is_null()),
            replicas: opt_int(spec, "replicas", &field("spec.replicas"), I32_MAX)?.unwrap_or(1),
            min_ready_seconds: opt_int(
                spec,
                "minReadySeconds",
                &field("spec.minReadySeconds"),
                I32_MAX,
            )?
            .unwrap_or(0),
            annotations: string_map(metadata, "annotations", &field("metadata.annotations"))?,
            status: ReplicaSetStatus {
                replicas: count("replicas")?.min(I32_MAX),
                ready: count("readyReplicas")?.min(I32_MAX),
                available: count("availableReplicas")?.min(I32_MAX),
                observed_generation: count("observedGeneration")?,
            },
            failures,
            template: Value::Object(template.clone()),
            dirty: false,
            fresh: false,
        })
    }

    /// Creation order, oldest first, ties by name (`ReplicaSetsByCreationTimestamp`).
    fn age_key(&self) -> (Option<OffsetDateTime>, &str) {
        (self.created, &self.name)
    }

    /// Kubernetes' `Revision`: missing is 0, unparsable is an error the callers skip.
    fn revision(&self) -> Option<i64> {
        match self.annotations.get(REVISION_ANNOTATION) {
            None => Some(0),
            Some(v) => v.parse().ok(),
        }
    }

    fn annotation_int(&self, key: &str) -> Option<i64> {
        self.annotations.get(key).and_then(|v| v.parse().ok())
    }

    /// The object to send: the stored one (or the one built for creation) with this pass's
    /// replicas, annotations and `minReadySeconds`.
    fn to_object(&self) -> Value {
        let mut raw = self.raw.clone();
        if let Some(spec) = object_at(&mut raw, "spec") {
            spec.insert("replicas".into(), json!(self.replicas));
            let stored = spec
                .get("minReadySeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if stored != self.min_ready_seconds {
                if self.min_ready_seconds == 0 {
                    spec.remove("minReadySeconds");
                } else {
                    spec.insert("minReadySeconds".into(), json!(self.min_ready_seconds));
                }
            }
        }
        if let Some(metadata) = object_at(&mut raw, "metadata") {
            metadata.insert("annotations".into(), string_map_json(&self.annotations));
        }
        raw
    }
}

fn string_map_json(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The object under `key`, made one if it is absent or not an object.
fn object_at<'v>(v: &'v mut Value, key: &str) -> Option<&'v mut Map<String, Value>> {
    let slot = v
        .as_object_mut()?
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

fn replicas_annotations_need_update(
    annotations: &BTreeMap<String, String>,
    desired: i64,
    max: i64,
) -> bool {
    annotations.get(DESIRED_REPLICAS_ANNOTATION) != Some(&desired.to_string())
        || annotations.get(MAX_REPLICAS_ANNOTATION) != Some(&max.to_string())
}

fn set_replicas_annotations(
    annotations: &mut BTreeMap<String, String>,
    desired: i64,
    max: i64,
) -> bool {
    let needed = replicas_annotations_need_update(annotations, desired, max);
    annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), desired.to_string());
    annotations.insert(MAX_REPLICAS_ANNOTATION.into(), max.to_string());
    needed
}

/// Kubernetes' `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, raises
/// the revision to `new_revision` (remembering the replaced one in `revision-history`, which
/// is how a rollback shows up) and, for a ReplicaSet about to be created, sizes the replica
/// annotations. Returns whether anything changed.
fn set_new_replica_set_annotations(
    d: &Deployment,
    deployment_annotations: &BTreeMap<String, String>,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    for (k, v) in deployment_annotations {
        if ANNOTATIONS_TO_SKIP.contains(&k.as_str()) || rs.annotations.get(k) == Some(v) {
            continue;
        }
        rs.annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old_revision = rs.annotations.get(REVISION_ANNOTATION).cloned();
    let old_revision_number = match old_revision.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(n) => n,
            // Kubernetes gives up on a ReplicaSet whose revision is not a number.
            Err(_) => return false,
        },
    };
    if old_revision_number < new_revision {
        rs.annotations
            .insert(REVISION_ANNOTATION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old_revision {
            append_revision_history(&mut rs.annotations, &old);
        }
    }
    if !exists {
        let max = d.replicas + d.max_surge();
        if set_replicas_annotations(&mut rs.annotations, d.replicas, max) {
            changed = true;
        }
    }
    changed
}

/// Appends `old` to `revision-history`, dropping the oldest entries to stay within
/// [`MAX_REVISION_HISTORY_CHARS`].
fn append_revision_history(annotations: &mut BTreeMap<String, String>, old: &str) {
    let history = annotations
        .get(REVISION_HISTORY_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let entries: Vec<&str> = history.split(',').collect();
    if entries.first().is_none_or(|e| e.is_empty()) {
        annotations.insert(REVISION_HISTORY_ANNOTATION.into(), old.to_string());
        return;
    }
    let mut total = history.len() as i64 + old.len() as i64 + 1;
    let mut start = 0;
    while total > MAX_REVISION_HISTORY_CHARS && start < entries.len() {
        total -= entries[start].len() as i64 + 1;
        start += 1;
    }
    if total <= MAX_REVISION_HISTORY_CHARS {
        let mut kept: Vec<&str> = entries[start..].to_vec();
        kept.push(old);
        annotations.insert(REVISION_HISTORY_ANNOTATION.into(), kept.join(","));
    }
}

// ---------------------------------------------------------------------------------------
// One sync pass.

struct Pass<'d> {
    d: &'d Deployment,
    now: OffsetDateTime,
    stamp: String,
    rss: Vec<ReplicaSet>,
    /// The Deployment's annotations as this pass leaves them.
    annotations: BTreeMap<String, String>,
    /// The Deployment's status as upstream holds it in memory during the pass: the stored
    /// one plus the conditions earlier steps set.
    status: Status,
    /// The status the pass computed at its end, if it got that far.
    computed_status: Option<Status>,
    deletes: Vec<String>,
    events: Vec<(String, String, String)>,
    requeue_after: Option<Duration>,
}

impl<'d> Pass<'d> {
    fn new(d: &'d Deployment, rss: Vec<ReplicaSet>, now: OffsetDateTime) -> Self {
        Self {
            d,
            now,
            stamp: format_time(now),
            rss,
            annotations: d.annotations.clone(),
            status: d.status.clone(),
            computed_status: None,
            deletes: Vec::new(),
            events: Vec::new(),
            requeue_after: None,
        }
    }

    fn event(&mut self, kind: &str, reason: &str, message: String) {
        self.events.push((kind.into(), reason.into(), message));
    }

    fn condition(&self, kind: &str, status: &str, reason: &str, message: String) -> Condition {
        Condition {
            kind: kind.into(),
            status: status.into(),
            last_update_time: Some(self.stamp.clone()),
            last_transition_time: Some(self.stamp.clone()),
            reason: reason.into(),
            message,
        }
    }

    /// `syncDeployment`: the order of the checks is the priority Kubernetes gives them.
    fn run(&mut self) -> Result<(), DeploymentError> {
        let d = self.d;
        if selects_everything(&d.selector) {
            self.event(
                WARNING,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            if self.status.observed_generation < d.generation {
                let mut status = self.status.clone();
                status.observed_generation = d.generation;
                self.computed_status = Some(status);
            }
            return Ok(());
        }
        if d.deleting {
            let new = self.new_replica_set(false);
            self.sync_deployment_status(new);
            return Ok(());
        }
        self.check_paused_conditions();
        if d.paused {
            self.sync();
            return Ok(());
        }
        // `rollbackTo` only exists in extensions/v1beta1; apps/v1 clients (kubectl undo) roll
        // back by patching the template, which reaches this pass as an ordinary rollout.
        self.new_replica_set(false);
        if self.is_scaling_event() {
            self.sync();
            return Ok(());
        }
        match d.strategy {
            Strategy::Recreate => self.rollout_recreate(),
            Strategy::RollingUpdate { .. } => self.rollout_rolling(),
        }
    }

    /// Pausing and resuming set an Unknown Progressing condition, so the time a Deployment
    /// spent paused never counts against its progress deadline.
    fn check_paused_conditions(&mut self) {
        let d = self.d;
        if !d.has_progress_deadline() {
            return;
        }
        let reason = self.status.condition(PROGRESSING).map(|c| c.reason.clone());
        if reason.as_deref() == Some(REASON_TIMED_OUT) {
            return;
        }
        let paused_condition = reason.as_deref() == Some(REASON_PAUSED);
        if d.paused && !paused_condition {
            let c = self.condition(
                PROGRESSING,
                UNKNOWN,
                REASON_PAUSED,
                "Deployment is paused".into(),
            );
            self.status.set_condition(c);
        } else if !d.paused && paused_condition {
            let c = self.condition(
                PROGRESSING,
                UNKNOWN,
                REASON_RESUMED,
                "Deployment is resumed".into(),
            );
            self.status.set_condition(c);
        }
    }

    /// Indices sorted oldest first.
    fn by_age(&self, mut indices: Vec<usize>) -> Vec<usize> {
        indices.sort_by(|&a, &b| self.rss[a].age_key().cmp(&self.rss[b].age_key()));
        indices
    }

    fn old_indices(&self, new: Option<usize>) -> Vec<usize> {
        (0..self.rss.len()).filter(|&i| Some(i) != new).collect()
    }

    fn active(&self, indices: &[usize]) -> Vec<usize> {
        indices
            .iter()
            .copied()
            .filter(|&i| self.rss[i].replicas > 0)
            .collect()
    }

    fn spec_total(&self, indices: &[usize]) -> i64 {
        indices.iter().map(|&i| self.rss[i].replicas).sum()
    }

    /// `getNewReplicaSet`: finds the ReplicaSet running the current template (the oldest if
    /// several do), brings its revision above every old one, and mirrors that revision on the
    /// Deployment; with `create`, makes the ReplicaSet when there is none. Returns `None`
    /// when there is none, or when its name is taken by a ReplicaSet with another template;
    /// then `collisionCount` is bumped so the next pass hashes to a free name.
    fn new_replica_set(&mut self, create: bool) -> Option<usize> {
        let d = self.d;
        let existing = self
            .by_age((0..self.rss.len()).collect())
            .into_iter()
            .find(|&i| equal_ignoring_hash(&d.template, &self.rss[i].template));
        let max_old_revision = self
            .old_indices(existing)
            .iter()
            .filter_map(|&i| self.rss[i].revision())
            .max()
            .unwrap_or(0)
            .max(0);
        let new_revision = max_old_revision.saturating_add(1);

        if let Some(i) = existing {
            let rs = &mut self.rss[i];
            let annotations_changed =
                set_new_replica_set_annotations(d, &self.annotations, rs, new_revision, true);
            if annotations_changed || rs.min_ready_seconds != d.min_ready_seconds {
                rs.min_ready_seconds = d.min_ready_seconds;
                rs.dirty = true;
            }
            let revision = rs
                .annotations
                .get(REVISION_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            let name = rs.name.clone();
            self.set_deployment_revision(&revision);
            if d.has_progress_deadline() && self.status.condition(PROGRESSING).is_none() {
                let c = self.condition(
                    PROGRESSING,
                    TRUE,
                    REASON_FOUND_NEW_RS,
                    format!("Found new replica set \"{name}\""),
                );
                self.status.set_condition(c);
            }
            return Some(i);
        }
        if !create {
            return None;
        }

        let hash = template_hash(&d.template, self.status.collision_count);
        let name = format!("{}-{}", d.name, hash);
        if self.rss.iter().any(|rs| rs.name == name) {
            self.status.collision_count = Some(next_collision_count(self.status.collision_count));
            return None;
        }
        let total = self.spec_total(&self.old_indices(None));
        let mut rs = self.build_replica_set(name.clone(), &hash);
        let replicas = self.new_rs_new_replicas(total, 0);
        rs.replicas = replicas;
        set_new_replica_set_annotations(d, &self.annotations, &mut rs, new_revision, false);
        self.rss.push(rs);
        let index = self.rss.len() - 1;
        if replicas > 0 {
            self.event(
                NORMAL,
                SCALING_REPLICA_SET,
                format!("Scaled up replica set {name} to {replicas}"),
            );
        }
        self.set_deployment_revision(&new_revision.to_string());
        if d.has_progress_deadline() {
            let c = self.condition(
                PROGRESSING,
                TRUE,
                REASON_NEW_RS_CREATED,
                format!("Created new replica set \"{name}\""),
            );
            self.status.set_condition(c);
        }
        Some(index)
    }

    fn set_deployment_revision(&mut self, revision: &str) {
        let current = self
            .annotations
            .get(REVISION_ANNOTATION)
            .map(String::as_str)
            .unwrap_or("");
        if current != revision {
            self.annotations
                .insert(REVISION_ANNOTATION.into(), revision.to_string());
        }
    }

    /// The ReplicaSet object for the current template: the template verbatim plus the hash
    /// label, the selector plus the hash, and a controller reference to the Deployment.
    fn build_replica_set(&self, name: String, hash: &str) -> ReplicaSet {
        let d = self.d;
        let mut template = d.template.clone();
        let mut labels = d
            .template
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        labels.insert(POD_TEMPLATE_HASH_LABEL.into(), json!(hash));
        if let Some(metadata) = object_at(&mut template, "metadata") {
            metadata.insert("labels".into(), Value::Object(labels.clone()));
        }
        let mut selector = d.selector.clone();
        if let Some(match_labels) = object_at(&mut selector, "matchLabels") {
            match_labels.insert(POD_TEMPLATE_HASH_LABEL.into(), json!(hash));
        }
        let mut metadata = Map::new();
        metadata.insert("name".into(), json!(name));
        if let Some(ns) = &d.namespace {
            metadata.insert("namespace".into(), json!(ns));
        }
        metadata.insert("labels".into(), Value::Object(labels));
        metadata.insert(
            "ownerReferences".into(),
            json!([{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": d.name,
                "uid": d.uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }]),
        );
        let mut spec = Map::new();
        spec.insert("replicas".into(), json!(0));
        if d.min_ready_seconds != 0 {
            spec.insert("minReadySeconds".into(), json!(d.min_ready_seconds));
        }
        spec.insert("selector".into(), selector);
        spec.insert("template".into(), template.clone());
        ReplicaSet {
            raw: json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": metadata,
                "spec": spec,
            }),
            name,
            created: Some(self.now),
            generation: 0,
            deleting: false,
            replicas: 0,
            min_ready_seconds: d.min_ready_seconds,
            annotations: BTreeMap::new(),
            status: ReplicaSetStatus::default(),
            failures: Vec::new(),
            template,
            dirty: false,
            fresh: true,
        }
    }

    /// `NewRSNewReplicas`: how far the new ReplicaSet may grow now, given every ReplicaSet's
    /// `spec.replicas` total.
    fn new_rs_new_replicas(&self, total: i64, new_replicas: i64) -> i64 {
        let d = self.d;
        match d.strategy {
            Strategy::RollingUpdate { max_surge, .. } => {
                let max_total = d.replicas + max_surge.scaled(d.replicas, true);
                if total >= max_total {
                    return new_replicas;
                }
                let scale_up = (max_total - total).min(d.replicas - new_replicas);
                new_replicas + scale_up
            }
            Strategy::Recreate => d.replicas,
        }
    }

    /// `scaleReplicaSet`: sets the size and the replica annotations; only a size change is
    /// an event.
    fn scale_replica_set(&mut self, i: usize, new_scale: i64, operation: &str) -> bool {
        let d = self.d;
        let max = d.replicas + d.max_surge();
        let rs = &mut self.rss[i];
        let size_changes = rs.replicas != new_scale;
        if !size_changes && !replicas_annotations_need_update(&rs.annotations, d.replicas, max) {
            return false;
        }
        let old = rs.replicas;
        rs.replicas = new_scale;
        set_replicas_annotations(&mut rs.annotations, d.replicas, max);
        rs.dirty = true;
        if !size_changes {
            return false;
        }
        let message = format!(
            "Scaled {operation} replica set {} to {new_scale} from {old}",
            rs.name
        );
        self.event(NORMAL, SCALING_REPLICA_SET, message);
        true
    }

    /// `scaleReplicaSetAndRecordEvent`.
    fn scale_and_record(&mut self, i: usize, new_scale: i64) -> bool {
        let current = self.rss[i].replicas;
        if current == new_scale {
            return false;
        }
        let operation = if current < new_scale { "up" } else { "down" };
        self.scale_replica_set(i, new_scale, operation)
    }

    /// A scaling event is a change of `spec.replicas` alone: some active ReplicaSet was
    /// sized for a different replica count.
    fn is_scaling_event(&self) -> bool {
        let d = self.d;
        let all: Vec<usize> = (0..self.rss.len()).collect();
        self.active(&all).iter().any(|&i| {
            self.rss[i]
                .annotation_int(DESIRED_REPLICAS_ANNOTATION)
                .is_some_and(|desired| desired != d.replicas)
        })
    }

    /// `sync`: scaling and paused Deployments. No rollout progress is made, only sizes.
    fn sync(&mut self) {
        let new = self.new_replica_set(false);
        let old = self.old_indices(new);
        self.scale(new, &old);
        if self.d.paused {
            self.cleanup(&old);
        }
        self.sync_deployment_status(new);
    }

    /// `scale`: a lone active ReplicaSet takes the whole count; otherwise, in a rolling
    /// Deployment, the change is spread over the active ReplicaSets in proportion to their
    /// size, so scaling in mid-rollout neither hastens nor reverses the rollout.
    fn scale(&mut self, new: Option<usize>, old: &[usize]) {
        let d = self.d;
        if let Some(i) = self.active_or_latest(new, old) {
            if self.rss[i].replicas != d.replicas {
                self.scale_and_record(i, d.replicas);
            }
            return;
        }
        if self.is_saturated(new) {
            for i in self.active(old) {
                self.scale_and_record(i, 0);
            }
            return;
        }
        if !d.is_rolling() {
            return;
        }
        let mut all: Vec<usize> = old.to_vec();
        all.extend(new);
        let mut all = self.active(&all);
        let allowed = if d.replicas > 0 {
            d.replicas + d.max_surge()
        } else {
            0
        };
        let to_add = allowed - self.spec_total(&all);
        let operation = match to_add.cmp(&0) {
            std::cmp::Ordering::Greater => {
                // Largest first; among equals the newest gets the extra replicas.
                all.sort_by(|&a, &b| {
                    let (ra, rb) = (&self.rss[a], &self.rss[b]);
                    rb.replicas
                        .cmp(&ra.replicas)
                        .then_with(|| rb.age_key().cmp(&ra.age_key()))
                });
                "up"
            }
            std::cmp::Ordering::Less => {
                // Largest first; among equals the oldest loses replicas first.
                all.sort_by(|&a, &b| {
                    let (ra, rb) = (&self.rss[a], &self.rss[b]);
                    rb.replicas
                        .cmp(&ra.replicas)
                        .then_with(|| ra.age_key().cmp(&rb.age_key()))
                });
                "down"
            }
            std::cmp::Ordering::Equal => "",
        };
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for &i in &all {
            if to_add == 0 {
                sizes.push(self.rss[i].replicas);
            } else {
                let proportion = self.proportion(i, to_add, added);
                sizes.push(self.rss[i].replicas + proportion);
                added += proportion;
            }
        }
        for (position, (&i, mut size)) in all.iter().zip(sizes).enumerate() {
            if position == 0 && to_add != 0 {
                // Rounding leftovers go to the largest ReplicaSet.
                size = (size + to_add - added).max(0);
            }
            self.scale_replica_set(i, size, operation);
        }
    }

    /// `FindActiveOrLatest`: the only active ReplicaSet, or the newest when none is active.
    fn active_or_latest(&self, new: Option<usize>, old: &[usize]) -> Option<usize> {
        if new.is_none() && old.is_empty() {
            return None;
        }
        let mut newest_first = self.by_age(old.to_vec());
        newest_first.reverse();
        let mut candidates = newest_first.clone();
        candidates.extend(new);
        let active = self.active(&candidates);
        match active.as_slice() {
            [] => new.or_else(|| newest_first.first().copied()),
            [only] => Some(*only),
            _ => None,
        }
    }

    /// `IsSaturated`: the new ReplicaSet is sized for and fully serving the current count.
    fn is_saturated(&self, new: Option<usize>) -> bool {
        let d = self.d;
        new.is_some_and(|i| {
            let rs = &self.rss[i];
            rs.annotation_int(DESIRED_REPLICAS_ANNOTATION) == Some(d.replicas)
                && rs.replicas == d.replicas
                && rs.status.available == d.replicas
        })
    }

    /// `GetProportion`: this ReplicaSet's share of `to_add`, never exceeding what is left.
    fn proportion(&self, i: usize, to_add: i64, added: i64) -> i64 {
        let rs = &self.rss[i];
        if rs.replicas == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.replica_set_fraction(i);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    fn replica_set_fraction(&self, i: usize) -> i64 {
        let d = self.d;
        let rs = &self.rss[i];
        if d.replicas == 0 {
            return -rs.replicas;
        }
        let deployment_replicas = d.replicas + d.max_surge();
        let annotated = rs
            .annotation_int(MAX_REPLICAS_ANNOTATION)
            .unwrap_or(d.status.replicas);
        if annotated <= 0 {
            // Nothing to scale a share from; the leftover step sizes the largest ReplicaSet.
            return 0;
        }
        let new_size = rs.replicas as f64 * deployment_replicas as f64 / annotated as f64;
        new_size.round() as i64 - rs.replicas
    }

    /// `cleanupDeployment`: deletes the oldest revisions beyond `revisionHistoryLimit`, but
    /// only ReplicaSets that are scaled to zero, have no pods left, and whose controller has
    /// seen that (observedGeneration), so no pod is orphaned.
    fn cleanup(&mut self, old: &[usize]) {
        let Some(limit) = self.d.revision_history_limit.filter(|&l| l != I32_MAX) else {
            return;
        };
        let mut cleanable: Vec<usize> = old
            .iter()
            .copied()
            .filter(|&i| !self.rss[i].deleting)
            .collect();
        let excess = cleanable.len() as i64 - limit;
        if excess <= 0 {
            return;
        }
        cleanable.sort_by_key(|&i| {
            let rs = &self.rss[i];
            (rs.revision().unwrap_or(0), rs.created, rs.name.clone())
        });
        for &i in cleanable.iter().take(excess as usize) {
            let rs = &self.rss[i];
            if rs.status.replicas != 0
                || rs.replicas != 0
                || rs.generation > rs.status.observed_generation
                || rs.dirty
                || rs.fresh
            {
                continue;
            }
            self.deletes.push(rs.name.clone());
        }
    }

    /// `rolloutRolling`: one step of the rolling update. Scaling up and scaling down are
    /// separate passes, so each decision sees the pods the previous one produced.
    fn rollout_rolling(&mut self) -> Result<(), DeploymentError> {
        let Some(new) = self.new_replica_set(true) else {
            return Ok(());
        };
        let old = self.old_indices(Some(new));
        let all: Vec<usize> = (0..self.rss.len()).collect();
        if self.reconcile_new_replica_set(&all, new) {
            return self.sync_rollout_status(Some(new));
        }
        let active_old = self.active(&old);
        if self.reconcile_old_replica_sets(&all, active_old, new) {
            return self.sync_rollout_status(Some(new));
        }
        if self.d.complete(&self.status) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(Some(new))
    }

    fn reconcile_new_replica_set(&mut self, all: &[usize], new: usize) -> bool {
        let d = self.d;
        let current = self.rss[new].replicas;
        if current == d.replicas {
            return false;
        }
        if current > d.replicas {
            return self.scale_and_record(new, d.replicas);
        }
        let target = self.new_rs_new_replicas(self.spec_total(all), current);
        self.scale_and_record(new, target)
    }

    /// `reconcileOldReplicaSets`: scale old ReplicaSets down as far as availability allows,
    /// counting the new ReplicaSet's unavailable pods against the budget so a broken new
    /// template cannot drain the old, working pods.
    fn reconcile_old_replica_sets(&mut self, all: &[usize], old: Vec<usize>, new: usize) -> bool {
        let d = self.d;
        if self.spec_total(&old) == 0 {
            return false;
        }
        let min_available = d.replicas - d.max_unavailable();
        let new_unavailable = self.rss[new].replicas - self.rss[new].status.available;
        let max_scaled_down = self.spec_total(all) - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let old = self.by_age(old);
        let Some(cleaned) = self.cleanup_unhealthy_replicas(&old, max_scaled_down) else {
            return false;
        };
        let mut remaining = old.clone();
        remaining.push(new);
        let scaled = self.scale_down_old_replica_sets_for_rolling_update(&remaining, &old);
        cleaned + scaled > 0
    }

    /// Removes old pods that are not available first: they serve nothing, and left alone
    /// they could block the rollout until its deadline.
    fn cleanup_unhealthy_replicas(&mut self, old: &[usize], max_cleanup: i64) -> Option<i64> {
        let mut total = 0;
        for &i in old {
            if total >= max_cleanup {
                break;
            }
            let rs = &self.rss[i];
            if rs.replicas == 0 || rs.replicas == rs.status.available {
                continue;
            }
            let count = (max_cleanup - total).min(rs.replicas - rs.status.available);
            let target = rs.replicas - count;
            if target > rs.replicas {
                // The status reports more available pods than the spec asks for: it is
                // stale, and Kubernetes waits for it rather than act on it.
                return None;
            }
            self.scale_and_record(i, target);
            total += count;
        }
        Some(total)
    }

    fn scale_down_old_replica_sets_for_rolling_update(
        &mut self,
        all: &[usize],
        old: &[usize],
    ) -> i64 {
        let d = self.d;
        let min_available = d.replicas - d.max_unavailable();
        let available: i64 = all.iter().map(|&i| self.rss[i].status.available).sum();
        if available <= min_available {
            return 0;
        }
        let to_scale_down = available - min_available;
        let mut total = 0;
        for &i in old {
            if total >= to_scale_down {
                break;
            }
            let current = self.rss[i].replicas;
            if current == 0 {
                continue;
            }
            let count = current.min(to_scale_down - total);
            self.scale_and_record(i, current - count);
            total += count;
        }
        total
    }

    /// `rolloutRecreate`: every old pod is gone before the new ReplicaSet gets any.
    fn rollout_recreate(&mut self) -> Result<(), DeploymentError> {
        let new = self.new_replica_set(false);
        let old = self.old_indices(new);
        let mut scaled_down = false;
        for i in self.active(&old) {
            scaled_down |= self.scale_and_record(i, 0);
        }
        if scaled_down {
            return self.sync_rollout_status(new);
        }
        let old_pods: i64 = old.iter().map(|&i| self.rss[i].status.replicas).sum();
        if old_pods > 0 {
            return self.sync_rollout_status(new);
        }
        let new = match new {
            Some(i) => i,
            None => match self.new_replica_set(true) {
                Some(i) => i,
                None => return Ok(()),
            },
        };
        let old = self.old_indices(Some(new));
        self.scale_and_record(new, self.d.replicas);
        if self.d.complete(&self.status) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(Some(new))
    }

    /// `calculateStatus`: counts from every ReplicaSet, plus the Available condition.
    fn calculate_status(&self, new: Option<usize>) -> Status {
        let d = self.d;
        let sum = |f: fn(&ReplicaSet) -> i64| self.rss.iter().map(f).sum::<i64>();
        let available = sum(|rs| rs.status.available);
        let total = sum(|rs| rs.replicas);
        let mut status = Status {
            observed_generation: d.generation,
            replicas: sum(|rs| rs.status.replicas),
            updated_replicas: new.map_or(0, |i| self.rss[i].status.replicas),
            ready_replicas: sum(|rs| rs.status.ready),
            available_replicas: available,
            unavailable_replicas: (total - available).max(0),
            collision_count: self.status.collision_count,
            conditions: self.status.conditions.clone(),
        };
        let condition = if available >= d.replicas - d.max_unavailable() {
            self.condition(
                AVAILABLE,
                TRUE,
                REASON_MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
            )
        } else {
            self.condition(
                AVAILABLE,
                FALSE,
                REASON_MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
            )
        };
        status.set_condition(condition);
        status
    }

    /// `syncDeploymentStatus`: counts only, no progress estimate.
    fn sync_deployment_status(&mut self, new: Option<usize>) {
        self.computed_status = Some(self.calculate_status(new));
    }

    /// `syncRolloutStatus`: counts plus the Progressing condition, which records the last
    /// time the rollout moved and turns False once it has not moved for
    /// `progressDeadlineSeconds`.
    fn sync_rollout_status(&mut self, new: Option<usize>) -> Result<(), DeploymentError> {
        let d = self.d;
        let mut status = self.calculate_status(new);
        if !d.has_progress_deadline() {
            status.remove_condition(PROGRESSING);
        }
        let current = self.status.condition(PROGRESSING).cloned();
        let already_complete = status.replicas == status.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason == REASON_NEW_RS_AVAILABLE);
        if d.has_progress_deadline() && !already_complete {
            let subject = match new {
                Some(i) => format!("ReplicaSet \"{}\"", self.rss[i].name),
                None => format!("Deployment \"{}\"", d.name),
            };
            if d.complete(&status) {
                let c = self.condition(
                    PROGRESSING,
                    TRUE,
                    REASON_NEW_RS_AVAILABLE,
                    format!("{subject} has successfully progressed."),
                );
                status.set_condition(c);
            } else if progressed(&self.status, &status) {
                let mut c = self.condition(
                    PROGRESSING,
                    TRUE,
                    REASON_RS_UPDATED,
                    format!("{subject} is progressing."),
                );
                // Progress refreshes lastUpdateTime even when the reason is unchanged, which
                // SetDeploymentCondition alone would not do.
                if let Some(current) = &current {
                    if current.status == TRUE {
                        c.last_transition_time = current.last_transition_time.clone();
                    }
                    status.remove_condition(PROGRESSING);
                }
                status.set_condition(c);
            } else if self.timed_out(&status)? {
                let c = self.condition(
                    PROGRESSING,
                    FALSE,
                    REASON_TIMED_OUT,
                    format!("{subject} has timed out progressing."),
                );
                status.set_condition(c);
            }
        }

        let failure = new
            .and_then(|i| self.rss[i].failures.first())
            .or_else(|| self.rss.iter().find_map(|rs| rs.failures.first()))
            .cloned();
        match failure {
            Some(f) => status.set_condition(f),
            None => status.remove_condition(REPLICA_FAILURE),
        }

        self.requeue_after = self.progress_check_delay(&status)?;
        self.computed_status = Some(status);
        Ok(())
    }

    /// `DeploymentTimedOut`.
    fn timed_out(&self, status: &Status) -> Result<bool, DeploymentError> {
        let d = self.d;
        let Some(seconds) = d
            .progress_deadline_seconds
            .filter(|_| d.has_progress_deadline())
        else {
            return Ok(false);
        };
        let Some(condition) = status.condition(PROGRESSING) else {
            return Ok(false);
        };
        match condition.reason.as_str() {
            REASON_NEW_RS_AVAILABLE => return Ok(false),
            REASON_TIMED_OUT => return Ok(true),
            _ => {}
        }
        Ok(self
            .deadline(status, condition, seconds)?
            .is_some_and(|deadline| deadline < self.now))
    }

    /// When the condition's progress window closes; `None` when that is beyond the
    /// representable future. A missing `lastUpdateTime` is Go's zero time, long past.
    fn deadline(
        &self,
        status: &Status,
        condition: &Condition,
        seconds: i64,
    ) -> Result<Option<OffsetDateTime>, DeploymentError> {
        let Some(from) = &condition.last_update_time else {
            return Ok(Some(OffsetDateTime::new_utc(
                time::Date::MIN,
                time::Time::MIDNIGHT,
            )));
        };
        let index = status
            .conditions
            .iter()
            .position(|c| c.kind == PROGRESSING)
            .unwrap_or(0);
        let from = parse_time(from, &format!("status.conditions[{index}].lastUpdateTime"))?;
        Ok(from.checked_add(time::Duration::seconds(seconds)))
    }

    /// `requeueStuckDeployment`: when the rollout is still under way, the moment its deadline
    /// passes, plus a second of slack (as upstream) so the check lands after it. Finished,
    /// failed and paused rollouts have nothing to wait for.
    fn progress_check_delay(&self, status: &Status) -> Result<Option<Duration>, DeploymentError> {
        let d = self.d;
        let Some(seconds) = d
            .progress_deadline_seconds
            .filter(|_| d.has_progress_deadline())
        else {
            return Ok(None);
        };
        let Some(condition) = status.condition(PROGRESSING) else {
            return Ok(None);
        };
        if d.complete(status)
            || matches!(
                condition.reason.as_str(),
                REASON_TIMED_OUT | REASON_NEW_RS_AVAILABLE | REASON_PAUSED
            )
        {
            return Ok(None);
        }
        let Some(deadline) = self.deadline(status, condition, seconds)? else {
            return Ok(None);
        };
        let remaining = Duration::try_from(deadline - self.now).unwrap_or(Duration::ZERO);
        Ok(Some(remaining + Duration::from_secs(1)))
    }

    fn into_plan(self) -> Plan {
        let d = self.d;
        let create = self
            .rss
            .iter()
            .find(|rs| rs.fresh)
            .map(ReplicaSet::to_object);
        let update = self
            .rss
            .iter()
            .filter(|rs| rs.dirty && !rs.fresh && !self.deletes.contains(&rs.name))
            .map(ReplicaSet::to_object)
            .collect();
        let deployment_annotations = (self.annotations != d.annotations).then(|| {
            self.annotations
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        });
        let status = self.computed_status.unwrap_or(self.status);
        Plan {
            create,
            update,
            delete: self.deletes,
            deployment_annotations,
            status: (status != d.status).then(|| status.to_json()),
            events: self.events,
            requeue_after: self.requeue_after,
        }
    }
}

/// `DeploymentProgressing`: more pods updated, fewer old pods, or more ready or available.
fn progressed(old: &Status, new: &Status) -> bool {
    let old_old = old.replicas - old.updated_replicas;
    let new_old = new.replicas - new.updated_replicas;
    new.updated_replicas > old.updated_replicas
        || new_old < old_old
        || new.ready_replicas > old.ready_replicas
        || new.available_replicas > old.available_replicas
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const UID: &str = "5f0c8a3e-2b1d-4c7e-9a61-0d3f2e1b4c5a";

    fn start() -> OffsetDateTime {
        datetime!(2024-05-01 12:00:00 UTC)
    }

    fn deployment(replicas: i64, strategy: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "uid": UID,
                "generation": 1,
                "creationTimestamp": "2024-05-01T11:59:00Z",
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "kubernetes.io/change-cause": "kubectl create deployment web --image=nginx:1.25"
                }
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.25",
                            "imagePullPolicy": "IfNotPresent",
                            "resources": {},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File"
                        }],
                        "dnsPolicy": "ClusterFirst",
                        "restartPolicy": "Always",
                        "schedulerName": "default-scheduler",
                        "securityContext": {},
                        "terminationGracePeriodSeconds": 30
                    }
                },
                "strategy": strategy,
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600
            }
        })
    }

    fn rolling(surge: Value, unavailable: Value) -> Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    }

    fn default_rolling() -> Value {
        rolling(json!("25%"), json!("25%"))
    }

    fn int(v: &Value, pointer: &str) -> i64 {
        v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
    }

    fn string<'a>(v: &'a Value, pointer: &str) -> &'a str {
        v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
    }

    /// A small cluster: the store, the ReplicaSet controller and the kubelets, all
    /// instantaneous. Pods a ReplicaSet had at the previous tick become available at the
    /// next one, except pods of a template whose image ends in `:broken`, which never do.
    struct Cluster {
        d: Value,
        rss: Vec<Value>,
        now: OffsetDateTime,
        events: Vec<(String, String, String)>,
        uids: u32,
    }

    impl Cluster {
        fn new(d: Value) -> Self {
            Self {
                d,
                rss: Vec::new(),
                now: start(),
                events: Vec::new(),
                uids: 0,
            }
        }

        fn reconcile(&mut self) -> Plan {
            let plan = reconcile(&self.d, &self.rss, self.now).expect("reconcile");
            self.apply(&plan);
            plan
        }

        fn apply(&mut self, plan: &Plan) {
            if let Some(rs) = &plan.create {
                let mut rs = rs.clone();
                let name = string(&rs, "/metadata/name").to_string();
                assert!(
                    self.rss.iter().all(|r| string(r, "/metadata/name") != name),
                    "created {name} twice"
                );
                self.uids += 1;
                let meta = rs["metadata"].as_object_mut().expect("metadata");
                meta.insert("uid".into(), json!(format!("rs-uid-{}", self.uids)));
                meta.insert("generation".into(), json!(1));
                meta.insert("creationTimestamp".into(), json!(format_time(self.now)));
                self.rss.push(rs);
            }
            for updated in &plan.update {
                let name = string(updated, "/metadata/name");
                let slot = self
                    .rss
                    .iter_mut()
                    .find(|r| string(r, "/metadata/name") == name)
                    .expect("updated replica set exists");
                let mut updated = updated.clone();
                if updated["spec"] != slot["spec"] {
                    updated["metadata"]["generation"] =
                        json!(int(slot, "/metadata/generation") + 1);
                }
                updated["status"] = slot["status"].clone();
                *slot = updated;
            }
            for name in &plan.delete {
                self.rss.retain(|r| string(r, "/metadata/name") != name);
            }
            if let Some(a) = &plan.deployment_annotations {
                self.d["metadata"]["annotations"] = Value::Object(a.clone());
            }
            if let Some(s) = &plan.status {
                self.d["status"] = s.clone();
            }
            self.events.extend(plan.events.iter().cloned());
        }

        /// The ReplicaSet controller and kubelets catch up with every ReplicaSet's spec.
        fn tick(&mut self) {
            for rs in &mut self.rss {
                let spec = int(rs, "/spec/replicas");
                let had = int(rs, "/status/replicas");
                let broken =
                    string(rs, "/spec/template/spec/containers/0/image").ends_with(":broken");
                let available = if broken { 0 } else { spec.min(had) };
                rs["status"] = json!({
                    "replicas": spec,
                    "fullyLabeledReplicas": spec,
                    "readyReplicas": available,
                    "availableReplicas": available,
                    "observedGeneration": int(rs, "/metadata/generation"),
                });
            }
            self.now += time::Duration::seconds(1);
        }

        fn edit_spec(&mut self, f: impl FnOnce(&mut Value)) {
            f(&mut self.d["spec"]);
            self.d["metadata"]["generation"] = json!(int(&self.d, "/metadata/generation") + 1);
        }

        fn set_image(&mut self, image: &str) {
            self.edit_spec(|spec| {
                spec["template"]["spec"]["containers"][0]["image"] = json!(image)
            });
        }

        fn spec_total(&self) -> i64 {
            self.rss.iter().map(|r| int(r, "/spec/replicas")).sum()
        }

        fn available_total(&self) -> i64 {
            self.rss
                .iter()
                .map(|r| int(r, "/status/availableReplicas"))
                .sum()
        }

        fn by_image(&self, image: &str) -> &Value {
            self.rss
                .iter()
                .find(|r| string(r, "/spec/template/spec/containers/0/image") == image)
                .expect("replica set with image")
        }

        fn condition(&self, kind: &str) -> Value {
            self.d["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
                .cloned()
                .unwrap_or(Value::Null)
        }

        fn settled(&self) -> bool {
            self.rss.iter().all(|r| {
                let spec = int(r, "/spec/replicas");
                int(r, "/status/replicas") == spec && int(r, "/status/availableReplicas") == spec
            })
        }

        /// Runs passes and ticks until nothing changes, checking `invariant` after every
        /// pass and every tick. Returns the number of passes.
        fn converge(&mut self, mut invariant: impl FnMut(&Cluster)) -> usize {
            for pass in 1..=400 {
                let plan = self.reconcile();
                invariant(self);
                let settled = plan.is_empty() && self.settled();
                self.tick();
                invariant(self);
                if settled {
                    return pass;
                }
            }
            panic!("rollout did not converge: {:#?}", self.d["status"]);
        }
    }

    fn rolling_invariants(max_total: i64, min_available: i64) -> impl FnMut(&Cluster) {
        move |c: &Cluster| {
            assert!(
                c.spec_total() <= max_total,
                "{} replicas requested, at most {max_total} allowed",
                c.spec_total()
            );
            assert!(
                c.available_total() >= min_available,
                "{} available, at least {min_available} required",
                c.available_total()
            );
        }
    }

    fn settled_cluster(replicas: i64, strategy: Value) -> Cluster {
        let mut c = Cluster::new(deployment(replicas, strategy));
        c.converge(|_| {});
        c.events.clear();
        c
    }

    #[test]
    fn fresh_deployment_creates_its_replica_set() {
        let d = deployment(3, default_rolling());
        let plan = reconcile(&d, &[], start()).expect("reconcile");
        let hash = template_hash(&d["spec"]["template"], None);
        let name = format!("web-{hash}");
        let rs = plan.create.clone().expect("a replica set to create");

        assert_eq!(rs["apiVersion"], "apps/v1");
        assert_eq!(rs["kind"], "ReplicaSet");
        assert_eq!(rs["metadata"]["name"], json!(name));
        assert_eq!(rs["metadata"]["namespace"], "default");
        assert_eq!(
            rs["metadata"]["labels"],
            json!({"app": "web", "pod-template-hash": hash})
        );
        assert_eq!(
            rs["spec"]["selector"],
            json!({"matchLabels": {"app": "web", "pod-template-hash": hash}})
        );
        assert_eq!(
            rs["metadata"]["annotations"],
            json!({
                "deployment.kubernetes.io/revision": "1",
                "deployment.kubernetes.io/desired-replicas": "3",
                "deployment.kubernetes.io/max-replicas": "4",
                "kubernetes.io/change-cause": "kubectl create deployment web --image=nginx:1.25"
            })
        );
        assert_eq!(
            rs["metadata"]["ownerReferences"],
            json!([{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": UID,
                "controller": true, "blockOwnerDeletion": true
            }])
        );
        assert_eq!(rs["spec"]["replicas"], 3);
        assert!(rs["spec"].get("minReadySeconds").is_none());

        // The template is the Deployment's verbatim plus the hash label, so kubectl's
        // client-side history and undo recognize it.
        let mut expected_template = d["spec"]["template"].clone();
        expected_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        assert_eq!(rs["spec"]["template"], expected_template);
        assert!(equal_ignoring_hash(
            &rs["spec"]["template"],
            &d["spec"]["template"]
        ));

        assert_eq!(
            plan.events,
            vec![(
                "Normal".to_string(),
                "ScalingReplicaSet".to_string(),
                format!("Scaled up replica set {name} to 3")
            )]
        );
        let annotations = plan
            .deployment_annotations
            .clone()
            .expect("revision annotation");
        assert_eq!(annotations["deployment.kubernetes.io/revision"], "1");
        assert_eq!(
            annotations["kubectl.kubernetes.io/last-applied-configuration"], "{}",
            "the Deployment's own annotations are kept"
        );
        assert_eq!(
            plan.status,
            Some(json!({
                "observedGeneration": 1,
                "unavailableReplicas": 3,
                "conditions": [
                    {
                        "type": "Progressing", "status": "True",
                        "lastUpdateTime": "2024-05-01T12:00:00Z",
                        "lastTransitionTime": "2024-05-01T12:00:00Z",
                        "reason": "NewReplicaSetCreated",
                        "message": format!("Created new replica set \"{name}\"")
                    },
                    {
                        "type": "Available", "status": "False",
                        "lastUpdateTime": "2024-05-01T12:00:00Z",
                        "lastTransitionTime": "2024-05-01T12:00:00Z",
                        "reason": "MinimumReplicasUnavailable",
                        "message": "Deployment does not have minimum availability."
                    }
                ]
            }))
        );
        assert_eq!(plan.update, Vec::<Value>::new());
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(601)));
    }

    #[test]
    fn fresh_deployment_becomes_available_and_then_stays_quiet() {
        let mut c = Cluster::new(deployment(3, default_rolling()));
        c.converge(|_| {});
        let status = &c.d["status"];
        assert_eq!(int(status, "/observedGeneration"), 1);
        for key in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ] {
            assert_eq!(int(status, &format!("/{key}")), 3, "{key}");
        }
        assert!(
            status.get("unavailableReplicas").is_none(),
            "zero counts are omitted"
        );
        let name = string(&c.rss[0], "/metadata/name").to_string();
        assert_eq!(
            c.condition("Available")["reason"],
            "MinimumReplicasAvailable"
        );
        assert_eq!(
            c.condition("Available")["message"],
            "Deployment has minimum availability."
        );
        assert_eq!(
            c.condition("Progressing")["reason"],
            "NewReplicaSetAvailable"
        );
        assert_eq!(
            c.condition("Progressing")["message"],
            json!(format!(
                "ReplicaSet \"{name}\" has successfully progressed."
            ))
        );
        // Kubernetes' ordering: Available moved last when it turned True, then Progressing.
        assert_eq!(status["conditions"][0]["type"], "Available");
        assert_eq!(status["conditions"][1]["type"], "Progressing");

        c.now += time::Duration::hours(2);
        let plan = reconcile(&c.d, &c.rss, c.now).expect("reconcile");
        assert!(plan.is_empty(), "{plan:#?}");
        assert_eq!(plan.requeue_after, None);
    }

    #[test]
    fn rolling_update_of_ten_replicas_keeps_surge_and_availability_bounds() {
        let mut c = settled_cluster(10, default_rolling());
        let old_name = string(&c.rss[0], "/metadata/name").to_string();
        c.set_image("nginx:1.26");

        // 25% of 10: surge rounds up to 3, unavailability rounds down to 2.
        let first = c.reconcile();
        let new_name = string(
            first.create.as_ref().expect("new replica set"),
            "/metadata/name",
        )
        .to_string();
        assert_eq!(
            first
                .events
                .iter()
                .map(|e| e.2.as_str())
                .collect::<Vec<_>>(),
            vec![
                format!("Scaled up replica set {new_name} to 3"),
                format!("Scaled down replica set {old_name} to 8 from 10"),
            ]
        );
        assert_eq!(
            first
                .deployment_annotations
                .as_ref()
                .map(|a| a[REVISION_ANNOTATION].clone()),
            Some(json!("2"))
        );
        c.tick();

        c.converge(rolling_invariants(13, 8));
        let old = c.by_image("nginx:1.25");
        let new = c.by_image("nginx:1.26");
        assert_eq!(int(old, "/spec/replicas"), 0);
        assert_eq!(int(new, "/spec/replicas"), 10);
        assert_eq!(
            string(
                new,
                "/metadata/annotations/deployment.kubernetes.io~1revision"
            ),
            "2"
        );
        assert_eq!(
            string(
                old,
                "/metadata/annotations/deployment.kubernetes.io~1revision"
            ),
            "1"
        );
        assert_eq!(
            c.condition("Progressing")["reason"],
            "NewReplicaSetAvailable"
        );
        assert_eq!(
            c.condition("Progressing")["message"],
            json!(format!(
                "ReplicaSet \"{new_name}\" has successfully progressed."
            ))
        );
        assert_eq!(int(&c.d, "/status/updatedReplicas"), 10);
        assert_eq!(int(&c.d, "/status/replicas"), 10);
        for (kind, reason, message) in &c.events {
            assert_eq!(
                (kind.as_str(), reason.as_str()),
                ("Normal", "ScalingReplicaSet")
            );
            assert!(
                message.starts_with("Scaled up replica set ")
                    || message.starts_with("Scaled down replica set "),
                "{message}"
            );
            assert!(
                message.contains(" from ")
                    || message == &format!("Scaled up replica set {new_name} to 3"),
                "1.28+ wording: {message}"
            );
        }
    }

    #[test]
    fn hundred_replica_rollout_keeps_bounds_at_every_step() {
        let mut c = settled_cluster(100, default_rolling());
        c.set_image("nginx:1.26");
        let passes = c.converge(rolling_invariants(125, 75));
        assert!(passes > 3, "the rollout takes several steps");
        assert_eq!(int(c.by_image("nginx:1.25"), "/spec/replicas"), 0);
        assert_eq!(int(c.by_image("nginx:1.26"), "/spec/replicas"), 100);
        assert_eq!(
            c.condition("Progressing")["reason"],
            "NewReplicaSetAvailable"
        );

        // And a second rollout over the first, with absolute values.
        c.edit_spec(|spec| spec["strategy"] = rolling(json!(10), json!(5)));
        c.set_image("nginx:1.27");
        c.converge(rolling_invariants(110, 95));
        assert_eq!(int(c.by_image("nginx:1.27"), "/spec/replicas"), 100);
        assert_eq!(c.spec_total(), 100);
    }

    #[test]
    fn zero_surge_and_zero_unavailable_allow_one_unavailable() {
        assert_eq!(
            resolve_fenceposts(IntOrPercent::Int(0), IntOrPercent::Int(0), 10),
            (0, 1)
        );
        assert_eq!(
            resolve_fenceposts(IntOrPercent::Percent(0), IntOrPercent::Percent(0), 10),
            (0, 1)
        );
        assert_eq!(
            resolve_fenceposts(IntOrPercent::Percent(25), IntOrPercent::Percent(25), 10),
            (3, 2)
        );
        assert_eq!(
            resolve_fenceposts(IntOrPercent::Percent(25), IntOrPercent::Percent(25), 3),
            (1, 0)
        );
        assert_eq!(
            resolve_fenceposts(IntOrPercent::Percent(10), IntOrPercent::Percent(10), 1),
            (1, 0)
        );

        let mut c = settled_cluster(4, rolling(json!(0), json!(0)));
        c.set_image("nginx:1.26");
        let first = c.reconcile();
        assert_eq!(
            first.create.as_ref().map(|rs| int(rs, "/spec/replicas")),
            Some(0)
        );
        c.tick();
        c.converge(rolling_invariants(4, 3));
        assert_eq!(int(c.by_image("nginx:1.26"), "/spec/replicas"), 4);
        assert_eq!(int(c.by_image("nginx:1.25"), "/spec/replicas"), 0);
    }

    #[test]
    fn recreate_removes_every_old_pod_before_creating_new_ones() {
        let mut c = settled_cluster(3, json!({"type": "Recreate"}));
        let old_name = string(&c.rss[0], "/metadata/name").to_string();
        assert_eq!(
            string(
                &c.rss[0],
                "/metadata/annotations/deployment.kubernetes.io~1max-replicas"
            ),
            "3"
        );
        c.set_image("nginx:1.26");

        let first = c.reconcile();
        assert!(first.create.is_none(), "no new pods while old ones run");
        assert_eq!(
            first.events.iter().map(|e| e.2.clone()).collect::<Vec<_>>(),
            vec![format!("Scaled down replica set {old_name} to 0 from 3")]
        );
        // Until the ReplicaSet controller reports the pods gone, nothing more happens.
        let waiting = c.reconcile();
        assert!(waiting.create.is_none() && waiting.update.is_empty());

        c.tick();
        let second = c.reconcile();
        let created = second
            .create
            .clone()
            .expect("new replica set once the old pods are gone");
        assert_eq!(int(&created, "/spec/replicas"), 3);
        let new_name = string(&created, "/metadata/name");
        assert_eq!(
            second
                .events
                .iter()
                .map(|e| e.2.clone())
                .collect::<Vec<_>>(),
            vec![format!("Scaled up replica set {new_name} to 3")]
        );
        c.tick();
        c.converge(|c| {
            let old = int(c.by_image("nginx:1.25"), "/status/replicas");
            let new = c
                .rss
                .iter()
                .any(|r| string(r, "/spec/template/spec/containers/0/image") == "nginx:1.26");
            assert!(!(old > 0 && new), "old and new pods never run together");
        });
        assert_eq!(
            int(c.by_image("nginx:1.26"), "/status/availableReplicas"),
            3
        );
        assert_eq!(
            c.condition("Progressing")["reason"],
            "NewReplicaSetAvailable"
        );
        assert_eq!(c.condition("Available")["status"], "True");
    }

    #[test]
    fn rollback_revives_the_old_replica_set_with_a_new_revision() {
        let mut c = settled_cluster(4, default_rolling());
        let first_template = c.d["spec"]["template"].clone();
        let first_name = string(&c.rss[0], "/metadata/name").to_string();
        c.d["metadata"]["annotations"][CHANGE_CAUSE_ANNOTATION] = json!("upgrade to 1.26");
        c.set_image("nginx:1.26");
        c.converge(rolling_invariants(5, 3));
        assert_eq!(
            string(
                c.by_image("nginx:1.26"),
                "/metadata/annotations/kubernetes.io~1change-cause"
            ),
            "upgrade to 1.26"
        );
        assert_eq!(
            string(
                &c.d,
                "/metadata/annotations/deployment.kubernetes.io~1revision"
            ),
            "2"
        );

        // What `kubectl rollout undo` sends: the old template without its hash label, and the
        // old ReplicaSet's annotations.
        c.edit_spec(|spec| spec["template"] = first_template);
        c.d["metadata"]["annotations"][CHANGE_CAUSE_ANNOTATION] =
            json!("kubectl create deployment web --image=nginx:1.25");
        let plan = c.reconcile();
        assert!(plan.create.is_none(), "the old ReplicaSet is reused");
        let revived = plan
            .update
            .iter()
            .find(|rs| string(rs, "/metadata/name") == first_name)
            .expect("old replica set updated");
        assert_eq!(
            string(
                revived,
                "/metadata/annotations/deployment.kubernetes.io~1revision"
            ),
            "3"
        );
        assert_eq!(
            string(
                revived,
                "/metadata/annotations/deployment.kubernetes.io~1revision-history"
            ),
            "1"
        );
        assert_eq!(
            plan.deployment_annotations
                .as_ref()
                .map(|a| a[REVISION_ANNOTATION].clone()),
            Some(json!("3"))
        );
        c.tick();
        c.converge(rolling_invariants(5, 3));
        assert_eq!(int(c.by_image("nginx:1.25"), "/spec/replicas"), 4);
        assert_eq!(int(c.by_image("nginx:1.26"), "/spec/replicas"), 0);
        assert_eq!(c.rss.len(), 2);
        assert_eq!(
            c.condition("Progressing")["reason"],
            "NewReplicaSetAvailable"
        );
        assert_eq!(
            c.condition("Progressing")["message"],
            json!(format!(
                "ReplicaSet \"{first_name}\" has successfully progressed."
            ))
        );

        // Rolling forward again to 1.26 makes it revision 4, remembering 2.
        c.set_image("nginx:1.26");
        c.converge(rolling_invariants(5, 3));
        let again = c.by_image("nginx:1.26");
        assert_eq!(
            string(
                again,
                "/metadata/annotations/deployment.kubernetes.io~1revision"
            ),
            "4"
        );
        assert_eq!(
            string(
                again,
                "/metadata/annotations/deployment.kubernetes.io~1revision-history"
            ),
            "2"
        );
    }

    #[test]
    fn history_beyond_the_limit_is_deleted_once_complete() {
        let mut d = deployment(2, default_rolling());
        d["spec"]["revisionHistoryLimit"] = json!(2);
        let mut c = Cluster::new(d);
        c.converge(|_| {});
        for version in 2..=6 {
            c.set_image(&format!("nginx:1.{version}"));
            c.converge(rolling_invariants(3, 2));
        }
        let mut revisions: Vec<&str> = c
            .rss
            .iter()
            .map(|r| {
                string(
                    r,
                    "/metadata/annotations/deployment.kubernetes.io~1revision",
                )
            })
            .collect();
        revisions.sort();
        assert_eq!(
            revisions,
            vec!["4", "5", "6"],
            "the new ReplicaSet plus two old ones"
        );
        assert_eq!(int(c.by_image("nginx:1.6"), "/spec/replicas"), 2);
    }

    #[test]
    fn cleanup_deletes_the_lowest_revisions_first() {
        let mut c = settled_cluster(2, default_rolling());
        c.d["spec"]["revisionHistoryLimit"] = json!(1);
        let base = c.rss[0].clone();
        for (name, revision, created) in [
            ("web-r3", "3", "2024-05-01T09:00:00Z"),
            ("web-r2", "2", "2024-05-01T10:00:00Z"),
            ("web-r4", "4", "2024-05-01T08:00:00Z"),
        ] {
            let mut rs = base.clone();
            rs["metadata"]["name"] = json!(name);
            rs["metadata"]["creationTimestamp"] = json!(created);
            rs["metadata"]["annotations"][REVISION_ANNOTATION] = json!(revision);
            rs["spec"]["template"]["spec"]["containers"][0]["image"] = json!(name);
            rs["spec"]["replicas"] = json!(0);
            rs["status"] = json!({"replicas": 0, "observedGeneration": 1});
            c.rss.push(rs);
        }
        let plan = reconcile(&c.d, &c.rss, c.now).expect("reconcile");
        assert_eq!(
            plan.delete,
            vec!["web-r2".to_string(), "web-r3".to_string()]
        );
    }

    #[test]
    fn cleanup_spares_replica_sets_that_still_have_pods_or_are_unobserved() {
        let mut d = deployment(2, default_rolling());
        d["spec"]["revisionHistoryLimit"] = json!(0);
        let mut c = Cluster::new(d);
        c.converge(|_| {});
        c.set_image("nginx:1.26");
        c.converge(|_| {});
        assert_eq!(
            c.rss.len(),
            1,
            "revisionHistoryLimit 0 keeps no old ReplicaSet"
        );

        c.set_image("nginx:1.27");
        c.converge(|_| {});
        // An old ReplicaSet scaled to zero whose controller has not caught up is kept.
        let mut stale = c.by_image("nginx:1.27").clone();
        stale["metadata"]["name"] = json!("web-stale");
        stale["metadata"]["generation"] = json!(7);
        stale["status"] = json!({"replicas": 0, "observedGeneration": 6});
        stale["metadata"]["annotations"][REVISION_ANNOTATION] = json!("1");
        stale["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:old");
        stale["spec"]["replicas"] = json!(0);
        c.rss.push(stale);
        let plan = reconcile(&c.d, &c.rss, c.now).expect("reconcile");
        assert!(plan.delete.is_empty(), "{:?}", plan.delete);
    }

    #[test]
    fn paused_deployment_scales_but_does_not_roll_out_until_resumed() {
        let mut c = settled_cluster(3, default_rolling());
        let name = string(&c.rss[0], "/metadata/name").to_string();
        c.edit_spec(|spec| spec["paused"] = json!(true));
        c.set_image("nginx:1.26");
        let plan = c.reconcile();
        assert!(plan.create.is_none(), "no rollout while paused");
        let progressing = c.condition("Progressing");
        assert_eq!(progressing["status"], "Unknown");
        assert_eq!(progressing["reason"], "DeploymentPaused");
        assert_eq!(progressing["message"], "Deployment is paused");
        assert_eq!(plan.requeue_after, None);
        assert_eq!(
            int(&c.d, "/status/observedGeneration"),
            int(&c.d, "/metadata/generation")
        );

        c.edit_spec(|spec| spec["replicas"] = json!(5));
        let plan = c.reconcile();
        assert!(plan.create.is_none());
        assert_eq!(
            plan.events.iter().map(|e| e.2.clone()).collect::<Vec<_>>(),
            vec![format!("Scaled up replica set {name} to 5 from 3")]
        );
        let scaled = &plan.update[0];
        assert_eq!(int(scaled, "/spec/replicas"), 5);
        assert_eq!(
            string(
                scaled,
                "/metadata/annotations/deployment.kubernetes.io~1desired-replicas"
            ),
            "5"
        );
        assert_eq!(
            string(
                scaled,
                "/metadata/annotations/deployment.kubernetes.io~1max-replicas"
            ),
            "7"
        );
        c.tick();
        c.tick();
        assert!(c.reconcile().create.is_none());

        c.now += time::Duration::hours(1);
        c.edit_spec(|spec| spec["paused"] = json!(false));
        let plan = c.reconcile();
        assert!(plan.create.is_some(), "resuming starts the rollout");
        let progressing = c.condition("Progressing");
        assert_eq!(progressing["reason"], "NewReplicaSetCreated");
        assert_eq!(progressing["status"], "True");
        c.tick();
        c.converge(rolling_invariants(7, 4));
        assert_eq!(int(c.by_image("nginx:1.26"), "/spec/replicas"), 5);
    }

    #[test]
    fn resuming_a_complete_deployment_reports_it_complete_again() {
        let mut c = settled_cluster(2, default_rolling());
        c.edit_spec(|spec| spec["paused"] = json!(true));
        c.reconcile();
        c.edit_spec(|spec| spec["paused"] = json!(false));
        let plan = c.reconcile();
        assert!(plan.create.is_none());
        assert_eq!(
            c.condition("Progressing")["reason"],
            "NewReplicaSetAvailable"
        );
        assert_eq!(c.condition("Progressing")["status"], "True");
    }

    #[test]
    fn resuming_restarts_the_progress_clock() {
        // A Recreate rollout makes no measurable progress in its first pass, so the resumed
        // condition is what the deadline counts from.
        let mut c = settled_cluster(2, json!({"type": "Recreate"}));
        c.edit_spec(|spec| spec["paused"] = json!(true));
        c.reconcile();
        c.now += time::Duration::hours(3);
        c.edit_spec(|spec| spec["paused"] = json!(false));
        c.set_image("nginx:1.26");
        let plan = reconcile(&c.d, &c.rss, c.now).expect("reconcile");
        let status = plan.status.expect("status");
        let progressing = status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
            .cloned()
            .expect("progressing");
        assert_eq!(progressing["reason"], "DeploymentResumed");
        assert_eq!(progressing["status"], "Unknown");
        assert_eq!(progressing["message"], "Deployment is resumed");
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(601)));
    }

    #[test]
    fn min_ready_seconds_is_copied_and_kept_in_sync() {
        let mut d = deployment(2, default_rolling());
        d["spec"]["minReadySeconds"] = json!(5);
        let mut c = Cluster::new(d);
        let plan = c.reconcile();
        assert_eq!(
            plan.create
                .as_ref()
                .map(|rs| int(rs, "/spec/minReadySeconds")),
            Some(5)
        );
        c.tick();
        c.edit_spec(|spec| spec["minReadySeconds"] = json!(10));
        let plan = c.reconcile();
        assert!(
            plan.create.is_none(),
            "minReadySeconds is not part of the template"
        );
        assert_eq!(plan.update.len(), 1);
        assert_eq!(int(&plan.update[0], "/spec/minReadySeconds"), 10);
        assert!(plan.events.is_empty());
    }

    #[test]
    fn a_stuck_rollout_exceeds_its_progress_deadline() {
        let mut d = deployment(10, default_rolling());
        d["spec"]["progressDeadlineSeconds"] = json!(60);
        let mut c = Cluster::new(d);
        c.converge(|_| {});
        c.set_image("nginx:broken");
        let first = c.reconcile();
        let new_name =
            string(first.create.as_ref().expect("created"), "/metadata/name").to_string();
        assert_eq!(first.requeue_after, Some(Duration::from_secs(61)));
        c.tick();
        // The new pods exist now: that is progress, and it restarts the clock.
        let plan = c.reconcile();
        assert_eq!(c.condition("Progressing")["reason"], "ReplicaSetUpdated");
        assert_eq!(
            c.condition("Progressing")["message"],
            json!(format!("ReplicaSet \"{new_name}\" is progressing."))
        );
        let progressed_at = c.condition("Progressing")["lastUpdateTime"].clone();
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(61)));

        c.now += time::Duration::seconds(30);
        let plan = c.reconcile();
        assert!(plan.status.is_none(), "no progress, not yet late");
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(31)));
        assert_eq!(c.condition("Progressing")["lastUpdateTime"], progressed_at);

        c.now += time::Duration::seconds(31);
        c.reconcile();
        let progressing = c.condition("Progressing");
        assert_eq!(progressing["status"], "False");
        assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
        assert_eq!(
            progressing["message"],
            json!(format!(
                "ReplicaSet \"{new_name}\" has timed out progressing."
            ))
        );
        // The broken pods never drain the working ones.
        assert_eq!(int(c.by_image("nginx:1.25"), "/spec/replicas"), 8);
        assert!(c.available_total() >= 8);

        let later = reconcile(&c.d, &c.rss, c.now + time::Duration::hours(1)).expect("reconcile");
        assert!(
            later.is_empty() && later.requeue_after.is_none(),
            "{later:#?}"
        );

        // Fixing the template starts a new rollout and a fresh Progressing condition.
        c.set_image("nginx:1.26");
        c.reconcile();
        assert_eq!(c.condition("Progressing")["reason"], "NewReplicaSetCreated");
        c.tick();
        c.converge(|_| {});
        assert_eq!(
            c.condition("Progressing")["reason"],
            "NewReplicaSetAvailable"
        );
        assert_eq!(int(c.by_image("nginx:broken"), "/spec/replicas"), 0);
    }

    #[test]
    fn no_progress_deadline_means_no_progressing_condition() {
        let mut d = deployment(2, default_rolling());
        d["spec"]["progressDeadlineSeconds"] = json!(i32::MAX);
        let mut c = Cluster::new(d);
        c.converge(|_| {});
        assert_eq!(c.condition("Progressing"), Value::Null);
        assert_eq!(c.condition("Available")["status"], "True");
        let plan = reconcile(&c.d, &c.rss, c.now).expect("reconcile");
        assert_eq!(plan.requeue_after, None);
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        let mut c = settled_cluster(10, default_rolling());
        c.set_image("nginx:broken");
        c.reconcile();
        c.tick();
        c.reconcile();
        let old = string(c.by_image("nginx:1.25"), "/metadata/name").to_string();
        let new = string(c.by_image("nginx:broken"), "/metadata/name").to_string();
        assert_eq!(int(c.by_image("nginx:1.25"), "/spec/replicas"), 8);
        assert_eq!(int(c.by_image("nginx:broken"), "/spec/replicas"), 5);

        // 20 replicas allow 25 with a 25% surge; the 12 extra go 8:5.
        c.edit_spec(|spec| spec["replicas"] = json!(20));
        let plan = c.reconcile();
        assert!(plan.create.is_none());
        assert_eq!(
            plan.events.iter().map(|e| e.2.clone()).collect::<Vec<_>>(),
            vec![
                format!("Scaled up replica set {old} to 15 from 8"),
                format!("Scaled up replica set {new} to 10 from 5"),
            ]
        );
        for rs in &plan.update {
            assert_eq!(
                string(
                    rs,
                    "/metadata/annotations/deployment.kubernetes.io~1desired-replicas"
                ),
                "20"
            );
            assert_eq!(
                string(
                    rs,
                    "/metadata/annotations/deployment.kubernetes.io~1max-replicas"
                ),
                "25"
            );
        }
        assert_eq!(c.spec_total(), 25);

        // Scaling down takes from the larger ReplicaSet first.
        c.tick();
        c.edit_spec(|spec| spec["replicas"] = json!(4));
        let plan = c.reconcile();
        assert_eq!(c.spec_total(), 5);
        assert!(plan
            .events
            .iter()
            .all(|e| e.2.starts_with("Scaled down replica set ")));
    }

    #[test]
    fn an_owned_replica_set_holding_the_name_bumps_the_collision_count() {
        let d = deployment(2, default_rolling());
        let name = format!("web-{}", template_hash(&d["spec"]["template"], None));
        let mut other_template = d["spec"]["template"].clone();
        other_template["spec"]["containers"][0]["image"] = json!("other:1");
        let squatter = json!({
            "metadata": {"name": name, "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"replicas": 0, "template": other_template},
            "status": {}
        });
        let plan = reconcile(&d, std::slice::from_ref(&squatter), start()).expect("reconcile");
        assert!(plan.create.is_none());
        assert_eq!(
            plan.status.as_ref().map(|s| s["collisionCount"].clone()),
            Some(json!(1))
        );

        let mut d2 = d.clone();
        d2["status"] = plan.status.clone().unwrap_or(Value::Null);
        let plan = reconcile(&d2, &[squatter], start()).expect("reconcile");
        let created = plan.create.expect("created under another name");
        assert_ne!(created["metadata"]["name"], json!(name));
        assert_eq!(
            created["metadata"]["name"],
            json!(format!(
                "web-{}",
                template_hash(&d["spec"]["template"], Some(1))
            ))
        );
        assert_eq!(
            plan.status.as_ref().map(|s| s["collisionCount"].clone()),
            Some(json!(1))
        );

        let bumped = status_after_name_collision(&d2).expect("status");
        assert_eq!(bumped["collisionCount"], 2);
    }

    #[test]
    fn template_hash_is_stable_and_a_valid_label_value() {
        let d = deployment(1, default_rolling());
        let template = &d["spec"]["template"];
        let hash = template_hash(template, None);
        assert_eq!(hash, template_hash(&template.clone(), None));
        assert!(!hash.is_empty() && hash.len() <= 10);
        assert!(hash
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(hash, template_hash(template, Some(0)));
        assert_ne!(
            template_hash(template, Some(0)),
            template_hash(template, Some(1))
        );

        // Key order, nulls and empty values do not matter.
        let reordered: Value = serde_json::from_str(
            r#"{"spec": {"terminationGracePeriodSeconds": 30, "securityContext": {},
                "schedulerName": "default-scheduler", "restartPolicy": "Always",
                "dnsPolicy": "ClusterFirst", "containers": [{"terminationMessagePolicy": "File",
                "terminationMessagePath": "/dev/termination-log", "resources": {},
                "imagePullPolicy": "IfNotPresent", "image": "nginx:1.25", "name": "nginx"}]},
                "metadata": {"labels": {"app": "web"}}}"#,
        )
        .expect("json");
        assert_eq!(template_hash(&reordered, None), hash);
        let mut changed = template.clone();
        changed["spec"]["containers"][0]["image"] = json!("nginx:1.26");
        assert_ne!(template_hash(&changed, None), hash);

        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        let mut fnv = Fnv32a::new();
        fnv.write(b"a");
        assert_eq!(fnv.0, 0xe40c_292c);
    }

    #[test]
    fn oldest_matching_replica_set_is_the_new_one() {
        let d = deployment(2, default_rolling());
        let mut template = d["spec"]["template"].clone();
        template["metadata"]["labels"]["pod-template-hash"] = json!("abc");
        let rs = |name: &str, created: &str, revision: &str| {
            json!({
                "metadata": {"name": name, "creationTimestamp": created,
                             "annotations": {REVISION_ANNOTATION: revision}},
                "spec": {"replicas": 0, "template": template},
                "status": {}
            })
        };
        let newer = rs("web-newer", "2024-05-01T11:00:00Z", "2");
        let older = rs("web-older", "2024-05-01T10:00:00Z", "1");
        let plan = reconcile(&d, &[newer, older], start()).expect("reconcile");
        assert!(plan.create.is_none());
        let scaled = plan
            .update
            .iter()
            .find(|r| int(r, "/spec/replicas") == 2)
            .expect("one replica set takes the replicas");
        assert_eq!(scaled["metadata"]["name"], "web-older");
        assert_eq!(
            string(
                scaled,
                "/metadata/annotations/deployment.kubernetes.io~1revision"
            ),
            "3"
        );
        assert_eq!(
            plan.status
                .as_ref()
                .map(|s| s["conditions"][0]["reason"].clone()),
            Some(json!("FoundNewReplicaSet"))
        );
    }

    #[test]
    fn revision_history_is_bounded() {
        let mut annotations = BTreeMap::new();
        let long: Vec<String> = (1..=600).map(|n| n.to_string()).collect();
        annotations.insert(REVISION_HISTORY_ANNOTATION.to_string(), long.join(","));
        append_revision_history(&mut annotations, "601");
        let history = &annotations[REVISION_HISTORY_ANNOTATION];
        assert!(history.len() as i64 <= MAX_REVISION_HISTORY_CHARS);
        assert!(history.ends_with(",600,601"));
        assert!(!history.starts_with("1,"));

        let mut annotations = BTreeMap::new();
        append_revision_history(&mut annotations, "1");
        append_revision_history(&mut annotations, "3");
        assert_eq!(annotations[REVISION_HISTORY_ANNOTATION], "1,3");
    }

    #[test]
    fn selecting_everything_is_refused_with_an_event() {
        let mut d = deployment(2, default_rolling());
        d["spec"]["selector"] = json!({});
        let plan = reconcile(&d, &[], start()).expect("reconcile");
        assert!(plan.create.is_none());
        assert_eq!(plan.events[0].1, "SelectingAll");
        assert_eq!(plan.events[0].0, "Warning");
        assert_eq!(plan.status, Some(json!({"observedGeneration": 1})));
    }

    #[test]
    fn a_deleted_deployment_only_reports_status() {
        let mut c = settled_cluster(3, default_rolling());
        c.d["metadata"]["deletionTimestamp"] = json!("2024-05-01T13:00:00Z");
        c.set_image("nginx:1.26");
        let plan = c.reconcile();
        assert!(plan.create.is_none() && plan.update.is_empty() && plan.events.is_empty());
        assert_eq!(int(&c.d, "/status/observedGeneration"), 2);
    }

    #[test]
    fn replica_failures_are_surfaced() {
        let mut c = settled_cluster(2, default_rolling());
        c.edit_spec(|spec| spec["replicas"] = json!(3));
        c.reconcile();
        c.rss[0]["status"]["conditions"] = json!([{
            "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
            "message": "pods \"web-x\" is forbidden: exceeded quota",
            "lastTransitionTime": "2024-05-01T12:00:30Z"
        }]);
        c.set_image("nginx:1.26");
        c.reconcile();
        let failure = c.condition("ReplicaFailure");
        assert_eq!(failure["reason"], "FailedCreate");
        assert_eq!(failure["lastUpdateTime"], "2024-05-01T12:00:30Z");
    }

    #[test]
    fn malformed_input_is_an_error_naming_the_field() {
        let field = |d: &Value, rss: &[Value]| {
            reconcile(d, rss, start())
                .err()
                .map(|e| (e.field().to_string(), e.to_string()))
                .unwrap_or_else(|| panic!("no error for {d}"))
        };
        let base = deployment(3, default_rolling());

        let mut d = base.clone();
        d.as_object_mut().map(|o| o.remove("spec"));
        assert_eq!(field(&d, &[]).0, "spec");

        let mut d = base.clone();
        d["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = json!("abc");
        let (f, message) = field(&d, &[]);
        assert_eq!(f, "spec.strategy.rollingUpdate.maxSurge");
        assert!(message.contains("abc"), "{message}");

        let mut d = base.clone();
        d["spec"]["replicas"] = json!(-1);
        let (f, message) = field(&d, &[]);
        assert_eq!(f, "spec.replicas");
        assert!(message.contains("greater than or equal to 0"), "{message}");

        let mut d = base.clone();
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = json!("150%");
        assert_eq!(
            field(&d, &[]).0,
            "spec.strategy.rollingUpdate.maxUnavailable"
        );
        let mut d = base.clone();
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = json!("5");
        assert_eq!(
            field(&d, &[]).0,
            "spec.strategy.rollingUpdate.maxUnavailable"
        );
        let mut d = base.clone();
        d["spec"]["strategy"]["type"] = json!("BlueGreen");
        assert_eq!(field(&d, &[]).0, "spec.strategy.type");
        let mut d = base.clone();
        d["spec"]["replicas"] = json!("3");
        assert_eq!(field(&d, &[]).0, "spec.replicas");
        let mut d = base.clone();
        d["metadata"]["uid"] = Value::Null;
        assert_eq!(field(&d, &[]).0, "metadata.uid");
        let mut d = base.clone();
        d["spec"]["template"] = json!([]);
        assert_eq!(field(&d, &[]).0, "spec.template");
        let mut d = base.clone();
        d["metadata"]["annotations"]["x"] = json!(1);
        assert_eq!(field(&d, &[]).0, "metadata.annotations.x");
        let mut d = base.clone();
        d["status"] = json!({"conditions": [{"type": "Progressing", "status": "True",
            "reason": "ReplicaSetUpdated", "lastUpdateTime": "yesterday"}]});
        d["spec"]["progressDeadlineSeconds"] = json!(60);
        let rs = json!({"metadata": {"name": "web-1"}, "spec": {"replicas": 1,
            "template": d["spec"]["template"]}});
        assert_eq!(field(&d, &[rs]).0, "status.conditions[0].lastUpdateTime");
        assert_eq!(field(&json!("deployment"), &[]).0, "deployment");

        let rs =
            json!({"metadata": {"name": "web-1"}, "spec": {"replicas": "two", "template": {}}});
        assert_eq!(field(&base, &[rs]).0, "replicaSets[0].spec.replicas");
        let rs = json!({"metadata": {"name": "web-1", "creationTimestamp": "noon"},
            "spec": {"replicas": 1, "template": {}}});
        assert_eq!(
            field(&base, &[rs]).0,
            "replicaSets[0].metadata.creationTimestamp"
        );
        let rs = json!({"metadata": {}, "spec": {"template": {}}});
        assert_eq!(
            field(
                &base,
                &[
                    json!({"metadata": {"name": "a"}, "spec": {"template": {}}}),
                    rs
                ]
            )
            .0,
            "replicaSets[1].metadata.name"
        );
    }

    #[test]
    fn arbitrary_values_never_panic() {
        let base = deployment(3, default_rolling());
        let junk = [
            Value::Null,
            json!(true),
            json!(-5),
            json!(1.5),
            json!(9_223_372_036_854_775_807_i64),
            json!("25%"),
            json!("-1%"),
            json!("99999999999%"),
            json!([]),
            json!({}),
        ];
        let paths: &[&[&str]] = &[
            &["spec", "replicas"],
            &["spec", "strategy"],
            &["spec", "strategy", "rollingUpdate", "maxSurge"],
            &["spec", "strategy", "rollingUpdate", "maxUnavailable"],
            &["spec", "selector"],
            &["spec", "selector", "matchLabels"],
            &["spec", "template", "metadata"],
            &["spec", "template", "metadata", "labels"],
            &["spec", "revisionHistoryLimit"],
            &["spec", "progressDeadlineSeconds"],
            &["spec", "paused"],
            &["status"],
            &["status", "collisionCount"],
            &["status", "conditions"],
            &["metadata", "generation"],
            &["metadata", "annotations"],
        ];
        let rs = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2024-05-01T10:00:00Z",
                         "annotations": {REVISION_ANNOTATION: "x", MAX_REPLICAS_ANNOTATION: "0"}},
            "spec": {"replicas": 7, "template": {}},
            "status": {"replicas": 9, "availableReplicas": 12}
        });
        for path in paths {
            for value in &junk {
                let mut d = base.clone();
                let mut slot = &mut d;
                for key in *path {
                    slot = &mut slot[*key];
                }
                *slot = value.clone();
                let _ = reconcile(&d, std::slice::from_ref(&rs), start());
                let _ = reconcile(&d, &[], start());
            }
        }
        let mut huge = base.clone();
        huge["spec"]["replicas"] = json!(i32::MAX);
        huge["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = json!(format!("{}%", i32::MAX));
        assert!(reconcile(&huge, std::slice::from_ref(&rs), start()).is_ok());
        let mut d = base;
        d["spec"]["progressDeadlineSeconds"] = json!(i32::MAX - 1);
        d["status"] = json!({"conditions": [{"type": "Progressing", "status": "True",
            "reason": "ReplicaSetUpdated", "lastUpdateTime": "9999-12-31T23:59:59Z"}]});
        assert!(reconcile(&d, &[rs], start()).is_ok());
    }
}
