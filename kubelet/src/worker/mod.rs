//! One pod's worker: observe the runtime, plan, act, report. The loop and
//! the actions are here; what it observes is in `observe`, how it makes and
//! removes the sandbox in `pod_sandbox`, how it starts a container in
//! `start`, the status it writes in `status`.

mod observe;
mod pod_sandbox;
mod start;
mod status;
mod stdio;
mod task;

pub(crate) use pod_sandbox::reap_orphans;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, Preconditions},
};
use serde_json::Value;
use sha2::Digest as _;
use tokio::sync::mpsc;

use super::{
    Shared, ToWorker, now, probe,
    sync::{self, Action, InstanceState, Memory, Observed, Waiting, WaitingReason},
    volumes,
};
use rudder_runtime::containerd::TaskEvent;

const L_STOP_SIGNAL: &str = "rudder.io/stop-signal";
/// Periodic resync, as the kubelet's PLEG relist (1 s) and housekeeping.
const RESYNC: Duration = Duration::from_secs(2);
/// Image pull back-off: 10 s doubling to 300 s.
const IMAGE_BACKOFF_MAX: i64 = 300;
/// How often configMap and secret volumes are re-read (the kubelet's sync
/// period is a minute plus its cache TTL; this is quicker).
const VOLUME_RESYNC_SECS: f64 = 10.0;

/// The containerd id prefix of a pod's containers (its uid without dashes).
pub(crate) fn id_prefix(uid: &str) -> String {
    uid.replace('-', "")
}

pub(crate) fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    let h = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..4]);
    format!("{}-{h}-{attempt}", id_prefix(uid))
}

struct Worker {
    shared: Arc<Shared>,
    uid: String,
    pod: Option<Pod>,
    mem: Memory,
    /// The instance id each container's back-off was computed for.
    backoff_for: HashMap<String, String>,
    oom: HashSet<String>,
    last_status: Option<Value>,
    gone: bool,
    pod_dir: PathBuf,
    ns_dir: PathBuf,
    sandbox_retry_at: f64,
    /// Host paths of the pod's volumes once they are set up, and when
    /// their configMap and secret contents were last brought up to date.
    volumes: Option<BTreeMap<String, PathBuf>>,
    volumes_synced: f64,
    /// The worker's own inbox, handed to its probe tasks.
    tx: mpsc::UnboundedSender<ToWorker>,
    /// Per container: the instance its probe tasks watch, and the tasks.
    probes: HashMap<String, (String, Vec<tokio::task::AbortHandle>)>,
    /// Instances a liveness or startup probe failed: (name, id, message).
    pending_kills: Vec<(String, String, String)>,
    /// Events from probe reports: (type, reason, message).
    pending_events: Vec<(&'static str, &'static str, String)>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        for (_, handles) in self.probes.values() {
            for h in handles {
                h.abort();
            }
        }
    }
}

/// Runs the worker until the pod is finished with and gone.
pub(crate) async fn run(
    shared: Arc<Shared>,
    uid: String,
    tx: mpsc::UnboundedSender<ToWorker>,
    mut rx: mpsc::UnboundedReceiver<ToWorker>,
) {
    let pod_dir = shared.cfg.root_dir.join("pods").join(&uid);
    let ns_dir = shared.cfg.run_dir.join("pods").join(&uid);
    let mut w = Worker {
        shared,
        uid,
        pod: None,
        mem: Memory::default(),
        backoff_for: HashMap::new(),
        oom: HashSet::new(),
        last_status: None,
        gone: false,
        pod_dir,
        ns_dir,
        sandbox_retry_at: 0.0,
        volumes: None,
        volumes_synced: 0.0,
        tx,
        probes: HashMap::new(),
        pending_kills: Vec::new(),
        pending_events: Vec::new(),
    };
    w.mem.first_seen = Some(now());
    let mut requeue: Option<f64> = None;
    loop {
        let wait = requeue
            .map(|t| Duration::from_secs_f64((t - now()).max(0.0)).min(RESYNC))
            .unwrap_or(RESYNC);
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(msg)) => w.take(msg),
            Ok(None) => return,
            Err(_) => {}
        }
        while let Ok(msg) = rx.try_recv() {
            w.take(msg);
        }
        let Some(pod) = w.pod.clone() else { continue };
        match w.sync(&pod).await {
            Ok(SyncOutcome::Again(r)) => requeue = r,
            Ok(SyncOutcome::Done) => return,
            Err(e) => {
                tracing::warn!(pod = %pod_key(&pod), error = %e, "pod sync failed");
                requeue = Some(now() + 1.0);
            }
        }
    }
}

/// What [`Worker::act`] did last: the plan it carried out, when, and
/// whether the pod had a sandbox before.
struct Acted {
    plan: sync::Plan,
    t: f64,
    had_sandbox: bool,
}

enum SyncOutcome {
    Again(Option<f64>),
    Done,
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

fn parse_ts(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

impl Worker {
    fn take(&mut self, msg: ToWorker) {
        match msg {
            ToWorker::Pod(p) => self.pod = Some(*p),
            ToWorker::Gone => {
                self.gone = true;
                if let Some(p) = &mut self.pod {
                    if p.metadata.deletion_timestamp.is_none() {
                        p.metadata.deletion_timestamp =
                            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                                jiff::Timestamp::now(),
                            ));
                    }
                    p.metadata.deletion_grace_period_seconds =
                        Some(p.metadata.deletion_grace_period_seconds.unwrap_or(2).min(2));
                }
            }
            ToWorker::Task(TaskEvent::Oom { container_id }) => {
                self.oom.insert(container_id);
            }
            ToWorker::Task(TaskEvent::Exit { .. }) => {}
            ToWorker::Probe(r) => self.take_probe(r),
        }
    }

    fn host_network(pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    /// `shareProcessNamespace` (never with `hostPID`, which the API
    /// refuses and which wins here).
    fn shared_pid(pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .is_some_and(|s| s.share_process_namespace == Some(true) && s.host_pid != Some(true))
    }

    async fn sync(&mut self, pod: &Pod) -> Result<SyncOutcome, String> {
        for (kind, reason, message) in std::mem::take(&mut self.pending_events) {
            self.event(pod, kind, reason, &message);
        }
        for (name, id, message) in std::mem::take(&mut self.pending_kills) {
            self.event(pod, "Normal", "Killing", &message);
            let grace = self.grace(pod, &name);
            self.kill(pod, &name, &id, grace).await;
        }
        if self.volumes.is_some() && now() - self.volumes_synced >= VOLUME_RESYNC_SECS {
            self.volumes_synced = now();
            // Live updates of configMap and secret volumes (unchanged
            // content is not rewritten; a failure keeps what is there).
            let mut facts = self.shared.node_facts.read().await.clone();
            facts.pod_ip = self.pod_ip();
            if let Err(e) = volumes::setup(&self.shared.client, pod, &self.pod_dir, &facts).await {
                tracing::warn!(pod = %pod_key(pod), error = %e, "refreshing volumes");
            }
        }
        let Some(Acted {
            plan,
            t,
            had_sandbox,
        }) = self.act(pod).await?
        else {
            return Ok(SyncOutcome::Done);
        };
        if self.gone && !had_sandbox {
            self.teardown_sandbox(pod).await;
            return Ok(SyncOutcome::Done);
        }
        let terminal = rudder_k8s::pod::is_terminal(pod);
        if !self.gone && !terminal {
            // Observe again after acting so the status shows the result.
            let status_plan = if plan.actions.is_empty() {
                plan.clone()
            } else {
                let obs = self.observe(pod).await?;
                sync::plan(pod, &obs, &self.mem, now())
            };
            self.write_status(pod, &status_plan.status).await;
            // An image pull failure shows as ErrImagePull once, then as
            // ImagePullBackOff until the retry.
            for w in self.mem.waiting.values_mut() {
                if w.reason == WaitingReason::ErrImagePull {
                    w.reason = WaitingReason::ImagePullBackOff;
                }
            }
        }
        let requeue = plan
            .requeue_at
            .into_iter()
            .chain((self.sandbox_retry_at > t).then_some(self.sandbox_retry_at))
            .reduce(f64::min);
        Ok(SyncOutcome::Again(requeue))
    }

    /// Observes, plans and acts. A sandbox just made is followed at once by
    /// the next plan (the containers' starts), as the kubelet's `SyncPod`
    /// does, so a new pod's status is written once, after both, not once
    /// per step with a round trip through the API between them. `None`
    /// when the pod is finished with (its object deleted).
    async fn act(&mut self, pod: &Pod) -> Result<Option<Acted>, String> {
        let mut rounds = 0;
        loop {
            rounds += 1;
            let obs = self.observe(pod).await?;
            self.manage_probes(pod, &obs);
            let t = now();
            let plan = sync::plan(pod, &obs, &self.mem, t);
            if !self.execute_all(pod, &plan).await? {
                return Ok(None);
            }
            let sandbox_made = matches!(plan.actions.as_slice(), [Action::CreateSandbox])
                && self.sandbox_retry_at <= t;
            if !sandbox_made || rounds >= 2 || self.gone {
                return Ok(Some(Acted {
                    plan,
                    t,
                    had_sandbox: obs.sandbox.is_some(),
                }));
            }
        }
    }

    /// Executes a plan's actions; `false` once the pod is finalized.
    async fn execute_all(&mut self, pod: &Pod, plan: &sync::Plan) -> Result<bool, String> {
        for a in &plan.actions {
            match a {
                Action::Finalize => {
                    // Exited containers of a finished pod, its directories.
                    self.teardown_sandbox(pod).await;
                    if !self.gone {
                        let api: Api<Pod> = Api::namespaced(
                            self.shared.client.clone(),
                            pod.metadata.namespace.as_deref().unwrap_or_default(),
                        );
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            preconditions: Some(Preconditions {
                                uid: Some(self.uid.clone()),
                                resource_version: None,
                            }),
                            ..DeleteParams::default()
                        };
                        match api
                            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp)
                            .await
                        {
                            Ok(_) => {}
                            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                            Err(e) => return Err(format!("deleting the pod: {e}")),
                        }
                    }
                    return Ok(false);
                }
                other => self.execute(pod, other).await,
            }
        }
        Ok(true)
    }

    /// The container's termination message: at most the last 4 KiB of
    /// the file it wrote (the kubelet's `MaxContainerTerminationMessageLength`),
    /// read without following a link or blocking on a FIFO.
    fn termination_message(&self, id: &str) -> String {
        let p = self.pod_dir.join("termination").join(id);
        volumes::read_tail(&p, 4096)
    }

    fn event(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        super::record_event(&self.shared, pod, kind, reason, message);
    }

    async fn execute(&mut self, pod: &Pod, action: &Action) {
        match action {
            Action::CreateSandbox => {
                if now() < self.sandbox_retry_at {
                    return;
                }
                if let Err(e) = self.create_sandbox(pod).await {
                    self.sandbox_retry_at = now() + 5.0;
                    self.event(
                        pod,
                        "Warning",
                        "FailedCreatePodSandBox",
                        &format!("Failed to create pod sandbox: {e}"),
                    );
                    self.teardown_sandbox(pod).await;
                }
            }
            Action::Start { name, attempt } => {
                if let Err(failure) = self.start(pod, name, *attempt).await {
                    let prev = self.mem.waiting.get(name).map_or(0, |w| w.delay_secs);
                    let delay = if failure.pull_backoff {
                        if prev == 0 {
                            10
                        } else {
                            (prev * 2).min(IMAGE_BACKOFF_MAX)
                        }
                    } else {
                        10
                    };
                    self.mem.waiting.insert(
                        name.clone(),
                        Waiting {
                            reason: failure.reason,
                            message: failure.message,
                            retry_at: now() + delay as f64,
                            delay_secs: delay,
                        },
                    );
                } else {
                    self.mem.waiting.remove(name);
                }
            }
            Action::Kill {
                name,
                id,
                grace_secs,
                reason,
            } => {
                let msg = format!("Stopping container {name}");
                if *reason == sync::KillReason::Killing {
                    self.event(pod, "Normal", "Killing", &msg);
                }
                self.kill(pod, name, id, *grace_secs).await;
            }
            Action::TeardownSandbox => self.teardown_sandbox(pod).await,
            Action::Finalize => {}
        }
    }

    /// The grace period for stopping one container: the probe's own for a
    /// failed liveness or startup probe, else the pod's.
    fn grace(&self, pod: &Pod, name: &str) -> i64 {
        let c = sync::containers_by_name(pod)
            .get(name)
            .map(|(c, _)| c.clone());
        c.and_then(|c| {
            c.liveness_probe
                .and_then(|p| p.termination_grace_period_seconds)
                .or(c
                    .startup_probe
                    .and_then(|p| p.termination_grace_period_seconds))
        })
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30)
    }

    /// The pod's address from its sandbox record.
    fn pod_ip(&self) -> String {
        std::fs::read_to_string(self.pod_dir.join("sandbox.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["ip"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn take_probe(&mut self, r: probe::Report) {
        if self.probes.get(&r.container).map(|(i, _)| i) != Some(&r.instance) {
            return; // about an instance that is gone
        }
        if r.verdict.is_none() || r.verdict == Some(false) {
            self.pending_events.push((
                "Warning",
                "Unhealthy",
                format!("{} probe failed: {}", r.kind.title(), r.message),
            ));
        }
        match (r.kind, r.verdict) {
            (probe::Kind::Readiness, Some(v)) => {
                self.mem.ready.insert(r.container, v);
            }
            (probe::Kind::Startup, Some(true)) => {
                self.mem.started.insert(r.container, true);
            }
            (kind @ (probe::Kind::Liveness | probe::Kind::Startup), Some(false)) => {
                let what = if kind == probe::Kind::Liveness {
                    "liveness"
                } else {
                    "startup"
                };
                let message = format!(
                    "Container {} failed {what} probe, will be restarted",
                    r.container
                );
                self.pending_kills.push((r.container, r.instance, message));
            }
            _ => {}
        }
    }

    /// Starts probe tasks for running instances that have none, and stops
    /// those of instances that no longer run.
    fn manage_probes(&mut self, pod: &Pod, obs: &Observed) {
        let pod_ip = obs
            .sandbox
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        for (name, (c, is_init)) in sync::containers_by_name(pod) {
            let running = obs.containers.get(&name).and_then(|(i, _)| {
                matches!(i.state, InstanceState::Running { .. }).then(|| i.id.clone())
            });
            let current = self.probes.get(&name).map(|(i, _)| i.clone());
            if current.is_some() && current != running {
                if let Some((_, handles)) = self.probes.remove(&name) {
                    for h in handles {
                        h.abort();
                    }
                }
                self.mem.ready.remove(&name);
                self.mem.started.remove(&name);
            }
            let Some(id) = running else { continue };
            if self.probes.contains_key(&name) {
                continue;
            }
            // Regular init containers have no probes.
            if is_init && c.restart_policy.as_deref() != Some("Always") {
                continue;
            }
            let target = probe::Target {
                instance: id.clone(),
                pod_ip: pod_ip.clone(),
                container: c.clone(),
            };
            let has_startup = c.startup_probe.is_some();
            let (started_tx, started_rx) = tokio::sync::watch::channel(!has_startup);
            if has_startup {
                self.mem.started.insert(name.clone(), false);
            }
            let mut handles = vec![];
            let mut spawn =
                |kind,
                 p: Option<k8s_openapi::api::core::v1::Probe>,
                 stx: Option<tokio::sync::watch::Sender<bool>>| {
                    if let Some(p) = p {
                        handles.push(
                            tokio::spawn(probe::run(
                                Arc::clone(&self.shared),
                                target.clone(),
                                kind,
                                p,
                                started_rx.clone(),
                                stx,
                                self.tx.clone(),
                            ))
                            .abort_handle(),
                        );
                    }
                };
            spawn(
                probe::Kind::Startup,
                c.startup_probe.clone(),
                Some(started_tx),
            );
            spawn(probe::Kind::Liveness, c.liveness_probe.clone(), None);
            spawn(probe::Kind::Readiness, c.readiness_probe.clone(), None);
            self.probes.insert(name, (id, handles));
        }
    }

    /// Stops one container instance: preStop hook, then the image's stop
    /// signal (SIGTERM by default), then SIGKILL once the grace period is up.
    async fn kill(&self, pod: &Pod, name: &str, id: &str, grace: i64) {
        let cd = &self.shared.runtime;
        let deadline = now() + grace.max(0) as f64;
        let container = sync::containers_by_name(pod)
            .get(name)
            .map(|(c, _)| c.clone());
        if let Some(c) = container.filter(|_| grace > 0)
            && let Some(pre) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone())
        {
            let target = probe::Target {
                instance: id.to_string(),
                pod_ip: self.pod_ip(),
                container: c,
            };
            if let Err(e) = probe::hook(
                &self.shared,
                &target,
                &pre,
                Duration::from_secs(grace as u64),
            )
            .await
            {
                self.event(
                    pod,
                    "Warning",
                    "FailedPreStopHook",
                    &format!("PreStopHook failed: {e}"),
                );
            }
        }
        // A preStop that used up the grace period gets a 2 s extension.
        let grace = (deadline - now()).max(if grace > 0 { 2.0 } else { 0.0 });
        let labels = cd
            .container_list(&format!("id==\"{id}\""))
            .await
            .ok()
            .and_then(|l| l.into_iter().next())
            .map(|(_, l)| l)
            .unwrap_or_default();
        task::stop(
            cd.as_ref(),
            id,
            task::stop_signal(&labels),
            Duration::from_secs_f64(grace),
        )
        .await;
    }
}
