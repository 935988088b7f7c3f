//! The ReplicaSet controller: as many pods as `spec.replicas`, made from the template and
//! controlled by the ReplicaSet; the status counts them.
//!
//! Pods matching the selector with no controller are adopted; owned pods whose labels no
//! longer match are released. Surplus pods are deleted in Kubernetes' order: unscheduled
//! before scheduled, pending before running, not ready before ready, the most recently
//! ready first, more restarts first, newer first.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{
    adopt, controlled_by, controller_of, has_controller, key_of, list, release, Controller, Key,
    Queue,
};
use crate::api::write::{create_object, delete_object, modify, DeleteOptions};
use crate::api::{Shared, Target};
use crate::events;
use crate::objects::{meta_str, name_of, UpdateScope};
use crate::resources::{ResourceType, PODS, REPLICA_SETS};
use crate::selector::LabelSelector;
use crate::status::{ApiError, ApiResult};

/// Pods created or deleted per sync at most; the rest follow on the next sync.
const BURST: usize = 500;

pub struct ReplicaSetController;

const COMPONENT: &str = "replicaset-controller";

fn is_active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

fn parse_time(v: Option<&Value>) -> Option<OffsetDateTime> {
    v.and_then(Value::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
}

/// When the pod became Ready, if it is.
fn ready_since(pod: &Value) -> Option<OffsetDateTime> {
    let ready = pod
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))?;
    if ready.get("status").and_then(Value::as_str) != Some("True") {
        return None;
    }
    parse_time(ready.get("lastTransitionTime"))
        .or_else(|| parse_time(pod.pointer("/metadata/creationTimestamp")))
}

fn restarts(pod: &Value) -> i64 {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .sum()
        })
        .unwrap_or(0)
}

/// Deletion order: lower ranks go first.
fn deletion_rank(pod: &Value) -> (u8, u8, u8, i64, i64, i64) {
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = match pod.pointer("/status/phase").and_then(Value::as_str) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready = ready_since(pod);
    // Newer readiness and newer creation go first: negate the timestamps.
    let ready_at = ready.map_or(0, |t| -t.unix_timestamp());
    let created =
        parse_time(pod.pointer("/metadata/creationTimestamp")).map_or(0, |t| -t.unix_timestamp());
    (
        u8::from(scheduled),
        phase,
        u8::from(ready.is_some()),
        ready_at,
        -restarts(pod),
        created,
    )
}

/// A new pod from the ReplicaSet's template.
fn pod_from(rs: &Value) -> Value {
    let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut metadata = serde_json::Map::new();
    for field in ["labels", "annotations", "finalizers"] {
        if let Some(v) = template.pointer(&format!("/metadata/{field}")) {
            if !v.is_null() {
                metadata.insert(field.into(), v.clone());
            }
        }
    }
    metadata.insert("generateName".into(), json!(format!("{}-", name_of(rs))));
    metadata.insert(
        "ownerReferences".into(),
        json!([{
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": name_of(rs),
            "uid": meta_str(rs, "uid").unwrap_or(""),
            "controller": true,
            "blockOwnerDeletion": true,
        }]),
    );
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

#[async_trait::async_trait]
impl Controller for ReplicaSetController {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    async fn keys_for(&self, s: &Shared, rt: &ResourceType, object: &Value) -> Vec<Key> {
        let namespace = meta_str(object, "namespace")
            .unwrap_or("default")
            .to_string();
        if *rt == REPLICA_SETS {
            return vec![key_of(object)];
        }
        if *rt != PODS {
            return Vec::new();
        }
        if let Some(owner) = controller_of(object, "ReplicaSet") {
            return vec![(namespace, owner.to_string())];
        }
        if has_controller(object) {
            return Vec::new();
        }
        // An orphan: any ReplicaSet here might adopt it.
        list(s, &REPLICA_SETS, Some(&namespace))
            .await
            .unwrap_or_default()
            .iter()
            .map(|rs| (namespace.clone(), name_of(rs).to_string()))
            .collect()
    }

    async fn all_keys(&self, s: &Shared) -> Vec<Key> {
        list(s, &REPLICA_SETS, None)
            .await
            .unwrap_or_default()
            .iter()
            .map(key_of)
            .collect()
    }

    async fn sync(&self, s: &Shared, key: &Key, queue: &Arc<Queue>) -> ApiResult<()> {
        let (namespace, name) = key;
        let rs_target = Target::object(REPLICA_SETS, Some(namespace), name);
        let rs = match crate::api::read::current(s, &rs_target).await {
            Ok((rs, _)) => rs,
            Err(e) if e.reason == "NotFound" => return Ok(()),
            Err(e) => return Err(e),
        };
        let uid = meta_str(&rs, "uid").unwrap_or("").to_string();
        let selector = rs
            .pointer("/spec/selector")
            .map(LabelSelector::from_object)
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("replicaset {name}: selector: {e}")))?
            .unwrap_or_else(LabelSelector::nothing);
        let labels_of = |p: &Value| {
            p.pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
        };
        let mut owned = Vec::new();
        for pod in list(s, &PODS, Some(namespace)).await? {
            let matches = selector.matches(labels_of(&pod).as_ref());
            if controlled_by(&pod, &uid) {
                if matches {
                    owned.push(pod);
                } else {
                    release(s, namespace, &pod, &uid).await?;
                }
            } else if matches
                && !has_controller(&pod)
                && pod.pointer("/metadata/deletionTimestamp").is_none()
                && rs.pointer("/metadata/deletionTimestamp").is_none()
            {
                if let Some(adopted) = adopt(s, namespace, &pod, &rs).await? {
                    owned.push(adopted);
                }
            }
        }
        let active: Vec<&Value> = owned.iter().filter(|p| is_active(p)).collect();
        let want = rs
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        if rs.pointer("/metadata/deletionTimestamp").is_none() {
            if active.len() < want {
                for _ in 0..(want - active.len()).min(BURST) {
                    let created =
                        create_object(s, &PODS, Some(namespace), pod_from(&rs), false).await;
                    match created {
                        Ok(pod) => {
                            let message = format!("Created pod: {}", name_of(&pod));
                            events::record(
                                s,
                                &REPLICA_SETS,
                                &rs,
                                "Normal",
                                "SuccessfulCreate",
                                &message,
                                COMPONENT,
                            )
                            .await?;
                        }
                        Err(e) => {
                            let message = format!("Error creating: {}", e.message);
                            events::record(
                                s,
                                &REPLICA_SETS,
                                &rs,
                                "Warning",
                                "FailedCreate",
                                &message,
                                COMPONENT,
                            )
                            .await?;
                            return Err(e);
                        }
                    }
                }
            } else if active.len() > want {
                let mut doomed = active.clone();
                doomed.sort_by_key(|p| deletion_rank(p));
                for pod in doomed.into_iter().take((active.len() - want).min(BURST)) {
                    let t = Target::object(PODS, Some(namespace), name_of(pod));
                    match delete_object(s, &t, &DeleteOptions::background()).await {
                        Ok(_) => {
                            let message = format!("Deleted pod: {}", name_of(pod));
                            events::record(
                                s,
                                &REPLICA_SETS,
                                &rs,
                                "Normal",
                                "SuccessfulDelete",
                                &message,
                                COMPONENT,
                            )
                            .await?;
                        }
                        Err(e) if e.reason == "NotFound" => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        self.update_status(s, &rs_target, &rs, &active, queue).await
    }
}

impl ReplicaSetController {
    async fn update_status(
        &self,
        s: &Shared,
        t: &Target,
        rs: &Value,
        active: &[&Value],
        queue: &Arc<Queue>,
    ) -> ApiResult<()> {
        let now = OffsetDateTime::now_utc();
        let min_ready = rs
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let template_labels = rs
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object);
        let mut ready = 0;
        let mut available = 0;
        let mut fully_labeled = 0;
        let mut next_check: Option<i64> = None;
        for pod in active {
            let labels = pod.pointer("/metadata/labels").and_then(Value::as_object);
            if template_labels.is_none_or(|want| {
                want.iter()
                    .all(|(k, v)| labels.is_some_and(|l| l.get(k) == Some(v)))
            }) {
                fully_labeled += 1;
            }
            if let Some(since) = ready_since(pod) {
                ready += 1;
                let waited = (now - since).whole_seconds();
                if waited >= min_ready {
                    available += 1;
                } else {
                    let left = min_ready - waited;
                    next_check = Some(next_check.map_or(left, |n| n.min(left)));
                }
            }
        }
        if let Some(secs) = next_check {
            let key = key_of(rs);
            queue.add_after(key, Duration::from_secs(secs.max(1) as u64));
        }
        let generation = rs
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": generation,
        });
        let status_target = t.with_subresource(Some("status"));
        modify(s, &status_target, UpdateScope::Status, |current| {
            let mut merged = current.get("status").cloned().unwrap_or(json!({}));
            if let (Some(m), Some(new)) = (merged.as_object_mut(), status.as_object()) {
                for (k, v) in new {
                    m.insert(k.clone(), v.clone());
                }
                // Kubernetes leaves zero counts out of the status.
                m.retain(|k, v| k == "replicas" || k == "observedGeneration" || v != &json!(0));
            }
            if current.get("status") == Some(&merged) {
                return Ok(None);
            }
            let mut next = current.clone();
            next["status"] = merged;
            Ok(Some(next))
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surplus_pods_go_in_kubernetes_order() {
        let pod = |name: &str, node: Option<&str>, phase: &str, ready_at: Option<&str>| {
            let mut p = json!({"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {}, "status": {"phase": phase}});
            if let Some(n) = node {
                p["spec"]["nodeName"] = json!(n);
            }
            if let Some(t) = ready_at {
                p["status"]["conditions"] =
                    json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]);
            }
            p
        };
        let mut pods = [
            pod(
                "ready-old",
                Some("n"),
                "Running",
                Some("2026-01-01T00:01:00Z"),
            ),
            pod("unscheduled", None, "Pending", None),
            pod(
                "ready-new",
                Some("n"),
                "Running",
                Some("2026-01-01T00:05:00Z"),
            ),
            pod("running-unready", Some("n"), "Running", None),
            pod("pending", Some("n"), "Pending", None),
        ];
        pods.sort_by_key(deletion_rank);
        let order: Vec<&str> = pods.iter().map(name_of).collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "running-unready",
                "ready-new",
                "ready-old"
            ]
        );
    }

    #[test]
    fn pods_come_from_the_template_and_name_their_controller() {
        let rs = json!({"metadata": {"name": "web-abc", "uid": "u1"}, "spec": {"template": {
            "metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        let pod = pod_from(&rs);
        assert_eq!(pod["metadata"]["generateName"], "web-abc-");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert!(controlled_by(&pod, "u1"));
        assert_eq!(pod["spec"]["containers"][0]["image"], "nginx");
    }
}
