//! Objects on their way in: decoding, typed checking against the
//! Kubernetes schema (`k8s-openapi`), unknown fields, defaults as
//! Kubernetes applies them, and validation with per-field causes.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

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

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&t).map_err(|e| e.to_string())
}

/// Decodes `v` as its Kubernetes type and back: the fields that do not
/// survive are unknown. Errors are type mismatches (a string where a number
/// belongs, …).
pub fn typed_check(r: &Resource, v: &Value) -> Result<Vec<String>, ApiError> {
    use k8s_openapi::api::{
        apps::v1 as apps, authorization::v1 as authz, batch::v1 as batch,
        coordination::v1 as coord, core::v1 as core, discovery::v1 as disc, rbac::v1 as rbac,
    };
    let back = match r.kind {
        "Namespace" => roundtrip::<core::Namespace>(v),
        "Pod" => roundtrip::<core::Pod>(v),
        "Service" => roundtrip::<core::Service>(v),
        "Endpoints" => roundtrip::<core::Endpoints>(v),
        "Node" => roundtrip::<core::Node>(v),
        "ConfigMap" => roundtrip::<core::ConfigMap>(v),
        "Secret" => roundtrip::<core::Secret>(v),
        "ServiceAccount" => roundtrip::<core::ServiceAccount>(v),
        "Event" => roundtrip::<core::Event>(v),
        "PersistentVolume" => roundtrip::<core::PersistentVolume>(v),
        "PersistentVolumeClaim" => roundtrip::<core::PersistentVolumeClaim>(v),
        "ReplicationController" => roundtrip::<core::ReplicationController>(v),
        "Deployment" => roundtrip::<apps::Deployment>(v),
        "ReplicaSet" => roundtrip::<apps::ReplicaSet>(v),
        "DaemonSet" => roundtrip::<apps::DaemonSet>(v),
        "StatefulSet" => roundtrip::<apps::StatefulSet>(v),
        "ControllerRevision" => roundtrip::<apps::ControllerRevision>(v),
        "Job" => roundtrip::<batch::Job>(v),
        "HorizontalPodAutoscaler" if r.version == "v1" => {
            roundtrip::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>(v)
        }
        "HorizontalPodAutoscaler" => {
            roundtrip::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>(v)
        }
        "CronJob" => roundtrip::<batch::CronJob>(v),
        "EndpointSlice" => roundtrip::<disc::EndpointSlice>(v),
        "Lease" => roundtrip::<coord::Lease>(v),
        "Role" => roundtrip::<rbac::Role>(v),
        "RoleBinding" => roundtrip::<rbac::RoleBinding>(v),
        "ClusterRole" => roundtrip::<rbac::ClusterRole>(v),
        "ClusterRoleBinding" => roundtrip::<rbac::ClusterRoleBinding>(v),
        "SelfSubjectAccessReview" => roundtrip::<authz::SelfSubjectAccessReview>(v),
        _ => return Ok(Vec::new()),
    }
    .map_err(|e| {
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

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

const DNS_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Kinds whose names must be DNS labels (they become DNS names or
/// hostnames).
fn name_is_label(kind: &str) -> bool {
    matches!(kind, "Namespace" | "Service")
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        return false;
    }
    is_label_value(name) && !name.is_empty()
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && (s.is_empty()
            || (s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()))
}

pub fn validate_name(r: &Resource, name: &str, field: &str, causes: &mut Vec<Cause>) {
    if name.is_empty() {
        causes.push(Cause::required(field));
        return;
    }
    let (ok, msg) = if name_is_label(r.kind) {
        (is_dns_label(name), DNS_LABEL_MSG)
    } else if matches!(r.group, "rbac.authorization.k8s.io") {
        // RBAC names are path segments.
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
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                ));
            }
            if !v.as_str().is_some_and(is_label_value) {
                causes.push(Cause::invalid(
                    "metadata.labels".to_string(),
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                ));
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
            causes.push(Cause {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                message: "Too long: must have at most 262144 bytes".to_string(),
            });
        }
    }
}

// ---- per-kind validation ------------------------------------------------

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn validate_containers(spec: &Value, base: &str, causes: &mut Vec<Cause>, required: bool) {
    let key = if required {
        "containers"
    } else {
        "initContainers"
    };
    let list = spec.get(key).and_then(Value::as_array);
    if required && list.is_none_or(Vec::is_empty) {
        causes.push(Cause::required(format!("{base}.containers")));
        return;
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in list.into_iter().flatten().enumerate() {
        let f = format!("{base}.{key}[{i}]");
        match c.get("name").and_then(Value::as_str) {
            None | Some("") => causes.push(Cause::required(format!("{f}.name"))),
            Some(n) if !is_dns_label(n) => {
                causes.push(Cause::invalid(
                    format!("{f}.name"),
                    &json!(n),
                    DNS_LABEL_MSG,
                ));
            }
            Some(n) => {
                if !names.insert(n.to_owned()) {
                    causes.push(Cause::duplicate(format!("{f}.name"), &json!(n)));
                }
            }
        }
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(Cause::required(format!("{f}.image")));
        }
        for (j, p) in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                causes.push(Cause::invalid(
                    format!("{f}.ports[{j}].containerPort"),
                    &json!(port),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        if let Some(p) = c.get("imagePullPolicy").and_then(Value::as_str)
            && !["Always", "IfNotPresent", "Never"].contains(&p)
        {
            causes.push(Cause::not_supported(
                format!("{f}.imagePullPolicy"),
                &json!(p),
                &["Always", "IfNotPresent", "Never"],
            ));
        }
    }
}

fn validate_pod_spec(spec: &Value, base: &str, causes: &mut Vec<Cause>, restart: &[&str]) {
    validate_containers(spec, base, causes, true);
    validate_containers(spec, base, causes, false);
    if let Some(p) = spec.get("restartPolicy").and_then(Value::as_str)
        && !restart.contains(&p)
    {
        causes.push(Cause::not_supported(
            format!("{base}.restartPolicy"),
            &json!(p),
            restart,
        ));
    }
    if let Some(p) = spec.get("dnsPolicy").and_then(Value::as_str) {
        let ok = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !ok.contains(&p) {
            causes.push(Cause::not_supported(
                format!("{base}.dnsPolicy"),
                &json!(p),
                &ok,
            ));
        }
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
    match obj.pointer("/spec/template/spec") {
        Some(spec) => validate_pod_spec(spec, "spec.template.spec", causes, restart),
        None => causes.push(Cause::required("spec.template.spec.containers")),
    }
}

fn validate_service(obj: &Value, causes: &mut Vec<Cause>) {
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

/// Semantic validation: `Err` carries the causes for a `422 Invalid`.
pub fn validate(r: &Resource, obj: &Value) -> Result<(), Vec<Cause>> {
    let mut causes = Vec::new();
    if r.kind != "SelfSubjectAccessReview" {
        validate_metadata(r, obj, &mut causes);
    }
    match r.kind {
        "Pod" => match obj.get("spec") {
            Some(spec) => {
                validate_pod_spec(spec, "spec", &mut causes, &["Always", "OnFailure", "Never"]);
            }
            None => causes.push(Cause::required("spec.containers")),
        },
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
            validate_workload(obj, &mut causes, &["Always"]);
        }
        "Job" => {
            if let Some(spec) = obj.pointer("/spec/template/spec") {
                validate_pod_spec(
                    spec,
                    "spec.template.spec",
                    &mut causes,
                    &["OnFailure", "Never"],
                );
                if spec.get("restartPolicy").is_none() {
                    causes.push(Cause::required("spec.template.spec.restartPolicy"));
                }
            } else {
                causes.push(Cause::required("spec.template.spec.containers"));
            }
        }
        "CronJob" => {
            if s(obj, "/spec/schedule").is_none_or(str::is_empty) {
                causes.push(Cause::required("spec.schedule"));
            }
            match obj.pointer("/spec/jobTemplate/spec/template/spec") {
                Some(spec) => validate_pod_spec(
                    spec,
                    "spec.jobTemplate.spec.template.spec",
                    &mut causes,
                    &["OnFailure", "Never"],
                ),
                None => causes.push(Cause::required(
                    "spec.jobTemplate.spec.template.spec.containers",
                )),
            }
        }
        "Service" => validate_service(obj, &mut causes),
        "HorizontalPodAutoscaler" => validate_hpa(obj, &mut causes),
        "ConfigMap" | "Secret" => {
            for field in ["data", "binaryData", "stringData"] {
                for k in obj
                    .get(field)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|m| m.0)
                {
                    let ok = !k.is_empty()
                        && k.len() <= 253
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                    if !ok {
                        causes.push(Cause::invalid(
                            format!("{field}[{k}]"),
                            &json!(k),
                            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// An HPA of either version (`autoscaling/v1` has
/// `targetCPUUtilizationPercentage`, v2 has `metrics`).
fn validate_hpa(obj: &Value, causes: &mut Vec<Cause>) {
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
    match r.kind {
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
                let Some(m) = spec.as_object_mut() else {
                    return;
                };
                set_default(m, "serviceAccountName", json!("default"));
                set_default(m, "enableServiceLinks", json!(true));
                set_default(m, "priority", json!(0));
                set_default(m, "preemptionPolicy", json!("PreemptLowerPriority"));
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
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ReplicationController" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                if r.kind != "DaemonSet" {
                    set_default(spec, "replicas", json!(1));
                }
                set_default(spec, "revisionHistoryLimit", json!(10));
                match r.kind {
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
        "Job" => {
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
        "CronJob" => {
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
        "Service" => {
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
        "Secret" => {
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
        "Namespace" => {
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
        "PersistentVolume" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "phase", json!("Pending"));
            }
        }
        "PersistentVolumeClaim" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "phase", json!("Pending"));
            }
        }
        "HorizontalPodAutoscaler" if r.version == "v2" => default_hpa_v2(obj),
        "HorizontalPodAutoscaler" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "minReplicas", json!(1));
            }
        }
        _ => {}
    }
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
