//! Admission: what the API server changes or refuses about pods and pod templates before it
//! stores them, beyond defaulting.
//!
//! - A pod without `imagePullSecrets` gets its service account's (Kubernetes'
//!   ServiceAccount admission).
//! - `AlwaysPullImages` (a switch) sets every container's pull policy to `Always`, init and
//!   ephemeral containers included, so that a node never starts an image it holds without
//!   checking the pull credentials of the pod.
//! - The digest policy (off, every namespace, or a list) refuses pods and pod templates whose
//!   images are not pinned by digest, naming the container.

use serde_json::{json, Value};

use crate::api::read::current;
use crate::api::{Shared, Target};
use crate::objects::{meta_str, name_of};
use crate::resources::{ResourceType, DEPLOYMENTS, PODS, REPLICA_SETS, SERVICE_ACCOUNTS};
use crate::status::{ApiError, ApiResult};

/// Where images must be pinned by digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DigestPolicy {
    #[default]
    Off,
    AllNamespaces,
    Namespaces(Vec<String>),
}

impl DigestPolicy {
    fn applies_to(&self, namespace: &str) -> bool {
        match self {
            DigestPolicy::Off => false,
            DigestPolicy::AllNamespaces => true,
            DigestPolicy::Namespaces(list) => list.iter().any(|n| n == namespace),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub always_pull_images: bool,
    pub digest_policy: DigestPolicy,
}

/// Where a kind keeps its pod spec.
fn pod_spec_pointer(rt: &ResourceType) -> Option<&'static str> {
    if *rt == PODS {
        Some("/spec")
    } else if *rt == DEPLOYMENTS || *rt == REPLICA_SETS {
        Some("/spec/template/spec")
    } else {
        None
    }
}

const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

impl Admission {
    /// Applies the policies to `object`, a new or changed `rt`.
    pub async fn admit(
        &self,
        s: &Shared,
        rt: &ResourceType,
        object: &mut Value,
        creating: bool,
    ) -> ApiResult<()> {
        let Some(pointer) = pod_spec_pointer(rt) else {
            return Ok(());
        };
        let namespace = meta_str(object, "namespace")
            .unwrap_or("default")
            .to_string();
        if *rt == PODS && creating {
            self.service_account_pull_secrets(s, &namespace, object)
                .await?;
        }
        if *rt == PODS && self.always_pull_images {
            if let Some(spec) = object.pointer_mut(pointer) {
                for list in CONTAINER_LISTS {
                    if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                            c.insert("imagePullPolicy".into(), json!("Always"));
                        }
                    }
                }
            }
        }
        if self.digest_policy.applies_to(&namespace) {
            let spec = object.pointer(pointer).cloned().unwrap_or(Value::Null);
            for list in CONTAINER_LISTS {
                for c in spec
                    .get(list)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                    if !image.contains("@sha256:") && !image.contains("@sha512:") {
                        let container = c.get("name").and_then(Value::as_str).unwrap_or("");
                        return Err(ApiError::new(
                            axum::http::StatusCode::FORBIDDEN,
                            "Forbidden",
                            format!(
                                "{} \"{}\" is forbidden: image \"{image}\" of container \"{container}\" is not pinned by digest; namespace \"{namespace}\" requires images referenced as NAME@sha256:DIGEST",
                                rt.group_resource(),
                                name_of(object)
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    async fn service_account_pull_secrets(
        &self,
        s: &Shared,
        namespace: &str,
        pod: &mut Value,
    ) -> ApiResult<()> {
        let has_own = pod
            .pointer("/spec/imagePullSecrets")
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty());
        if has_own {
            return Ok(());
        }
        let account = pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .unwrap_or("default")
            .to_string();
        let t = Target::object(SERVICE_ACCOUNTS, Some(namespace), &account);
        let secrets = match current(s, &t).await {
            Ok((sa, _)) => sa.get("imagePullSecrets").cloned(),
            // Kubernetes refuses the pod until its account exists; the `default` one is
            // made with the namespace, so only a named, missing account gets here.
            Err(e) if e.reason == "NotFound" => {
                return Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!(
                    "pods \"{}\" is forbidden: error looking up service account {namespace}/{}: {}",
                    name_of(pod),
                    t.name(),
                    e.message
                ),
                ))
            }
            Err(e) => return Err(e),
        };
        if let (Some(secrets), Some(spec)) = (
            secrets.filter(|v| v.as_array().is_some_and(|l| !l.is_empty())),
            pod.get_mut("spec").and_then(Value::as_object_mut),
        ) {
            spec.insert("imagePullSecrets".into(), secrets);
        }
        Ok(())
    }
}
