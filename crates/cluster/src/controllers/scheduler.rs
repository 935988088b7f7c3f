//! The scheduler: binds each pending pod to a Ready node that fits it (its `nodeSelector`
//! matches the node's labels, the node is not cordoned and has no NoSchedule/NoExecute taint
//! the pod does not tolerate), spreading pods by how many each node already runs. A pod
//! that fits nowhere stays Pending with `PodScheduled=False` and a `FailedScheduling` event,
//! and is tried again whenever a node changes.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{key_of, list, Controller, Key, Queue};
use crate::api::write::modify;
use crate::api::{Shared, Target};
use crate::events;
use crate::objects::{name_of, now, UpdateScope};
use crate::resources::{ResourceType, NODES, PODS};
use crate::status::ApiResult;

const COMPONENT: &str = "default-scheduler";

pub struct Scheduler;

fn is_pending(pod: &Value) -> bool {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod
            .pointer("/spec/schedulerName")
            .and_then(Value::as_str)
            .is_none_or(|s| s == COMPONENT)
}

fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn selector_matches(pod: &Value, node: &Value) -> bool {
    let Some(wanted) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object) else {
        return true;
    };
    let labels = node.pointer("/metadata/labels").and_then(Value::as_object);
    wanted
        .iter()
        .all(|(k, v)| labels.is_some_and(|l| l.get(k) == Some(v)))
}

/// Whether the pod tolerates every NoSchedule/NoExecute taint of the node.
fn tolerates(pod: &Value, node: &Value) -> bool {
    let taints = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    taints.iter().all(|taint| {
        let effect = taint.get("effect").and_then(Value::as_str).unwrap_or("");
        if effect == "PreferNoSchedule" {
            return true;
        }
        tolerations.iter().any(|t| {
            let key_ok = match t.get("key").and_then(Value::as_str) {
                None | Some("") => t.get("operator").and_then(Value::as_str) == Some("Exists"),
                Some(k) => Some(k) == taint.get("key").and_then(Value::as_str),
            };
            let value_ok = t.get("operator").and_then(Value::as_str) == Some("Exists")
                || t.get("value") == taint.get("value");
            let effect_ok = t
                .get("effect")
                .and_then(Value::as_str)
                .is_none_or(|e| e.is_empty() || e == effect);
            key_ok && value_ok && effect_ok
        })
    })
}

/// Why a node does not fit, in the scheduler's words, or `None` if it fits.
fn misfit(pod: &Value, node: &Value) -> Option<&'static str> {
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        Some("node(s) were unschedulable")
    } else if !node_ready(node) {
        Some("node(s) were not ready")
    } else if !selector_matches(pod, node) {
        Some("node(s) didn't match Pod's node affinity/selector")
    } else if !tolerates(pod, node) {
        Some("node(s) had untolerated taint")
    } else {
        None
    }
}

fn set_condition(pod: &mut Value, status: &str, reason: Option<&str>, message: Option<&str>) {
    let mut condition = json!({"type": "PodScheduled", "status": status,
        "lastProbeTime": null, "lastTransitionTime": now()});
    if let Some(r) = reason {
        condition["reason"] = json!(r);
    }
    if let Some(m) = message {
        condition["message"] = json!(m);
    }
    let conditions = pod
        .as_object_mut()
        .map(|p| p.entry("status").or_insert(json!({})))
        .and_then(|st| st.as_object_mut())
        .map(|st| st.entry("conditions").or_insert(json!([])));
    if let Some(Value::Array(list)) = conditions {
        if let Some(existing) = list
            .iter_mut()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
        {
            if existing.get("status") == condition.get("status")
                && existing.get("message") == condition.get("message")
            {
                return;
            }
            *existing = condition;
        } else {
            list.push(condition);
        }
    }
}

#[async_trait::async_trait]
impl Controller for Scheduler {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    async fn keys_for(&self, s: &Shared, rt: &ResourceType, object: &Value) -> Vec<Key> {
        if *rt == PODS && is_pending(object) {
            return vec![key_of(object)];
        }
        if *rt == NODES {
            return self.all_keys(s).await;
        }
        Vec::new()
    }

    async fn all_keys(&self, s: &Shared) -> Vec<Key> {
        list(s, &PODS, None)
            .await
            .unwrap_or_default()
            .iter()
            .filter(|p| is_pending(p))
            .map(key_of)
            .collect()
    }

    async fn sync(&self, s: &Shared, key: &Key, _queue: &Arc<Queue>) -> ApiResult<()> {
        let (namespace, name) = key;
        let t = Target::object(PODS, Some(namespace), name);
        let pod = match crate::api::read::current(s, &t).await {
            Ok((pod, _)) => pod,
            Err(e) if e.reason == "NotFound" => return Ok(()),
            Err(e) => return Err(e),
        };
        if !is_pending(&pod) {
            return Ok(());
        }
        let nodes = list(s, &NODES, None).await?;
        let pods = list(s, &PODS, None).await?;
        let load = |node: &str| {
            pods.iter()
                .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
                .filter(|p| {
                    !matches!(
                        p.pointer("/status/phase").and_then(Value::as_str),
                        Some("Succeeded" | "Failed")
                    )
                })
                .count()
        };
        let mut reasons: Vec<&str> = Vec::new();
        let mut best: Option<(usize, String)> = None;
        for node in &nodes {
            match misfit(&pod, node) {
                Some(why) => reasons.push(why),
                None => {
                    let n = name_of(node).to_string();
                    let l = load(&n);
                    if best.as_ref().is_none_or(|(bl, bn)| (l, &n) < (*bl, bn)) {
                        best = Some((l, n));
                    }
                }
            }
        }
        let status_target = t.with_subresource(Some("status"));
        let Some((_, node)) = best else {
            let message = if nodes.is_empty() {
                "no nodes available to schedule pods".to_string()
            } else {
                reasons.sort_unstable();
                let mut counted: Vec<String> = Vec::new();
                let mut i = 0;
                while i < reasons.len() {
                    let same = reasons[i..]
                        .iter()
                        .take_while(|r| **r == reasons[i])
                        .count();
                    counted.push(format!("{same} {}", reasons[i]));
                    i += same;
                }
                format!(
                    "0/{} nodes are available: {}.",
                    nodes.len(),
                    counted.join(", ")
                )
            };
            let changed = modify(s, &status_target, UpdateScope::Status, |current| {
                let mut p = current.clone();
                set_condition(&mut p, "False", Some("Unschedulable"), Some(&message));
                Ok((p != *current).then_some(p))
            })
            .await?;
            if changed.is_some() {
                events::record(
                    s,
                    &PODS,
                    &pod,
                    "Warning",
                    "FailedScheduling",
                    &message,
                    COMPONENT,
                )
                .await?;
            }
            return Ok(());
        };
        let bound = modify(s, &t, UpdateScope::Main, |current| {
            if !is_pending(current) {
                return Ok(None);
            }
            let mut p = current.clone();
            p["spec"]["nodeName"] = json!(node);
            Ok(Some(p))
        })
        .await?;
        if bound.is_some() {
            modify(s, &status_target, UpdateScope::Status, |current| {
                let mut p = current.clone();
                set_condition(&mut p, "True", None, None);
                Ok((p != *current).then_some(p))
            })
            .await?;
            let message = format!("Successfully assigned {namespace}/{name} to {node}");
            events::record(s, &PODS, &pod, "Normal", "Scheduled", &message, COMPONENT).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_fit_by_readiness_selector_and_taints() {
        let ready = json!({"type": "Ready", "status": "True"});
        let node = json!({"metadata": {"name": "a", "labels": {"disk": "ssd"}},
            "status": {"conditions": [ready]}});
        let pod = json!({"spec": {"nodeSelector": {"disk": "ssd"}}});
        assert_eq!(misfit(&pod, &node), None);
        let hdd = json!({"spec": {"nodeSelector": {"disk": "hdd"}}});
        assert!(misfit(&hdd, &node).is_some_and(|m| m.contains("selector")));
        let mut tainted = node.clone();
        tainted["spec"] =
            json!({"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]});
        assert!(misfit(&pod, &tainted).is_some_and(|m| m.contains("taint")));
        let tolerant = json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]}});
        assert_eq!(misfit(&tolerant, &tainted), None);
        let mut cordoned = node.clone();
        cordoned["spec"] = json!({"unschedulable": true});
        assert!(misfit(&pod, &cordoned).is_some());
        let not_ready = json!({"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert!(misfit(&pod, &not_ready).is_some_and(|m| m.contains("not ready")));
    }
}
