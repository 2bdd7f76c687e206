//! The scheduler's rounds: the pending pods (highest priority first, then
//! oldest) decided a chunk at a time against one cluster state that gains
//! each pod placed; binds for those that fit, the `PodScheduled` condition
//! and a `FailedScheduling` event for those that do not, and preemption
//! ([`super::preemption`]) where a higher-priority pod may make room.

use std::{collections::HashMap, sync::Arc};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use rand::Rng;
use serde_json::json;

use super::{
    cache::{Kind, Snapshot},
    ops::{EventRecord, Involved, Op},
    scheduler::{BuildCache, COMPONENT, ClusterState, Decision, SCHEDULER_NAME, schedule},
    util,
};

/// The caller starts the binds of each chunk of this many pods while the
/// round decides the next.
pub const CHUNK: usize = 128;

/// Whether the scheduler should place this pod.
pub fn wants(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.node_name.is_none()
        && spec.scheduler_name.as_deref().unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME
        && !util::is_terminating(pod)
        && !util::is_terminal(pod)
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
}

/// One scheduling round: binds for the pods that fit, condition updates
/// and events for those that do not. `assumed` gains the pods bound.
pub fn round(
    snap: &Snapshot,
    assumed: &mut HashMap<String, String>,
    rng: &mut impl Rng,
    now: Timestamp,
) -> Vec<Op> {
    Round::new(snap, assumed, now).next(usize::MAX, assumed, rng)
}

/// One round over the pending pods, decided a chunk at a time (so the
/// caller can start the binds of one chunk while deciding the next), all
/// against one cluster state that gains each pod placed.
#[derive(Debug)]
pub struct Round<'a> {
    st: ClusterState,
    pdbs: &'a super::cache::Objects<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
    pending: std::vec::IntoIter<&'a Arc<Pod>>,
    now: Timestamp,
}

impl<'a> Round<'a> {
    /// The pods waiting (not in `assumed`), highest priority first, then
    /// oldest first.
    pub fn new(snap: &'a Snapshot, assumed: &HashMap<String, String>, now: Timestamp) -> Self {
        Self::new_with(snap, assumed, now, &mut BuildCache::default())
    }

    /// [`Round::new`] with the parsing of earlier rounds reused.
    pub fn new_with(
        snap: &'a Snapshot,
        assumed: &HashMap<String, String>,
        now: Timestamp,
        cache: &mut BuildCache,
    ) -> Self {
        let st = ClusterState::build_with(snap, assumed, cache);
        let mut pending: Vec<&Arc<Pod>> = snap
            .pods
            .values()
            .filter(|p| wants(p) && !assumed.contains_key(util::uid(&p.metadata)))
            .collect();
        pending.sort_by_key(|p| {
            (
                std::cmp::Reverse(p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)),
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        Self {
            st,
            pdbs: &snap.pdbs,
            pending: pending.into_iter(),
            now,
        }
    }

    /// Whether every pending pod has been decided.
    pub fn done(&self) -> bool {
        self.pending.len() == 0
    }

    /// Decides up to `n` more pods: binds for those that fit (added to
    /// `assumed`), condition updates and events for those that do not.
    pub fn next(
        &mut self,
        n: usize,
        assumed: &mut HashMap<String, String>,
        rng: &mut impl Rng,
    ) -> Vec<Op> {
        let mut ops = Vec::new();
        let now = self.now;
        let st = &mut self.st;
        for pod in self.pending.by_ref().take(n) {
            let m = &pod.metadata;
            let who = format!("{}/{}", util::namespace(m), util::name(m));
            match schedule(st, pod, rng) {
                Decision::Bind(node) => {
                    assumed.insert(util::uid(m).to_owned(), node.clone());
                    st.assume(pod.clone(), &node);
                    ops.push(Op::Bind {
                        namespace: util::namespace(m).into(),
                        name: util::name(m).into(),
                        uid: util::uid(m).into(),
                        node: node.clone(),
                        event: Some(EventRecord::normal(
                            COMPONENT,
                            Involved::of(Kind::Pod, m),
                            "Scheduled",
                            format!("Successfully assigned {who} to {node}"),
                        )),
                    });
                }
                Decision::Unschedulable(msg) => {
                    if let Some(p) = super::preemption::preempt(st, pod, self.pdbs) {
                        ops.extend(super::preemption::ops(pod, &p, now));
                    }
                    let cur = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
                    if cur.and_then(|c| c.message.as_deref()) == Some(msg.as_str()) {
                        continue;
                    }
                    let mut conditions: Vec<_> = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|c| c.type_ != "PodScheduled")
                        .map(|c| serde_json::to_value(c).unwrap_or_default())
                        .collect();
                    conditions.push(json!({
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": msg, "lastProbeTime": null,
                        "lastTransitionTime": util::rfc3339(now),
                    }));
                    ops.push(
                        Op::status(Kind::Pod, m, json!({ "conditions": conditions })).with_event(
                            EventRecord::warning(
                                COMPONENT,
                                Involved::of(Kind::Pod, m),
                                "FailedScheduling",
                                msg,
                            ),
                        ),
                    );
                }
            }
        }
        ops
    }
}
