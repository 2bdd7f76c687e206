//! Table columns and cells, as kubectl prints them, for the policy and
//! cluster kinds: ResourceQuota, PriorityClass, RuntimeClass, StorageClass,
//! CertificateSigningRequest, APIService
//! (LimitRange prints the default NAME / CREATED AT).

use serde_json::{Value, json};

use super::{AGE, Col, NAME, Resource, Table, age, st};

pub(crate) const RESOURCE_QUOTA: Table = Table {
    columns: &[
        NAME,
        AGE,
        Col::new("Request", "string", 0),
        Col::new("Limit", "string", 0),
    ],
    cells: resource_quota_row,
};

pub(crate) const PRIORITY_CLASS: Table = Table {
    columns: &[
        NAME,
        Col::new("Value", "integer", 0),
        Col::new("Global-Default", "boolean", 0),
        AGE,
        Col::new("PreemptionPolicy", "string", 0),
    ],
    cells: priority_class_row,
};

pub(crate) const RUNTIME_CLASS: Table = Table {
    columns: &[NAME, Col::new("Handler", "string", 0), AGE],
    cells: runtime_class_row,
};

pub(crate) const API_SERVICE: Table = Table {
    columns: &[
        NAME,
        Col::new("Service", "string", 0),
        Col::new("Available", "string", 0),
        AGE,
    ],
    cells: api_service_row,
};

pub(crate) const CERTIFICATE_SIGNING_REQUEST: Table = Table {
    columns: &[
        NAME,
        AGE,
        Col::new("SignerName", "string", 0),
        Col::new("Requestor", "string", 0),
        Col::new("RequestedDuration", "string", 0),
        Col::new("Condition", "string", 0),
    ],
    cells: certificate_signing_request_row,
};

pub(crate) const STORAGE_CLASS: Table = Table {
    columns: &[
        NAME,
        Col::new("Provisioner", "string", 0),
        Col::new("ReclaimPolicy", "string", 0),
        Col::new("VolumeBindingMode", "string", 0),
        Col::new("AllowVolumeExpansion", "boolean", 0),
        AGE,
    ],
    cells: storage_class_row,
};

fn resource_quota_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    let (req, lim) = quota_columns(o);
    vec![name, a, json!(req), json!(lim)]
}

fn priority_class_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    vec![
        name,
        json!(o.get("value").and_then(Value::as_i64).unwrap_or(0)),
        json!(
            o.get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        ),
        a,
        json!(
            o.get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority")
        ),
    ]
}

fn runtime_class_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    vec![name, json!(st(o, "/handler")), a]
}

fn api_service_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    let service = match o.pointer("/spec/service") {
        Some(s) if s.is_object() => {
            format!("{}/{}", st(s, "/namespace"), st(s, "/name"))
        }
        _ => "Local".to_string(),
    };
    let available = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
        .map_or_else(
            || "Unknown".to_string(),
            |c| match c["status"].as_str() {
                Some("True") => "True".to_string(),
                other => format!(
                    "{} ({})",
                    other.unwrap_or("Unknown"),
                    c["reason"].as_str().unwrap_or_default()
                ),
            },
        );
    vec![name, json!(service), json!(available), a]
}

fn certificate_signing_request_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    vec![
        name,
        a,
        json!(st(o, "/spec/signerName")),
        json!(st(o, "/spec/username")),
        json!(
            o.pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map_or_else(|| "<none>".to_string(), super::human_duration)
        ),
        json!(csr_condition(o)),
    ]
}

fn storage_class_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    let default = o
        .pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
        .and_then(Value::as_str)
        == Some("true");
    let shown = if default {
        json!(format!("{} (default)", st(o, "/metadata/name")))
    } else {
        name
    };
    vec![
        shown,
        json!(st(o, "/provisioner")),
        json!(
            o.get("reclaimPolicy")
                .and_then(Value::as_str)
                .unwrap_or("Delete")
        ),
        json!(
            o.get("volumeBindingMode")
                .and_then(Value::as_str)
                .unwrap_or("Immediate")
        ),
        json!(
            o.get("allowVolumeExpansion")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        ),
        a,
    ]
}

/// A quota's `used/hard` pairs, sorted by resource, split into the
/// `limits.*` ones and the rest (kubectl's REQUEST and LIMIT).
fn quota_columns(o: &Value) -> (String, String) {
    let hard = o.pointer("/status/hard").or(o.pointer("/spec/hard"));
    let mut keys: Vec<&String> = hard
        .and_then(Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    keys.sort();
    let (mut req, mut lim) = (Vec::new(), Vec::new());
    for k in keys {
        let h = hard
            .and_then(|h| h.get(k))
            .and_then(Value::as_str)
            .unwrap_or("0");
        let u = o
            .pointer("/status/used")
            .and_then(|u| u.get(k))
            .and_then(Value::as_str)
            .unwrap_or("0");
        let cell = format!("{k}: {u}/{h}");
        if k.starts_with("limits.") {
            lim.push(cell);
        } else {
            req.push(cell);
        }
    }
    (req.join(", "), lim.join(", "))
}

/// A request's CONDITION as kubectl prints it: `Pending`, `Approved` or
/// `Denied`, then `,Failed` and `,Issued` where they apply.
fn csr_condition(o: &Value) -> String {
    let has = |t: &str| {
        o.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == t))
    };
    let mut s = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        s.push_str(",Failed");
    }
    if o.pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
    {
        s.push_str(",Issued");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_cells_split_requests_and_limits() {
        let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {}},
            "status": {"hard": {"pods": "10", "requests.cpu": "1", "limits.memory": "1Gi"},
                       "used": {"pods": "2", "limits.memory": "128Mi"}}});
        assert_eq!(
            quota_columns(&q),
            (
                "pods: 2/10, requests.cpu: 0/1".to_owned(),
                "limits.memory: 128Mi/1Gi".to_owned()
            )
        );
    }
}
