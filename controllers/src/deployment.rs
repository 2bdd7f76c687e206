//! Deployment: a ReplicaSet per pod template (named by the template's
//! hash), rolled by RollingUpdate (maxSurge / maxUnavailable) or Recreate,
//! with revisions in the `deployment.kubernetes.io/revision` annotation
//! (what `kubectl rollout history|undo` read and write), history limits,
//! pause, and the Available / Progressing conditions `kubectl rollout
//! status` follows. One step per round: the next round sees the result.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use serde_json::{Value, json};

use super::{
    cache::{Kind, Snapshot},
    ops::{EventRecord, Involved, Op},
    replicaset::differs,
    util,
};

pub const COMPONENT: &str = "deployment-controller";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";
/// Annotations of the Deployment not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
];

fn revision(rs: &ReplicaSet) -> i64 {
    util::annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

/// (maxSurge, maxUnavailable) resolved against `replicas`.
pub fn surge_unavailable(d: &Deployment, replicas: i32) -> (i32, i32) {
    let spec = d.spec.clone().unwrap_or_default();
    let strategy = spec.strategy.unwrap_or_default();
    if strategy.type_.as_deref() == Some("Recreate") {
        return (0, 0);
    }
    let ru = strategy.rolling_update.unwrap_or_default();
    let pct25 = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("25%".into());
    let surge = util::int_or_percent(
        Some(ru.max_surge.as_ref().unwrap_or(&pct25)),
        0,
        replicas,
        true,
    );
    let mut unavailable = util::int_or_percent(
        Some(ru.max_unavailable.as_ref().unwrap_or(&pct25)),
        0,
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

fn scale(d: &Deployment, rs: &ReplicaSet, to: i32, desired: i32, surge: i32) -> Op {
    let from = spec_replicas(rs);
    let verb = if to > from { "up" } else { "down" };
    Op::patch(
        Kind::ReplicaSet,
        &rs.metadata,
        json!({
            "metadata": {
                "resourceVersion": rs.metadata.resource_version,
                "annotations": {
                    "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                    "deployment.kubernetes.io/max-replicas": (desired + surge).to_string(),
                },
            },
            "spec": {"replicas": to},
        }),
    )
    .with_event(EventRecord::normal(
        COMPONENT,
        Involved::of(Kind::Deployment, &d.metadata),
        "ScalingReplicaSet",
        format!(
            "Scaled {verb} replica set {} from {from} to {to}",
            util::name(&rs.metadata)
        ),
    ))
}

fn copied_annotations(d: &Deployment) -> serde_json::Map<String, Value> {
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect()
}

/// The ops for one Deployment.
pub fn sync(snap: &Snapshot, d: &Deployment, now: Timestamp) -> Vec<Op> {
    let mut ops = Vec::new();
    let m = &d.metadata;
    if m.deletion_timestamp.is_some() {
        return ops;
    }
    let Some(spec) = &d.spec else { return ops };
    let ns = util::namespace(m);
    let uid = util::uid(m);
    let desired = spec.replicas.unwrap_or(1);
    let (surge, max_unavailable) = surge_unavailable(d, desired);
    let mut rss: Vec<&Arc<ReplicaSet>> = super::cache::in_namespace(&snap.replicasets, ns)
        .filter(|r| {
            util::controlled_by(&r.metadata, uid) && r.metadata.deletion_timestamp.is_none()
        })
        .collect();
    rss.sort_by_key(|r| {
        (
            revision(r),
            r.metadata.creation_timestamp.as_ref().map(|t| t.0),
        )
    });
    let want_template = util::template_without(&spec.template, HASH_LABEL);
    let new_rs = rss.iter().copied().find(|r| {
        r.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| util::template_without(t, HASH_LABEL) == want_template)
    });
    let olds: Vec<&Arc<ReplicaSet>> = rss
        .iter()
        .copied()
        .filter(|r| new_rs.is_none_or(|n| n.metadata.uid != r.metadata.uid))
        .collect();
    let max_rev = rss.iter().map(|r| revision(r)).max().unwrap_or(0);
    let paused = spec.paused.unwrap_or(false);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let me = Involved::of(Kind::Deployment, m);

    // The Deployment's own revision annotation follows its new ReplicaSet.
    if let Some(n) = new_rs
        && util::annotation(m, REVISION) != Some(revision(n).to_string().as_str())
        && revision(n) == max_rev
    {
        ops.push(Op::patch(
            Kind::Deployment,
            m,
            json!({"metadata": {"annotations": {REVISION: revision(n).to_string()}}}),
        ));
    }

    let step = if paused {
        None
    } else if let Some(n) = new_rs {
        // A template rolled back to: its ReplicaSet becomes the newest revision.
        if revision(n) < max_rev || (revision(n) == 0 && max_rev == 0) {
            let mut ann = copied_annotations(d);
            ann.insert(REVISION.into(), json!((max_rev + 1).to_string()));
            Some(vec![Op::patch(
                Kind::ReplicaSet,
                &n.metadata,
                json!({"metadata": {"annotations": ann, "resourceVersion": n.metadata.resource_version}}),
            )])
        } else {
            rollout_step(d, n, &olds, snap, desired, surge, max_unavailable, recreate)
        }
    } else {
        // No ReplicaSet for this template yet.
        let old_total: i32 = olds.iter().map(|r| spec_replicas(r)).sum();
        let old_pods_active = olds.iter().any(|r| status_of(r).0 > 0);
        let replicas = if recreate {
            if old_total > 0 || old_pods_active {
                // Recreate: the old ones go first.
                let scale_downs: Vec<Op> = olds
                    .iter()
                    .filter(|r| spec_replicas(r) > 0)
                    .map(|r| scale(d, r, 0, desired, surge))
                    .collect();
                if !scale_downs.is_empty() {
                    ops.extend(scale_downs);
                }
                return with_status(ops, d, &rss, None, desired, max_unavailable, now);
            }
            desired
        } else {
            (desired + surge - old_total).clamp(0, desired)
        };
        let (name, rs) = new_replica_set(d, replicas, max_rev, surge);
        ops.push(
            Op::create(Kind::ReplicaSet, ns, rs).with_event(EventRecord::normal(
                COMPONENT,
                me.clone(),
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
            )),
        );
        return with_status(ops, d, &rss, None, desired, max_unavailable, now);
    };
    if let Some(s) = step {
        ops.extend(s);
    }

    // History: old ReplicaSets scaled to zero beyond the limit go, oldest first.
    let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(10);
    let idle: Vec<&&Arc<ReplicaSet>> = olds
        .iter()
        .filter(|r| spec_replicas(r) == 0 && status_of(r).0 == 0)
        .collect();
    if idle.len() > limit {
        for r in idle.iter().take(idle.len() - limit) {
            ops.push(Op::delete(Kind::ReplicaSet, &r.metadata));
        }
    }
    with_status(ops, d, &rss, new_rs, desired, max_unavailable, now)
}

/// The ReplicaSet of the Deployment's current template, with `replicas`:
/// named by the template's hash (with the collision count), its selector
/// and pods labelled with it, the next revision, and the desired and
/// maximum replicas the rollout allows.
fn new_replica_set(d: &Deployment, replicas: i32, max_rev: i64, surge: i32) -> (String, Value) {
    let m = &d.metadata;
    let spec = d.spec.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1);
    let collisions = d
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let want_template = util::template_without(&spec.template, HASH_LABEL);
    let hash = util::stable_hash(&want_template, collisions);
    let name = format!("{}-{hash}", util::name(m));
    let mut template = serde_json::to_value(&spec.template).unwrap_or_default();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = serde_json::to_value(&spec.selector).unwrap_or_default();
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut labels = serde_json::to_value(
        spec.template
            .metadata
            .as_ref()
            .and_then(|t| t.labels.clone())
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    labels[HASH_LABEL] = json!(hash);
    let mut ann = copied_annotations(d);
    ann.insert(REVISION.into(), json!((max_rev + 1).to_string()));
    ann.insert(
        "deployment.kubernetes.io/desired-replicas".into(),
        json!(desired.to_string()),
    );
    ann.insert(
        "deployment.kubernetes.io/max-replicas".into(),
        json!((desired + surge).to_string()),
    );
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": name, "namespace": util::namespace(m), "labels": labels, "annotations": ann,
            "ownerReferences": [util::owner_ref("apps/v1", "Deployment", m)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": spec.min_ready_seconds.unwrap_or(0),
            "selector": selector,
            "template": template,
        },
    });
    (name, rs)
}

/// One RollingUpdate or Recreate step with the new ReplicaSet in place.
#[expect(clippy::too_many_arguments, reason = "the rollout's inputs, all used")]
fn rollout_step(
    d: &Deployment,
    new: &ReplicaSet,
    olds: &[&Arc<ReplicaSet>],
    snap: &Snapshot,
    desired: i32,
    surge: i32,
    max_unavailable: i32,
    recreate: bool,
) -> Option<Vec<Op>> {
    let new_replicas = spec_replicas(new);
    if recreate {
        let downs: Vec<Op> = olds
            .iter()
            .filter(|r| spec_replicas(r) > 0)
            .map(|r| scale(d, r, 0, desired, surge))
            .collect();
        if !downs.is_empty() {
            return Some(downs);
        }
        // Wait until no old pod runs.
        let old_running = olds.iter().any(|r| {
            let uid = util::uid(&r.metadata);
            snap.pods
                .values()
                .any(|p| util::controlled_by(&p.metadata, uid) && !util::is_terminal(p))
        });
        if old_running || new_replicas == desired {
            return None;
        }
        return Some(vec![scale(d, new, desired, desired, surge)]);
    }
    // Scale the new ReplicaSet up within maxSurge (or down to desired).
    let all: i32 = olds.iter().map(|r| spec_replicas(r)).sum::<i32>() + new_replicas;
    if new_replicas > desired {
        return Some(vec![scale(d, new, desired, desired, surge)]);
    }
    if new_replicas < desired {
        let max_total = desired + surge;
        if all < max_total {
            let up = (max_total - all).min(desired - new_replicas);
            return Some(vec![scale(d, new, new_replicas + up, desired, surge)]);
        }
    }
    // Scale old ReplicaSets down while keeping desired - maxUnavailable available.
    let old_total: i32 = olds.iter().map(|r| spec_replicas(r)).sum();
    if old_total == 0 {
        return None;
    }
    let min_available = desired - max_unavailable;
    let new_unavailable = new_replicas - status_of(new).2;
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return None;
    }
    let mut ops = Vec::new();
    let mut targets: Vec<(Arc<ReplicaSet>, i32)> = olds
        .iter()
        .map(|r| ((*r).clone(), spec_replicas(r)))
        .collect();
    // First the old replicas that are not available anyway.
    for (r, target) in &mut targets {
        if budget == 0 {
            break;
        }
        let unhealthy = (*target - status_of(r).2).max(0);
        let cut = unhealthy.min(budget);
        *target -= cut;
        budget -= cut;
    }
    // Then available ones, as long as enough stay available.
    let available: i32 = olds.iter().map(|r| status_of(r).2).sum::<i32>() + status_of(new).2;
    let mut down = (available - min_available).max(0).min(budget);
    for (r, target) in &mut targets {
        if down == 0 {
            break;
        }
        let avail_left = (*target).min(status_of(r).2);
        let cut = avail_left.min(down).min(*target);
        *target -= cut;
        down -= cut;
    }
    for (r, target) in targets {
        if target != spec_replicas(&r) {
            ops.push(scale(d, &r, target, desired, surge));
        }
    }
    (!ops.is_empty()).then_some(ops)
}

fn condition(
    cur: Option<&Vec<DeploymentCondition>>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
    progressed: bool,
) -> Value {
    let old = cur.and_then(|c| c.iter().find(|c| c.type_ == type_));
    let t = util::rfc3339(now);
    let same = old.is_some_and(|o| o.status == status && o.reason.as_deref() == Some(reason));
    let transition = match old {
        Some(o) if o.status == status => o
            .last_transition_time
            .as_ref()
            .map_or(t.clone(), |x| util::rfc3339(x.0)),
        _ => t.clone(),
    };
    let update = match old {
        Some(o) if same && !progressed => o
            .last_update_time
            .as_ref()
            .map_or(t.clone(), |x| util::rfc3339(x.0)),
        _ => t,
    };
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastUpdateTime": update, "lastTransitionTime": transition,
    })
}

fn with_status(
    mut ops: Vec<Op>,
    d: &Deployment,
    rss: &[&Arc<ReplicaSet>],
    new_rs: Option<&Arc<ReplicaSet>>,
    desired: i32,
    max_unavailable: i32,
    now: Timestamp,
) -> Vec<Op> {
    let m = &d.metadata;
    let spec = d.spec.clone().unwrap_or_default();
    let (mut replicas, mut ready, mut available, mut total_spec) = (0, 0, 0, 0);
    for r in rss {
        let (s, rd, av) = status_of(r);
        replicas += s;
        ready += rd;
        available += av;
        total_spec += spec_replicas(r);
    }
    let updated = new_rs.map_or(0, |r| status_of(r).0);
    let cur = d.status.clone().unwrap_or_default();
    let progressed = updated != cur.updated_replicas.unwrap_or(0)
        || available != cur.available_replicas.unwrap_or(0)
        || ready != cur.ready_replicas.unwrap_or(0)
        || replicas != cur.replicas.unwrap_or(0)
        || cur.observed_generation != m.generation;
    let mut conditions = Vec::new();
    let (st, reason, msg) = if available >= desired - max_unavailable {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    conditions.push(condition(
        cur.conditions.as_ref(),
        "Available",
        st,
        reason,
        msg,
        now,
        false,
    ));
    let new_name = new_rs.map_or_else(String::new, |r| util::name(&r.metadata).to_owned());
    let complete = new_rs.is_some()
        && updated == desired
        && replicas == desired
        && available == desired
        && spec_replicas(new_rs.expect("checked")) == desired;
    let old_progress = cur
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "Progressing"));
    let deadline = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
    let last_update = old_progress
        .and_then(|c| c.last_update_time.as_ref())
        .map(|t| t.0);
    let progressing = if spec.paused.unwrap_or(false) {
        (
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".to_owned(),
        )
    } else if complete {
        (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else if !progressed
        && (last_update.is_some_and(|t| now.as_second() - t.as_second() > deadline)
            || old_progress.and_then(|c| c.reason.as_deref()) == Some("ProgressDeadlineExceeded"))
    {
        (
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
        )
    } else if new_rs.is_some() {
        (
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    } else {
        (
            "True",
            "NewReplicaSetCreated",
            "Created new replica set.".to_owned(),
        )
    };
    conditions.push(condition(
        cur.conditions.as_ref(),
        "Progressing",
        progressing.0,
        progressing.1,
        &progressing.2,
        now,
        progressed,
    ));
    let status = json!({
        "observedGeneration": m.generation,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (total_spec.max(desired) - available).max(0),
        "conditions": conditions,
    });
    let cur_conditions: Vec<Value> = cur
        .conditions
        .iter()
        .flatten()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or_default();
            for k in ["lastUpdateTime", "lastTransitionTime"] {
                if let Some(t) = c_time(c, k) {
                    v[k] = json!(t);
                }
            }
            v
        })
        .collect();
    let mut cmp = status.clone();
    cmp.as_object_mut().map(|o| o.remove("conditions"));
    if differs(d.status.as_ref(), &cmp) || cur_conditions != conditions {
        ops.push(Op::status(Kind::Deployment, m, status));
    }
    ops
}

fn c_time(c: &DeploymentCondition, k: &str) -> Option<String> {
    let t = if k == "lastUpdateTime" {
        c.last_update_time.as_ref()
    } else {
        c.last_transition_time.as_ref()
    }?;
    Some(util::rfc3339(t.0))
}

/// Every Deployment.
pub fn plan(snap: &Snapshot, now: Timestamp) -> Vec<Op> {
    snap.deployments
        .values()
        .flat_map(|d| sync(snap, d, now))
        .collect()
}
