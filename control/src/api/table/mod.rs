//! `Table` responses (meta.k8s.io/v1), so that `kubectl get` prints the
//! columns Kubernetes prints. Columns with priority 1 show with `-o wide`.

pub(crate) mod cluster;
pub(crate) mod core_v1;
pub(crate) mod networking;
pub(crate) mod workloads;

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

/// One column of a kind's table: its title, its OpenAPI type, and its
/// priority (1: shown with `-o wide` only).
#[derive(Clone, Copy, Debug)]
pub struct Col {
    pub name: &'static str,
    pub ty: &'static str,
    pub priority: i64,
}

impl Col {
    pub const fn new(name: &'static str, ty: &'static str, priority: i64) -> Self {
        Col { name, ty, priority }
    }
}

/// The Name and Age columns, which carry Kubernetes' descriptions.
pub const NAME: Col = Col::new("Name", "string", 0);
pub const AGE: Col = Col::new("Age", "string", 0);

/// The cells of one object's row, one per column.
pub type Cells = fn(&Resource, &Value, i64) -> Vec<Value>;

/// A kind's table as `kubectl get` prints it: declared per kind
/// ([`super::kinds::Rules::table`]).
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub columns: &'static [Col],
    pub cells: Cells,
}

/// The column definitions for objects of `r`.
pub fn columns(r: &Resource) -> Vec<Value> {
    if r.custom {
        let v = crate::api::crd::of(r);
        return crate::api::crd::columns::definitions(v.as_ref().map_or(&[][..], |v| &v.columns));
    }
    let Some(table) = super::kinds::of(r).and_then(|k| k.table) else {
        return vec![
            col("Name", "string", 0, NAME_DESCRIPTION),
            col("Created At", "date", 0, ""),
        ];
    };
    table
        .columns
        .iter()
        .map(|c| {
            let description = match c.name {
                "Name" => NAME_DESCRIPTION,
                "Age" => AGE_DESCRIPTION,
                _ => "",
            };
            col(c.name, c.ty, c.priority, description)
        })
        .collect()
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace.";
const AGE_DESCRIPTION: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";

/// One row of cells for `o`, of `r`.
pub fn cells(r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    if r.custom {
        let v = crate::api::crd::of(r);
        return crate::api::crd::columns::cells(v.as_ref().map_or(&[][..], |v| &v.columns), o, now);
    }
    match super::kinds::of(r).and_then(|k| k.table) {
        Some(table) => (table.cells)(r, o, now),
        None => vec![
            json!(st(o, "/metadata/name")),
            json!(st(o, "/metadata/creationTimestamp")),
        ],
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
    fn every_kind_has_as_many_cells_as_columns() {
        let o = json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        // The kinds kubectl prints more of than a name and a creation time,
        // at every version they are served at.
        let tabled = [
            "Pod",
            "Service",
            "Node",
            "Deployment",
            "ReplicaSet",
            "ReplicationController",
            "StatefulSet",
            "DaemonSet",
            "Job",
            "CronJob",
            "HorizontalPodAutoscaler",
            "Namespace",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "Endpoints",
            "Event",
            "PersistentVolume",
            "PersistentVolumeClaim",
            "Lease",
            "EndpointSlice",
            "Ingress",
            "IngressClass",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "ResourceQuota",
            "PriorityClass",
            "RuntimeClass",
            "APIService",
            "CertificateSigningRequest",
            "StorageClass",
        ];
        for r in crate::api::resources::RESOURCES {
            let (c, v) = (columns(r), cells(r, &o, 0));
            assert_eq!(c.len(), v.len(), "{}", r.kind);
            let default = c[1]["name"] == "Created At";
            assert_eq!(
                default,
                !tabled.contains(&r.kind),
                "{}/{} {}",
                r.group,
                r.version,
                r.kind
            );
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
