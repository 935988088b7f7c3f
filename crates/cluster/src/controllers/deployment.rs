//! The Deployment controller: each sync reads a Deployment and the ReplicaSets it controls,
//! asks [`super::rollout`] what one Kubernetes sync pass would do, and applies that plan
//! through the API (so admission, defaulting and validation apply to its writes too).

use std::sync::Arc;

use serde_json::{json, Value};

use super::rollout::{self, Plan};
use super::{
    adopt, controlled_by, controller_of, has_controller, key_of, list, release, Controller, Key,
    Queue,
};
use crate::api::write::{create_object, delete_object, modify, DeleteOptions};
use crate::api::{Shared, Target};
use crate::events;
use crate::objects::{meta_str, name_of, UpdateScope};
use crate::resources::{ResourceType, DEPLOYMENTS, REPLICA_SETS};
use crate::selector::LabelSelector;
use crate::status::{ApiError, ApiResult};

const COMPONENT: &str = "deployment-controller";

pub struct DeploymentController;

#[async_trait::async_trait]
impl Controller for DeploymentController {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    async fn keys_for(&self, _s: &Shared, rt: &ResourceType, object: &Value) -> Vec<Key> {
        let namespace = meta_str(object, "namespace")
            .unwrap_or("default")
            .to_string();
        if *rt == DEPLOYMENTS {
            return vec![key_of(object)];
        }
        if *rt == REPLICA_SETS {
            if let Some(owner) = controller_of(object, "Deployment") {
                return vec![(namespace, owner.to_string())];
            }
        }
        Vec::new()
    }

    async fn all_keys(&self, s: &Shared) -> Vec<Key> {
        list(s, &DEPLOYMENTS, None)
            .await
            .unwrap_or_default()
            .iter()
            .map(key_of)
            .collect()
    }

    async fn sync(&self, s: &Shared, key: &Key, queue: &Arc<Queue>) -> ApiResult<()> {
        let (namespace, name) = key;
        let deployment =
            match crate::api::read::current(s, &Target::object(DEPLOYMENTS, Some(namespace), name))
                .await
            {
                Ok((d, _)) => d,
                Err(e) if e.reason == "NotFound" => return Ok(()),
                Err(e) => return Err(e),
            };
        let uid = meta_str(&deployment, "uid").unwrap_or("").to_string();
        let selector = deployment
            .pointer("/spec/selector")
            .map(LabelSelector::from_object)
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("deployment {name}: selector: {e}")))?
            .unwrap_or_else(LabelSelector::nothing);
        let deleting = deployment.pointer("/metadata/deletionTimestamp").is_some();
        let mut owned = Vec::new();
        for rs in list(s, &REPLICA_SETS, Some(namespace)).await? {
            let labels = rs
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned();
            let matches = selector.matches(labels.as_ref());
            if controlled_by(&rs, &uid) {
                if matches {
                    owned.push(rs);
                } else {
                    release(s, namespace, &rs, &uid).await?;
                }
            } else if matches && !deleting && !has_controller(&rs) {
                // Kubernetes' controller adopts ReplicaSets its selector matches.
                if let Some(adopted) = adopt(s, namespace, &rs, &deployment).await? {
                    owned.push(adopted);
                }
            }
        }
        let plan = rollout::reconcile(&deployment, &owned, time::OffsetDateTime::now_utc())
            .map_err(|e| ApiError::bad_request(format!("deployment {namespace}/{name}: {e}")))?;
        self.apply(s, namespace, &deployment, plan, queue).await
    }
}

impl DeploymentController {
    async fn apply(
        &self,
        s: &Shared,
        namespace: &str,
        deployment: &Value,
        plan: Plan,
        queue: &Arc<Queue>,
    ) -> ApiResult<()> {
        let name = name_of(deployment).to_string();
        if let Some(rs) = plan.create {
            match create_object(s, &REPLICA_SETS, Some(namespace), rs, false).await {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {
                    // A ReplicaSet this Deployment does not control has the name: count the
                    // collision so the next pass hashes to another name.
                    let status = rollout::status_after_name_collision(deployment)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    self.write_status(s, namespace, &name, status).await?;
                    queue.add((namespace.to_string(), name));
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        for rs in plan.update {
            let t = Target::object(REPLICA_SETS, Some(namespace), name_of(&rs));
            let wanted = rs.clone();
            modify(s, &t, UpdateScope::Main, move |current| {
                let mut next = current.clone();
                next["spec"] = wanted.get("spec").cloned().unwrap_or(json!({}));
                if let Some(annotations) = wanted.pointer("/metadata/annotations") {
                    next["metadata"]["annotations"] = annotations.clone();
                }
                Ok((next != *current).then_some(next))
            })
            .await?;
        }
        for rs_name in plan.delete {
            let t = Target::object(REPLICA_SETS, Some(namespace), &rs_name);
            match delete_object(s, &t, &DeleteOptions::background()).await {
                Ok(_) => {}
                Err(e) if e.reason == "NotFound" => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(annotations) = plan.deployment_annotations {
            let t = Target::object(DEPLOYMENTS, Some(namespace), &name);
            modify(s, &t, UpdateScope::Main, move |current| {
                let mut next = current.clone();
                next["metadata"]["annotations"] = Value::Object(annotations.clone());
                Ok((next != *current).then_some(next))
            })
            .await?;
        }
        if let Some(status) = plan.status {
            self.write_status(s, namespace, &name, status).await?;
        }
        for (kind, reason, message) in plan.events {
            events::record(
                s,
                &DEPLOYMENTS,
                deployment,
                &kind,
                &reason,
                &message,
                COMPONENT,
            )
            .await?;
        }
        if let Some(after) = plan.requeue_after {
            queue.add_after((namespace.to_string(), name), after);
        }
        Ok(())
    }

    async fn write_status(
        &self,
        s: &Shared,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> ApiResult<()> {
        let t = Target::object(DEPLOYMENTS, Some(namespace), name).with_subresource(Some("status"));
        modify(s, &t, UpdateScope::Status, move |current| {
            if current.get("status") == Some(&status) {
                return Ok(None);
            }
            let mut next = current.clone();
            next["status"] = status.clone();
            Ok(Some(next))
        })
        .await
        .map(|_| ())
    }
}
