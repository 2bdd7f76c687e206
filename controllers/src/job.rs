//! Job: runs pods until `completions` succeed (or, without completions,
//! until one succeeds and none runs), `parallelism` at a time; failures
//! retried with Kubernetes' back-off (10 s doubling, at most 6 min) until
//! `backoffLimit`; `activeDeadlineSeconds`; suspend; finished Jobs deleted
//! `ttlSecondsAfterFinished` after they finish. Pods carry the
//! `batch.kubernetes.io/job-tracking` finalizer until counted, so deleted
//! pods are never lost from the counts.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::{
    batch::v1::{Job, JobSpec, JobStatus},
    core::v1::Pod,
};
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

/// The Job's pods counted: what its status says, plus what finished since.
struct Counts {
    succeeded: i32,
    failed: i32,
    /// Uids counted but whose tracking finalizer is not yet removed.
    unc_ok: Vec<String>,
    unc_failed: Vec<String>,
    last_failure: Option<Timestamp>,
}

/// Counts finished pods once: recorded in the status first, then their
/// finalizer dropped (the ops), then their uid dropped from the
/// uncounted lists.
fn count(pods: &[&Arc<Pod>], status: &JobStatus, was_done: bool, ops: &mut Vec<Op>) -> Counts {
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut c = Counts {
        succeeded: status.succeeded.unwrap_or(0),
        failed: status.failed.unwrap_or(0),
        unc_ok: uncounted.succeeded.clone().unwrap_or_default(),
        unc_failed: uncounted.failed.clone().unwrap_or_default(),
        last_failure: None,
    };
    for p in pods {
        let pu = util::uid(&p.metadata).to_owned();
        let counted = c.unc_ok.contains(&pu) || c.unc_failed.contains(&pu);
        let terminal = util::is_terminal(p);
        if util::phase(p) == "Failed" {
            let t = finish_time(p);
            c.last_failure = Some(c.last_failure.map_or(t, |l: Timestamp| l.max(t)));
        }
        if has_tracking(p) && terminal && !counted {
            if util::phase(p) == "Succeeded" {
                c.succeeded += 1;
                c.unc_ok.push(pu);
            } else {
                c.failed += 1;
                c.unc_failed.push(pu);
            }
        } else if has_tracking(p) && counted {
            ops.push(remove_tracking(p));
        } else if has_tracking(p) && was_done {
            // Stopped because the Job finished: not a failure.
            ops.push(remove_tracking(p));
        } else if has_tracking(p) && util::is_terminating(p) && !terminal {
            // Deleted before finishing: a failure (pod deletion counts as
            // one in Kubernetes), counted once.
            c.failed += 1;
            c.unc_failed.push(pu);
        }
    }
    let live: std::collections::HashSet<&str> = pods
        .iter()
        .filter(|p| has_tracking(p))
        .map(|p| util::uid(&p.metadata))
        .collect();
    c.unc_ok.retain(|u| {
        live.contains(u.as_str()) || !uncounted.succeeded.iter().flatten().any(|x| x == u)
    });
    c.unc_failed.retain(|u| {
        live.contains(u.as_str()) || !uncounted.failed.iter().flatten().any(|x| x == u)
    });
    c
}

/// The ops for one Job.
pub fn sync(snap: &Snapshot, job: &Job, now: Timestamp) -> Vec<Op> {
    let mut ops = Vec::new();
    let m = &job.metadata;
    let Some(spec) = &job.spec else { return ops };
    let ns = util::namespace(m);
    let uid = util::uid(m);
    let pods: Vec<&Arc<Pod>> = super::cache::in_namespace(&snap.pods, ns)
        .filter(|p| util::controlled_by(&p.metadata, uid))
        .collect();
    let status = job.status.clone().unwrap_or_default();
    let counts = count(&pods, &status, finished(job).is_some(), &mut ops);
    let active: Vec<&Arc<Pod>> = pods
        .iter()
        .copied()
        .filter(|p| util::is_active(p))
        .collect();
    let new_status = json!({
        "succeeded": counts.succeeded, "failed": counts.failed,
        "active": active.len(),
        "ready": active.iter().filter(|p| util::is_ready(p)).count(),
        "terminating": pods.iter().filter(|p| util::is_terminating(p) && !util::is_terminal(p)).count(),
        "uncountedTerminatedPods": {"succeeded": counts.unc_ok, "failed": counts.unc_failed},
    });
    let conditions: Vec<Value> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .collect();
    let mut step = Step {
        job,
        spec,
        now,
        me: Involved::of(Kind::Job, m),
        start: status.start_time.as_ref().map_or(now, |t| t.0),
        suspended: spec.suspend.unwrap_or(false),
        counts,
        active,
        ops,
        conditions,
        new_status,
    };
    if !step.suspended && status.start_time.is_none() {
        step.new_status["startTime"] = json!(util::rfc3339(now));
    }
    if finished(job).is_none() {
        step.progress();
    } else if let Some(ttl) = spec.ttl_seconds_after_finished {
        step.expire(&status, ttl);
    }
    let Step {
        mut ops,
        conditions,
        mut new_status,
        ..
    } = step;
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

/// Under `restartPolicy: OnFailure` a failing container restarts in its
/// pod rather than failing it, so its restarts count as the Job's retries
/// (the job controller's `pastBackoffLimitOnFailure`): the restart counts of
/// every init and regular container of the Pending and Running pods, against
/// `backoffLimit` (any restart, when the limit is 0).
fn past_backoff_limit_on_failure(spec: &JobSpec, active: &[&Arc<Pod>]) -> bool {
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i64 = active
        .iter()
        .filter(|p| matches!(util::phase(p), "Pending" | "Running"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count.max(0)))
        .sum();
    match spec.backoff_limit.unwrap_or(6) {
        0 => restarts > 0,
        limit => restarts >= i64::from(limit),
    }
}

/// One sync of a Job: what it decides from, and the ops, conditions and
/// status it makes.
struct Step<'a> {
    job: &'a Job,
    spec: &'a JobSpec,
    now: Timestamp,
    me: Involved,
    start: Timestamp,
    suspended: bool,
    counts: Counts,
    active: Vec<&'a Arc<Pod>>,
    ops: Vec<Op>,
    conditions: Vec<Value>,
    new_status: Value,
}

impl Step<'_> {
    /// A Job not finished: complete it, fail it (back-off limit,
    /// deadline), suspend it, or run the pods it still needs.
    fn progress(&mut self) {
        let spec = self.spec;
        let complete = match spec.completions {
            Some(c) => self.counts.succeeded >= c,
            None => self.counts.succeeded > 0 && self.active.is_empty(),
        };
        let past_deadline = spec
            .active_deadline_seconds
            .is_some_and(|d| !self.suspended && self.now.as_second() - self.start.as_second() >= d);
        if complete {
            self.finish(None);
        } else if self.counts.failed > spec.backoff_limit.unwrap_or(6)
            || past_backoff_limit_on_failure(spec, &self.active)
        {
            self.finish(Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )));
        } else if past_deadline {
            self.finish(Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )));
        } else if self.suspended {
            self.delete_active();
            if !self.conditions.iter().any(|c| c["type"] == "Suspended") {
                self.conditions.push(condition(
                    "Suspended",
                    "JobSuspended",
                    "Job suspended",
                    self.now,
                ));
                self.ops.push(Op::Event(EventRecord::normal(
                    COMPONENT,
                    self.me.clone(),
                    "Suspended",
                    "Job suspended",
                )));
            }
        } else {
            self.conditions.retain(|c| c["type"] != "Suspended");
            self.scale();
        }
    }

    /// Finishes the Job: complete (`None`) or failed with a reason and
    /// message; its active pods are deleted.
    fn finish(&mut self, failure: Option<(&str, &str)>) {
        let now = self.now;
        match failure {
            None => {
                let msg = "Reached expected number of succeeded pods";
                self.conditions.push(condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    msg,
                    now,
                ));
                self.conditions
                    .push(condition("Complete", "CompletionsReached", msg, now));
                self.new_status["completionTime"] = json!(util::rfc3339(now));
                self.ops.push(Op::Event(EventRecord::normal(
                    COMPONENT,
                    self.me.clone(),
                    "Completed",
                    "Job completed",
                )));
            }
            Some((reason, message)) => {
                self.conditions
                    .push(condition("FailureTarget", reason, message, now));
                self.conditions
                    .push(condition("Failed", reason, message, now));
                self.new_status["completionTime"] = Value::Null;
                self.ops.push(Op::Event(EventRecord::warning(
                    COMPONENT,
                    self.me.clone(),
                    reason,
                    message,
                )));
            }
        }
        self.delete_active();
    }

    fn delete_active(&mut self) {
        for p in &self.active {
            self.ops.push(Op::delete(Kind::Pod, &p.metadata));
        }
    }

    /// Creates the pods still wanted (`parallelism` at a time, after the
    /// failure back-off: 10 s doubling, at most 6 min) or deletes extra
    /// ones.
    fn scale(&mut self) {
        let (spec, m, now) = (self.spec, &self.job.metadata, self.now);
        let (succeeded, failed) = (self.counts.succeeded, self.counts.failed);
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let want = match spec.completions {
            Some(c) => (c - succeeded).min(parallelism),
            None if succeeded > 0 => 0,
            None => parallelism,
        };
        let have = i32::try_from(self.active.len()).unwrap_or(i32::MAX);
        let wait_until = self.counts.last_failure.map(|t| {
            let exp = u32::try_from((failed - 1).clamp(0, 10)).unwrap_or(0);
            t + jiff::SignedDuration::from_secs((BACKOFF_BASE << exp).min(BACKOFF_MAX))
        });
        if want > have && wait_until.is_none_or(|w| w <= now) {
            let ns = util::namespace(m);
            let owner =
                serde_json::to_value(util::owner_ref("batch/v1", "Job", m)).unwrap_or_default();
            for _ in 0..(want - have) {
                let prefix = format!("{}-", util::name(m));
                let mut pod = pod_from_template(&spec.template, ns, Some(&prefix), None, &owner);
                pod["metadata"]["finalizers"] = json!([TRACKING]);
                self.ops.push(
                    Op::create(Kind::Pod, ns, pod).with_event(EventRecord::normal(
                        COMPONENT,
                        self.me.clone(),
                        "SuccessfulCreate",
                        "Created pod: {name}",
                    )),
                );
            }
        } else if want < have {
            let mut extra = self.active.clone();
            extra.sort_by_key(|p| super::replicaset::deletion_rank(p));
            for p in extra.iter().take(usize::try_from(have - want).unwrap_or(0)) {
                self.ops.push(Op::delete(Kind::Pod, &p.metadata));
            }
        }
    }

    /// A finished Job is deleted `ttlSecondsAfterFinished` after it
    /// finished.
    fn expire(&mut self, status: &JobStatus, ttl: i32) {
        let at = status.completion_time.as_ref().map(|t| t.0).or_else(|| {
            status
                .conditions
                .iter()
                .flatten()
                .filter(|c| c.type_ == "Complete" || c.type_ == "Failed")
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .max()
        });
        let m = &self.job.metadata;
        if m.deletion_timestamp.is_none()
            && at.is_some_and(|t| self.now.as_second() >= t.as_second() + i64::from(ttl))
        {
            self.ops.push(Op::delete_foreground(Kind::Job, m));
        }
    }
}

pub fn plan(snap: &Snapshot, now: Timestamp) -> Vec<Op> {
    snap.jobs
        .values()
        .flat_map(|j| sync(snap, j, now))
        .collect()
}
