//! API aggregation (`apiregistration.k8s.io/v1` APIServices): a
//! group-version served by another apiserver in the cluster, behind this
//! one, as kube-apiserver's aggregator does.
//!
//! Every built-in group-version has a local APIService (made at start, as
//! kube-apiserver's autoregistration does). An APIService naming a Service
//! is remote: [`controller`] probes its discovery document and keeps its
//! `Available` condition, and [`proxy`] forwards each request for its
//! group-version, authenticated and authorized here first, to a ready
//! endpoint of the Service over TLS (its `caBundle`, or no check at all
//! under `insecureSkipTLSVerify`), presenting the front-proxy client
//! certificate and the user in `X-Remote-User`/`X-Remote-Group`, which the
//! extension server trusts through the
//! `kube-system/extension-apiserver-authentication` ConfigMap. A remote
//! APIService for a built-in group-version (metrics-server's
//! `v1beta1.metrics.k8s.io`) takes over from the built-in one.

pub mod controller;
pub mod proxy;

use std::sync::{Arc, LazyLock, RwLock};

use serde_json::{Value, json};

use crate::api::status::Cause;

/// A remote group-version.
#[derive(Debug)]
pub struct Remote {
    pub name: String,
    pub group: String,
    pub version: String,
    /// (namespace, name, port) of the Service.
    pub service: (String, String, u16),
    pub tls: Arc<rustls::ClientConfig>,
    pub available: bool,
    /// Its `APIResourceList`, as last probed (for aggregated discovery).
    pub resources: Value,
    /// The group's priority, for discovery order.
    pub priority: i64,
}

static REMOTES: LazyLock<RwLock<Arc<Vec<Arc<Remote>>>>> = LazyLock::new(RwLock::default);

pub fn remotes() -> Arc<Vec<Arc<Remote>>> {
    REMOTES.read().expect("aggregator registry").clone()
}

fn install(r: Vec<Arc<Remote>>) {
    *REMOTES.write().expect("aggregator registry") = Arc::new(r);
}

/// The remote serving `group`/`version`, if any.
pub fn remote_for(group: &str, version: &str) -> Option<Arc<Remote>> {
    remotes()
        .iter()
        .find(|r| r.group == group && r.version == version)
        .cloned()
}

/// The remote group-versions, for discovery (available or not: a client
/// listing them learns which one fails, as from kube-apiserver).
pub fn group_versions() -> Vec<(String, String)> {
    let mut v: Vec<(i64, String, String)> = remotes()
        .iter()
        .map(|r| (-r.priority, r.group.clone(), r.version.clone()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, g, v)| (g, v)).collect()
}

/// What a request for a remote group-version is authorized as, from the
/// path after `/apis/<group>/<version>` (kube-apiserver's RequestInfo).
pub fn attributes(
    method: &axum::http::Method,
    group: &str,
    rest: &[&str],
    q: &crate::api::handlers::Query,
) -> crate::api::rbac::Attributes {
    let (ns, parts): (&str, &[&str]) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (ns, tail),
        other => ("", other),
    };
    let (resource, name, sub) = match parts {
        [] => {
            return crate::api::rbac::Attributes::non_resource(
                &method.as_str().to_lowercase(),
                &format!("/apis/{group}"),
            );
        }
        [r] => (*r, "", ""),
        [r, n] => (*r, *n, ""),
        [r, n, s, ..] => (*r, *n, *s),
    };
    let verb = crate::api::verb_of(method, !name.is_empty(), q);
    crate::api::rbac::Attributes::resource(verb, group, resource, sub, ns, name)
}

/// `SetDefaults_ServiceReference`: the port.
pub fn apply_defaults(obj: &mut Value) {
    if let Some(svc) = obj
        .get_mut("spec")
        .and_then(|s| s.get_mut("service"))
        .and_then(Value::as_object_mut)
    {
        svc.entry("port").or_insert_with(|| json!(443));
    }
}

/// Validates an APIService as kube-aggregator does.
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let version = spec["version"].as_str().unwrap_or("");
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if version.is_empty() {
        causes.push(Cause::required("spec.version"));
    }
    if name != format!("{version}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "must be `spec.version+\".\"+spec.group`",
        ));
    }
    for (field, max) in [("groupPriorityMinimum", 20000), ("versionPriority", 1000)] {
        match spec[field].as_i64() {
            Some(p) if (1..=max).contains(&p) => {}
            Some(p) => causes.push(Cause::invalid(
                format!("spec.{field}"),
                &json!(p),
                format!("must be positive and less than {max}"),
            )),
            None if spec["service"].is_object() => causes.push(Cause::invalid(
                format!("spec.{field}"),
                &json!(0),
                format!("must be positive and less than {max}"),
            )),
            None => {}
        }
    }
    let insecure = spec["insecureSkipTLSVerify"].as_bool() == Some(true);
    let ca = spec["caBundle"].as_str().is_some_and(|c| !c.is_empty());
    if insecure && ca {
        causes.push(Cause::invalid(
            "spec.insecureSkipTLSVerify",
            &json!(true),
            "may not be true if caBundle is present",
        ));
    }
    if let Some(svc) = spec.get("service").filter(|s| s.is_object()) {
        for k in ["namespace", "name"] {
            if svc[k].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("spec.service.{k}")));
            }
        }
        if !insecure && !ca {
            causes.push(Cause::required_because(
                "spec.caBundle",
                "a caBundle or insecureSkipTLSVerify is needed to reach the service",
            ));
        }
        if ca && crate::api::webhook::config::tls_for(spec["caBundle"].as_str()).is_err() {
            causes.push(Cause::invalid(
                "spec.caBundle",
                &json!("<bytes>"),
                "must be base64-encoded PEM certificates",
            ));
        }
    }
}
