//! LimitRanges and the LimitRanger admission plugin, as kube-apiserver has
//! them. A LimitRange item of type `Container` is defaulted (`default`
//! from `max`, `defaultRequest` from `default`, then from `min`) and must
//! keep min ≤ defaultRequest ≤ default ≤ max and a ratio ≥ 1. A new pod's
//! containers get the namespace's default requests and limits where they
//! state none (noted in the `kubernetes.io/limit-ranger` annotation), then
//! each container, the pod as a whole (type `Pod`) and a new claim (type
//! `PersistentVolumeClaim`) must fit the min, max and maxLimitRequestRatio;
//! a pod that does not is refused with 403 and upstream's messages, all of
//! them in one `[…]` list. Pod updates are not checked, as upstream's
//! plugin does not: containers' resources cannot change in place.

use std::collections::BTreeMap;

use rudder_k8s::quantity::{format_milli, value_milli as milli};
use serde_json::{Map, Value, json};

use super::{
    ApiState,
    handlers::{Target, list_objects},
    resources::{Resource, by_kind},
    status::{ApiError, Cause},
};

const TYPES: [&str; 3] = ["Pod", "Container", "PersistentVolumeClaim"];
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// SetDefaults_LimitRangeItem on every item of a LimitRange.
pub fn default_limit_range(lr: &mut Value) {
    let Some(items) = lr.pointer_mut("/spec/limits").and_then(Value::as_array_mut) else {
        return;
    };
    for item in items {
        let Some(m) = item.as_object_mut() else {
            continue;
        };
        if m.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let list = |m: &Map<String, Value>, k: &str| {
            m.get(k)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let (max, min) = (list(m, "max"), list(m, "min"));
        let mut default = list(m, "default");
        for (k, v) in &max {
            default.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let mut request = list(m, "defaultRequest");
        for (k, v) in default.iter().chain(min.iter()) {
            request.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if !default.is_empty() {
            m.insert("default".into(), Value::Object(default));
        }
        if !request.is_empty() {
            m.insert("defaultRequest".into(), Value::Object(request));
        }
    }
}

fn item_list(item: &Value, k: &str) -> BTreeMap<String, (i128, String)> {
    item.get(k)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, v)| Some((name.clone(), (milli(v)?, show(name, v)))))
        .collect()
}

fn show(resource: &str, v: &Value) -> String {
    milli(v).map_or_else(|| v.to_string(), |m| format_milli(resource, m))
}

/// ValidateLimitRange's rules on each item.
pub fn validate_limit_range(lr: &Value, causes: &mut Vec<Cause>) {
    let items = lr
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("spec.limits[{i}].{f}");
        let ty = item.get("type").and_then(Value::as_str).unwrap_or_default();
        if !TYPES.contains(&ty) {
            causes.push(Cause::not_supported(at("type"), &json!(ty), &TYPES));
        }
        for list in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            for (k, v) in item
                .get(list)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                match milli(v) {
                    None => causes.push(Cause::invalid(
                        at(&format!("{list}[{k}]")),
                        v,
                        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                    )),
                    Some(m) if m < 0 => causes.push(Cause::invalid(
                        at(&format!("{list}[{k}]")),
                        v,
                        "must be greater than or equal to 0",
                    )),
                    Some(_) => {}
                }
            }
        }
        if ty == "Pod" {
            for f in ["default", "defaultRequest"] {
                if item
                    .get(f)
                    .and_then(Value::as_object)
                    .is_some_and(|m| !m.is_empty())
                {
                    causes.push(Cause::forbidden(
                        at(f),
                        "may not be specified when `type` is 'Pod'",
                    ));
                }
            }
        }
        check_order(item, &at, causes);
    }
}

/// min ≤ defaultRequest ≤ default ≤ max, and 1 ≤ ratio ≤ max/min.
fn check_order(item: &Value, at: &dyn Fn(&str) -> String, causes: &mut Vec<Cause>) {
    let (max, min) = (item_list(item, "max"), item_list(item, "min"));
    let (default, request) = (
        item_list(item, "default"),
        item_list(item, "defaultRequest"),
    );
    let ratio = item_list(item, "maxLimitRequestRatio");
    let mut keys: Vec<&String> = max.keys().chain(min.keys()).chain(default.keys()).collect();
    keys.extend(request.keys().chain(ratio.keys()));
    keys.sort();
    keys.dedup();
    for k in keys {
        let mut bad = |list: &str, v: &(i128, String), msg: String| {
            causes.push(Cause::invalid(
                at(&format!("{list}[{k}]")),
                &json!(v.1),
                msg,
            ));
        };
        let (mx, mn, df, rq) = (max.get(k), min.get(k), default.get(k), request.get(k));
        if let (Some(mn), Some(mx)) = (mn, mx)
            && mn.0 > mx.0
        {
            bad(
                "min",
                mn,
                format!("min value {} is greater than max value {}", mn.1, mx.1),
            );
        }
        if let Some(rq) = rq {
            if let Some(mn) = mn.filter(|mn| mn.0 > rq.0) {
                bad(
                    "defaultRequest",
                    rq,
                    format!(
                        "min value {} is greater than default request value {}",
                        mn.1, rq.1
                    ),
                );
            }
            if let Some(mx) = mx.filter(|mx| rq.0 > mx.0) {
                bad(
                    "defaultRequest",
                    rq,
                    format!(
                        "default request value {} is greater than max value {}",
                        rq.1, mx.1
                    ),
                );
            }
            if let Some(df) = df.filter(|df| rq.0 > df.0) {
                bad(
                    "defaultRequest",
                    rq,
                    format!(
                        "default request value {} is greater than default limit value {}",
                        rq.1, df.1
                    ),
                );
            }
        }
        if let Some(df) = df {
            if let Some(mn) = mn.filter(|mn| mn.0 > df.0) {
                bad(
                    "default",
                    df,
                    format!("min value {} is greater than default value {}", mn.1, df.1),
                );
            }
            if let Some(mx) = mx.filter(|mx| df.0 > mx.0) {
                bad(
                    "default",
                    df,
                    format!("default value {} is greater than max value {}", df.1, mx.1),
                );
            }
        }
        if let Some(r) = ratio.get(k) {
            if r.0 < 1000 {
                bad(
                    "maxLimitRequestRatio",
                    r,
                    format!("ratio {} is less than 1", r.1),
                );
            }
            if let (Some(mn), Some(mx)) = (mn, mx)
                && mn.0 > 0
                && r.0 as f64 / 1000.0 > mx.0 as f64 / mn.0 as f64
            {
                let q = mx.0 as f64 / mn.0 as f64;
                bad(
                    "maxLimitRequestRatio",
                    r,
                    format!("ratio {} is greater than max/min = {q:.6}", r.1),
                );
            }
        }
    }
}

/// Requests and limits of one container (or a pod's or claim's sums),
/// each in thousandths and as shown.
#[derive(Default)]
struct Usage {
    requests: BTreeMap<String, (i128, String)>,
    limits: BTreeMap<String, (i128, String)>,
}

fn usage_of(resources: &Value) -> Usage {
    Usage {
        requests: item_list(resources, "requests"),
        limits: item_list(resources, "limits"),
    }
}

/// The constraints of one item on one usage, upstream's messages.
fn constrain(item: &Value, kind: &str, u: &Usage, errs: &mut Vec<String>) {
    for (k, min) in item_list(item, "min") {
        let (req, lim) = (u.requests.get(&k), u.limits.get(&k));
        match req {
            None => errs.push(format!(
                "minimum {k} usage per {kind} is {}.  No request is specified",
                min.1
            )),
            Some(r) if r.0 < min.0 => errs.push(format!(
                "minimum {k} usage per {kind} is {}, but request is {}",
                min.1, r.1
            )),
            Some(_) => match lim {
                Some(l) if l.0 < min.0 => errs.push(format!(
                    "minimum {k} usage per {kind} is {}, but limit is {}",
                    min.1, l.1
                )),
                _ => {}
            },
        }
    }
    for (k, max) in item_list(item, "max") {
        let (req, lim) = (u.requests.get(&k), u.limits.get(&k));
        match lim {
            None => errs.push(format!(
                "maximum {k} usage per {kind} is {}.  No limit is specified",
                max.1
            )),
            Some(l) if l.0 > max.0 => errs.push(format!(
                "maximum {k} usage per {kind} is {}, but limit is {}",
                max.1, l.1
            )),
            Some(_) => match req {
                Some(r) if r.0 > max.0 => errs.push(format!(
                    "maximum {k} usage per {kind} is {}, but request is {}",
                    max.1, r.1
                )),
                _ => {}
            },
        }
    }
    for (k, ratio) in item_list(item, "maxLimitRequestRatio") {
        let req = u.requests.get(&k).map_or(0, |r| r.0);
        let lim = u.limits.get(&k).map_or(0, |l| l.0);
        if req == 0 {
            errs.push(format!("{k} max limit to request ratio per {kind} is {}, but no request is specified or request is 0", ratio.1));
        } else if lim == 0 {
            errs.push(format!("{k} max limit to request ratio per {kind} is {}, but no limit is specified or limit is 0", ratio.1));
        } else {
            let observed = lim as f64 / req as f64;
            if observed * 1000.0 > ratio.0 as f64 {
                errs.push(format!("{k} max limit to request ratio per {kind} is {}, but provided ratio is {observed:.6}", ratio.1));
            }
        }
    }
}

/// Defaults a container from the items of type Container; returns what it
/// set, for the annotation.
fn default_container(items: &[Value], c: &mut Value) -> (Vec<String>, Vec<String>) {
    let (mut set_req, mut set_lim) = (Vec::new(), Vec::new());
    if !c.is_object() {
        return (set_req, set_lim);
    }
    for item in items.iter().filter(|i| i["type"] == "Container") {
        for (list, target, set) in [
            ("default", "limits", &mut set_lim),
            ("defaultRequest", "requests", &mut set_req),
        ] {
            for (k, v) in item
                .get(list)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if !c["resources"].is_object() {
                    c["resources"] = json!({});
                }
                if !c["resources"][target].is_object() {
                    c["resources"][target] = json!({});
                }
                if c["resources"][target].get(k).is_none() {
                    c["resources"][target][k] = v.clone();
                    set.push(k.clone());
                }
            }
        }
    }
    (set_req, set_lim)
}

fn sum_into(
    total: &mut BTreeMap<String, (i128, String)>,
    add: &BTreeMap<String, (i128, String)>,
    max: bool,
) {
    for (k, v) in add {
        let e = total.entry(k.clone()).or_insert((0, String::new()));
        e.0 = if max { e.0.max(v.0) } else { e.0 + v.0 };
        e.1 = format_milli(k, e.0);
    }
}

/// The pod's total: containers summed, each init container's as a floor.
fn pod_totals(pod: &Value) -> Usage {
    let mut total = Usage::default();
    let cs = |k: &str| {
        pod.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for c in cs("containers") {
        let u = usage_of(&c["resources"]);
        sum_into(&mut total.requests, &u.requests, false);
        sum_into(&mut total.limits, &u.limits, false);
    }
    for c in cs("initContainers") {
        let u = usage_of(&c["resources"]);
        sum_into(&mut total.requests, &u.requests, true);
        sum_into(&mut total.limits, &u.limits, true);
    }
    total
}

/// Limits are specified but requests are not: requests default to limits
/// (SetDefaults_Pod, for pods only, not templates).
pub fn requests_from_limits(spec: &mut Value) {
    for key in ["containers", "initContainers"] {
        let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs {
            let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
                continue;
            };
            let requests = res.entry("requests").or_insert_with(|| json!({}));
            if let Some(r) = requests.as_object_mut() {
                for (k, v) in limits {
                    r.entry(k).or_insert(v);
                }
            }
        }
    }
}

async fn namespace_items(st: &ApiState, ns: &str) -> Result<Vec<Value>, ApiError> {
    let t = Target {
        resource: by_kind("", "LimitRange").expect("served"),
        namespace: ns.to_owned(),
        name: None,
        subresource: None,
    };
    let ranges = list_objects(st, &t, &Default::default()).await?.0;
    Ok(ranges
        .iter()
        .filter_map(|lr| lr.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .cloned()
        .collect())
}

fn refuse(r: &Resource, name: &str, errs: Vec<String>) -> ApiError {
    let why = if errs.len() == 1 {
        errs.into_iter().next().unwrap_or_default()
    } else {
        format!("[{}]", errs.join(", "))
    };
    ApiError::forbidden_on(r, name, why)
}

/// LimitRanger on a new pod: defaults, then every constraint.
pub async fn admit_pod(
    st: &ApiState,
    r: &Resource,
    ns: &str,
    pod: &mut Value,
) -> Result<(), ApiError> {
    let items = namespace_items(st, ns).await?;
    if items.is_empty() {
        return Ok(());
    }
    let mut notes = Vec::new();
    for key in ["initContainers", "containers"] {
        let Some(cs) = pod
            .pointer_mut(&format!("/spec/{key}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let (req, lim) = default_container(&items, c);
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            for (set, what) in [(req, "request"), (lim, "limit")] {
                if !set.is_empty() {
                    let what = if key == "initContainers" {
                        format!("{what} for init container")
                    } else {
                        format!("{what} for container")
                    };
                    notes.push(format!("{} {what} {name}", set.join(", ")));
                }
            }
        }
    }
    if !notes.is_empty() && pod["metadata"].is_object() {
        if !pod["metadata"]["annotations"].is_object() {
            pod["metadata"]["annotations"] = json!({});
        }
        pod["metadata"]["annotations"][ANNOTATION] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
    let mut errs = Vec::new();
    for item in &items {
        match item["type"].as_str() {
            Some("Container") => {
                for key in ["containers", "initContainers"] {
                    for c in pod
                        .pointer(&format!("/spec/{key}"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        constrain(item, "Container", &usage_of(&c["resources"]), &mut errs);
                    }
                }
            }
            Some("Pod") => constrain(item, "Pod", &pod_totals(pod), &mut errs),
            _ => {}
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Err(refuse(r, &name, errs))
}

/// LimitRanger on a new PersistentVolumeClaim: min and max storage.
pub async fn admit_claim(
    st: &ApiState,
    r: &Resource,
    ns: &str,
    pvc: &Value,
) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    for item in namespace_items(st, ns).await? {
        if item["type"] == "PersistentVolumeClaim" {
            constrain(
                &item,
                "PersistentVolumeClaim",
                &usage_of(&pvc["spec"]["resources"]),
                &mut errs,
            );
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    let name = pvc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Err(refuse(r, &name, errs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(lr: &Value) -> Vec<String> {
        let mut c = Vec::new();
        validate_limit_range(lr, &mut c);
        c.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn container_items_default_from_max_default_and_min() {
        let mut lr = json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}},
            {"type": "Pod", "max": {"cpu": "4"}},
        ]}});
        default_limit_range(&mut lr);
        let c = &lr["spec"]["limits"][0];
        assert_eq!(c["default"], json!({"cpu": "2"}));
        assert_eq!(c["defaultRequest"], json!({"cpu": "2", "memory": "64Mi"}));
        assert!(lr["spec"]["limits"][1].get("default").is_none());
        assert!(causes(&lr).is_empty(), "{:?}", causes(&lr));
    }

    #[test]
    fn items_keep_their_order_and_types() {
        let lr = json!({"spec": {"limits": [
            {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}, "maxLimitRequestRatio": {"cpu": "500m"}},
            {"type": "Pod", "default": {"cpu": "1"}},
            {"type": "Volume"},
            {"type": "Container", "max": {"memory": "-1"}},
        ]}});
        let e = causes(&lr).join("\n");
        assert!(e.contains("spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1"), "{e}");
        assert!(e.contains("ratio 500m is less than 1"), "{e}");
        assert!(
            e.contains(
                "spec.limits[1].default: Forbidden: may not be specified when `type` is 'Pod'"
            ),
            "{e}"
        );
        assert!(
            e.contains("spec.limits[2].type: Unsupported value: \"Volume\""),
            "{e}"
        );
        assert!(e.contains("spec.limits[3].max[memory]"), "{e}");
    }

    #[test]
    fn constraints_speak_upstreams_words() {
        let item = json!({"type": "Container", "min": {"cpu": "100m"}, "max": {"memory": "1Gi"}, "maxLimitRequestRatio": {"cpu": "2"}});
        let u =
            usage_of(&json!({"requests": {"cpu": "50m"}, "limits": {"cpu": "1", "memory": "2Gi"}}));
        let mut errs = Vec::new();
        constrain(&item, "Container", &u, &mut errs);
        assert_eq!(
            errs,
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum memory usage per Container is 1Gi, but limit is 2Gi",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 20.000000",
            ]
        );
        let mut errs = Vec::new();
        constrain(&item, "Container", &usage_of(&json!({})), &mut errs);
        assert_eq!(
            errs[0],
            "minimum cpu usage per Container is 100m.  No request is specified"
        );
        assert_eq!(
            errs[1],
            "maximum memory usage per Container is 1Gi.  No limit is specified"
        );
    }

    #[test]
    fn containers_get_defaults_and_pods_sum_with_init_floors() {
        let items = vec![
            json!({"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "250m"}}),
        ];
        let mut c = json!({"name": "a", "resources": {"limits": {"cpu": "1"}}});
        let (req, lim) = default_container(&items, &mut c);
        assert_eq!((req, lim), (vec!["cpu".to_owned()], vec![]));
        assert_eq!(
            c["resources"],
            json!({"limits": {"cpu": "1"}, "requests": {"cpu": "250m"}})
        );
        let pod = json!({"spec": {
            "containers": [{"resources": {"requests": {"cpu": "300m"}}}, {"resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "2"}}}],
        }});
        assert_eq!(pod_totals(&pod).requests["cpu"], (2000, "2".to_owned()));
        let mut spec = json!({"containers": [{"resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "1"}}}]});
        requests_from_limits(&mut spec);
        assert_eq!(
            spec["containers"][0]["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
    }
}
