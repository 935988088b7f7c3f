//! PATCH support for stored objects: RFC 6902 JSON patch, RFC 7386 JSON merge
//! patch and Kubernetes strategic merge patch.
//!
//! Objects are handled in their JSON form so the same code serves every kind;
//! the only per-kind knowledge needed is the strategic merge patch metadata
//! (which lists merge and by which key), kept in [`schema`].

mod json_merge;
mod json_patch;
mod schema;
mod strategic;

use serde_json::{Map, Value};

pub use json_merge::merge_patch;
pub use json_patch::json_patch;
pub use strategic::strategic_merge;

/// Nesting limit for documents and patches. Recursion in the merge code
/// follows the nesting of its inputs, so bounding it keeps hostile request
/// bodies from exhausting the stack.
const MAX_DEPTH: usize = 256;

/// The patch formats a client selects with the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
}

impl PatchType {
    /// Media-type parameters (`; charset=utf-8`) and letter case are ignored
    /// because clients differ in what they send; the server-side apply type
    /// (`application/apply-patch+yaml`) is not one of these and yields `None`.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/json-patch+json") {
            Some(PatchType::Json)
        } else if essence.eq_ignore_ascii_case("application/merge-patch+json") {
            Some(PatchType::Merge)
        } else if essence.eq_ignore_ascii_case("application/strategic-merge-patch+json") {
            Some(PatchType::Strategic)
        } else {
            None
        }
    }

    /// The canonical media type, for `Accept-Patch` headers and messages.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
        }
    }
}

/// Why a patch could not be applied. Every variant names the offending part of
/// the request so that the message can be returned to the client verbatim.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The request body is not JSON at all.
    #[error("invalid JSON document: {0}")]
    InvalidJson(String),

    /// A document that has to be an object (merge patches, the object being
    /// patched) is some other JSON type.
    #[error("{what} must be a JSON object, but received {found}")]
    NotAnObject {
        what: &'static str,
        found: &'static str,
    },

    /// A JSON patch body that is not an array of operations.
    #[error("json patch must be an array of operations, but received {found}")]
    NotAnArray { found: &'static str },

    /// Same limit and wording as the Kubernetes apiserver.
    #[error("The allowed maximum operations in a JSON patch is {limit}, got {found}")]
    TooManyOperations { limit: usize, found: usize },

    /// Input (or a result being built) nests deeper than the server accepts.
    #[error("{what} nests deeper than {limit} levels")]
    TooDeep { what: &'static str, limit: usize },

    /// A JSON patch operation is malformed or does not apply to the document.
    #[error("json patch operation {index}{}: {reason}", describe_op(.op.as_deref(), .path.as_deref()))]
    JsonPatch {
        /// Position of the operation in the patch array, counting from 0.
        index: usize,
        /// The operation's `op`, when it had a readable one.
        op: Option<String>,
        /// The operation's `path`, when it had a readable one.
        path: Option<String>,
        reason: String,
    },

    /// A strategic merge patch is malformed or conflicts with the object.
    #[error("strategic merge patch: {reason} (at {path})")]
    Strategic {
        /// Field path from the object root, such as
        /// `spec.template.spec.containers[0].env`, or `<root>`.
        path: String,
        reason: String,
    },
}

impl PatchError {
    /// The HTTP status the Kubernetes apiserver answers with for the same
    /// failure: malformed bodies are 400, well-formed JSON patches that do not
    /// apply are 422, and oversized JSON patches are 413.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::JsonPatch { .. } => 422,
            PatchError::TooManyOperations { .. } => 413,
            _ => 400,
        }
    }
}

fn describe_op(op: Option<&str>, path: Option<&str>) -> String {
    match (op, path) {
        (Some(op), Some(path)) => format!(" ({op} \"{path}\")"),
        (Some(op), None) => format!(" ({op})"),
        (None, Some(path)) => format!(" (\"{path}\")"),
        (None, None) => String::new(),
    }
}

/// Parses a PATCH request body and applies it to `target`.
///
/// `kind` selects the strategic merge metadata and is ignored by the other
/// formats. Custom resources have no such metadata; Kubernetes refuses
/// strategic merge patches for them (415), which the caller should do before
/// getting here, as only `metadata` merge rules would apply.
pub fn apply(
    kind: &str,
    patch_type: PatchType,
    target: &Value,
    patch: &[u8],
) -> Result<Value, PatchError> {
    let patch: Value =
        serde_json::from_slice(patch).map_err(|e| PatchError::InvalidJson(e.to_string()))?;
    match patch_type {
        PatchType::Json => json_patch(target, &patch),
        PatchType::Merge => {
            // A non-object merge patch would replace the whole object with a
            // scalar or array, which can never be a valid Kubernetes object.
            if !patch.is_object() {
                return Err(PatchError::NotAnObject {
                    what: "merge patch",
                    found: type_name(&patch),
                });
            }
            check_depth(target, "target object")?;
            check_depth(&patch, "merge patch")?;
            Ok(merge_patch(target, &patch))
        }
        PatchType::Strategic => strategic_merge(kind, target, &patch),
    }
}

/// JSON type names as used in error messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Number of nested containers in `v` (a scalar is 0, `{}` is 1), counting no
/// further than `limit + 1` so the walk stays cheap on hostile input. Iterative
/// so that measuring cannot itself overflow the stack.
fn depth_of(v: &Value, limit: usize) -> usize {
    let mut max = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((node, above)) = stack.pop() {
        let here = above + 1;
        match node {
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, here))),
            Value::Object(m) => stack.extend(m.values().map(|c| (c, here))),
            _ => continue,
        }
        max = max.max(here);
        if here > limit {
            return here;
        }
    }
    max
}

fn check_depth(v: &Value, what: &'static str) -> Result<(), PatchError> {
    if depth_of(v, MAX_DEPTH) > MAX_DEPTH {
        return Err(PatchError::TooDeep {
            what,
            limit: MAX_DEPTH,
        });
    }
    Ok(())
}

/// Removes `key` without disturbing the order of the remaining members, which
/// matters when serde_json's `preserve_order` feature is enabled elsewhere in
/// the build and `Map::remove` would swap the last member into the gap.
fn remove_key(map: &mut Map<String, Value>, key: &str) {
    if map.contains_key(key) {
        map.retain(|k, _| k != key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("Application/Merge-Patch+JSON; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type(" application/strategic-merge-patch+json ;x=y"),
            Some(PatchType::Strategic)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            None
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(PatchType::from_content_type(""), None);
        for t in [PatchType::Json, PatchType::Merge, PatchType::Strategic] {
            assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
        }
    }

    #[test]
    fn apply_rejects_malformed_json() {
        let target = json!({"a": 1});
        for pt in [PatchType::Json, PatchType::Merge, PatchType::Strategic] {
            let err = apply("Pod", pt, &target, b"{\"a\": ").unwrap_err();
            assert!(matches!(err, PatchError::InvalidJson(_)), "{err}");
            assert!(
                err.to_string().starts_with("invalid JSON document"),
                "{err}"
            );
            assert_eq!(err.status_code(), 400);
            let err = apply("Pod", pt, &target, b"").unwrap_err();
            assert!(matches!(err, PatchError::InvalidJson(_)), "{err}");
        }
    }

    #[test]
    fn apply_dispatches() {
        let target = json!({"metadata": {"name": "a", "labels": {"x": "1"}}});
        let out = apply(
            "Pod",
            PatchType::Json,
            &target,
            br#"[{"op":"add","path":"/metadata/labels/y","value":"2"}]"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"x": "1", "y": "2"}));

        let out = apply(
            "Pod",
            PatchType::Merge,
            &target,
            br#"{"metadata":{"labels":{"x":null}}}"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({}));

        let out = apply(
            "Pod",
            PatchType::Strategic,
            &target,
            br#"{"metadata":{"finalizers":["f"]}}"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["f"]));
        assert_eq!(target["metadata"].get("finalizers"), None);
    }

    #[test]
    fn apply_rejects_non_object_merge_patches() {
        let target = json!({"a": 1});
        for body in [&b"null"[..], b"[1]", b"\"x\"", b"3"] {
            let err = apply("Pod", PatchType::Merge, &target, body).unwrap_err();
            assert!(
                err.to_string()
                    .contains("merge patch must be a JSON object"),
                "{err}"
            );
            let err = apply("Pod", PatchType::Strategic, &target, body).unwrap_err();
            assert!(
                err.to_string()
                    .contains("strategic merge patch must be a JSON object"),
                "{err}"
            );
        }
    }

    #[test]
    fn deep_input_is_refused_without_overflowing() {
        let mut deep = json!(1);
        for _ in 0..300 {
            deep = json!({ "a": deep });
        }
        let target = json!({});
        let err = strategic_merge("Pod", &target, &deep).unwrap_err();
        assert!(matches!(err, PatchError::TooDeep { .. }), "{err}");
        assert!(err.to_string().contains("deeper than 256"), "{err}");
        let err = json_patch(&deep, &json!([])).unwrap_err();
        assert!(matches!(err, PatchError::TooDeep { .. }), "{err}");
        // Bodies this deep never reach the merge code: the parser refuses them.
        let body = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        let err = apply("Pod", PatchType::Merge, &target, body.as_bytes()).unwrap_err();
        assert!(matches!(err, PatchError::InvalidJson(_)), "{err}");
    }

    #[test]
    fn maximum_nesting_is_handled_on_a_small_stack() {
        // Alternate maps and lists so both recursion paths are exercised.
        let mut target = json!("leaf");
        let mut patch = json!("new");
        let mut level = 0;
        while depth_of(&patch, MAX_DEPTH) + 3 <= MAX_DEPTH {
            if level % 2 == 0 {
                target = json!([{ "name": "x", "v": target }]);
                patch = json!([{ "name": "x", "v": patch }]);
            } else {
                target = json!({ "v": target });
                patch = json!({ "v": patch });
            }
            level += 1;
        }
        while depth_of(&patch, MAX_DEPTH) < MAX_DEPTH {
            target = json!({ "v": target });
            patch = json!({ "v": patch });
        }
        assert_eq!(depth_of(&patch, MAX_DEPTH), MAX_DEPTH);
        let run = move || {
            let smp = strategic_merge("Pod", &target, &patch).map(|_| ());
            let merge = merge_patch(&target, &patch);
            let ops = json!([{ "op": "add", "path": "/w", "value": 1 }]);
            let jp = json_patch(&target, &ops).map(|_| ());
            let deeper = json!({ "v": patch });
            let too_deep = strategic_merge("Pod", &target, &deeper).is_err();
            drop((merge, target, patch, deeper));
            (smp.is_ok(), jp.is_ok(), too_deep)
        };
        // Well under the 2 MiB that spawned threads and tokio workers get by
        // default, even in unoptimised builds.
        let handle = std::thread::Builder::new()
            .stack_size(1536 << 10)
            .spawn(run)
            .unwrap();
        assert_eq!(handle.join().unwrap(), (true, true, true));
    }

    /// Small deterministic generator, so that the no-panic property is
    /// checked on the same inputs every run.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, bound: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % bound.max(1)
        }

        fn value(&mut self, depth: usize) -> Value {
            const KEYS: &[&str] = &[
                "spec",
                "metadata",
                "template",
                "containers",
                "env",
                "name",
                "finalizers",
                "ports",
                "containerPort",
                "image",
                "$patch",
                "$retainKeys",
                "$setElementOrder/containers",
                "$setElementOrder/finalizers",
                "$deleteFromPrimitiveList/finalizers",
                "$bogus",
                "op",
                "path",
                "value",
                "from",
                "-",
                "0",
                "",
            ];
            const STRINGS: &[&str] = &[
                "replace",
                "delete",
                "merge",
                "add",
                "remove",
                "move",
                "copy",
                "test",
                "a",
                "name",
                "/spec",
                "/spec/containers/0",
                "/metadata/finalizers/-",
                "/0",
                "",
                "~",
                "/a~1b",
                "containers",
            ];
            let choice = if depth == 0 {
                self.next(4)
            } else {
                self.next(7)
            };
            match choice {
                0 => Value::Null,
                1 => json!(self.next(3) == 0),
                2 => json!(self.next(5) as i64 - 1),
                3 => json!(STRINGS[self.next(STRINGS.len())]),
                4 | 5 => {
                    let mut m = Map::new();
                    for _ in 0..self.next(5) {
                        let k = KEYS[self.next(KEYS.len())].to_string();
                        let v = self.value(depth - 1);
                        m.insert(k, v);
                    }
                    Value::Object(m)
                }
                _ => Value::Array((0..self.next(4)).map(|_| self.value(depth - 1)).collect()),
            }
        }
    }

    impl Lcg {
        /// An object shaped loosely like a Kubernetes object, so that merges
        /// get past the top-level type checks.
        fn object(&mut self) -> Value {
            let mut m = Map::new();
            for field in ["metadata", "spec", "status"] {
                if self.next(3) > 0 {
                    m.insert(field.to_string(), self.value(4));
                }
            }
            Value::Object(m)
        }

        fn operations(&mut self) -> Value {
            const OPS: &[&str] = &["add", "remove", "replace", "move", "copy", "test", "nop"];
            const POINTERS: &[&str] = &[
                "",
                "/",
                "/spec",
                "/spec/containers",
                "/spec/containers/0",
                "/spec/containers/-",
                "/spec/0",
                "/spec/1",
                "/metadata/name",
                "/metadata/finalizers/0",
                "/status/x/y",
                "/spec/~1",
                "/spec/01",
                "spec",
            ];
            let ops = (0..self.next(4))
                .map(|_| {
                    let mut op = Map::new();
                    if self.next(10) > 0 {
                        op.insert("op".into(), json!(OPS[self.next(OPS.len())]));
                    }
                    if self.next(10) > 0 {
                        op.insert("path".into(), json!(POINTERS[self.next(POINTERS.len())]));
                    }
                    if self.next(2) == 0 {
                        op.insert("from".into(), json!(POINTERS[self.next(POINTERS.len())]));
                    }
                    if self.next(4) > 0 {
                        op.insert("value".into(), self.value(3));
                    }
                    Value::Object(op)
                })
                .collect();
            Value::Array(ops)
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = Lcg(0x5eed);
        for round in 0..20_000 {
            let target = if round % 4 == 0 {
                rng.value(5)
            } else {
                rng.object()
            };
            let patch = if round % 4 == 1 {
                rng.value(5)
            } else {
                rng.object()
            };
            let ops = rng.operations();
            let kind = ["Pod", "Deployment", "CronJob", "Widget"][rng.next(4)];
            let _ = strategic_merge(kind, &target, &patch);
            let _ = json_patch(&target, &ops);
            let _ = json_patch(&target, &patch);
            let _ = merge_patch(&target, &patch);
            for (pt, body) in [
                (PatchType::Json, ops.to_string()),
                (PatchType::Merge, patch.to_string()),
                (PatchType::Strategic, patch.to_string()),
            ] {
                let _ = apply(kind, pt, &target, body.as_bytes());
                let cut = rng.next(body.len() + 1);
                let _ = apply(kind, pt, &target, &body.as_bytes()[..cut]);
            }
        }
    }

    #[test]
    fn depth_measure() {
        assert_eq!(depth_of(&json!(1), 10), 0);
        assert_eq!(depth_of(&json!({}), 10), 1);
        assert_eq!(depth_of(&json!({"a": [1, {"b": []}]}), 10), 4);
        assert_eq!(depth_of(&json!([[[[[]]]]]), 2), 3);
    }

    #[test]
    fn remove_key_keeps_order_of_the_rest() {
        let mut m = Map::new();
        m.insert("b".into(), json!(1));
        m.insert("a".into(), json!(2));
        m.insert("c".into(), json!(3));
        let before: Vec<String> = m.keys().cloned().collect();
        remove_key(&mut m, "a");
        remove_key(&mut m, "zzz");
        let after: Vec<String> = m.keys().cloned().collect();
        let expected: Vec<String> = before.into_iter().filter(|k| k != "a").collect();
        assert_eq!(after, expected);
    }
}
