//! Table columns and cells, as kubectl prints them, for the core kinds:
//! Service, Node, Namespace, ConfigMap, Secret, ServiceAccount, Endpoints,
//! Event, PersistentVolumeClaim, PersistentVolume, Lease, EndpointSlice.

use serde_json::{Value, json};

use super::*;

/// The columns of `kind`, if it is one of these.
pub(super) fn columns(kind: &str, name: Value, age: Value) -> Option<Vec<Value>> {
    let c = |n: &str, p: i64| col(n, "string", p, "");
    let i = |n: &str, p: i64| col(n, "integer", p, "");
    Some(match kind {
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
        _ => return None,
    })
}

/// The cells of an object of `kind`, if it is one of these.
pub(super) fn cells(kind: &str, o: &Value, now: i64) -> Option<Vec<Value>> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    Some(match kind {
        "Service" => service_cells(o, name, a, now),
        "Node" => node_cells(o, name, a, now),
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
        "Endpoints" => endpoints_cells(o, name, a, now),
        "Event" => event_cells(o, name, a, now),
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
        "PersistentVolume" => persistent_volume_cells(o, name, a, now),
        "Lease" => vec![name, json!(st(o, "/spec/holderIdentity")), a],
        "EndpointSlice" => endpoint_slice_cells(o, name, a, now),
        _ => return None,
    })
}

/// The cells of a Service.
fn service_cells(o: &Value, name: Value, a: Value, _now: i64) -> Vec<Value> {
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

/// The cells of a Node.
fn node_cells(o: &Value, name: Value, a: Value, _now: i64) -> Vec<Value> {
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

/// The cells of a Endpoints.
fn endpoints_cells(o: &Value, name: Value, a: Value, _now: i64) -> Vec<Value> {
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

/// The cells of a Event.
fn event_cells(o: &Value, _name: Value, _a: Value, now: i64) -> Vec<Value> {
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

/// The cells of a PersistentVolume.
fn persistent_volume_cells(o: &Value, name: Value, a: Value, _now: i64) -> Vec<Value> {
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

/// The cells of a EndpointSlice.
fn endpoint_slice_cells(o: &Value, name: Value, a: Value, _now: i64) -> Vec<Value> {
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
