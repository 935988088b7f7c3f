//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), turned into the
//! JSON form of the object, which is the only form the store keeps.
//!
//! kubectl sends built-in kinds as protobuf, so the server has to read it, but nothing else
//! in the server should have to know it exists: [`decode`] gives back exactly the JSON that
//! the same request would have carried as `application/json`.
//!
//! The schemas are Kubernetes' own `generated.proto` files (under `proto/`, comments removed),
//! compiled once on first use and read dynamically. Their field names are already the JSON
//! names. Go gives a handful of types their own JSON form (times, durations, int-or-string,
//! quantities, raw extensions, managed fields); those are recognised by message name.
//!
//! Go's protobuf encoder writes every non-pointer field, zero or not, while its JSON encoder
//! drops the zero ones tagged `omitempty`. Taking the wire at face value would turn "unset"
//! into `""`, `0` or `false`, and defaulting treats those as set (an empty `restartPolicy` is
//! not a missing one). `proto/omitempty.txt` lists those fields, taken from the Go struct
//! tags, so a zero there is dropped as Go's JSON would drop it; a zero anywhere else (a
//! pointer such as `replicas: 0`, or a field without `omitempty`) means something and stays.

use std::collections::HashSet;
use std::sync::LazyLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use prost_reflect::prost::DecodeError;
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage,
    Value as ProtoValue,
};
use serde_json::{Map, Number, Value};

/// What every Kubernetes protobuf body starts with, ahead of the `runtime.Unknown` envelope.
const MAGIC: &[u8] = b"k8s\0";

/// Deep enough for any real object (the deepest built-in kinds nest about 15 messages), and
/// shallow enough that neither nested messages nor envelopes nested in raw extensions can
/// exhaust a worker thread's stack on hostile input.
const MAX_DEPTH: usize = 64;

/// The embedded schemas, by the names their `import` lines use.
const PROTO_FILES: &[(&str, &str)] = &[
    (
        "k8s.io/apimachinery/pkg/runtime/schema/generated.proto",
        include_str!("proto/k8s.io/apimachinery/pkg/runtime/schema/generated.proto"),
    ),
    (
        "k8s.io/apimachinery/pkg/runtime/generated.proto",
        include_str!("proto/k8s.io/apimachinery/pkg/runtime/generated.proto"),
    ),
    (
        "k8s.io/apimachinery/pkg/util/intstr/generated.proto",
        include_str!("proto/k8s.io/apimachinery/pkg/util/intstr/generated.proto"),
    ),
    (
        "k8s.io/apimachinery/pkg/api/resource/generated.proto",
        include_str!("proto/k8s.io/apimachinery/pkg/api/resource/generated.proto"),
    ),
    (
        "k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto",
        include_str!("proto/k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto"),
    ),
    (
        "k8s.io/api/core/v1/generated.proto",
        include_str!("proto/k8s.io/api/core/v1/generated.proto"),
    ),
    (
        "k8s.io/api/apps/v1/generated.proto",
        include_str!("proto/k8s.io/api/apps/v1/generated.proto"),
    ),
    (
        "k8s.io/api/coordination/v1/generated.proto",
        include_str!("proto/k8s.io/api/coordination/v1/generated.proto"),
    ),
];

const OMITEMPTY: &str = include_str!("proto/omitempty.txt");

/// Fields that Go embeds in their parent struct without a JSON name, so their own fields
/// appear directly in the parent's JSON (`secretKeyRef: {name, key}`, not
/// `{localObjectReference: {name}, key}`).
const INLINE_FIELDS: &[&str] = &[
    "k8s.io.api.core.v1.ConfigMapEnvSource.localObjectReference",
    "k8s.io.api.core.v1.ConfigMapKeySelector.localObjectReference",
    "k8s.io.api.core.v1.ConfigMapProjection.localObjectReference",
    "k8s.io.api.core.v1.ConfigMapVolumeSource.localObjectReference",
    "k8s.io.api.core.v1.EphemeralContainer.ephemeralContainerCommon",
    "k8s.io.api.core.v1.PersistentVolumeSpec.persistentVolumeSource",
    "k8s.io.api.core.v1.Probe.handler",
    "k8s.io.api.core.v1.SecretEnvSource.localObjectReference",
    "k8s.io.api.core.v1.SecretKeySelector.localObjectReference",
    "k8s.io.api.core.v1.SecretProjection.localObjectReference",
    "k8s.io.api.core.v1.Volume.volumeSource",
];

/// The protobuf package of each API group whose schema is embedded; the version follows.
const GROUP_PACKAGES: &[(&str, &str)] = &[
    ("", "k8s.io.api.core"),
    ("apps", "k8s.io.api.apps"),
    ("coordination.k8s.io", "k8s.io.api.coordination"),
    ("meta.k8s.io", "k8s.io.apimachinery.pkg.apis.meta"),
];

/// Kinds that every group version registers (Go's `metav1.AddToGroupVersion`), so clients
/// send them under whatever apiVersion the resource has, `v1` and `apps/v1` included.
const META_OPTION_KINDS: &[&str] = &[
    "CreateOptions",
    "DeleteOptions",
    "GetOptions",
    "ListOptions",
    "PatchOptions",
    "UpdateOptions",
];

const META_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const OBJECT_META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.ListMeta";
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const VERBS: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Verbs";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const QUANTITY_VALUE: &str = "k8s.io.apimachinery.pkg.api.resource.QuantityValue";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix seconds: another spelling of "unset".
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// Why a body could not be read; the message is meant for the client, in a 400 response.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("not a Kubernetes protobuf body: it does not start with the magic bytes \"k8s\\0\"")]
    MissingMagic,
    #[error("malformed protobuf envelope (runtime.Unknown): {0}")]
    Envelope(DecodeError),
    #[error("the protobuf envelope has no {0}")]
    MissingTypeMeta(&'static str),
    #[error("no protobuf schema for kind {kind:?} in apiVersion {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("malformed protobuf {kind} message: {error}")]
    Message { kind: String, error: DecodeError },
    #[error("invalid value at {path}: {reason}")]
    InvalidValue { path: String, reason: String },
    #[error("the object nests more than {MAX_DEPTH} messages deep")]
    TooDeep,
}

impl ProtobufError {
    fn invalid(reason: impl Into<String>) -> Self {
        Self::InvalidValue {
            path: String::new(),
            reason: reason.into(),
        }
    }

    /// Prefixes the path of an invalid value with the field or element it was found under,
    /// as the error travels up, so the client learns where the bad value is.
    fn within(mut self, segment: Segment<'_>) -> Self {
        if let Self::InvalidValue { path, .. } = &mut self {
            let separator = if path.is_empty() || path.starts_with('[') {
                ""
            } else {
                "."
            };
            *path = match segment {
                Segment::Field(name) => format!("{name}{separator}{path}"),
                Segment::Index(index) => format!("[{index}]{separator}{path}"),
                Segment::Key(key) => format!("[{key}]{separator}{path}"),
            };
        }
        self
    }
}

enum Segment<'a> {
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

/// Decodes a Kubernetes protobuf body: the 4-byte magic `k8s\0`, then a `runtime.Unknown`
/// whose `typeMeta` names the kind and whose `raw` is the object's message. Returns the
/// object as Kubernetes' JSON, with `apiVersion` and `kind` taken from `typeMeta`.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    decode_at(body, 0)
}

fn decode_at(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    let payload = body
        .strip_prefix(MAGIC)
        .ok_or(ProtobufError::MissingMagic)?;
    let schema = &*SCHEMA;
    let envelope = DynamicMessage::decode(schema.envelope.clone(), payload)
        .map_err(ProtobufError::Envelope)?;
    // Go's decoder reads only typeMeta and raw: it ignores contentEncoding and contentType,
    // which its encoder never sets, and so does this one.
    let type_meta = envelope.get_field_by_name("typeMeta");
    let type_meta = match type_meta.as_deref() {
        Some(ProtoValue::Message(m)) if envelope.has_field_by_name("typeMeta") => m,
        _ => return Err(ProtobufError::MissingTypeMeta("typeMeta")),
    };
    let api_version = string_field(type_meta, "apiVersion");
    if api_version.is_empty() {
        return Err(ProtobufError::MissingTypeMeta("apiVersion"));
    }
    let kind = string_field(type_meta, "kind");
    if kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta("kind"));
    }
    let Some(descriptor) = schema.object_descriptor(&api_version, &kind) else {
        return Err(ProtobufError::UnknownKind { api_version, kind });
    };
    let raw = bytes_field(&envelope, "raw");
    let object = DynamicMessage::decode(descriptor, raw.as_slice()).map_err(|error| {
        ProtobufError::Message {
            kind: kind.clone(),
            error,
        }
    })?;
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version));
    out.insert("kind".into(), Value::String(kind));
    schema.fields_into(&object, depth, &mut out)?;
    Ok(Value::Object(out))
}

/// Fields of `object` (a `kind` of `api_version`) that its schema does not have, as dotted
/// paths (`spec.template.spec.containers[0].imagePolicy`). With `prune` they are also
/// removed, as Kubernetes drops unknown fields when it decodes a JSON body. Kinds without an
/// embedded schema report nothing.
pub fn unknown_fields(
    api_version: &str,
    kind: &str,
    object: &mut Value,
    prune: bool,
) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(message) = SCHEMA.object_descriptor(api_version, kind) {
        check_fields(&message, object, "", 0, prune, &mut found);
    }
    found
}

/// Types whose JSON form is a scalar or free-form: nothing inside them is checked.
fn is_leaf(message: &MessageDescriptor) -> bool {
    [
        TIME,
        MICRO_TIME,
        DURATION,
        FIELDS_V1,
        INT_OR_STRING,
        QUANTITY,
        RAW_EXTENSION,
    ]
    .contains(&message.full_name())
}

/// The JSON names a message accepts: its fields, with inlined (embedded) messages' fields
/// in place of the field that embeds them.
fn json_fields(message: &MessageDescriptor, out: &mut Vec<prost_reflect::FieldDescriptor>) {
    for field in message.fields() {
        match field.kind() {
            Kind::Message(inner) if INLINE_FIELDS.contains(&field.full_name()) => {
                json_fields(&inner, out)
            }
            _ => out.push(field),
        }
    }
}

fn check_fields(
    message: &MessageDescriptor,
    value: &mut Value,
    path: &str,
    depth: usize,
    prune: bool,
    found: &mut Vec<String>,
) {
    let Value::Object(map) = value else { return };
    if depth > MAX_DEPTH {
        return;
    }
    let mut fields = Vec::new();
    json_fields(message, &mut fields);
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        // The type fields belong to every object's envelope, not to its message.
        if depth == 0 && (key == "apiVersion" || key == "kind") {
            continue;
        }
        let Some(field) = fields.iter().find(|f| f.name() == key) else {
            found.push(join(&key));
            if prune {
                map.remove(&key);
            }
            continue;
        };
        let Kind::Message(inner) = field.kind() else {
            continue;
        };
        let Some(child) = map.get_mut(&key) else {
            continue;
        };
        let here = join(&key);
        if field.is_map() {
            let value_field = inner.map_entry_value_field();
            if let (Kind::Message(values), Value::Object(entries)) = (value_field.kind(), child) {
                if !is_leaf(&values) {
                    for (k, v) in entries.iter_mut() {
                        check_fields(&values, v, &format!("{here}[{k}]"), depth + 1, prune, found);
                    }
                }
            }
        } else if is_leaf(&inner) {
            continue;
        } else if field.is_list() {
            if let Value::Array(items) = child {
                for (i, item) in items.iter_mut().enumerate() {
                    check_fields(
                        &inner,
                        item,
                        &format!("{here}[{i}]"),
                        depth + 1,
                        prune,
                        found,
                    );
                }
            }
        } else {
            check_fields(&inner, child, &here, depth + 1, prune, found);
        }
    }
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(Schema::load);

struct Schema {
    pool: DescriptorPool,
    envelope: MessageDescriptor,
    /// Full field names (`package.Message.field`) listed in `omitempty.txt`.
    omit_zero: HashSet<String>,
}

/// Serves the embedded sources to the compiler, which asks for imports by name.
struct EmbeddedFiles;

impl protox::file::FileResolver for EmbeddedFiles {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match PROTO_FILES.iter().find(|(file, _)| *file == name) {
            Some((file, source)) => protox::file::File::from_source(file, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

impl Schema {
    fn load() -> Self {
        let mut compiler = protox::Compiler::with_file_resolver(EmbeddedFiles);
        // The sources are fixed at build time and every test run compiles them, so a failure
        // here is a broken build, never something a request can cause.
        compiler
            .open_files(PROTO_FILES.iter().map(|(name, _)| name))
            .expect("the embedded Kubernetes .proto files compile");
        let pool = compiler.descriptor_pool();
        let envelope = pool
            .get_message_by_name(UNKNOWN)
            .expect("runtime.Unknown is among the embedded sources");
        let omit_zero = OMITEMPTY
            .lines()
            .filter(|line| !line.starts_with('#'))
            .flat_map(|line| {
                let mut words = line.split_whitespace();
                let message = words.next().unwrap_or_default();
                words.map(move |field| format!("{message}.{field}"))
            })
            .collect();
        Schema {
            pool,
            envelope,
            omit_zero,
        }
    }

    /// The message for a kind, if its schema is embedded and it is a whole object (one with
    /// `metadata`) or one of the meta options kinds, so that a body cannot name some inner
    /// type such as `PodSpec`.
    fn object_descriptor(&self, api_version: &str, kind: &str) -> Option<MessageDescriptor> {
        if !is_identifier(kind) {
            return None;
        }
        if META_OPTION_KINDS.contains(&kind) {
            return self.pool.get_message_by_name(&format!("{META_V1}.{kind}"));
        }
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) if !group.is_empty() => (group, version),
            Some(_) => return None,
            None => ("", api_version),
        };
        if !is_identifier(version) {
            return None;
        }
        let (_, package) = GROUP_PACKAGES.iter().find(|(g, _)| *g == group)?;
        let message = self
            .pool
            .get_message_by_name(&format!("{package}.{version}.{kind}"))?;
        let metadata = message.get_field_by_name("metadata")?;
        match metadata.kind() {
            Kind::Message(m) if m.full_name() == OBJECT_META || m.full_name() == LIST_META => {
                Some(message)
            }
            _ => None,
        }
    }

    /// Adds the JSON fields of `message` to `out`. Absent fields stay absent.
    fn fields_into(
        &self,
        message: &DynamicMessage,
        depth: usize,
        out: &mut Map<String, Value>,
    ) -> Result<(), ProtobufError> {
        if depth > MAX_DEPTH {
            return Err(ProtobufError::TooDeep);
        }
        for (field, value) in message.fields() {
            let name = field.name();
            let full_name = field.full_name();
            if let ProtoValue::Message(inner) = value {
                if INLINE_FIELDS.contains(&full_name) {
                    self.fields_into(inner, depth + 1, out)?;
                    continue;
                }
            }
            if is_zero(value) && self.omit_zero.contains(full_name) {
                continue;
            }
            if let Some(json) = self
                .value(value, depth)
                .map_err(|e| e.within(Segment::Field(name)))?
            {
                out.insert(name.to_owned(), json);
            }
        }
        Ok(())
    }

    /// The JSON for one value; `None` for a value Go would write as `null` (an unset time),
    /// which a field then leaves out.
    fn value(&self, value: &ProtoValue, depth: usize) -> Result<Option<Value>, ProtobufError> {
        Ok(Some(match value {
            ProtoValue::Bool(b) => Value::Bool(*b),
            ProtoValue::I32(n) => Value::from(*n),
            ProtoValue::I64(n) => Value::from(*n),
            ProtoValue::U32(n) => Value::from(*n),
            ProtoValue::U64(n) => Value::from(*n),
            ProtoValue::F32(f) => float(f64::from(*f))?,
            ProtoValue::F64(f) => float(*f)?,
            ProtoValue::String(s) => Value::String(s.clone()),
            ProtoValue::Bytes(b) => Value::String(BASE64.encode(b)),
            ProtoValue::EnumNumber(n) => Value::from(*n),
            ProtoValue::Message(m) => return self.message(m, depth + 1),
            ProtoValue::List(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        self.value(item, depth)
                            .map(|v| v.unwrap_or(Value::Null))
                            .map_err(|e| e.within(Segment::Index(i)))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            ProtoValue::Map(entries) => {
                // Sorted as Go writes map keys, whether or not serde_json keeps insertion
                // order.
                let mut entries: Vec<_> = entries.iter().map(|(k, v)| (map_key(k), v)).collect();
                entries.sort_by(|(a, _), (b, _)| a.cmp(b));
                let mut object = Map::new();
                for (key, item) in entries {
                    let json = self
                        .value(item, depth)
                        .map_err(|e| e.within(Segment::Key(&key)))?;
                    object.insert(key, json.unwrap_or(Value::Null));
                }
                Value::Object(object)
            }
        }))
    }

    fn message(
        &self,
        message: &DynamicMessage,
        depth: usize,
    ) -> Result<Option<Value>, ProtobufError> {
        if depth > MAX_DEPTH {
            return Err(ProtobufError::TooDeep);
        }
        match message.descriptor().full_name() {
            TIME => time(message),
            MICRO_TIME => micro_time(message),
            DURATION => Ok(Some(Value::String(go_duration(int_field(
                message, "duration",
            ))))),
            INT_OR_STRING => int_or_string(message).map(Some),
            QUANTITY | QUANTITY_VALUE => quantity(message).map(Some),
            RAW_EXTENSION => raw_extension(&bytes_field(message, "raw"), depth),
            FIELDS_V1 => {
                let raw = bytes_field(message, "Raw");
                if raw.is_empty() {
                    return Ok(None);
                }
                serde_json::from_slice(&raw)
                    .map(Some)
                    .map_err(|e| ProtobufError::invalid(format!("fieldsV1 is not JSON: {e}")))
            }
            VERBS => match message.get_field_by_name("items").as_deref() {
                Some(items @ ProtoValue::List(_)) => self.value(items, depth),
                _ => Ok(Some(Value::Array(Vec::new()))),
            },
            _ => {
                let mut out = Map::new();
                self.fields_into(message, depth, &mut out)?;
                Ok(Some(Value::Object(out)))
            }
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether Go's `omitempty` would treat the value as empty.
fn is_zero(value: &ProtoValue) -> bool {
    match value {
        ProtoValue::Bool(b) => !b,
        ProtoValue::I32(n) => *n == 0,
        ProtoValue::I64(n) => *n == 0,
        ProtoValue::U32(n) => *n == 0,
        ProtoValue::U64(n) => *n == 0,
        ProtoValue::F32(f) => *f == 0.0,
        ProtoValue::F64(f) => *f == 0.0,
        ProtoValue::String(s) => s.is_empty(),
        ProtoValue::Bytes(b) => b.is_empty(),
        ProtoValue::EnumNumber(n) => *n == 0,
        ProtoValue::Message(_) | ProtoValue::List(_) | ProtoValue::Map(_) => false,
    }
}

fn float(f: f64) -> Result<Value, ProtobufError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| ProtobufError::invalid(format!("{f} is not a JSON number")))
}

/// Go's JSON writes map keys as strings whatever their type.
fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn bytes_field(message: &DynamicMessage, name: &str) -> Vec<u8> {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_bytes().map(|b| b.to_vec()))
        .unwrap_or_default()
}

fn int_field(message: &DynamicMessage, name: &str) -> i64 {
    message
        .get_field_by_name(name)
        .and_then(|v| match v.as_ref() {
            ProtoValue::I64(n) => Some(*n),
            ProtoValue::I32(n) => Some(i64::from(*n)),
            _ => None,
        })
        .unwrap_or(0)
}

/// `metav1.Time`: whole seconds (Go drops `nanos` when decoding it), or `None` when unset,
/// which Go writes as an empty message.
fn time(message: &DynamicMessage) -> Result<Option<Value>, ProtobufError> {
    let seconds = int_field(message, "seconds");
    if seconds == 0 || seconds == GO_ZERO_TIME_UNIX {
        return Ok(None);
    }
    rfc3339(seconds, None).map(|s| Some(Value::String(s)))
}

/// `metav1.MicroTime`: RFC 3339 with exactly six fractional digits, as Go prints it.
fn micro_time(message: &DynamicMessage) -> Result<Option<Value>, ProtobufError> {
    let nanos = int_field(message, "nanos");
    let seconds = int_field(message, "seconds").saturating_add(nanos.div_euclid(1_000_000_000));
    let nanos = nanos.rem_euclid(1_000_000_000);
    if nanos == 0 && (seconds == 0 || seconds == GO_ZERO_TIME_UNIX) {
        return Ok(None);
    }
    rfc3339(seconds, Some(nanos / 1000)).map(|s| Some(Value::String(s)))
}

/// Formats a UTC time; years outside 0000–9999 are refused, as Go's JSON refuses them.
fn rfc3339(seconds: i64, micros: Option<i64>) -> Result<String, ProtobufError> {
    const FIRST: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(FIRST..=LAST).contains(&seconds) {
        return Err(ProtobufError::invalid(format!(
            "time {seconds}s since the Unix epoch is outside the years 0000 to 9999"
        )));
    }
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let fraction = micros.map(|m| format!(".{m:06}")).unwrap_or_default();
    Ok(format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z"
    ))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Go's `time.Duration.String()`, which is how `metav1.Duration` appears in JSON: `1m30s`,
/// `1h0m0s`, `1.5s`, `250ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    /// Writes `v / 10^prec` with its fraction, trailing zeros (and a bare point) left out,
    /// and returns the integer part.
    fn fraction(out: &mut Vec<u8>, mut v: u64, prec: usize) -> u64 {
        let mut printing = false;
        for _ in 0..prec {
            let digit = (v % 10) as u8;
            printing |= digit != 0;
            if printing {
                out.push(b'0' + digit);
            }
            v /= 10;
        }
        if printing {
            out.push(b'.');
        }
        v
    }
    fn integer(out: &mut Vec<u8>, mut v: u64) {
        loop {
            out.push(b'0' + (v % 10) as u8);
            v /= 10;
            if v == 0 {
                break;
            }
        }
    }
    // Built backwards, as Go does, then reversed.
    let mut out = Vec::with_capacity(32);
    let mut u = nanos.unsigned_abs();
    if u < 1_000_000_000 {
        out.push(b's');
        let prec = match u {
            0 => return "0s".to_owned(),
            1..=999 => {
                out.push(b'n');
                0
            }
            1_000..=999_999 => {
                // 'µ' in UTF-8, reversed.
                out.extend_from_slice(&[0xB5, 0xC2]);
                3
            }
            _ => {
                out.push(b'm');
                6
            }
        };
        u = fraction(&mut out, u, prec);
        integer(&mut out, u);
    } else {
        out.push(b's');
        u = fraction(&mut out, u, 9);
        integer(&mut out, u % 60);
        u /= 60;
        if u > 0 {
            out.push(b'm');
            integer(&mut out, u % 60);
            u /= 60;
            if u > 0 {
                out.push(b'h');
                integer(&mut out, u);
            }
        }
    }
    if nanos < 0 {
        out.push(b'-');
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

fn int_or_string(message: &DynamicMessage) -> Result<Value, ProtobufError> {
    match int_field(message, "type") {
        0 => Ok(Value::from(int_field(message, "intVal"))),
        1 => Ok(Value::String(string_field(message, "strVal"))),
        other => Err(ProtobufError::invalid(format!(
            "IntOrString type {other} is neither 0 (int) nor 1 (string)"
        ))),
    }
}

/// A quantity's string as sent; an absent one is Go's zero quantity, and an empty one is
/// what Go's decoder rejects.
fn quantity(message: &DynamicMessage) -> Result<Value, ProtobufError> {
    if !message.has_field_by_name("string") {
        return Ok(Value::String("0".into()));
    }
    let s = string_field(message, "string");
    if s.is_empty() {
        return Err(ProtobufError::invalid("a quantity cannot be empty"));
    }
    Ok(Value::String(s))
}

/// A raw extension holds an embedded object: JSON as is, or a nested protobuf body, which
/// is decoded the same way as the outer one.
fn raw_extension(raw: &[u8], depth: usize) -> Result<Option<Value>, ProtobufError> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.starts_with(MAGIC) {
        return decode_at(raw, depth + 1).map(Some);
    }
    serde_json::from_slice(raw).map(Some).map_err(|e| {
        ProtobufError::invalid(format!(
            "an embedded object is neither JSON nor Kubernetes protobuf: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::prost::Message as _;
    use serde_json::json;

    // Protobuf wire helpers, to spell out bodies byte for byte as Go writes them.

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes_field_wire(number: u64, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(number << 3 | 2, &mut out);
        varint(data.len() as u64, &mut out);
        out.extend_from_slice(data);
        out
    }

    fn varint_field_wire(number: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(number << 3, &mut out);
        varint(v, &mut out);
        out
    }

    /// The envelope Go's protobuf serializer writes around an object's message.
    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = bytes_field_wire(1, api_version.as_bytes());
        type_meta.extend(bytes_field_wire(2, kind.as_bytes()));
        let mut body = MAGIC.to_vec();
        body.extend(bytes_field_wire(1, &type_meta));
        body.extend(bytes_field_wire(2, raw));
        body.extend(bytes_field_wire(3, b""));
        body.extend(bytes_field_wire(4, b""));
        body
    }

    /// Go's ObjectMeta with only a name: every non-pointer field is written, zero or not.
    fn go_object_meta(name: &str) -> Vec<u8> {
        let mut meta = bytes_field_wire(1, name.as_bytes());
        for number in 2..=6 {
            meta.extend(bytes_field_wire(number, b""));
        }
        meta.extend(varint_field_wire(7, 0));
        meta.extend(bytes_field_wire(8, b"")); // the zero creationTimestamp
        meta
    }

    /// Encodes an object given in the proto3 JSON form of its message (the form that
    /// prost-reflect reads), so tests can state messages briefly, zero fields included.
    fn encode(message: &str, proto_json: Value) -> Vec<u8> {
        let descriptor = SCHEMA
            .pool
            .get_message_by_name(message)
            .unwrap_or_else(|| panic!("no message {message}"));
        DynamicMessage::deserialize(descriptor, proto_json)
            .unwrap_or_else(|e| panic!("bad test message {message}: {e}"))
            .encode_to_vec()
    }

    fn deployment_body() -> Vec<u8> {
        let raw = encode(
            "k8s.io.api.apps.v1.Deployment",
            json!({
                "metadata": {
                    "name": "web", "generateName": "", "namespace": "", "selfLink": "",
                    "uid": "", "resourceVersion": "", "generation": 0,
                    "creationTimestamp": {"seconds": 1767323045, "nanos": 0},
                    "labels": {"app": "web"},
                },
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"name": "", "namespace": "", "generation": 0,
                                     "creationTimestamp": {}, "labels": {"app": "web"}},
                        "spec": {
                            "containers": [{
                                "name": "nginx", "image": "nginx:1.27", "workingDir": "",
                                "resources": {"limits": {"cpu": {"string": "500m"},
                                                         "memory": {"string": "128Mi"}}},
                                "terminationMessagePath": "", "imagePullPolicy": "",
                                "stdin": false, "stdinOnce": false, "tty": false,
                            }],
                            "restartPolicy": "", "dnsPolicy": "", "serviceAccountName": "",
                            "hostNetwork": false, "securityContext": {}, "schedulerName": "",
                        },
                    },
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {
                            "maxUnavailable": {"type": 0, "intVal": 1},
                            "maxSurge": {"type": 1, "strVal": "25%"},
                        },
                    },
                    "minReadySeconds": 0,
                    "paused": false,
                },
                "status": {"observedGeneration": 0, "replicas": 0, "readyReplicas": 0},
            }),
        );
        envelope("apps/v1", "Deployment", &raw)
    }

    #[test]
    fn docker_registry_secret_as_kubectl_sends_it() {
        let config =
            br#"{"auths":{"localhost:5000":{"username":"u","password":"p","auth":"dTpw"}}}"#;
        let mut entry = bytes_field_wire(1, b".dockerconfigjson");
        entry.extend(bytes_field_wire(2, config));
        let mut secret = bytes_field_wire(1, &go_object_meta("regcred"));
        secret.extend(bytes_field_wire(2, &entry));
        secret.extend(bytes_field_wire(3, b"kubernetes.io/dockerconfigjson"));
        let body = envelope("v1", "Secret", &secret);
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "regcred"},
                "data": {".dockerconfigjson": BASE64.encode(config)},
                "type": "kubernetes.io/dockerconfigjson",
            })
        );
    }

    #[test]
    fn namespace_as_kubectl_sends_it() {
        let mut namespace = bytes_field_wire(1, &go_object_meta("x"));
        namespace.extend(bytes_field_wire(2, b"")); // spec
        namespace.extend(bytes_field_wire(3, &bytes_field_wire(1, b""))); // status.phase ""
        let body = envelope("v1", "Namespace", &namespace);
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"},
                   "spec": {}, "status": {}})
        );
    }

    #[test]
    fn deployment_with_int_or_string_quantities_and_time() {
        // The zero fields really are on the wire, as Go puts them there.
        let body = deployment_body();
        let envelope = DynamicMessage::decode(SCHEMA.envelope.clone(), &body[MAGIC.len()..]);
        let raw = bytes_field(&envelope.unwrap(), "raw");
        let descriptor = SCHEMA.object_descriptor("apps/v1", "Deployment").unwrap();
        let deployment = DynamicMessage::decode(descriptor, raw.as_slice()).unwrap();
        let metadata = deployment.get_field_by_name("metadata").unwrap();
        let metadata = metadata.as_message().unwrap();
        assert!(metadata.has_field_by_name("namespace") && metadata.has_field_by_name("uid"));

        assert_eq!(
            decode(&deployment_body()).unwrap(),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": "web",
                    "creationTimestamp": "2026-01-02T03:04:05Z",
                    "labels": {"app": "web"},
                },
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "containers": [{
                                "name": "nginx",
                                "image": "nginx:1.27",
                                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                            }],
                            "securityContext": {},
                        },
                    },
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"},
                    },
                },
                "status": {},
            })
        );
    }

    #[test]
    fn zero_pointer_fields_are_kept() {
        let raw = encode(
            "k8s.io.api.apps.v1.Deployment",
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 0}}),
        );
        let object = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(object["spec"], json!({"replicas": 0}));

        let raw = encode(
            "k8s.io.api.core.v1.ServiceAccount",
            json!({
                "metadata": {"name": "builder"},
                "secrets": [{"name": "token"}],
                "imagePullSecrets": [{"name": "regcred"}],
                "automountServiceAccountToken": false,
            }),
        );
        assert_eq!(
            decode(&envelope("v1", "ServiceAccount", &raw)).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "builder"},
                "secrets": [{"name": "token"}],
                "imagePullSecrets": [{"name": "regcred"}],
                "automountServiceAccountToken": false,
            })
        );
    }

    #[test]
    fn secret_and_config_map_data() {
        let raw = encode(
            "k8s.io.api.core.v1.Secret",
            json!({
                "metadata": {"name": "s", "namespace": "ns", "annotations": {"a": "b"}},
                "data": {"password": BASE64.encode(b"hunter2"), "empty": ""},
                "stringData": {"user": "admin"},
                "type": "Opaque",
                "immutable": true,
            }),
        );
        assert_eq!(
            decode(&envelope("v1", "Secret", &raw)).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s", "namespace": "ns", "annotations": {"a": "b"}},
                "data": {"password": "aHVudGVyMg==", "empty": ""},
                "stringData": {"user": "admin"},
                "type": "Opaque",
                "immutable": true,
            })
        );

        let raw = encode(
            "k8s.io.api.core.v1.ConfigMap",
            json!({
                "metadata": {"name": "cm"},
                "data": {"a.txt": "hello", "blank": ""},
                "binaryData": {"b.bin": BASE64.encode([0u8, 1, 2])},
            }),
        );
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", &raw)).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cm"},
                "data": {"a.txt": "hello", "blank": ""},
                "binaryData": {"b.bin": "AAEC"},
            })
        );
    }

    #[test]
    fn embedded_go_structs_are_flattened() {
        let raw = encode(
            "k8s.io.api.core.v1.Pod",
            json!({
                "metadata": {"name": "p"},
                "spec": {
                    "containers": [{
                        "name": "c",
                        "image": "busybox",
                        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {
                            "localObjectReference": {"name": "s"}, "key": "password"}}}],
                        "livenessProbe": {
                            "handler": {"httpGet": {"path": "/healthz",
                                                    "port": {"type": 0, "intVal": 8080}}},
                            "periodSeconds": 10,
                        },
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    }],
                    "volumes": [{"name": "config", "volumeSource": {"configMap": {
                        "localObjectReference": {"name": "cm"}, "defaultMode": 420}}}],
                },
            }),
        );
        assert_eq!(
            decode(&envelope("v1", "Pod", &raw)).unwrap()["spec"],
            json!({
                "containers": [{
                    "name": "c",
                    "image": "busybox",
                    "env": [{"name": "PASSWORD",
                             "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}}],
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                      "periodSeconds": 10},
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                }],
                "volumes": [{"name": "config", "configMap": {"name": "cm", "defaultMode": 420}}],
            })
        );
    }

    #[test]
    fn event_lease_and_node_times() {
        let raw = encode(
            "k8s.io.api.core.v1.Event",
            json!({
                "metadata": {"name": "e", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "p"},
                "reason": "Started",
                "firstTimestamp": {"seconds": 1709208000, "nanos": 999},
                "lastTimestamp": {},
                "count": 2,
                "eventTime": {"seconds": 1767323045, "nanos": 123456789},
                "reportingComponent": "",
            }),
        );
        assert_eq!(
            decode(&envelope("v1", "Event", &raw)).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "e", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "p"},
                "reason": "Started",
                "firstTimestamp": "2024-02-29T12:00:00Z",
                "count": 2,
                "eventTime": "2026-01-02T03:04:05.123456Z",
                "reportingComponent": "",
            })
        );

        let raw = encode(
            "k8s.io.api.coordination.v1.Lease",
            json!({
                "metadata": {"name": "node-a", "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40,
                         "renewTime": {"seconds": 1767323045, "nanos": 5000}},
            }),
        );
        assert_eq!(
            decode(&envelope("coordination.k8s.io/v1", "Lease", &raw)).unwrap()["spec"],
            json!({"holderIdentity": "node-a", "leaseDurationSeconds": 40,
                   "renewTime": "2026-01-02T03:04:05.000005Z"})
        );

        let raw = encode(
            "k8s.io.api.core.v1.Node",
            json!({
                "metadata": {"name": "n"},
                "spec": {"unschedulable": false, "podCIDR": ""},
                "status": {
                    "capacity": {"cpu": {"string": "2"}, "pods": {"string": "110"}},
                    "conditions": [{"type": "Ready", "status": "True",
                                    "lastHeartbeatTime": {"seconds": 1767323045}}],
                },
            }),
        );
        assert_eq!(
            decode(&envelope("v1", "Node", &raw)).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n"},
                "spec": {},
                "status": {
                    "capacity": {"cpu": "2", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True",
                                    "lastHeartbeatTime": "2026-01-02T03:04:05Z"}],
                },
            })
        );
    }

    #[test]
    fn replica_set_with_owner_references_and_managed_fields() {
        let raw = encode(
            "k8s.io.api.apps.v1.ReplicaSet",
            json!({
                "metadata": {
                    "name": "web-5d4f", "generation": 2,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                         "name": "web", "uid": "1234", "controller": true}],
                    "finalizers": ["example.com/keep"],
                    "managedFields": [{"manager": "kubectl", "operation": "Update",
                                       "fieldsType": "FieldsV1",
                                       "fieldsV1": {"Raw": BASE64.encode(br#"{"f:spec":{}}"#)}}],
                },
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}},
            }),
        );
        assert_eq!(
            decode(&envelope("apps/v1", "ReplicaSet", &raw)).unwrap()["metadata"],
            json!({
                "name": "web-5d4f", "generation": 2,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "web", "uid": "1234", "controller": true}],
                "finalizers": ["example.com/keep"],
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
            })
        );
    }

    #[test]
    fn delete_options_under_any_api_version() {
        let raw = encode(
            "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            json!({
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "abc"},
                "propagationPolicy": "Foreground",
                "dryRun": ["All"],
            }),
        );
        for api_version in ["meta.k8s.io/v1", "v1", "apps/v1"] {
            assert_eq!(
                decode(&envelope(api_version, "DeleteOptions", &raw)).unwrap(),
                json!({
                    "apiVersion": api_version, "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": "abc"},
                    "propagationPolicy": "Foreground",
                    "dryRun": ["All"],
                })
            );
        }
        // kubectl's plain delete sends options with nothing set: an empty message.
        assert_eq!(
            decode(&envelope("v1", "DeleteOptions", b"")).unwrap(),
            json!({"apiVersion": "v1", "kind": "DeleteOptions"})
        );
    }

    #[test]
    fn raw_extensions_hold_json_or_nested_protobuf() {
        let namespace = envelope(
            "v1",
            "Namespace",
            &bytes_field_wire(1, &go_object_meta("a")),
        );
        let mut list = bytes_field_wire(2, &bytes_field_wire(1, br#"{"kind":"Pod"}"#));
        list.extend(bytes_field_wire(2, &bytes_field_wire(1, &namespace)));
        assert_eq!(
            decode(&envelope("v1", "List", &list)).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "List",
                "items": [
                    {"kind": "Pod"},
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
                ],
            })
        );

        let bad = bytes_field_wire(2, &bytes_field_wire(1, b"not json"));
        let err = decode(&envelope("v1", "List", &bad)).unwrap_err();
        assert!(
            matches!(&err, ProtobufError::InvalidValue { path, .. } if path == "items[0]"),
            "{err}"
        );
    }

    #[test]
    fn all_served_kinds_resolve_and_inner_types_do_not() {
        for (api_version, kind) in [
            ("v1", "Secret"),
            ("v1", "Namespace"),
            ("v1", "ServiceAccount"),
            ("v1", "ConfigMap"),
            ("v1", "Pod"),
            ("v1", "Event"),
            ("v1", "Node"),
            ("v1", "PodList"),
            ("apps/v1", "Deployment"),
            ("apps/v1", "ReplicaSet"),
            ("coordination.k8s.io/v1", "Lease"),
            ("meta.k8s.io/v1", "DeleteOptions"),
            ("meta.k8s.io/v1", "Status"),
            ("v1", "DeleteOptions"),
        ] {
            assert!(
                SCHEMA.object_descriptor(api_version, kind).is_some(),
                "{api_version} {kind}"
            );
        }
        for (api_version, kind) in [
            ("v1", "PodSpec"),
            ("v1", "Deployment"),
            ("apps/v2", "Deployment"),
            ("batch/v1", "Job"),
            ("/v1", "Pod"),
            ("v1/", "Pod"),
            ("v1", "Pod.Spec"),
            ("meta.k8s.io/v1", "ObjectMeta"),
        ] {
            assert!(
                SCHEMA.object_descriptor(api_version, kind).is_none(),
                "{api_version} {kind}"
            );
        }
    }

    #[test]
    fn field_tables_name_real_fields() {
        assert!(SCHEMA.omit_zero.len() > 300);
        for name in SCHEMA.omit_zero.iter().map(String::as_str) {
            let (message, field) = name.rsplit_once('.').unwrap();
            let field = SCHEMA
                .pool
                .get_message_by_name(message)
                .and_then(|m| m.get_field_by_name(field))
                .unwrap_or_else(|| panic!("omitempty.txt names no field {name}"));
            assert!(!field.is_list() && !field.is_map(), "{name}");
            assert!(!matches!(field.kind(), Kind::Message(_)), "{name}");
        }
        for name in INLINE_FIELDS {
            let (message, field) = name.rsplit_once('.').unwrap();
            let field = SCHEMA
                .pool
                .get_message_by_name(message)
                .and_then(|m| m.get_field_by_name(field))
                .unwrap_or_else(|| panic!("no inline field {name}"));
            assert!(matches!(field.kind(), Kind::Message(_)), "{name}");
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let err = |body: &[u8]| decode(body).unwrap_err();
        assert!(matches!(err(b""), ProtobufError::MissingMagic));
        assert!(matches!(err(b"k8s"), ProtobufError::MissingMagic));
        assert!(matches!(
            err(b"{\"kind\":\"Pod\"}"),
            ProtobufError::MissingMagic
        ));
        assert!(matches!(err(b"k9s\0\x0a\x00"), ProtobufError::MissingMagic));
        // A length whose varint never ends.
        assert!(matches!(err(b"k8s\0\x0a\x80"), ProtobufError::Envelope(_)));
        // A length longer than what follows.
        assert!(matches!(
            err(b"k8s\0\x0a\x10\x0a"),
            ProtobufError::Envelope(_)
        ));
        assert!(matches!(
            err(b"k8s\0"),
            ProtobufError::MissingTypeMeta("typeMeta")
        ));
        assert!(matches!(
            err(&[MAGIC, &bytes_field_wire(2, b"")[..]].concat()),
            ProtobufError::MissingTypeMeta("typeMeta")
        ));
        assert!(matches!(
            err(&envelope("", "Pod", b"")),
            ProtobufError::MissingTypeMeta("apiVersion")
        ));
        assert!(matches!(
            err(&envelope("v1", "", b"")),
            ProtobufError::MissingTypeMeta("kind")
        ));
        assert!(matches!(
            err(&envelope("v1", "Frobnicator", b"")),
            ProtobufError::UnknownKind { .. }
        ));
        assert!(matches!(
            err(&envelope("v1", "Pod", b"\xff\xff\xff")),
            ProtobufError::Message { .. }
        ));
        // metadata (field 1) given as a varint where a message belongs.
        assert!(matches!(
            err(&envelope("v1", "Pod", b"\x08\x01")),
            ProtobufError::Message { .. }
        ));
        assert!(matches!(
            err(&envelope(
                "v1",
                "Pod",
                &bytes_field_wire(1, &[0x0a, 2, 0xff, 0xfe])
            )),
            ProtobufError::Message { .. }
        ));
    }

    #[test]
    fn invalid_values_name_their_path() {
        let raw = encode(
            "k8s.io.api.apps.v1.Deployment",
            json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": {"type": 7}}}}}),
        );
        let err = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value at spec.strategy.rollingUpdate.maxSurge: \
             IntOrString type 7 is neither 0 (int) nor 1 (string)"
        );

        let raw = encode(
            "k8s.io.api.core.v1.Pod",
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b",
                "resources": {"limits": {"cpu": {"string": ""}}}}]}}),
        );
        let err = decode(&envelope("v1", "Pod", &raw)).unwrap_err();
        assert!(
            matches!(&err, ProtobufError::InvalidValue { path, .. }
                if path == "spec.containers[1].resources.limits[cpu]"),
            "{err}"
        );

        let raw = encode(
            "k8s.io.api.core.v1.Pod",
            json!({"metadata": {"creationTimestamp": {"seconds": 253402300800i64}}}),
        );
        assert!(matches!(
            decode(&envelope("v1", "Pod", &raw)).unwrap_err(),
            ProtobufError::InvalidValue { .. }
        ));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut body = envelope("v1", "List", b"");
        for _ in 0..200 {
            let list = bytes_field_wire(2, &bytes_field_wire(1, &body));
            body = envelope("v1", "List", &list);
        }
        assert!(matches!(decode(&body), Err(ProtobufError::TooDeep)));
    }

    #[test]
    fn deeply_nested_unknown_groups_are_refused() {
        let mut raw = Vec::new();
        raw.extend([0xa3, 0x06].repeat(100_000)); // start group, field 100
        raw.extend([0xa4, 0x06].repeat(100_000)); // end group, field 100
        assert!(matches!(
            decode(&envelope("v1", "Pod", &raw)),
            Err(ProtobufError::Message { .. })
        ));
        let body = [MAGIC, &raw[..]].concat();
        assert!(matches!(decode(&body), Err(ProtobufError::Envelope(_))));
    }

    #[test]
    fn mangled_bodies_never_panic() {
        let seeds = [
            deployment_body(),
            envelope(
                "v1",
                "Namespace",
                &bytes_field_wire(1, &go_object_meta("x")),
            ),
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..3000 {
            let mut body = seeds[round % seeds.len()].clone();
            match next() % 4 {
                0 => body.truncate(MAGIC.len() + (next() as usize) % body.len()),
                1 => {
                    for _ in 0..1 + next() % 4 {
                        let i = MAGIC.len() + (next() as usize) % (body.len() - MAGIC.len());
                        body[i] ^= 1 << (next() % 8);
                    }
                }
                2 => {
                    let i = MAGIC.len() + (next() as usize) % (body.len() - MAGIC.len());
                    body[i] = next() as u8;
                }
                _ => {
                    body.truncate(MAGIC.len());
                    body.extend((0..next() % 64).map(|_| next() as u8));
                }
            }
            let _ = decode(&body);
        }
    }

    #[test]
    fn times_format_like_go() {
        assert_eq!(rfc3339(0, None).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_709_208_000, None).unwrap(),
            "2024-02-29T12:00:00Z"
        );
        assert_eq!(
            rfc3339(-1, Some(999_999)).unwrap(),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            rfc3339(253_402_300_799, None).unwrap(),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            rfc3339(-62_167_219_200, None).unwrap(),
            "0000-01-01T00:00:00Z"
        );
        assert!(rfc3339(253_402_300_800, None).is_err());
        assert!(rfc3339(i64::MIN, None).is_err());
    }

    #[test]
    fn durations_format_like_go() {
        let second = 1_000_000_000;
        for (nanos, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (250_000_000, "250ms"),
            (second, "1s"),
            (1_500_000_000, "1.5s"),
            (90 * second, "1m30s"),
            (3600 * second, "1h0m0s"),
            (3723 * second + 4, "1h2m3.000000004s"),
            (-second, "-1s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (i64::MAX, "2562047h47m16.854775807s"),
        ] {
            assert_eq!(go_duration(nanos), text, "{nanos}");
        }
        let descriptor = SCHEMA.pool.get_message_by_name(DURATION).unwrap();
        let message =
            DynamicMessage::deserialize(descriptor, json!({"duration": 90 * second})).unwrap();
        assert_eq!(SCHEMA.message(&message, 0).unwrap(), Some(json!("1m30s")));
    }
}
