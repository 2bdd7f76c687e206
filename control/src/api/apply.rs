//! Server-side apply (`PATCH application/apply-patch+yaml`): the applied
//! configuration is merged into the live object (fields it does not name
//! are kept) and the field manager is recorded in `managedFields`.
//!
//! Not yet done: per-field ownership and conflicts between managers (a
//! second manager's apply currently wins without a 409).

use axum::{http::HeaderMap, response::Response};
use serde_json::{Value, json};

use super::{
    ApiState,
    handlers::{Query, Target},
    status::ApiError,
};

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_yaml::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("error decoding YAML apply configuration: {e}"))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "an apply configuration must be an object",
        ));
    }
    Ok(v)
}

fn manager(q: &Query) -> Result<String, ApiError> {
    q.get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("PATCH with apply-patch requires a fieldManager"))
}

fn record_manager(obj: &mut Value, manager: &str) {
    let entry = json!({"manager": manager, "operation": "Apply",
                       "apiVersion": obj.get("apiVersion").cloned().unwrap_or(Value::Null),
                       "time": super::handlers::now_rfc3339(), "fieldsType": "FieldsV1",
                       "fieldsV1": {}});
    let mf = obj["metadata"]
        .as_object_mut()
        .map(|m| m.entry("managedFields").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = mf {
        list.retain(|e| {
            !(e.get("manager").and_then(Value::as_str) == Some(manager)
                && e.get("operation").and_then(Value::as_str) == Some("Apply"))
        });
        list.push(entry);
    }
}

pub fn apply_patch(current: &Value, body: &[u8], q: &Query) -> Result<Value, ApiError> {
    let m = manager(q)?;
    let cfg = parse(body)?;
    let mut out = super::patch::apply(
        current,
        super::patch::PatchType::Strategic,
        &serde_json::to_vec(&cfg).expect("serialisable"),
    )?;
    record_manager(&mut out, &m);
    Ok(out)
}

pub async fn create_by_apply(
    st: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    q: &Query,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let m = manager(q)?;
    let mut cfg = parse(body)?;
    if cfg.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return Err(ApiError::bad_request(
            "the name in the apply configuration does not match the URL",
        ));
    }
    record_manager(&mut cfg, &m);
    let mut headers = headers.clone();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        "application/json".parse().expect("valid"),
    );
    super::handlers::create(
        st,
        t,
        &headers,
        q,
        &serde_json::to_vec(&cfg).expect("serialisable"),
    )
    .await
}
