//! Node lifecycle (Ready → Unknown when the node's Lease and status stop
//! being renewed within the grace period; `not-ready` / `unreachable`
//! NoExecute and NoSchedule taints; `unschedulable` taint for cordoned
//! nodes), taint-based eviction (pods that do not tolerate a NoExecute
//! taint are deleted, after their tolerationSeconds when they have some),
//! and podCIDR allocation from the cluster CIDR.

use std::net::Ipv4Addr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Taint};
use serde_json::{Value, json};

use super::{
    cache::{Kind, Snapshot},
    ops::{EventRecord, Involved, Op},
    util,
};

pub const COMPONENT: &str = "node-controller";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Settings of the node controllers.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `--node-monitor-grace-period`.
    pub grace_seconds: i64,
    /// The cluster's pod network and the prefix length given to each node.
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
    pub node_mask: u8,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            grace_seconds: 40,
            cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
            node_mask: 24,
        }
    }
}

/// The last sign of life of a node: its Lease renewal or its Ready
/// condition's heartbeat, else its creation.
fn last_heartbeat(snap: &Snapshot, node: &Node) -> Timestamp {
    let name = util::name(&node.metadata);
    let lease = snap
        .leases
        .get(&("kube-node-lease".to_owned(), name.to_owned()))
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
    let ready = ready_condition(node).and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    let created = node
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    [lease, ready, Some(created)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(created)
}

fn ready_condition(node: &Node) -> Option<&k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The taints the lifecycle controller manages, as they should be.
fn wanted_taints(node: &Node, ready: Option<&str>, now: Timestamp) -> Vec<Taint> {
    let cur: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let keep_time = |key: &str, effect: &str| {
        cur.iter()
            .find(|t| t.key == key && t.effect == effect)
            .and_then(|t| t.time_added.clone())
            .unwrap_or(util::time(now))
    };
    let mut out: Vec<Taint> = cur
        .iter()
        .filter(|t| ![NOT_READY, UNREACHABLE, UNSCHEDULABLE].contains(&t.key.as_str()))
        .cloned()
        .collect();
    // No Ready condition yet: a node still registering (it gets Unknown
    // once the grace period passes without a heartbeat).
    let key = match ready {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        _ => None,
    };
    if let Some(k) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            out.push(Taint {
                key: k.into(),
                effect: effect.into(),
                time_added: Some(keep_time(k, effect)),
                value: None,
            });
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push(Taint {
            key: UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            time_added: Some(keep_time(UNSCHEDULABLE, "NoSchedule")),
            value: None,
        });
    }
    out
}

fn taint_set(t: &[Taint]) -> Vec<(String, String, Option<String>)> {
    let mut v: Vec<_> = t
        .iter()
        .map(|t| (t.key.clone(), t.effect.clone(), t.value.clone()))
        .collect();
    v.sort();
    v
}

fn cidr_of(i: u32, base: (Ipv4Addr, u8), mask: u8) -> Option<String> {
    let count = 1u32.checked_shl(u32::from(mask.checked_sub(base.1)?))?;
    (i < count).then(|| {
        let net = u32::from(base.0) + (i << (32 - u32::from(mask)));
        format!("{}/{mask}", Ipv4Addr::from(net))
    })
}

/// Node lifecycle, taints and podCIDRs.
pub fn plan(snap: &Snapshot, cfg: &NodeConfig, now: Timestamp) -> Vec<Op> {
    let mut ops = Vec::new();
    let used: std::collections::HashSet<String> = snap
        .nodes
        .values()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
        .collect();
    let mut next_cidr = 0u32;
    for node in snap.nodes.values() {
        let m = &node.metadata;
        let name = util::name(m);
        let me = Involved::of(Kind::Node, m);
        // Lifecycle: stale heartbeats make the node's conditions Unknown.
        let mut ready = ready_condition(node).map(|c| c.status.clone());
        let stale = now.as_second() - last_heartbeat(snap, node).as_second() > cfg.grace_seconds;
        if stale && ready.as_deref() != Some("Unknown") {
            let t = util::rfc3339(now);
            let mut conditions: Vec<Value> = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|c| serde_json::to_value(c).unwrap_or_default())
                .collect();
            for ty in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
                let c = json!({
                    "type": ty, "status": "Unknown", "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                    "lastHeartbeatTime": conditions.iter().find(|c| c["type"] == ty).and_then(|c| c.get("lastHeartbeatTime").cloned()),
                    "lastTransitionTime": t,
                });
                match conditions.iter_mut().find(|c| c["type"] == ty) {
                    Some(x) => *x = c,
                    None => conditions.push(c),
                }
            }
            ops.push(
                Op::status(Kind::Node, m, json!({"conditions": conditions})).with_event(
                    EventRecord::normal(
                        COMPONENT,
                        me.clone(),
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    ),
                ),
            );
            ready = Some("Unknown".into());
        }
        let want = wanted_taints(node, ready.as_deref(), now);
        let cur = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if taint_set(&want) != taint_set(&cur) {
            ops.push(Op::patch(
                Kind::Node,
                m,
                json!({"metadata": {"resourceVersion": m.resource_version},
                       "spec": {"taints": want}}),
            ));
        }
        // podCIDR allocation.
        if let Some(base) = cfg.cluster_cidr
            && node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_ref())
                .is_none()
            && m.deletion_timestamp.is_none()
        {
            while let Some(c) = cidr_of(next_cidr, base, cfg.node_mask) {
                next_cidr += 1;
                if !used.contains(&c) {
                    ops.push(
                        Op::patch(
                            Kind::Node,
                            m,
                            json!({"spec": {"podCIDR": c, "podCIDRs": [c]}}),
                        )
                        .with_event(EventRecord::normal(
                            COMPONENT,
                            me.clone(),
                            "CIDRAssignmentSucceeded",
                            format!("Node {name} got podCIDR {c}"),
                        )),
                    );
                    break;
                }
            }
        }
        // A node that is not Ready: its pods are marked not Ready, so that
        // Services stop sending to them at once rather than at eviction
        // (Kubernetes' MarkPodsNotReady). The kubelet sets them Ready again
        // when it is back.
        if ready.as_deref().is_some_and(|r| r != "True") {
            ops.extend(mark_pods_not_ready(snap, name, now));
        }
        // Taint-based eviction.
        let noexec: Vec<&Taint> = want.iter().filter(|t| t.effect == "NoExecute").collect();
        if noexec.is_empty() {
            continue;
        }
        for pod in snap.pods.values() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(name)
                || !util::is_active(pod)
            {
                continue;
            }
            if let Some(at) = eviction_time(pod, &noexec, now)
                && at <= now
            {
                let pm = &pod.metadata;
                ops.push(Op::delete(Kind::Pod, pm).with_event(EventRecord::normal(
                    "taint-eviction-controller",
                    Involved::of(Kind::Pod, pm),
                    "TaintManagerEviction",
                    format!(
                        "Marking for deletion Pod {}/{}",
                        util::namespace(pm),
                        util::name(pm)
                    ),
                )));
            }
        }
    }
    ops
}

/// Status patches setting the Ready condition of every active pod on
/// `node` to False (those already False are left alone), with a
/// `NodeNotReady` event each.
fn mark_pods_not_ready(snap: &Snapshot, node: &str, now: Timestamp) -> Vec<Op> {
    let t = util::rfc3339(now);
    let mut ops = Vec::new();
    for pod in snap.pods.values() {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node)
            || !util::is_active(pod)
        {
            continue;
        }
        let conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if !conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status != "False")
        {
            continue;
        }
        let conditions: Vec<Value> = conditions
            .into_iter()
            .map(|c| {
                let mut v = serde_json::to_value(&c).unwrap_or_default();
                if c.type_ == "Ready" {
                    v["status"] = json!("False");
                    v["lastTransitionTime"] = json!(t);
                }
                v
            })
            .collect();
        let pm = &pod.metadata;
        ops.push(
            Op::status(Kind::Pod, pm, json!({"conditions": conditions})).with_event(
                EventRecord::warning(
                    COMPONENT,
                    Involved::of(Kind::Pod, pm),
                    "NodeNotReady",
                    "Node is not ready",
                ),
            ),
        );
    }
    ops
}

/// When a pod on a node with these NoExecute taints must go: now when a
/// taint is not tolerated, never when all are tolerated without limit,
/// else the earliest taint time plus toleration seconds.
pub fn eviction_time(
    pod: &k8s_openapi::api::core::v1::Pod,
    taints: &[&Taint],
    now: Timestamp,
) -> Option<Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut when: Option<Timestamp> = None;
    for t in taints {
        let matching: Vec<_> = tolerations
            .iter()
            .filter(|x| util::tolerates(x, t))
            .collect();
        if matching.is_empty() {
            return Some(now);
        }
        if matching.iter().any(|x| x.toleration_seconds.is_none()) {
            continue;
        }
        let secs = matching
            .iter()
            .filter_map(|x| x.toleration_seconds)
            .min()
            .unwrap_or(0)
            .max(0);
        let added = t.time_added.as_ref().map_or(now, |x| x.0);
        let at = added + jiff::SignedDuration::from_secs(secs);
        when = Some(when.map_or(at, |w| w.min(at)));
    }
    when
}
