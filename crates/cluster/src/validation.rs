//! The checks Kubernetes makes before storing an object; each problem names its field in
//! Kubernetes' words, so kubectl shows the user what to fix.

use serde_json::Value;

use crate::objects::dns_label_problem;
use crate::resources::{ResourceType, DEPLOYMENTS, PODS, REPLICA_SETS};
use crate::selector::LabelSelector;

pub type Problems = Vec<(String, String)>;

/// Problems with `object` as a `rt` (empty: valid).
pub fn validate(rt: &ResourceType, object: &Value) -> Problems {
    let mut problems = Vec::new();
    labels(
        object.pointer("/metadata/labels"),
        "metadata.labels",
        &mut problems,
    );
    if *rt == PODS {
        pod_spec(object.get("spec"), "spec", &mut problems);
    } else if *rt == DEPLOYMENTS || *rt == REPLICA_SETS {
        workload(object, &mut problems);
    }
    problems
}

fn labels(labels: Option<&Value>, field: &str, problems: &mut Problems) {
    let Some(labels) = labels.filter(|l| !l.is_null()) else {
        return;
    };
    let Some(map) = labels.as_object() else {
        problems.push((
            field.into(),
            "Invalid value: must be a map of strings".into(),
        ));
        return;
    };
    for (key, value) in map {
        let Some(value) = value.as_str() else {
            problems.push((
                field.to_string(),
                format!("Invalid value: {value}: label values must be strings"),
            ));
            continue;
        };
        // A selector parse checks key and value with Kubernetes' label rules.
        if let Err(e) = LabelSelector::parse(&format!("{key}={value}")) {
            problems.push((
                field.into(),
                format!("Invalid value: \"{key}={value}\": {e}"),
            ));
        }
    }
}

fn pod_spec(spec: Option<&Value>, field: &str, problems: &mut Problems) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        problems.push((field.into(), "Required value".into()));
        return;
    };
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => problems.push((format!("{field}.containers"), "Required value".into())),
        Some(list) if list.is_empty() => {
            problems.push((format!("{field}.containers"), "Required value".into()))
        }
        Some(_) => {}
    }
    let mut names: Vec<&str> = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(items) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in items.iter().enumerate() {
            let at = format!("{field}.{list}[{i}]");
            match c.get("name").and_then(Value::as_str) {
                None | Some("") => problems.push((format!("{at}.name"), "Required value".into())),
                Some(name) => {
                    if let Some(p) = dns_label_problem(name) {
                        problems.push((
                            format!("{at}.name"),
                            format!("Invalid value: \"{name}\": {p}"),
                        ));
                    }
                    if names.contains(&name) {
                        problems
                            .push((format!("{at}.name"), format!("Duplicate value: \"{name}\"")));
                    }
                    names.push(name);
                }
            }
            match c.get("image").and_then(Value::as_str) {
                Some(image) if !image.trim().is_empty() => {
                    if image.trim() != image {
                        problems.push((
                            format!("{at}.image"),
                            "Invalid value: must not have leading or trailing whitespace".into(),
                        ));
                    }
                }
                _ => problems.push((format!("{at}.image"), "Required value".into())),
            }
            if let Some(policy) = c.get("imagePullPolicy").and_then(Value::as_str) {
                if !["Always", "IfNotPresent", "Never"].contains(&policy) {
                    problems.push((
                        format!("{at}.imagePullPolicy"),
                        format!("Unsupported value: \"{policy}\": supported values: \"Always\", \"IfNotPresent\", \"Never\""),
                    ));
                }
            }
        }
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&policy) {
            problems.push((
                format!("{field}.restartPolicy"),
                format!("Unsupported value: \"{policy}\": supported values: \"Always\", \"OnFailure\", \"Never\""),
            ));
        }
    }
}

fn workload(object: &Value, problems: &mut Problems) {
    if let Some(replicas) = object.pointer("/spec/replicas") {
        if replicas.as_i64().is_none_or(|r| r < 0) {
            problems.push((
                "spec.replicas".into(),
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            ));
        }
    }
    let selector = match object.pointer("/spec/selector") {
        None | Some(Value::Null) => {
            problems.push(("spec.selector".into(), "Required value".into()));
            None
        }
        Some(s) => match LabelSelector::from_object(s) {
            Ok(sel) if sel.is_empty() => {
                problems.push((
                    "spec.selector".into(),
                    "Invalid value: {}: empty selector is invalid for deployment".into(),
                ));
                None
            }
            Ok(sel) => Some(sel),
            Err(e) => {
                problems.push(("spec.selector".into(), format!("Invalid value: {e}")));
                None
            }
        },
    };
    let template_labels = object.pointer("/spec/template/metadata/labels");
    labels(template_labels, "spec.template.metadata.labels", problems);
    if let Some(sel) = selector {
        if !sel.matches(template_labels.and_then(Value::as_object)) {
            problems.push((
                "spec.template.metadata.labels".into(),
                format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    template_labels
                        .map(Value::to_string)
                        .unwrap_or("null".into())
                ),
            ));
        }
    }
    pod_spec(
        object.pointer("/spec/template/spec"),
        "spec.template.spec",
        problems,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_name_their_fields() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "x"}, {"name": "a"}, {"image": "y", "name": "Bad_Name"}]}});
        let fields: Vec<String> = validate(&PODS, &pod).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[1].name",
                "spec.containers[1].image",
                "spec.containers[2].name"
            ]
        );
        assert!(validate(&PODS, &json!({"spec": {"containers": []}}))
            .iter()
            .any(|(f, _)| f == "spec.containers"));

        let deploy = json!({"spec": {"replicas": -1, "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let fields: Vec<String> = validate(&DEPLOYMENTS, &deploy)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(fields, ["spec.replicas", "spec.template.metadata.labels"]);
        let ok = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert!(validate(&DEPLOYMENTS, &ok).is_empty());
    }
}
