//! The Swagger 2.0 document served at `/openapi/v2`, in the protobuf form of gnostic's
//! `openapi.v2.Document` (github.com/google/gnostic-models, `openapiv2/OpenAPIv2.proto`).
//!
//! kubectl 1.27 downloads this document before `apply` and the other commands that validate
//! with the default `--validate=strict`, and gives up when the server has none; later
//! versions still fall back to it when `/openapi/v3` fails. It is only read as protobuf
//! (`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), so JSON would not
//! do. Two things in it matter to kubectl:
//!
//! - the definitions, from which kubectl builds its models and which must resolve every
//!   `$ref`. There are none and nothing refers to one, so the models are empty: kubectl then
//!   computes strategic merge patches from the types compiled into it and JSON merge
//!   patches for everything else, as it does for a server without OpenAPI;
//! - when `/openapi/v3` does not answer, the PATCH operation whose
//!   `x-kubernetes-group-version-kind` names the object's kind: taking the `fieldValidation`
//!   query parameter, it tells kubectl to leave unknown fields to the server rather than
//!   validate them itself. A kind missing here is taken for a custom resource and sends
//!   kubectl to list the CustomResourceDefinitions, so every kind served belongs here.
//!
//! The protobuf encoding is written out here: the document needs only varints and
//! length-delimited fields, and those few field numbers are cheaper to keep than a code
//! generator.

/// The `Content-Type` to answer with. kubectl asks for
/// `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, but `@` is not allowed in a
/// media type and client-go rejects a response labelled so ("mime: unexpected content after
/// media subtype"); Kubernetes answers with this spelling, which client-go accepts.
pub const CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// One kind served: group ("" for core), version, kind, and the URL paths of its collection and item
/// (e.g. "/apis/apps/v1/namespaces/{namespace}/deployments" and ".../{name}").
pub struct Operation<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub collection_path: &'a str,
    pub item_path: &'a str,
}

/// The protobuf bytes of a Swagger 2.0 document listing, for each kind, POST on the collection and GET, PUT, PATCH, DELETE on the item, each with x-kubernetes-group-version-kind, and the query parameters dryRun, fieldManager and fieldValidation on POST, PUT and PATCH.
pub fn document(title: &str, version: &str, operations: &[Operation<'_>]) -> Vec<u8> {
    let mut info = Message::default();
    info.string(field::info::TITLE, title)
        .string(field::info::VERSION, version);

    let mut paths = Message::default();
    for op in operations {
        let mut collection = Message::default();
        collection.message(field::path_item::POST, operation(op, "create", WRITE_BODY));
        paths.message(
            field::paths::PATH,
            named_path_item(op.collection_path, collection),
        );

        let mut item = Message::default();
        item.message(field::path_item::GET, operation(op, "read", &[]))
            .message(field::path_item::PUT, operation(op, "replace", WRITE_BODY))
            .message(field::path_item::DELETE, operation(op, "delete", &[]))
            .message(field::path_item::PATCH, operation(op, "patch", PATCH_BODY));
        paths.message(field::paths::PATH, named_path_item(op.item_path, item));
    }

    let mut doc = Message::default();
    doc.string(field::document::SWAGGER, "2.0")
        .message(field::document::INFO, info)
        .message(field::document::PATHS, paths);
    doc.0
}

/// Bodies of create and replace, as the OpenAPI v3 documents list them.
const WRITE_BODY: &[&str] = &["application/json", "application/yaml"];

/// Patch types accepted, so that a client choosing one from the document finds a usable one.
const PATCH_BODY: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// The query parameters of the writing verbs, `fieldValidation` being the one kubectl looks for.
const WRITE_QUERY_PARAMETERS: &[(&str, &str)] = &[
    (
        "dryRun",
        "When present, indicates that modifications should not be persisted.",
    ),
    (
        "fieldManager",
        "A name associated with the actor or entity that is making these changes.",
    ),
    (
        "fieldValidation",
        "How the server handles unknown or duplicate fields in the object: Ignore, Warn or Strict.",
    ),
];

/// `body` is the request's media types; a verb that takes a body also takes the write query
/// parameters.
fn operation(op: &Operation<'_>, verb: &str, body: &[&str]) -> Message {
    let mut m = Message::default();
    m.string(field::operation::OPERATION_ID, &operation_id(verb, op));
    for media_type in body {
        m.string(field::operation::CONSUMES, media_type);
    }
    if !body.is_empty() {
        for (name, description) in WRITE_QUERY_PARAMETERS {
            m.message(
                field::operation::PARAMETERS,
                query_parameter(name, description),
            );
        }
    }
    m.message(field::operation::RESPONSES, ok_responses())
        .message(
            field::operation::VENDOR_EXTENSION,
            group_version_kind(op.group, op.version, op.kind),
        );
    m
}

/// Swagger wants operation ids unique across the document, and a kind may be served in
/// several versions, so the id carries the group-version as Kubernetes' ids do
/// (`patchAppsV1NamespacedDeployment`).
fn operation_id(verb: &str, op: &Operation<'_>) -> String {
    let group = op.group.strip_suffix(".k8s.io").unwrap_or(op.group);
    let mut id = verb.to_string();
    if group.is_empty() {
        id.push_str("Core");
    }
    for word in group.split(['.', '-']) {
        id.push_str(&capitalized(word));
    }
    id.push_str(&capitalized(op.version));
    if op.collection_path.contains("{namespace}") {
        id.push_str("Namespaced");
    }
    id.push_str(op.kind);
    id
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A `ParametersItem` holding an optional string query parameter, inline rather than a
/// `$ref` so that nothing needs resolving.
fn query_parameter(name: &str, description: &str) -> Message {
    let mut query = Message::default();
    query
        .string(field::query_parameter::IN, "query")
        .string(field::query_parameter::DESCRIPTION, description)
        .string(field::query_parameter::NAME, name)
        .string(field::query_parameter::TYPE, "string")
        .boolean(field::query_parameter::UNIQUE_ITEMS, true);
    let mut non_body = Message::default();
    non_body.message(field::non_body_parameter::QUERY_PARAMETER_SUB_SCHEMA, query);
    let mut parameter = Message::default();
    parameter.message(field::parameter::NON_BODY_PARAMETER, non_body);
    let mut item = Message::default();
    item.message(field::parameters_item::PARAMETER, parameter);
    item
}

/// Swagger requires every operation to describe at least one response.
fn ok_responses() -> Message {
    let mut response = Message::default();
    response.string(field::response::DESCRIPTION, "OK");
    let mut value = Message::default();
    value.message(field::response_value::RESPONSE, response);
    let mut named = Message::default();
    named
        .string(field::named::NAME, "200")
        .message(field::named::VALUE, value);
    let mut responses = Message::default();
    responses.message(field::responses::RESPONSE_CODE, named);
    responses
}

/// kubectl reads vendor extensions from the YAML text of `Any`, not from its
/// `google.protobuf.Any`, and unmarshals it into a map of strings; the text is laid out as
/// Kubernetes' own server writes it (`group: apps\nkind: Deployment\nversion: v1\n`).
fn group_version_kind(group: &str, version: &str, kind: &str) -> Message {
    let yaml = format!(
        "group: {}\nkind: {}\nversion: {}\n",
        yaml_scalar(group),
        yaml_scalar(kind),
        yaml_scalar(version)
    );
    let mut any = Message::default();
    any.string(field::any::YAML, &yaml);
    let mut named = Message::default();
    named
        .string(field::named::NAME, "x-kubernetes-group-version-kind")
        .message(field::named::VALUE, any);
    named
}

/// Words YAML 1.1 reads as booleans or null when unquoted.
const YAML_KEYWORDS: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

/// A YAML scalar that reads back as exactly `s`: plain when that is unambiguous, else
/// double-quoted. The empty core group must be quoted, since `group:` alone is null.
fn yaml_scalar(s: &str) -> String {
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !YAML_KEYWORDS.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn named_path_item(path: &str, item: Message) -> Message {
    let mut named = Message::default();
    named
        .string(field::named::NAME, path)
        .message(field::named::VALUE, item);
    named
}

/// Field numbers of the messages used, from gnostic's `OpenAPIv2.proto`.
mod field {
    pub mod document {
        pub const SWAGGER: u32 = 1;
        pub const INFO: u32 = 2;
        pub const PATHS: u32 = 8;
    }
    pub mod info {
        pub const TITLE: u32 = 1;
        pub const VERSION: u32 = 2;
    }
    pub mod paths {
        pub const PATH: u32 = 2;
    }
    /// `NamedPathItem`, `NamedResponseValue` and `NamedAny` share their layout.
    pub mod named {
        pub const NAME: u32 = 1;
        pub const VALUE: u32 = 2;
    }
    pub mod path_item {
        pub const GET: u32 = 2;
        pub const PUT: u32 = 3;
        pub const POST: u32 = 4;
        pub const DELETE: u32 = 5;
        pub const PATCH: u32 = 8;
    }
    pub mod operation {
        pub const OPERATION_ID: u32 = 5;
        pub const CONSUMES: u32 = 7;
        pub const PARAMETERS: u32 = 8;
        pub const RESPONSES: u32 = 9;
        pub const VENDOR_EXTENSION: u32 = 13;
    }
    pub mod parameters_item {
        pub const PARAMETER: u32 = 1;
    }
    pub mod parameter {
        pub const NON_BODY_PARAMETER: u32 = 2;
    }
    pub mod non_body_parameter {
        pub const QUERY_PARAMETER_SUB_SCHEMA: u32 = 3;
    }
    pub mod query_parameter {
        pub const IN: u32 = 2;
        pub const DESCRIPTION: u32 = 3;
        pub const NAME: u32 = 4;
        pub const TYPE: u32 = 6;
        pub const UNIQUE_ITEMS: u32 = 20;
    }
    pub mod responses {
        pub const RESPONSE_CODE: u32 = 1;
    }
    pub mod response_value {
        pub const RESPONSE: u32 = 1;
    }
    pub mod response {
        pub const DESCRIPTION: u32 = 1;
    }
    pub mod any {
        pub const YAML: u32 = 2;
    }
}

/// The encoded fields of one protobuf message, written in the order given. Callers write
/// them in field-number order, so the bytes are those protobuf libraries produce for the
/// same document.
#[derive(Default)]
struct Message(Vec<u8>);

const WIRE_VARINT: u64 = 0;
const WIRE_LEN: u64 = 2;

impl Message {
    fn key(&mut self, field: u32, wire_type: u64) {
        varint(&mut self.0, (u64::from(field) << 3) | wire_type);
    }

    fn bytes(&mut self, field: u32, data: &[u8]) -> &mut Self {
        self.key(field, WIRE_LEN);
        varint(&mut self.0, data.len() as u64);
        self.0.extend_from_slice(data);
        self
    }

    /// proto3 leaves empty strings out; a reader sees the same default either way.
    fn string(&mut self, field: u32, s: &str) -> &mut Self {
        if s.is_empty() {
            return self;
        }
        self.bytes(field, s.as_bytes())
    }

    fn boolean(&mut self, field: u32, b: bool) -> &mut Self {
        if b {
            self.key(field, WIRE_VARINT);
            varint(&mut self.0, 1);
        }
        self
    }

    /// Written even when empty: the presence of a sub-message, such as a path's PATCH
    /// operation or a oneof branch, is itself information.
    fn message(&mut self, field: u32, m: Message) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(((v & 0x7f) as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field read back: its number and either a varint or length-delimited bytes.
    #[derive(Debug, Clone, PartialEq)]
    enum Value {
        Varint(u64),
        Bytes(Vec<u8>),
    }

    fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = buf[*pos];
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
            assert!(shift < 64, "varint too long");
        }
    }

    /// Decodes one message strictly: only wire types 0 and 2, no field 0, nothing left over.
    fn decode(buf: &[u8]) -> Vec<(u32, Value)> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < buf.len() {
            let key = read_varint(buf, &mut pos);
            let field = u32::try_from(key >> 3).expect("field number");
            assert_ne!(field, 0, "field 0");
            match key & 7 {
                0 => out.push((field, Value::Varint(read_varint(buf, &mut pos)))),
                2 => {
                    let len = read_varint(buf, &mut pos) as usize;
                    assert!(pos + len <= buf.len(), "length past the end");
                    out.push((field, Value::Bytes(buf[pos..pos + len].to_vec())));
                    pos += len;
                }
                w => panic!("wire type {w} in field {field}"),
            }
        }
        out
    }

    fn all(buf: &[u8], field: u32) -> Vec<Vec<u8>> {
        decode(buf)
            .into_iter()
            .filter(|(f, _)| *f == field)
            .map(|(_, v)| match v {
                Value::Bytes(b) => b,
                Value::Varint(_) => panic!("field {field} is a varint"),
            })
            .collect()
    }

    /// The last occurrence wins for a singular field, as in protobuf.
    fn one(buf: &[u8], field: u32) -> Option<Vec<u8>> {
        all(buf, field).pop()
    }

    fn text(buf: &[u8], field: u32) -> String {
        one(buf, field)
            .map(|b| String::from_utf8(b).expect("utf-8"))
            .unwrap_or_default()
    }

    fn fields(buf: &[u8]) -> Vec<u32> {
        decode(buf).into_iter().map(|(f, _)| f).collect()
    }

    /// The YAML subset kubectl's `yaml.Unmarshal` into `map[string]string` sees here.
    fn yaml_map(yaml: &str) -> Vec<(String, String)> {
        yaml.lines()
            .map(|line| {
                let (k, v) = line.split_once(": ").expect("key: value");
                let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
                    None => v.to_string(),
                };
                (k.to_string(), v)
            })
            .collect()
    }

    fn lookup<'a>(map: &'a [(String, String)], key: &str) -> &'a str {
        map.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// cli-runtime's `hasGVKExtension`: only the first non-empty
    /// `x-kubernetes-group-version-kind` counts.
    fn has_gvk_extension(op: &[u8], group: &str, version: &str, kind: &str) -> bool {
        for ext in all(op, field::operation::VENDOR_EXTENSION) {
            let yaml = one(&ext, field::named::VALUE)
                .map(|any| text(&any, field::any::YAML))
                .unwrap_or_default();
            if yaml.is_empty()
                || text(&ext, field::named::NAME) != "x-kubernetes-group-version-kind"
            {
                continue;
            }
            let map = yaml_map(&yaml);
            return lookup(&map, "group") == group
                && lookup(&map, "kind") == kind
                && lookup(&map, "version") == version;
        }
        false
    }

    /// cli-runtime's `supportsQueryParam`: the first path whose PATCH names the kind decides.
    fn supports_query_param(
        doc: &[u8],
        group: &str,
        version: &str,
        kind: &str,
        param: &str,
    ) -> Option<bool> {
        let paths = one(doc, field::document::PATHS).unwrap_or_default();
        for path in all(&paths, field::paths::PATH) {
            let item = one(&path, field::named::VALUE).unwrap_or_default();
            let patch = one(&item, field::path_item::PATCH).unwrap_or_default();
            if !has_gvk_extension(&patch, group, version, kind) {
                continue;
            }
            let found = all(&patch, field::operation::PARAMETERS).iter().any(|p| {
                let name = one(p, field::parameters_item::PARAMETER)
                    .and_then(|p| one(&p, field::parameter::NON_BODY_PARAMETER))
                    .and_then(|p| one(&p, field::non_body_parameter::QUERY_PARAMETER_SUB_SCHEMA))
                    .map(|q| text(&q, field::query_parameter::NAME))
                    .unwrap_or_default();
                name == param
            });
            return Some(found);
        }
        None
    }

    const KINDS: &[Operation<'static>] = &[
        Operation {
            group: "",
            version: "v1",
            kind: "Namespace",
            collection_path: "/api/v1/namespaces",
            item_path: "/api/v1/namespaces/{name}",
        },
        Operation {
            group: "",
            version: "v1",
            kind: "ConfigMap",
            collection_path: "/api/v1/namespaces/{namespace}/configmaps",
            item_path: "/api/v1/namespaces/{namespace}/configmaps/{name}",
        },
        Operation {
            group: "apps",
            version: "v1",
            kind: "Deployment",
            collection_path: "/apis/apps/v1/namespaces/{namespace}/deployments",
            item_path: "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        },
        Operation {
            group: "rbac.authorization.k8s.io",
            version: "v1",
            kind: "ClusterRole",
            collection_path: "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            item_path: "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
        },
    ];

    #[test]
    fn varints_match_the_protobuf_encoding() {
        for (v, bytes) in [
            (0u64, &[0x00][..]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16_384, &[0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
        }
    }

    #[test]
    fn the_document_starts_with_the_swagger_version() {
        let doc = document("Kubernetes", "v1.33.0", KINDS);
        // Field 1, length-delimited, 3 bytes: "2.0".
        assert_eq!(&doc[..5], &[0x0a, 0x03, b'2', b'.', b'0']);
        let info = one(&doc, field::document::INFO).expect("info");
        assert_eq!(text(&info, field::info::TITLE), "Kubernetes");
        assert_eq!(text(&info, field::info::VERSION), "v1.33.0");
    }

    #[test]
    fn every_kind_supports_field_validation() {
        let doc = document("Kubernetes", "v1.33.0", KINDS);
        for k in KINDS {
            assert_eq!(
                supports_query_param(&doc, k.group, k.version, k.kind, "fieldValidation"),
                Some(true),
                "{}",
                k.kind
            );
        }
        assert_eq!(
            supports_query_param(&doc, "apps", "v1", "StatefulSet", "fieldValidation"),
            None
        );
        assert_eq!(
            supports_query_param(&doc, "apps", "v2", "Deployment", "fieldValidation"),
            None
        );
    }

    #[test]
    fn nothing_refers_to_a_definition() {
        let doc = document("Kubernetes", "v1.33.0", KINDS);
        assert_eq!(
            fields(&doc),
            vec![1, 2, 8],
            "no definitions, parameters or responses"
        );
        let paths = one(&doc, field::document::PATHS).expect("paths");
        assert_eq!(all(&paths, 1).len(), 0);
        for path in all(&paths, field::paths::PATH) {
            let item = one(&path, field::named::VALUE).expect("path item");
            assert!(!fields(&item).contains(&1), "PathItem $ref");
            assert!(!fields(&item).contains(&9), "PathItem parameters");
            for (_, op) in decode(&item) {
                let Value::Bytes(op) = op else {
                    panic!("varint in PathItem")
                };
                for p in all(&op, field::operation::PARAMETERS) {
                    assert_eq!(fields(&p), vec![field::parameters_item::PARAMETER], "$ref");
                }
                let responses = one(&op, field::operation::RESPONSES).expect("responses");
                for r in all(&responses, field::responses::RESPONSE_CODE) {
                    let value = one(&r, field::named::VALUE).expect("response");
                    assert_eq!(
                        fields(&value),
                        vec![field::response_value::RESPONSE],
                        "$ref"
                    );
                }
            }
        }
    }

    #[test]
    fn each_kind_has_its_verbs_on_its_paths() {
        let doc = document("Kubernetes", "v1.33.0", &KINDS[2..3]);
        let paths = one(&doc, field::document::PATHS).expect("paths");
        let paths = all(&paths, field::paths::PATH);
        assert_eq!(paths.len(), 2);
        assert_eq!(
            text(&paths[0], field::named::NAME),
            "/apis/apps/v1/namespaces/{namespace}/deployments"
        );
        assert_eq!(
            text(&paths[1], field::named::NAME),
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        );
        let collection = one(&paths[0], field::named::VALUE).expect("collection");
        assert_eq!(fields(&collection), vec![field::path_item::POST]);
        let item = one(&paths[1], field::named::VALUE).expect("item");
        assert_eq!(
            fields(&item),
            vec![
                field::path_item::GET,
                field::path_item::PUT,
                field::path_item::DELETE,
                field::path_item::PATCH
            ]
        );

        let query_names = |op: &[u8]| -> Vec<String> {
            all(op, field::operation::PARAMETERS)
                .iter()
                .map(|p| {
                    let p = one(p, field::parameters_item::PARAMETER).expect("parameter");
                    let p = one(&p, field::parameter::NON_BODY_PARAMETER).expect("non-body");
                    let q = one(&p, field::non_body_parameter::QUERY_PARAMETER_SUB_SCHEMA)
                        .expect("query");
                    assert_eq!(text(&q, field::query_parameter::IN), "query");
                    assert_eq!(text(&q, field::query_parameter::TYPE), "string");
                    text(&q, field::query_parameter::NAME)
                })
                .collect()
        };
        let writes = ["dryRun", "fieldManager", "fieldValidation"];
        let post = one(&collection, field::path_item::POST).expect("post");
        assert_eq!(query_names(&post), writes);
        assert_eq!(
            text(&post, field::operation::OPERATION_ID),
            "createAppsV1NamespacedDeployment"
        );
        for (verb, f, params) in [
            ("read", field::path_item::GET, &[][..]),
            ("replace", field::path_item::PUT, &writes[..]),
            ("patch", field::path_item::PATCH, &writes[..]),
            ("delete", field::path_item::DELETE, &[][..]),
        ] {
            let op = one(&item, f).expect("operation");
            assert_eq!(query_names(&op), params, "{verb}");
            assert_eq!(
                text(&op, field::operation::OPERATION_ID),
                format!("{verb}AppsV1NamespacedDeployment")
            );
            assert!(has_gvk_extension(&op, "apps", "v1", "Deployment"), "{verb}");
        }
        let patch = one(&item, field::path_item::PATCH).expect("patch");
        let consumes: Vec<String> = all(&patch, field::operation::CONSUMES)
            .into_iter()
            .map(|b| String::from_utf8(b).expect("utf-8"))
            .collect();
        assert!(consumes.contains(&"application/strategic-merge-patch+json".to_string()));
    }

    #[test]
    fn group_version_kind_is_written_as_kubernetes_writes_it() {
        let ext = group_version_kind("apps", "v1", "Deployment").0;
        assert_eq!(
            text(&ext, field::named::NAME),
            "x-kubernetes-group-version-kind"
        );
        let any = one(&ext, field::named::VALUE).expect("any");
        assert_eq!(
            fields(&any),
            vec![field::any::YAML],
            "no google.protobuf.Any"
        );
        assert_eq!(
            text(&any, field::any::YAML),
            "group: apps\nkind: Deployment\nversion: v1\n"
        );
        let core = one(
            &group_version_kind("", "v1", "Namespace").0,
            field::named::VALUE,
        )
        .expect("any");
        assert_eq!(
            text(&core, field::any::YAML),
            "group: \"\"\nkind: Namespace\nversion: v1\n"
        );
    }

    #[test]
    fn yaml_scalars_read_back_as_strings() {
        assert_eq!(yaml_scalar("networking.k8s.io"), "networking.k8s.io");
        assert_eq!(yaml_scalar("v1beta1"), "v1beta1");
        assert_eq!(yaml_scalar(""), "\"\"");
        assert_eq!(yaml_scalar("Yes"), "\"Yes\"");
        assert_eq!(yaml_scalar("null"), "\"null\"");
        assert_eq!(yaml_scalar("1"), "\"1\"");
        assert_eq!(yaml_scalar("a: b"), "\"a: b\"");
        assert_eq!(yaml_scalar("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn operation_ids_carry_the_group_version() {
        let ids: Vec<String> = KINDS.iter().map(|k| operation_id("patch", k)).collect();
        assert_eq!(
            ids,
            [
                "patchCoreV1Namespace",
                "patchCoreV1NamespacedConfigMap",
                "patchAppsV1NamespacedDeployment",
                "patchRbacAuthorizationV1ClusterRole",
            ]
        );
    }

    #[test]
    fn an_empty_document_is_encoded_byte_for_byte() {
        let doc = document("T", "v", &[]);
        let expected: &[u8] = &[
            0x0a, 0x03, b'2', b'.', b'0', // swagger
            0x12, 0x06, 0x0a, 0x01, b'T', 0x12, 0x01, b'v', // info
            0x42, 0x00, // paths
        ];
        assert_eq!(doc, expected);
    }

    #[test]
    fn no_kinds_is_still_a_document() {
        let doc = document("Kubernetes", "v1.33.0", &[]);
        assert_eq!(fields(&doc), vec![1, 2, 8]);
        assert_eq!(one(&doc, field::document::PATHS), Some(Vec::new()));
    }
}
