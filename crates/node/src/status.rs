//! Pod status as the kubelet reports it: phase, conditions, and one status per container
//! with its state, last state, readiness and restart count.

use serde_json::{Value, json};

/// Now in RFC 3339 with seconds, as Kubernetes' `metav1.Time` serializes.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    unix_rfc3339(secs)
}

pub fn unix_rfc3339(secs: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// What one container is doing, as reported.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting { reason: String, message: String },
    Running { started: i64 },
    Terminated(Terminated),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub started: i64,
    pub finished: i64,
    pub container_id: String,
}

impl Terminated {
    pub fn new(exit_code: i32, started: i64, finished: i64, container_id: &str) -> Terminated {
        Terminated {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.to_string(),
            started,
            finished,
            container_id: container_id.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerReport {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: State,
    pub last_state: Option<Terminated>,
    pub ready: bool,
    pub started: bool,
    pub restart_count: u32,
}

fn terminated_json(t: &Terminated) -> Value {
    json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "startedAt": unix_rfc3339(t.started),
        "finishedAt": unix_rfc3339(t.finished),
        "containerID": t.container_id,
    })
}

impl ContainerReport {
    pub fn to_json(&self) -> Value {
        let state = match &self.state {
            State::Waiting { reason, message } if message.is_empty() => {
                json!({"waiting": {"reason": reason}})
            }
            State::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            State::Running { started } => json!({"running": {"startedAt": unix_rfc3339(*started)}}),
            State::Terminated(t) => json!({"terminated": terminated_json(t)}),
        };
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "state": state,
            "lastState": self.last_state.as_ref().map(|t| json!({"terminated": terminated_json(t)})).unwrap_or(json!({})),
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }
}

/// The whole status of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodReport {
    pub phase: &'static str,
    pub host_ip: String,
    pub pod_ip: Option<String>,
    pub start_time: i64,
    pub sandbox_ready: bool,
    pub initialized: bool,
    pub init_containers: Vec<ContainerReport>,
    pub containers: Vec<ContainerReport>,
}

/// The pod's phase from its containers, as the kubelet's `getPhase` decides it.
pub fn phase(
    restart_policy: &str,
    init: &[ContainerReport],
    initialized: bool,
    containers: &[ContainerReport],
) -> &'static str {
    if !initialized {
        // A failed init container that will not be restarted fails the pod.
        let failed = init.iter().any(|c| {
            matches!(&c.state, State::Terminated(t) if t.exit_code != 0)
                && restart_policy == "Never"
        });
        return if failed { "Failed" } else { "Pending" };
    }
    let mut running = 0;
    let mut waiting = 0;
    let mut stopped = 0;
    let mut succeeded = 0;
    for c in containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } => {
                if c.last_state.is_some() {
                    // Restarting after an exit.
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 && running == 0 {
        if restart_policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if restart_policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

impl PodReport {
    /// The status object, keeping conditions the node does not own (PodScheduled, and any
    /// readiness gates) and the transition times of conditions that did not change.
    pub fn to_json(&self, previous: &Value) -> Value {
        let all_ready = !self.containers.is_empty() && self.containers.iter().all(|c| c.ready);
        let not_ready: Vec<&str> = self
            .containers
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect();
        let not_ready_message =
            format!("containers with unready status: [{}]", not_ready.join(" "));
        let uninitialized: Vec<&str> = self
            .init_containers
            .iter()
            .filter(|c| !matches!(&c.state, State::Terminated(t) if t.exit_code == 0))
            .map(|c| c.name.as_str())
            .collect();
        let mut ours = vec![
            ("PodReadyToStartContainers", self.sandbox_ready, None, None),
            (
                "Initialized",
                self.initialized,
                (!self.initialized).then_some("ContainersNotInitialized"),
                (!self.initialized).then(|| {
                    format!(
                        "containers with incomplete status: [{}]",
                        uninitialized.join(" ")
                    )
                }),
            ),
            (
                "Ready",
                all_ready,
                (!all_ready).then_some("ContainersNotReady"),
                (!all_ready).then(|| not_ready_message.clone()),
            ),
            (
                "ContainersReady",
                all_ready,
                (!all_ready).then_some("ContainersNotReady"),
                (!all_ready).then_some(not_ready_message),
            ),
        ];
        if self.phase == "Succeeded" || self.phase == "Failed" {
            // A finished pod is not ready; Kubernetes says why with PodCompleted.
            for c in ours.iter_mut().skip(2) {
                c.1 = false;
                c.2 = Some("PodCompleted");
                c.3 = None;
            }
            ours[1].2 = Some("PodCompleted");
        }
        let old: Vec<Value> = previous["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let now = now_rfc3339();
        let mut conditions: Vec<Value> = Vec::new();
        for (kind, ok, reason, message) in ours {
            let status = if ok { "True" } else { "False" };
            let since = old
                .iter()
                .find(|c| c["type"] == kind && c["status"] == status)
                .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
                .unwrap_or_else(|| now.clone());
            let mut c = json!({
                "type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since,
            });
            if let Some(r) = reason {
                c["reason"] = json!(r);
            }
            if let Some(m) = message {
                c["message"] = json!(m);
            }
            conditions.push(c);
        }
        let managed = [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
        ];
        for c in old {
            if !managed.iter().any(|m| c["type"] == *m) {
                conditions.push(c);
            }
        }
        let mut status = json!({
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "startTime": unix_rfc3339(self.start_time),
            "qosClass": previous["qosClass"].as_str().unwrap_or("BestEffort"),
            "containerStatuses": self.containers.iter().map(ContainerReport::to_json).collect::<Vec<_>>(),
        });
        if !self.init_containers.is_empty() {
            status["initContainerStatuses"] = self
                .init_containers
                .iter()
                .map(ContainerReport::to_json)
                .collect();
        }
        if let Some(ip) = &self.pod_ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: State, last: bool) -> ContainerReport {
        ContainerReport {
            name: "c".into(),
            image: "i".into(),
            image_id: String::new(),
            container_id: None,
            state,
            last_state: last.then(|| Terminated::new(1, 0, 1, "x")),
            ready: false,
            started: false,
            restart_count: 0,
        }
    }

    #[test]
    fn phases_follow_the_kubelets_rules() {
        let waiting = State::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        };
        let ok = State::Terminated(Terminated::new(0, 0, 1, "x"));
        let bad = State::Terminated(Terminated::new(2, 0, 1, "x"));
        assert_eq!(
            phase("Always", &[], true, &[report(waiting.clone(), false)]),
            "Pending"
        );
        // Back-off after a crash still counts as running.
        assert_eq!(
            phase("Always", &[], true, &[report(waiting, true)]),
            "Running"
        );
        assert_eq!(
            phase("Never", &[], true, &[report(ok.clone(), false)]),
            "Succeeded"
        );
        assert_eq!(
            phase("Never", &[], true, &[report(bad.clone(), false)]),
            "Failed"
        );
        assert_eq!(
            phase("OnFailure", &[], true, &[report(bad.clone(), false)]),
            "Running"
        );
        assert_eq!(phase("Always", &[], true, &[report(ok, false)]), "Running");
        assert_eq!(phase("Never", &[report(bad, false)], false, &[]), "Failed");
    }
}
