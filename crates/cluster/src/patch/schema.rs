//! Strategic merge patch metadata: which lists merge, and by which key.
//!
//! Kubernetes reads this from `patchStrategy`/`patchMergeKey` struct tags on
//! its Go types. Objects here are untyped JSON, so the same facts are keyed by
//! object kind and the path of field names from the object root (array indices
//! left out). Only fields whose tags say `merge` (or `replace` for a map) are
//! listed; every other list is replaced wholesale, as Kubernetes does for
//! untagged lists such as `tolerations`, `envFrom`, `resizePolicy` or a
//! ServiceAccount's `imagePullSecrets`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListStrategy {
    /// The patch's list replaces the original list.
    Replace,
    /// Items are merged: maps by the merge key, primitives as an ordered set.
    Merge(Option<&'static str>),
}

impl ListStrategy {
    pub(super) fn merge_key(self) -> Option<&'static str> {
        match self {
            ListStrategy::Replace => None,
            ListStrategy::Merge(key) => key,
        }
    }
}

const fn merge(key: &'static str) -> Option<ListStrategy> {
    Some(ListStrategy::Merge(Some(key)))
}

/// Where the PodSpec sits in each kind that embeds one.
fn pod_spec_prefix(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&["spec"]),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some(&["spec", "template", "spec"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        "PodTemplate" => Some(&["template", "spec"]),
        _ => None,
    }
}

/// Locations of ObjectMeta besides the object's own `metadata`: the metadata of
/// embedded templates, which Kubernetes merges by the same rules.
fn nested_object_meta(kind: &str) -> &'static [&'static [&'static str]] {
    match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" | "ReplicationController" => {
            &[&["spec", "template", "metadata"]]
        }
        "StatefulSet" => &[
            &["spec", "template", "metadata"],
            &["spec", "volumeClaimTemplates", "metadata"],
        ],
        "CronJob" => &[
            &["spec", "jobTemplate", "metadata"],
            &["spec", "jobTemplate", "spec", "template", "metadata"],
        ],
        "PodTemplate" => &[&["template", "metadata"]],
        _ => &[],
    }
}

fn object_meta_list(field: &str) -> Option<ListStrategy> {
    match field {
        "ownerReferences" => merge("uid"),
        "finalizers" => Some(ListStrategy::Merge(None)),
        _ => None,
    }
}

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

fn pod_spec_list(rest: &[&str]) -> Option<ListStrategy> {
    match rest {
        [field] => match *field {
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "volumes"
            | "imagePullSecrets"
            | "resourceClaims"
            | "schedulingGates" => merge("name"),
            "hostAliases" => merge("ip"),
            "topologySpreadConstraints" => merge("topologyKey"),
            _ => None,
        },
        [container_list, field] if CONTAINER_LISTS.contains(container_list) => match *field {
            "ports" => merge("containerPort"),
            "env" => merge("name"),
            "volumeMounts" => merge("mountPath"),
            "volumeDevices" => merge("devicePath"),
            _ => None,
        },
        _ => None,
    }
}

/// Kinds whose `status.conditions` merge by `type`.
const CONDITION_KINDS: &[&str] = &[
    "Pod",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "ReplicationController",
    "Node",
    "Namespace",
    "PersistentVolumeClaim",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "ServiceCIDR",
    "StorageVersionMigration",
];

fn kind_specific_list(kind: &str, fields: &[&str]) -> Option<ListStrategy> {
    match (kind, fields) {
        (_, ["status", "conditions"]) if CONDITION_KINDS.contains(&kind) => merge("type"),
        ("ComponentStatus", ["conditions"]) => merge("type"),
        ("Pod", ["status", "podIPs" | "hostIPs"]) => merge("ip"),
        ("Pod", ["status", "resourceClaimStatuses"]) => merge("name"),
        ("Node", ["status", "addresses"]) => merge("type"),
        ("Node", ["spec", "podCIDRs"]) => Some(ListStrategy::Merge(None)),
        ("Service", ["spec", "ports"]) => merge("port"),
        ("ServiceAccount", ["secrets"]) => merge("name"),
        ("ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration", ["webhooks"]) => {
            merge("name")
        }
        (
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration",
            ["webhooks", "matchConditions"],
        ) => merge("name"),
        (
            "ValidatingAdmissionPolicy" | "MutatingAdmissionPolicy",
            ["spec", "matchConditions" | "variables"],
        ) => merge("name"),
        ("CSINode", ["spec", "drivers"]) => merge("name"),
        ("ResourceClaim", ["status", "reservedFor"]) => merge("uid"),
        _ => None,
    }
}

/// How the list at `fields` (field names from the object root) is patched.
pub(super) fn list_strategy(kind: &str, fields: &[&str]) -> ListStrategy {
    if let [owner @ .., field] = fields {
        let in_object_meta = owner == ["metadata"] || nested_object_meta(kind).contains(&owner);
        if in_object_meta {
            return object_meta_list(field).unwrap_or(ListStrategy::Replace);
        }
    }
    if let Some(prefix) = pod_spec_prefix(kind) {
        if let Some(rest) = fields.strip_prefix(prefix) {
            return pod_spec_list(rest).unwrap_or(ListStrategy::Replace);
        }
    }
    kind_specific_list(kind, fields).unwrap_or(ListStrategy::Replace)
}

/// Whether the map at `fields` carries `patchStrategy:"replace"`, i.e. a patch
/// replaces it instead of merging into it.
pub(super) fn map_is_replaced(kind: &str, fields: &[&str]) -> bool {
    matches!(
        (kind, fields),
        ("PodDisruptionBudget", ["spec", "selector"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ListStrategy::{Merge, Replace};

    #[test]
    fn pod_spec_everywhere() {
        let cases: &[(&str, &[&str])] = &[
            ("Pod", &["spec"]),
            ("Deployment", &["spec", "template", "spec"]),
            ("ReplicaSet", &["spec", "template", "spec"]),
            ("StatefulSet", &["spec", "template", "spec"]),
            ("DaemonSet", &["spec", "template", "spec"]),
            ("Job", &["spec", "template", "spec"]),
            (
                "CronJob",
                &["spec", "jobTemplate", "spec", "template", "spec"],
            ),
            ("PodTemplate", &["template", "spec"]),
        ];
        for (kind, prefix) in cases {
            let at = |rest: &[&str]| {
                let mut path = prefix.to_vec();
                path.extend_from_slice(rest);
                list_strategy(kind, &path)
            };
            assert_eq!(at(&["containers"]), Merge(Some("name")), "{kind}");
            assert_eq!(at(&["initContainers"]), Merge(Some("name")));
            assert_eq!(at(&["ephemeralContainers"]), Merge(Some("name")));
            assert_eq!(at(&["volumes"]), Merge(Some("name")));
            assert_eq!(at(&["imagePullSecrets"]), Merge(Some("name")));
            assert_eq!(at(&["resourceClaims"]), Merge(Some("name")));
            assert_eq!(at(&["hostAliases"]), Merge(Some("ip")));
            assert_eq!(
                at(&["topologySpreadConstraints"]),
                Merge(Some("topologyKey"))
            );
            assert_eq!(at(&["tolerations"]), Replace);
            assert_eq!(at(&["containers", "env"]), Merge(Some("name")));
            assert_eq!(at(&["containers", "ports"]), Merge(Some("containerPort")));
            assert_eq!(
                at(&["initContainers", "volumeMounts"]),
                Merge(Some("mountPath"))
            );
            assert_eq!(
                at(&["containers", "volumeDevices"]),
                Merge(Some("devicePath"))
            );
            assert_eq!(at(&["containers", "envFrom"]), Replace);
            assert_eq!(at(&["containers", "resizePolicy"]), Replace);
            assert_eq!(at(&["containers", "args"]), Replace);
        }
        // A PodSpec-shaped path in a kind that has no PodSpec there.
        assert_eq!(
            list_strategy("Deployment", &["spec", "containers"]),
            Replace
        );
        assert_eq!(list_strategy("ConfigMap", &["spec", "containers"]), Replace);
    }

    #[test]
    fn object_meta_in_every_kind() {
        for kind in ["Pod", "ConfigMap", "Widget", ""] {
            assert_eq!(
                list_strategy(kind, &["metadata", "finalizers"]),
                Merge(None)
            );
            assert_eq!(
                list_strategy(kind, &["metadata", "ownerReferences"]),
                Merge(Some("uid"))
            );
            assert_eq!(list_strategy(kind, &["metadata", "managedFields"]), Replace);
        }
        assert_eq!(
            list_strategy(
                "Deployment",
                &["spec", "template", "metadata", "finalizers"]
            ),
            Merge(None)
        );
        assert_eq!(
            list_strategy("Pod", &["spec", "template", "metadata", "finalizers"]),
            Replace
        );
    }

    #[test]
    fn status_and_other_kinds() {
        for kind in ["Pod", "Deployment", "ReplicaSet", "Node", "Namespace"] {
            assert_eq!(
                list_strategy(kind, &["status", "conditions"]),
                Merge(Some("type"))
            );
        }
        assert_eq!(
            list_strategy("ConfigMap", &["status", "conditions"]),
            Replace
        );
        assert_eq!(
            list_strategy("Pod", &["status", "podIPs"]),
            Merge(Some("ip"))
        );
        assert_eq!(
            list_strategy("Pod", &["status", "hostIPs"]),
            Merge(Some("ip"))
        );
        assert_eq!(
            list_strategy("Pod", &["status", "containerStatuses"]),
            Replace
        );
        assert_eq!(
            list_strategy("Node", &["status", "addresses"]),
            Merge(Some("type"))
        );
        assert_eq!(list_strategy("Node", &["spec", "taints"]), Replace);
        assert_eq!(
            list_strategy("Service", &["spec", "ports"]),
            Merge(Some("port"))
        );
        assert_eq!(
            list_strategy("ServiceAccount", &["secrets"]),
            Merge(Some("name"))
        );
        assert_eq!(
            list_strategy("ServiceAccount", &["imagePullSecrets"]),
            Replace
        );
        assert!(map_is_replaced(
            "PodDisruptionBudget",
            &["spec", "selector"]
        ));
        assert!(!map_is_replaced("Deployment", &["spec", "selector"]));
    }
}
