//! The defaults kube-apiserver applies before validation, per kind (as
//! `SetDefaults_*` in Kubernetes' `pkg/apis/*/v1/defaults.go`): pods and
//! templates, workloads' strategies, Services, Jobs, HPAs (v2 behaviour),
//! and the kinds whose rules live with their admission (PriorityClass,
//! LimitRange).

use serde_json::{Map, Value, json};

use super::resources::Resource;

/// `autoscaling/v2` HPA defaults: `minReplicas` 1, a CPU utilisation target
/// of 80 % when no metric is given, and when `behavior` is set, every rule
/// it leaves out (Kubernetes' `GenerateHPAScaleUpRules`/`...ScaleDownRules`).
pub fn default_hpa_v2(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    set_default(spec, "minReplicas", json!(1));
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) else {
        return;
    };
    let up = behavior.entry("scaleUp").or_insert_with(|| json!({}));
    if let Some(up) = up.as_object_mut() {
        set_default(up, "stabilizationWindowSeconds", json!(0));
        set_default(up, "selectPolicy", json!("Max"));
        set_default(
            up,
            "policies",
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                   {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
    let down = behavior.entry("scaleDown").or_insert_with(|| json!({}));
    if let Some(down) = down.as_object_mut() {
        set_default(down, "stabilizationWindowSeconds", json!(300));
        set_default(down, "selectPolicy", json!("Max"));
        set_default(
            down,
            "policies",
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
}

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), v);
    }
}

/// A workload's update strategy defaulted field by field, as Kubernetes
/// does: `type` RollingUpdate, and for it the `rollingUpdate` parameters
/// (an empty `strategy: {}`, which Go clients send, gets them all).
fn default_strategy(spec: &mut Map<String, Value>, key: &str, rolling: &[(&str, Value)]) {
    let Some(strategy) = obj_mut_in(spec, key) else {
        return;
    };
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
        && let Some(ru) = obj_mut_in(strategy, "rollingUpdate")
    {
        for (k, v) in rolling {
            set_default(ru, k, v.clone());
        }
    }
}

fn obj_mut_in<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), json!({}));
    }
    m.get_mut(key)?.as_object_mut()
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_owned(), json!({}));
    }
    m.get_mut(key)?.as_object_mut()
}

fn default_container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    let image = m
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let last = image.rsplit('/').next().unwrap_or("");
    let tagged = last.contains(':') && !last.ends_with(":latest");
    let pull = if tagged || image.contains('@') {
        "IfNotPresent"
    } else {
        "Always"
    };
    set_default(m, "imagePullPolicy", json!(pull));
    set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(m, "terminationMessagePolicy", json!("File"));
    set_default(m, "resources", json!({}));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if let Some(pm) = p.as_object_mut() {
                set_default(pm, "protocol", json!("TCP"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(pm) = m.get_mut(probe).and_then(Value::as_object_mut) {
            set_default(pm, "timeoutSeconds", json!(1));
            set_default(pm, "periodSeconds", json!(10));
            set_default(pm, "successThreshold", json!(1));
            set_default(pm, "failureThreshold", json!(3));
            if let Some(h) = pm.get_mut("httpGet").and_then(Value::as_object_mut) {
                set_default(h, "path", json!("/"));
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
}

/// Pod spec defaults (also inside templates).
pub fn default_pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    set_default(m, "restartPolicy", json!("Always"));
    set_default(m, "terminationGracePeriodSeconds", json!(30));
    set_default(m, "dnsPolicy", json!("ClusterFirst"));
    set_default(m, "securityContext", json!({}));
    set_default(m, "schedulerName", json!("default-scheduler"));
    if let Some(sa) = m.get("serviceAccount").cloned()
        && m.get("serviceAccountName").is_none()
    {
        m.insert("serviceAccountName".into(), sa);
    }
    for key in ["containers", "initContainers"] {
        if let Some(cs) = m.get_mut(key).and_then(Value::as_array_mut) {
            for c in cs {
                default_container(c);
            }
        }
    }
}

/// Applies the defaults Kubernetes applies to `obj` of kind `r` on create
/// and update.
pub fn apply_defaults(r: &Resource, obj: &mut Value) {
    if let Some(defaults) = super::kinds::of(r).and_then(|k| k.defaults) {
        defaults(obj);
    }
}

/// A StorageClass: `Delete` reclaim, `Immediate` binding.
pub(super) fn default_storage_class(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        set_default(m, "reclaimPolicy", json!("Delete"));
        set_default(m, "volumeBindingMode", json!("Immediate"));
    }
}

/// A Pod: its spec's defaults, requests from limits, the default service account and service links, and the DefaultTolerationSeconds admission's tolerations (300 s for not-ready and unreachable).
pub(super) fn default_pod(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec") {
        default_pod_spec(spec);
        super::limits::requests_from_limits(spec);
        let Some(m) = spec.as_object_mut() else {
            return;
        };
        set_default(m, "serviceAccountName", json!("default"));
        set_default(m, "enableServiceLinks", json!(true));
        // `priority` and `preemptionPolicy` come from the Priority
        // admission plugin (`priority`), not from defaults.
        // DefaultTolerationSeconds admission.
        let tolerations = m.entry("tolerations").or_insert_with(|| json!([]));
        if let Some(t) = tolerations.as_array_mut() {
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                let has = t.iter().any(|x| {
                    x.get("key").and_then(Value::as_str) == Some(key)
                        || (x.get("operator").and_then(Value::as_str) == Some("Exists")
                            && x.get("key").is_none())
                });
                if !has {
                    t.push(json!({"key": key, "operator": "Exists",
                        "effect": "NoExecute", "tolerationSeconds": 300}));
                }
            }
        }
    }
}

/// The workload kinds: replicas (not for DaemonSets), history, the strategy each kind defaults, and the pod template's spec.
pub(super) fn default_workload(kind: &str, obj: &mut Value) {
    if let Some(spec) = obj_mut(obj, "spec") {
        if kind != "DaemonSet" {
            set_default(spec, "replicas", json!(1));
        }
        set_default(spec, "revisionHistoryLimit", json!(10));
        match kind {
            "Deployment" => {
                set_default(spec, "progressDeadlineSeconds", json!(600));
                default_strategy(
                    spec,
                    "strategy",
                    &[("maxUnavailable", json!("25%")), ("maxSurge", json!("25%"))],
                );
            }
            "StatefulSet" => {
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                default_strategy(spec, "updateStrategy", &[("partition", json!(0))]);
                set_default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
            }
            "DaemonSet" => {
                default_strategy(
                    spec,
                    "updateStrategy",
                    &[("maxUnavailable", json!(1)), ("maxSurge", json!(0))],
                );
            }
            _ => {}
        }
        if let Some(t) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
            default_pod_spec(t);
        }
    }
}

/// A Job: one completion unless parallelism alone is set (a work queue), back-off limit 6, not suspended, the pod template's spec.
pub(super) fn default_job(obj: &mut Value) {
    if let Some(spec) = obj_mut(obj, "spec") {
        // Both unset: one pod to completion. Parallelism alone: a
        // work queue (completions stays unset).
        if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
            spec.insert("completions".into(), json!(1));
        }
        set_default(spec, "parallelism", json!(1));
        set_default(spec, "backoffLimit", json!(6));
        set_default(spec, "completionMode", json!("NonIndexed"));
        set_default(spec, "suspend", json!(false));
        if let Some(t) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
            default_pod_spec(t);
        }
    }
}

/// A CronJob: `Allow`, not suspended, history limits 3 and 1, the job template's pod spec.
pub(super) fn default_cron_job(obj: &mut Value) {
    if let Some(spec) = obj_mut(obj, "spec") {
        set_default(spec, "concurrencyPolicy", json!("Allow"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
        if let Some(t) = spec
            .get_mut("jobTemplate")
            .and_then(|t| t.get_mut("spec"))
            .and_then(|t| t.get_mut("template"))
            .and_then(|t| t.get_mut("spec"))
        {
            default_pod_spec(t);
        }
    }
}

/// A Service: ClusterIP, no affinity (10,800 s for ClientIP), the single-stack IPv4 policy, traffic policies, and each port's protocol and target port.
pub(super) fn default_service(obj: &mut Value) {
    if let Some(spec) = obj_mut(obj, "spec") {
        set_default(spec, "type", json!("ClusterIP"));
        set_default(spec, "sessionAffinity", json!("None"));
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if ty != "ExternalName" {
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            set_default(spec, "ipFamilies", json!(["IPv4"]));
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            set_default(spec, "externalTrafficPolicy", json!("Cluster"));
        }
        if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
            set_default(
                spec,
                "sessionAffinityConfig",
                json!({"clientIP": {"timeoutSeconds": 10800}}),
            );
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                if let Some(pm) = p.as_object_mut() {
                    set_default(pm, "protocol", json!("TCP"));
                    if let Some(port) = pm.get("port").cloned() {
                        set_default(pm, "targetPort", port);
                    }
                }
            }
        }
    }
}

/// A Secret: `Opaque`, with the write-only `stringData` folded into `data`.
pub(super) fn default_secret(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        set_default(m, "type", json!("Opaque"));
        // stringData is write-only: folded into data.
        if let Some(Value::Object(sd)) = m.remove("stringData") {
            let data = m.entry("data").or_insert_with(|| json!({}));
            if let Some(d) = data.as_object_mut() {
                use base64::Engine as _;
                for (k, v) in sd {
                    let text = v.as_str().unwrap_or("").as_bytes().to_vec();
                    d.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(text)),
                    );
                }
            }
        }
    }
}

/// A Namespace: its `kubernetes.io/metadata.name` label, the `kubernetes` finalizer, `Active`.
pub(super) fn default_namespace(obj: &mut Value) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Some(meta) = obj_mut(obj, "metadata") {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    if let Some(spec) = obj_mut(obj, "spec") {
        set_default(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = obj_mut(obj, "status") {
        set_default(status, "phase", json!("Active"));
    }
}

/// A PersistentVolume: `Retain`, `Filesystem`, `Pending`.
pub(super) fn default_persistent_volume(obj: &mut Value) {
    if let Some(spec) = obj_mut(obj, "spec") {
        set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = obj_mut(obj, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

/// A PersistentVolumeClaim: `Filesystem`, `Pending`.
pub(super) fn default_persistent_volume_claim(obj: &mut Value) {
    if let Some(spec) = obj_mut(obj, "spec") {
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = obj_mut(obj, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

/// An `autoscaling/v1` HorizontalPodAutoscaler: one replica at least.
pub(super) fn default_hpa_v1(obj: &mut Value) {
    if let Some(spec) = obj_mut(obj, "spec") {
        set_default(spec, "minReplicas", json!(1));
    }
}
