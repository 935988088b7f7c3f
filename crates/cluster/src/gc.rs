//! The garbage collector and the namespace finalizer: what happens after a delete.
//!
//! - An object deleted in the background takes its dependents (objects whose
//!   `ownerReferences` name its uid) with it, one generation per pass.
//! - An object deleted in the foreground (`foregroundDeletion` finalizer) waits until its
//!   dependents are gone, then goes.
//! - An object deleted with `orphan` releases its dependents (their owner reference is
//!   removed), then goes.
//! - A namespace being deleted empties itself, then goes.
//!
//! It follows the store's change feed and, on start, scans everything once, so deletes
//! that happened while the server was down are finished too.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::api::read::current;

use crate::api::write::{delete_object, DeleteOptions};
use crate::api::{decode_stored, Shared, Target};
use crate::objects::{meta_str, name_of};
use crate::resources::{ResourceType, NAMESPACES, TYPES};
use crate::status::ApiResult;
use crate::store::{EventKind, StoreError};

pub fn spawn(server: Shared) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = run(&server).await {
                tracing::warn!(error = %e, "garbage collector restarting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Which objects name which owners, kept from the change feed, so that a deletion finds
/// its dependents without listing and decoding its whole namespace.
#[derive(Default)]
struct OwnerIndex {
    /// Owner uid -> keys of the objects that name it.
    dependents: HashMap<String, BTreeSet<String>>,
    /// Key -> the owner uids it names.
    owners: HashMap<String, Vec<String>>,
}

impl OwnerIndex {
    fn set(&mut self, key: &str, owners: Vec<String>) {
        self.remove(key);
        if owners.is_empty() {
            return;
        }
        for uid in &owners {
            self.dependents
                .entry(uid.clone())
                .or_default()
                .insert(key.to_string());
        }
        self.owners.insert(key.to_string(), owners);
    }

    fn remove(&mut self, key: &str) {
        for uid in self.owners.remove(key).unwrap_or_default() {
            if let Some(keys) = self.dependents.get_mut(&uid) {
                keys.remove(key);
                if keys.is_empty() {
                    self.dependents.remove(&uid);
                }
            }
        }
    }

    fn keys_of(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }
}

async fn run(s: &Shared) -> Result<(), StoreError> {
    let from = s.store.current_revision().await?;
    let mut index = OwnerIndex::default();
    sweep(s, &mut index).await;
    let mut events = s.store.watch("/registry/", from).await?;
    while let Some(event) = events.next().await {
        let event = event?;
        let Some((rt, namespace, _)) = ResourceType::of_key(&event.key) else {
            continue;
        };
        let Ok(object) = decode_stored(&event.value, event.revision) else {
            continue;
        };
        match event.kind {
            EventKind::Delete => index.remove(&event.key),
            EventKind::Put => index.set(&event.key, owner_uids(&object)),
        }
        let outcome = match event.kind {
            EventKind::Delete => gone(s, &index, &rt, namespace.as_deref(), &object).await,
            EventKind::Put => changed(s, &index, &rt, namespace.as_deref(), &object).await,
        };
        if let Err(e) = outcome {
            tracing::warn!(key = %event.key, error = %e, "garbage collection step failed");
        }
    }
    Ok(())
}

/// Every object once: unfinished deletes, and dependents whose owners are gone.
async fn sweep(s: &Shared, index: &mut OwnerIndex) {
    let mut uids = std::collections::HashSet::new();
    let mut all = Vec::new();
    for rt in TYPES {
        let Ok(page) = s.store.list(&rt.key_prefix(None), None, 0, None).await else {
            continue;
        };
        for entry in page.entries {
            if let Ok(object) = decode_stored(&entry.value, entry.mod_revision) {
                if let Some(uid) = meta_str(&object, "uid") {
                    uids.insert(uid.to_string());
                }
                index.set(&entry.key, owner_uids(&object));
                all.push((*rt, object));
            }
        }
    }
    let index = &*index;
    for (rt, object) in &all {
        let namespace = meta_str(object, "namespace");
        let owners = owner_uids(object);
        let orphaned = !owners.is_empty() && owners.iter().all(|u| !uids.contains(u));
        let result = if orphaned {
            delete(s, rt, namespace, name_of(object)).await
        } else {
            changed(s, index, rt, namespace, object).await
        };
        if let Err(e) = result {
            tracing::warn!(name = name_of(object), error = %e, "garbage collection sweep step failed");
        }
    }
}

fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn has_finalizer(object: &Value, name: &str) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == name))
}

/// Objects that name `uid` as an owner: in `namespace`, or anywhere for a cluster-scoped
/// owner. Read current from the store; the index only says where to look.
async fn dependents(
    s: &Shared,
    index: &OwnerIndex,
    namespace: Option<&str>,
    uid: &str,
) -> Vec<(ResourceType, Value)> {
    let mut out = Vec::new();
    for key in index.keys_of(uid) {
        let Some((rt, ns, _)) = ResourceType::of_key(&key) else {
            continue;
        };
        if namespace.is_some() && ns.as_deref() != namespace {
            continue;
        }
        let Ok(Some(entry)) = s.store.get(&key).await else {
            continue;
        };
        if let Ok(object) = decode_stored(&entry.value, entry.mod_revision) {
            if owner_uids(&object).iter().any(|u| u == uid) {
                out.push((rt, object));
            }
        }
    }
    out
}

async fn delete(
    s: &Shared,
    rt: &ResourceType,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<()> {
    let t = Target::object(*rt, namespace, name);
    match delete_object(s, &t, &DeleteOptions::background()).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "NotFound" => Ok(()),
        Err(e) => Err(e),
    }
}

/// Rewrites the object at `t` with `edit`, retrying on conflicts; deletes it if the edit
/// left it marked for deletion with no finalizers.
async fn edit(s: &Shared, t: &Target, edit: impl Fn(&mut Value)) -> ApiResult<()> {
    let key = t.key().unwrap_or_default();
    for _ in 0..8 {
        let (mut object, revision) = match current(s, t).await {
            Ok(found) => found,
            Err(e) if e.reason == "NotFound" => return Ok(()),
            Err(e) => return Err(e),
        };
        let before = object.clone();
        edit(&mut object);
        if object == before {
            return Ok(());
        }
        let done = object.pointer("/metadata/deletionTimestamp").is_some()
            && object
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            && (t.rt != NAMESPACES
                || object
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty));
        if let Some(md) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            md.remove("resourceVersion");
        }
        let result = if done {
            s.store.delete(&key, Some(revision)).await.map(|_| ())
        } else {
            let bytes = serde_json::to_vec(&object).unwrap_or_default();
            s.store.update(&key, bytes, revision).await.map(|_| ())
        };
        match result {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(crate::api::read::store_error(t, e)),
        }
    }
    Ok(())
}

fn remove_finalizer(object: &mut Value, name: &str) {
    if let Some(list) = object
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        list.retain(|f| f != name);
    }
}

/// An object was deleted: its dependents follow, and a foreground owner may now be free.
async fn gone(
    s: &Shared,
    index: &OwnerIndex,
    rt: &ResourceType,
    namespace: Option<&str>,
    object: &Value,
) -> ApiResult<()> {
    if let Some(uid) = meta_str(object, "uid") {
        let scope = if rt.namespaced { namespace } else { None };
        for (drt, dependent) in dependents(s, index, scope, uid).await {
            delete(
                s,
                &drt,
                meta_str(&dependent, "namespace"),
                name_of(&dependent),
            )
            .await?;
        }
    }
    // A namespace being emptied may now be empty.
    if let Some(ns) = namespace.filter(|_| rt.namespaced) {
        let t = Target::object(NAMESPACES, None, ns);
        if let Ok((owner, _)) = current(s, &t).await {
            changed(s, index, &NAMESPACES, None, &owner).await?;
        }
    }
    // Owners waiting in the foreground for this object.
    if let Some(refs) = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
    {
        for r in refs {
            let (Some(kind), Some(api_version), Some(name)) = (
                r.get("kind").and_then(Value::as_str),
                r.get("apiVersion").and_then(Value::as_str),
                r.get("name").and_then(Value::as_str),
            ) else {
                continue;
            };
            let Some(owner_rt) = ResourceType::by_kind(api_version, kind) else {
                continue;
            };
            let t = Target::object(owner_rt, namespace, name);
            if let Ok((owner, _)) = current(s, &t).await {
                changed(s, index, &owner_rt, t.namespace.as_deref(), &owner).await?;
            }
        }
    }
    Ok(())
}

/// An object changed: finish its deletion if it is marked for one.
async fn changed(
    s: &Shared,
    index: &OwnerIndex,
    rt: &ResourceType,
    namespace: Option<&str>,
    object: &Value,
) -> ApiResult<()> {
    if object.pointer("/metadata/deletionTimestamp").is_none() {
        return Ok(());
    }
    let t = Target::object(*rt, namespace, name_of(object));
    let uid = meta_str(object, "uid").unwrap_or("").to_string();
    let scope = if rt.namespaced { namespace } else { None };
    if has_finalizer(object, "orphan") {
        for (drt, dependent) in dependents(s, index, scope, &uid).await {
            let dt = Target::object(drt, meta_str(&dependent, "namespace"), name_of(&dependent));
            edit(s, &dt, |d| {
                if let Some(refs) = d
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(&uid));
                }
            })
            .await?;
        }
        edit(s, &t, |o| remove_finalizer(o, "orphan")).await?;
    }
    if has_finalizer(object, "foregroundDeletion") {
        let remaining = dependents(s, index, scope, &uid).await;
        if remaining.is_empty() {
            edit(s, &t, |o| remove_finalizer(o, "foregroundDeletion")).await?;
        } else {
            for (drt, dependent) in remaining {
                if dependent.pointer("/metadata/deletionTimestamp").is_none() {
                    delete(
                        s,
                        &drt,
                        meta_str(&dependent, "namespace"),
                        name_of(&dependent),
                    )
                    .await?;
                }
            }
        }
    }
    if *rt == NAMESPACES {
        let name = name_of(object).to_string();
        let mut left = 0;
        for nrt in TYPES.iter().filter(|t| t.namespaced) {
            let Ok(page) = s
                .store
                .list(&nrt.key_prefix(Some(&name)), None, 0, None)
                .await
            else {
                left += 1;
                continue;
            };
            for entry in page.entries {
                left += 1;
                if let Some((_, _, item)) = ResourceType::of_key(&entry.key) {
                    delete(s, nrt, Some(&name), &item).await?;
                }
            }
        }
        if left == 0 {
            edit(s, &t, |o| {
                if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("finalizers".into(), json!([]));
                }
            })
            .await?;
        }
    }
    Ok(())
}
