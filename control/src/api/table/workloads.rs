//! Table columns and cells, as kubectl prints them, for the workload kinds:
//! Pod, Deployment, ReplicaSet, ReplicationController, StatefulSet,
//! DaemonSet, Job, CronJob, HorizontalPodAutoscaler.

use serde_json::{Value, json};

use super::*;

/// The columns of `kind`, if it is one of these.
pub(super) fn columns(kind: &str, name: Value, age: Value) -> Option<Vec<Value>> {
    let c = |n: &str, p: i64| col(n, "string", p, "");
    let i = |n: &str, p: i64| col(n, "integer", p, "");
    Some(match kind {
        "Pod" => vec![
            name,
            c("Ready", 0),
            c("Status", 0),
            c("Restarts", 0),
            age,
            c("IP", 1),
            c("Node", 1),
            c("Nominated Node", 1),
            c("Readiness Gates", 1),
        ],
        "Deployment" => vec![
            name,
            c("Ready", 0),
            i("Up-to-date", 0),
            i("Available", 0),
            age,
            c("Containers", 1),
            c("Images", 1),
            c("Selector", 1),
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            name,
            i("Desired", 0),
            i("Current", 0),
            i("Ready", 0),
            age,
            c("Containers", 1),
            c("Images", 1),
            c("Selector", 1),
        ],
        "StatefulSet" => vec![name, c("Ready", 0), age, c("Containers", 1), c("Images", 1)],
        "DaemonSet" => vec![
            name,
            i("Desired", 0),
            i("Current", 0),
            i("Ready", 0),
            i("Up-to-date", 0),
            i("Available", 0),
            c("Node Selector", 0),
            age,
            c("Containers", 1),
            c("Images", 1),
            c("Selector", 1),
        ],
        "Job" => vec![
            name,
            c("Status", 0),
            c("Completions", 0),
            c("Duration", 0),
            age,
            c("Containers", 1),
            c("Images", 1),
            c("Selector", 1),
        ],
        "HorizontalPodAutoscaler" => vec![
            name,
            c("Reference", 0),
            c("Targets", 0),
            c("MinPods", 0),
            i("MaxPods", 0),
            i("Replicas", 0),
            age,
        ],
        "CronJob" => vec![
            name,
            c("Schedule", 0),
            c("Timezone", 0),
            c("Suspend", 0),
            i("Active", 0),
            c("Last Schedule", 0),
            age,
            c("Containers", 1),
            c("Images", 1),
            c("Selector", 1),
        ],
        _ => return None,
    })
}

/// The cells of an object of `kind`, if it is one of these.
pub(super) fn cells(r: &Resource, o: &Value, now: i64) -> Option<Vec<Value>> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    Some(match r.builtin_kind() {
        "Pod" => {
            let (ready, status, restarts) = pod_status(o);
            vec![
                name,
                json!(ready),
                json!(status),
                json!(restarts),
                a,
                json!(or_none(st(o, "/status/podIP"))),
                json!(or_none(st(o, "/spec/nodeName"))),
                json!(or_none(st(o, "/status/nominatedNodeName"))),
                json!("<none>"),
            ]
        }
        "Deployment" => {
            let (cn, im) = images(o.pointer("/spec/template/spec"));
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                )),
                json!(int(o, "/status/updatedReplicas")),
                json!(int(o, "/status/availableReplicas")),
                a,
                json!(cn),
                json!(im),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "ReplicaSet" | "ReplicationController" => {
            let (cn, im) = images(o.pointer("/spec/template/spec"));
            vec![
                name,
                json!(int(o, "/spec/replicas")),
                json!(int(o, "/status/replicas")),
                json!(int(o, "/status/readyReplicas")),
                a,
                json!(cn),
                json!(im),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "StatefulSet" => {
            let (cn, im) = images(o.pointer("/spec/template/spec"));
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                )),
                a,
                json!(cn),
                json!(im),
            ]
        }
        "DaemonSet" => {
            let (cn, im) = images(o.pointer("/spec/template/spec"));
            let ns = selector_string(o.pointer("/spec/template/spec/nodeSelector"));
            vec![
                name,
                json!(int(o, "/status/desiredNumberScheduled")),
                json!(int(o, "/status/currentNumberScheduled")),
                json!(int(o, "/status/numberReady")),
                json!(int(o, "/status/updatedNumberScheduled")),
                json!(int(o, "/status/numberAvailable")),
                json!(ns),
                a,
                json!(cn),
                json!(im),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "HorizontalPodAutoscaler" => {
            let v2 = crate::api::convert::to_storage(r, o.clone());
            let min = v2
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .map_or("<unset>".to_owned(), |m| m.to_string());
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    st(&v2, "/spec/scaleTargetRef/kind"),
                    st(&v2, "/spec/scaleTargetRef/name")
                )),
                json!(hpa_targets(&v2)),
                json!(min),
                json!(int(&v2, "/spec/maxReplicas")),
                json!(int(&v2, "/status/currentReplicas")),
                a,
            ]
        }
        "Job" => {
            let (cn, im) = images(o.pointer("/spec/template/spec"));
            let conds = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let has = |t: &str| {
                conds
                    .iter()
                    .any(|c| st(c, "/type") == t && st(c, "/status") == "True")
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            vec![
                name,
                json!(status),
                json!(format!(
                    "{}/{}",
                    int(o, "/status/succeeded"),
                    int(o, "/spec/completions")
                )),
                json!(""),
                a,
                json!(cn),
                json!(im),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "CronJob" => {
            let (cn, im) = images(o.pointer("/spec/jobTemplate/spec/template/spec"));
            vec![name, json!(st(o, "/spec/schedule")), json!(or_none(st(o, "/spec/timeZone"))),
                 json!(o.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false).to_string().replace('t', "T").replace('f', "F")),
                 json!(o.pointer("/status/active").and_then(Value::as_array).map_or(0, Vec::len)),
                 json!(o.pointer("/status/lastScheduleTime").map_or("<none>".into(), |_| age(&json!({"metadata": {"creationTimestamp": o.pointer("/status/lastScheduleTime")}}), now))),
                 a, json!(cn), json!(im), json!("<none>")]
        }
        _ => return None,
    })
}
