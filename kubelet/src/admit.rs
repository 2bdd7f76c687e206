//! Pod admission on the node, as the kubelet's admit handlers do it: a pod
//! bound here (by the scheduler, or directly through `spec.nodeName`) is
//! checked against the node before anything runs. A rejected pod is set to
//! `Failed` with the reason (`OutOfcpu`, `OutOfmemory`, `OutOfpods`,
//! `OutOfephemeral-storage`, `NodeAffinity`, `NodePorts`,
//! `PodOSNotSupported`) and a message "Pod was rejected: …".
//!
//! Pure: the node and the pods already admitted come in, a verdict goes out.
//! The rules are the scheduler's own (`rudder_k8s::selectors` and
//! `rudder_k8s::resources`), so a pod the scheduler places is admitted.

use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use rudder_k8s::{
    quantity::parse_milli,
    resources::{Amounts, host_ports, pod_requests_defaulted},
    selectors::pod_fits_node_affinity,
};

/// Why a pod may not run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

impl Rejection {
    fn new(reason: impl Into<String>, why: impl std::fmt::Display) -> Self {
        Self {
            reason: reason.into(),
            message: format!("Pod was rejected: {why}"),
        }
    }
}

/// Validates a pod before the node acts on it, whatever its source (the
/// apiserver validated it already; a static pod's file was validated by
/// nobody): the same rules as the apiserver's ([`rudder_k8s::pod`]), and a
/// uid, namespace and name that can be path components, since the pod's
/// directories are named after them. A failure is `FailedValidation`, as
/// upstream's kubelet reports it.
pub fn validate(pod: &Pod, source: &str) -> Result<(), Rejection> {
    let m = &pod.metadata;
    let (ns, name) = (
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
    );
    let mut errors: Vec<String> = Vec::new();
    let uid = m.uid.as_deref().unwrap_or_default();
    if uid.is_empty()
        || uid.len() > 128
        || !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        errors.push(format!("metadata.uid: Invalid value: {uid:?}"));
    }
    if !rudder_k8s::names::is_dns_label(ns) {
        errors.push(format!("metadata.namespace: Invalid value: {ns:?}"));
    }
    if !rudder_k8s::names::is_dns_subdomain(name) {
        errors.push(format!("metadata.name: Invalid value: {name:?}"));
    }
    errors.extend(
        rudder_k8s::pod::validate_pod(pod)
            .iter()
            .map(ToString::to_string),
    );
    if errors.is_empty() {
        return Ok(());
    }
    Err(Rejection {
        reason: "FailedValidation".into(),
        message: format!(
            "Error validating pod {ns}/{name} from {source}, ignoring: [{}]",
            errors.join(", ")
        ),
    })
}

fn allocatable_milli(node: &Node, name: &str) -> Option<i128> {
    let q = node.status.as_ref()?.allocatable.as_ref()?.get(name)?;
    parse_milli(q.0.trim()).ok()
}

/// An amount as the kubelet's message shows it: cpu in millicores, the
/// rest in whole units.
fn shown(name: &str, milli: i128) -> i128 {
    if name == "cpu" {
        milli
    } else {
        (milli + 999).div_euclid(1000)
    }
}

/// The resource the pod cannot have beside `admitted`, if any.
fn out_of_resources(spec: &PodSpec, node: &Node, admitted: &[&Pod]) -> Option<Rejection> {
    let pods_cap = allocatable_milli(node, "pods").map_or(110, |m| m / 1000);
    if admitted.len() as i128 + 1 > pods_cap {
        return Some(Rejection::new(
            "OutOfpods",
            format!(
                "Node didn't have enough resource: pods, requested: 1, used: {}, capacity: {pods_cap}",
                admitted.len()
            ),
        ));
    }
    let want = pod_requests_defaulted(spec);
    let mut used = Amounts::new();
    for p in admitted.iter().filter_map(|p| p.spec.as_ref()) {
        for (k, v) in pod_requests_defaulted(p) {
            *used.entry(k).or_default() += v;
        }
    }
    for (name, want) in want.iter().filter(|(_, w)| **w > 0) {
        // A node that reports no cpu, memory or ephemeral storage is not
        // limited in it; any other resource it does not report, it lacks.
        let cap = match allocatable_milli(node, name) {
            Some(cap) => cap,
            None if ["cpu", "memory", "ephemeral-storage"].contains(&name.as_str()) => continue,
            None => 0,
        };
        let used = used.get(name).copied().unwrap_or(0);
        if used + want > cap {
            return Some(Rejection::new(
                format!("OutOf{name}"),
                format!(
                    "Node didn't have enough resource: {name}, requested: {}, used: {}, capacity: {}",
                    shown(name, *want),
                    shown(name, used),
                    shown(name, cap)
                ),
            ));
        }
    }
    None
}

/// Whether `pod` may run on `node` beside `admitted` (the pods this node
/// runs that are not finished).
pub fn admit(pod: &Pod, node: &Node, admitted: &[&Pod]) -> Result<(), Rejection> {
    let Some(spec) = &pod.spec else {
        return Err(Rejection::new("InvalidPod", "the pod has no spec"));
    };
    if let Some(os) = &spec.os
        && os.name != "linux"
    {
        return Err(Rejection::new(
            "PodOSNotSupported",
            format!(
                "Failed to admit pod as the OS field doesn't match node OS: pod OS {:?}, node OS \"linux\"",
                os.name
            ),
        ));
    }
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if !pod_fits_node_affinity(pod, node_name, &labels) {
        return Err(Rejection::new(
            "NodeAffinity",
            "Predicate NodeAffinity failed",
        ));
    }
    let mine = host_ports(spec);
    let taken: Vec<_> = admitted
        .iter()
        .filter_map(|p| p.spec.as_ref())
        .flat_map(host_ports)
        .collect();
    if mine.iter().any(|m| taken.iter().any(|t| m.conflicts(t))) {
        return Err(Rejection::new("NodePorts", "Predicate NodePorts failed"));
    }
    if let Some(r) = out_of_resources(spec, node, admitted) {
        return Err(r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"disk": "ssd", "kubernetes.io/os": "linux", "gen": "5"}},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "3", "ephemeral-storage": "10Gi"}}
        }))
        .unwrap()
    }

    fn pod(spec: &serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec}))
            .unwrap()
    }

    fn box_with(cpu: &str, mem: &str) -> Pod {
        pod(
            &serde_json::json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}),
        )
    }

    #[test]
    fn resources_add_up_against_allocatable() {
        let n = node();
        let a = box_with("1500m", "100Mi");
        assert_eq!(admit(&a, &n, &[]), Ok(()));
        let b = box_with("600m", "100Mi");
        let e = admit(&b, &n, &[&a]).unwrap_err();
        assert_eq!(e.reason, "OutOfcpu");
        assert_eq!(
            e.message,
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000"
        );
        let big = box_with("100m", "2Gi");
        assert_eq!(admit(&big, &n, &[]).unwrap_err().reason, "OutOfmemory");
        // Limits stand in for unset requests.
        let lim = pod(
            &serde_json::json!({"containers": [{"name": "c", "image": "i",
            "resources": {"limits": {"cpu": "3"}}}]}),
        );
        assert_eq!(admit(&lim, &n, &[]).unwrap_err().reason, "OutOfcpu");
        // Pods without requests always fit, up to the pod count.
        let free = pod(&serde_json::json!({"containers": [{"name": "c", "image": "i"}]}));
        assert_eq!(admit(&free, &n, &[&free, &free]), Ok(()));
        assert_eq!(
            admit(&free, &n, &[&free, &free, &free]).unwrap_err().reason,
            "OutOfpods"
        );
    }

    #[test]
    fn init_containers_count_at_their_peak_and_sidecars_throughout() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "initContainers": [
                {"name": "side", "image": "i", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "big", "image": "i", "resources": {"requests": {"cpu": "1"}}},
                {"name": "small", "image": "i", "resources": {"requests": {"cpu": "100m"}}}
            ],
            "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "500m"}}}],
            "overhead": {"cpu": "10m"}
        }))
        .unwrap();
        // max(200 + 1000, 200 + 500) + 10
        assert_eq!(pod_requests_defaulted(&spec).get("cpu"), Some(&1210));
    }

    #[test]
    fn selectors_affinity_ports_and_os() {
        let n = node();
        let sel = pod(&serde_json::json!({"nodeSelector": {"disk": "hdd"}, "containers": []}));
        let e = admit(&sel, &n, &[]).unwrap_err();
        assert_eq!(
            (e.reason.as_str(), e.message.as_str()),
            (
                "NodeAffinity",
                "Pod was rejected: Predicate NodeAffinity failed"
            )
        );
        let aff = |op: &str, vals: serde_json::Value| {
            pod(
                &serde_json::json!({"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gen", "operator": op, "values": vals}]}]}}}}),
            )
        };
        assert!(admit(&aff("Gt", serde_json::json!(["4"])), &n, &[]).is_ok());
        assert!(admit(&aff("Lt", serde_json::json!(["4"])), &n, &[]).is_err());
        assert!(admit(&aff("In", serde_json::json!(["5", "6"])), &n, &[]).is_ok());
        assert!(admit(&aff("NotIn", serde_json::json!(["5"])), &n, &[]).is_err());
        let by_name = pod(
            &serde_json::json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}),
        );
        assert!(admit(&by_name, &n, &[]).is_ok());

        let port = |ip: &str| {
            pod(
                &serde_json::json!({"containers": [{"name": "c", "image": "i",
                "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": ip}]}]}),
            )
        };
        let a = port("0.0.0.0");
        assert_eq!(
            admit(&port("10.0.0.1"), &n, &[&a]).unwrap_err().reason,
            "NodePorts"
        );
        let b = port("10.0.0.1");
        assert!(admit(&port("10.0.0.2"), &n, &[&b]).is_ok());

        let win = pod(&serde_json::json!({"os": {"name": "windows"}, "containers": []}));
        assert_eq!(
            admit(&win, &n, &[]).unwrap_err().reason,
            "PodOSNotSupported"
        );
    }
}
