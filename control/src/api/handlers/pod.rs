//! The pod subresources that act on one pod: `binding` (the scheduler's
//! placement) and `eviction` (deletion within disruption budgets).

use super::*;

fn created_status(message: &str) -> Response {
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Success", "code": 201, "message": message}),
        )
        .expect("json"),
    )
        .into_response()
}

/// `POST pods/{name}/binding`: what a scheduler does to place a pod. The
/// pod must not be bound yet; binding sets `spec.nodeName` and the
/// `PodScheduled` condition.
pub async fn bind(
    st: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let binding = decode_kind(headers, body, "Binding")?;
    let bind_name = binding
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name);
    if bind_name != name {
        return Err(ApiError::bad_request(format!(
            "the Binding's name {bind_name:?} is not the pod's {name:?}"
        )));
    }
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::invalid(
            t.resource,
            name,
            vec![crate::api::status::Cause::required("target.name")],
        ));
    }
    for _ in 0..5 {
        let (mut pod, kv) = get_object(st, t, name).await?;
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict_msg(
                t.resource,
                name,
                "the pod is being deleted",
            ));
        }
        if let Some(cur) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict_msg(
                t.resource,
                name,
                format!("pod {name} is already assigned to node {cur:?}"),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        let now = rfc3339(time::OffsetDateTime::now_utc());
        let mut conditions: Vec<Value> = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
        pod["status"]["conditions"] = json!(conditions);
        match st
            .store
            .update(t.key(name), encode(&pod), Some(kv.mod_revision))
            .await
        {
            Ok(_) => {
                st.metrics.object_written(t.resource);
                return Ok(created_status(&format!("pod {name} bound to node {node}")));
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, t.resource, name)),
        }
    }
    Err(ApiError::conflict(t.resource, name))
}

/// `POST pods/{name}/eviction` (policy/v1 Eviction): deletes the pod with
/// the Eviction's delete options, if its PodDisruptionBudget allows
/// ([`super::disruption`]).
pub async fn evict(
    st: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let eviction = decode_kind(headers, body, "Eviction")?;
    let opts = eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let (pod, _) = get_object(st, t, name).await?;
    if pod.pointer("/metadata/deletionTimestamp").is_none() {
        crate::api::disruption::allow_eviction(st, &pod).await?;
    }
    delete_one(st, t, name, &opts).await?;
    Ok(created_status(&format!("pod {name} evicted")))
}
