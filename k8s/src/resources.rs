//! What a pod takes of a node, as Kubernetes' `resourcehelper.PodRequests`
//! and `PodLimits` count it: app containers and sidecars (init containers
//! with `restartPolicy: Always`) summed; each ordinary init container runs
//! alone beside the sidecars started before it, and the pod needs the
//! larger of that peak and the sum; the pod overhead on top. Written once
//! here for the scheduler and ResourceQuota (the kubelet's admission keeps
//! its own fixed-field form for now).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{PodSpec, ResourceRequirements},
    apimachinery::pkg::api::resource::Quantity,
};

use crate::quantity::parse_milli;

/// Thousandths of each resource's unit, by resource name.
pub type Amounts = BTreeMap<String, i128>;

fn add(into: &mut Amounts, from: &Amounts) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn amounts(list: Option<&BTreeMap<String, Quantity>>) -> Amounts {
    list.into_iter()
        .flatten()
        .map(|(k, q)| (k.clone(), parse_milli(q.0.trim()).unwrap_or(0)))
        .collect()
}

/// The pod's total of what `pick` chooses from each container's
/// resources (its requests, its limits, or requests falling back to
/// limits).
pub fn pod_total(
    spec: &PodSpec,
    pick: impl Fn(&ResourceRequirements) -> Option<&BTreeMap<String, Quantity>>,
) -> Amounts {
    let of =
        |c: &k8s_openapi::api::core::v1::Container| amounts(c.resources.as_ref().and_then(&pick));
    let mut sum = Amounts::new();
    for c in &spec.containers {
        add(&mut sum, &of(c));
    }
    let mut sidecars = Amounts::new();
    let mut init_peak = Amounts::new();
    for c in spec.init_containers.iter().flatten() {
        let r = of(c);
        if c.restart_policy.as_deref() == Some("Always") {
            add(&mut sidecars, &r);
            add(&mut sum, &r);
        } else {
            let mut here = sidecars.clone();
            add(&mut here, &r);
            for (k, v) in here {
                let e = init_peak.entry(k).or_default();
                *e = (*e).max(v);
            }
        }
    }
    for (k, v) in init_peak {
        let e = sum.entry(k).or_default();
        *e = (*e).max(v);
    }
    add(&mut sum, &amounts(spec.overhead.as_ref()));
    sum
}

/// `PodRequests`: the requests of every container.
pub fn pod_requests(spec: &PodSpec) -> Amounts {
    pod_total(spec, |r| r.requests.as_ref())
}

/// `PodLimits`: the limits of every container.
pub fn pod_limits(spec: &PodSpec) -> Amounts {
    pod_total(spec, |r| r.limits.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn containers_sum_and_init_containers_peak_beside_earlier_sidecars() {
        let s = spec(serde_json::json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}},
            ],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                {"name": "big", "resources": {"requests": {"cpu": "400m"}}},
            ],
            "overhead": {"cpu": "10m"},
        }));
        // max(100 + 200 + 50, 50 + 400) + 10.
        assert_eq!(pod_requests(&s)["cpu"], 460);
        assert_eq!(pod_limits(&s)["memory"], 1024 * 1024 * 1024 * 1000);
        let no_init = spec(serde_json::json!({"containers": [{"name": "a"}]}));
        assert!(pod_requests(&no_init).is_empty());
    }
}
