//! StatefulSet: pods `name-0 … name-(n-1)` with stable hostnames, a PVC per
//! pod and volumeClaimTemplate (kept when pods go), OrderedReady (one at a
//! time, each Running and Ready before the next; scale-down from the
//! highest ordinal) or Parallel pod management, RollingUpdate (highest
//! ordinal first, down to the partition) or OnDelete.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use serde_json::{Value, json};

use super::{
    cache::{Kind, Snapshot},
    daemonset::{REVISION_HASH, revision_ops, revisions},
    ops::{EventRecord, Involved, Op},
    replicaset::{differs, pod_from_template},
    util,
};

pub const COMPONENT: &str = "statefulset-controller";

fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn healthy(p: &Pod) -> bool {
    util::phase(p) == "Running" && util::is_ready(p) && !util::is_terminating(p)
}

fn new_pod(sts: &StatefulSet, ord: i32, hash: &str) -> Value {
    let m = &sts.metadata;
    let set = util::name(m);
    let spec = sts.spec.clone().unwrap_or_default();
    let name = format!("{set}-{ord}");
    let mut t = spec.template.clone();
    let labels = t
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default();
    labels.insert(REVISION_HASH.into(), hash.into());
    labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
    labels.insert("apps.kubernetes.io/pod-index".into(), ord.to_string());
    let mut pod = pod_from_template(
        &t,
        util::namespace(m),
        None,
        Some(&name),
        &serde_json::to_value(util::owner_ref("apps/v1", "StatefulSet", m)).unwrap_or_default(),
    );
    pod["spec"]["hostname"] = json!(name);
    if !spec.service_name.clone().unwrap_or_default().is_empty() {
        pod["spec"]["subdomain"] = json!(spec.service_name);
    }
    let mut volumes: Vec<Value> = pod["spec"]
        .get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in spec.volume_claim_templates.iter().flatten() {
        let tname = util::name(&c.metadata);
        volumes.retain(|v| v["name"] != tname);
        volumes.push(json!({"name": tname, "persistentVolumeClaim": {"claimName": claim_name(tname, set, ord)}}));
    }
    if !volumes.is_empty() {
        pod["spec"]["volumes"] = json!(volumes);
    }
    pod
}

/// The ops for one StatefulSet.
#[expect(clippy::too_many_lines, reason = "one sync, read top to bottom")]
pub fn sync(snap: &Snapshot, sts: &StatefulSet, now: Timestamp) -> Vec<Op> {
    let mut ops = Vec::new();
    let m = &sts.metadata;
    if m.deletion_timestamp.is_some() {
        return ops;
    }
    let Some(spec) = &sts.spec else { return ops };
    let ns = util::namespace(m);
    let set = util::name(m);
    let uid = util::uid(m);
    let me = Involved::of(Kind::StatefulSet, m);
    let delete_member = |p: &Pod| {
        Op::delete(Kind::Pod, &p.metadata).with_event(EventRecord::normal(
            COMPONENT,
            me.clone(),
            "SuccessfulDelete",
            format!(
                "delete Pod {} in StatefulSet {set} successful",
                util::name(&p.metadata)
            ),
        ))
    };
    let replicas = spec.replicas.unwrap_or(1);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let revs = revisions(snap, uid, ns, &spec.template);
    ops.extend(revision_ops(
        &revs,
        "StatefulSet",
        m,
        &spec.template,
        spec.selector.match_labels.as_ref(),
        usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(10) + 1,
    ));
    let update_rev = format!("{set}-{}", revs.hash);
    let current_rev = sts
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .unwrap_or_else(|| update_rev.clone());
    let rev_of = |p: &Pod| {
        util::labels(&p.metadata)
            .get(REVISION_HASH)
            .map(|h| format!("{set}-{h}"))
    };
    let mut pods: Vec<(i32, &Arc<Pod>)> = super::cache::in_namespace(&snap.pods, ns)
        .filter(|p| util::controlled_by(&p.metadata, uid))
        .filter_map(|p| Some((ordinal(set, util::name(&p.metadata))?, p)))
        .collect();
    pods.sort_by_key(|(o, _)| *o);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let in_range = |o: i32| o >= start && o < start + replicas;
    // Claims first: a pod never starts without its volumes.
    for ord in start..start + replicas {
        for c in spec.volume_claim_templates.iter().flatten() {
            let cname = claim_name(util::name(&c.metadata), set, ord);
            if snap.pvcs.contains_key(&(ns.to_owned(), cname.clone())) {
                continue;
            }
            let mut labels = c.metadata.labels.clone().unwrap_or_default();
            labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
            ops.push(
                Op::create(
                    Kind::PersistentVolumeClaim,
                    ns,
                    json!({
                        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": cname, "namespace": ns, "labels": labels,
                                     "annotations": c.metadata.annotations},
                        "spec": c.spec,
                    }),
                )
                .with_event(EventRecord::normal(
                    COMPONENT,
                    me.clone(),
                    "SuccessfulCreate",
                    format!("create Claim {cname} Pod {set}-{ord} in StatefulSet {set} success"),
                )),
            );
        }
    }
    let claims_ready = !ops.iter().any(|o| {
        matches!(
            o,
            Op::Create {
                kind: Kind::PersistentVolumeClaim,
                ..
            }
        )
    });
    let mut blocked = false;
    // Replace failed pods, create missing ones in order.
    for ord in start..start + replicas {
        let pod = pods.iter().find(|(o, _)| *o == ord).map(|(_, p)| *p);
        match pod {
            Some(p) if util::is_terminal(p) && !util::is_terminating(p) => {
                ops.push(delete_member(p));
                blocked = true;
                if !parallel {
                    break;
                }
            }
            Some(p) => {
                if !parallel && !healthy(p) {
                    blocked = true;
                    break;
                }
            }
            None => {
                if claims_ready {
                    let hash = if ord < start + replicas && current_rev != update_rev {
                        // Pods below the partition keep the current revision.
                        let partition = spec
                            .update_strategy
                            .as_ref()
                            .and_then(|s| s.rolling_update.as_ref())
                            .and_then(|r| r.partition)
                            .unwrap_or(0);
                        if ord < partition {
                            current_rev
                                .strip_prefix(&format!("{set}-"))
                                .unwrap_or(&revs.hash)
                                .to_owned()
                        } else {
                            revs.hash.clone()
                        }
                    } else {
                        revs.hash.clone()
                    };
                    // A pod at an old revision needs that revision's template.
                    let template_pod = if hash == revs.hash {
                        new_pod(sts, ord, &hash)
                    } else {
                        old_revision_pod(snap, sts, ord, &hash)
                            .unwrap_or_else(|| new_pod(sts, ord, &revs.hash))
                    };
                    ops.push(Op::create(Kind::Pod, ns, template_pod).with_event(
                        EventRecord::normal(
                            COMPONENT,
                            me.clone(),
                            "SuccessfulCreate",
                            format!("create Pod {set}-{ord} in StatefulSet {set} successful"),
                        ),
                    ));
                }
                blocked = true;
                if !parallel {
                    break;
                }
            }
        }
    }
    // Scale down: highest ordinal first, when everything below is healthy.
    let extras: Vec<&Arc<Pod>> = pods
        .iter()
        .rev()
        .filter(|(o, p)| !in_range(*o) && !util::is_terminating(p))
        .map(|(_, p)| *p)
        .collect();
    let any_terminating = pods.iter().any(|(_, p)| util::is_terminating(p));
    if !extras.is_empty() && (parallel || (!blocked && !any_terminating)) {
        let take = if parallel { extras.len() } else { 1 };
        for p in extras.into_iter().take(take) {
            ops.push(delete_member(p));
        }
        blocked = true;
    }
    // Rolling update: highest ordinal first, one at a time, down to the partition.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let in_set: Vec<&(i32, &Arc<Pod>)> = pods.iter().filter(|(o, _)| in_range(*o)).collect();
    if rolling
        && !blocked
        && !any_terminating
        && in_set.iter().all(|(_, p)| healthy(p))
        && let Some((_, p)) = in_set
            .iter()
            .rev()
            .find(|(o, p)| *o >= partition && rev_of(p).as_deref() != Some(update_rev.as_str()))
    {
        ops.push(delete_member(p));
    }
    let live: Vec<&Arc<Pod>> = pods
        .iter()
        .map(|(_, p)| *p)
        .filter(|p| !util::is_terminal(p))
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count();
    let updated = count(&|p| rev_of(p).as_deref() == Some(update_rev.as_str()));
    let all_updated = in_set.len() == usize::try_from(replicas).unwrap_or(0)
        && in_set
            .iter()
            .all(|(_, p)| rev_of(p).as_deref() == Some(update_rev.as_str()) && healthy(p));
    let current_rev = if all_updated {
        update_rev.clone()
    } else {
        current_rev
    };
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let status = json!({
        "observedGeneration": m.generation,
        "replicas": live.len(),
        "readyReplicas": count(&util::is_ready),
        "availableReplicas": count(&|p| util::is_available(p, min_ready, now)),
        "currentReplicas": count(&|p| rev_of(p).as_deref() == Some(current_rev.as_str())),
        "updatedReplicas": updated,
        "currentRevision": current_rev,
        "updateRevision": update_rev,
        "collisionCount": 0,
    });
    if differs(sts.status.as_ref(), &status) {
        ops.push(Op::status(Kind::StatefulSet, m, status));
    }
    ops
}

/// A pod from the template stored in the revision with `hash`.
fn old_revision_pod(snap: &Snapshot, sts: &StatefulSet, ord: i32, hash: &str) -> Option<Value> {
    let ns = util::namespace(&sts.metadata);
    let name = format!("{}-{hash}", util::name(&sts.metadata));
    let rev = snap.revisions.get(&(ns.to_owned(), name))?;
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    let template = serde_json::from_value(t).ok()?;
    let mut old = sts.clone();
    old.spec.as_mut()?.template = template;
    Some(new_pod(&old, ord, hash))
}

pub fn plan(snap: &Snapshot, now: Timestamp) -> Vec<Op> {
    snap.statefulsets
        .values()
        .flat_map(|s| sync(snap, s, now))
        .collect()
}
