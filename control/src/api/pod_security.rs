//! The PodSecurity admission plugin: a namespace's
//! `pod-security.kubernetes.io/{enforce,warn,audit}` labels (and their
//! `-version`) choose a Pod Security Standards level, and pods that violate
//! the `enforce` level are refused (`403`, kube-apiserver's message);
//! violations of the `warn` level come back as `Warning` headers. Workload
//! objects (Deployments, Jobs, …) are checked on their pod template for
//! `warn` only, as upstream. Namespaces listed as exempt, and pods of an
//! exempt runtime class, are not checked. The levels of namespaces without
//! labels come from the server's configuration (upstream's default:
//! `privileged`).
//!
//! Not done: the `audit` level (there is no audit log), exempt user names
//! (internal callers create without a user), and `-version` pins (every
//! version is checked as `latest`).

use rudder_k8s::pod_security::{Level, check};
use serde_json::Value;

use super::{resources::Resource, status::ApiError};

const LABEL: &str = "pod-security.kubernetes.io/";

/// The cluster-wide defaults and exemptions.
#[derive(Clone, Debug)]
pub struct PodSecurityConfig {
    pub enforce: Level,
    pub warn: Level,
    pub exempt_namespaces: Vec<String>,
    pub exempt_runtime_classes: Vec<String>,
}

impl Default for PodSecurityConfig {
    fn default() -> Self {
        Self {
            enforce: Level::Privileged,
            warn: Level::Privileged,
            exempt_namespaces: Vec::new(),
            exempt_runtime_classes: Vec::new(),
        }
    }
}

/// The pod spec of `obj`: a pod's, or a workload's template's.
fn pod_spec<'a>(r: &Resource, obj: &'a Value) -> Option<&'a Value> {
    match r.kind {
        "Pod" => obj.get("spec"),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => obj.pointer("/spec/template/spec"),
        "CronJob" => obj.pointer("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// A mode's level and version from the namespace's labels, else the
/// default; an unknown level counts as `restricted`.
fn mode(ns: &Value, which: &str, default: Level) -> (Level, String) {
    let labels = ns.pointer("/metadata/labels");
    let get = |k: &str| {
        labels
            .and_then(|l| l.get(format!("{LABEL}{k}")))
            .and_then(Value::as_str)
    };
    let level = get(which).map_or(default, |v| Level::parse(v).unwrap_or(Level::Restricted));
    let version = get(&format!("{which}-version"))
        .filter(|v| !v.is_empty())
        .unwrap_or("latest")
        .to_owned();
    (level, version)
}

/// Checks `obj` (of resource `r`, in namespace object `ns`): the
/// warnings to send, or the refusal.
pub fn admit(
    cfg: &PodSecurityConfig,
    r: &Resource,
    obj: &Value,
    ns: &Value,
) -> Result<Vec<String>, ApiError> {
    let Some(spec) = pod_spec(r, obj) else {
        return Ok(Vec::new());
    };
    let ns_name = ns
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let runtime_class = spec.get("runtimeClassName").and_then(Value::as_str);
    if cfg.exempt_namespaces.iter().any(|n| n == ns_name)
        || runtime_class.is_some_and(|rc| cfg.exempt_runtime_classes.iter().any(|e| e == rc))
    {
        return Ok(Vec::new());
    }
    // The object passed the typed check: its pod spec decodes.
    let Ok(spec) = serde_json::from_value::<k8s_openapi::api::core::v1::PodSpec>(spec.clone())
    else {
        return Ok(Vec::new());
    };
    let said = |level: Level| -> String {
        check(level, &spec)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if r.kind == "Pod" {
        let (level, version) = mode(ns, "enforce", cfg.enforce);
        let v = said(level);
        if !v.is_empty() {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(ApiError::forbidden(format!(
                "pods {name:?} is forbidden: violates PodSecurity \"{}:{version}\": {v}",
                level.as_str()
            )));
        }
    }
    let (level, version) = mode(ns, "warn", cfg.warn);
    let v = said(level);
    Ok(if v.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "would violate PodSecurity \"{}:{version}\": {v}",
            level.as_str()
        )]
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::resources::by_kind;

    fn ns(labels: &Value) -> Value {
        json!({"metadata": {"name": "team", "labels": labels}})
    }

    fn privileged_pod() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "securityContext": {"privileged": true}}]}})
    }

    #[test]
    fn enforce_refuses_pods_and_warn_warns_workloads() {
        let cfg = PodSecurityConfig::default();
        let pods = by_kind("", "Pod").unwrap();
        let e = admit(
            &cfg,
            pods,
            &privileged_pod(),
            &ns(&json!({LABEL.to_owned() + "enforce": "baseline"})),
        )
        .unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
        );
        // No labels: the default, privileged.
        assert!(
            admit(&cfg, pods, &privileged_pod(), &ns(&json!({})))
                .unwrap()
                .is_empty()
        );
        // A Deployment is warned about, never refused.
        let deploy = json!({"spec": {"template": privileged_pod()}});
        let w = admit(
            &cfg,
            by_kind("apps", "Deployment").unwrap(),
            &deploy,
            &ns(&json!({LABEL.to_owned() + "enforce": "restricted", LABEL.to_owned() + "warn": "baseline", LABEL.to_owned() + "warn-version": "v1.33"})),
        )
        .unwrap();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("would violate PodSecurity \"baseline:v1.33\": privileged"),
            "{w:?}"
        );
        // Exempt namespaces, and a cluster default.
        let strict = PodSecurityConfig {
            enforce: Level::Restricted,
            exempt_namespaces: vec!["team".into()],
            ..PodSecurityConfig::default()
        };
        assert!(admit(&strict, pods, &privileged_pod(), &ns(&json!({}))).is_ok());
        let e = admit(
            &PodSecurityConfig {
                enforce: Level::Restricted,
                ..PodSecurityConfig::default()
            },
            pods,
            &privileged_pod(),
            &ns(&json!({LABEL.to_owned() + "enforce": "nonsense"})),
        )
        .unwrap_err();
        assert!(e.message.contains("\"restricted:latest\""), "{}", e.message);
    }
}
