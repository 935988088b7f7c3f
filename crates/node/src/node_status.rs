//! The Node object: registration with capacity, addresses, system info and the images the
//! node holds; a Lease renewed every 10 s as the heartbeat; and the status written again
//! when it changes (or every `nodeStatusReportFrequency`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_image::{ImageStore, Platform};
use serde_json::{Value, json};

use crate::Shared;
use crate::apiclient::ApiError;
use crate::config::KubeletConfig;

/// The version the node reports, in Kubernetes' form.
pub const KUBELET_VERSION: &str = concat!("v1.32.0+kiln-", env!("CARGO_PKG_VERSION"));

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn memory_kib() -> u64 {
    read_trimmed("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn os_image() -> String {
    read_trimmed("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// The images the node holds, largest first, as `status.images` lists them (at most 50).
fn images(root: &std::path::Path) -> Vec<Value> {
    let Ok(store) = ImageStore::open(root) else {
        return Vec::new();
    };
    let Ok(entries) = store.refs().list() else {
        return Vec::new();
    };
    let host = Platform::host();
    let mut by_target: std::collections::BTreeMap<String, (Vec<String>, u64)> =
        std::collections::BTreeMap::new();
    for e in entries {
        let Ok(image) = store.image(&e.target, &host) else {
            continue;
        };
        let slot = by_target
            .entry(e.target.digest.to_string())
            .or_insert_with(|| (Vec::new(), image.content_size()));
        let repo = e.name.repository();
        let digest_name = format!("{repo}@{}", e.target.digest);
        if !slot.0.contains(&digest_name) {
            slot.0.push(digest_name);
        }
        if e.name.digest().is_none() {
            slot.0.push(e.name.to_string());
        }
    }
    let mut list: Vec<(Vec<String>, u64)> = by_target.into_values().collect();
    list.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    list.truncate(50);
    list.into_iter()
        .map(|(names, size)| json!({"names": names, "sizeBytes": size}))
        .collect()
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    since: &str,
    now: &str,
) -> Value {
    json!({
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": since,
    })
}

/// The node's status, keeping transition times from `previous` where nothing changed.
fn status(node: &Shared, port: u16, previous: &Value) -> Value {
    let now = crate::status::now_rfc3339();
    let since = |kind: &str, status: &str| -> String {
        previous["conditions"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == kind && c["status"] == status)
                    .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
            })
            .unwrap_or_else(|| now.clone())
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", memory_kib()),
        "pods": "110",
        "ephemeral-storage": format!(
            "{}Ki",
            crate::image_gc_manager::fs_stats(&node.image_root).map_or(0, |f| f.capacity_bytes) / 1024
        ),
        "hugepages-2Mi": "0",
    });
    let hostname = read_trimmed("/proc/sys/kernel/hostname");
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available", &since("MemoryPressure", "False"), &now),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", &since("DiskPressure", "False"), &now),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", &since("PIDPressure", "False"), &now),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", &since("Ready", "True"), &now),
        ],
        "addresses": [
            {"type": "InternalIP", "address": node.host_ip},
            {"type": "Hostname", "address": if hostname.is_empty() { node.name.clone() } else { hostname }},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": read_trimmed("/etc/machine-id"),
            "systemUUID": read_trimmed("/sys/class/dmi/id/product_uuid"),
            "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": concat!("kiln://", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": Platform::host().architecture,
        },
        "images": images(&node.image_root),
    })
}

/// Status without heartbeat times: what decides whether a write is needed.
fn substance(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(cs) = s["conditions"].as_array_mut() {
        for c in cs {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastHeartbeatTime");
            }
        }
    }
    s
}

/// Creates the Node (or takes over an existing one of the same name) and writes its status.
pub async fn register(node: &Shared, port: u16) -> Result<(), ApiError> {
    let arch = Platform::host().architecture;
    let object = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/arch": arch,
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": node.name,
                "beta.kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": node.network.subnet, "podCIDRs": [node.network.subnet]},
    });
    let path = format!("/api/v1/nodes/{}", node.name);
    let existing = match node.api.create("/api/v1/nodes", &object).await {
        Ok(created) => created,
        Err(e) if e.is_conflict() => node.api.get(&path).await?,
        Err(e) => return Err(e),
    };
    let status = status(node, port, &existing["status"]);
    node.api
        .merge_patch(&format!("{path}/status"), &json!({"status": status}))
        .await?;
    Ok(())
}

/// Renews the node's Lease every 10 s and writes its status when it changed.
pub fn spawn_heartbeats(node: Arc<Shared>, port: u16, config: KubeletConfig) {
    tokio::spawn(async move {
        let lease_path = format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}",
            node.name
        );
        let node_path = format!("/api/v1/nodes/{}", node.name);
        let mut last_written: Option<(Value, Instant)> = None;
        let mut last_status_check = Instant::now() - Duration::from_secs(3600);
        let lease_every =
            Duration::from_secs((config.node_lease_duration_seconds.max(4) / 4) as u64)
                .min(Duration::from_secs(10));
        loop {
            renew_lease(&node, &lease_path, config.node_lease_duration_seconds).await;
            if last_status_check.elapsed() >= config.node_status_update_frequency {
                last_status_check = Instant::now();
                let previous = node.api.get(&node_path).await.ok();
                if let Some(previous) = previous {
                    let root = node.image_root.clone();
                    let status = {
                        let node = node.clone();
                        let prev = previous["status"].clone();
                        tokio::task::spawn_blocking(move || {
                            let _ = root;
                            status(&node, port, &prev)
                        })
                        .await
                        .unwrap_or(Value::Null)
                    };
                    let due = match &last_written {
                        None => true,
                        Some((s, at)) => {
                            substance(s) != substance(&status)
                                || at.elapsed() >= config.node_status_report_frequency
                        }
                    };
                    if due && !status.is_null() {
                        let written = node
                            .api
                            .merge_patch(&format!("{node_path}/status"), &json!({"status": status}))
                            .await;
                        match written {
                            Ok(_) => last_written = Some((status, Instant::now())),
                            Err(e) => tracing::warn!(error = %e, "node status update failed"),
                        }
                    }
                }
                node.images.gc_backoff();
            }
            tokio::time::sleep(lease_every).await;
        }
    });
}

async fn renew_lease(node: &Shared, path: &str, duration_seconds: u32) {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let renew = now.format(&format).unwrap_or_default();
    let patch = json!({"spec": {"holderIdentity": node.name, "leaseDurationSeconds": duration_seconds, "renewTime": renew}});
    match node.api.merge_patch(path, &patch).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": node.name, "namespace": "kube-node-lease"},
                "spec": patch["spec"],
            });
            if let Err(e) = node
                .api
                .create(
                    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                    &lease,
                )
                .await
            {
                tracing::warn!(error = %e, "creating the node lease failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "renewing the node lease failed"),
    }
}
