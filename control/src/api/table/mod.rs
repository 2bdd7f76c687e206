//! `Table` responses (meta.k8s.io/v1), so that `kubectl get` prints the
//! columns Kubernetes prints. Columns with priority 1 show with `-o wide`.

mod cluster;
mod networking;

use serde_json::{Value, json};

use super::resources::Resource;

/// Kubernetes' `HumanDuration` (apimachinery `util/duration`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        let d = h / 24;
        if d % 365 == 0 {
            format!("{}y", d / 365)
        } else {
            format!("{}y{}d", d / 365, d % 365)
        }
    } else {
        format!("{}y", h / 24 / 365)
    }
}

fn age(obj: &Value, now: i64) -> String {
    obj.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map_or_else(
            || "<unknown>".into(),
            |t| human_duration(now - t.unix_timestamp()),
        )
}

fn st<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_owned()
    }
}

fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        parts.extend(
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))),
        );
    } else if let Some(m) = sel
        .as_object()
        .filter(|m| !m.contains_key("matchExpressions"))
    {
        parts.extend(
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))),
        );
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn images(spec: Option<&Value>) -> (String, String) {
    let cs = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| st(c, "/name")).collect();
    let imgs: Vec<&str> = cs.iter().map(|c| st(c, "/image")).collect();
    (names.join(","), imgs.join(","))
}

fn pod_status(p: &Value) -> (String, String, i64) {
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = statuses.iter().map(|c| int(c, "/restartCount")).sum();
    let mut reason = st(p, "/status/reason").to_owned();
    if reason.is_empty() {
        reason = st(p, "/status/phase").to_owned();
    }
    // Init containers first, as kubectl's printer does.
    let init = p
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let n_init = init.len();
    let mut initializing = false;
    for (i, c) in init.iter().enumerate() {
        let term_reason = st(c, "/state/terminated/reason");
        if c.pointer("/state/terminated").is_some() && int(c, "/state/terminated/exitCode") == 0 {
            continue;
        }
        initializing = true;
        reason = if c.pointer("/state/terminated").is_some() {
            if term_reason.is_empty() {
                format!("Init:ExitCode:{}", int(c, "/state/terminated/exitCode"))
            } else {
                format!("Init:{term_reason}")
            }
        } else if !st(c, "/state/waiting/reason").is_empty()
            && st(c, "/state/waiting/reason") != "PodInitializing"
        {
            format!("Init:{}", st(c, "/state/waiting/reason"))
        } else {
            format!("Init:{i}/{n_init}")
        };
        break;
    }
    if !initializing {
        for c in statuses.iter().rev() {
            let w = st(c, "/state/waiting/reason");
            let t = st(c, "/state/terminated/reason");
            if !w.is_empty() {
                reason = w.to_owned();
            } else if !t.is_empty() {
                reason = t.to_owned();
            } else if c.pointer("/state/terminated").is_some() {
                let sig = int(c, "/state/terminated/signal");
                reason = if sig != 0 {
                    format!("Signal:{sig}")
                } else {
                    format!("ExitCode:{}", int(c, "/state/terminated/exitCode"))
                };
            }
        }
    }
    if p.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    if reason.is_empty() {
        reason = "Pending".into();
    }
    (format!("{ready}/{total}"), reason, restarts)
}

fn col(name: &str, ty: &str, priority: i64, description: &str) -> Value {
    json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" },
           "description": description, "priority": priority})
}

/// Columns and one row of cells for objects of `r`.
pub fn columns(r: &Resource) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age = col(
        "Age",
        "string",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    let c = |n: &str, p: i64| col(n, "string", p, "");
    let i = |n: &str, p: i64| col(n, "integer", p, "");
    match r.kind {
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
        "Service" => vec![
            name,
            c("Type", 0),
            c("Cluster-IP", 0),
            c("External-IP", 0),
            c("Port(s)", 0),
            age,
            c("Selector", 1),
        ],
        "Node" => vec![
            name,
            c("Status", 0),
            c("Roles", 0),
            age,
            c("Version", 0),
            c("Internal-IP", 1),
            c("External-IP", 1),
            c("OS-Image", 1),
            c("Kernel-Version", 1),
            c("Container-Runtime", 1),
        ],
        "Namespace" => vec![name, c("Status", 0), age],
        "ConfigMap" => vec![name, i("Data", 0), age],
        "Secret" => vec![name, c("Type", 0), i("Data", 0), age],
        "ServiceAccount" => vec![name, i("Secrets", 0), age],
        "Endpoints" => vec![name, c("Endpoints", 0), age],
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
        "Event" => vec![
            c("Last Seen", 0),
            c("Type", 0),
            c("Reason", 0),
            c("Object", 0),
            c("Message", 0),
        ],
        "PersistentVolumeClaim" => vec![
            name,
            c("Status", 0),
            c("Volume", 0),
            c("Capacity", 0),
            c("Access Modes", 0),
            c("StorageClass", 0),
            c("VolumeAttributesClass", 0),
            age,
            c("VolumeMode", 1),
        ],
        "PersistentVolume" => vec![
            name,
            c("Capacity", 0),
            c("Access Modes", 0),
            c("Reclaim Policy", 0),
            c("Status", 0),
            c("Claim", 0),
            c("StorageClass", 0),
            c("VolumeAttributesClass", 0),
            c("Reason", 0),
            age,
            c("VolumeMode", 1),
        ],
        "Lease" => vec![name, c("Holder", 0), age],
        "EndpointSlice" => vec![
            name,
            c("AddressType", 0),
            c("Ports", 0),
            c("Endpoints", 0),
            age,
        ],
        kind => networking::columns(kind, name.clone(), age.clone())
            .or_else(|| cluster::columns(kind, name.clone(), age.clone()))
            .unwrap_or_else(|| vec![name, col("Created At", "date", 0, "")]),
    }
}

pub fn cells(r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    match r.kind {
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
        "Service" => {
            let ty = st(o, "/spec/type");
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let np = int(p, "/nodePort");
                    let proto = st(p, "/protocol");
                    if np != 0 {
                        format!("{}:{np}/{proto}", int(p, "/port"))
                    } else {
                        format!("{}/{proto}", int(p, "/port"))
                    }
                })
                .collect();
            let mut ext: Vec<String> = o
                .pointer("/spec/externalIPs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            ext.extend(
                o.pointer("/status/loadBalancer/ingress")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|i| {
                        i.get("ip")
                            .or(i.get("hostname"))
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    }),
            );
            let external = if !ext.is_empty() {
                ext.join(",")
            } else if ty == "LoadBalancer" {
                "<pending>".into()
            } else if ty == "ExternalName" {
                st(o, "/spec/externalName").to_owned()
            } else {
                "<none>".into()
            };
            let cip = if ty == "ExternalName" {
                "<none>".to_owned()
            } else {
                or_none(st(o, "/spec/clusterIP"))
            };
            vec![
                name,
                json!(ty),
                json!(cip),
                json!(external),
                json!(if ports.is_empty() {
                    "<none>".into()
                } else {
                    ports.join(",")
                }),
                a,
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "Node" => {
            let conds = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = conds.iter().find(|c| st(c, "/type") == "Ready");
            let mut status = match ready.map(|c| st(c, "/status")) {
                Some("True") => "Ready".to_owned(),
                _ => "NotReady".to_owned(),
            };
            if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let mut roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_owned)
                })
                .collect();
            roles.sort();
            let addr = |t: &str| {
                o.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|x| st(x, "/type") == t)
                    .map_or("<none>".to_owned(), |x| st(x, "/address").to_owned())
            };
            vec![
                name,
                json!(status),
                json!(if roles.is_empty() {
                    "<none>".into()
                } else {
                    roles.join(",")
                }),
                a,
                json!(st(o, "/status/nodeInfo/kubeletVersion")),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(or_none(st(o, "/status/nodeInfo/osImage"))),
                json!(or_none(st(o, "/status/nodeInfo/kernelVersion"))),
                json!(or_none(st(o, "/status/nodeInfo/containerRuntimeVersion"))),
            ]
        }
        "Namespace" => vec![name, json!(st(o, "/status/phase")), a],
        "ConfigMap" => {
            let n = o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, serde_json::Map::len)
                + o.get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, serde_json::Map::len);
            vec![name, json!(n), a]
        }
        "Secret" => vec![
            name,
            json!(st(o, "/type")),
            json!(
                o.get("data")
                    .and_then(Value::as_object)
                    .map_or(0, serde_json::Map::len)
            ),
            a,
        ],
        "ServiceAccount" => vec![
            name,
            json!(
                o.get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            a,
        ],
        "Endpoints" => {
            let mut eps = Vec::new();
            for s in o
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ports: Vec<i64> = s
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| int(p, "/port"))
                    .collect();
                for addr in s
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if ports.is_empty() {
                        eps.push(st(addr, "/ip").to_owned());
                    }
                    for p in &ports {
                        eps.push(format!("{}:{p}", st(addr, "/ip")));
                    }
                }
            }
            let shown = if eps.is_empty() {
                "<none>".to_owned()
            } else if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![name, json!(shown), a]
        }
        "HorizontalPodAutoscaler" => {
            let v2 = super::convert::to_storage(r, o.clone());
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
        "Event" => {
            // Core names, or events.k8s.io's for the same fields.
            let field = |core: &str, new: &str| {
                o.get(core)
                    .filter(|v| !v.is_null())
                    .or_else(|| o.get(new).filter(|v| !v.is_null()))
            };
            let last = field("lastTimestamp", "deprecatedLastTimestamp")
                .or(o.get("eventTime"))
                .cloned()
                .unwrap_or(Value::Null);
            let object = field("involvedObject", "regarding")
                .cloned()
                .unwrap_or_default();
            vec![
                json!(age(&json!({"metadata": {"creationTimestamp": last}}), now)),
                json!(st(o, "/type")),
                json!(st(o, "/reason")),
                json!(format!(
                    "{}/{}",
                    st(&object, "/kind").to_lowercase(),
                    st(&object, "/name")
                )),
                json!(
                    field("message", "note")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ),
            ]
        }
        "PersistentVolumeClaim" => vec![
            name,
            json!(st(o, "/status/phase")),
            json!(st(o, "/spec/volumeName")),
            json!(st(o, "/status/capacity/storage")),
            json!(access_modes(o.pointer("/status/accessModes"))),
            json!(or_none(st(o, "/spec/storageClassName"))),
            json!("<unset>"),
            a,
            json!(st(o, "/spec/volumeMode")),
        ],
        "PersistentVolume" => {
            let claim = if o.pointer("/spec/claimRef").is_some() {
                format!(
                    "{}/{}",
                    st(o, "/spec/claimRef/namespace"),
                    st(o, "/spec/claimRef/name")
                )
            } else {
                String::new()
            };
            vec![
                name,
                json!(st(o, "/spec/capacity/storage")),
                json!(access_modes(o.pointer("/spec/accessModes"))),
                json!(st(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(st(o, "/status/phase")),
                json!(claim),
                json!(st(o, "/spec/storageClassName")),
                json!("<unset>"),
                json!(st(o, "/status/reason")),
                a,
                json!(st(o, "/spec/volumeMode")),
            ]
        }
        "Lease" => vec![name, json!(st(o, "/spec/holderIdentity")), a],
        "EndpointSlice" => {
            let ports: Vec<String> = o
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| int(p, "/port").to_string())
                .collect();
            let eps: Vec<String> = o
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|e| {
                    e.get("addresses")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            vec![
                name,
                json!(st(o, "/addressType")),
                json!(if ports.is_empty() {
                    "<unset>".into()
                } else {
                    ports.join(",")
                }),
                json!(if eps.is_empty() {
                    "<unset>".into()
                } else {
                    eps.join(",")
                }),
                a,
            ]
        }
        kind => networking::cells(kind, o, now)
            .or_else(|| cluster::cells(kind, o, now))
            .unwrap_or_else(|| vec![name, json!(st(o, "/metadata/creationTimestamp"))]),
    }
}

/// An HPA's TARGETS column as kubectl prints it: `cpu: 40%/50%` per metric,
/// `<unknown>` for a current value not measured yet.
fn hpa_targets(v2: &Value) -> String {
    let metrics = v2
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let current = v2
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if metrics.is_empty() {
        return "<none>".into();
    }
    let mut parts = Vec::new();
    for m in &metrics {
        let ty = st(m, "/type");
        let source = match ty {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            _ => "external",
        };
        let spec = &m[source];
        let name = spec["name"]
            .as_str()
            .or_else(|| spec.pointer("/metric/name").and_then(Value::as_str))
            .unwrap_or("");
        let cur = current.iter().find(|c| {
            st(c, "/type") == ty
                && (c[source]["name"].as_str() == Some(name)
                    || c[source].pointer("/metric/name").and_then(Value::as_str) == Some(name))
        });
        let target = &spec["target"];
        let (now, want) = match st(target, "/type") {
            "Utilization" => (
                cur.and_then(|c| c[source].pointer("/current/averageUtilization"))
                    .and_then(Value::as_i64)
                    .map(|u| format!("{u}%")),
                format!("{}%", int(target, "/averageUtilization")),
            ),
            "AverageValue" => (
                cur.and_then(|c| c[source].pointer("/current/averageValue"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                st(target, "/averageValue").to_owned(),
            ),
            _ => (
                cur.and_then(|c| c[source].pointer("/current/value"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                st(target, "/value").to_owned(),
            ),
        };
        let now = now.unwrap_or_else(|| "<unknown>".into());
        parts.push(format!("{name}: {now}/{want}"));
    }
    if parts.len() > 2 {
        let more = parts.len() - 2;
        parts.truncate(2);
        return format!("{} + {more} more...", parts.join(", "));
    }
    parts.join(", ")
}

fn access_modes(v: Option<&Value>) -> String {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What each row carries as `object` (`includeObject=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

pub fn row(r: &Resource, o: &Value, now: i64, include: Include) -> Value {
    let object = match include {
        Include::None => Value::Null,
        Include::Object => o.clone(),
        Include::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
        }),
    };
    json!({"cells": cells(r, o, now), "object": object})
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "the metadata is moved into the table"
)]
pub fn table(
    r: &Resource,
    objs: &[Value],
    list_meta: Value,
    include: Include,
    with_columns: bool,
) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": objs.iter().map(|o| row(r, o, now, include)).collect::<Vec<_>>(),
    });
    if with_columns {
        t["columnDefinitions"] = json!(columns(r));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::by_kind;

    #[test]
    fn durations_print_as_kubectl_does() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (700, "11m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
        ] {
            assert_eq!(human_duration(s), want);
        }
    }

    #[test]
    fn pod_rows() {
        let r = by_kind("", "Pod").unwrap();
        let p = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let c = cells(r, &p, 0);
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], 3);
        assert_eq!(c[5], "10.0.0.5");
        assert_eq!(c[6], "n1");
        assert_eq!(columns(r).len(), c.len());
    }
}
