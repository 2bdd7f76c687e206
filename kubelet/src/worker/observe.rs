//! What the runtime holds for one pod: its sandbox record, its container
//! instances and their states, exits recorded as container labels so that
//! they survive the agent (and containerd forgetting a stopped task).

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::{
    super::{
        L_ATTEMPT, L_CONTAINER, L_EXIT, L_FINISHED, L_POD_UID, L_REASON, L_STARTED, now, sandbox,
        sync::{self, Instance, InstanceState, Observed, SandboxObs, TerminatedReason},
    },
    Worker, parse_ts,
};
use rudder_runtime::{ContainerRuntime, containerd::TaskState};

impl Worker {
    pub(super) async fn observe(&mut self, pod: &Pod) -> Result<Observed, String> {
        let cd = &self.shared.runtime;
        let mut obs = Observed::default();
        let sandbox_file = self.pod_dir.join("sandbox.json");
        if let Ok(text) = std::fs::read_to_string(&sandbox_file)
            && sandbox::namespaces_exist(
                &self.ns_dir,
                Self::host_network(pod),
                Self::shared_pid(pod),
            )
        {
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            obs.sandbox = Some(SandboxObs {
                pod_ip: v["ip"].as_str().map(str::to_string),
            });
        }
        let filter = format!("labels.\"{L_POD_UID}\"==\"{}\"", self.uid);
        let containers = cd
            .container_list(&filter)
            .await
            .map_err(|e| e.to_string())?;
        let mut by_name: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for (id, labels) in containers {
            let name = labels.get(L_CONTAINER).cloned().unwrap_or_default();
            let attempt = labels
                .get(L_ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            let oom = || {
                self.oom.contains(&id)
                    || self
                        .shared
                        .cgroups
                        .find_container_dir(&self.uid, &id)
                        .is_some_and(|d| oom_killed_in(&d))
            };
            let message = || self.termination_message(&id);
            let exit = Exit {
                oom,
                message,
                output_open: || {
                    crate::attach::paths(&self.shared.cfg.run_dir, &id)
                        .stdout
                        .exists()
                },
            };
            let state = instance_state(cd.as_ref(), &id, &labels, now(), exit).await?;
            by_name
                .entry(name)
                .or_default()
                .push(Instance { id, attempt, state });
        }
        for (name, mut list) in by_name {
            list.sort_by_key(|i| std::cmp::Reverse(i.attempt));
            // Keep the newest two (for lastState); forget older ones.
            for old in list.iter().skip(2) {
                let _ = cd.container_delete(&old.id).await;
                let _ = cd.snapshot_remove(&old.id).await;
            }
            let newest = list.remove(0);
            let prev = if list.is_empty() {
                None
            } else {
                Some(list.remove(0))
            };
            if let InstanceState::Exited {
                started_at,
                finished_at,
                ..
            } = &newest.state
                && self.backoff_for.get(&name) != Some(&newest.id)
            {
                let prev_b = self.mem.backoff.get(&name).copied();
                self.mem.backoff.insert(
                    name.clone(),
                    sync::next_backoff(prev_b, *started_at, *finished_at),
                );
                self.backoff_for.insert(name.clone(), newest.id.clone());
            }
            obs.containers.insert(name, (newest, prev));
        }
        Ok(obs)
    }
}

/// How long after its exit a container's task is kept while its log
/// driver still reads the container's output.
const OUTPUT_DRAIN_SECS: f64 = 10.0;

/// What is read about an exited instance, each only when it has exited:
/// whether the kernel OOM-killed it, its termination message, and whether
/// its log driver still reads its output.
struct Exit<O, M, D> {
    oom: O,
    message: M,
    output_open: D,
}

/// One instance's state from its task (the pod's own tasks are asked one
/// by one: a listing of every task asks every shim on the node for its
/// state, and skips shims slow to answer). A task found stopped has its
/// exit recorded in the container's labels, then is deleted, so the exit
/// outlives containerd's memory of the task and the agent; with no task,
/// the labels say how it ended (or that it never got one: a start that
/// failed midway).
///
/// The task of a container whose output its log driver reads from FIFOs
/// is kept until the driver has read the output's end: the shim copies
/// the container's last output into the FIFO only while the task exists
/// (containerd's delete waits at most 2 s for that copy, and a loaded node
/// can take longer), so deleting it at once could cut what the container
/// said last from its log and from an attached client. The worker's next
/// sync deletes it, or [`OUTPUT_DRAIN_SECS`] after the exit at the latest.
async fn instance_state(
    rt: &dyn ContainerRuntime,
    id: &str,
    labels: &HashMap<String, String>,
    now: f64,
    exit: Exit<impl FnOnce() -> bool, impl FnOnce() -> String, impl FnOnce() -> bool>,
) -> Result<InstanceState, String> {
    let Exit {
        oom,
        message,
        output_open,
    } = exit;
    let started_at = labels.get(L_STARTED).and_then(|s| parse_ts(s));
    let task = rt.task_get(id).await.map_err(|e| e.to_string())?;
    Ok(match task.as_ref() {
        Some(t) if t.state == TaskState::Running || t.state == TaskState::Paused => {
            InstanceState::Running {
                started_at: started_at.unwrap_or(now),
            }
        }
        Some(t) if t.state == TaskState::Stopped => {
            let finished = t
                .exited_at
                .map_or(now, |(s, n)| s as f64 + f64::from(n) / 1e9);
            let code = t.exit_status as i32;
            let reason = TerminatedReason::of_exit(code, oom());
            let mut l = HashMap::from([
                (L_EXIT.to_string(), code.to_string()),
                (L_FINISHED.to_string(), format!("{finished:.3}")),
                (L_REASON.to_string(), reason.as_str().to_string()),
            ]);
            if started_at.is_none() {
                l.insert(L_STARTED.to_string(), format!("{finished:.3}"));
            }
            rt.container_set_labels(id, l)
                .await
                .map_err(|e| e.to_string())?;
            if now - finished >= OUTPUT_DRAIN_SECS || !output_open() {
                rt.task_delete(id).await.map_err(|e| e.to_string())?;
            }
            InstanceState::Exited {
                exit_code: code,
                reason,
                message: message(),
                started_at,
                finished_at: finished,
            }
        }
        Some(_) => InstanceState::Created,
        None => match labels.get(L_EXIT) {
            Some(code) => InstanceState::Exited {
                exit_code: code.parse().unwrap_or(-1),
                reason: labels
                    .get(L_REASON)
                    .map_or(TerminatedReason::Error, |r| TerminatedReason::from_label(r)),
                message: message(),
                started_at,
                finished_at: labels
                    .get(L_FINISHED)
                    .and_then(|s| parse_ts(s))
                    .unwrap_or(0.0),
            },
            None => InstanceState::Exited {
                exit_code: 128,
                reason: TerminatedReason::ContainerCannotRun,
                message: String::new(),
                started_at: None,
                finished_at: now,
            },
        },
    })
}

/// Whether the kernel OOM-killed a process of the cgroup at `rel` (while
/// the task is stopped but not deleted, runc has not removed it yet):
/// `memory.oom_control` on cgroup v1, `memory.events` on v2. Covers exits
/// whose TaskOOM event came late or while the agent was away.
fn oom_killed_in(rel: &str) -> bool {
    let rel = rel.trim_start_matches('/');
    let count = |path: PathBuf| {
        std::fs::read_to_string(path).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
    };
    [
        PathBuf::from("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        PathBuf::from("/sys/fs/cgroup")
            .join(rel)
            .join("memory.events"),
    ]
    .into_iter()
    .any(|p| count(p).is_some_and(|n| n > 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_runtime::{Fake, Stops};

    const NOW: f64 = 1_700_000_100.0;

    fn exit(
        oom: bool,
        message: &str,
        output_open: bool,
    ) -> Exit<impl FnOnce() -> bool, impl FnOnce() -> String, impl FnOnce() -> bool> {
        let message = message.to_owned();
        Exit {
            oom: move || oom,
            message: move || message,
            output_open: move || output_open,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn a_running_task_is_running_since_its_start_label() {
        let rt = Fake::with_task("c1", Stops::On(15));
        let l = labels(&[(L_STARTED, "1700000000.500")]);
        let s = instance_state(&rt, "c1", &l, NOW, exit(false, "", false)).await;
        assert_eq!(
            s,
            Ok(InstanceState::Running {
                started_at: 1_700_000_000.5
            })
        );
        assert_eq!(rt.calls(), ["task_get c1"]);
    }

    #[tokio::test]
    async fn a_stopped_task_has_its_exit_recorded_then_is_deleted() {
        let rt = Fake::with_exited("c1", 137, (1_700_000_050, 250_000_000));
        let l = labels(&[(L_STARTED, "1700000000.000")]);
        let s = instance_state(&rt, "c1", &l, NOW, exit(true, "bye", false)).await;
        assert_eq!(
            s,
            Ok(InstanceState::Exited {
                exit_code: 137,
                reason: TerminatedReason::OomKilled,
                message: "bye".into(),
                started_at: Some(1_700_000_000.0),
                finished_at: 1_700_000_050.25,
            })
        );
        assert_eq!(
            rt.calls(),
            [
                "task_get c1",
                "container_set_labels c1 rudder.io/exit-code=137,rudder.io/finished-at=1700000050.250,rudder.io/reason=OOMKilled",
                "task_delete c1"
            ]
        );
    }

    #[tokio::test]
    async fn a_stopped_task_is_kept_while_its_driver_reads_the_last_output() {
        let exited = (1_700_000_095, 0);
        let rt = Fake::with_exited("c1", 0, exited);
        let l = labels(&[(L_STARTED, "1700000000.000")]);
        // 5 s after the exit, the driver still reading: recorded, kept.
        let s = instance_state(&rt, "c1", &l, NOW, exit(false, "", true)).await;
        assert!(
            matches!(s, Ok(InstanceState::Exited { exit_code: 0, .. })),
            "{s:?}"
        );
        assert_eq!(rt.calls().len(), 2, "{:?}", rt.calls());
        assert!(!rt.calls().iter().any(|c| c.starts_with("task_delete")));
        // The driver done: deleted.
        let rt = Fake::with_exited("c1", 0, exited);
        instance_state(&rt, "c1", &l, NOW, exit(false, "", false))
            .await
            .unwrap();
        assert_eq!(
            rt.calls().last().map(String::as_str),
            Some("task_delete c1")
        );
        // A driver that never finishes holds the task 10 s at most.
        let rt = Fake::with_exited("c1", 0, exited);
        instance_state(&rt, "c1", &l, NOW + 5.0, exit(false, "", true))
            .await
            .unwrap();
        assert_eq!(
            rt.calls().last().map(String::as_str),
            Some("task_delete c1")
        );
    }

    #[tokio::test]
    async fn with_no_task_the_recorded_exit_is_read_back_without_calls() {
        let rt = Fake::default();
        let l = labels(&[
            (L_EXIT, "0"),
            (L_REASON, "Completed"),
            (L_FINISHED, "1700000060.000"),
        ]);
        let s = instance_state(&rt, "c1", &l, NOW, exit(false, "", false)).await;
        let Ok(InstanceState::Exited {
            exit_code: 0,
            reason,
            finished_at,
            ..
        }) = s
        else {
            panic!("{s:?}");
        };
        assert_eq!(
            (reason.as_str(), finished_at),
            ("Completed", 1_700_000_060.0)
        );
        assert_eq!(rt.calls(), ["task_get c1"]);
    }

    #[tokio::test]
    async fn a_container_that_never_got_a_task_could_not_run() {
        let rt = Fake::default();
        let s = instance_state(&rt, "c1", &HashMap::new(), NOW, exit(false, "", false)).await;
        let Ok(InstanceState::Exited {
            exit_code: 128,
            reason,
            ..
        }) = s
        else {
            panic!("{s:?}");
        };
        assert_eq!(reason, TerminatedReason::ContainerCannotRun);
    }
}
