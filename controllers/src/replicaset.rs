//! ReplicaSet, and ReplicationController (its older form, with a
//! map selector that defaults to the template's labels): keeps
//! `spec.replicas` active pods from the template, adopts matching orphans,
//! deletes surplus pods least valuable first, and reports replica counts.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::{ReplicaSet, ReplicaSetSpec, ReplicaSetStatus},
        core::v1::{Pod, PodTemplateSpec, ReplicationController},
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use serde_json::{Value, json};

use super::{
    cache::{Kind, Snapshot},
    ops::{EventRecord, Involved, Op},
    util,
};

pub const COMPONENT: &str = "replicaset-controller";
/// At most this many pods created or deleted per ReplicaSet per round
/// (Kubernetes' burst).
const BURST: usize = 500;

/// A pod object from a template, owned by `owner`.
pub fn pod_from_template(
    t: &PodTemplateSpec,
    namespace: &str,
    generate_name: Option<&str>,
    name: Option<&str>,
    owner: &Value,
) -> Value {
    let mut meta = json!({
        "namespace": namespace,
        "labels": t.metadata.as_ref().and_then(|m| m.labels.clone()),
        "annotations": t.metadata.as_ref().and_then(|m| m.annotations.clone()),
        "ownerReferences": [owner],
    });
    if let Some(g) = generate_name {
        meta["generateName"] = json!(g);
    }
    if let Some(n) = name {
        meta["name"] = json!(n);
    }
    if let Some(f) = t.metadata.as_ref().and_then(|m| m.finalizers.clone()) {
        meta["finalizers"] = json!(f);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t.spec})
}

/// The pods a ReplicaSet owns, and orphans it should adopt.
fn pods_of<'a>(snap: &'a Snapshot, rs: &ReplicaSet) -> (Vec<&'a Arc<Pod>>, Vec<&'a Arc<Pod>>) {
    let ns = util::namespace(&rs.metadata);
    let uid = util::uid(&rs.metadata);
    let sel = rs
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let mut owned = Vec::new();
    let mut orphans = Vec::new();
    for p in super::cache::in_namespace(&snap.pods, ns) {
        if util::controlled_by(&p.metadata, uid) {
            owned.push(p);
        } else if util::controller_of(&p.metadata).is_none()
            && !util::selector_is_empty(&sel)
            && util::selector_matches(&sel, util::labels(&p.metadata))
            && util::is_active(p)
        {
            orphans.push(p);
        }
    }
    (owned, orphans)
}

/// Kubernetes' ranking of pods to delete first: unassigned, then pending,
/// not ready, ready for less time, more restarts, newer.
pub fn deletion_rank(p: &Pod) -> (u8, u8, u8, i64, i64, i64) {
    let assigned = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let phase = match util::phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let ready = util::ready_since(p);
    let restarts: i64 = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| i64::from(c.restart_count)).sum())
        .unwrap_or(0);
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    (
        u8::from(assigned),
        phase,
        u8::from(ready.is_some()),
        // Ready longer is worth more: later ready time deletes first.
        -ready.map_or(0, Timestamp::as_second),
        -restarts,
        -created,
    )
}

/// Which kind a replica controller is: its ops' kind and its owner
/// references' apiVersion and kind.
#[derive(Clone, Copy, Debug)]
pub struct Controller {
    pub kind: Kind,
    pub component: &'static str,
}

const REPLICA_SET: Controller = Controller {
    kind: Kind::ReplicaSet,
    component: COMPONENT,
};
const REPLICATION_CONTROLLER: Controller = Controller {
    kind: Kind::ReplicationController,
    component: "replication-controller",
};

/// A ReplicationController seen as the ReplicaSet it is equivalent to.
fn as_replica_set(rc: &ReplicationController) -> ReplicaSet {
    let spec = rc.spec.clone().unwrap_or_default();
    let match_labels = spec.selector.clone().filter(|s| !s.is_empty()).or_else(|| {
        spec.template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
    });
    ReplicaSet {
        metadata: rc.metadata.clone(),
        spec: Some(ReplicaSetSpec {
            replicas: spec.replicas,
            min_ready_seconds: spec.min_ready_seconds,
            selector: LabelSelector {
                match_labels,
                match_expressions: None,
            },
            template: spec.template,
        }),
        status: rc.status.as_ref().map(|s| ReplicaSetStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            observed_generation: s.observed_generation,
            ..ReplicaSetStatus::default()
        }),
    }
}

/// The ops for one ReplicaSet.
pub fn sync(snap: &Snapshot, rs: &ReplicaSet, now: Timestamp) -> Vec<Op> {
    sync_as(snap, rs, now, REPLICA_SET)
}

/// The ops for one ReplicaSet, or a ReplicationController seen as one.
fn sync_as(snap: &Snapshot, rs: &ReplicaSet, now: Timestamp, c: Controller) -> Vec<Op> {
    let mut ops = Vec::new();
    let m = &rs.metadata;
    if m.deletion_timestamp.is_some() {
        return ops;
    }
    let Some(spec) = &rs.spec else { return ops };
    let ns = util::namespace(m);
    let (owned, orphans) = pods_of(snap, rs);
    let owner = util::owner_ref(c.kind.api_version(), c.kind.kind(), m);
    for o in orphans {
        ops.push(Op::patch(
            Kind::Pod,
            &o.metadata,
            json!({"metadata": {
                "ownerReferences": [owner],
                "resourceVersion": o.metadata.resource_version,
            }}),
        ));
    }
    let active: Vec<&Arc<Pod>> = owned
        .iter()
        .copied()
        .filter(|p| util::is_active(p))
        .collect();
    let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let me = Involved::of(c.kind, m);
    if active.len() < want {
        let Some(t) = &spec.template else { return ops };
        let name = util::name(m);
        for _ in 0..(want - active.len()).min(BURST) {
            ops.push(
                Op::create(
                    Kind::Pod,
                    ns,
                    pod_from_template(
                        t,
                        ns,
                        Some(&format!("{name}-")),
                        None,
                        &serde_json::to_value(&owner).unwrap_or_default(),
                    ),
                )
                .with_event(EventRecord::normal(
                    c.component,
                    me.clone(),
                    "SuccessfulCreate",
                    "Created pod: {name}",
                )),
            );
        }
    } else if active.len() > want {
        let mut victims = active.clone();
        victims.sort_by_key(|p| deletion_rank(p));
        for p in victims.into_iter().take((active.len() - want).min(BURST)) {
            ops.push(
                Op::delete(Kind::Pod, &p.metadata).with_event(EventRecord::normal(
                    c.component,
                    me.clone(),
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", util::name(&p.metadata)),
                )),
            );
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let labels_match = |p: &Pod| {
        spec.template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .is_none_or(|l| {
                l.iter()
                    .all(|(k, v)| util::labels(&p.metadata).get(k) == Some(v))
            })
    };
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": count(&|p| labels_match(p)),
        "readyReplicas": count(&util::is_ready),
        "availableReplicas": count(&|p| util::is_available(p, min_ready, now)),
        "observedGeneration": m.generation,
    });
    if differs(rs.status.as_ref(), &status) {
        ops.push(Op::status(c.kind, m, status));
    }
    ops
}

/// Whether any field of `want` differs from the current status.
pub fn differs(cur: Option<&impl serde::Serialize>, want: &Value) -> bool {
    let cur = cur
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or(Value::Null);
    want.as_object().is_some_and(|w| {
        w.iter().any(|(k, v)| {
            let c = cur.get(k).cloned().unwrap_or(Value::Null);
            // Zero counts are omitted by the apiserver's Go clients.
            !(c == *v || (c.is_null() && (v == &json!(0) || v.is_null())))
        })
    })
}

/// Every ReplicaSet and ReplicationController.
pub fn plan(snap: &Snapshot, now: Timestamp) -> Vec<Op> {
    let sets = snap.replicasets.values().flat_map(|rs| sync(snap, rs, now));
    let rcs = snap
        .replication_controllers
        .values()
        .flat_map(|rc| sync_as(snap, &as_replica_set(rc), now, REPLICATION_CONTROLLER));
    sets.chain(rcs).collect()
}
