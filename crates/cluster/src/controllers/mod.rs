//! Controllers: loops that make the cluster's state match what its objects ask for, each
//! driven by the store's change feed through a work queue of object keys (level-triggered,
//! as Kubernetes' controllers: a sync reads the current state, never the event).

pub mod deployment;
pub mod replicaset;
pub mod rollout;
pub mod scheduler;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::Notify;

use crate::api::{decode_stored, Shared};
use crate::resources::ResourceType;
use crate::store::StoreError;

/// `(namespace, name)` of the object a controller syncs.
pub type Key = (String, String);

/// Keys waiting for a sync; a key queued twice is synced once.
#[derive(Default)]
pub struct Queue {
    pending: Mutex<BTreeSet<Key>>,
    ready: Notify,
}

impl Queue {
    pub fn add(&self, key: Key) {
        let added = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        if added {
            self.ready.notify_one();
        }
    }

    /// Queues `key` again after `delay`.
    pub fn add_after(self: &Arc<Self>, key: Key, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    async fn next(&self) -> Key {
        loop {
            let popped = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_first();
            if let Some(key) = popped {
                return key;
            }
            self.ready.notified().await;
        }
    }
}

/// What a controller is: which changes concern which of its keys, and how to sync a key.
#[async_trait::async_trait]
pub trait Controller: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The keys a change to `object` (of type `rt`) should sync.
    async fn keys_for(&self, s: &Shared, rt: &ResourceType, object: &Value) -> Vec<Key>;
    /// Every key to sync at start.
    async fn all_keys(&self, s: &Shared) -> Vec<Key>;
    /// Brings `key` in line; may queue it again for later.
    async fn sync(&self, s: &Shared, key: &Key, queue: &Arc<Queue>)
        -> crate::status::ApiResult<()>;
}

/// Runs `controller`: a feed task filling its queue and a worker draining it.
pub fn spawn(server: Shared, controller: Arc<dyn Controller>) {
    let queue = Arc::new(Queue::default());
    {
        let (server, controller, queue) = (server.clone(), controller.clone(), queue.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = feed(&server, controller.as_ref(), &queue).await {
                    tracing::warn!(controller = controller.name(), error = %e, "change feed restarting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    tokio::spawn(async move {
        // Failed syncs are retried with a per-key back-off, as Kubernetes' rate-limited queue.
        let mut failures: HashMap<Key, u32> = HashMap::new();
        loop {
            let key = queue.next().await;
            match controller.sync(&server, &key, &queue).await {
                Ok(()) => {
                    failures.remove(&key);
                }
                Err(e) => {
                    let n = failures.entry(key.clone()).or_insert(0);
                    *n += 1;
                    let delay = Duration::from_millis(5u64 << (*n).min(12));
                    tracing::warn!(controller = controller.name(), namespace = %key.0, name = %key.1, error = %e, "sync failed; retrying");
                    queue.add_after(key, delay);
                }
            }
        }
    });
}

async fn feed(s: &Shared, controller: &dyn Controller, queue: &Queue) -> Result<(), StoreError> {
    let from = s.store.current_revision().await?;
    for key in controller.all_keys(s).await {
        queue.add(key);
    }
    let mut events = s.store.watch("/registry/", from).await?;
    while let Some(event) = events.next().await {
        let event = event?;
        let Some((rt, _, _)) = ResourceType::of_key(&event.key) else {
            continue;
        };
        let Ok(object) = decode_stored(&event.value, event.revision) else {
            continue;
        };
        for key in controller.keys_for(s, &rt, &object).await {
            queue.add(key);
        }
        // A change that moved an object away from an owner concerns the old owner too.
        if let Some(prev) = event.prev_value.as_deref() {
            if let Ok(old) = decode_stored(prev, event.revision) {
                for key in controller.keys_for(s, &rt, &old).await {
                    queue.add(key);
                }
            }
        }
    }
    Ok(())
}

/// The queue key of a stored object.
pub fn key_of(object: &Value) -> Key {
    (
        crate::objects::meta_str(object, "namespace")
            .unwrap_or("default")
            .to_string(),
        crate::objects::name_of(object).to_string(),
    )
}

/// The owner a controller reference names, if it is of `kind`: its name.
pub fn controller_of<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| {
            r.get("controller").and_then(Value::as_bool) == Some(true)
                && r.get("kind").and_then(Value::as_str) == Some(kind)
        })?
        .get("name")?
        .as_str()
}

/// Whether `object`'s controller reference is the object with `uid`.
pub fn controlled_by(object: &Value, uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("controller").and_then(Value::as_bool) == Some(true)
                    && r.get("uid").and_then(Value::as_str) == Some(uid)
            })
        })
}

/// Whether `object` has a controller at all.
pub fn has_controller(object: &Value) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        })
}

/// Every object of `rt` (in `namespace`, when given), as served.
pub async fn list(
    s: &Shared,
    rt: &ResourceType,
    namespace: Option<&str>,
) -> crate::status::ApiResult<Vec<Value>> {
    let page = s
        .store
        .list(&rt.key_prefix(namespace), None, 0, None)
        .await
        .map_err(|e| crate::status::ApiError::internal(e.to_string()))?;
    page.entries
        .iter()
        .map(|e| decode_stored(&e.value, e.mod_revision))
        .collect()
}

/// The type an object of `kind` lives under.
fn type_of(kind: &str) -> Option<ResourceType> {
    crate::resources::TYPES
        .iter()
        .find(|t| t.kind == kind)
        .copied()
}

/// Makes `owner` the controller of `object`, unless something else controls it by now.
/// Returns the object as written.
pub async fn adopt(
    s: &Shared,
    namespace: &str,
    object: &Value,
    owner: &Value,
) -> crate::status::ApiResult<Option<Value>> {
    use crate::objects::{meta_str, name_of};
    let (Some(rt), Some(owner_rt)) = (
        object.get("kind").and_then(Value::as_str).and_then(type_of),
        owner.get("kind").and_then(Value::as_str).and_then(type_of),
    ) else {
        return Ok(None);
    };
    let reference = serde_json::json!({
        "apiVersion": owner_rt.api_version(), "kind": owner_rt.kind, "name": name_of(owner),
        "uid": meta_str(owner, "uid").unwrap_or(""), "controller": true,
        "blockOwnerDeletion": true,
    });
    let t = crate::api::Target::object(rt, Some(namespace), crate::objects::name_of(object));
    crate::api::write::modify(s, &t, crate::objects::UpdateScope::Main, |current| {
        if has_controller(current) {
            return Ok(None);
        }
        let mut next = current.clone();
        let refs = next["metadata"]
            .as_object_mut()
            .map(|m| m.entry("ownerReferences").or_insert(serde_json::json!([])));
        if let Some(Value::Array(list)) = refs {
            list.push(reference.clone());
        }
        Ok(Some(next))
    })
    .await
}

/// Removes the owner reference to `uid` from `object` (dropping an emptied list).
pub async fn release(
    s: &Shared,
    namespace: &str,
    object: &Value,
    uid: &str,
) -> crate::status::ApiResult<()> {
    let Some(rt) = object.get("kind").and_then(Value::as_str).and_then(type_of) else {
        return Ok(());
    };
    let t = crate::api::Target::object(rt, Some(namespace), crate::objects::name_of(object));
    crate::api::write::modify(s, &t, crate::objects::UpdateScope::Main, |current| {
        let mut next = current.clone();
        let Some(md) = next.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Ok(None);
        };
        let empty = match md.get_mut("ownerReferences").and_then(Value::as_array_mut) {
            Some(refs) => {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                refs.is_empty()
            }
            None => return Ok(None),
        };
        if empty {
            md.remove("ownerReferences");
        }
        Ok(Some(next))
    })
    .await
    .map(|_| ())
}
