//! The kinds the API serves, with what discovery tells clients about each.

/// One resource type (a plural name under a group-version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The URL path segment: `pods`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served (`status`, `scale`, `log`, `exec`).
    pub subresources: &'static [&'static str],
    /// Spec changes bump `metadata.generation`.
    pub has_generation: bool,
}

const ALL: &[&str] = &["all"];

pub const NAMESPACES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    namespaced: false,
    short_names: &["ns"],
    categories: &[],
    subresources: &["status"],
    has_generation: false,
};

pub const PODS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    namespaced: true,
    short_names: &["po"],
    categories: ALL,
    subresources: &["status", "log", "exec"],
    has_generation: false,
};

pub const EVENTS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    subresources: &[],
    has_generation: false,
};

pub const SECRETS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    has_generation: false,
};

pub const CONFIG_MAPS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    namespaced: true,
    short_names: &["cm"],
    categories: &[],
    subresources: &[],
    has_generation: false,
};

pub const SERVICE_ACCOUNTS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    namespaced: true,
    short_names: &["sa"],
    categories: &[],
    subresources: &[],
    has_generation: false,
};

pub const NODES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    namespaced: false,
    short_names: &["no"],
    categories: &[],
    subresources: &["status"],
    has_generation: false,
};

pub const DEPLOYMENTS: ResourceType = ResourceType {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    namespaced: true,
    short_names: &["deploy"],
    categories: ALL,
    subresources: &["status", "scale"],
    has_generation: true,
};

pub const REPLICA_SETS: ResourceType = ResourceType {
    group: "apps",
    version: "v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    namespaced: true,
    short_names: &["rs"],
    categories: ALL,
    subresources: &["status", "scale"],
    has_generation: true,
};

pub const LEASES: ResourceType = ResourceType {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    has_generation: false,
};

/// Every served type, core group first.
pub const TYPES: &[ResourceType] = &[
    NAMESPACES,
    PODS,
    EVENTS,
    SECRETS,
    CONFIG_MAPS,
    SERVICE_ACCOUNTS,
    NODES,
    DEPLOYMENTS,
    REPLICA_SETS,
    LEASES,
];

/// The groups other than core, each with its one version.
pub const GROUPS: &[(&str, &str)] = &[("apps", "v1"), ("coordination.k8s.io", "v1")];

impl ResourceType {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`: how Kubernetes names the type in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn find(group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        TYPES
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .copied()
    }

    pub fn by_kind(api_version: &str, kind: &str) -> Option<ResourceType> {
        TYPES
            .iter()
            .find(|t| t.kind == kind && t.api_version() == api_version)
            .copied()
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.contains(&name)
    }

    /// The verbs discovery lists for the type itself.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// The storage key prefix of every object of this type (in `namespace`, when given).
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{group}/{}/{ns}/", self.plural),
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    /// The type, namespace and name a storage key belongs to.
    pub fn of_key(key: &str) -> Option<(ResourceType, Option<String>, String)> {
        let rest = key.strip_prefix("/registry/")?;
        let mut parts = rest.split('/');
        let group = parts.next()?;
        let group = if group == "core" { "" } else { group };
        let plural = parts.next()?;
        let rt = TYPES
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .copied()?;
        let (namespace, name) = match (parts.next(), parts.next(), parts.next()) {
            (Some(ns), Some(name), None) if rt.namespaced => (Some(ns.to_string()), name),
            (Some(name), None, None) if !rt.namespaced => (None, name),
            _ => return None,
        };
        Some((rt, namespace, name.to_string()))
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }
}
