//! The registry's verbs on one pod: `bind` (a scheduler's placement, the
//! `binding` subresource) and `evict` (a deletion within the pod's
//! disruption budgets, the `eviction` subresource).

use serde_json::{Value, json};

use super::DeleteOptions;
use crate::{
    api::{
        ApiState,
        handlers::{self, Target},
        status::{ApiError, Cause},
    },
    store::StoreError,
};

/// How many times a binding is retried on a write conflict.
const RETRIES: usize = 5;

/// Binds the pod `name` to `node`: sets `spec.nodeName` and the
/// `PodScheduled` condition. The pod must exist, not be bound yet and not
/// be being deleted (a Conflict otherwise).
pub async fn bind(st: &ApiState, t: &Target, name: &str, node: &str) -> Result<(), ApiError> {
    if node.is_empty() {
        return Err(ApiError::invalid(
            t.resource,
            name,
            vec![Cause::required("target.name")],
        ));
    }
    for _ in 0..RETRIES {
        let (mut pod, kv) = handlers::get_object(st, t, name).await?;
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
        let now = handlers::now_rfc3339();
        let mut conditions: Vec<Value> = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
        pod["status"]["conditions"] = json!(conditions);
        let value = handlers::encode_stored(st, t.resource, &pod).await?;
        match st
            .store
            .update(t.key(name), value, Some(kv.mod_revision))
            .await
        {
            Ok(_) => {
                st.metrics.object_written(t.resource);
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, t.resource, name)),
        }
    }
    Err(ApiError::conflict(t.resource, name))
}

/// Evicts the pod `name`: deletes it with `opts` if its
/// PodDisruptionBudgets allow (a 429 TooManyRequests otherwise, see
/// [`crate::api::disruption`]). A pod already being deleted is deleted
/// again without a budget check, as kube-apiserver does.
pub async fn evict(
    st: &ApiState,
    t: &Target,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(), ApiError> {
    let (pod, _) = handlers::get_object(st, t, name).await?;
    if pod.pointer("/metadata/deletionTimestamp").is_none() {
        crate::api::disruption::allow_eviction(st, &pod).await?;
    }
    handlers::delete_one(st, t, name, opts).await.map(drop)
}
