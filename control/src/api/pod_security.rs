//! The PodSecurity admission plugin: a namespace's
//! `pod-security.kubernetes.io/{enforce,warn,audit}` labels (and their
//! `-version`) choose a Pod Security Standards level, and pods that violate
//! the `enforce` level are refused (`403`, kube-apiserver's message);
//! violations of the `warn` level come back as `Warning` headers. Workload
//! objects (Deployments, Jobs, …) are checked on their pod template for
//! `warn` and `audit` only, as upstream. Namespaces listed as exempt, pods
//! of an exempt runtime class and requests of an exempt user are not
//! checked. The levels of namespaces without labels come from the server's
//! configuration (upstream's default: `privileged`). A `-version` label
//! pins the controls of that release; an invalid level counts as
//! `restricted` and an invalid version as `latest`, as upstream.
//!
//! Rudder has no audit log: violations of the `audit` level are written
//! to the server's log (target `rudder::audit`) with the text upstream
//! puts in the `pod-security.kubernetes.io/audit-violations` annotation.

use rudder_k8s::pod_security::{Level, Version, check};
use serde_json::Value;

use super::{resources::Resource, status::ApiError};

const LABEL: &str = "pod-security.kubernetes.io/";

/// The cluster-wide defaults and exemptions.
#[derive(Clone, Debug)]
pub struct PodSecurityConfig {
    pub enforce: Level,
    pub warn: Level,
    pub audit: Level,
    pub exempt_namespaces: Vec<String>,
    pub exempt_runtime_classes: Vec<String>,
    pub exempt_usernames: Vec<String>,
}

impl Default for PodSecurityConfig {
    fn default() -> Self {
        Self {
            enforce: Level::Privileged,
            warn: Level::Privileged,
            audit: Level::Privileged,
            exempt_namespaces: Vec::new(),
            exempt_runtime_classes: Vec::new(),
            exempt_usernames: Vec::new(),
        }
    }
}

/// The pod spec of `obj`: a pod's, or a workload's template's, where its
/// kind's entry in [`super::kinds`] says it keeps one.
fn pod_spec<'a>(r: &Resource, obj: &'a Value) -> Option<&'a Value> {
    obj.pointer(super::kinds::of(r)?.pod_spec?)
}

/// A mode's level and version from the namespace's labels, else the
/// default; an unknown level counts as `restricted`.
fn mode(ns: &Value, which: &str, default: Level) -> (Level, Version) {
    let labels = ns.pointer("/metadata/labels");
    let get = |k: &str| {
        labels
            .and_then(|l| l.get(format!("{LABEL}{k}")))
            .and_then(Value::as_str)
    };
    let level = get(which).map_or(default, |v| Level::parse(v).unwrap_or(Level::Restricted));
    let version = get(&format!("{which}-version"))
        .and_then(Version::parse)
        .unwrap_or(Version::Latest);
    (level, version)
}

/// Checks `obj` (of resource `r`, in namespace object `ns`, asked by the
/// user named `user`, if any): the warnings to send, or the refusal.
pub fn admit(
    cfg: &PodSecurityConfig,
    r: &Resource,
    obj: &Value,
    ns: &Value,
    user: Option<&str>,
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
        || user.is_some_and(|u| cfg.exempt_usernames.iter().any(|e| e == u))
    {
        return Ok(Vec::new());
    }
    // The object passed the typed check: its pod spec decodes.
    let Ok(spec) = serde_json::from_value::<k8s_openapi::api::core::v1::PodSpec>(spec.clone())
    else {
        return Ok(Vec::new());
    };
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let said = |(level, version): (Level, Version)| -> String {
        check(level, version, &spec)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if r.builtin_kind() == "Pod" {
        let (level, version) = mode(ns, "enforce", cfg.enforce);
        let v = said((level, version));
        if !v.is_empty() {
            return Err(ApiError::forbidden_on(
                r,
                name,
                format!("violates PodSecurity \"{}:{version}\": {v}", level.as_str()),
            ));
        }
    }
    let (level, version) = mode(ns, "audit", cfg.audit);
    let v = said((level, version));
    if !v.is_empty() {
        tracing::warn!(
            target: "rudder::audit",
            kind = r.kind,
            namespace = ns_name,
            name,
            user = user.unwrap_or(""),
            "pod-security.kubernetes.io/audit-violations: would violate PodSecurity \"{}:{version}\": {v}",
            level.as_str()
        );
    }
    let (level, version) = mode(ns, "warn", cfg.warn);
    let v = said((level, version));
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
            None,
        )
        .unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
        );
        // No labels: the default, privileged.
        assert!(
            admit(&cfg, pods, &privileged_pod(), &ns(&json!({})), None)
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
            None,
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
        assert!(admit(&strict, pods, &privileged_pod(), &ns(&json!({})), None).is_ok());
        let e = admit(
            &PodSecurityConfig {
                enforce: Level::Restricted,
                ..PodSecurityConfig::default()
            },
            pods,
            &privileged_pod(),
            &ns(&json!({LABEL.to_owned() + "enforce": "nonsense"})),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("\"restricted:latest\""), "{}", e.message);
        // Exempt users; a version pin, and an invalid one read as latest.
        let exempt = PodSecurityConfig {
            enforce: Level::Restricted,
            exempt_usernames: vec!["ci-bot".into()],
            ..PodSecurityConfig::default()
        };
        assert!(
            admit(
                &exempt,
                pods,
                &privileged_pod(),
                &ns(&json!({})),
                Some("ci-bot")
            )
            .is_ok()
        );
        assert!(
            admit(
                &exempt,
                pods,
                &privileged_pod(),
                &ns(&json!({})),
                Some("eve")
            )
            .is_err()
        );
        let keepalive = json!({"metadata": {"name": "p"}, "spec": {
            "securityContext": {"sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]},
            "containers": [{"name": "c", "image": "i"}]}});
        let pinned = |version: &str| {
            admit(
                &cfg,
                pods,
                &keepalive,
                &ns(
                    &json!({LABEL.to_owned() + "enforce": "baseline", LABEL.to_owned() + "enforce-version": version}),
                ),
                None,
            )
        };
        assert!(pinned("v1.29").is_ok());
        assert!(pinned("nonsense").is_ok());
        let e = pinned("v1.28").unwrap_err();
        assert!(
            e.message.contains("\"baseline:v1.28\": forbidden sysctls"),
            "{}",
            e.message
        );
    }
}
