//! Preemption, kube-scheduler's DefaultPreemption PostFilter, as a pure
//! decider over one round's [`ClusterState`]. A pod no node fits, whose
//! `preemptionPolicy` is not `Never`, looks on each node that failed only
//! for reasons removing pods can cure (resources, pod count, host ports)
//! for the smallest set of lower-priority pods to evict: all of them
//! removed, the pod must fit; then they are given back one at a time,
//! those whose PodDisruptionBudget would be broken first, each from the
//! most important (highest priority, then oldest) down, and every one the
//! pod still fits beside stays. Among the nodes, the one with the fewest
//! budgets broken wins, then the lowest highest victim priority, the
//! lowest sum of priorities, the fewest victims (upstream's order). The
//! victims get a `DisruptionTarget` condition (`PreemptionByScheduler`), a
//! `Preempted` event and a graceful delete; the pod gets
//! `status.nominatedNodeName` and waits for them, and does not preempt
//! again while a lower-priority pod on its nominated node is terminating.
//!
//! Not modelled: nodes refused for inter-pod affinity or topology spread
//! (upstream may cure those by preemption too), and nominated pods
//! reserving their node's room against other pending pods.

use std::sync::Arc;

use k8s_openapi::api::{core::v1::Pod, policy::v1::PodDisruptionBudget};
use serde_json::json;

use super::{
    cache::{Kind, Objects},
    ops::{EventRecord, Involved, Op},
    scheduler::{COMPONENT, ClusterState, NodeInfo, PodCtx, filter},
    util,
};

/// Where a pod can go once `victims` are gone.
#[derive(Debug)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<Arc<Pod>>,
    pdb_violations: usize,
}

fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn start_time(p: &Pod) -> Option<jiff::Timestamp> {
    p.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
        .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Failures that evicting pods can cure.
fn resolvable(reason: &str) -> bool {
    reason == "Too many pods"
        || reason.starts_with("Insufficient ")
        || reason == "node(s) didn't have free ports for the requested pod ports"
}

/// Whether the pod may preempt now.
fn eligible(st: &ClusterState, pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return false;
    }
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref());
    let Some(n) = nominated.and_then(|n| st.nodes.iter().find(|x| x.name == n)) else {
        return true;
    };
    // Victims chosen earlier are still going: wait for them.
    !n.pods
        .iter()
        .any(|p| util::is_terminating(p) && priority(p) < priority(pod))
}

/// The budgets' disruptions still allowed, keyed by the budget.
struct Budgets<'a> {
    pdbs: Vec<(&'a PodDisruptionBudget, i32)>,
}

impl<'a> Budgets<'a> {
    fn new(pdbs: &'a Objects<PodDisruptionBudget>) -> Self {
        Self {
            pdbs: pdbs
                .values()
                .map(|b| {
                    let allowed = b.status.as_ref().map_or(0, |s| s.disruptions_allowed);
                    (&**b, allowed)
                })
                .collect(),
        }
    }

    /// Whether evicting these pods (in order) breaks a budget, per pod.
    fn violations(&self, pods: &[Arc<Pod>]) -> Vec<bool> {
        let mut left: Vec<i32> = self.pdbs.iter().map(|(_, a)| *a).collect();
        pods.iter()
            .map(|p| {
                let mut broken = false;
                for (i, (b, _)) in self.pdbs.iter().enumerate() {
                    let same_ns = util::namespace(&b.metadata) == util::namespace(&p.metadata);
                    let sel = b.spec.as_ref().and_then(|s| s.selector.as_ref());
                    if same_ns
                        && sel.is_some_and(|s| {
                            !util::selector_is_empty(s)
                                && util::selector_matches(s, util::labels(&p.metadata))
                        })
                    {
                        left[i] -= 1;
                        broken |= left[i] < 0;
                    }
                }
                broken
            })
            .collect()
    }
}

/// The victims on one node, if evicting lower-priority pods lets `pod` fit.
fn victims_on(
    cx: &PodCtx<'_>,
    n: &NodeInfo,
    pod: &Pod,
    budgets: &Budgets<'_>,
) -> Option<Preemption> {
    let mine = priority(pod);
    let (mut lower, higher): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) =
        n.pods.iter().cloned().partition(|p| priority(p) < mine);
    if lower.is_empty() {
        return None;
    }
    let mut base = n.emptied();
    for p in &higher {
        base.add_pod(p.clone());
    }
    if !filter(cx, &base).is_empty() {
        return None;
    }
    // Most important first: higher priority, then earlier start.
    lower.sort_by(|a, b| {
        priority(b)
            .cmp(&priority(a))
            .then_with(|| start_time(a).cmp(&start_time(b)))
    });
    let broken = budgets.violations(&lower);
    let (violating, fine): (Vec<_>, Vec<_>) = lower.into_iter().zip(broken).partition(|(_, b)| *b);
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (group_violates, group) in [(true, violating), (false, fine)] {
        for (p, _) in group {
            let mut trial = base.clone();
            trial.add_pod(p.clone());
            if filter(cx, &trial).is_empty() {
                base = trial;
            } else {
                pdb_violations += usize::from(group_violates);
                victims.push(p);
            }
        }
    }
    Some(Preemption {
        node: n.name.clone(),
        victims,
        pdb_violations,
    })
}

/// DefaultPreemption for a pod that fits nowhere: the node and victims, if
/// any node can be freed for it.
pub fn preempt(
    st: &ClusterState,
    pod: &Pod,
    pdbs: &Objects<PodDisruptionBudget>,
) -> Option<Preemption> {
    // Nobody placed has a lower priority (the usual case: all 0): nothing
    // to look at, whatever the cluster's size.
    if st.lowest_priority >= priority(pod) || !eligible(st, pod) {
        return None;
    }
    let cx = PodCtx::new(st, pod);
    let budgets = Budgets::new(pdbs);
    let candidates = st.nodes.iter().filter_map(|n| {
        let reasons = filter(&cx, n);
        if reasons.is_empty() || !reasons.iter().all(|r| resolvable(r)) {
            return None;
        }
        victims_on(&cx, n, pod, &budgets).filter(|c| !c.victims.is_empty())
    });
    candidates.min_by_key(|c| {
        let top = c
            .victims
            .iter()
            .map(|v| priority(v))
            .max()
            .unwrap_or(i32::MIN);
        let sum: i64 = c.victims.iter().map(|v| i64::from(priority(v))).sum();
        (c.pdb_violations, top, sum, c.victims.len())
    })
}

/// What carrying out a preemption takes: each victim marked and deleted
/// (gracefully), and the pod nominated to the node.
pub fn ops(pod: &Pod, p: &Preemption, now: jiff::Timestamp) -> Vec<Op> {
    let mut ops = Vec::new();
    let uid = util::uid(&pod.metadata);
    for v in &p.victims {
        if util::is_terminating(v) {
            continue;
        }
        let m = &v.metadata;
        let mut conditions: Vec<serde_json::Value> = v
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != "DisruptionTarget")
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect();
        conditions.push(json!({
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": format!("{COMPONENT}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": util::rfc3339(now),
        }));
        ops.push(Op::status(
            Kind::Pod,
            m,
            json!({ "conditions": conditions }),
        ));
        ops.push(Op::delete(Kind::Pod, m).with_event(EventRecord::normal(
            COMPONENT,
            Involved::of(Kind::Pod, m),
            "Preempted",
            format!("Preempted by pod {uid} on node {}", p.node),
        )));
    }
    ops.push(Op::status(
        Kind::Pod,
        &pod.metadata,
        json!({ "nominatedNodeName": p.node }),
    ));
    ops
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use k8s_openapi::api::core::v1::Node;
    use serde_json::Value;

    use super::*;
    use crate::{
        cache::{Cached, Snapshot, key_of},
        scheduler,
    };

    fn put<T: Cached>(s: &mut Snapshot, v: Value) {
        let o: T = serde_json::from_value(v).unwrap();
        T::slot(s).insert(key_of(kube::Resource::meta(&o)), Arc::new(o));
    }

    fn node(s: &mut Snapshot, name: &str) {
        put::<Node>(
            s,
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}),
        );
    }

    fn pod(s: &mut Snapshot, name: &str, prio: i32, cpu: &str, node: Option<&str>, start: &str) {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                "labels": {"app": name}, "creationTimestamp": format!("2026-11-22T{start}:00Z")},
            "spec": {"priority": prio, "containers": [{"name": "c", "image": "x",
                "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": "Pending"}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
            p["status"]["phase"] = json!("Running");
        }
        put::<Pod>(s, p);
    }

    fn decide(s: &Snapshot, name: &str) -> Option<(String, Vec<String>)> {
        let st = ClusterState::build(s, &HashMap::new());
        let pod = s.pods.get(&("default".into(), name.into())).unwrap();
        preempt(&st, pod, &s.pdbs).map(|p| {
            let names = p
                .victims
                .iter()
                .map(|v| util::name(&v.metadata).to_owned())
                .collect();
            (p.node, names)
        })
    }

    #[test]
    fn the_fewest_least_important_victims_are_chosen() {
        let mut s = Snapshot::default();
        node(&mut s, "n1");
        pod(&mut s, "mid", 100, "1", Some("n1"), "11:00");
        pod(&mut s, "old-low", 0, "2", Some("n1"), "10:00");
        pod(&mut s, "new-low", 0, "1", Some("n1"), "11:30");
        pod(&mut s, "high", 1000, "2", None, "11:50");
        // mid stays (more important), old-low is given back first but
        // then the pod no longer fits, new-low fits back beside it.
        assert_eq!(
            decide(&s, "high"),
            Some(("n1".into(), vec!["old-low".into()]))
        );
        // Equal or higher priorities are never victims.
        pod(&mut s, "peer", 100, "3", None, "11:50");
        assert_eq!(
            decide(&s, "peer"),
            Some(("n1".into(), vec!["old-low".into(), "new-low".into()]))
        );
        pod(&mut s, "low", 0, "1", None, "11:50");
        assert_eq!(decide(&s, "low"), None);
    }

    #[test]
    fn nodes_are_ranked_by_budgets_then_victim_priority() {
        let mut s = Snapshot::default();
        node(&mut s, "n1");
        node(&mut s, "n2");
        pod(&mut s, "a", 50, "4", Some("n1"), "10:00");
        pod(&mut s, "b", 10, "4", Some("n2"), "10:00");
        pod(&mut s, "high", 1000, "1", None, "11:50");
        assert_eq!(decide(&s, "high").unwrap().0, "n2");
        // A budget that allows no disruption covers b: n1 is preferred.
        put::<PodDisruptionBudget>(
            &mut s,
            json!({"metadata": {"name": "pdb", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "b"}}}, "status": {"disruptionsAllowed": 0,
            "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}}),
        );
        assert_eq!(decide(&s, "high").unwrap().0, "n1");
    }

    #[test]
    fn never_policies_taints_and_pending_victims_stop_preemption() {
        let mut s = Snapshot::default();
        node(&mut s, "n1");
        pod(&mut s, "low", 0, "4", Some("n1"), "10:00");
        pod(&mut s, "polite", 1000, "1", None, "11:50");
        let mut p = serde_json::to_value(&*s.pods[&("default".into(), "polite".into())]).unwrap();
        p["spec"]["preemptionPolicy"] = json!("Never");
        put::<Pod>(&mut s, p);
        assert_eq!(decide(&s, "polite"), None);
        // Nominated, with its victim still terminating: wait.
        pod(&mut s, "high", 1000, "1", None, "11:50");
        let mut p = serde_json::to_value(&*s.pods[&("default".into(), "high".into())]).unwrap();
        p["status"]["nominatedNodeName"] = json!("n1");
        put::<Pod>(&mut s, p);
        assert!(decide(&s, "high").is_some());
        let mut low = serde_json::to_value(&*s.pods[&("default".into(), "low".into())]).unwrap();
        low["metadata"]["deletionTimestamp"] = json!("2026-11-22T11:59:00Z");
        put::<Pod>(&mut s, low);
        assert_eq!(decide(&s, "high"), None);
        // A node refused for a taint cannot be freed by evicting pods.
        let mut s = Snapshot::default();
        put::<Node>(
            &mut s,
            json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "4", "pods": "110"}}}),
        );
        pod(&mut s, "low", 0, "4", Some("n1"), "10:00");
        pod(&mut s, "high", 1000, "1", None, "11:50");
        assert_eq!(decide(&s, "high"), None);
    }

    #[test]
    fn a_round_marks_and_deletes_the_victims_and_nominates_the_node() {
        let mut s = Snapshot::default();
        node(&mut s, "n1");
        pod(&mut s, "low", 0, "4", Some("n1"), "10:00");
        pod(&mut s, "high", 1000, "1", None, "11:50");
        let now: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
        let ops = scheduler::round(&s, &mut HashMap::new(), &mut rng, now);
        let text = format!("{ops:?}");
        assert!(text.contains("PreemptionByScheduler"), "{text}");
        assert!(
            text.contains("Preempted by pod u-high on node n1"),
            "{text}"
        );
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::Delete { name, .. } if name == "low")),
            "{text}"
        );
        assert!(text.contains("nominatedNodeName"), "{text}");
        assert!(!ops.iter().any(|o| matches!(o, Op::Bind { .. })), "{text}");
    }
}
