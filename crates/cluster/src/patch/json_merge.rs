//! RFC 7386 JSON merge patch.

use serde_json::{Map, Value};

use super::{remove_key, MAX_DEPTH};

/// Applies an RFC 7386 merge patch and returns the patched copy.
///
/// This follows the RFC to the letter, including the cases where the
/// Kubernetes apiserver's library deviates (it also prunes `null` members of
/// objects nested inside arrays; the RFC copies array values verbatim).
/// Request bodies are depth-checked by [`super::apply`]; for values built in
/// memory that nest deeper than the server's limit, merging stops at that
/// depth and the rest of the patch is copied as it is, since this function has
/// no way to report an error.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    if !patch.is_object() {
        return patch.clone();
    }
    let mut out = target.clone();
    merge_into(&mut out, patch, 0);
    out
}

fn merge_into(target: &mut Value, patch: &Value, depth: usize) {
    let Value::Object(patch_members) = patch else {
        *target = patch.clone();
        return;
    };
    if depth >= MAX_DEPTH {
        *target = patch.clone();
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(members) = target else {
        return;
    };
    for (key, value) in patch_members {
        if value.is_null() {
            remove_key(members, key);
        } else {
            let slot = members.entry(key.clone()).or_insert(Value::Null);
            merge_into(slot, value, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn case(original: &str, patch: &str, expected: &str) {
        let original: Value = serde_json::from_str(original).unwrap();
        let patch: Value = serde_json::from_str(patch).unwrap();
        let expected: Value = serde_json::from_str(expected).unwrap();
        let before = original.clone();
        assert_eq!(
            merge_patch(&original, &patch),
            expected,
            "{original} + {patch}"
        );
        assert_eq!(original, before, "target must not be mutated");
    }

    #[test]
    fn rfc7386_appendix_a() {
        case(r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#);
        case(r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#);
        case(r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#);
        case(r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#);
        case(r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#);
        case(r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#);
        case(
            r#"{"a":{"b":"c"}}"#,
            r#"{"a":{"b":"d","c":null}}"#,
            r#"{"a":{"b":"d"}}"#,
        );
        case(r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#);
        case(r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#);
        case(r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#);
        case(r#"{"a":"foo"}"#, "null", "null");
        case(r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#);
        case(r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#);
        case("[1,2]", r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#);
        case("{}", r#"{"a":{"bb":{"ccc":null}}}"#, r#"{"a":{"bb":{}}}"#);
    }

    #[test]
    fn rfc7386_section_3_example() {
        case(
            r#"{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},
                "tags":["example","sample"],"content":"This will be unchanged"}"#,
            r#"{"title":"Hello!","phoneNumber":"+01-123-456-7890",
                "author":{"familyName":null},"tags":["example"]}"#,
            r#"{"title":"Hello!","author":{"givenName":"John"},"tags":["example"],
                "content":"This will be unchanged","phoneNumber":"+01-123-456-7890"}"#,
        );
    }

    #[test]
    fn arrays_are_copied_verbatim() {
        case(
            r#"{"a":1}"#,
            r#"{"l":[{"x":null},null]}"#,
            r#"{"a":1,"l":[{"x":null},null]}"#,
        );
    }

    #[test]
    fn kubernetes_shaped_patch() {
        let target = json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a"}]}}}
        });
        let patch = json!({
            "metadata": {"labels": {"tier": null, "env": "prod"}},
            "spec": {"replicas": 3}
        });
        let out = merge_patch(&target, &patch);
        assert_eq!(
            out,
            json!({
                "metadata": {"name": "web", "labels": {"app": "web", "env": "prod"}},
                "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "a"}]}}}
            })
        );
    }
}
