//! `matchPolicy: Equivalent` (the default, for hooks and admission
//! policies alike): a hook (or policy) whose rules name
//! another version of the requested resource (or the same resource in a
//! group sharing its storage, as `events.k8s.io` Events share core's) is
//! called as if the request were for that version, as kube-apiserver's
//! equivalent-resource registry has it. The object (and the old one) are
//! converted to the version the hook asked for before it sees them (its
//! review's `kind`/`resource` that version, `requestKind`/`requestResource`
//! the request's), and a mutating hook's result is converted back.
//! Conversion is the same as for reads and writes: the built-in
//! conversions, or a CRD's (`None`, or its conversion webhook).

use serde_json::Value;

use super::{Request, config::Hook};
use crate::api::{ApiState, resources::Resource, status::ApiError};

/// Whether the hook's rules name this resource at this version.
fn names(h: &Hook, req: &Request<'_>, r: &Resource) -> bool {
    h.rules.iter().any(|rule| rule.matches_at(req, r))
}

/// How a hook matches the request: `None` not at all, `Some(None)` as it
/// is, `Some(Some(e))` as the equivalent resource `e`.
pub fn matched_as(h: &Hook, req: &Request<'_>) -> Option<Option<&'static Resource>> {
    let r = req.resource;
    if names(h, req, r) {
        return Some(None);
    }
    if !h.equivalent {
        return None;
    }
    others(r).find(|e| names(h, req, e)).map(Some)
}

/// The other served versions of `r` (and `r` in groups sharing its
/// storage).
pub fn others(r: &Resource) -> impl Iterator<Item = &'static Resource> + '_ {
    crate::api::resources::all().into_iter().filter(move |e| {
        e.plural == r.plural
            && e.storage_group() == r.storage_group()
            && (e.group, e.version) != (r.group, r.version)
    })
}

/// `obj`, of `from`'s version, at `to`'s.
pub async fn convert(
    st: &ApiState,
    from: &Resource,
    to: &Resource,
    obj: &Value,
) -> Result<Value, ApiError> {
    if obj.is_null() {
        return Ok(Value::Null);
    }
    if from.custom {
        let mut out =
            crate::api::crd::conversion::convert(st, to, vec![obj.clone()], &to.api_version())
                .await?;
        return out
            .pop()
            .ok_or_else(|| ApiError::internal("conversion returned no object"));
    }
    let stored = crate::api::convert::to_storage(from, obj.clone());
    Ok(crate::api::convert::to_served(to, stored))
}
