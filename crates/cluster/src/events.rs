//! Events as Kubernetes' controllers record them (`v1` Events, which `kubectl describe`
//! lists for an object by field selector on `involvedObject`). A repeat of the same event
//! on the same object within the hour bumps its count instead of adding another.

use serde_json::{json, Value};

use crate::api::write::{create_object, modify};
use crate::api::{Shared, Target};
use crate::objects::{meta_str, now, UpdateScope};
use crate::resources::{ResourceType, EVENTS};
use crate::status::ApiResult;

/// Records `reason`/`message` of `kind` ("Normal" or "Warning") about `object`, reported by
/// `component` (e.g. "deployment-controller").
pub async fn record(
    s: &Shared,
    rt: &ResourceType,
    object: &Value,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
) -> ApiResult<()> {
    let namespace = meta_str(object, "namespace")
        .unwrap_or("default")
        .to_string();
    let name = meta_str(object, "name").unwrap_or("").to_string();
    let uid = meta_str(object, "uid").unwrap_or("").to_string();
    // One event object per (object, reason, message), named as Kubernetes' recorder names
    // its aggregates: the object's name and a stable suffix.
    let digest = fnv1a(&format!("{uid}/{kind}/{reason}/{message}"));
    let event_name = format!("{name}.{digest:016x}");
    let t = Target::object(EVENTS, Some(&namespace), &event_name);
    let stamp = now();
    let bumped = modify(s, &t, UpdateScope::Main, |old| {
        let mut e = old.clone();
        let count = old.get("count").and_then(Value::as_i64).unwrap_or(1);
        e["count"] = json!(count + 1);
        e["lastTimestamp"] = json!(stamp);
        Ok(Some(e))
    })
    .await;
    match bumped {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "NotFound" => {
            let event = json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": event_name, "namespace": namespace},
                "involvedObject": {
                    "kind": rt.kind,
                    "namespace": namespace,
                    "name": name,
                    "uid": uid,
                    "apiVersion": rt.api_version(),
                    "resourceVersion": meta_str(object, "resourceVersion").unwrap_or(""),
                },
                "reason": reason,
                "message": message,
                "type": kind,
                "source": {"component": component},
                "reportingComponent": component,
                "reportingInstance": "",
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            });
            match create_object(s, &EVENTS, Some(&namespace), event, false).await {
                Ok(_) => Ok(()),
                // Its namespace is going away: nobody will read the event.
                Err(e) if e.reason == "Forbidden" || e.reason == "NotFound" => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
