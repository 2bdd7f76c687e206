//! The disruption controller: each PodDisruptionBudget's status, as
//! kube-controller-manager computes it. The pods its selector matches in
//! its namespace; how many are expected (the number matched for an
//! absolute `minAvailable`, else the replicas of their controllers:
//! ReplicaSet, StatefulSet, ReplicationController); how many must stay
//! healthy (`minAvailable`, or expected minus `maxUnavailable`, percentages
//! rounded up); how many are healthy (Ready, not being deleted); and so
//! how many disruptions are allowed now. The eviction API reads
//! `disruptionsAllowed` (see the apiserver's `api/disruption.rs`).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{core::v1::Pod, policy::v1::PodDisruptionBudget},
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde_json::json;

use super::{
    cache::{Kind, Snapshot},
    ops::Op,
    replicaset::differs,
    util,
};

/// A percentage or a count of `total`, rounded up (as the controller's
/// `GetScaledValueFromIntOrPercent(…, true)`).
fn scaled(v: &IntOrString, total: i32) -> Option<i32> {
    match v {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            let n = (i64::from(total) * pct + 99) / 100;
            i32::try_from(n).ok()
        }
    }
}

/// The replicas of a pod's controller, if it has one that scales.
fn controller_scale(snap: &Snapshot, pod: &Pod) -> Option<(String, i32)> {
    let owner = util::controller_of(&pod.metadata)?;
    let key = (
        util::namespace(&pod.metadata).to_owned(),
        owner.name.clone(),
    );
    let replicas = match owner.kind.as_str() {
        "ReplicaSet" => snap.replicasets.get(&key)?.spec.as_ref()?.replicas,
        "StatefulSet" => snap.statefulsets.get(&key)?.spec.as_ref()?.replicas,
        "ReplicationController" => {
            snap.replication_controllers
                .get(&key)?
                .spec
                .as_ref()?
                .replicas
        }
        _ => return None,
    };
    Some((owner.uid.clone(), replicas.unwrap_or(1)))
}

/// The status of one budget.
pub fn status(snap: &Snapshot, pdb: &PodDisruptionBudget) -> serde_json::Value {
    let ns = util::namespace(&pdb.metadata);
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods: Vec<&std::sync::Arc<Pod>> = match &spec.selector {
        Some(sel) if !util::selector_is_empty(sel) => super::cache::in_namespace(&snap.pods, ns)
            .filter(|p| {
                !util::is_terminal(p) && util::selector_matches(sel, util::labels(&p.metadata))
            })
            .collect(),
        _ => Vec::new(),
    };
    let healthy = pods
        .iter()
        .filter(|p| util::is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .count();
    let healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
    let matched = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    let by_controllers = || {
        let scales: BTreeMap<String, i32> = pods
            .iter()
            .filter_map(|p| controller_scale(snap, p))
            .collect();
        if scales.is_empty() {
            matched
        } else {
            scales.values().sum()
        }
    };
    let (expected, desired) = match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(n)), _) => (matched, *n),
        (Some(pct), _) => {
            let e = by_controllers();
            (e, scaled(pct, e).unwrap_or(e))
        }
        (None, Some(max)) => {
            let e = by_controllers();
            (e, (e - scaled(max, e).unwrap_or(0)).max(0))
        }
        // Neither: one healthy pod at least is what the API defaults to.
        (None, None) => (matched, 1),
    };
    let allowed = (healthy - desired).max(0);
    let (cond, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let transition = pdb
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"))
        .filter(|c| c.status == cond)
        .map(|c| json!(c.last_transition_time))
        .unwrap_or_else(|| {
            json!(
                jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            )
        });
    json!({
        "observedGeneration": pdb.metadata.generation,
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": [{"type": "DisruptionAllowed", "status": cond, "reason": reason,
                        "message": "", "observedGeneration": pdb.metadata.generation,
                        "lastTransitionTime": transition}],
    })
}

/// Every budget's status, where it changed.
pub fn plan(snap: &Snapshot) -> Vec<Op> {
    snap.pdbs
        .values()
        .filter_map(|pdb| {
            let want = status(snap, pdb);
            let cur = pdb.status.as_ref().map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                // Compared without the time of the condition.
                if let Some(c) = v.pointer_mut("/conditions/0/lastTransitionTime") {
                    *c = want["conditions"][0]["lastTransitionTime"].clone();
                }
                v
            });
            differs(cur.as_ref(), &want)
                .then(|| Op::status(Kind::PodDisruptionBudget, &pdb.metadata, want))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Some(2));
        assert_eq!(scaled(&IntOrString::String("10%".into()), 5), Some(1));
        assert_eq!(scaled(&IntOrString::Int(2), 10), Some(2));
        assert_eq!(scaled(&IntOrString::String("x".into()), 3), None);
    }
}
