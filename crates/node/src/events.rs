//! Events about pods, as the kubelet's recorder writes them: a repeat of the same reason
//! and message for the same object raises the count of the existing Event instead of
//! writing a new one, so `kubectl describe` shows "(x4 over 2m)". One task writes them all,
//! in the order they happened, so two repeats in quick succession never race into two
//! Events.

use std::collections::HashMap;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::apiclient::{self, ApiClient};

/// (object uid, field path, reason, message): what makes two events the same.
type EventKey = (String, String, String, String);

enum Command {
    Record { key: EventKey, event: Value },
    Forget { uid: String },
}

#[derive(Clone)]
pub struct Recorder {
    node: String,
    queue: mpsc::UnboundedSender<Command>,
}

impl Recorder {
    /// Starts the writer on the current tokio runtime.
    pub fn new(api: ApiClient, node: &str) -> Recorder {
        let (queue, commands) = mpsc::unbounded_channel();
        tokio::spawn(write_events(api, commands));
        Recorder {
            node: node.to_string(),
            queue,
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
        let _ = self.queue.send(Command::Record { key, event });
    }

    /// Forgets the events of a pod that is gone.
    pub fn forget(&self, uid: &str) {
        let _ = self.queue.send(Command::Forget {
            uid: uid.to_string(),
        });
    }
}

/// The writer: creates an Event the first time, raises its count after that.
async fn write_events(api: ApiClient, mut commands: mpsc::UnboundedReceiver<Command>) {
    // key -> (namespace, name, count) of the Event written for it.
    let mut seen: HashMap<EventKey, (String, String, u64)> = HashMap::new();
    while let Some(command) = commands.recv().await {
        let (key, event) = match command {
            Command::Forget { uid } => {
                seen.retain(|k, _| k.0 != uid);
                continue;
            }
            Command::Record { key, event } => (key, event),
        };
        if let Some((namespace, name, count)) = seen.get(&key).cloned() {
            let path = format!("/api/v1/namespaces/{namespace}/events/{name}");
            let patch = json!({"count": count + 1, "lastTimestamp": event["lastTimestamp"]});
            if api.merge_patch(&path, &patch).await.is_ok() {
                seen.insert(key, (namespace, name, count + 1));
                continue;
            }
        }
        let namespace = event["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let path = format!("/api/v1/namespaces/{namespace}/events");
        match api.create(&path, &event).await {
            Ok(created) => {
                let name = created["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if seen.len() > 4096 {
                    seen.clear();
                }
                seen.insert(key, (namespace, name, 1));
            }
            Err(e) => tracing::warn!(error = %e, "recording an event failed"),
        }
    }
}
