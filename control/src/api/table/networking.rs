//! Table columns and cells, as kubectl prints them, for the
//! `networking.k8s.io` and `policy` kinds: Ingress, IngressClass,
//! NetworkPolicy, PodDisruptionBudget.

use serde_json::{Value, json};

use super::{AGE, Col, NAME, Resource, Table, age, or_none, selector_string, st};

pub(crate) const INGRESS: Table = Table {
    columns: &[
        NAME,
        Col::new("Class", "string", 0),
        Col::new("Hosts", "string", 0),
        Col::new("Address", "string", 0),
        Col::new("Ports", "string", 0),
        AGE,
    ],
    cells: ingress_row,
};

pub(crate) const INGRESS_CLASS: Table = Table {
    columns: &[
        NAME,
        Col::new("Controller", "string", 0),
        Col::new("Parameters", "string", 0),
        AGE,
    ],
    cells: ingress_class_row,
};

pub(crate) const NETWORK_POLICY: Table = Table {
    columns: &[NAME, Col::new("Pod-Selector", "string", 0), AGE],
    cells: network_policy_row,
};

pub(crate) const POD_DISRUPTION_BUDGET: Table = Table {
    columns: &[
        NAME,
        Col::new("Min Available", "string", 0),
        Col::new("Max Unavailable", "string", 0),
        Col::new("Allowed Disruptions", "integer", 0),
        AGE,
    ],
    cells: pod_disruption_budget_row,
};

fn ingress_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
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

fn ingress_class_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    let params = o.pointer("/spec/parameters").map_or_else(
        || "<none>".to_owned(),
        |p| format!("{}/{}", st(p, "/kind"), st(p, "/name")),
    );
    vec![name, json!(st(o, "/spec/controller")), json!(params), a]
}

fn network_policy_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    let sel = selector_string(o.pointer("/spec/podSelector"));
    let sel = if sel == "<none>" {
        "<none>".to_owned()
    } else {
        sel
    };
    vec![name, json!(sel), a]
}

fn pod_disruption_budget_row(_r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(st(o, "/metadata/name"));
    let a = json!(age(o, now));
    vec![
        name,
        json!(int_or_string(o, "/spec/minAvailable")),
        json!(int_or_string(o, "/spec/maxUnavailable")),
        json!(
            o.pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        ),
        a,
    ]
}

/// An int-or-string field, `N/A` when unset.
fn int_or_string(o: &Value, ptr: &str) -> String {
    match o.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".into(),
    }
}
