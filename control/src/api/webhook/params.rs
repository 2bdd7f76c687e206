//! The parameter objects of a ValidatingAdmissionPolicy binding, found as
//! upstream's `CollectParams` finds them: the policy's `paramKind` names
//! the kind, the binding's `paramRef` names one object or selects some by
//! label, in its `namespace`, else the request's (a cluster-scoped kind has
//! none). No object found is a denial when `parameterNotFoundAction` is
//! `Deny`, and skips the binding when it is `Allow`. Misconfigurations (a
//! kind not served, no `paramRef`, namespaced parameters for a
//! cluster-scoped request) are errors, which the policy's failure policy
//! turns into a denial or ignores.

use serde_json::Value;

use super::policy::ParamRef;
use crate::api::{
    ApiState,
    handlers::{Target, get_object, list_objects},
    resources,
};

/// The parameter objects: `Ok(None)` when there are none and the binding
/// allows that; an error saying what is misconfigured otherwise.
pub async fn collect(
    st: &ApiState,
    kind: &(String, String),
    param_ref: Option<&ParamRef>,
    request_namespace: &str,
) -> Result<Option<Vec<Value>>, String> {
    let (api_version, kind_name) = kind;
    let Some(param_ref) = param_ref else {
        return Err(format!(
            "paramKind kind `{api_version}, Kind={kind_name}` is set but paramRef is nil"
        ));
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource = resources::by_kind(group, kind_name)
        .and_then(|r| resources::find(group, version, r.plural))
        .ok_or_else(|| {
            format!(
                "failed to find resource referenced by paramKind: '{api_version}, Kind={kind_name}'"
            )
        })?;
    let namespace = if !resource.namespaced {
        String::new()
    } else if !param_ref.namespace.is_empty() {
        param_ref.namespace.clone()
    } else if !request_namespace.is_empty() {
        request_namespace.to_owned()
    } else {
        return Err(
            "cannot use namespaced paramRef in policy binding that matches cluster-scoped resources"
                .into(),
        );
    };
    let target = Target {
        resource,
        namespace,
        name: None,
        subresource: None,
    };
    let found: Vec<Value> = if !param_ref.name.is_empty() {
        match get_object(st, &target, &param_ref.name).await {
            Ok((obj, _)) => vec![obj],
            Err(e) if e.code == hyper::StatusCode::NOT_FOUND => Vec::new(),
            Err(e) => return Err(e.message),
        }
    } else {
        let selector = param_ref.selector.clone().unwrap_or_default();
        list_objects(st, &target, &Default::default())
            .await
            .map_err(|e| e.message)?
            .0
            .into_iter()
            .filter(|o| rudder_k8s::selectors::selector_matches(&selector, &super::labels(Some(o))))
            .collect()
    };
    if found.is_empty() {
        if param_ref.deny_not_found {
            return Err(
                "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
            );
        }
        return Ok(None);
    }
    Ok(Some(found))
}
