//! Legacy discovery (`/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION`) and `/version`:
//! kubectl reads these to map kinds and short names to URLs. It asks for aggregated
//! discovery first but takes plain JSON (`application/json`) as the legacy form.

use serde_json::{json, Value};

use crate::resources::{ResourceType, GROUPS, TYPES};

/// The Kubernetes version the API follows.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0+kiln-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

/// Architecture names as Go (and so Kubernetes) spells them.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({
        "name": name,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

pub fn api_group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": GROUPS.iter().map(|(n, v)| group(n, v)).collect::<Vec<_>>(),
    })
}

/// `/apis/GROUP`, if the group is served.
pub fn api_group(name: &str) -> Option<Value> {
    GROUPS.iter().find(|(n, _)| *n == name).map(|(n, v)| {
        let mut g = group(n, v);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

fn subresource_entry(rt: &ResourceType, sub: &str) -> Value {
    let mut entry = json!({
        "name": format!("{}/{sub}", rt.plural),
        "singularName": "",
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": ["get", "patch", "update"],
    });
    match sub {
        "scale" => {
            entry["group"] = json!("autoscaling");
            entry["version"] = json!("v1");
            entry["kind"] = json!("Scale");
        }
        "log" => entry["verbs"] = json!(["get"]),
        "exec" => {
            entry["kind"] = json!("PodExecOptions");
            entry["verbs"] = json!(["create", "get"]);
        }
        _ => {}
    }
    entry
}

/// `/api/v1` or `/apis/GROUP/VERSION`, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let types: Vec<&ResourceType> = TYPES
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for rt in &types {
        let mut entry = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": rt.verbs(),
        });
        if !rt.short_names.is_empty() {
            entry["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            entry["categories"] = json!(rt.categories);
        }
        resources.push(entry);
        for sub in rt.subresources {
            resources.push(subresource_entry(rt, sub));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": types[0].api_version(),
        "resources": resources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_carry_what_kubectl_maps_names_with() {
        let core = api_resource_list("", "v1").expect("core");
        assert_eq!(core["groupVersion"], "v1");
        let pods = core["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["name"] == "pods")
            .expect("pods");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["namespaced"], true);
        assert!(pods["verbs"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("watch"))));
        let apps = api_resource_list("apps", "v1").expect("apps");
        assert_eq!(apps["groupVersion"], "apps/v1");
        let scale = apps["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .expect("scale");
        assert_eq!(
            (scale["group"].as_str(), scale["kind"].as_str()),
            (Some("autoscaling"), Some("Scale"))
        );
        assert!(api_resource_list("batch", "v1").is_none());
        assert!(api_group("apps").is_some() && api_group("nope").is_none());
    }
}
