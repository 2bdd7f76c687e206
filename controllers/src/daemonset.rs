//! DaemonSet: one pod per eligible node (node selector and affinity, taints
//! against the template's tolerations plus the ones Kubernetes adds to
//! daemon pods, so cordoned and not-ready nodes still get theirs), placed
//! by the scheduler through a `metadata.name` node affinity; RollingUpdate
//! within maxUnavailable, OnDelete; ControllerRevisions for history.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::{ControllerRevision, DaemonSet, DaemonSetSpec},
    core::v1::{Node, Pod, PodTemplateSpec, Toleration},
};
use serde_json::{Value, json};

use super::{
    cache::{Kind, Snapshot},
    ops::{EventRecord, Involved, Op},
    replicaset::{differs, pod_from_template},
    util,
};

pub const COMPONENT: &str = "daemonset-controller";
pub const REVISION_HASH: &str = "controller-revision-hash";

/// The tolerations Kubernetes adds to every daemon pod.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    };
    let mut v = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        v.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    v
}

/// The template's hash and the ControllerRevisions of an owner.
#[derive(Debug)]
pub struct Revisions<'a> {
    pub hash: String,
    pub current: Option<&'a Arc<ControllerRevision>>,
    pub max: i64,
    pub all: Vec<&'a Arc<ControllerRevision>>,
}

pub fn revisions<'a>(
    snap: &'a Snapshot,
    owner_uid: &str,
    ns: &str,
    template: &PodTemplateSpec,
) -> Revisions<'a> {
    let hash = util::stable_hash(&util::template_without(template, REVISION_HASH), 0);
    let all: Vec<&Arc<ControllerRevision>> = super::cache::in_namespace(&snap.revisions, ns)
        .filter(|r| util::controlled_by(&r.metadata, owner_uid))
        .collect();
    let current = all
        .iter()
        .copied()
        .find(|r| util::labels(&r.metadata).get(REVISION_HASH) == Some(&hash));
    let max = all.iter().map(|r| r.revision).max().unwrap_or(0);
    Revisions {
        hash,
        current,
        max,
        all,
    }
}

/// A ControllerRevision holding the template (as `kubectl rollout undo`
/// expects: a patch of `spec.template`), or a bump of an existing one's
/// revision when the template came back.
pub fn revision_ops(
    revs: &Revisions<'_>,
    owner_kind: &str,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    template: &PodTemplateSpec,
    selector_labels: Option<&util::Labels>,
    limit: usize,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let ns = util::namespace(owner);
    match revs.current {
        None => {
            let mut t = serde_json::to_value(template).unwrap_or_default();
            t["$patch"] = json!("replace");
            let mut labels = serde_json::to_value(selector_labels.cloned().unwrap_or_default())
                .unwrap_or_default();
            labels[REVISION_HASH] = json!(revs.hash);
            ops.push(Op::create(
                Kind::ControllerRevision,
                ns,
                json!({
                    "apiVersion": "apps/v1", "kind": "ControllerRevision",
                    "metadata": {
                        "name": format!("{}-{}", util::name(owner), revs.hash),
                        "namespace": ns, "labels": labels,
                        "ownerReferences": [util::owner_ref("apps/v1", owner_kind, owner)],
                    },
                    "data": {"spec": {"template": t}},
                    "revision": revs.max + 1,
                }),
            ));
        }
        Some(r) if r.revision < revs.max => {
            ops.push(Op::patch(
                Kind::ControllerRevision,
                &r.metadata,
                json!({"revision": revs.max + 1}),
            ));
        }
        Some(_) => {}
    }
    if revs.all.len() > limit {
        let mut old: Vec<_> = revs
            .all
            .iter()
            .filter(|r| {
                revs.current
                    .is_none_or(|c| c.metadata.uid != r.metadata.uid)
            })
            .collect();
        old.sort_by_key(|r| r.revision);
        for r in old.iter().take(revs.all.len() - limit) {
            ops.push(Op::delete(Kind::ControllerRevision, &r.metadata));
        }
    }
    ops
}

/// The node a daemon pod is for: its nodeName, else its `metadata.name`
/// node affinity.
fn pod_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

/// (should run a new pod, may keep an existing one)
fn eligibility(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    let Some(t) = ds.spec.as_ref().map(|s| &s.template) else {
        return (false, false);
    };
    let spec = t.spec.clone().unwrap_or_default();
    let probe = Pod {
        spec: Some(spec.clone()),
        ..Pod::default()
    };
    let name = util::name(&node.metadata);
    if !util::pod_fits_node_affinity(&probe, name, util::labels(&node.metadata)) {
        return (false, false);
    }
    let mut tol = spec.tolerations.clone().unwrap_or_default();
    tol.extend(daemon_tolerations(spec.host_network.unwrap_or(false)));
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let no_exec = util::untolerated(&taints, &tol, &["NoExecute"]).is_some();
    let no_sched = util::untolerated(&taints, &tol, &["NoSchedule"]).is_some();
    (!no_exec && !no_sched, !no_exec)
}

fn daemon_pod(ds: &DaemonSet, node: &str, hash: &str) -> Value {
    let m = &ds.metadata;
    let spec = ds.spec.clone().unwrap_or_default();
    let mut t = spec.template;
    let labels = t
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default();
    labels.insert(REVISION_HASH.into(), hash.into());
    labels.insert(
        "pod-template-generation".into(),
        m.generation.unwrap_or(1).to_string(),
    );
    let mut pod = pod_from_template(
        &t,
        util::namespace(m),
        Some(&format!("{}-", util::name(m))),
        None,
        &serde_json::to_value(util::owner_ref("apps/v1", "DaemonSet", m)).unwrap_or_default(),
    );
    let host_network = t
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let mut tol = t
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    for d in daemon_tolerations(host_network) {
        if !tol.iter().any(|x| x.key == d.key && x.effect == d.effect) {
            tol.push(d);
        }
    }
    pod["spec"]["tolerations"] = serde_json::to_value(tol).unwrap_or_default();
    let term =
        json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]});
    let affinity = pod["spec"]
        .get("affinity")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut affinity = if affinity.is_null() {
        json!({})
    } else {
        affinity
    };
    let terms = affinity
        .pointer("/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // The node's name joins every term (terms are ORed).
    let terms: Vec<Value> = if terms.is_empty() {
        vec![term]
    } else {
        terms
            .into_iter()
            .map(|mut t| {
                let mut fields: Vec<Value> = t
                    .get("matchFields")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                fields.retain(|f| f["key"] != "metadata.name");
                fields.push(json!({"key": "metadata.name", "operator": "In", "values": [node]}));
                t["matchFields"] = json!(fields);
                t
            })
            .collect()
    };
    affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
        json!({"nodeSelectorTerms": terms});
    pod["spec"]["affinity"] = affinity;
    pod
}

/// The ops for one DaemonSet.
pub fn sync(snap: &Snapshot, ds: &DaemonSet, now: Timestamp) -> Vec<Op> {
    let mut ops = Vec::new();
    let m = &ds.metadata;
    if m.deletion_timestamp.is_some() {
        return ops;
    }
    let Some(spec) = &ds.spec else { return ops };
    let ns = util::namespace(m);
    let uid = util::uid(m);
    let me = Involved::of(Kind::DaemonSet, m);
    let revs = revisions(snap, uid, ns, &spec.template);
    ops.extend(revision_ops(
        &revs,
        "DaemonSet",
        m,
        &spec.template,
        spec.selector.match_labels.as_ref(),
        usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(10) + 1,
    ));
    let hash = revs.hash.clone();
    let mut by_node: BTreeMap<String, Vec<&Arc<Pod>>> = BTreeMap::new();
    for p in super::cache::in_namespace(&snap.pods, ns) {
        if util::controlled_by(&p.metadata, uid)
            && !util::is_terminating(p)
            && let Some(n) = pod_node(p)
        {
            by_node.entry(n).or_default().push(p);
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let (mut desired, mut current, mut misscheduled, mut ready, mut updated, mut available) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let mut old_pods: Vec<(&Arc<Pod>, bool)> = Vec::new();
    let mut unavailable: i32 = 0;
    for node in snap.nodes.values() {
        let name = util::name(&node.metadata).to_owned();
        let (run, keep) = eligibility(ds, node);
        let pods = by_node.remove(&name).unwrap_or_default();
        if run {
            desired += 1;
        }
        let (failed, live): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
            pods.into_iter().partition(|p| util::phase(p) == "Failed");
        for p in &failed {
            ops.push(
                Op::delete(Kind::Pod, &p.metadata).with_event(EventRecord::warning(
                    COMPONENT,
                    me.clone(),
                    "FailedDaemonPod",
                    format!(
                        "Found failed daemon pod {ns}/{} on node {name}, will try to kill it",
                        util::name(&p.metadata)
                    ),
                )),
            );
        }
        if !run && !keep {
            misscheduled += live.len();
            ops.extend(live.into_iter().map(|p| delete_daemon_pod(p, &me)));
            continue;
        }
        if live.is_empty() {
            if run {
                unavailable += 1;
                if failed.is_empty() {
                    ops.push(
                        Op::create(Kind::Pod, ns, daemon_pod(ds, &name, &hash)).with_event(
                            EventRecord::normal(
                                COMPONENT,
                                me.clone(),
                                "SuccessfulCreate",
                                "Created pod: {name}",
                            ),
                        ),
                    );
                }
            }
            continue;
        }
        if !run {
            misscheduled += 1;
        }
        current += 1;
        // Extra pods on one node: keep the oldest.
        let mut live = live;
        live.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        for extra in &live[1..] {
            ops.push(Op::delete(Kind::Pod, &extra.metadata));
        }
        let p = live[0];
        let is_ready = util::is_ready(p);
        let is_avail = util::is_available(p, min_ready, now);
        ready += usize::from(is_ready);
        available += usize::from(is_avail);
        if !is_avail {
            unavailable += 1;
        }
        if util::labels(&p.metadata).get(REVISION_HASH) == Some(&hash) {
            updated += 1;
        } else {
            old_pods.push((p, is_avail));
        }
    }
    // Pods left over belong to nodes that no longer exist.
    for pods in by_node.values() {
        for p in pods {
            ops.push(Op::delete(Kind::Pod, &p.metadata));
        }
    }
    if rolling && !old_pods.is_empty() {
        ops.extend(roll(spec, old_pods, desired, unavailable, &me));
    }
    let status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "updatedNumberScheduled": updated,
        "numberAvailable": available,
        "numberUnavailable": desired.saturating_sub(available),
        "observedGeneration": m.generation,
    });
    if differs(ds.status.as_ref(), &status) {
        ops.push(Op::status(Kind::DaemonSet, m, status));
    }
    ops
}

/// The rolling update's deletions: old pods, unavailable ones first (they
/// cost nothing), then available ones while fewer than `maxUnavailable`
/// (1 by default) are unavailable.
fn roll(
    spec: &DaemonSetSpec,
    mut old_pods: Vec<(&Arc<Pod>, bool)>,
    desired: usize,
    unavailable: i32,
    me: &Involved,
) -> Vec<Op> {
    let max_unavailable = util::int_or_percent(
        spec.update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.as_ref()),
        1,
        i32::try_from(desired).unwrap_or(i32::MAX),
        true,
    )
    .max(1);
    let mut budget = i64::from(max_unavailable) - i64::from(unavailable);
    old_pods.sort_by_key(|(_, avail)| *avail);
    let mut ops = Vec::new();
    for (p, avail) in old_pods {
        if avail {
            if budget <= 0 {
                break;
            }
            budget -= 1;
        }
        ops.push(delete_daemon_pod(p, me));
    }
    ops
}

fn delete_daemon_pod(p: &Pod, me: &Involved) -> Op {
    Op::delete(Kind::Pod, &p.metadata).with_event(EventRecord::normal(
        COMPONENT,
        me.clone(),
        "SuccessfulDelete",
        format!("Deleted pod: {}", util::name(&p.metadata)),
    ))
}

pub fn plan(snap: &Snapshot, now: Timestamp) -> Vec<Op> {
    snap.daemonsets
        .values()
        .flat_map(|d| sync(snap, d, now))
        .collect()
}
