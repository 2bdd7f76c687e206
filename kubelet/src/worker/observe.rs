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
        sync::{self, Instance, InstanceState, Observed, SandboxObs},
    },
    Worker, parse_ts,
};
use rudder_runtime::containerd::TaskState;

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
            let started_at = labels.get(L_STARTED).and_then(|s| parse_ts(s));
            // The pod's own tasks, one by one: a listing of every task asks
            // every shim on the node for its state (the cost of one sync
            // grew with the node's pods), and skips shims slow to answer.
            let task = cd.task_get(&id).await.map_err(|e| e.to_string())?;
            let state = match task.as_ref() {
                Some(t) if t.state == TaskState::Running || t.state == TaskState::Paused => {
                    InstanceState::Running {
                        started_at: started_at.unwrap_or_else(now),
                    }
                }
                Some(t) if t.state == TaskState::Stopped => {
                    let finished = t
                        .exited_at
                        .map_or_else(now, |(s, n)| s as f64 + f64::from(n) / 1e9);
                    let code = t.exit_status as i32;
                    let cgroup = format!("{}/pod{}/{id}", self.shared.cfg.cgroup_root, self.uid);
                    let reason = if self.oom.contains(&id) || oom_killed_in(&cgroup) {
                        "OOMKilled"
                    } else if code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    };
                    let message = self.termination_message(&id);
                    let mut l = HashMap::from([
                        (L_EXIT.to_string(), code.to_string()),
                        (L_FINISHED.to_string(), format!("{finished:.3}")),
                        (L_REASON.to_string(), reason.to_string()),
                    ]);
                    if started_at.is_none() {
                        l.insert(L_STARTED.to_string(), format!("{finished:.3}"));
                    }
                    cd.container_set_labels(&id, l)
                        .await
                        .map_err(|e| e.to_string())?;
                    cd.task_delete(&id).await.map_err(|e| e.to_string())?;
                    InstanceState::Exited {
                        exit_code: code,
                        reason: reason.into(),
                        message,
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
                            .cloned()
                            .unwrap_or_else(|| "Error".into()),
                        message: self.termination_message(&id),
                        started_at,
                        finished_at: labels
                            .get(L_FINISHED)
                            .and_then(|s| parse_ts(s))
                            .unwrap_or(0.0),
                    },
                    // Made but never got a task: a start that failed midway.
                    None => InstanceState::Exited {
                        exit_code: 128,
                        reason: "ContainerCannotRun".into(),
                        message: String::new(),
                        started_at: None,
                        finished_at: now(),
                    },
                },
            };
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
