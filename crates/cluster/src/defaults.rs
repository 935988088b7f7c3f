//! Kubernetes' defaulting, per kind: the fields an object gains on its way in, so that what
//! clients read back (and compare, as `kubectl rollout undo` does) is what Kubernetes would
//! have stored.

use serde_json::{json, Map, Value};

use crate::resources::{ResourceType, DEPLOYMENTS, NAMESPACES, PODS, REPLICA_SETS, SECRETS};

/// Applies the defaults of `rt`'s kind to `object` (on create and on every update).
pub fn apply(rt: &ResourceType, object: &mut Value) {
    if *rt == PODS {
        if let Some(spec) = object.get_mut("spec") {
            pod_spec(spec);
        }
    } else if *rt == DEPLOYMENTS {
        deployment(object);
    } else if *rt == REPLICA_SETS {
        replica_set(object);
    } else if *rt == NAMESPACES {
        let spec = entry_object(object, "spec");
        if !spec.contains_key("finalizers") {
            spec.insert("finalizers".into(), json!(["kubernetes"]));
        }
        let status = entry_object(object, "status");
        if !status.contains_key("phase") {
            status.insert("phase".into(), json!("Active"));
        }
    } else if *rt == SECRETS {
        if let Some(map) = object.as_object_mut() {
            let typ = map.entry("type").or_insert_with(|| json!("Opaque"));
            if typ.as_str().is_none_or(str::is_empty) {
                *typ = json!("Opaque");
            }
        }
    }
}

/// What only a new pod gets, beyond the defaults: its starting status, priority and the
/// tolerations Kubernetes' admission adds.
pub fn new_pod(object: &mut Value) {
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("priority").or_insert(json!(0));
        spec.entry("preemptionPolicy")
            .or_insert(json!("PreemptLowerPriority"));
        spec.entry("serviceAccountName").or_insert(json!("default"));
        spec.entry("serviceAccount").or_insert(json!("default"));
        let tolerations = spec.entry("tolerations").or_insert(json!([]));
        if let Some(list) = tolerations.as_array_mut() {
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                let present = list.iter().any(|t| {
                    t.get("key").and_then(Value::as_str) == Some(key)
                        && t.get("effect").and_then(Value::as_str) == Some("NoExecute")
                });
                if !present {
                    list.push(json!({
                        "key": key, "operator": "Exists", "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }));
                }
            }
        }
    }
    let qos = object.get("spec").map(qos_class).unwrap_or("BestEffort");
    if let Some(map) = object.as_object_mut() {
        map.insert(
            "status".into(),
            json!({"phase": "Pending", "qosClass": qos}),
        );
    }
}

fn entry_object<'a>(object: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let map = object.as_object_mut().expect("made an object above");
    let slot = map.entry(field).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("made an object above")
}

fn set_default(map: &mut Map<String, Value>, field: &str, value: Value) {
    if map.get(field).is_none_or(Value::is_null) {
        map.insert(field.into(), value);
    }
}

/// The pull policy Kubernetes gives a container that names none.
pub fn image_pull_policy(image: &str) -> &'static str {
    kiln_image::PullPolicy::default_for(image).as_str()
}

fn container(c: &mut Value) {
    let Some(c) = c.as_object_mut() else { return };
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if c.get("imagePullPolicy")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        c.insert("imagePullPolicy".into(), json!(image_pull_policy(image)));
    }
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                set_default(h, "scheme", json!("HTTP"));
                set_default(h, "path", json!("/"));
            }
        }
    }
}

/// `SetDefaults_PodSpec` and what it implies for containers and volumes.
pub fn pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    set_default(s, "restartPolicy", json!("Always"));
    set_default(s, "terminationGracePeriodSeconds", json!(30));
    set_default(s, "dnsPolicy", json!("ClusterFirst"));
    set_default(s, "securityContext", json!({}));
    set_default(s, "schedulerName", json!("default-scheduler"));
    set_default(s, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container);
        }
    }
    if let Some(volumes) = s.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in volumes.iter_mut().filter_map(Value::as_object_mut) {
            for source in ["secret", "configMap"] {
                if let Some(src) = v.get_mut(source).and_then(Value::as_object_mut) {
                    set_default(src, "defaultMode", json!(420));
                }
            }
        }
    }
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(Value::as_object_mut) {
        // Kubernetes serialises the template's empty creation time as null.
        let md = t.entry("metadata").or_insert_with(|| json!({}));
        if let Some(md) = md.as_object_mut() {
            md.entry("creationTimestamp").or_insert(Value::Null);
        }
        if let Some(ps) = t.get_mut("spec") {
            pod_spec(ps);
        }
    }
}

fn deployment(object: &mut Value) {
    let spec = entry_object(object, "spec");
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
    if let Some(st) = strategy.as_object_mut() {
        set_default(st, "type", json!("RollingUpdate"));
        if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
        }
    }
    template(spec);
}

fn replica_set(object: &mut Value) {
    let spec = entry_object(object, "spec");
    set_default(spec, "replicas", json!(1));
    template(spec);
}

/// The pod's quality-of-service class from its containers' requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let has = |m: Option<&Map<String, Value>>, k: &str| m.is_some_and(|m| m.contains_key(k));
        for resource in ["cpu", "memory"] {
            if has(requests, resource) || has(limits, resource) {
                any = true;
            }
            let limit = limits.and_then(|l| l.get(resource));
            let request = requests.and_then(|r| r.get(resource)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.16", "IfNotPresent"),
            ("localhost:5000/app", "Always"),
            ("localhost:5000/app:v2", "IfNotPresent"),
            ("nginx@sha256:0123", "IfNotPresent"),
            ("nginx:latest@sha256:0123", "IfNotPresent"),
        ] {
            assert_eq!(image_pull_policy(image), policy, "{image}");
        }
    }

    #[test]
    fn deployments_get_kubernetes_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.16", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox", "imagePullPolicy": "Never"},
        ]}}}});
        apply(&DEPLOYMENTS, &mut d);
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert!(spec["template"]["metadata"]["creationTimestamp"].is_null());
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["containers"][1]["imagePullPolicy"], "Never");
        let again = d.clone();
        apply(&DEPLOYMENTS, &mut d);
        assert_eq!(d, again, "defaulting is idempotent");
    }

    #[test]
    fn new_pods_start_pending_with_their_qos_class() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        new_pod(&mut pod);
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "Guaranteed"})
        );
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
        let mut best = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        new_pod(&mut best);
        assert_eq!(best["status"]["qosClass"], "BestEffort");
    }
}
