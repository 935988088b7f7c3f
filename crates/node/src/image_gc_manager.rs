//! Runs the image garbage collector: keeps the kubelet's per-image records (first
//! detected, last used), reads the image filesystem's usage and removes what
//! [`crate::image_gc`] plans, never an image a container on the node still uses.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_image::{ImageStore, Platform};

use crate::Shared;
use crate::image_gc::{self, FsStats, ImageGcPolicy, ImageRecord};

/// How often usage is checked (the kubelet's `ImageGCPeriod` is 5 min; a statvfs is cheap,
/// so kiln looks more often and only lists images when there is something to decide).
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// What is known of one image (by the digest its names point at).
struct Seen {
    first_detected: Instant,
    last_used: Option<Instant>,
}

/// Capacity and free space of the filesystem holding `path`.
pub(crate) fn fs_stats(path: &std::path::Path) -> Option<FsStats> {
    let c = std::ffi::CString::new(path.display().to_string()).ok()?;
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return None;
        }
        Some(FsStats {
            capacity_bytes: s.f_blocks as u64 * s.f_frsize as u64,
            available_bytes: s.f_bavail as u64 * s.f_frsize as u64,
        })
    }
}

/// The digests of the images containers on this node use (running or exited: the kubelet
/// keeps an exited container's image too). Containers `kiln run` made name their image
/// rather than carrying the node's label; those names are resolved in the store.
fn in_use(node: &Shared, store: &ImageStore) -> HashSet<String> {
    node.runtime
        .records()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| match r.labels.get(crate::worker::LABEL_IMAGE_ID) {
            Some(id) => id.rsplit('@').next().map(str::to_string),
            None => store
                .find(&r.image)
                .ok()
                .map(|f| f.target.digest.to_string()),
        })
        .collect()
}

/// One pass: detect images, plan, delete. Returns the digests removed.
fn collect(
    node: &Shared,
    policy: &ImageGcPolicy,
    seen: &mut HashMap<String, Seen>,
    started: Instant,
) -> Result<Vec<String>, String> {
    let store = ImageStore::open(&node.image_root).map_err(|e| e.to_string())?;
    let entries = store.refs().list().map_err(|e| e.to_string())?;
    let used = in_use(node, &store);
    let now = Instant::now();
    let host = Platform::host();
    let mut records: HashMap<String, ImageRecord> = HashMap::new();
    for e in &entries {
        let digest = e.target.digest.to_string();
        if records.contains_key(&digest) {
            continue;
        }
        let size = store
            .image(&e.target, &host)
            .map(|i| i.content_size())
            .unwrap_or(0);
        let entry = seen.entry(digest.clone()).or_insert(Seen {
            first_detected: now,
            last_used: None,
        });
        let using = used.contains(&digest);
        if using {
            entry.last_used = Some(now);
        }
        records.insert(
            digest.clone(),
            ImageRecord {
                id: digest,
                size_bytes: size,
                first_detected: entry.first_detected,
                last_used: entry.last_used,
                in_use: using,
                pinned: false,
            },
        );
    }
    seen.retain(|d, _| records.contains_key(d));
    let Some(fs) = fs_stats(&node.image_root) else {
        return Err(format!("statvfs {}", node.image_root.display()));
    };
    let records: Vec<ImageRecord> = records.into_values().collect();
    let plan = image_gc::plan_image_gc(policy, fs, &records, now, started);
    let mut removed = Vec::new();
    for deletion in &plan.deletions {
        for e in entries
            .iter()
            .filter(|e| e.target.digest.to_string() == deletion.id)
        {
            store.refs().remove(&e.name).map_err(|e| e.to_string())?;
        }
        tracing::info!(image = %deletion.id, bytes = deletion.size_bytes, reason = ?deletion.reason, "removing image");
        removed.push(deletion.id.clone());
    }
    if !removed.is_empty() {
        store.try_prune().map_err(|e| e.to_string())?;
    }
    if let Some(error) = plan.error {
        return Err(error.to_string());
    }
    Ok(removed)
}

/// Runs the collector for as long as the node runs.
pub fn spawn(node: Arc<Shared>, policy: ImageGcPolicy) {
    if !policy.is_enabled() {
        return;
    }
    let node_ref = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node.name, "uid": node.name},
    });
    tokio::spawn(async move {
        let started = Instant::now();
        let mut seen: HashMap<String, Seen> = HashMap::new();
        loop {
            let n = node.clone();
            let mut s = std::mem::take(&mut seen);
            let (result, s) = tokio::task::spawn_blocking(move || {
                let r = collect(&n, &policy, &mut s, started);
                (r, s)
            })
            .await
            .unwrap_or_else(|e| (Err(e.to_string()), HashMap::new()));
            seen = s;
            if let Err(e) = result {
                tracing::warn!(error = %e, "image garbage collection failed");
                node.recorder.record(
                    &node_ref,
                    "Warning",
                    "ImageGCFailed",
                    &format!("Failed to garbage collect required amount of images. {e}"),
                    None,
                );
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    });
}
