//! The HTTP side of the pod subresources that act on one pod: `binding`
//! (the scheduler's placement) and `eviction` (deletion within disruption
//! budgets); the verbs are the registry's ([`crate::api::registry`]).

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

/// `POST pods/{name}/binding`: a Binding naming the pod and its node,
/// made by [`crate::api::registry::bind`].
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
    crate::api::registry::bind(st, t, name, node).await?;
    Ok(created_status(&format!("pod {name} bound to node {node}")))
}

/// `POST pods/{name}/eviction` (policy/v1 Eviction): its delete options,
/// to [`crate::api::registry::evict`].
pub async fn evict(
    st: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let eviction = decode_kind(headers, body, "Eviction")?;
    let opts = crate::api::registry::DeleteOptions::from_json(
        eviction.get("deleteOptions").unwrap_or(&json!({})),
    )?;
    crate::api::registry::evict(st, t, name, &opts).await?;
    Ok(created_status(&format!("pod {name} evicted")))
}
