//! Job: runs pods until `completions` succeed (or, without completions,
//! until one succeeds and none runs), `parallelism` at a time; failures
//! retried with Kubernetes' back-off (10 s doubling, at most 6 min) until
//! `backoffLimit`; `activeDeadlineSeconds`; suspend; finished Jobs deleted
//! `ttlSecondsAfterFinished` after they finish. Pods carry the
//! `batch.kubernetes.io/job-tracking` finalizer until counted, so deleted
//! pods are never lost from the counts.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use serde_json::{Value, json};

use super::{
    cache::{Kind, Snapshot},
    ops::{EventRecord, Involved, Op},
    replicaset::{differs, pod_from_template},
    util,
};

pub const COMPONENT: &str = "job-controller";
pub const TRACKING: &str = "batch.kubernetes.io/job-tracking";
const BACKOFF_BASE: i64 = 10;
const BACKOFF_MAX: i64 = 360;

fn finished(job: &Job) -> Option<&'static str> {
    let c = job.status.as_ref()?.conditions.as_ref()?;
    for t in ["Complete", "Failed"] {
        if c.iter().any(|c| c.type_ == t && c.status == "True") {
            return Some(if t == "Complete" {
                "Complete"
            } else {
                "Failed"
            });
        }
    }
    None
}

fn has_tracking(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING)
}

fn remove_tracking(p: &Pod) -> Op {
    let f: Vec<&String> = p
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != TRACKING)
        .collect();
    Op::patch(
        Kind::Pod,
        &p.metadata,
        json!({"metadata": {"finalizers": if f.is_empty() { Value::Null } else { json!(f) },
                             "resourceVersion": p.metadata.resource_version}}),
    )
}

fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> Value {
    let t = util::rfc3339(now);
    json!({"type": type_, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": t, "lastTransitionTime": t})
}

/// When the pod finished (its containers' termination times), else its
/// creation.
fn finish_time(p: &Pod) -> Timestamp {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
                .map(|t| t.0)
        })
        .max()
        .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The ops for one Job.
#[expect(clippy::too_many_lines, reason = "one sync, read top to bottom")]
pub fn sync(snap: &Snapshot, job: &Job, now: Timestamp) -> Vec<Op> {
    let mut ops = Vec::new();
    let m = &job.metadata;
    let Some(spec) = &job.spec else { return ops };
    let ns = util::namespace(m);
    let uid = util::uid(m);
    let me = Involved::of(Kind::Job, m);
    let pods: Vec<&Arc<Pod>> = super::cache::in_namespace(&snap.pods, ns)
        .filter(|p| util::controlled_by(&p.metadata, uid))
        .collect();
    let status = job.status.clone().unwrap_or_default();
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut unc_ok: Vec<String> = uncounted.succeeded.clone().unwrap_or_default();
    let mut unc_failed: Vec<String> = uncounted.failed.clone().unwrap_or_default();
    let mut succeeded = status.succeeded.unwrap_or(0);
    let mut failed = status.failed.unwrap_or(0);
    let mut last_failure: Option<Timestamp> = None;
    let was_done = finished(job).is_some();
    // Count finished pods once: record in status, then drop the finalizer,
    // then drop the uid from the uncounted lists.
    for p in &pods {
        let pu = util::uid(&p.metadata).to_owned();
        let counted = unc_ok.contains(&pu) || unc_failed.contains(&pu);
        let terminal = util::is_terminal(p);
        if util::phase(p) == "Failed" {
            let t = finish_time(p);
            last_failure = Some(last_failure.map_or(t, |l: Timestamp| l.max(t)));
        }
        if has_tracking(p) && terminal && !counted {
            if util::phase(p) == "Succeeded" {
                succeeded += 1;
                unc_ok.push(pu);
            } else {
                failed += 1;
                unc_failed.push(pu);
            }
        } else if has_tracking(p) && counted {
            ops.push(remove_tracking(p));
        } else if has_tracking(p) && was_done {
            // Stopped because the Job finished: not a failure.
            ops.push(remove_tracking(p));
        } else if has_tracking(p) && util::is_terminating(p) && !terminal {
            // Deleted before finishing: a failure (pod deletion counts as
            // one in Kubernetes), counted once.
            failed += 1;
            unc_failed.push(pu);
        }
    }
    let live: std::collections::HashSet<&str> = pods
        .iter()
        .filter(|p| has_tracking(p))
        .map(|p| util::uid(&p.metadata))
        .collect();
    unc_ok.retain(|u| {
        live.contains(u.as_str()) || !uncounted.succeeded.iter().flatten().any(|x| x == u)
    });
    unc_failed.retain(|u| {
        live.contains(u.as_str()) || !uncounted.failed.iter().flatten().any(|x| x == u)
    });
    let active: Vec<&&Arc<Pod>> = pods.iter().filter(|p| util::is_active(p)).collect();
    let start = status.start_time.as_ref().map_or(now, |t| t.0);
    let mut new_status = json!({
        "succeeded": succeeded, "failed": failed,
        "active": active.len(),
        "ready": active.iter().filter(|p| util::is_ready(p)).count(),
        "terminating": pods.iter().filter(|p| util::is_terminating(p) && !util::is_terminal(p)).count(),
        "uncountedTerminatedPods": {"succeeded": unc_ok, "failed": unc_failed},
    });
    let suspended = spec.suspend.unwrap_or(false);
    if !suspended && status.start_time.is_none() {
        new_status["startTime"] = json!(util::rfc3339(now));
    }
    let mut conditions: Vec<Value> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .collect();
    let done = finished(job);
    if done.is_none() {
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let deadline = spec.active_deadline_seconds;
        let mut finish = |reason: &str, message: &str, ok: bool, ops: &mut Vec<Op>| {
            if ok {
                conditions.push(condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ));
                conditions.push(condition(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ));
            } else {
                conditions.push(condition("FailureTarget", reason, message, now));
                conditions.push(condition("Failed", reason, message, now));
            }
            new_status["completionTime"] = if ok {
                json!(util::rfc3339(now))
            } else {
                Value::Null
            };
            ops.push(Op::Event(if ok {
                EventRecord::normal(COMPONENT, me.clone(), "Completed", "Job completed")
            } else {
                EventRecord::warning(COMPONENT, me.clone(), reason, message)
            }));
        };
        let complete = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        if complete {
            finish("", "", true, &mut ops);
            for p in &active {
                ops.push(Op::delete(Kind::Pod, &p.metadata));
            }
        } else if failed > backoff_limit {
            finish(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                false,
                &mut ops,
            );
            for p in &active {
                ops.push(Op::delete(Kind::Pod, &p.metadata));
            }
        } else if deadline.is_some_and(|d| !suspended && now.as_second() - start.as_second() >= d) {
            finish(
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
                false,
                &mut ops,
            );
            for p in &active {
                ops.push(Op::delete(Kind::Pod, &p.metadata));
            }
        } else if suspended {
            for p in &active {
                ops.push(Op::delete(Kind::Pod, &p.metadata));
            }
            if !conditions.iter().any(|c| c["type"] == "Suspended") {
                conditions.push(condition("Suspended", "JobSuspended", "Job suspended", now));
                ops.push(Op::Event(EventRecord::normal(
                    COMPONENT,
                    me.clone(),
                    "Suspended",
                    "Job suspended",
                )));
            }
        } else {
            conditions.retain(|c| c["type"] != "Suspended");
            let want = match completions {
                Some(c) => (c - succeeded).min(parallelism),
                None if succeeded > 0 => 0,
                None => parallelism,
            };
            let have = i32::try_from(active.len()).unwrap_or(i32::MAX);
            // Back-off after failures: 10 s doubling per failure, at most 6 min.
            let wait_until = last_failure.map(|t| {
                let exp = u32::try_from((failed - 1).clamp(0, 10)).unwrap_or(0);
                t + jiff::SignedDuration::from_secs((BACKOFF_BASE << exp).min(BACKOFF_MAX))
            });
            if want > have && wait_until.is_none_or(|w| w <= now) {
                for _ in 0..(want - have) {
                    let mut pod = pod_from_template(
                        &spec.template,
                        ns,
                        Some(&format!("{}-", util::name(m))),
                        None,
                        &serde_json::to_value(util::owner_ref("batch/v1", "Job", m))
                            .unwrap_or_default(),
                    );
                    pod["metadata"]["finalizers"] = json!([TRACKING]);
                    ops.push(
                        Op::create(Kind::Pod, ns, pod).with_event(EventRecord::normal(
                            COMPONENT,
                            me.clone(),
                            "SuccessfulCreate",
                            "Created pod: {name}",
                        )),
                    );
                }
            } else if want < have {
                let mut extra: Vec<_> = active.clone();
                extra.sort_by_key(|p| super::replicaset::deletion_rank(p));
                for p in extra.iter().take(usize::try_from(have - want).unwrap_or(0)) {
                    ops.push(Op::delete(Kind::Pod, &p.metadata));
                }
            }
        }
    } else if let Some(ttl) = spec.ttl_seconds_after_finished {
        let at = status.completion_time.as_ref().map(|t| t.0).or_else(|| {
            status
                .conditions
                .iter()
                .flatten()
                .filter(|c| c.type_ == "Complete" || c.type_ == "Failed")
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .max()
        });
        if m.deletion_timestamp.is_none()
            && at.is_some_and(|t| now.as_second() >= t.as_second() + i64::from(ttl))
        {
            ops.push(Op::delete_foreground(Kind::Job, m));
        }
    }
    new_status["conditions"] = if conditions.is_empty() {
        Value::Null
    } else {
        json!(conditions)
    };
    if differs(job.status.as_ref(), &new_status) {
        ops.push(Op::status(Kind::Job, m, new_status));
    }
    ops
}

pub fn plan(snap: &Snapshot, now: Timestamp) -> Vec<Op> {
    snap.jobs
        .values()
        .flat_map(|j| sync(snap, j, now))
        .collect()
}
