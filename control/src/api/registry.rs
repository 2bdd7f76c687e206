//! The registry's typed verbs: `create`, `update`, `patch` (JSON, merge,
//! strategic, apply), `delete`, `get`, and on pods `bind` and `evict`: an
//! object or typed options in, the stored object and its warnings out, or
//! a typed [`ApiError`]; no HTTP types. The REST handlers only decode a
//! request into these calls ([`WriteOptions::from_request`],
//! [`DeleteOptions::from_json`]) and shape the answer; callers inside the
//! apiserver (bootstrap, the aggregator's and CRD controllers) make the
//! same calls, so an internal write goes through exactly the defaults,
//! validation, admission (built-in, webhooks, Pod Security, quota) and
//! storage a client's would.

use axum::http::HeaderMap;
use serde_json::Value;

use super::{
    ApiState,
    handlers::{self, Query, Target},
    status::{ApiError, Reason},
};

/// What `fieldValidation` asks of unknown or duplicate fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped, with a warning (the default).
    #[default]
    Warn,
    /// The request fails.
    Strict,
}

/// How one write is made: what a REST call's query and headers say, typed.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// `dryRun=All`: everything but the storing.
    pub dry_run: bool,
    /// The field manager recorded in `managedFields`.
    pub field_manager: String,
    pub field_validation: FieldValidation,
}

impl WriteOptions {
    /// A REST call's options: `dryRun`, `fieldManager` (else the client's
    /// User-Agent up to its first `/`, as kube-apiserver derives it) and
    /// `fieldValidation`.
    pub fn from_request(q: &Query, headers: &HeaderMap) -> Self {
        Self {
            dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
            field_manager: handlers::manager_name(q, headers),
            field_validation: match q.get("fieldValidation").map(String::as_str) {
                Some("Strict") => FieldValidation::Strict,
                Some("Ignore") => FieldValidation::Ignore,
                _ => FieldValidation::Warn,
            },
        }
    }

    /// The apiserver's own writes: recorded under `kube-apiserver`, the
    /// manager kube-apiserver's loopback client records.
    pub fn internal() -> Self {
        Self {
            dry_run: false,
            field_manager: "kube-apiserver".into(),
            field_validation: FieldValidation::Warn,
        }
    }
}

/// A stored object and the warnings its write produced.
#[derive(Clone, Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// Creates an object of `t`'s resource (in `t`'s namespace).
pub async fn create(
    st: &ApiState,
    t: &Target,
    obj: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let (object, warnings) = handlers::create_object(st, t, obj, opts).await?;
    Ok(Written { object, warnings })
}

/// Creates an object unless one of its name exists; whether it did.
pub async fn create_if_absent(
    st: &ApiState,
    t: &Target,
    obj: Value,
    opts: &WriteOptions,
) -> Result<bool, ApiError> {
    match create(st, t, obj, opts).await {
        Ok(_) => Ok(true),
        Err(e) if e.reason == Reason::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replaces the object `name` with `obj` (as a PUT does: a
/// `resourceVersion` in `obj` is a precondition).
pub async fn update(
    st: &ApiState,
    t: &Target,
    name: &str,
    obj: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let (object, warnings) = handlers::update_object(st, t, name, obj, opts).await?;
    Ok(Written { object, warnings })
}

/// What happens to an object's dependents when it is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Left without their owner.
    Orphan,
    /// Deleted by the garbage collector after the owner goes.
    Background,
    /// Deleted before the owner goes (its `foregroundDeletion` finalizer).
    Foreground,
}

/// How one delete is made: `DeleteOptions`, typed.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// The kind's default when `None` (Background for most).
    pub propagation: Option<Propagation>,
    /// The grace period (pods); the object's own when `None`.
    pub grace_period_seconds: Option<i64>,
    /// The delete fails with a Conflict unless the object has this uid.
    pub precondition_uid: Option<String>,
    /// … or this resourceVersion.
    pub precondition_resource_version: Option<String>,
    /// Everything but the storing.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// A `DeleteOptions` body (with what the query said merged in),
    /// checked as kube-apiserver checks one before it looks the object up
    /// (`ValidateDeleteOptions`): a known `propagationPolicy`, not beside
    /// `orphanDependents`, `dryRun` only `All`. A refusal is an Invalid
    /// `DeleteOptions.meta.k8s.io`.
    pub fn from_json(v: &Value) -> Result<Self, ApiError> {
        use super::status::Cause;
        let mut causes = Vec::new();
        let policy = v.get("propagationPolicy").filter(|p| !p.is_null());
        let orphan = v.get("orphanDependents").filter(|o| !o.is_null());
        if let (Some(p), Some(_)) = (policy, orphan) {
            causes.push(Cause::invalid(
                "propagationPolicy",
                p,
                "orphanDependents and deletionPropagation cannot be both set",
            ));
        }
        let propagation = match policy.map(|p| (p, p.as_str())) {
            None => match orphan.and_then(Value::as_bool) {
                Some(true) => Some(Propagation::Orphan),
                _ => None,
            },
            Some((_, Some("Orphan"))) => Some(Propagation::Orphan),
            Some((_, Some("Background"))) => Some(Propagation::Background),
            Some((_, Some("Foreground"))) => Some(Propagation::Foreground),
            Some((p, _)) => {
                causes.push(Cause::not_supported(
                    "propagationPolicy",
                    p,
                    &["Foreground", "Background", "Orphan", "nil"],
                ));
                None
            }
        };
        let mut dry_run = false;
        for d in v
            .get("dryRun")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if d.as_str() == Some("All") {
                dry_run = true;
            } else {
                causes.push(Cause::not_supported("dryRun", d, &["All"]));
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid_of(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                &causes,
            ));
        }
        let grace_period_seconds = match v.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
            None => None,
            Some(g) => Some(g.as_i64().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid DeleteOptions: gracePeriodSeconds {g} is not an integer"
                ))
            })?),
        };
        let precondition = |k: &str| {
            v.pointer(&format!("/preconditions/{k}"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok(Self {
            propagation,
            grace_period_seconds,
            precondition_uid: precondition("uid"),
            precondition_resource_version: precondition("resourceVersion"),
            dry_run,
        })
    }
}

/// Deletes the object `name`: the object as deleted, or as it stands when
/// finalizers or a grace period keep it (with its `deletionTimestamp`).
pub async fn delete(
    st: &ApiState,
    t: &Target,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    handlers::delete_one(st, t, name, opts).await
}

/// The object `name`, as stored.
pub async fn get(st: &ApiState, t: &Target, name: &str) -> Result<Value, ApiError> {
    Ok(handlers::get_object(st, t, name).await?.0)
}

mod patch;
mod pod;
pub use patch::{PatchOptions, Patched, patch};
pub use pod::{bind, evict};

#[cfg(test)]
mod tests;
