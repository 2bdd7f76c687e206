//! Server-side apply (`PATCH application/apply-patch+yaml`): the applied
//! configuration is merged into the live object (fields it does not name
//! are kept) and the field manager is recorded in `managedFields`.
//!
//! Field ownership and conflicts are [`super::fields`]'.

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

fn conflict_error(t: &Target, name: &str, conflicts: &[super::fields::Conflict]) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with {:?} using {}: {}",
                c.manager, c.api_version, c.path
            )
        })
        .collect();
    let n = conflicts.len();
    let mut e = ApiError::conflict_msg(
        t.resource,
        name,
        format!(
            "Apply failed with {n} conflict{}: {}",
            if n == 1 { "" } else { "s" },
            lines.join("\n")
        ),
    );
    if let Some(d) = e.details.as_mut() {
        d["causes"] = Value::Array(
            conflicts
                .iter()
                .map(|c| {
                    json!({"reason": "FieldManagerConflict",
                    "message": format!("conflict with {:?} using {}", c.manager, c.api_version),
                    "field": c.path})
                })
                .collect(),
        );
    }
    e
}

fn forced(q: &Query) -> bool {
    rudder_k8s::query::is_true(q.get("force").map(String::as_str))
}

pub fn apply_patch(
    t: &Target,
    name: &str,
    current: &Value,
    body: &[u8],
    q: &Query,
) -> Result<Value, ApiError> {
    let m = manager(q)?;
    let cfg = parse(body)?;
    let merged = super::patch::apply(
        current,
        super::patch::PatchType::Strategic,
        &serde_json::to_vec(&cfg).expect("serialisable"),
    )?;
    super::fields::apply(
        current,
        &cfg,
        merged,
        &m,
        forced(q),
        &super::handlers::now_rfc3339(),
    )
    .map_err(|c| conflict_error(t, name, &c))
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
    cfg = super::fields::apply(
        &json!({}),
        &cfg,
        cfg.clone(),
        &m,
        true,
        &super::handlers::now_rfc3339(),
    )
    .map_err(|c| conflict_error(t, name, &c))?;
    let opts = super::registry::WriteOptions::from_request(q, headers);
    let (out, warnings) = super::handlers::create_object(st, t, cfg, &opts).await?;
    Ok(super::handlers::respond_object(
        t,
        headers,
        q,
        axum::http::StatusCode::CREATED,
        &out,
        &warnings,
    ))
}
