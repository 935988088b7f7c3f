//! Events about pods, as the kubelet's recorder writes them: a repeat of the same reason
//! and message for the same object raises the count of the existing Event instead of
//! writing a new one, so `kubectl describe` shows "(x4 over 2m)".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::apiclient::{self, ApiClient};

/// (object uid, field path, reason, message): what makes two events the same.
type EventKey = (String, String, String, String);
/// (namespace, name, count) of the Event written for a key.
type Written = (String, String, u64);

#[derive(Clone)]
pub struct Recorder {
    api: ApiClient,
    node: String,
    /// (object uid, field path, reason, message) -> (event namespace/name, count).
    seen: Arc<Mutex<HashMap<EventKey, Written>>>,
}

impl Recorder {
    pub fn new(api: ApiClient, node: &str) -> Recorder {
        Recorder {
            api,
            node: node.to_string(),
            seen: Arc::default(),
        }
    }

    /// Records an event about `object` in the background; failures are logged, never fatal.
    pub fn record(
        &self,
        object: &Value,
        kind: &str,
        reason: &str,
        message: &str,
        field_path: Option<&str>,
    ) {
        tracing::debug!(reason, message, "event");
        let key = (
            object["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            field_path.unwrap_or_default().to_string(),
            reason.to_string(),
            message.to_string(),
        );
        let event = apiclient::event(object, &self.node, kind, reason, message, field_path);
        let this = self.clone();
        tokio::spawn(async move {
            let previous = this.seen.lock().ok().and_then(|s| s.get(&key).cloned());
            if let Some((namespace, name, count)) = previous {
                let path = format!("/api/v1/namespaces/{namespace}/events/{name}");
                let patch = json!({
                    "count": count + 1,
                    "lastTimestamp": crate::status::now_rfc3339(),
                });
                if this.api.merge_patch(&path, &patch).await.is_ok() {
                    if let Ok(mut s) = this.seen.lock() {
                        s.insert(key, (namespace, name, count + 1));
                    }
                    return;
                }
            }
            let namespace = event["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let path = format!("/api/v1/namespaces/{namespace}/events");
            match this.api.create(&path, &event).await {
                Ok(created) => {
                    let name = created["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if let Ok(mut s) = this.seen.lock() {
                        if s.len() > 4096 {
                            s.clear();
                        }
                        s.insert(key, (namespace, name, 1));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "recording an event failed"),
            }
        });
    }

    /// Forgets the events of a pod that is gone.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut s) = self.seen.lock() {
            s.retain(|k, _| k.0 != uid);
        }
    }
}
