//! Conversion between the served versions of a kind. Objects are stored in
//! one version (the first one [`resources::RESOURCES`] lists for a group
//! and plural); a request at another version has its objects converted
//! when they leave the store ([`to_served`]) and when they enter it
//! ([`to_storage`]), so handlers, validation and patches all work in the
//! version the client asked for.
//!
//! Served with conversion: `events.k8s.io/v1` Events (stored as core
//! Events, the same objects: `regarding` is `involvedObject`, `note` is
//! `message`, the legacy fields `deprecated*`), and `autoscaling/v1`
//! HorizontalPodAutoscalers
//! (stored as `autoscaling/v2`). As kube-apiserver does, what v1 cannot
//! express (metrics other than the CPU utilisation target, `behavior`,
//! current metrics and conditions) rides in `autoscaling.alpha.kubernetes.io/*`
//! annotations of the v1 object, so a v1 read-modify-write loses nothing.
//!
//! Custom kinds convert in [`super::crd::conversion`] (a webhook, or only
//! `apiVersion` for the `None` strategy).
//!
//! [`resources::RESOURCES`]: super::resources::RESOURCES

use serde_json::{Map, Value, json};

use super::resources::{Resource, storage_version};

/// v2 metrics other than the CPU utilisation target, as JSON.
pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// v2 `spec.behavior`, as JSON.
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";
/// v2 `status.currentMetrics` other than CPU utilisation, as JSON.
pub const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// v2 `status.conditions`, as JSON.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";

fn api_version(obj: &Value) -> &str {
    obj.get("apiVersion").and_then(Value::as_str).unwrap_or("")
}

/// A stored object as the client of `r`'s version sees it.
pub fn to_served(r: &Resource, obj: Value) -> Value {
    let want = r.api_version();
    if api_version(&obj) == want {
        return obj;
    }
    if r.custom {
        return none_conversion(obj, &want);
    }
    match (r.kind, api_version(&obj), want.as_str()) {
        ("HorizontalPodAutoscaler", "autoscaling/v2", "autoscaling/v1") => hpa_v2_to_v1(&obj),
        ("Event", "v1", "events.k8s.io/v1") => rename(obj, "events.k8s.io/v1", EVENT_FIELDS, true),
        _ => obj,
    }
}

/// Whether an object of `r`'s version (a built-in kind) is stored as it
/// is: no conversion on the way in or out.
pub fn stored_as_is(r: &Resource, obj: &Value) -> bool {
    let served = r.api_version();
    !r.custom
        && api_version(obj) == served
        && storage_version(r).is_none_or(|s| s.api_version() == served)
}

/// An object of `r`'s version as stored.
pub fn to_storage(r: &Resource, obj: Value) -> Value {
    let Some(storage) = storage_version(r) else {
        return obj;
    };
    let want = storage.api_version();
    if api_version(&obj) == want {
        return obj;
    }
    if r.custom {
        return none_conversion(obj, &want);
    }
    match (r.kind, api_version(&obj), want.as_str()) {
        ("HorizontalPodAutoscaler", "autoscaling/v1", "autoscaling/v2") => hpa_v1_to_v2(obj),
        ("Event", "events.k8s.io/v1", "v1") => rename(obj, "v1", EVENT_FIELDS, false),
        _ => obj,
    }
}

/// A CRD's `None` conversion strategy: only `apiVersion` changes.
fn none_conversion(mut obj: Value, api_version: &str) -> Value {
    obj["apiVersion"] = json!(api_version);
    obj
}

/// Core Event fields and their `events.k8s.io/v1` names (kube-apiserver's
/// `Convert_v1_Event_To_core_Event` and back); the rest share their names.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// `obj` at `api_version` with the top-level fields of `pairs` renamed
/// (left to right when `forward`, else right to left).
fn rename(mut obj: Value, api_version: &str, pairs: &[(&str, &str)], forward: bool) -> Value {
    obj["apiVersion"] = json!(api_version);
    if let Some(m) = obj.as_object_mut() {
        for (a, b) in pairs {
            let (from, to) = if forward { (a, b) } else { (b, a) };
            match m.remove(*from) {
                Some(v) if !v.is_null() => {
                    m.insert((*to).to_owned(), v);
                }
                _ => {}
            }
        }
    }
    obj
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

fn is_cpu_current(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["current"]["averageUtilization"].is_number()
}

fn annotations(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"]
        .as_object_mut()
        .expect("made an object above")
}

fn drop_empty_annotations(obj: &mut Value) {
    if obj
        .pointer("/metadata/annotations")
        .is_none_or(|a| a.as_object().is_none_or(Map::is_empty))
        && let Some(m) = obj["metadata"].as_object_mut()
    {
        m.remove("annotations");
    }
}

fn copy_fields(from: &Value, to: &mut Map<String, Value>, fields: &[&str]) {
    for f in fields {
        if let Some(v) = from.get(*f).filter(|v| !v.is_null()) {
            to.insert((*f).to_owned(), v.clone());
        }
    }
}

fn hpa_v2_to_v1(v2: &Value) -> Value {
    let mut out = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": v2["metadata"].clone(),
    });
    let spec = &v2["spec"];
    let mut s = Map::new();
    copy_fields(
        spec,
        &mut s,
        &["scaleTargetRef", "minReplicas", "maxReplicas"],
    );
    let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();
    let (cpu, rest): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(is_cpu_utilization);
    if let Some(u) = cpu
        .first()
        .and_then(|m| m["resource"]["target"]["averageUtilization"].as_i64())
    {
        s.insert("targetCPUUtilizationPercentage".into(), json!(u));
    }
    out["spec"] = Value::Object(s);
    let notes = annotations(&mut out);
    for k in [
        METRICS_ANNOTATION,
        BEHAVIOR_ANNOTATION,
        CURRENT_METRICS_ANNOTATION,
        CONDITIONS_ANNOTATION,
    ] {
        notes.remove(k);
    }
    if !rest.is_empty() {
        notes.insert(
            METRICS_ANNOTATION.into(),
            json!(Value::Array(rest).to_string()),
        );
    }
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        notes.insert(BEHAVIOR_ANNOTATION.into(), json!(b.to_string()));
    }
    if let Some(status) = v2.get("status").filter(|s| s.is_object()) {
        let mut st = Map::new();
        copy_fields(
            status,
            &mut st,
            &[
                "observedGeneration",
                "lastScaleTime",
                "currentReplicas",
                "desiredReplicas",
            ],
        );
        st.entry("currentReplicas").or_insert(json!(0));
        st.entry("desiredReplicas").or_insert(json!(0));
        let current = status["currentMetrics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let (cpu, rest): (Vec<Value>, Vec<Value>) = current.into_iter().partition(is_cpu_current);
        if let Some(u) = cpu
            .first()
            .and_then(|m| m["resource"]["current"]["averageUtilization"].as_i64())
        {
            st.insert("currentCPUUtilizationPercentage".into(), json!(u));
        }
        let notes = annotations(&mut out);
        if !rest.is_empty() {
            notes.insert(
                CURRENT_METRICS_ANNOTATION.into(),
                json!(Value::Array(rest).to_string()),
            );
        }
        if let Some(c) = status["conditions"].as_array().filter(|c| !c.is_empty()) {
            notes.insert(
                CONDITIONS_ANNOTATION.into(),
                json!(Value::Array(c.clone()).to_string()),
            );
        }
        out["status"] = Value::Object(st);
    }
    drop_empty_annotations(&mut out);
    out
}

/// The JSON array an annotation holds, removed from the object.
fn take_json_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let raw = obj
        .pointer_mut("/metadata/annotations")?
        .as_object_mut()?
        .remove(key)?;
    serde_json::from_str(raw.as_str()?).ok()
}

fn hpa_v1_to_v2(mut v1: Value) -> Value {
    let extra_metrics = take_json_annotation(&mut v1, METRICS_ANNOTATION);
    let behavior = take_json_annotation(&mut v1, BEHAVIOR_ANNOTATION);
    let extra_current = take_json_annotation(&mut v1, CURRENT_METRICS_ANNOTATION);
    let conditions = take_json_annotation(&mut v1, CONDITIONS_ANNOTATION);
    drop_empty_annotations(&mut v1);
    let mut out = json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": v1["metadata"].clone(),
    });
    let spec = &v1["spec"];
    let mut s = Map::new();
    copy_fields(
        spec,
        &mut s,
        &["scaleTargetRef", "minReplicas", "maxReplicas"],
    );
    let mut metrics = Vec::new();
    if let Some(u) = spec["targetCPUUtilizationPercentage"].as_i64() {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": u}}}));
    }
    if let Some(Value::Array(extra)) = extra_metrics {
        metrics.extend(extra.into_iter().filter(|m| !is_cpu_utilization(m)));
    }
    if !metrics.is_empty() {
        s.insert("metrics".into(), Value::Array(metrics));
    }
    if let Some(b) = behavior.filter(Value::is_object) {
        s.insert("behavior".into(), b);
    }
    out["spec"] = Value::Object(s);
    super::object::default_hpa_v2(&mut out);
    if let Some(status) = v1.get("status").filter(|s| s.is_object()) {
        let mut st = Map::new();
        copy_fields(
            status,
            &mut st,
            &[
                "observedGeneration",
                "lastScaleTime",
                "currentReplicas",
                "desiredReplicas",
            ],
        );
        let mut current = Vec::new();
        if let Some(u) = status["currentCPUUtilizationPercentage"].as_i64() {
            current.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": u}}}));
        }
        if let Some(Value::Array(extra)) = extra_current {
            current.extend(extra.into_iter().filter(|m| !is_cpu_current(m)));
        }
        if !current.is_empty() {
            st.insert("currentMetrics".into(), Value::Array(current));
        }
        if let Some(c) = conditions.filter(Value::is_array) {
            st.insert("conditions".into(), c);
        }
        out["status"] = Value::Object(st);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;

    fn v1() -> &'static Resource {
        find("autoscaling", "v1", "horizontalpodautoscalers").unwrap()
    }

    fn v2() -> &'static Resource {
        find("autoscaling", "v2", "horizontalpodautoscalers").unwrap()
    }

    #[test]
    fn events_are_core_events_under_new_names() {
        let new = find("events.k8s.io", "v1", "events").unwrap();
        let core = find("", "v1", "events").unwrap();
        assert!(std::ptr::eq(storage_version(new).unwrap(), core));
        assert_eq!(new.storage_group(), "core");
        let stored = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hi", "reason": "Started",
            "source": {"component": "kubelet"}, "count": 2, "type": "Normal",
            "reportingComponent": "kubelet", "reportingInstance": "n1",
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": null});
        let served = to_served(new, stored.clone());
        assert_eq!(served["apiVersion"], "events.k8s.io/v1");
        assert_eq!(served["regarding"]["name"], "p");
        assert_eq!(served["note"], "hi");
        assert_eq!(served["deprecatedCount"], 2);
        assert_eq!(served["reportingController"], "kubelet");
        assert_eq!(served["reason"], "Started");
        assert!(served.get("message").is_none() && served.get("deprecatedLastTimestamp").is_none());
        let mut back = stored;
        back.as_object_mut().unwrap().remove("lastTimestamp");
        assert_eq!(to_storage(new, served), back);
        // Core clients see core Events unchanged.
        assert_eq!(to_served(core, back.clone()), back);
    }

    fn stored() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "annotations": {"a": "b"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
            },
            "status": {
                "currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "current": {"averageUtilization": 75, "averageValue": "75m"}}},
                ],
                "conditions": [{"type": "AbleToScale", "status": "True"}],
            }
        })
    }

    #[test]
    fn the_storage_version_is_served_unchanged() {
        assert_eq!(to_served(v2(), stored()), stored());
        assert_eq!(to_storage(v2(), stored()), stored());
    }

    #[test]
    fn v1_shows_the_cpu_target_and_carries_the_rest_in_annotations() {
        let out = to_served(v1(), stored());
        assert_eq!(out["apiVersion"], "autoscaling/v1");
        assert_eq!(out["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(out["spec"]["maxReplicas"], 5);
        assert!(out["spec"].get("metrics").is_none());
        assert_eq!(out["status"]["currentCPUUtilizationPercentage"], 75);
        assert_eq!(out["status"]["desiredReplicas"], 3);
        let notes = &out["metadata"]["annotations"];
        assert_eq!(notes["a"], "b");
        let extra: Value =
            serde_json::from_str(notes[METRICS_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(extra[0]["resource"]["name"], "memory");
        assert!(notes[BEHAVIOR_ANNOTATION].is_string());
        assert!(notes[CONDITIONS_ANNOTATION].is_string());
    }

    #[test]
    fn a_v1_round_trip_loses_nothing() {
        let back = to_storage(v1(), to_served(v1(), stored()));
        let want = stored();
        assert_eq!(back["spec"]["metrics"], want["spec"]["metrics"]);
        assert_eq!(
            back["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            0
        );
        assert_eq!(back["metadata"]["annotations"], json!({"a": "b"}));
        assert_eq!(back["status"]["conditions"], want["status"]["conditions"]);
        assert_eq!(
            back["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            75
        );
    }

    #[test]
    fn a_v1_object_without_a_target_gets_the_default_cpu_target_in_v2() {
        let v1_obj = json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3},
        });
        let out = to_storage(v1(), v1_obj);
        assert_eq!(out["apiVersion"], "autoscaling/v2");
        assert_eq!(out["spec"]["minReplicas"], 1);
        assert_eq!(
            out["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert!(out["metadata"].get("annotations").is_none());
        assert_eq!(
            to_served(v1(), out)["spec"]["targetCPUUtilizationPercentage"],
            80
        );
    }
}
