//! A pod's quality-of-service class, as Kubernetes' `ComputePodQOS`
//! (`pkg/apis/core/helper/qos`) derives it: only cpu and memory count, zero
//! quantities count as absent, init containers count as app containers do,
//! and requests and limits are summed over the containers before they are
//! compared. The apiserver writes it into a new pod's status, ResourceQuota
//! scopes select by it and the kubelet reports it; all three use this.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{api::core::v1::PodSpec, apimachinery::pkg::api::resource::Quantity};

use crate::quantity::parse_milli;

/// The three classes, in the words the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The class as `status.qosClass` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

const COMPUTE: [&str; 2] = ["cpu", "memory"];

/// Adds the positive cpu and memory quantities of `list` into `into`; the
/// names it found.
fn add_positive(
    into: &mut BTreeMap<&'static str, i128>,
    list: Option<&BTreeMap<String, Quantity>>,
) -> BTreeSet<&'static str> {
    let mut found = BTreeSet::new();
    for name in COMPUTE {
        let milli = list
            .and_then(|l| l.get(name))
            .and_then(|q| parse_milli(q.0.trim()).ok())
            .unwrap_or(0);
        if milli > 0 {
            *into.entry(name).or_default() += milli;
            found.insert(name);
        }
    }
    found
}

/// The pod's class.
pub fn pod_qos(spec: &PodSpec) -> QosClass {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    let mut guaranteed = true;
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all {
        let res = c.resources.as_ref();
        add_positive(&mut requests, res.and_then(|r| r.requests.as_ref()));
        let found = add_positive(&mut limits, res.and_then(|r| r.limits.as_ref()));
        if found.len() != COMPUTE.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed
        && requests.len() == limits.len()
        && requests.iter().all(|(k, v)| limits.get(k) == Some(v))
    {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// The class of a pod given as JSON (an unparseable spec counts as no
/// resources at all).
pub fn pod_value_qos(pod: &serde_json::Value) -> QosClass {
    let spec = pod
        .get("spec")
        .and_then(|s| serde_json::from_value::<PodSpec>(s.clone()).ok())
        .unwrap_or_default();
    pod_qos(&spec)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, ResourceRequirements};

    use super::*;

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let list = |l: &[(&str, &str)]| {
            (!l.is_empty()).then(|| {
                l.iter()
                    .map(|(k, v)| ((*k).to_string(), Quantity((*v).to_string())))
                    .collect()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        }
    }

    fn spec(containers: Vec<Container>, init: Vec<Container>) -> PodSpec {
        PodSpec {
            containers,
            init_containers: (!init.is_empty()).then_some(init),
            ..PodSpec::default()
        }
    }

    #[test]
    fn classes_as_kubernetes_computes_them() {
        let full = [("cpu", "100m"), ("memory", "64Mi")];
        let cases = [
            (
                spec(vec![container(&[], &[])], vec![]),
                QosClass::BestEffort,
            ),
            // Only cpu and memory count.
            (
                spec(
                    vec![container(&[("ephemeral-storage", "1Gi")], &[])],
                    vec![],
                ),
                QosClass::BestEffort,
            ),
            // A zero quantity is no quantity.
            (
                spec(vec![container(&[("cpu", "0")], &[])], vec![]),
                QosClass::BestEffort,
            ),
            (
                spec(vec![container(&full, &full)], vec![]),
                QosClass::Guaranteed,
            ),
            // Equal in value, spelled differently.
            (
                spec(
                    vec![container(
                        &[("cpu", "0.1"), ("memory", "67108864")],
                        &[("cpu", "100m"), ("memory", "64Mi")],
                    )],
                    vec![],
                ),
                QosClass::Guaranteed,
            ),
            (
                spec(vec![container(&[("cpu", "50m")], &full)], vec![]),
                QosClass::Burstable,
            ),
            (
                spec(vec![container(&[], &[("cpu", "100m")])], vec![]),
                QosClass::Burstable,
            ),
            // An init container without limits makes the pod Burstable.
            (
                spec(
                    vec![container(&full, &full)],
                    vec![container(&[("cpu", "1")], &[])],
                ),
                QosClass::Burstable,
            ),
            // One container without resources beside a full one.
            (
                spec(vec![container(&full, &full), container(&[], &[])], vec![]),
                QosClass::Burstable,
            ),
        ];
        for (i, (s, want)) in cases.iter().enumerate() {
            assert_eq!(pod_qos(s), *want, "case {i}");
        }
    }

    #[test]
    fn json_pods_are_read_the_same_way() {
        let pod = serde_json::json!({"spec": {"containers": [{"name": "c", "resources": {
            "limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        // Requests default to limits in the apiserver; without them the
        // sums differ.
        assert_eq!(pod_value_qos(&pod), QosClass::Burstable);
        assert_eq!(pod_value_qos(&serde_json::json!({})), QosClass::BestEffort);
    }
}
