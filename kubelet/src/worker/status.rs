//! The pod status the kubelet reports: phase, conditions (keeping their
//! transition times and the conditions others own), container states, QoS
//! class; written as a merge patch of the status subresource, only when it
//! changed.

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use rudder_k8s::time::rfc3339_of_secs;
use serde_json::{Value, json};

use super::{
    super::{
        now,
        sync::{self, ViewState},
    },
    Worker, pod_key,
};

impl Worker {
    pub(super) async fn write_status(&mut self, pod: &Pod, view: &sync::StatusView) {
        let body = status_json(
            pod,
            view,
            &self.shared.cfg.node_ip,
            self.mem.first_seen.unwrap_or_else(now),
        );
        if self.last_status.as_ref() == Some(&body) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        match api
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(_) => self.last_status = Some(body),
            Err(e) => tracing::warn!(pod = %pod_key(pod), error = %e, "writing the pod status"),
        }
    }
}

fn view_state(s: &ViewState) -> Value {
    match s {
        ViewState::Waiting { reason, message } => {
            let mut w = json!({"reason": reason.as_str()});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"waiting": w})
        }
        ViewState::Running { started_at } => {
            json!({"running": {"startedAt": rfc3339_of_secs(*started_at)}})
        }
        ViewState::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
            container_id,
        } => {
            let mut t = json!({
                "exitCode": exit_code, "reason": reason.as_str(),
                "finishedAt": rfc3339_of_secs(*finished_at), "containerID": container_id,
            });
            if let Some(s) = started_at {
                t["startedAt"] = json!(rfc3339_of_secs(*s));
            }
            if let Some(m) = message {
                t["message"] = json!(m);
            }
            json!({"terminated": t})
        }
    }
}

/// The status subresource body for a view.
fn status_json(pod: &Pod, v: &sync::StatusView, host_ip: &str, started: f64) -> Value {
    let old: Vec<k8s_openapi::api::core::v1::PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now_s = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let cond = |t: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .iter()
            .find(|c| c.type_ == t && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map_or_else(
                || now_s.clone(),
                |t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            );
        let mut c = json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
        if let Some(r) = reason.filter(|_| !ok) {
            c["reason"] = json!(r);
        }
        c
    };
    let scheduled = old.iter().find(|c| c.type_ == "PodScheduled").map_or_else(
        || cond("PodScheduled", true, None),
        |c| serde_json::to_value(c).unwrap_or_default(),
    );
    let not_ready_reason = if v.phase == "Succeeded" || v.phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut conditions = vec![
        cond("PodReadyToStartContainers", v.ready_to_start, None),
        cond(
            "Initialized",
            v.initialized,
            Some("ContainersNotInitialized"),
        ),
        cond("Ready", v.ready, Some(not_ready_reason)),
        cond(
            "ContainersReady",
            v.containers_ready,
            Some(not_ready_reason),
        ),
        scheduled,
    ];
    // Conditions others own (readiness gates) are kept.
    for c in &old {
        if ![
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ]
        .contains(&c.type_.as_str())
        {
            conditions.push(serde_json::to_value(c).unwrap_or_default());
        }
    }
    let cs = |list: &[sync::ContainerView]| -> Vec<Value> {
        list.iter()
            .map(|c| {
                let mut s = json!({
                    "name": c.name, "image": c.image, "imageID": "",
                    "ready": c.ready, "started": c.started, "restartCount": c.restart_count,
                    "state": view_state(&c.state),
                    "lastState": c.last_state.as_ref().map_or(json!({}), view_state),
                });
                if let Some(id) = &c.container_id {
                    s["containerID"] = json!(id);
                }
                s
            })
            .collect()
    };
    let mut status = json!({
        "phase": v.phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": rfc3339_of_secs(started),
        "qosClass": pod.spec.as_ref().map_or("BestEffort", |s| rudder_k8s::qos::pod_qos(s).as_str()),
        "containerStatuses": cs(&v.statuses),
    });
    if !v.ephemeral_statuses.is_empty() {
        status["ephemeralContainerStatuses"] = json!(cs(&v.ephemeral_statuses));
    }
    if !v.init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(cs(&v.init_statuses));
    }
    if let Some(ip) = &v.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(r) = &v.reason {
        status["reason"] = json!(r);
    }
    if let Some(m) = &v.message {
        status["message"] = json!(m);
    }
    json!({"status": status})
}
