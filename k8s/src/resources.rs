//! What a pod takes of a node, as Kubernetes' `resourcehelper.PodRequests`
//! and `PodLimits` count it: app containers and sidecars (init containers
//! with `restartPolicy: Always`) summed; each ordinary init container runs
//! alone beside the sidecars started before it, and the pod needs the
//! larger of that peak and the sum; the pod overhead on top. And the host
//! ports a pod takes. Written once here for the scheduler, ResourceQuota
//! and the kubelet's admission.

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

/// One host port a pod takes, as the scheduler's `HostPortInfo` keeps it:
/// the protocol defaults to TCP and an empty address to `0.0.0.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two pods taking these ports cannot share a node: the same
    /// protocol and port on the same address, or either on every address.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        const ALL: &str = "0.0.0.0";
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || self.ip == ALL || other.ip == ALL)
    }
}

/// The host ports of the pod's containers and init containers.
pub fn host_ports(spec: &PodSpec) -> Vec<HostPort> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            Some(HostPort {
                protocol: p
                    .protocol
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "TCP".into()),
                ip: p
                    .host_ip
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                port,
            })
        })
        .collect()
}

/// Requests with each unset one taken from the container's limit, as the
/// apiserver's defaulting leaves them: for pods that did not go through
/// it (a kubelet's static pods).
pub fn pod_requests_defaulted(spec: &PodSpec) -> Amounts {
    let mut spec = spec.clone();
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        if let Some(r) = c.resources.as_mut()
            && let Some(limits) = &r.limits
        {
            let requests = r.requests.get_or_insert_with(BTreeMap::new);
            for (k, v) in limits {
                requests.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    pod_requests(&spec)
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

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn host_ports_default_and_conflict_as_the_scheduler_sees_them() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({"containers": [
            {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": ""},
                                    {"containerPort": 81}]},
            {"name": "b", "ports": [{"containerPort": 53, "hostPort": 53, "protocol": "UDP",
                                     "hostIP": "10.0.0.1"}]}]}))
        .unwrap();
        let ports = host_ports(&spec);
        assert_eq!(
            ports,
            vec![
                HostPort {
                    protocol: "TCP".into(),
                    ip: "0.0.0.0".into(),
                    port: 8080
                },
                HostPort {
                    protocol: "UDP".into(),
                    ip: "10.0.0.1".into(),
                    port: 53
                },
            ]
        );
        let at = |ip: &str| HostPort {
            protocol: "UDP".into(),
            ip: ip.into(),
            port: 53,
        };
        assert!(ports[1].conflicts(&at("10.0.0.1")));
        assert!(ports[1].conflicts(&at("0.0.0.0")));
        assert!(!ports[1].conflicts(&at("10.0.0.2")));
        assert!(!ports[0].conflicts(&at("0.0.0.0")), "another protocol");
    }

    #[test]
    fn static_pods_take_unset_requests_from_limits() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                                        "requests": {"cpu": "200m"}}}]}))
        .unwrap();
        let r = pod_requests_defaulted(&spec);
        assert_eq!(r.get("cpu"), Some(&200));
        assert_eq!(r.get("memory"), Some(&(1_073_741_824 * 1000)));
    }
}
