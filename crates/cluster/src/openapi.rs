//! OpenAPI v3 documents, one per group-version, listing each resource's operations.
//!
//! kubectl validates `apply`, `create -f`, `edit` and `replace` against the server: it looks
//! here for an operation of the object's kind that takes the `fieldValidation` query
//! parameter, and finding one it sends `fieldValidation=Strict` and lets the server reject
//! unknown fields. Without these documents those commands fail unless `--validate=false`.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::resources::{ResourceType, TYPES};

/// The group-versions with a document: `api/v1`, `apis/apps/v1`, ...
fn paths_of_group_versions() -> Vec<(String, &'static str, &'static str)> {
    let mut out: Vec<(String, &'static str, &'static str)> = Vec::new();
    for t in TYPES {
        let path = if t.group.is_empty() {
            format!("api/{}", t.version)
        } else {
            format!("apis/{}/{}", t.group, t.version)
        };
        if !out.iter().any(|(p, _, _)| *p == path) {
            out.push((path, t.group, t.version));
        }
    }
    out
}

fn operation(rt: &ResourceType, id: &str, body: Option<&[&str]>) -> Value {
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "parameters": [],
        "responses": {"200": {"description": "OK"}},
    });
    if let Some(types) = body {
        op["parameters"] = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let content: Map<String, Value> = types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": {"type": "object"}})))
            .collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

fn kube_version() -> String {
    format!(
        "v{}.{}",
        crate::discovery::KUBE_MAJOR,
        crate::discovery::KUBE_MINOR
    )
}

/// The document for `group`/`version`.
fn document(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    for rt in TYPES
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        let (collection, _) = url_templates(rt);
        let kind = rt.kind;
        let json_body: &[&str] = &["application/json", "application/yaml"];
        let patch_body: &[&str] = &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ];
        paths.insert(
            collection.clone(),
            json!({
                "get": operation(rt, &format!("list{kind}"), None),
                "post": operation(rt, &format!("create{kind}"), Some(json_body)),
            }),
        );
        let item = json!({
            "get": operation(rt, &format!("read{kind}"), None),
            "put": operation(rt, &format!("replace{kind}"), Some(json_body)),
            "patch": operation(rt, &format!("patch{kind}"), Some(patch_body)),
            "delete": operation(rt, &format!("delete{kind}"), None),
        });
        paths.insert(format!("{collection}/{{name}}"), item.clone());
        for sub in rt
            .subresources
            .iter()
            .filter(|s| ["status", "scale"].contains(s))
        {
            paths.insert(format!("{collection}/{{name}}/{sub}"), item.clone());
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": kube_version()},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

/// `/openapi/v3` and the documents it points to, made once.
pub struct OpenApi {
    index: Value,
    documents: Vec<(String, String)>,
    /// The Swagger 2.0 document in gnostic protobuf (kubectl 1.27 reads only that).
    v2: Vec<u8>,
}

/// The collection and item URL templates of a type.
fn url_templates(rt: &ResourceType) -> (String, String) {
    let base = if rt.group.is_empty() {
        format!("/api/{}", rt.version)
    } else {
        format!("/apis/{}/{}", rt.group, rt.version)
    };
    let collection = if rt.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", rt.plural)
    } else {
        format!("{base}/{}", rt.plural)
    };
    let item = format!("{collection}/{{name}}");
    (collection, item)
}

impl OpenApi {
    pub fn new() -> OpenApi {
        let mut index = Map::new();
        let mut documents = Vec::new();
        for (path, group, version) in paths_of_group_versions() {
            let doc = document(group, version).to_string();
            // The hash is the client's cache key: it must change whenever the document does.
            let hash = hex_upper(&Sha256::digest(doc.as_bytes())[..16]);
            index.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
            documents.push((path, doc));
        }
        let templates: Vec<(String, String)> = TYPES.iter().map(url_templates).collect();
        let operations: Vec<crate::openapi_v2::Operation<'_>> = TYPES
            .iter()
            .zip(&templates)
            .map(|(rt, (collection, item))| crate::openapi_v2::Operation {
                group: rt.group,
                version: rt.version,
                kind: rt.kind,
                collection_path: collection,
                item_path: item,
            })
            .collect();
        let v2 = crate::openapi_v2::document("Kubernetes", &kube_version(), &operations);
        OpenApi {
            index: json!({"paths": index}),
            documents,
            v2,
        }
    }

    pub fn v2(&self) -> &[u8] {
        &self.v2
    }

    pub fn index(&self) -> &Value {
        &self.index
    }

    /// The document at `/openapi/v3/<path>`.
    pub fn document(&self, path: &str) -> Option<&str> {
        self.documents
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, d)| d.as_str())
    }
}

impl Default for OpenApi {
    fn default() -> Self {
        OpenApi::new()
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_patch_that_takes_field_validation() {
        let api = OpenApi::new();
        for rt in TYPES {
            let path = if rt.group.is_empty() {
                format!("api/{}", rt.version)
            } else {
                format!("apis/{}/{}", rt.group, rt.version)
            };
            let url = api.index()["paths"][&path]["serverRelativeURL"]
                .as_str()
                .expect("listed");
            assert!(url.starts_with(&format!("/openapi/v3/{path}?hash=")));
            let doc: Value =
                serde_json::from_str(api.document(&path).expect("document")).expect("json");
            let found = doc["paths"].as_object().expect("paths").values().any(|p| {
                p["patch"]["x-kubernetes-group-version-kind"]["kind"] == rt.kind
                    && p["patch"]["parameters"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|q| q["name"] == "fieldValidation"))
            });
            assert!(found, "{}", rt.kind);
        }
    }
}
