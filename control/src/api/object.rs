//! Objects on their way in: decoding, typed checking against the
//! Kubernetes schema (`k8s-openapi`), unknown fields (defaults are
//! [`super::defaults`]), and validation with per-field causes.

use serde_json::{Value, json};

use rudder_k8s::names::{
    CONFIG_KEY_MSG, DNS_LABEL_MSG, DNS_SUBDOMAIN_MSG, LABEL_VALUE_MSG, QUALIFIED_NAME_MSG,
    is_config_key, is_dns_label, is_dns_subdomain, is_label_value, is_qualified_name,
};

pub use super::defaults::{apply_defaults, default_hpa_v2, default_pod_spec};
use super::{
    resources::Resource,
    status::{ApiError, Cause},
};

/// The largest request body accepted (etcd's request limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Decodes a JSON, YAML or Kubernetes protobuf body into one object.
pub fn decode(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    let v: Value = if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        super::pb::decode(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as protobuf: {e}"
            ))
        })?
    } else if content_type.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))?
    } else if content_type.is_empty() || content_type.contains("json") {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        })?
    } else {
        return Err(ApiError::unsupported_media_type(content_type));
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(v)
}

/// Decodes `v` as its Kubernetes type and back: the fields that do not
/// survive are unknown. Errors are type mismatches (a string where a number
/// belongs, …).
pub fn typed_check(r: &Resource, v: &Value) -> Result<Vec<String>, ApiError> {
    let Some(typed) = super::kinds::of(r).and_then(|k| k.typed) else {
        return Ok(Vec::new());
    };
    let back = typed(v).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {e}",
            r.kind, r.version, r.kind
        ))
    })?;
    let mut unknown = Vec::new();
    unknown_fields(v, &back, "", &mut unknown);
    Ok(unknown)
}

fn unknown_fields(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    // Free-form maps (labels, data, …) survive whole.
                    Some(kb) => unknown_fields(v, kb, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                unknown_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

// ---- names and metadata -------------------------------------------------

/// Kinds whose names must be DNS labels (they become DNS names or
/// hostnames).
fn name_is_label(kind: &str) -> bool {
    matches!(kind, "Namespace" | "Service")
}

pub fn validate_name(r: &Resource, name: &str, field: &str, causes: &mut Vec<Cause>) {
    if name.is_empty() {
        causes.push(Cause::required(field));
        return;
    }
    let (ok, msg) = if name_is_label(r.builtin_kind()) {
        (is_dns_label(name), DNS_LABEL_MSG)
    } else if matches!(
        r.group,
        "rbac.authorization.k8s.io" | "apiregistration.k8s.io"
    ) {
        // RBAC and APIService names are path segments (`v1.` names the
        // core group's APIService).
        (
            !name.contains('/') && !name.contains('%') && name != "." && name != "..",
            "may not contain '/' or '%'",
        )
    } else {
        (is_dns_subdomain(name), DNS_SUBDOMAIN_MSG)
    };
    if !ok {
        causes.push(Cause::invalid(field, &json!(name), msg));
    }
}

fn validate_metadata(r: &Resource, obj: &Value, causes: &mut Vec<Cause>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    validate_name(r, name, "metadata.name", causes);
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                causes.push(Cause::invalid(
                    "metadata.labels",
                    &json!(k),
                    QUALIFIED_NAME_MSG,
                ));
            }
            if !v.as_str().is_some_and(is_label_value) {
                causes.push(Cause::invalid("metadata.labels", v, LABEL_VALUE_MSG));
            }
        }
    }
    if let Some(ann) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (k, v) in ann {
            total += k.len() + v.as_str().map_or(0, str::len);
            if !is_qualified_name(k) {
                causes.push(Cause::invalid(
                    "metadata.annotations",
                    &json!(k),
                    "name part must consist of alphanumeric characters, '-', '_' or '.'",
                ));
            }
        }
        if total > 256 * 1024 {
            causes.push(Cause::too_long(
                "metadata.annotations",
                "must have at most 262144 bytes",
            ));
        }
    }
}

// ---- per-kind validation ------------------------------------------------

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// A pod spec by the rules the kubelet applies too
/// ([`rudder_k8s::pod::validate_pod_template`]); the spec has passed the
/// typed check, so it decodes. `claims`: the volume claim templates the
/// mounts may name too.
fn validate_pod_spec(
    spec: &Value,
    base: &str,
    causes: &mut Vec<Cause>,
    restart: &[&str],
    claims: &[&str],
) {
    match serde_json::from_value::<k8s_openapi::api::core::v1::PodSpec>(spec.clone()) {
        Ok(spec) => causes.extend(rudder_k8s::pod::validate_pod_template(
            &spec,
            &rudder_k8s::field::Path::new(base),
            restart,
            claims,
        )),
        Err(e) => causes.push(Cause::invalid(base, &json!("…"), e.to_string())),
    }
}

fn validate_workload(obj: &Value, causes: &mut Vec<Cause>, restart: &[&str]) {
    let selector = obj.pointer("/spec/selector");
    match selector {
        None | Some(Value::Null) => causes.push(Cause::required("spec.selector")),
        Some(sel) => match super::selectors::LabelSelector::from_object(sel) {
            Err(e) => causes.push(Cause::invalid("spec.selector", sel, e)),
            Ok(sel) => {
                if sel.is_empty() {
                    causes.push(Cause::invalid(
                        "spec.selector",
                        &json!({}),
                        "empty selector is invalid for deployment",
                    ));
                }
                let labels = obj
                    .pointer("/spec/template")
                    .map(super::selectors::labels_of)
                    .unwrap_or_default();
                if !sel.matches(&labels) {
                    causes.push(Cause::invalid(
                        "spec.template.metadata.labels",
                        &json!(labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        },
    }
    if let Some(n) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
        && n < 0
    {
        causes.push(Cause::invalid(
            "spec.replicas",
            &json!(n),
            "must be greater than or equal to 0",
        ));
    }
    let claims: Vec<&str> = obj
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.pointer("/metadata/name").and_then(Value::as_str))
        .collect();
    match obj.pointer("/spec/template/spec") {
        Some(spec) => validate_pod_spec(spec, "spec.template.spec", causes, restart, &claims),
        None => causes.push(Cause::required("spec.template.spec.containers")),
    }
}

pub(super) fn validate_service(obj: &Value, causes: &mut Vec<Cause>) {
    let ty = s(obj, "/spec/type").unwrap_or("ClusterIP");
    let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !types.contains(&ty) {
        causes.push(Cause::not_supported("spec.type", &json!(ty), &types));
    }
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    let headless = s(obj, "/spec/clusterIP") == Some("None");
    if ty != "ExternalName" && !headless && ports.is_none_or(Vec::is_empty) {
        causes.push(Cause::required("spec.ports"));
    }
    let multi = ports.is_some_and(|p| p.len() > 1);
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let f = format!("spec.ports[{i}]");
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(Cause::invalid(
                format!("{f}.port"),
                &json!(port),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if multi && name.is_empty() {
            causes.push(Cause::required(format!("{f}.name")));
        }
        if !name.is_empty() && !names.insert(name.to_owned()) {
            causes.push(Cause::duplicate(format!("{f}.name"), &json!(name)));
        }
        if let Some(proto) = p.get("protocol").and_then(Value::as_str)
            && !["TCP", "UDP", "SCTP"].contains(&proto)
        {
            causes.push(Cause::not_supported(
                format!("{f}.protocol"),
                &json!(proto),
                &["SCTP", "TCP", "UDP"],
            ));
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64)
            && np != 0
            && ty == "ClusterIP"
        {
            causes.push(Cause::forbidden(
                format!("{f}.nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
    }
    if let Some(a) = s(obj, "/spec/sessionAffinity")
        && !["None", "ClientIP"].contains(&a)
    {
        causes.push(Cause::not_supported(
            "spec.sessionAffinity",
            &json!(a),
            &["ClientIP", "None"],
        ));
    }
}

/// A JSON list of strings (anything else in it, or a missing list, left
/// out).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The API groups served by the apiserver itself.
fn builtin_groups() -> Vec<&'static str> {
    let mut g: Vec<&'static str> = super::resources::RESOURCES
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    g.dedup();
    g
}

/// Semantic validation: `Err` carries the causes for a `422 Invalid`.
pub fn validate(r: &Resource, obj: &Value) -> Result<(), Vec<Cause>> {
    let mut causes = Vec::new();
    if !r.kind.ends_with("SubjectAccessReview") {
        validate_metadata(r, obj, &mut causes);
    }
    if let Some(rules) = super::kinds::of(r).and_then(|k| k.validate) {
        rules(obj, &mut causes);
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// A CustomResourceDefinition, whose group may not be a built-in one.
pub(super) fn validate_crd(obj: &Value, causes: &mut Vec<Cause>) {
    super::crd::definition::validate(obj, &builtin_groups(), causes);
}

/// A Pod: its spec, any restart policy.
pub(super) fn validate_pod(obj: &Value, causes: &mut Vec<Cause>) {
    match obj.get("spec") {
        Some(spec) => {
            validate_pod_spec(spec, "spec", causes, &["Always", "OnFailure", "Never"], &[]);
        }
        None => causes.push(Cause::required("spec.containers")),
    }
}

/// Deployments, ReplicaSets, DaemonSets and StatefulSets: pods that always
/// restart.
pub(super) fn validate_apps_workload(obj: &Value, causes: &mut Vec<Cause>) {
    validate_workload(obj, causes, &["Always"]);
}

/// A Job: pods that restart on failure or never, and say which.
pub(super) fn validate_job(obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(spec) = obj.pointer("/spec/template/spec") {
        validate_pod_spec(
            spec,
            "spec.template.spec",
            causes,
            &["OnFailure", "Never"],
            &[],
        );
        if spec.get("restartPolicy").is_none() {
            causes.push(Cause::required("spec.template.spec.restartPolicy"));
        }
    } else {
        causes.push(Cause::required("spec.template.spec.containers"));
    }
}

/// A CronJob: a schedule, and its job template's pods.
pub(super) fn validate_cron_job(obj: &Value, causes: &mut Vec<Cause>) {
    if s(obj, "/spec/schedule").is_none_or(str::is_empty) {
        causes.push(Cause::required("spec.schedule"));
    }
    match obj.pointer("/spec/jobTemplate/spec/template/spec") {
        Some(spec) => validate_pod_spec(
            spec,
            "spec.jobTemplate.spec.template.spec",
            causes,
            &["OnFailure", "Never"],
            &[],
        ),
        None => causes.push(Cause::required(
            "spec.jobTemplate.spec.template.spec.containers",
        )),
    }
}

pub(super) fn validate_config_map(obj: &Value, causes: &mut Vec<Cause>) {
    validate_config("ConfigMap", obj, causes);
}

pub(super) fn validate_secret(obj: &Value, causes: &mut Vec<Cause>) {
    validate_config("Secret", obj, causes);
}

/// A ConfigMap's or Secret's size and keys.
fn validate_config(kind: &str, obj: &Value, causes: &mut Vec<Cause>) {
    config_size(kind, obj, causes);
    for field in ["data", "binaryData", "stringData"] {
        for k in obj
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|m| m.0)
        {
            if !is_config_key(k) {
                causes.push(Cause::invalid(
                    format!("{field}[{k}]"),
                    &json!(k),
                    CONFIG_KEY_MSG,
                ));
            }
        }
    }
}

/// The most data a ConfigMap or Secret may hold (kube-apiserver's
/// `MaxSecretSize`, the same for ConfigMaps).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// A ConfigMap's or Secret's keys and values together, at most 1 MiB.
fn config_size(kind: &str, obj: &Value, causes: &mut Vec<Cause>) {
    let mut total = 0usize;
    for field in ["data", "binaryData", "stringData"] {
        for (k, v) in obj
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let len = v.as_str().map_or(0, str::len);
            // Secret `data` and ConfigMap `binaryData` are base64.
            let decoded = if field == "binaryData" || (kind == "Secret" && field == "data") {
                len / 4 * 3
            } else {
                len
            };
            total += k.len() + decoded;
        }
    }
    if total > MAX_CONFIG_BYTES {
        causes.push(Cause::too_long(
            "[]",
            format!("must have at most {MAX_CONFIG_BYTES} bytes"),
        ));
    }
}

/// An EndpointSlice: at most 1,000 endpoints and 100 ports, 1 to 100
/// addresses per endpoint, each valid for its type and not special.
pub(super) fn validate_endpoint_slice(obj: &Value, causes: &mut Vec<Cause>) {
    let endpoints = obj.get("endpoints").and_then(Value::as_array);
    let n = endpoints.map_or(0, Vec::len);
    if n > 1000 {
        causes.push(Cause::too_many("endpoints", n, 1000));
        return;
    }
    let ports = obj
        .get("ports")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if ports > 100 {
        causes.push(Cause::too_many("ports", ports, 100));
    }
    let ip = matches!(s(obj, "/addressType"), Some("IPv4" | "IPv6"));
    for (i, e) in endpoints.into_iter().flatten().enumerate() {
        let addrs = e.get("addresses").and_then(Value::as_array);
        match addrs.map_or(0, Vec::len) {
            0 => causes.push(Cause::required_because(
                format!("endpoints[{i}].addresses"),
                "must contain at least 1 address",
            )),
            n if n > 100 => {
                causes.push(Cause::too_many(format!("endpoints[{i}].addresses"), n, 100));
            }
            _ => {}
        }
        for (j, a) in addrs.into_iter().flatten().enumerate() {
            if ip {
                let (_, errs) = rudder_k8s::net::validate_ip(
                    a.as_str().unwrap_or_default(),
                    &format!("endpoints[{i}].addresses[{j}]"),
                );
                causes.extend(errs);
            }
        }
    }
}

/// An HPA of either version (`autoscaling/v1` has
/// `targetCPUUtilizationPercentage`, v2 has `metrics`).
pub(super) fn validate_hpa(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    for f in ["kind", "name"] {
        if spec["scaleTargetRef"][f].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("spec.scaleTargetRef.{f}")));
        }
    }
    let min = spec["minReplicas"].as_i64().unwrap_or(1);
    if min < 1 {
        causes.push(Cause::invalid(
            "spec.minReplicas",
            &json!(min),
            "must be greater than or equal to 1",
        ));
    }
    match spec["maxReplicas"].as_i64() {
        None => causes.push(Cause::required("spec.maxReplicas")),
        Some(max) if max < 1 => causes.push(Cause::invalid(
            "spec.maxReplicas",
            &json!(max),
            "must be greater than 0",
        )),
        Some(max) if max < min => causes.push(Cause::invalid(
            "spec.maxReplicas",
            &json!(max),
            "must be greater than or equal to `minReplicas`",
        )),
        Some(_) => {}
    }
    if let Some(t) = spec.get("targetCPUUtilizationPercentage")
        && t.as_i64().is_none_or(|t| t < 1)
    {
        causes.push(Cause::invalid(
            "spec.targetCPUUtilizationPercentage",
            t,
            "must be greater than 0",
        ));
    }
    for (i, m) in spec["metrics"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.metrics[{i}]");
        let ty = m["type"].as_str().unwrap_or("");
        let source = match ty {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            "" => {
                causes.push(Cause::required(format!("{at}.type")));
                continue;
            }
            other => {
                causes.push(Cause::not_supported(
                    format!("{at}.type"),
                    &json!(other),
                    &[
                        "ContainerResource",
                        "External",
                        "Object",
                        "Pods",
                        "Resource",
                    ],
                ));
                continue;
            }
        };
        let src = &m[source];
        if !src.is_object() {
            causes.push(Cause::required(format!("{at}.{source}")));
            continue;
        }
        let resource_kind = matches!(ty, "Resource" | "ContainerResource");
        if resource_kind && src["name"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("{at}.{source}.name")));
        }
        if ty == "ContainerResource" && src["container"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("{at}.{source}.container")));
        }
        let target = &src["target"];
        let tat = format!("{at}.{source}.target");
        match target["type"].as_str() {
            Some("Utilization") if resource_kind => {
                if target["averageUtilization"].as_i64().is_none_or(|u| u < 1) {
                    causes.push(Cause::invalid(
                        format!("{tat}.averageUtilization"),
                        &target["averageUtilization"],
                        "must be greater than 0",
                    ));
                }
            }
            Some("AverageValue") => {
                if target["averageValue"].is_null() {
                    causes.push(Cause::required(format!("{tat}.averageValue")));
                }
            }
            Some("Value") if !resource_kind => {
                if target["value"].is_null() {
                    causes.push(Cause::required(format!("{tat}.value")));
                }
            }
            Some(other) => causes.push(Cause::invalid(
                format!("{tat}.type"),
                &json!(other),
                "must be one of the target types this metric source allows",
            )),
            None => causes.push(Cause::required(format!("{tat}.type"))),
        }
    }
}

// ---- defaults -----------------------------------------------------------

/// Whether an update changes what `metadata.generation` counts: the spec
/// of a built-in kind; everything but metadata (and status, when it is a
/// subresource) of a custom one.
pub fn spec_changed(r: &Resource, cur: &Value, new: &Value) -> bool {
    if !r.custom {
        return cur.get("spec") != new.get("spec");
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            if r.has_status() {
                m.remove("status");
            }
        }
        v
    };
    strip(cur) != strip(new)
}

/// Fills in or checks `apiVersion` and `kind` against the resource, and
/// that `metadata` is an object.
pub(crate) fn check_kind(r: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = r.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av != want_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        Some(_) => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(r.kind),
        Some(k) if k != r.kind => {
            return Err(ApiError::bad_request(format!(
                "{k} in version {:?} cannot be handled as a {}: the kind in the data ({k}) does not match the expected kind ({})",
                r.version, r.kind, r.kind
            )));
        }
        Some(_) => {}
    }
    match obj.get("metadata") {
        None | Some(Value::Null) => obj["metadata"] = json!({}),
        Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: metadata must be an object",
                r.kind, r.version, r.kind
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::by_kind;

    #[test]
    fn unknown_fields_are_found_by_path() {
        let r = by_kind("", "Pod").unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"any": "thing"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePolicy": "x"}], "nope": null}});
        assert_eq!(
            typed_check(r, &pod).unwrap(),
            ["metadata.bogus", "spec.containers[0].imagePolicy"]
        );
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": 3}});
        assert_eq!(typed_check(r, &bad).unwrap_err().code.as_u16(), 400);
    }

    #[test]
    fn validation_causes() {
        let r = by_kind("apps", "Deployment").unwrap();
        let d = json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "-bad"}},
            "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "a"}},
                     "template": {"metadata": {"labels": {"app": "b"}},
                                  "spec": {"containers": [{"name": "c"}, {"name": "c", "image": "x"}]}}}});
        let fields: Vec<String> = validate(r, &d)
            .unwrap_err()
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "metadata.labels",
                "spec.template.metadata.labels",
                "spec.replicas",
                "spec.template.spec.containers[0].image",
                "spec.template.spec.containers[1].name",
            ]
        );
    }

    #[test]
    fn defaults_match_kubernetes() {
        let r = by_kind("", "Service").unwrap();
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults(r, &mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        let r = by_kind("", "Pod").unwrap();
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "nginx"},
                                                     {"name": "d", "image": "nginx:1.25"}]}});
        apply_defaults(r, &mut pod);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
    }
}
