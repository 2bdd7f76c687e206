//! Table columns and cells, as kubectl prints them, for the core kinds:
//! Service, Node, Namespace, ConfigMap, Secret, ServiceAccount, Endpoints,
//! Event, PersistentVolumeClaim, PersistentVolume, Lease, EndpointSlice.

use serde_json::{Value, json};

use super::*;

pub(crate) const SERVICE: Table = Table {
    columns: &[
        NAME,
        Col::new("Type", "string", 0),
        Col::new("Cluster-IP", "string", 0),
        Col::new("External-IP", "string", 0),
        Col::new("Port(s)", "string", 0),
        AGE,
        Col::new("Selector", "string", 1),
    ],
    cells: service_row,
};

pub(crate) const NODE: Table = Table {
    columns: &[
        NAME,
        Col::new("Status", "string", 0),
        Col::new("Roles", "string", 0),
        AGE,
        Col::new("Version", "string", 0),
        Col::new("Internal-IP", "string", 1),
        Col::new("External-IP", "string", 1),
        Col::new("OS-Image", "string", 1),
        Col::new("Kernel-Version", "string", 1),
        Col::new("Container-Runtime", "string", 1),
    ],
    cells: node_row,
};

pub(crate) const NAMESPACE: Table = Table {
    columns: &[NAME, Col::new("Status", "string", 0), AGE],
    cells: namespace_row,
};

pub(crate) const CONFIG_MAP: Table = Table {
    columns: &[NAME, Col::new("Data", "integer", 0), AGE],
    cells: config_map_row,
};

pub(crate) const SECRET: Table = Table {
    columns: &[
        NAME,
        Col::new("Type", "string", 0),
        Col::new("Data", "integer", 0),
        AGE,
    ],
    cells: secret_row,
};

pub(crate) const SERVICE_ACCOUNT: Table = Table {
    columns: &[NAME, Col::new("Secrets", "integer", 0), AGE],
    cells: service_account_row,
};

pub(crate) const ENDPOINTS: Table = Table {
    columns: &[NAME, Col::new("Endpoints", "string", 0), AGE],
    cells: endpoints_row,
};

pub(crate) const EVENT: Table = Table {
    columns: &[
        Col::new("Last Seen", "string", 0),
        Col::new("Type", "string", 0),
        Col::new("Reason", "string", 0),
        Col::new("Object", "string", 0),
        Col::new("Message", "string", 0),
    ],
    cells: event_row,
};

pub(crate) const PERSISTENT_VOLUME_CLAIM: Table = Table {
    columns: &[
        NAME,
        Col::new("Status", "string", 0),
        Col::new("Volume", "string", 0),
        Col::new("Capacity", "string", 0),
        Col::new("Access Modes", "string", 0),
        Col::new("StorageClass", "string", 0),
        Col::new("VolumeAttributesClass", "string", 0),
        AGE,
        Col::new("VolumeMode", "string", 1),
    ],
    cells: persistent_volume_claim_row,
};

pub(crate) const PERSISTENT_VOLUME: Table = Table {
    columns: &[
        NAME,
        Col::new("Capacity", "string", 0),
        Col::new("Access Modes", "string", 0),
        Col::new("Reclaim Policy", "string", 0),
        Col::new("Status", "string", 0),
        Col::new("Claim", "string", 0),
        Col::new("StorageClass", "string", 0),
        Col::new("VolumeAttributesClass", "string", 0),
        Col::new("Reason", "string", 0),
        AGE,
        Col::new("VolumeMode", "string", 1),
    ],
    cells: persistent_volume_row,
};

pub(crate) const LEASE: Table = Table {
    columns: &[NAME, Col::new("Holder", "string", 0), AGE],
    cells: lease_row,
};

pub(crate) const ENDPOINT_SLICE: Table = Table {
    columns: &[
        NAME,
        Col::new("AddressType", "string", 0),
        Col::new("Ports", "string", 0),
        Col::new("Endpoints", "string", 0),
        AGE,
    ],
    cells: endpoint_slice_row,
};

fn service_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    service_cells(o, name, a, now)
}

fn node_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    node_cells(o, name, a, now)
}

fn namespace_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    vec![name, json!(st(o, "/status/phase")), a]
}

fn config_map_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    let n = o
        .get("data")
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len)
        + o.get("binaryData")
            .and_then(Value::as_object)
            .map_or(0, serde_json::Map::len);
    vec![name, json!(n), a]
}

fn secret_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    vec![
        name,
        json!(st(o, "/type")),
        json!(
            o.get("data")
                .and_then(Value::as_object)
                .map_or(0, serde_json::Map::len)
        ),
        a,
    ]
}

fn service_account_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    vec![
        name,
        json!(
            o.get("secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        ),
        a,
    ]
}

fn endpoints_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    endpoints_cells(o, name, a, now)
}

fn event_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    event_cells(o, name, a, now)
}

fn persistent_volume_claim_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    vec![
        name,
        json!(st(o, "/status/phase")),
        json!(st(o, "/spec/volumeName")),
        json!(st(o, "/status/capacity/storage")),
        json!(access_modes(o.pointer("/status/accessModes"))),
        json!(or_none(st(o, "/spec/storageClassName"))),
        json!("<unset>"),
        a,
        json!(st(o, "/spec/volumeMode")),
    ]
}

fn persistent_volume_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    persistent_volume_cells(o, name, a, now)
}

fn lease_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    vec![name, json!(st(o, "/spec/holderIdentity")), a]
}

fn endpoint_slice_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    endpoint_slice_cells(o, name, a, now)
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
