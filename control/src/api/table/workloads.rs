//! Table columns and cells, as kubectl prints them, for the workload kinds:
//! Pod, Deployment, ReplicaSet, ReplicationController, StatefulSet,
//! DaemonSet, Job, CronJob, HorizontalPodAutoscaler.

use serde_json::{Value, json};

use super::*;

pub(crate) const POD: Table = Table {
    columns: &[
        NAME,
        Col::new("Ready", "string", 0),
        Col::new("Status", "string", 0),
        Col::new("Restarts", "string", 0),
        AGE,
        Col::new("IP", "string", 1),
        Col::new("Node", "string", 1),
        Col::new("Nominated Node", "string", 1),
        Col::new("Readiness Gates", "string", 1),
    ],
    cells: pod_row,
};

pub(crate) const DEPLOYMENT: Table = Table {
    columns: &[
        NAME,
        Col::new("Ready", "string", 0),
        Col::new("Up-to-date", "integer", 0),
        Col::new("Available", "integer", 0),
        AGE,
        Col::new("Containers", "string", 1),
        Col::new("Images", "string", 1),
        Col::new("Selector", "string", 1),
    ],
    cells: deployment_row,
};

pub(crate) const REPLICA_SET: Table = Table {
    columns: &[
        NAME,
        Col::new("Desired", "integer", 0),
        Col::new("Current", "integer", 0),
        Col::new("Ready", "integer", 0),
        AGE,
        Col::new("Containers", "string", 1),
        Col::new("Images", "string", 1),
        Col::new("Selector", "string", 1),
    ],
    cells: replica_set_row,
};

pub(crate) const STATEFUL_SET: Table = Table {
    columns: &[
        NAME,
        Col::new("Ready", "string", 0),
        AGE,
        Col::new("Containers", "string", 1),
        Col::new("Images", "string", 1),
    ],
    cells: stateful_set_row,
};

pub(crate) const DAEMON_SET: Table = Table {
    columns: &[
        NAME,
        Col::new("Desired", "integer", 0),
        Col::new("Current", "integer", 0),
        Col::new("Ready", "integer", 0),
        Col::new("Up-to-date", "integer", 0),
        Col::new("Available", "integer", 0),
        Col::new("Node Selector", "string", 0),
        AGE,
        Col::new("Containers", "string", 1),
        Col::new("Images", "string", 1),
        Col::new("Selector", "string", 1),
    ],
    cells: daemon_set_row,
};

pub(crate) const HORIZONTAL_POD_AUTOSCALER: Table = Table {
    columns: &[
        NAME,
        Col::new("Reference", "string", 0),
        Col::new("Targets", "string", 0),
        Col::new("MinPods", "string", 0),
        Col::new("MaxPods", "integer", 0),
        Col::new("Replicas", "integer", 0),
        AGE,
    ],
    cells: horizontal_pod_autoscaler_row,
};

pub(crate) const JOB: Table = Table {
    columns: &[
        NAME,
        Col::new("Status", "string", 0),
        Col::new("Completions", "string", 0),
        Col::new("Duration", "string", 0),
        AGE,
        Col::new("Containers", "string", 1),
        Col::new("Images", "string", 1),
        Col::new("Selector", "string", 1),
    ],
    cells: job_row,
};

pub(crate) const CRON_JOB: Table = Table {
    columns: &[
        NAME,
        Col::new("Schedule", "string", 0),
        Col::new("Timezone", "string", 0),
        Col::new("Suspend", "string", 0),
        Col::new("Active", "integer", 0),
        Col::new("Last Schedule", "string", 0),
        AGE,
        Col::new("Containers", "string", 1),
        Col::new("Images", "string", 1),
        Col::new("Selector", "string", 1),
    ],
    cells: cron_job_row,
};

fn pod_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
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

fn deployment_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
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

fn replica_set_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
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

fn stateful_set_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
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

fn daemon_set_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
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

fn horizontal_pod_autoscaler_row(r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
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

fn job_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
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

fn cron_job_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    let (cn, im) = images(o.pointer("/spec/jobTemplate/spec/template/spec"));
    vec![name, json!(st(o, "/spec/schedule")), json!(or_none(st(o, "/spec/timeZone"))),
                 json!(o.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false).to_string().replace('t', "T").replace('f', "F")),
                 json!(o.pointer("/status/active").and_then(Value::as_array).map_or(0, Vec::len)),
                 json!(o.pointer("/status/lastScheduleTime").map_or("<none>".into(), |_| age(&json!({"metadata": {"creationTimestamp": o.pointer("/status/lastScheduleTime")}}), now))),
                 a, json!(cn), json!(im), json!("<none>")]
}
