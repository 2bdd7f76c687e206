//! Server-side apply (`PATCH application/apply-patch+yaml`): the applied
//! configuration is merged into the live object (fields it does not name
//! are kept) and the field manager is recorded in `managedFields`.
//!
//! Field ownership and conflicts are [`super::fields`]'; the write is
//! [`super::registry::patch`]'s.

use serde_json::{Value, json};

use super::{
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

/// The field manager an apply names: kube-apiserver requires one.
pub fn manager(q: &Query) -> Result<String, ApiError> {
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

/// Whether `force=true`: an apply takes over the fields other managers
/// own instead of failing on them.
pub fn forced(q: &Query) -> bool {
    rudder_k8s::query::is_true(q.get("force").map(String::as_str))
}

/// The apply configuration `body` merged into `current` by `manager`,
/// with its fields recorded; `force` takes fields other managers own.
pub fn apply_patch(
    t: &Target,
    name: &str,
    current: &Value,
    body: &[u8],
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
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
        manager,
        force,
        &super::handlers::now_rfc3339(),
    )
    .map_err(|c| conflict_error(t, name, &c))
}

/// The object an apply of `body` creates where there is none, its fields
/// recorded as `manager`'s.
pub fn applied_new(t: &Target, name: &str, body: &[u8], manager: &str) -> Result<Value, ApiError> {
    let cfg = parse(body)?;
    if cfg.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return Err(ApiError::bad_request(
            "the name in the apply configuration does not match the URL",
        ));
    }
    super::fields::apply(
        &json!({}),
        &cfg,
        cfg.clone(),
        manager,
        true,
        &super::handlers::now_rfc3339(),
    )
    .map_err(|c| conflict_error(t, name, &c))
}
