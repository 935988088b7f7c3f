//! What the server does to an object on its way into storage: the metadata it owns (uid,
//! creation time, generation), the rules of create and update, names.

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::resources::{ResourceType, NAMESPACES};
use crate::status::{ApiError, ApiResult};

/// Objects larger than this are refused (etcd's default request limit is 1.5 MiB).
pub const MAX_OBJECT_BYTES: usize = 3 << 20;

/// Time as Kubernetes writes it in metadata: RFC 3339, seconds, UTC.
pub fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn now() -> String {
    timestamp(OffsetDateTime::now_utc())
}

pub fn meta(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    meta(object)?.get(field)?.as_str()
}

pub fn name_of(object: &Value) -> &str {
    meta_str(object, "name").unwrap_or("")
}

fn metadata_mut(object: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let metadata = map.entry("metadata").or_insert_with(|| json!({}));
    if metadata.is_null() {
        *metadata = json!({});
    }
    metadata
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

/// RFC 1123 DNS subdomain: what most object names must be.
pub fn dns_subdomain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a name is required".into());
    }
    if name.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' \
         or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
         regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            .into()
    })
}

/// RFC 1123 DNS label: namespace names.
pub fn dns_label_problem(name: &str) -> Option<String> {
    if name.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
         and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
         regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            .into()
    })
}

pub fn name_problem(rt: &ResourceType, name: &str) -> Option<String> {
    if *rt == NAMESPACES {
        dns_label_problem(name)
    } else {
        dns_subdomain_problem(name)
    }
}

/// Five characters as Kubernetes' `generateName` appends (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Checks `apiVersion` and `kind` against the URL's type (filling them in when absent).
pub fn check_type(rt: &ResourceType, object: &mut Value) -> ApiResult<()> {
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let api_version = rt.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(rt.kind));
        }
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )))
        }
    }
    Ok(())
}

/// Readies a new object: name (or `generateName`), namespace, and the server-owned
/// metadata. `namespace` is the request's.
pub fn prepare_create(
    rt: &ResourceType,
    namespace: Option<&str>,
    object: &mut Value,
) -> ApiResult<()> {
    check_type(rt, object)?;
    let md = metadata_mut(object)?;
    if md
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let name = match md.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match md.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => {
                let name = format!("{prefix}{}", random_suffix());
                md.insert("name".into(), json!(name));
                name
            }
            _ => {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    &[(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ))
            }
        },
    };
    if let Some(problem) = name_problem(rt, &name) {
        return Err(ApiError::invalid(
            rt,
            &name,
            &[(
                "metadata.name".into(),
                format!("Invalid value: \"{name}\": {problem}"),
            )],
        ));
    }
    if rt.namespaced {
        let requested = namespace.unwrap_or("default");
        match md.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                md.insert("namespace".into(), json!(requested));
            }
            Some(ns) if ns == requested => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
        }
    } else {
        md.remove("namespace");
    }
    md.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    md.insert("creationTimestamp".into(), json!(now()));
    md.remove("deletionTimestamp");
    md.remove("deletionGracePeriodSeconds");
    md.remove("selfLink");
    if rt.has_generation {
        md.insert("generation".into(), json!(1));
    } else {
        md.remove("generation");
    }
    Ok(())
}

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateScope {
    /// The object itself: everything but its status (for types with a status subresource).
    Main,
    /// The `/status` subresource: only the status.
    Status,
}

/// Readies a replacement of `old` by `new`: the identity and server-owned metadata come from
/// `old`; the generation moves on when the spec changed.
pub fn prepare_update(
    rt: &ResourceType,
    old: &Value,
    new: &mut Value,
    scope: UpdateScope,
) -> ApiResult<()> {
    check_type(rt, new)?;
    let name = name_of(old).to_string();
    if scope == UpdateScope::Status {
        let status = new.get("status").cloned();
        let mut replaced = old.clone();
        if let (Some(map), Some(status)) = (replaced.as_object_mut(), status) {
            map.insert("status".into(), status);
        }
        *new = replaced;
        return Ok(());
    }
    let old_md = meta(old).cloned().unwrap_or_default();
    let md = metadata_mut(new)?;
    match md.get("name").and_then(Value::as_str) {
        None | Some("") => {
            md.insert("name".into(), json!(name));
        }
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
    }
    if rt.namespaced {
        let ns = old_md.get("namespace").cloned().unwrap_or(json!("default"));
        match md.get("namespace") {
            None => {
                md.insert("namespace".into(), ns);
            }
            Some(v) if *v == ns || v.as_str() == Some("") => {
                md.insert("namespace".into(), ns);
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
        }
    }
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_md.get(owned) {
            Some(v) => md.insert(owned.into(), v.clone()),
            None => md.remove(owned),
        };
    }
    md.remove("selfLink");
    if rt.has_subresource("status") {
        let status = old.get("status").cloned();
        if let Some(map) = new.as_object_mut() {
            match status {
                Some(s) => map.insert("status".into(), s),
                None => map.remove("status"),
            };
        }
    }
    if rt.has_generation && old.get("spec") != new.get("spec") {
        let generation = old_md
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        if let Some(md) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            md.insert("generation".into(), json!(generation + 1));
        }
    }
    Ok(())
}

/// The `resourceVersion` a client sent in an object, if any.
pub fn sent_resource_version(object: &Value) -> ApiResult<Option<i64>> {
    match meta_str(object, "resourceVersion") {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {v:?}: not a number"))
        }),
    }
}

/// Sets the `resourceVersion` an object is served with.
pub fn set_resource_version(object: &mut Value, revision: i64) {
    if let Some(md) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        md.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{DEPLOYMENTS, PODS};

    #[test]
    fn create_fills_server_metadata_and_checks_names() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}});
        prepare_create(&PODS, Some("default"), &mut pod).expect("create");
        assert_eq!(pod["metadata"]["namespace"], "default");
        assert!(pod["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36));
        assert!(pod["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        assert!(pod["metadata"].get("generation").is_none());

        let mut generated = json!({"metadata": {"generateName": "web-"}});
        prepare_create(&PODS, Some("default"), &mut generated).expect("create");
        let name = generated["metadata"]["name"].as_str().expect("name");
        assert!(name.starts_with("web-") && name.len() == 9);

        for bad in ["Web", "-x", "a_b", ""] {
            let mut pod = json!({"metadata": {"name": bad}});
            let err = prepare_create(&PODS, Some("default"), &mut pod).expect_err(bad);
            assert_eq!(err.code.as_u16(), 422, "{bad}");
            assert!(err.message.contains("metadata.name"), "{}", err.message);
        }
        let mut other_ns = json!({"metadata": {"name": "x", "namespace": "b"}});
        assert!(prepare_create(&PODS, Some("a"), &mut other_ns).is_err());
        let mut wrong_kind = json!({"kind": "Service", "metadata": {"name": "x"}});
        assert!(prepare_create(&PODS, Some("a"), &mut wrong_kind).is_err());
        let mut with_rv = json!({"metadata": {"name": "x", "resourceVersion": "5"}});
        assert!(prepare_create(&PODS, Some("a"), &mut with_rv).is_err());
    }

    #[test]
    fn updates_keep_identity_and_bump_generation_on_spec_changes() {
        let mut old =
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        prepare_create(&DEPLOYMENTS, Some("default"), &mut old).expect("create");
        let mut new = json!({"metadata": {"name": "d", "uid": "forged"}, "spec": {"replicas": 1}, "status": {"replicas": 9}});
        prepare_update(&DEPLOYMENTS, &old, &mut new, UpdateScope::Main).expect("update");
        assert_eq!(new["metadata"]["uid"], old["metadata"]["uid"]);
        assert_eq!(new["metadata"]["generation"], 1);
        assert_eq!(
            new["status"]["replicas"], 1,
            "status only changes through /status"
        );
        let mut scaled = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3}});
        prepare_update(&DEPLOYMENTS, &old, &mut scaled, UpdateScope::Main).expect("update");
        assert_eq!(scaled["metadata"]["generation"], 2);
        let mut status = json!({"spec": {"replicas": 7}, "status": {"replicas": 2}});
        prepare_update(&DEPLOYMENTS, &old, &mut status, UpdateScope::Status).expect("status");
        assert_eq!(
            (
                status["spec"]["replicas"].as_i64(),
                status["status"]["replicas"].as_i64()
            ),
            (Some(1), Some(2))
        );
        let mut renamed = json!({"metadata": {"name": "other"}});
        assert!(prepare_update(&DEPLOYMENTS, &old, &mut renamed, UpdateScope::Main).is_err());
    }
}
