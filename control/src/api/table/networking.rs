//! Table columns and cells, as kubectl prints them, for the
//! `networking.k8s.io` and `policy` kinds: Ingress, IngressClass,
//! NetworkPolicy, PodDisruptionBudget.

use serde_json::{Value, json};

use super::{age, col, or_none, selector_string, st};

/// The columns of `kind`, if it is one of these.
pub(super) fn columns(kind: &str, name: Value, age_col: Value) -> Option<Vec<Value>> {
    let c = |n: &str| col(n, "string", 0, "");
    Some(match kind {
        "Ingress" => vec![
            name,
            c("Class"),
            c("Hosts"),
            c("Address"),
            c("Ports"),
            age_col,
        ],
        "IngressClass" => vec![name, c("Controller"), c("Parameters"), age_col],
        "NetworkPolicy" => vec![name, c("Pod-Selector"), age_col],
        "PodDisruptionBudget" => vec![
            name,
            c("Min Available"),
            c("Max Unavailable"),
            col("Allowed Disruptions", "integer", 0, ""),
            age_col,
        ],
        _ => return None,
    })
}

/// An int-or-string field, `N/A` when unset.
fn int_or_string(o: &Value, ptr: &str) -> String {
    match o.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".into(),
    }
}

/// The cells of an object of `kind`, if it is one of these.
pub(super) fn cells(kind: &str, o: &Value, now: i64) -> Option<Vec<Value>> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    Some(match kind {
        "Ingress" => {
            let rules = o.pointer("/spec/rules").and_then(Value::as_array);
            let hosts: Vec<&str> = rules
                .into_iter()
                .flatten()
                .map(|r| r.get("host").and_then(Value::as_str).unwrap_or("*"))
                .collect();
            let addresses: Vec<&str> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| i.get("ip").or(i.get("hostname")).and_then(Value::as_str))
                .collect();
            let tls = o
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty());
            vec![
                name,
                json!(or_none(st(o, "/spec/ingressClassName"))),
                json!(if hosts.is_empty() {
                    "*".to_owned()
                } else {
                    hosts.join(",")
                }),
                json!(addresses.join(",")),
                json!(if tls { "80, 443" } else { "80" }),
                a,
            ]
        }
        "IngressClass" => {
            let params = o.pointer("/spec/parameters").map_or_else(
                || "<none>".to_owned(),
                |p| format!("{}/{}", st(p, "/kind"), st(p, "/name")),
            );
            vec![name, json!(st(o, "/spec/controller")), json!(params), a]
        }
        "NetworkPolicy" => {
            let sel = selector_string(o.pointer("/spec/podSelector"));
            let sel = if sel == "<none>" {
                "<none>".to_owned()
            } else {
                sel
            };
            vec![name, json!(sel), a]
        }
        "PodDisruptionBudget" => vec![
            name,
            json!(int_or_string(o, "/spec/minAvailable")),
            json!(int_or_string(o, "/spec/maxUnavailable")),
            json!(
                o.pointer("/status/disruptionsAllowed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            ),
            a,
        ],
        _ => return None,
    })
}
