//! Table columns and cells, as kubectl prints them, for the policy and
//! cluster kinds: ResourceQuota, PriorityClass, RuntimeClass, StorageClass,
//! CertificateSigningRequest, APIService
//! (LimitRange prints the default NAME / CREATED AT).

use serde_json::{Value, json};

use super::{age, col, st};

/// The columns of `kind`, if it is one of these.
pub(super) fn columns(kind: &str, name: Value, age_col: Value) -> Option<Vec<Value>> {
    let c = |n: &str| col(n, "string", 0, "");
    Some(match kind {
        "ResourceQuota" => vec![name, age_col, c("Request"), c("Limit")],
        "PriorityClass" => vec![
            name,
            col("Value", "integer", 0, ""),
            col("Global-Default", "boolean", 0, ""),
            age_col,
            c("PreemptionPolicy"),
        ],
        "RuntimeClass" => vec![name, c("Handler"), age_col],
        "APIService" => vec![name, c("Service"), c("Available"), age_col],
        "CertificateSigningRequest" => vec![
            name,
            age_col,
            c("SignerName"),
            c("Requestor"),
            c("RequestedDuration"),
            c("Condition"),
        ],
        "StorageClass" => vec![
            name,
            c("Provisioner"),
            c("ReclaimPolicy"),
            c("VolumeBindingMode"),
            col("AllowVolumeExpansion", "boolean", 0, ""),
            age_col,
        ],
        _ => return None,
    })
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

/// The cells of an object of `kind`, if it is one of these.
pub(super) fn cells(kind: &str, o: &Value, now: i64) -> Option<Vec<Value>> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    Some(match kind {
        "ResourceQuota" => {
            let (req, lim) = quota_columns(o);
            vec![name, a, json!(req), json!(lim)]
        }
        "PriorityClass" => vec![
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
        ],
        "RuntimeClass" => vec![name, json!(st(o, "/handler")), a],
        "APIService" => {
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
        "CertificateSigningRequest" => vec![
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
        ],
        "StorageClass" => {
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
        _ => return None,
    })
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
