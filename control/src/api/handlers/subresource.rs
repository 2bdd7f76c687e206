//! What an update of each subresource changes: `status`, `scale`,
//! `approval`, `finalize` and `ephemeralcontainers` replace their part of
//! the stored object and nothing else; a plain update keeps what belongs
//! to the server and to the subresources.

use serde_json::{Value, json};

use super::super::{resources::Resource, status::ApiError};

/// The Scale of a workload (autoscaling/v1).
pub(crate) fn scale_of(r: &Resource, obj: &Value) -> Result<Value, ApiError> {
    if !r.has_scale() {
        return Err(ApiError::path_not_found());
    }
    if let Some(paths) = crate::api::crd::of(r).and_then(|v| v.scale.clone()) {
        return Ok(crate::api::crd::scale_of(obj, &paths));
    }
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| {
            let m = s.get("matchLabels").or(Some(s))?.as_object()?;
            Some(
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .unwrap_or_default();
    Ok(json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
                     "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
                     "creationTimestamp": obj["metadata"]["creationTimestamp"]},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    }))
}

/// Builds the object an update produces from the current one and the
/// client's, per subresource.
pub(crate) fn merge_update(
    r: &Resource,
    sub: Option<&str>,
    cur: &Value,
    mut new: Value,
) -> Result<Value, ApiError> {
    match sub {
        Some("status") => {
            let mut out = cur.clone();
            out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            // Conditions on Nodes and Pods are status too; metadata stays.
            return Ok(out);
        }
        Some("scale") => {
            let replicas = new
                .pointer("/spec/replicas")
                .cloned()
                .ok_or_else(|| ApiError::bad_request("Scale without spec.replicas"))?;
            let mut out = cur.clone();
            let at = crate::api::crd::of(r)
                .and_then(|v| v.scale.as_ref().map(|s| s.spec_replicas.clone()))
                .unwrap_or_else(|| "/spec/replicas".into());
            crate::api::crd::set_pointer(&mut out, &at, replicas);
            return Ok(out);
        }
        Some("approval") if r.builtin_kind() == "CertificateSigningRequest" => {
            return crate::api::csr::merge_approval(cur, &new);
        }
        Some("ephemeralcontainers") if r.builtin_kind() == "Pod" => {
            // Only `spec.ephemeralContainers` changes, and only by adding.
            let spec = |v: &Value| {
                serde_json::from_value::<k8s_openapi::api::core::v1::PodSpec>(
                    v.get("spec").cloned().unwrap_or_default(),
                )
                .map_err(|e| ApiError::bad_request(format!("spec: {e}")))
            };
            let causes = rudder_k8s::pod::validate_ephemeral_update(&spec(cur)?, &spec(&new)?);
            if !causes.is_empty() {
                let name = cur["metadata"]["name"].as_str().unwrap_or_default();
                return Err(ApiError::invalid(r, name, causes));
            }
            let mut out = cur.clone();
            out["spec"]["ephemeralContainers"] = new
                .pointer("/spec/ephemeralContainers")
                .cloned()
                .unwrap_or_else(|| json!([]));
            return Ok(out);
        }
        Some("finalize") if r.builtin_kind() == "Namespace" => {
            // Only `spec.finalizers` changes through `finalize`.
            let mut out = cur.clone();
            out["spec"]["finalizers"] = new
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or_else(|| json!([]));
            return Ok(out);
        }
        Some(other) => {
            return Err(ApiError::method_not_allowed(format!(
                "the subresource {other:?} of {} cannot be updated",
                r.plural
            )));
        }
        None => {}
    }
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match cur["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if r.builtin_kind() == "Pod" {
        // `spec.ephemeralContainers` belongs to its subresource.
        match cur.pointer("/spec/ephemeralContainers") {
            Some(e) => new["spec"]["ephemeralContainers"] = e.clone(),
            None => {
                if let Some(m) = new["spec"].as_object_mut() {
                    m.remove("ephemeralContainers");
                }
            }
        }
    }
    if r.builtin_kind() == "Namespace" {
        // `spec.finalizers` belongs to the `finalize` subresource.
        new["spec"]["finalizers"] = cur
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or_else(|| json!([]));
    }
    if r.has_status() {
        match cur.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    Ok(new)
}
