//! Evictions that honour PodDisruptionBudgets, as kube-apiserver's
//! eviction subresource does: a pod matched by one budget may be evicted
//! only while the budget allows a disruption (its `disruptionsAllowed`, as
//! the disruption controller last computed it, is decremented in the same
//! step, so two evictions cannot spend one allowance); otherwise `429`
//! with the budget's numbers. A pod that is not ready may go while the
//! budget is met (upstream's `IfHealthyBudget`). A pod matched by more
//! than one budget cannot be evicted.

use serde_json::{Value, json};

use super::{
    ApiState,
    handlers::{Target, decode_as, encode_as, list_objects},
    resources::by_kind,
    selectors::{LabelSelector, labels_of},
    status::ApiError,
};
use crate::store::StoreError;

const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// A 429 refusal naming the budget.
fn refused(cause: &str) -> ApiError {
    let mut e = ApiError::too_many_requests(10);
    e.message = REFUSED.into();
    e.details = Some(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]}));
    e
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Takes one disruption from the budget covering `pod`, if any; refuses
/// when none is left.
pub async fn allow_eviction(st: &ApiState, pod: &Value) -> Result<(), ApiError> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let r = by_kind("policy", "PodDisruptionBudget").expect("served");
    let t = Target {
        resource: r,
        namespace: ns.to_owned(),
        name: None,
        subresource: None,
    };
    let labels = labels_of(pod);
    for _ in 0..5 {
        let (pdbs, _, _) = list_objects(st, &t, &Default::default()).await?;
        let covering: Vec<&Value> = pdbs
            .iter()
            .filter(|p| {
                p.pointer("/spec/selector")
                    .and_then(|s| LabelSelector::from_object(s).ok())
                    .is_some_and(|s| !s.is_empty() && s.matches(&labels))
            })
            .collect();
        let pdb = match covering.as_slice() {
            [] => return Ok(()),
            [one] => *one,
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
        };
        let name = pdb["metadata"]["name"].as_str().unwrap_or_default();
        let status = &pdb["status"];
        let n = |k: &str| status.get(k).and_then(Value::as_i64).unwrap_or(0);
        if status["observedGeneration"] != pdb["metadata"]["generation"] {
            return Err(refused(&format!(
                "The disruption budget {name} is still being processed by the server."
            )));
        }
        if !is_ready(pod) && n("currentHealthy") >= n("desiredHealthy") {
            return Ok(());
        }
        if n("disruptionsAllowed") <= 0 {
            return Err(refused(&format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                n("desiredHealthy"),
                n("currentHealthy")
            )));
        }
        // Spend one disruption, on the version read.
        let (Some(kv), _) = st
            .store
            .get(&t.key(name))
            .await
            .map_err(|e| ApiError::from_store(e, r, name))?
        else {
            continue;
        };
        let mut fresh = decode_as(r, &kv)?;
        let left = fresh["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
        if left <= 0 {
            continue;
        }
        fresh["status"]["disruptionsAllowed"] = json!(left - 1);
        match st
            .store
            .update(t.key(name), encode_as(r, &fresh), Some(kv.mod_revision))
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, r, name)),
        }
    }
    Err(refused(
        "The disruption budget changed too often; try again.",
    ))
}
