//! Deletes: `DeleteOptions` (grace period, preconditions, propagation)
//! from the body or the query, one object (graceful pods, finalizers,
//! cascades) and collections.

use super::*;
use crate::api::registry::{DeleteOptions, Propagation};

/// The longest grace period a deletion is given (about 68 years): any
/// int64 is accepted, and saturated here so that the deletion timestamp
/// stays a time.
const MAX_GRACE_SECONDS: i64 = i32::MAX as i64;

/// DeleteOptions from the body or the query.
fn delete_options(headers: &HeaderMap, q: &Query, body: &[u8]) -> Result<Value, ApiError> {
    let mut opts = if body.is_empty() {
        json!({})
    } else {
        object::decode(body, content_type(headers, "application/json"))
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {}", e.message)))?
    };
    if let Some(p) = q.get("propagationPolicy") {
        opts["propagationPolicy"] = json!(p);
    }
    if let Some(g) = q.get("gracePeriodSeconds") {
        let g = g.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}: want an integer"))
        })?;
        opts["gracePeriodSeconds"] = json!(g);
    }
    if let Some(o) = q.get("orphanDependents") {
        opts["orphanDependents"] = json!(rudder_k8s::query::is_true(Some(o)));
    }
    if q.get("dryRun").is_some_and(|d| d == "All") {
        opts["dryRun"] = json!(["All"]);
    }
    Ok(opts)
}

pub async fn delete(
    st: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    q: &Query,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let opts = DeleteOptions::from_json(&delete_options(headers, q, body)?)?;
    let out = delete_one(st, t, name, &opts).await?;
    Ok(respond_object(t, headers, q, StatusCode::OK, &out, &[]))
}

/// The validating webhooks and admission policies of a DELETE.
async fn validating_admission(
    st: &ApiState,
    t: &Target,
    name: &str,
    cur: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let req = webhook::Request {
        resource: t.resource,
        subresource: "",
        namespace: &t.namespace,
        name,
        operation: "DELETE",
        old: Some(cur),
        dry_run,
    };
    webhook::validate(st, &req, cur).await.map(drop)
}

pub async fn delete_one(
    st: &ApiState,
    t: &Target,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let r = t.resource;
    if r.builtin_kind() == "Namespace"
        && crate::api::admission::PROTECTED_NAMESPACES.contains(&name)
    {
        return Err(ApiError::forbidden_on(
            r,
            name,
            "this namespace may not be deleted",
        ));
    }
    for _ in 0..5 {
        let (cur, kv) = get_object(st, t, name).await?;
        if let Some(uid) = opts.precondition_uid.as_deref()
            && cur.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
        {
            return Err(ApiError::conflict_msg(
                r,
                name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    cur.pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = opts.precondition_resource_version.as_deref()
            && rv != kv.mod_revision.to_string()
        {
            return Err(ApiError::conflict_msg(
                r,
                name,
                format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    kv.mod_revision
                ),
            ));
        }
        validating_admission(st, t, name, &cur, opts.dry_run).await?;
        if opts.dry_run {
            return Ok(cur);
        }
        let mut new = cur.clone();
        let mut finalizers: Vec<Value> = cur
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let add = match opts.propagation.unwrap_or(Propagation::Background) {
            Propagation::Orphan => Some("orphan"),
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Background => None,
        };
        if let Some(f) = add
            && !finalizers.contains(&json!(f))
            && cur.pointer("/metadata/deletionTimestamp").is_none()
        {
            finalizers.push(json!(f));
        }
        if r.builtin_kind() == "Namespace" {
            new["status"]["phase"] = json!("Terminating");
        }
        // A CRD goes once its objects have (the CRD controller's finalizer).
        let cleanup = json!(crate::api::crd::definition::CLEANUP_FINALIZER);
        if r.builtin_kind() == "CustomResourceDefinition"
            && cur.pointer("/metadata/deletionTimestamp").is_none()
            && !finalizers.contains(&cleanup)
        {
            finalizers.push(cleanup);
        }
        // Pods on a node end gracefully: the kubelet stops them and
        // deletes with grace 0.
        let grace = if r.builtin_kind() == "Pod" && cur.pointer("/spec/nodeName").is_some() {
            opts.grace_period_seconds
                .or_else(|| {
                    cur.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30)
                .clamp(0, MAX_GRACE_SECONDS)
        } else {
            0
        };
        let ns_finalizers = r.builtin_kind() == "Namespace"
            && cur
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
        if finalizers.is_empty() && grace == 0 && !ns_finalizers {
            let kv = match st.store.delete(t.key(name), Some(kv.mod_revision)).await {
                Err(StoreError::Conflict { .. }) => continue,
                r2 => r2.map_err(|e| ApiError::from_store(e, r, name))?,
            };
            st.metrics.object_written(r);
            let mut out = cur;
            out["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
            return Ok(out);
        }
        if cur.pointer("/metadata/deletionTimestamp").is_none() {
            let when = time::OffsetDateTime::now_utc() + time::Duration::seconds(grace);
            new["metadata"]["deletionTimestamp"] = json!(rfc3339(when));
            new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        } else if r.builtin_kind() == "Pod" {
            let old = cur
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if grace < old {
                new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            }
        }
        new["metadata"]["finalizers"] = json!(finalizers);
        match st
            .store
            .update(
                t.key(name),
                encode_stored(st, r, &new).await?,
                Some(kv.mod_revision),
            )
            .await
        {
            Err(StoreError::Conflict { .. }) => continue,
            res => {
                let kv = res.map_err(|e| ApiError::from_store(e, r, name))?;
                st.metrics.object_written(r);
                return decode_served(st, r, &kv).await;
            }
        }
    }
    Err(ApiError::conflict(r, name))
}

pub async fn delete_collection(
    st: &ApiState,
    t: &Target,
    headers: &HeaderMap,
    q: &Query,
    body: &[u8],
) -> Result<Response, ApiError> {
    let opts = DeleteOptions::from_json(&delete_options(headers, q, body)?)?;
    let (items, rev, _) = list_objects(st, t, q).await?;
    let mut deleted = Vec::new();
    for obj in items {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let one = Target {
            namespace: ns,
            name: Some(name.clone()),
            ..t.clone()
        };
        match delete_one(st, &one, &name, &opts).await {
            Ok(o) => deleted.push(o),
            Err(e) if e.code == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    let _ = headers;
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", t.resource.kind), "apiVersion": t.resource.api_version(),
                "metadata": {"resourceVersion": rev.to_string()}, "items": deleted}),
    ))
}
