//! StatefulSet: pods `name-0 … name-(n-1)` with stable hostnames, a PVC per
//! pod and volumeClaimTemplate (kept when pods go), OrderedReady (one at a
//! time, each Running and Ready before the next; scale-down from the
//! highest ordinal) or Parallel pod management, RollingUpdate (highest
//! ordinal first, down to the partition) or OnDelete.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::{StatefulSet, StatefulSetSpec},
    core::v1::Pod,
};
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
pub fn sync(snap: &Snapshot, sts: &StatefulSet, now: Timestamp) -> Vec<Op> {
    let mut ops = Vec::new();
    let m = &sts.metadata;
    if m.deletion_timestamp.is_some() {
        return ops;
    }
    let Some(spec) = &sts.spec else { return ops };
    let (ns, set, uid) = (util::namespace(m), util::name(m), util::uid(m));
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
    let mut pods: Vec<(i32, &Arc<Pod>)> = super::cache::in_namespace(&snap.pods, ns)
        .filter(|p| util::controlled_by(&p.metadata, uid))
        .filter_map(|p| Some((ordinal(set, util::name(&p.metadata))?, p)))
        .collect();
    pods.sort_by_key(|(o, _)| *o);
    let strategy = spec.update_strategy.as_ref();
    let x = Set {
        snap,
        sts,
        spec,
        ns,
        set,
        me: Involved::of(Kind::StatefulSet, m),
        replicas: spec.replicas.unwrap_or(1),
        start: spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0),
        parallel: spec.pod_management_policy.as_deref() == Some("Parallel"),
        partition: strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0),
        hash: revs.hash.clone(),
        update_rev,
        current_rev,
        pods,
    };
    // Claims first: a pod never starts without its volumes.
    let claims = x.claim_ops();
    let claims_ready = claims.is_empty();
    ops.extend(claims);
    let mut blocked = x.create_or_replace(claims_ready, &mut ops);
    // Scale down: highest ordinal first, when everything below is healthy.
    let extras: Vec<&Arc<Pod>> = x
        .pods
        .iter()
        .rev()
        .filter(|(o, p)| !x.in_range(*o) && !util::is_terminating(p))
        .map(|(_, p)| *p)
        .collect();
    let any_terminating = x.pods.iter().any(|(_, p)| util::is_terminating(p));
    if !extras.is_empty() && (x.parallel || (!blocked && !any_terminating)) {
        let take = if x.parallel { extras.len() } else { 1 };
        for p in extras.into_iter().take(take) {
            ops.push(x.delete_member(p));
        }
        blocked = true;
    }
    let rolling = strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    if rolling && !blocked && !any_terminating {
        ops.extend(x.roll_one());
    }
    let status = x.status(now);
    if differs(sts.status.as_ref(), &status) {
        ops.push(Op::status(Kind::StatefulSet, m, status));
    }
    ops
}

/// One sync of a StatefulSet: what it decides from.
struct Set<'a> {
    snap: &'a Snapshot,
    sts: &'a StatefulSet,
    spec: &'a StatefulSetSpec,
    ns: &'a str,
    set: &'a str,
    me: Involved,
    replicas: i32,
    /// The first ordinal (`spec.ordinals.start`).
    start: i32,
    parallel: bool,
    partition: i32,
    /// The update revision's hash, and the revisions' names.
    hash: String,
    update_rev: String,
    current_rev: String,
    /// The set's pods by ordinal, in order.
    pods: Vec<(i32, &'a Arc<Pod>)>,
}

impl Set<'_> {
    fn in_range(&self, o: i32) -> bool {
        o >= self.start && o < self.start + self.replicas
    }

    fn rev_of(&self, p: &Pod) -> Option<String> {
        util::labels(&p.metadata)
            .get(REVISION_HASH)
            .map(|h| format!("{}-{h}", self.set))
    }

    fn delete_member(&self, p: &Pod) -> Op {
        Op::delete(Kind::Pod, &p.metadata).with_event(EventRecord::normal(
            COMPONENT,
            self.me.clone(),
            "SuccessfulDelete",
            format!(
                "delete Pod {} in StatefulSet {} successful",
                util::name(&p.metadata),
                self.set
            ),
        ))
    }

    /// The claims of every ordinal in range that do not exist yet.
    fn claim_ops(&self) -> Vec<Op> {
        let (ns, set, spec) = (self.ns, self.set, self.spec);
        let mut ops = Vec::new();
        for ord in self.start..self.start + self.replicas {
            for c in spec.volume_claim_templates.iter().flatten() {
                let cname = claim_name(util::name(&c.metadata), set, ord);
                if self.snap.pvcs.contains_key(&(ns.to_owned(), cname.clone())) {
                    continue;
                }
                let mut labels = c.metadata.labels.clone().unwrap_or_default();
                labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
                let claim = json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": cname, "namespace": ns, "labels": labels,
                                 "annotations": c.metadata.annotations},
                    "spec": c.spec,
                });
                let message =
                    format!("create Claim {cname} Pod {set}-{ord} in StatefulSet {set} success");
                ops.push(
                    Op::create(Kind::PersistentVolumeClaim, ns, claim).with_event(
                        EventRecord::normal(
                            COMPONENT,
                            self.me.clone(),
                            "SuccessfulCreate",
                            message,
                        ),
                    ),
                );
            }
        }
        ops
    }

    /// Replaces failed pods and creates missing ones, in order (one at a
    /// time unless Parallel); whether something is still on its way.
    fn create_or_replace(&self, claims_ready: bool, ops: &mut Vec<Op>) -> bool {
        let mut blocked = false;
        for ord in self.start..self.start + self.replicas {
            let pod = self.pods.iter().find(|(o, _)| *o == ord).map(|(_, p)| *p);
            match pod {
                Some(p) if util::is_terminal(p) && !util::is_terminating(p) => {
                    ops.push(self.delete_member(p));
                }
                Some(p) if self.parallel || healthy(p) => continue,
                Some(_) => {}
                None => {
                    if claims_ready {
                        ops.push(self.create_member(ord));
                    }
                }
            }
            blocked = true;
            if !self.parallel {
                break;
            }
        }
        blocked
    }

    /// The pod of ordinal `ord`: at the update revision, or at the current
    /// one below the partition while an update is under way.
    fn create_member(&self, ord: i32) -> Op {
        let (sts, set) = (self.sts, self.set);
        let hash = if self.current_rev != self.update_rev && ord < self.partition {
            self.current_rev
                .strip_prefix(&format!("{set}-"))
                .unwrap_or(&self.hash)
                .to_owned()
        } else {
            self.hash.clone()
        };
        // A pod at an old revision needs that revision's template.
        let pod = if hash == self.hash {
            new_pod(sts, ord, &hash)
        } else {
            old_revision_pod(self.snap, sts, ord, &hash)
                .unwrap_or_else(|| new_pod(sts, ord, &self.hash))
        };
        Op::create(Kind::Pod, self.ns, pod).with_event(EventRecord::normal(
            COMPONENT,
            self.me.clone(),
            "SuccessfulCreate",
            format!("create Pod {set}-{ord} in StatefulSet {set} successful"),
        ))
    }

    /// Rolling update: the highest ordinal not at the update revision,
    /// down to the partition, once every pod in range is healthy.
    fn roll_one(&self) -> Option<Op> {
        let in_set: Vec<&(i32, &Arc<Pod>)> = self
            .pods
            .iter()
            .filter(|(o, _)| self.in_range(*o))
            .collect();
        if !in_set.iter().all(|(_, p)| healthy(p)) {
            return None;
        }
        let (_, p) = in_set.iter().rev().find(|(o, p)| {
            *o >= self.partition && self.rev_of(p).as_deref() != Some(self.update_rev.as_str())
        })?;
        Some(self.delete_member(p))
    }

    fn status(&self, now: Timestamp) -> Value {
        let update_rev = self.update_rev.as_str();
        let live: Vec<&Arc<Pod>> = self
            .pods
            .iter()
            .map(|(_, p)| *p)
            .filter(|p| !util::is_terminal(p))
            .collect();
        let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count();
        let in_set: Vec<&Arc<Pod>> = self
            .pods
            .iter()
            .filter(|(o, _)| self.in_range(*o))
            .map(|(_, p)| *p)
            .collect();
        let all_updated = in_set.len() == usize::try_from(self.replicas).unwrap_or(0)
            && in_set
                .iter()
                .all(|p| self.rev_of(p).as_deref() == Some(update_rev) && healthy(p));
        let current_rev = if all_updated {
            update_rev
        } else {
            self.current_rev.as_str()
        };
        let min_ready = self.spec.min_ready_seconds.unwrap_or(0);
        json!({
            "observedGeneration": self.sts.metadata.generation,
            "replicas": live.len(),
            "readyReplicas": count(&util::is_ready),
            "availableReplicas": count(&|p| util::is_available(p, min_ready, now)),
            "currentReplicas": count(&|p| self.rev_of(p).as_deref() == Some(current_rev)),
            "updatedReplicas": count(&|p| self.rev_of(p).as_deref() == Some(update_rev)),
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": 0,
        })
    }
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
