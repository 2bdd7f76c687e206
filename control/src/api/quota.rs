//! ResourceQuotas, as kube-apiserver and kube-controller-manager keep
//! them. What an object uses is pure ([`usage`]): a non-terminal pod
//! counts `pods`/`count/pods` and its requests and limits (containers
//! summed, each init container a floor: `cpu`, `requests.cpu`,
//! `limits.cpu`, memory and ephemeral storage alike); a Service counts
//! `services`, `services.loadbalancers`, `services.nodeports`; a claim
//! `persistentvolumeclaims`, `requests.storage` and their per-StorageClass
//! forms; every object `count/<plural>[.<group>]` and the legacy counts
//! (configmaps, secrets, replicationcontrollers, resourcequotas).
//! Quota scopes (`Terminating`, `NotTerminating`, `BestEffort`,
//! `NotBestEffort`, and `PriorityClass` through `scopeSelector`) narrow a
//! quota to the pods they match.
//!
//! Admission ([`admit`]) works as upstream's ResourceQuota plugin: for each
//! quota the new object matters to, a quota whose status is not yet known
//! refuses it; a pod constrained on cpu or memory must state them for every
//! container ("must specify …"); `used + requested > hard` is refused with
//! "exceeded quota: …"; otherwise the new usage is written into the quota's
//! status on the version read (compare-and-swap, retried), so concurrent
//! creates on any apiserver cannot both take the last unit. The status
//! loop ([`run`]) recounts every quota from the store every few seconds,
//! giving back what deleted or finished objects held. Creates are charged,
//! and updates of Services and claims by what they grow.
//!
//! What is particular to a kind (pods, Services, claims: what they use,
//! which quota names charge them, what a pod must state, whether scopes
//! and updates apply) is an [`Evaluator`] declared on the kind's entry in
//! `super::kinds`, as upstream registers one evaluator per resource; every
//! other kind, custom kinds included, is counted only.

use std::{collections::BTreeMap, time::Duration};

use rudder_k8s::quantity::{format_milli, value_milli as milli};

use crate::store::StoreError;
use serde_json::{Value, json};

use super::{
    ApiState,
    handlers::{Target, decode_as, encode_as, list_objects},
    resources::{Resource, by_kind, is_storage_version},
    status::{ApiError, Cause},
};

/// Usage in thousandths, by resource name.
pub type Usage = BTreeMap<String, i128>;

const SCOPES: [&str; 6] = [
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
];
const COMPUTE: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];
const LEGACY_COUNTS: [(&str, &str); 5] = [
    ("pods", "pods"),
    ("configmaps", "configmaps"),
    ("secrets", "secrets"),
    ("replicationcontrollers", "replicationcontrollers"),
    ("resourcequotas", "resourcequotas"),
];

fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// The `count/…` name of a resource.
fn count_name(r: &Resource) -> String {
    if r.group.is_empty() {
        format!("count/{}", r.plural)
    } else {
        format!("count/{}.{}", r.plural, r.group)
    }
}

/// What an object must state for the names quota `name` limits: `(name,
/// object, limited names)`, the refusal's message.
pub type Constraints = fn(&str, &Value, &[&String]) -> Result<(), String>;

/// How quota charges one kind beyond the object count every namespaced
/// object has (upstream's quota evaluators for pods, services and claims),
/// declared on the kind's entry in `super::kinds`.
#[derive(Debug)]
pub struct Evaluator {
    /// Whether an object uses quota at all (a finished pod does not).
    pub counts: fn(&Value) -> bool,
    /// What one object uses beyond its object counts.
    pub usage: fn(&Value, &mut Usage),
    /// Quota names the kind is charged under that an empty object's usage
    /// does not show (a pod's `requests.*`, a claim's per-class names):
    /// a quota naming one counts the kind.
    pub matches: fn(&str) -> bool,
    /// Names that concern every object of the kind on create, even one that
    /// does not state them: the object is then refused by [`Self::constraints`].
    pub constrained: &'static [&'static str],
    /// What an object must state for the constrained names a quota limits
    /// (upstream's `Constraints`); the refusal's message.
    pub constraints: Option<Constraints>,
    /// Whether scoped quotas (`scopes`, `scopeSelector`) apply to the kind;
    /// a scoped quota charges nothing else.
    pub scoped: bool,
    /// Whether an update is charged by what it grows.
    pub on_update: bool,
}

/// Pods: their requests and limits, unless they have finished.
pub static PODS: Evaluator = Evaluator {
    counts: |pod| !is_terminal(pod),
    usage: pod_usage,
    matches: |k| COMPUTE.contains(&k) || k.starts_with("requests.") || k.starts_with("limits."),
    constrained: &COMPUTE,
    constraints: Some(must_specify),
    scoped: true,
    on_update: false,
};

/// Services: by type, NodePorts by their ports.
pub static SERVICES: Evaluator = Evaluator {
    counts: |_| true,
    usage: service_usage,
    // A ClusterIP Service's usage does not show these.
    matches: |k| matches!(k, "services.loadbalancers" | "services.nodeports"),
    constrained: &[],
    constraints: None,
    scoped: false,
    on_update: true,
};

/// Claims: their storage, overall and by StorageClass.
pub static CLAIMS: Evaluator = Evaluator {
    counts: |_| true,
    usage: claim_usage,
    matches: |k| {
        k.split_once(CLASS_SUFFIX)
            .is_some_and(|(_, n)| matches!(n, "persistentvolumeclaims" | "requests.storage"))
    },
    constrained: &[],
    constraints: None,
    scoped: false,
    on_update: true,
};

const CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

fn evaluator(r: &Resource) -> Option<&'static Evaluator> {
    super::kinds::of(r).and_then(|k| k.quota)
}

/// What one object of kind `r` uses.
pub fn usage(r: &Resource, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let eval = evaluator(r);
    if eval.is_some_and(|e| !(e.counts)(obj)) {
        return u;
    }
    u.insert(count_name(r), 1000);
    if r.group.is_empty()
        && let Some((k, _)) = LEGACY_COUNTS.iter().find(|(_, p)| *p == r.plural)
    {
        u.insert((*k).to_owned(), 1000);
    }
    if let Some(e) = eval {
        (e.usage)(obj, &mut u);
    }
    u
}

fn service_usage(obj: &Value, u: &mut Usage) {
    u.insert("services".into(), 1000);
    let ty = obj.pointer("/spec/type").and_then(Value::as_str);
    let ports = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if ty == Some("LoadBalancer") {
        u.insert("services.loadbalancers".into(), 1000);
    }
    if matches!(ty, Some("NodePort" | "LoadBalancer")) {
        u.insert("services.nodeports".into(), 1000 * ports as i128);
    }
}

fn claim_usage(obj: &Value, u: &mut Usage) {
    let storage = obj
        .pointer("/spec/resources/requests/storage")
        .and_then(milli)
        .unwrap_or(0);
    u.insert("persistentvolumeclaims".into(), 1000);
    u.insert("requests.storage".into(), storage);
    if let Some(sc) = obj
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str)
    {
        u.insert(format!("{sc}{CLASS_SUFFIX}persistentvolumeclaims"), 1000);
        u.insert(format!("{sc}{CLASS_SUFFIX}requests.storage"), storage);
    }
}

/// A pod's compute usage as upstream's pod evaluator counts it
/// (`PodRequests`/`PodLimits`: sidecars, init peaks, overhead).
fn pod_usage(pod: &Value, u: &mut Usage) {
    // Admission type-checked the pod; a spec that does not read is empty.
    let spec: k8s_openapi::api::core::v1::PodSpec =
        serde_json::from_value(pod["spec"].clone()).unwrap_or_default();
    for (k, v) in rudder_k8s::resources::pod_requests(&spec) {
        if matches!(k.as_str(), "cpu" | "memory") {
            u.insert(k.clone(), v);
        }
        u.insert(format!("requests.{k}"), v);
    }
    for (k, v) in rudder_k8s::resources::pod_limits(&spec) {
        u.insert(format!("limits.{k}"), v);
    }
}

fn is_best_effort(pod: &Value) -> bool {
    rudder_k8s::qos::pod_value_qos(pod) == rudder_k8s::qos::QosClass::BestEffort
}

/// Whether a pod falls in one scope (with a selector's operator and values
/// for `PriorityClass`).
fn in_scope(pod: &Value, scope: &str, op: &str, values: &[&str]) -> bool {
    let class = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str);
    let matched = match scope {
        "Terminating" => pod
            .pointer("/spec/activeDeadlineSeconds")
            .is_some_and(|v| !v.is_null()),
        "NotTerminating" => pod
            .pointer("/spec/activeDeadlineSeconds")
            .is_none_or(Value::is_null),
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => match op {
            "In" => class.is_some_and(|c| values.contains(&c)),
            "NotIn" => class.is_none_or(|c| !values.contains(&c)),
            "Exists" => class.is_some_and(|c| !c.is_empty()),
            "DoesNotExist" => class.is_none_or(str::is_empty),
            _ => false,
        },
        _ => false,
    };
    // Exists/DoesNotExist and In/NotIn on the plain scopes mean what they
    // say of the scope itself.
    match (scope, op) {
        ("PriorityClass", _) => matched,
        (_, "DoesNotExist" | "NotIn") => !matched,
        _ => matched,
    }
}

/// Whether a quota applies to this object at all.
fn quota_matches(quota: &Value, r: &Resource, obj: &Value) -> bool {
    let spec = &quota["spec"];
    let mut terms: Vec<(String, String, Vec<&str>)> = spec["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s.to_owned(), "Exists".to_owned(), vec![]))
        .collect();
    for e in spec
        .pointer("/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        terms.push((
            e["scopeName"].as_str().unwrap_or_default().to_owned(),
            e["operator"].as_str().unwrap_or_default().to_owned(),
            e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect(),
        ));
    }
    if terms.is_empty() {
        return true;
    }
    // Scoped quotas track pods only.
    evaluator(r).is_some_and(|e| e.scoped)
        && terms.iter().all(|(s, op, vals)| in_scope(obj, s, op, vals))
}

fn hard(quota: &Value, at: &str) -> Usage {
    quota
        .pointer(at)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), milli(v)?)))
        .collect()
}

fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                format_milli(k.rsplit('.').next().unwrap_or(k), *v)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One quota's decision on a new object: `Ok(None)` when it does not
/// matter, `Ok(Some(new used))` when it fits, the refusal otherwise.
pub fn decide(quota: &Value, r: &Resource, obj: &Value) -> Result<Option<Usage>, String> {
    decide_with(quota, r, obj, &usage(r, obj))
}

/// [`decide`] for a given `requested` usage (an update's growth).
fn decide_with(
    quota: &Value,
    r: &Resource,
    obj: &Value,
    requested: &Usage,
) -> Result<Option<Usage>, String> {
    if !quota_matches(quota, r, obj) {
        return Ok(None);
    }
    let name = quota["metadata"]["name"].as_str().unwrap_or_default();
    let hard_spec = hard(quota, "/spec/hard");
    let eval = evaluator(r);
    let constrained = eval.map_or(&[][..], |e| e.constrained);
    let interesting: Vec<&String> = hard_spec
        .keys()
        .filter(|k| requested.contains_key(*k) || constrained.contains(&k.as_str()))
        .collect();
    if interesting.is_empty() {
        return Ok(None);
    }
    if let Some(e) = eval
        && (e.counts)(obj)
        && let Some(check) = e.constraints
    {
        check(name, obj, &interesting)?;
    }
    let used = hard(quota, "/status/used");
    let status_hard = hard(quota, "/status/hard");
    let unknown: Vec<&str> = interesting
        .iter()
        .filter(|k| !used.contains_key(**k) || !status_hard.contains_key(**k))
        .map(|k| k.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "status unknown for quota: {name}, resources: {}",
            unknown.join(",")
        ));
    }
    let mut new_used = used.clone();
    let mut exceeded = Vec::new();
    for k in &interesting {
        let add = requested.get(*k).copied().unwrap_or(0);
        let total = used[*k] + add;
        new_used.insert((*k).clone(), total);
        if add > 0 && total > status_hard[*k] {
            exceeded.push((*k).clone());
        }
    }
    if exceeded.is_empty() {
        return Ok(Some(new_used));
    }
    let mask = |u: &Usage| -> Usage {
        exceeded
            .iter()
            .map(|k| (k.clone(), u.get(k).copied().unwrap_or(0)))
            .collect()
    };
    Err(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        pretty(&mask(requested)),
        pretty(&mask(&used)),
        pretty(&mask(&status_hard))
    ))
}

/// Upstream's backward-compatible rule: a quota on cpu or memory needs
/// every container to state them.
fn must_specify(name: &str, pod: &Value, interesting: &[&String]) -> Result<(), String> {
    let required: Vec<&str> = interesting
        .iter()
        .map(|k| k.as_str())
        .filter(|k| COMPUTE.contains(k))
        .collect();
    let mut missing: Vec<&str> = Vec::new();
    for key in ["containers", "initContainers"] {
        for c in pod
            .pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let has = |list: &str, res: &str| {
                c.pointer(&format!("/resources/{list}/{res}"))
                    .is_some_and(|v| !v.is_null())
            };
            for k in &required {
                let ok = match *k {
                    "cpu" | "requests.cpu" => has("requests", "cpu"),
                    "memory" | "requests.memory" => has("requests", "memory"),
                    "limits.cpu" => has("limits", "cpu"),
                    "limits.memory" => has("limits", "memory"),
                    _ => true,
                };
                if !ok && !missing.contains(k) {
                    missing.push(k);
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_unstable();
    Err(format!(
        "failed quota: {name}: must specify {}",
        missing.join(",")
    ))
}

fn quota_target(ns: &str) -> Target {
    Target {
        resource: by_kind("", "ResourceQuota").expect("served"),
        namespace: ns.to_owned(),
        name: None,
        subresource: None,
    }
}

/// The ResourceQuota plugin on a new object in `ns`; `charge` writes the
/// new usage (not on a dry run).
pub async fn admit(
    st: &ApiState,
    r: &Resource,
    ns: &str,
    obj: &Value,
    charge: bool,
) -> Result<(), ApiError> {
    charge_all(st, r, ns, obj, &usage(r, obj), charge).await
}

/// The plugin on an update: only growth is charged, for the kinds whose
/// evaluator says so (a Service turned into a NodePort or LoadBalancer, or
/// given more ports; a claim asking for more storage). Other kinds' usage
/// does not change on update.
pub async fn admit_update(
    st: &ApiState,
    r: &Resource,
    old: &Value,
    new: &Value,
    charge: bool,
) -> Result<(), ApiError> {
    if !evaluator(r).is_some_and(|e| e.on_update) {
        return Ok(());
    }
    let before = usage(r, old);
    let growth: Usage = usage(r, new)
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0);
            (d > 0).then_some((k, d))
        })
        .collect();
    if growth.is_empty() {
        return Ok(());
    }
    let ns = new["metadata"]["namespace"].as_str().unwrap_or_default();
    charge_all(st, r, ns, new, &growth, charge).await
}

async fn charge_all(
    st: &ApiState,
    r: &Resource,
    ns: &str,
    obj: &Value,
    requested: &Usage,
    charge: bool,
) -> Result<(), ApiError> {
    if ns.is_empty() {
        return Ok(());
    }
    let t = quota_target(ns);
    let quotas = list_objects(st, &t, &Default::default()).await?.0;
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let refuse = |why: String| ApiError::forbidden_on(r, name, why);
    for q in quotas {
        let qname = q["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut current = q;
        let mut settled = false;
        for _ in 0..CHARGE_ATTEMPTS {
            let Some(new_used) = decide_with(&current, r, obj, requested).map_err(refuse)? else {
                settled = true;
                break;
            };
            if !charge {
                settled = true;
                break;
            }
            match write_used(st, &t, &qname, &current, new_used).await? {
                None => {
                    settled = true;
                    break;
                }
                Some(fresh) => current = fresh,
            }
        }
        // Never admitted uncharged: a quota that changed under every attempt
        // refuses, as kube-apiserver's evaluator does when it cannot settle.
        if !settled {
            return Err(ApiError::internal(
                "Internal error occurred: resource quota evaluation timed out",
            ));
        }
    }
    Ok(())
}

/// Compare-and-swap attempts per quota before a create is refused.
const CHARGE_ATTEMPTS: usize = 16;

/// Writes a quota's used on the version read; on a conflict returns the
/// fresh quota to decide again.
async fn write_used(
    st: &ApiState,
    t: &Target,
    name: &str,
    read: &Value,
    used: Usage,
) -> Result<Option<Value>, ApiError> {
    let r = t.resource;
    let rv: i64 = read
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut next = read.clone();
    for (k, v) in &used {
        next["status"]["used"][k] = json!(format_milli(k.rsplit('.').next().unwrap_or(k), *v));
    }
    match st
        .store
        .update(t.key(name), encode_as(r, &next), Some(rv))
        .await
    {
        Ok(_) => Ok(None),
        Err(StoreError::Conflict { .. }) => {
            let (Some(kv), _) = st
                .store
                .get(&t.key(name))
                .await
                .map_err(|e| ApiError::from_store(e, r, name))?
            else {
                return Ok(None);
            };
            Ok(Some(decode_as(r, &kv)?))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(ApiError::from_store(e, r, name)),
    }
}

/// Field validation: hard amounts are quantities ≥ 0, scopes known.
pub fn validate(quota: &Value, causes: &mut Vec<Cause>) {
    for (k, v) in quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        match milli(v) {
            Some(m) if m >= 0 => {}
            Some(_) => causes.push(Cause::invalid(format!("spec.hard[{k}]"), v, "must be greater than or equal to 0")),
            None => causes.push(Cause::invalid(format!("spec.hard[{k}]"), v, "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")),
        }
    }
    for (i, s) in quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !s.as_str().is_some_and(|s| SCOPES.contains(&s)) {
            causes.push(Cause::not_supported(
                format!("spec.scopes[{i}]"),
                s,
                &SCOPES,
            ));
        }
    }
    let exprs = quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array);
    for (i, e) in exprs.into_iter().flatten().enumerate() {
        let at = format!("spec.scopeSelector.matchExpressions[{i}]");
        if !e["scopeName"].as_str().is_some_and(|s| SCOPES.contains(&s)) {
            causes.push(Cause::not_supported(
                format!("{at}.scopeName"),
                &e["scopeName"],
                &SCOPES,
            ));
        }
        let op = e["operator"].as_str().unwrap_or_default();
        let n = e["values"].as_array().map_or(0, Vec::len);
        match op {
            "In" | "NotIn" if n == 0 => causes.push(Cause::required_because(
                format!("{at}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if n > 0 => causes.push(Cause::forbidden(
                format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => causes.push(Cause::not_supported(
                format!("{at}.operator"),
                &e["operator"],
                &["In", "NotIn", "Exists", "DoesNotExist"],
            )),
        }
    }
}

/// The resources a quota counts, in their storage versions.
fn counted(hard: &Usage) -> Vec<&'static Resource> {
    let mut out: Vec<&'static Resource> = super::resources::all()
        .into_iter()
        .filter(|r| r.namespaced && is_storage_version(r) && !r.read_only && !r.create_only)
        .filter(|r| {
            let sample = usage(r, &json!({}));
            let eval = evaluator(r);
            hard.keys()
                .any(|k| sample.contains_key(k) || eval.is_some_and(|e| (e.matches)(k)))
        })
        .collect();
    out.dedup();
    out
}

/// A quota's status from what its namespace holds now.
async fn recount(st: &ApiState, quota: &Value) -> Result<Value, ApiError> {
    let ns = quota["metadata"]["namespace"].as_str().unwrap_or_default();
    let hard_spec = hard(quota, "/spec/hard");
    let mut used: Usage = hard_spec.keys().map(|k| (k.clone(), 0)).collect();
    for r in counted(&hard_spec) {
        let t = Target {
            resource: r,
            namespace: ns.to_owned(),
            name: None,
            subresource: None,
        };
        for obj in list_objects(st, &t, &Default::default()).await?.0 {
            if !quota_matches(quota, r, &obj) {
                continue;
            }
            for (k, v) in usage(r, &obj) {
                if let Some(u) = used.get_mut(&k) {
                    *u += v;
                }
            }
        }
    }
    let show = |u: &Usage| -> Value {
        u.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!(format_milli(k.rsplit('.').next().unwrap_or(k), *v)),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    Ok(json!({"hard": quota["spec"]["hard"].clone(), "used": show(&used)}))
}

/// A new quota starts with its status counted, so admission can use it at
/// once.
pub async fn initial_status(st: &ApiState, quota: &mut Value) -> Result<(), ApiError> {
    quota["status"] = recount(st, quota).await?;
    Ok(())
}

/// One pass over every quota: status written where it changed.
pub async fn sync_all(st: &ApiState) -> Result<(), ApiError> {
    let t = quota_target("");
    let r = t.resource;
    for q in list_objects(st, &t, &Default::default()).await?.0 {
        let status = recount(st, &q).await?;
        if q["status"] == status {
            continue;
        }
        let ns = q["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = q["metadata"]["name"].as_str().unwrap_or_default();
        let rv: i64 = q
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut next = q.clone();
        next["status"] = status;
        let key = quota_target(ns).key(name);
        match st.store.update(key, encode_as(r, &next), Some(rv)).await {
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, r, name)),
        }
    }
    Ok(())
}

/// The quota status loop (kube-controller-manager's resourcequota
/// controller, by full recount): every `every` until `stop`.
pub async fn run(
    st: std::sync::Arc<ApiState>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = sync_all(&st).await {
            tracing::warn!(error = %e.message, "resource quota status");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static Resource {
        by_kind("", "Pod").unwrap()
    }

    fn quota(hard: &Value, used: &Value) -> Value {
        json!({"metadata": {"name": "q"}, "spec": {"hard": hard.clone()}, "status": {"hard": hard, "used": used}})
    }

    fn pod(cpu: Option<&str>) -> Value {
        let res = cpu.map_or(json!({}), |c| json!({"requests": {"cpu": c, "memory": "64Mi"}, "limits": {"cpu": c, "memory": "64Mi"}}));
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "resources": res}]}})
    }

    #[test]
    fn pods_count_and_compute_usage() {
        let u = usage(pods(), &pod(Some("250m")));
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(u["requests.cpu"], 250);
        assert_eq!(u["cpu"], 250);
        assert_eq!(u["limits.memory"], 64 * 1024 * 1024 * 1000);
        let mut done = pod(Some("1"));
        done["status"] = json!({"phase": "Succeeded"});
        assert!(usage(pods(), &done).is_empty());
        let cm = usage(by_kind("", "ConfigMap").unwrap(), &json!({}));
        assert_eq!(
            cm,
            Usage::from([
                ("configmaps".into(), 1000),
                ("count/configmaps".into(), 1000)
            ])
        );
        let d = usage(by_kind("apps", "Deployment").unwrap(), &json!({}));
        assert_eq!(d["count/deployments.apps"], 1000);
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        assert_eq!(
            usage(by_kind("", "Service").unwrap(), &svc)["services.nodeports"],
            2000
        );
    }

    #[test]
    fn admission_refuses_with_upstreams_messages() {
        let q = quota(
            &json!({"pods": "2", "requests.cpu": "1"}),
            &json!({"pods": "2", "requests.cpu": "500m"}),
        );
        let e = decide(&q, pods(), &pod(Some("100m"))).unwrap_err();
        assert_eq!(
            e,
            "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
        let e = decide(&q, pods(), &pod(None)).unwrap_err();
        assert_eq!(e, "failed quota: q: must specify requests.cpu");
        let q = quota(
            &json!({"pods": "3", "requests.cpu": "1"}),
            &json!({"pods": "1", "requests.cpu": "500m"}),
        );
        let e = decide(&q, pods(), &pod(Some("600m"))).unwrap_err();
        assert_eq!(
            e,
            "exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=500m, limited: requests.cpu=1"
        );
        let used = decide(&q, pods(), &pod(Some("500m"))).unwrap().unwrap();
        assert_eq!((used["pods"], used["requests.cpu"]), (2000, 1000));
        let mut unknown = q.clone();
        unknown["status"] = json!({});
        let e = decide(&unknown, pods(), &pod(Some("1m"))).unwrap_err();
        assert_eq!(
            e,
            "status unknown for quota: q, resources: pods,requests.cpu"
        );
        // A quota on something else does not matter to a pod.
        let other = quota(&json!({"services": "0"}), &json!({"services": "0"}));
        assert_eq!(decide(&other, pods(), &pod(None)), Ok(None));
    }

    #[test]
    fn scopes_narrow_a_quota_to_the_pods_they_match() {
        let mut q = quota(&json!({"pods": "0"}), &json!({"pods": "0"}));
        q["spec"]["scopes"] = json!(["BestEffort"]);
        assert!(decide(&q, pods(), &pod(None)).is_err());
        assert_eq!(decide(&q, pods(), &pod(Some("1"))), Ok(None));
        let mut q = quota(&json!({"pods": "0"}), &json!({"pods": "0"}));
        q["spec"]["scopeSelector"] = json!({"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]});
        let mut high = pod(Some("1"));
        high["spec"]["priorityClassName"] = json!("high");
        assert!(decide(&q, pods(), &high).is_err());
        assert_eq!(decide(&q, pods(), &pod(Some("1"))), Ok(None));
        assert_eq!(
            decide(&q, by_kind("", "ConfigMap").unwrap(), &json!({})),
            Ok(None)
        );
    }

    #[test]
    fn quotas_validate() {
        let mut c = Vec::new();
        validate(
            &json!({"spec": {"hard": {"pods": "-1", "cpu": "lots"}, "scopes": ["Sometimes"],
            "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In"}]}}}),
            &mut c,
        );
        let e: Vec<String> = c.iter().map(ToString::to_string).collect();
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("spec.hard[cpu]"), "{e:?}");
    }

    #[test]
    fn a_quota_counts_the_kinds_its_names_charge() {
        let kinds = |names: &[&str]| -> Vec<&str> {
            let hard: Usage = names.iter().map(|n| ((*n).to_owned(), 1000)).collect();
            let mut k: Vec<&str> = counted(&hard).iter().map(|r| r.kind).collect();
            k.sort_unstable();
            k
        };
        assert_eq!(kinds(&["requests.nvidia.com/gpu"]), ["Pod"]);
        // A quota on NodePorts alone recounts Services (before, its
        // status loop gave back what admission had charged).
        assert_eq!(kinds(&["cpu", "services.nodeports"]), ["Pod", "Service"]);
        assert_eq!(kinds(&["services.loadbalancers"]), ["Service"]);
        // A per-class name alone counts claims (an empty claim's usage
        // does not show it).
        assert_eq!(
            kinds(&["gold.storageclass.storage.k8s.io/requests.storage"]),
            ["PersistentVolumeClaim"]
        );
        assert_eq!(kinds(&["count/deployments.apps"]), ["Deployment"]);
        assert!(kinds(&["gold.storageclass.storage.k8s.io/cpu"]).is_empty());
        // A finished pod uses nothing; a claim's class is charged.
        let done = json!({"spec": {"containers": []}, "status": {"phase": "Succeeded"}});
        assert!(usage(pods(), &done).is_empty());
        let claim = json!({"spec": {"storageClassName": "gold",
            "resources": {"requests": {"storage": "1Gi"}}}});
        let u = usage(by_kind("", "PersistentVolumeClaim").unwrap(), &claim);
        assert_eq!(
            u["gold.storageclass.storage.k8s.io/requests.storage"],
            1024 * 1024 * 1024 * 1000
        );
        assert_eq!(
            u["gold.storageclass.storage.k8s.io/persistentvolumeclaims"],
            1000
        );
    }
}
