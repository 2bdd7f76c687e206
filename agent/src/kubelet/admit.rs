//! Pod admission on the node, as the kubelet's admit handlers do it: a pod
//! bound here (by the scheduler, or directly through `spec.nodeName`) is
//! checked against the node before anything runs. A rejected pod is set to
//! `Failed` with the reason (`OutOfcpu`, `OutOfmemory`, `OutOfpods`,
//! `OutOfephemeral-storage`, `NodeAffinity`, `NodePorts`,
//! `PodOSNotSupported`) and a message "Pod was rejected: …".
//!
//! Pure: the node and the pods already admitted come in, a verdict goes out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
};

use super::quantity::{parse_bytes, parse_millis};

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

/// What a pod asks of the node's allocatable resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub millicpu: i64,
    pub memory: i64,
    pub ephemeral: i64,
}

fn container_requests(c: &Container) -> Requests {
    let get = |name: &str| {
        c.resources
            .as_ref()
            .and_then(|r| {
                r.requests
                    .as_ref()
                    .and_then(|q| q.get(name))
                    // An unset request defaults to the limit.
                    .or_else(|| r.limits.as_ref().and_then(|l| l.get(name)))
            })
            .map(|q| q.0.clone())
    };
    Requests {
        millicpu: get("cpu").and_then(|q| parse_millis(&q)).unwrap_or(0),
        memory: get("memory").and_then(|q| parse_bytes(&q)).unwrap_or(0),
        ephemeral: get("ephemeral-storage")
            .and_then(|q| parse_bytes(&q))
            .unwrap_or(0),
    }
}

/// The pod's effective requests: the app containers and sidecars together,
/// or the largest init container if that is more, plus the overhead.
pub fn pod_requests(spec: &PodSpec) -> Requests {
    let mut sum = Requests::default();
    let add = |a: &mut Requests, b: Requests| {
        a.millicpu += b.millicpu;
        a.memory += b.memory;
        a.ephemeral += b.ephemeral;
    };
    for c in &spec.containers {
        add(&mut sum, container_requests(c));
    }
    // Init containers run one at a time, each beside the sidecars started
    // before it; sidecars (restartPolicy Always) stay for the pod's life.
    let mut sidecars = Requests::default();
    let mut init_peak = Requests::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            add(&mut sidecars, r);
            add(&mut sum, r);
        } else {
            init_peak.millicpu = init_peak.millicpu.max(sidecars.millicpu + r.millicpu);
            init_peak.memory = init_peak.memory.max(sidecars.memory + r.memory);
            init_peak.ephemeral = init_peak.ephemeral.max(sidecars.ephemeral + r.ephemeral);
        }
    }
    let mut out = Requests {
        millicpu: sum.millicpu.max(init_peak.millicpu),
        memory: sum.memory.max(init_peak.memory),
        ephemeral: sum.ephemeral.max(init_peak.ephemeral),
    };
    if let Some(o) = &spec.overhead {
        out.millicpu += o.get("cpu").and_then(|q| parse_millis(&q.0)).unwrap_or(0);
        out.memory += o.get("memory").and_then(|q| parse_bytes(&q.0)).unwrap_or(0);
    }
    out
}

fn requirement_holds(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let have = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => have.is_some_and(|v| values.contains(v)),
        "NotIn" => have.is_none_or(|v| !values.contains(v)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(want)) = (
                have.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|v| v.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

fn term_holds(t: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let fields: BTreeMap<String, String> = node
        .metadata
        .name
        .iter()
        .map(|n| ("metadata.name".to_string(), n.clone()))
        .collect();
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let field_exprs = t.match_fields.as_deref().unwrap_or_default();
    // An empty term matches nothing.
    (!exprs.is_empty() || !field_exprs.is_empty())
        && exprs.iter().all(|r| requirement_holds(r, &labels))
        && field_exprs.iter().all(|r| requirement_holds(r, &fields))
}

/// Whether the node satisfies the pod's nodeSelector and required node
/// affinity.
pub fn node_matches(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|sel| sel.node_selector_terms.iter().any(|t| term_holds(t, node)));
    selector_ok && affinity_ok
}

/// The host ports a pod takes: (protocol, hostIP, port).
fn host_ports(spec: &PodSpec) -> Vec<(String, String, i32)> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| {
            (
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                p.host_port.unwrap_or(0),
            )
        })
        .collect()
}

fn ports_conflict(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    let wild = |ip: &str| ip == "0.0.0.0" || ip == "::" || ip.is_empty();
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || wild(&a.1) || wild(&b.1))
}

fn allocatable(node: &Node, name: &str) -> Option<String> {
    node.status
        .as_ref()?
        .allocatable
        .as_ref()?
        .get(name)
        .map(|q| q.0.clone())
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
    if !node_matches(spec, node) {
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
    if mine
        .iter()
        .any(|m| taken.iter().any(|t| ports_conflict(m, t)))
    {
        return Err(Rejection::new("NodePorts", "Predicate NodePorts failed"));
    }
    let want = pod_requests(spec);
    let mut used = Requests::default();
    for p in admitted.iter().filter_map(|p| p.spec.as_ref()) {
        let r = pod_requests(p);
        used.millicpu += r.millicpu;
        used.memory += r.memory;
        used.ephemeral += r.ephemeral;
    }
    let pods_cap = allocatable(node, "pods")
        .and_then(|q| parse_bytes(&q))
        .unwrap_or(110);
    if admitted.len() as i64 + 1 > pods_cap {
        return Err(Rejection::new(
            "OutOfpods",
            format!(
                "Node didn't have enough resource: pods, requested: 1, used: {}, capacity: {pods_cap}",
                admitted.len()
            ),
        ));
    }
    let checks: [(&str, i64, i64, Option<i64>); 3] = [
        (
            "cpu",
            want.millicpu,
            used.millicpu,
            allocatable(node, "cpu").and_then(|q| parse_millis(&q)),
        ),
        (
            "memory",
            want.memory,
            used.memory,
            allocatable(node, "memory").and_then(|q| parse_bytes(&q)),
        ),
        (
            "ephemeral-storage",
            want.ephemeral,
            used.ephemeral,
            allocatable(node, "ephemeral-storage").and_then(|q| parse_bytes(&q)),
        ),
    ];
    for (name, want, used, cap) in checks {
        if let Some(cap) = cap
            && want > 0
            && used + want > cap
        {
            return Err(Rejection::new(
                format!("OutOf{name}"),
                format!(
                    "Node didn't have enough resource: {name}, requested: {want}, used: {used}, capacity: {cap}"
                ),
            ));
        }
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
        assert_eq!(pod_requests(&spec).millicpu, 1210);
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
