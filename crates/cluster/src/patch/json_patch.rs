//! RFC 6902 JSON patch over RFC 6901 JSON pointers.
//!
//! Where the RFC is explicit this follows it even when the apiserver's library
//! (evanphx/json-patch) is laxer: `replace` and `remove` of a missing member
//! fail, `test` of a missing location fails, negative array indices and
//! indices with leading zeros are rejected, and `add`/`replace`/`test` need a
//! `value`. Error messages borrow that library's wording.

use serde_json::{Map, Value};

use super::{check_depth, depth_of, remove_key, type_name, PatchError, MAX_DEPTH};

/// The apiserver refuses longer patches; the same bound keeps a single request
/// from doing unbounded work.
const MAX_OPERATIONS: usize = 10_000;

/// `copy` is the one operation that can grow a document faster than the
/// request body (copying an ancestor into itself doubles the document each
/// time), so the total number of JSON values it may duplicate is capped.
const MAX_COPIED_VALUES: usize = 1 << 20;

/// Applies the operations in `ops` in order to a copy of `target`. Either all
/// of them apply and the patched copy is returned, or the first failure is
/// reported and nothing is changed.
pub fn json_patch(target: &Value, ops: &Value) -> Result<Value, PatchError> {
    let Value::Array(list) = ops else {
        return Err(PatchError::NotAnArray {
            found: type_name(ops),
        });
    };
    if list.len() > MAX_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            limit: MAX_OPERATIONS,
            found: list.len(),
        });
    }
    check_depth(target, "target document")?;
    check_depth(ops, "json patch")?;

    let mut doc = target.clone();
    let mut copy_budget = MAX_COPIED_VALUES;
    for (index, raw) in list.iter().enumerate() {
        let op = Operation::parse(index, raw)?;
        op.apply(&mut doc, &mut copy_budget)
            .map_err(|reason| op.error(reason))?;
    }
    Ok(doc)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

struct Operation<'a> {
    index: usize,
    kind: Kind,
    name: &'a str,
    path: &'a str,
    members: &'a Map<String, Value>,
}

impl<'a> Operation<'a> {
    fn parse(index: usize, raw: &'a Value) -> Result<Self, PatchError> {
        let fail = |op: Option<&str>, path: Option<&str>, reason: String| PatchError::JsonPatch {
            index,
            op: op.map(str::to_string),
            path: path.map(str::to_string),
            reason,
        };
        let Value::Object(members) = raw else {
            return Err(fail(
                None,
                None,
                format!(
                    "operation must be a JSON object, but received {}",
                    type_name(raw)
                ),
            ));
        };
        let readable_path = members.get("path").and_then(Value::as_str);
        let name = match members.get("op") {
            None => {
                return Err(fail(
                    None,
                    readable_path,
                    "operation missing op field".to_string(),
                ))
            }
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(fail(
                    None,
                    readable_path,
                    format!("op must be a string, but received {}", type_name(other)),
                ))
            }
        };
        let kind = match name {
            "add" => Kind::Add,
            "remove" => Kind::Remove,
            "replace" => Kind::Replace,
            "move" => Kind::Move,
            "copy" => Kind::Copy,
            "test" => Kind::Test,
            _ => {
                return Err(fail(
                    Some(name),
                    readable_path,
                    format!("Unexpected kind: {name}"),
                ))
            }
        };
        let path = match members.get("path") {
            None => {
                return Err(fail(
                    Some(name),
                    None,
                    "operation missing path field".to_string(),
                ))
            }
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(fail(
                    Some(name),
                    None,
                    format!("path must be a string, but received {}", type_name(other)),
                ))
            }
        };
        Ok(Operation {
            index,
            kind,
            name,
            path,
            members,
        })
    }

    fn error(&self, reason: String) -> PatchError {
        PatchError::JsonPatch {
            index: self.index,
            op: Some(self.name.to_string()),
            path: Some(self.path.to_string()),
            reason,
        }
    }

    fn value(&self) -> Result<&'a Value, String> {
        self.members
            .get("value")
            .ok_or_else(|| "operation missing value field".to_string())
    }

    fn from(&self) -> Result<Vec<String>, String> {
        match self.members.get("from") {
            None => Err("operation missing from field".to_string()),
            Some(Value::String(s)) => parse_pointer(s),
            Some(other) => Err(format!(
                "from must be a string, but received {}",
                type_name(other)
            )),
        }
    }

    fn apply(&self, doc: &mut Value, copy_budget: &mut usize) -> Result<(), String> {
        let path = parse_pointer(self.path)?;
        match self.kind {
            Kind::Add => {
                let value = self.value()?;
                check_nesting(&path, value)?;
                add(doc, &path, value.clone())
            }
            Kind::Remove => remove(doc, &path).map(drop),
            Kind::Replace => {
                let value = self.value()?;
                check_nesting(&path, value)?;
                replace(doc, &path, value.clone())
            }
            Kind::Move => {
                let from = self.from()?;
                if from == path {
                    return get(doc, &from).map(drop);
                }
                if from.len() < path.len() && path.starts_with(&from) {
                    return Err(format!(
                        "cannot move \"{}\" into one of its own children",
                        encode_pointer(&from)
                    ));
                }
                check_nesting(&path, get(doc, &from)?)?;
                let value = remove(doc, &from)?;
                add(doc, &path, value)
            }
            Kind::Copy => {
                let from = self.from()?;
                let value = get(doc, &from)?;
                check_nesting(&path, value)?;
                let copied = count_values(value, *copy_budget);
                if copied > *copy_budget {
                    return Err(format!(
                        "Unable to complete the copy, the accumulated size increase of copy exceeds the limit of {MAX_COPIED_VALUES} values"
                    ));
                }
                *copy_budget -= copied;
                let value = value.clone();
                add(doc, &path, value)
            }
            Kind::Test => {
                let expected = self.value()?;
                let actual = get(doc, &path)?;
                if json_equal(actual, expected) {
                    Ok(())
                } else {
                    Err(format!("testing value {} failed", self.path))
                }
            }
        }
    }
}

/// Pointers are decoded up front so that malformed ones fail before anything
/// is changed and locations can be compared token by token (`move` into a
/// child of itself).
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "invalid JSON pointer \"{pointer}\": a pointer must be empty or start with '/'"
        ));
    };
    rest.split('/')
        .map(|token| unescape_token(pointer, token))
        .collect()
}

fn unescape_token(pointer: &str, token: &str) -> Result<String, String> {
    if !token.contains('~') {
        return Ok(token.to_string());
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => {
                return Err(format!(
                    "invalid JSON pointer \"{pointer}\": '~' must be followed by '0' or '1'"
                ))
            }
        }
    }
    Ok(out)
}

fn encode_pointer(tokens: &[String]) -> String {
    let mut out = String::new();
    for token in tokens {
        out.push('/');
        out.push_str(&token.replace('~', "~0").replace('/', "~1"));
    }
    out
}

/// Interprets `token` as an index into an array of `len` elements. `len`
/// itself (and `-`, its alias) is only meaningful when inserting.
fn array_index(token: &str, len: usize, inserting: bool) -> Result<usize, String> {
    if token == "-" {
        if inserting {
            return Ok(len);
        }
        return Err(
            "\"-\" refers to the nonexistent element after the last array element".to_string(),
        );
    }
    let well_formed = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if !well_formed {
        return Err(format!("value was not a proper array index: '{token}'"));
    }
    let index: usize = token
        .parse()
        .map_err(|_| format!("Unable to access invalid index: {token}"))?;
    if index > len || (index == len && !inserting) {
        return Err(format!(
            "Unable to access invalid index: {index} (array length {len})"
        ));
    }
    Ok(index)
}

fn missing_path(tokens: &[String]) -> String {
    format!("doc is missing path: \"{}\"", encode_pointer(tokens))
}

fn not_a_container(tokens: &[String], depth: usize, found: &Value) -> String {
    format!(
        "doc is missing path: \"{}\": \"{}\" is {} {}, not an object or array",
        encode_pointer(tokens),
        encode_pointer(&tokens[..depth]),
        if matches!(found, Value::Array(_) | Value::Object(_)) {
            "an"
        } else {
            "a"
        },
        type_name(found)
    )
}

fn get<'v>(doc: &'v Value, tokens: &[String]) -> Result<&'v Value, String> {
    let mut current = doc;
    for (depth, token) in tokens.iter().enumerate() {
        current = match current {
            Value::Object(members) => members
                .get(token)
                .ok_or_else(|| missing_path(&tokens[..=depth]))?,
            Value::Array(items) => {
                let index = array_index(token, items.len(), false)?;
                items
                    .get(index)
                    .ok_or_else(|| missing_path(&tokens[..=depth]))?
            }
            other => return Err(not_a_container(tokens, depth, other)),
        };
    }
    Ok(current)
}

/// Insertions, replacements and removals all act on the container that holds
/// the last token, so navigation stops one level short.
fn parent_mut<'v>(doc: &'v mut Value, tokens: &[String]) -> Result<&'v mut Value, String> {
    let parent_len = tokens.len().saturating_sub(1);
    let mut current = doc;
    for (depth, token) in tokens[..parent_len].iter().enumerate() {
        current = match current {
            Value::Object(members) => match members.get_mut(token) {
                Some(next) => next,
                None => return Err(missing_path(&tokens[..=depth])),
            },
            Value::Array(items) => {
                let index = array_index(token, items.len(), false)?;
                match items.get_mut(index) {
                    Some(next) => next,
                    None => return Err(missing_path(&tokens[..=depth])),
                }
            }
            other => return Err(not_a_container(tokens, depth, other)),
        };
    }
    Ok(current)
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some(last) = tokens.last() else {
        *doc = value;
        return Ok(());
    };
    let depth = tokens.len() - 1;
    match parent_mut(doc, tokens)? {
        Value::Object(members) => {
            members.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = array_index(last, items.len(), true)?;
            items.insert(index, value);
            Ok(())
        }
        other => Err(not_a_container(tokens, depth, other)),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let Some(last) = tokens.last() else {
        return Err("cannot remove the whole document".to_string());
    };
    let depth = tokens.len() - 1;
    match parent_mut(doc, tokens)? {
        Value::Object(members) => {
            let Some(value) = members.get(last).cloned() else {
                return Err(format!(
                    "Unable to remove nonexistent key: {last}: {}",
                    missing_path(tokens)
                ));
            };
            remove_key(members, last);
            Ok(value)
        }
        Value::Array(items) => {
            let index = array_index(last, items.len(), false)?;
            Ok(items.remove(index))
        }
        other => Err(not_a_container(tokens, depth, other)),
    }
}

fn replace(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some(last) = tokens.last() else {
        *doc = value;
        return Ok(());
    };
    let depth = tokens.len() - 1;
    match parent_mut(doc, tokens)? {
        Value::Object(members) => match members.get_mut(last) {
            Some(slot) => {
                *slot = value;
                Ok(())
            }
            None => Err(format!(
                "doc is missing key: \"{}\"",
                encode_pointer(tokens)
            )),
        },
        Value::Array(items) => {
            let index = array_index(last, items.len(), false)?;
            match items.get_mut(index) {
                Some(slot) => {
                    *slot = value;
                    Ok(())
                }
                None => Err(missing_path(tokens)),
            }
        }
        other => Err(not_a_container(tokens, depth, other)),
    }
}

/// Keeps documents within the nesting limit as they are edited, so that later
/// operations and the rest of the server can recurse over them safely.
fn check_nesting(tokens: &[String], value: &Value) -> Result<(), String> {
    let room = MAX_DEPTH.saturating_sub(tokens.len());
    if tokens.len() > MAX_DEPTH || depth_of(value, room) > room {
        return Err(format!(
            "the result would nest deeper than {MAX_DEPTH} levels"
        ));
    }
    Ok(())
}

/// Stops counting once past `limit`, so measuring an oversized copy costs no
/// more than the limit allows.
fn count_values(v: &Value, limit: usize) -> usize {
    let mut count = 0usize;
    let mut stack = vec![v];
    while let Some(node) = stack.pop() {
        count += 1;
        if count > limit {
            return count;
        }
        match node {
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(members) => stack.extend(members.values()),
            _ => {}
        }
    }
    count
}

/// RFC 6902 section 4.6 equality: numbers compare by numeric value (so `1`
/// equals `1.0`), objects ignore member order, arrays compare element-wise.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else if x.is_f64() || y.is_f64() {
                match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => x == y,
                    _ => false,
                }
            } else {
                false
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(target: Value, ops: Value, expected: Value) {
        let before = target.clone();
        match json_patch(&target, &ops) {
            Ok(out) => assert_eq!(out, expected, "ops: {ops}"),
            Err(e) => panic!("unexpected error {e} for {ops}"),
        }
        assert_eq!(target, before);
    }

    fn fails(target: Value, ops: Value, needles: &[&str]) -> PatchError {
        let before = target.clone();
        let err = match json_patch(&target, &ops) {
            Ok(out) => panic!("expected an error for {ops}, got {out}"),
            Err(e) => e,
        };
        let msg = err.to_string();
        for needle in needles {
            assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        }
        assert_eq!(target, before);
        err
    }

    #[test]
    fn a1_add_object_member() {
        ok(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz", "value": "qux"}]),
            json!({"baz": "qux", "foo": "bar"}),
        );
    }

    #[test]
    fn a2_add_array_element() {
        ok(
            json!({"foo": ["bar", "baz"]}),
            json!([{"op": "add", "path": "/foo/1", "value": "qux"}]),
            json!({"foo": ["bar", "qux", "baz"]}),
        );
    }

    #[test]
    fn a3_remove_object_member() {
        ok(
            json!({"baz": "qux", "foo": "bar"}),
            json!([{"op": "remove", "path": "/baz"}]),
            json!({"foo": "bar"}),
        );
    }

    #[test]
    fn a4_remove_array_element() {
        ok(
            json!({"foo": ["bar", "qux", "baz"]}),
            json!([{"op": "remove", "path": "/foo/1"}]),
            json!({"foo": ["bar", "baz"]}),
        );
    }

    #[test]
    fn a5_replace_value() {
        ok(
            json!({"baz": "qux", "foo": "bar"}),
            json!([{"op": "replace", "path": "/baz", "value": "boo"}]),
            json!({"baz": "boo", "foo": "bar"}),
        );
    }

    #[test]
    fn a6_move_value() {
        ok(
            json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
            json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
            json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
        );
    }

    #[test]
    fn a7_move_array_element() {
        ok(
            json!({"foo": ["all", "grass", "cows", "eat"]}),
            json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}]),
            json!({"foo": ["all", "cows", "eat", "grass"]}),
        );
    }

    #[test]
    fn a8_test_success() {
        ok(
            json!({"baz": "qux", "foo": ["a", 2, "c"]}),
            json!([
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2}
            ]),
            json!({"baz": "qux", "foo": ["a", 2, "c"]}),
        );
    }

    #[test]
    fn a9_test_failure() {
        let err = fails(
            json!({"baz": "qux"}),
            json!([{"op": "test", "path": "/baz", "value": "bar"}]),
            &["operation 0", "test", "/baz", "testing value /baz failed"],
        );
        assert_eq!(err.status_code(), 422);
    }

    #[test]
    fn a10_add_nested_member_object() {
        ok(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}]),
            json!({"foo": "bar", "child": {"grandchild": {}}}),
        );
    }

    #[test]
    fn a11_ignore_unrecognized_members() {
        ok(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}]),
            json!({"foo": "bar", "baz": "qux"}),
        );
    }

    #[test]
    fn a12_add_to_nonexistent_target() {
        fails(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]),
            &["operation 0", "add", "doc is missing path: \"/baz\""],
        );
    }

    #[test]
    fn a13_invalid_patch_document() {
        // Duplicate member names: the JSON parser keeps the last "op", so this
        // is a `remove` of a member that does not exist.
        let ops: Value =
            serde_json::from_str(r#"[{"op":"add","path":"/baz","value":"qux","op":"remove"}]"#)
                .unwrap();
        fails(
            json!({"foo": "bar"}),
            ops,
            &["remove", "/baz", "nonexistent key"],
        );
    }

    #[test]
    fn a14_escape_ordering() {
        ok(
            json!({"/": 9, "~1": 10}),
            json!([{"op": "test", "path": "/~01", "value": 10}]),
            json!({"/": 9, "~1": 10}),
        );
    }

    #[test]
    fn a15_comparing_strings_and_numbers() {
        fails(
            json!({"/": 9, "~1": 10}),
            json!([{"op": "test", "path": "/~01", "value": "10"}]),
            &["testing value /~01 failed"],
        );
    }

    #[test]
    fn a16_add_array_value() {
        ok(
            json!({"foo": ["bar"]}),
            json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]),
            json!({"foo": ["bar", ["abc", "def"]]}),
        );
    }

    #[test]
    fn kubectl_rollout_undo() {
        let target = json!({
            "metadata": {"name": "web", "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {"replicas": 2, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
            }}
        });
        let ops = json!([
            {"op": "replace", "path": "/spec/template", "value": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}
            }},
            {"op": "replace", "path": "/metadata/annotations", "value": {
                "deployment.kubernetes.io/revision": "1"
            }}
        ]);
        let out = json_patch(&target, &ops).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1.25"
        );
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"deployment.kubernetes.io/revision": "1"})
        );
    }

    #[test]
    fn pointer_escapes() {
        ok(
            json!({"metadata": {"labels": {"app.kubernetes.io/name": "x", "a~b": 1}}}),
            json!([
                {"op": "replace", "path": "/metadata/labels/app.kubernetes.io~1name", "value": "y"},
                {"op": "remove", "path": "/metadata/labels/a~0b"}
            ]),
            json!({"metadata": {"labels": {"app.kubernetes.io/name": "y"}}}),
        );
        fails(
            json!({"a": 1}),
            json!([{"op": "remove", "path": "/a~2"}]),
            &["'~' must be followed by '0' or '1'"],
        );
        // "" is the whole document and "/" is the member with an empty name.
        ok(
            json!({"": 1}),
            json!([{"op": "replace", "path": "/", "value": 2}]),
            json!({"": 2}),
        );
    }

    #[test]
    fn root_operations() {
        ok(
            json!({"a": 1}),
            json!([{"op": "replace", "path": "", "value": {"b": 2}}]),
            json!({"b": 2}),
        );
        ok(
            json!({"a": 1}),
            json!([{"op": "add", "path": "", "value": {"c": 3}}]),
            json!({"c": 3}),
        );
        ok(
            json!({"a": 1}),
            json!([{"op": "test", "path": "", "value": {"a": 1.0}}]),
            json!({"a": 1}),
        );
        fails(
            json!({"a": 1}),
            json!([{"op": "remove", "path": ""}]),
            &["cannot remove the whole document"],
        );
    }

    #[test]
    fn not_an_array() {
        let err = json_patch(&json!({}), &json!({"op": "add"})).unwrap_err();
        assert!(matches!(err, PatchError::NotAnArray { found: "object" }));
        assert_eq!(
            err.to_string(),
            "json patch must be an array of operations, but received object"
        );
        assert_eq!(err.status_code(), 400);
        let err = json_patch(&json!({}), &Value::Null).unwrap_err();
        assert!(err.to_string().contains("received null"), "{err}");
    }

    #[test]
    fn malformed_operations() {
        fails(
            json!({}),
            json!([{"op": "add", "path": "/a", "value": 1}, "nope"]),
            &["operation 1", "must be a JSON object", "received string"],
        );
        fails(
            json!({"a": 1}),
            json!([{"op": "remove"}]),
            &["operation 0 (remove)", "operation missing path field"],
        );
        fails(
            json!({"a": 1}),
            json!([{"op": "remove", "path": 3}]),
            &["path must be a string"],
        );
        fails(
            json!({"a": 1}),
            json!([{"path": "/a"}]),
            &["operation 0 (\"/a\")", "operation missing op field"],
        );
        fails(
            json!({"a": 1}),
            json!([{"op": "frobnicate", "path": "/a"}]),
            &["frobnicate", "\"/a\"", "Unexpected kind: frobnicate"],
        );
        fails(
            json!({"a": 1}),
            json!([{"op": 7, "path": "/a"}]),
            &["op must be a string"],
        );
        fails(
            json!({"a": 1}),
            json!([{"op": "add", "path": "/b"}]),
            &["operation missing value field"],
        );
        fails(
            json!({"a": 1}),
            json!([{"op": "move", "path": "/b"}]),
            &["operation missing from field"],
        );
        fails(
            json!({"a": {"b": 1}}),
            json!([{"op": "add", "path": "a/b", "value": 1}]),
            &["invalid JSON pointer \"a/b\"", "start with '/'"],
        );
    }

    #[test]
    fn array_index_rules() {
        let list = || json!({"l": [1, 2, 3]});
        fails(
            list(),
            json!([{"op": "replace", "path": "/l/5", "value": 0}]),
            &["/l/5", "invalid index: 5"],
        );
        fails(
            list(),
            json!([{"op": "add", "path": "/l/4", "value": 0}]),
            &["invalid index: 4"],
        );
        ok(
            list(),
            json!([{"op": "add", "path": "/l/3", "value": 4}]),
            json!({"l": [1, 2, 3, 4]}),
        );
        fails(
            list(),
            json!([{"op": "replace", "path": "/l/3", "value": 4}]),
            &["invalid index: 3"],
        );
        fails(
            list(),
            json!([{"op": "remove", "path": "/l/01"}]),
            &["not a proper array index: '01'"],
        );
        fails(
            list(),
            json!([{"op": "remove", "path": "/l/-1"}]),
            &["not a proper array index: '-1'"],
        );
        fails(
            list(),
            json!([{"op": "remove", "path": "/l/-"}]),
            &["\"-\" refers to the nonexistent element"],
        );
        fails(
            list(),
            json!([{"op": "add", "path": "/l/99999999999999999999999", "value": 1}]),
            &["invalid index"],
        );
        fails(
            list(),
            json!([{"op": "add", "path": "/l/0/x", "value": 1}]),
            &["doc is missing path: \"/l/0/x\"", "\"/l/0\" is a number"],
        );
        ok(
            list(),
            json!([{"op": "add", "path": "/l/0", "value": 0}]),
            json!({"l": [0, 1, 2, 3]}),
        );
        ok(
            json!({"l": []}),
            json!([{"op": "add", "path": "/l/-", "value": 0}]),
            json!({"l": [0]}),
        );
    }

    #[test]
    fn missing_members() {
        fails(
            json!({"a": 1}),
            json!([{"op": "replace", "path": "/b", "value": 2}]),
            &["replace", "doc is missing key: \"/b\""],
        );
        fails(
            json!({"a": 1}),
            json!([{"op": "remove", "path": "/b"}]),
            &["remove", "nonexistent key: b"],
        );
        fails(
            json!({"a": 1}),
            json!([{"op": "test", "path": "/b", "value": null}]),
            &["doc is missing path: \"/b\""],
        );
        fails(
            json!({"a": 1}),
            json!([{"op": "copy", "from": "/x/y", "path": "/b"}]),
            &["doc is missing path: \"/x\""],
        );
    }

    #[test]
    fn failure_applies_nothing() {
        let err = fails(
            json!({"a": 1}),
            json!([
                {"op": "add", "path": "/b", "value": 2},
                {"op": "remove", "path": "/a"},
                {"op": "replace", "path": "/missing", "value": 3}
            ]),
            &["operation 2 (replace \"/missing\")"],
        );
        assert!(matches!(err, PatchError::JsonPatch { index: 2, .. }));
    }

    #[test]
    fn move_and_copy() {
        ok(
            json!({"a": {"b": 1}, "c": []}),
            json!([{"op": "copy", "from": "/a", "path": "/c/-"}]),
            json!({"a": {"b": 1}, "c": [{"b": 1}]}),
        );
        ok(
            json!({"a": 1}),
            json!([{"op": "move", "from": "/a", "path": "/a"}]),
            json!({"a": 1}),
        );
        fails(
            json!({"a": {"b": 1}}),
            json!([{"op": "move", "from": "/a", "path": "/a/b/c"}]),
            &["into one of its own children"],
        );
        ok(
            json!({"l": [1, 2, 3]}),
            json!([{"op": "move", "from": "/l/0", "path": "/l/-"}]),
            json!({"l": [2, 3, 1]}),
        );
        ok(
            json!({"a": {"b": 1}}),
            json!([{"op": "move", "from": "/a/b", "path": ""}]),
            json!(1),
        );
    }

    #[test]
    fn copy_growth_is_bounded() {
        // Each copy of the root into itself doubles the document.
        let ops: Vec<Value> = (0..64)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/k{i}")}))
            .collect();
        let err = json_patch(&json!({"seed": [1, 2, 3, 4]}), &Value::Array(ops)).unwrap_err();
        assert!(err.to_string().contains("accumulated size"), "{err}");
    }

    #[test]
    fn nesting_growth_is_bounded() {
        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        let ops = json!([
            {"op": "add", "path": "/a", "value": deep},
            {"op": "copy", "from": "/a", "path": "/a/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0"}
        ]);
        let err = json_patch(&json!({}), &ops).unwrap_err();
        assert!(err.to_string().contains("nest deeper"), "{err}");
    }

    #[test]
    fn too_many_operations() {
        let ops: Vec<Value> = (0..10_001)
            .map(|_| json!({"op": "test", "path": "", "value": {}}))
            .collect();
        let err = json_patch(&json!({}), &Value::Array(ops)).unwrap_err();
        assert_eq!(err.status_code(), 413);
        assert!(err.to_string().contains("10000"), "{err}");
    }

    #[test]
    fn numeric_equality() {
        assert!(json_equal(&json!(1), &json!(1.0)));
        assert!(json_equal(&json!(-3), &json!(-3.0)));
        assert!(!json_equal(&json!(1), &json!(2)));
        assert!(!json_equal(&json!(1), &json!("1")));
        assert!(json_equal(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(!json_equal(&json!(u64::MAX), &json!(-1)));
        assert!(json_equal(
            &json!({"a": [1, {"b": null}]}),
            &json!({"a": [1.0, {"b": null}]})
        ));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_equal(&json!([1]), &json!([1, 1])));
    }
}
