//! The registry's `patch`: a JSON, merge, strategic-merge or apply patch
//! of one object (or of its `status` or `scale`), retried on write
//! conflicts as kube-apiserver retries it, through the same admission and
//! storage as an update. An apply of an object that does not exist
//! creates it.

use serde_json::{Value, json};

use super::{WriteOptions, Written};
use crate::api::{
    ApiState,
    handlers::{self, Target},
    object,
    patch::{self, PatchType},
    status::{ApiError, Reason},
};

/// How one patch is made: a write's options, and for an apply whether it
/// takes the fields other managers own (`force`).
#[derive(Clone, Debug)]
pub struct PatchOptions {
    pub write: WriteOptions,
    pub force: bool,
}

/// What a patch did.
#[derive(Clone, Debug)]
pub enum Patched {
    /// The object was changed (or left as it was).
    Updated(Written),
    /// An apply created it.
    Created(Written),
}

/// How many times a patch is recomputed on a write conflict.
const RETRIES: usize = 5;

/// Patches the object `name` with `body` of type `pt`. The stored object
/// comes back (the whole object for a `scale` patch as well: the caller
/// shapes a Scale from it).
pub async fn patch(
    st: &ApiState,
    t: &Target,
    name: &str,
    pt: PatchType,
    body: &[u8],
    opts: &PatchOptions,
) -> Result<Patched, ApiError> {
    let r = t.resource;
    if body.len() > object::MAX_BODY {
        return Err(ApiError::too_large(object::MAX_BODY));
    }
    let sub = t.subresource.as_deref();
    if r.custom && pt == PatchType::Strategic && sub != Some("scale") {
        return Err(ApiError::no_strategic_merge());
    }
    let manager = opts.write.field_manager.as_str();
    for _ in 0..RETRIES {
        let (cur, kv) = match handlers::get_object(st, t, name).await {
            Ok(x) => x,
            Err(e) if pt == PatchType::Apply && e.reason == Reason::NotFound => {
                let obj = crate::api::apply::applied_new(t, name, body, manager)?;
                let (object, warnings) = handlers::create_object(st, t, obj, &opts.write).await?;
                return Ok(Patched::Created(Written { object, warnings }));
            }
            Err(e) => return Err(e),
        };
        let merged = patched(t, name, &cur, kv.mod_revision, pt, body, opts)?;
        match handlers::write_update(st, t, name, &cur, kv.mod_revision, merged, &opts.write).await
        {
            Ok((object, warnings)) => return Ok(Patched::Updated(Written { object, warnings })),
            Err(e) if e.reason == Reason::Conflict => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(r, name))
}

/// The object `cur` (at `revision`) as the patch leaves it, checked and
/// merged as an update of `t`'s subresource, its fields' managers
/// recorded.
fn patched(
    t: &Target,
    name: &str,
    cur: &Value,
    revision: crate::store::Revision,
    pt: PatchType,
    body: &[u8],
    opts: &PatchOptions,
) -> Result<Value, ApiError> {
    let r = t.resource;
    let sub = t.subresource.as_deref();
    let base = if sub == Some("scale") {
        handlers::scale_of(r, cur)?
    } else {
        cur.clone()
    };
    let manager = opts.write.field_manager.as_str();
    let mut patched = if pt == PatchType::Apply {
        crate::api::apply::apply_patch(t, name, &base, body, manager, opts.force)?
    } else {
        patch::apply(&base, pt, body)?
    };
    if sub == Some("scale") {
        patched["apiVersion"] = json!(r.api_version());
        patched["kind"] = json!(r.kind);
    }
    object::check_kind(r, &mut patched)?;
    object::typed_check(r, &patched)?;
    if patched.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return Err(ApiError::bad_request(
            "the patch may not change the object's name",
        ));
    }
    if let Some(rv) = patched
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && rv != revision.to_string()
        && pt != PatchType::Apply
    {
        return Err(ApiError::conflict(r, name));
    }
    let mut merged = handlers::merge_update(r, sub, cur, patched)?;
    if pt != PatchType::Apply {
        crate::api::fields::track_update(
            cur,
            &mut merged,
            manager,
            sub.unwrap_or_default(),
            &handlers::now_rfc3339(),
        );
    }
    Ok(merged)
}
