//! One pod's worker: observe the runtime, plan, act, report.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions},
};
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::sync::mpsc;

use super::{
    L_ATTEMPT, L_CONTAINER, L_EXIT, L_FINISHED, L_IMAGE_ID, L_POD_NAME, L_POD_NS, L_POD_UID,
    L_REASON, L_STARTED, Shared, ToWorker, env, logs, now, probe, sandbox, spec,
    sync::{
        self, Action, Instance, InstanceState, Memory, Observed, SandboxObs, ViewState, Waiting,
    },
    volumes,
};
use crate::containerd::{TaskEvent, TaskState};

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

fn rfc3339(t: f64) -> String {
    jiff::Timestamp::from_second(t.floor() as i64)
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn signal_number(name: &str) -> u32 {
    let n = name.trim().trim_start_matches("SIG");
    if let Ok(v) = n.parse::<u32>() {
        return v;
    }
    match n {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "WINCH" => 28,
        _ => 15,
    }
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

    async fn sync(&mut self, pod: &Pod) -> Result<SyncOutcome, String> {
        for (kind, reason, message) in std::mem::take(&mut self.pending_events) {
            self.event(pod, kind, reason, &message).await;
        }
        for (name, id, message) in std::mem::take(&mut self.pending_kills) {
            self.event(pod, "Normal", "Killing", &message).await;
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
        let obs = self.observe(pod).await?;
        self.manage_probes(pod, &obs);
        let t = now();
        let plan = sync::plan(pod, &obs, &self.mem, t);
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
                    return Ok(SyncOutcome::Done);
                }
                other => self.execute(pod, other).await,
            }
        }
        if self.gone && obs.sandbox.is_none() {
            self.teardown_sandbox(pod).await;
            return Ok(SyncOutcome::Done);
        }
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
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
                if w.reason == "ErrImagePull" {
                    w.reason = "ImagePullBackOff".into();
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

    async fn observe(&mut self, pod: &Pod) -> Result<Observed, String> {
        let cd = &self.shared.containerd;
        let mut obs = Observed::default();
        let sandbox_file = self.pod_dir.join("sandbox.json");
        if let Ok(text) = std::fs::read_to_string(&sandbox_file)
            && sandbox::namespaces_exist(&self.ns_dir, Self::host_network(pod))
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
        let tasks: HashMap<String, crate::containerd::TaskInfo> = cd
            .task_list()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|t| (t.container_id.clone(), t))
            .collect();
        let mut by_name: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for (id, labels) in containers {
            let name = labels.get(L_CONTAINER).cloned().unwrap_or_default();
            let attempt = labels
                .get(L_ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            let started_at = labels.get(L_STARTED).and_then(|s| parse_ts(s));
            // A listing skips tasks whose shim is slow to answer: ask for
            // a missing one directly before concluding anything.
            let listed = tasks.get(&id).cloned();
            let task = match listed {
                Some(t) => Some(t),
                None if !labels.contains_key(L_EXIT) => {
                    cd.task_get(&id).await.map_err(|e| e.to_string())?
                }
                None => None,
            };
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

    /// The container's termination message: at most the last 4 KiB of
    /// the file it wrote (the kubelet's `MaxContainerTerminationMessageLength`),
    /// read without following a link or blocking on a FIFO.
    fn termination_message(&self, id: &str) -> String {
        let p = self.pod_dir.join("termination").join(id);
        volumes::read_tail(&p, 4096)
    }

    async fn event(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        super::record_event(&self.shared, pod, kind, reason, message).await;
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
                    )
                    .await;
                    self.teardown_sandbox(pod).await;
                }
            }
            Action::Start { name, attempt } => {
                if let Err((reason, message, retry)) = self.start(pod, name, *attempt).await {
                    let prev = self.mem.waiting.get(name).map_or(0, |w| w.delay_secs);
                    let delay = if retry {
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
                            reason,
                            message,
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
                if reason == "Killing" {
                    self.event(pod, "Normal", "Killing", &msg).await;
                }
                self.kill(pod, name, id, *grace_secs).await;
            }
            Action::TeardownSandbox => self.teardown_sandbox(pod).await,
            Action::Finalize => {}
        }
    }

    async fn create_sandbox(&mut self, pod: &Pod) -> Result<(), String> {
        let cfg = &self.shared.cfg;
        let host_network = Self::host_network(pod);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns_name = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
        volumes::ensure_pod_dir(&self.pod_dir).map_err(|e| e.to_string())?;
        let ns_dir = self.ns_dir.clone();
        let h = hostname.clone();
        let namespaces = tokio::task::spawn_blocking(move || {
            sandbox::create_namespaces(&ns_dir, &h, host_network)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let ip;
        if let Some(net) = &namespaces.net {
            let nl = rudder_netlink::Netlink::in_netns(net).map_err(|e| e.to_string())?;
            if let Ok(Some(lo)) = nl.link("lo").await {
                nl.set_up(lo.index).await.map_err(|e| e.to_string())?;
            }
            let list =
                rudder_cni::runtime::load_conflist(&cfg.cni_conf_dir).map_err(|e| e.to_string())?;
            let rt = rudder_cni::runtime::Runtime {
                bin_dirs: cfg.cni_bin_dirs.clone(),
                cache_dir: cfg.cni_cache_dir.clone(),
            };
            let rc = self.runtime_conf(pod, net);
            let result = tokio::task::spawn_blocking(move || rt.add(&list, &rc))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("plugin type=\"{}\" failed (add): {e}", "cni"))?;
            ip = result["ips"]
                .as_array()
                .and_then(|ips| ips.first())
                .and_then(|i| i["address"].as_str())
                .and_then(|a| a.split('/').next())
                .map(str::to_string);
            if ip.is_none() {
                return Err(format!("the CNI result has no IP address: {result}"));
            }
            if let Some(proxy) = &cfg.proxy {
                proxy.now().await;
            }
        } else {
            ip = Some(cfg.node_ip.clone());
        }
        // /etc/hosts, /etc/resolv.conf, /etc/hostname.
        let aliases: Vec<(String, Vec<String>)> = spec
            .host_aliases
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.ip, a.hostnames.unwrap_or_default()))
            .collect();
        let fqdn = spec
            .subdomain
            .as_ref()
            .map(|sd| format!("{hostname}.{sd}.{ns_name}.svc.{}", cfg.cluster_domain));
        let hosts = if host_network {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            sandbox::hosts_file(ip.as_deref(), &hostname, fqdn.as_deref(), &aliases)
        };
        let dns = spec.dns_config.clone().unwrap_or_default();
        let resolv = sandbox::resolv_conf(&sandbox::DnsInputs {
            policy: spec.dns_policy.clone().unwrap_or_default(),
            host_network,
            cluster_dns: cfg.cluster_dns.clone(),
            cluster_domain: cfg.cluster_domain.clone(),
            namespace: ns_name,
            host_resolv: std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default(),
            config_nameservers: dns.nameservers.unwrap_or_default(),
            config_searches: dns.searches.unwrap_or_default(),
            config_options: dns
                .options
                .unwrap_or_default()
                .into_iter()
                .filter_map(|o| Some((o.name?, o.value)))
                .collect(),
        });
        let etc = self.pod_dir.join("etc");
        std::fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
        std::fs::write(etc.join("hosts"), hosts).map_err(|e| e.to_string())?;
        std::fs::write(etc.join("resolv.conf"), resolv).map_err(|e| e.to_string())?;
        std::fs::write(etc.join("hostname"), format!("{hostname}\n")).map_err(|e| e.to_string())?;
        std::fs::write(
            self.pod_dir.join("sandbox.json"),
            json!({"ip": ip}).to_string(),
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn runtime_conf(&self, pod: &Pod, net: &Path) -> rudder_cni::runtime::RuntimeConf {
        let mut port_mappings = vec![];
        for c in pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default()
        {
            for p in c.ports.unwrap_or_default() {
                if let Some(hp) = p.host_port.filter(|h| *h > 0) {
                    port_mappings.push(json!({
                        "hostPort": hp, "containerPort": p.container_port,
                        "protocol": p.protocol.unwrap_or_else(|| "TCP".into()).to_lowercase(),
                        "hostIP": p.host_ip.unwrap_or_default(),
                    }));
                }
            }
        }
        let mut caps = serde_json::Map::new();
        if !port_mappings.is_empty() {
            caps.insert("portMappings".into(), Value::Array(port_mappings));
        }
        rudder_cni::runtime::RuntimeConf {
            container_id: id_prefix(&self.uid),
            netns: net.display().to_string(),
            ifname: "eth0".into(),
            args: vec![
                (
                    "K8S_POD_NAMESPACE".into(),
                    pod.metadata.namespace.clone().unwrap_or_default(),
                ),
                (
                    "K8S_POD_NAME".into(),
                    pod.metadata.name.clone().unwrap_or_default(),
                ),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), id_prefix(&self.uid)),
                ("K8S_POD_UID".into(), self.uid.clone()),
            ],
            capability_args: caps,
        }
    }

    async fn teardown_sandbox(&mut self, pod: &Pod) {
        let cfg = self.shared.cfg.clone();
        let cd = self.shared.containerd.clone();
        let removing = pod.metadata.deletion_timestamp.is_some() || self.gone;
        // Containers and their snapshots (a finished pod keeps its exited
        // containers, for their status and logs, until it is deleted).
        let filter = format!("labels.\"{L_POD_UID}\"==\"{}\"", self.uid);
        let containers = if removing {
            cd.container_list(&filter).await.unwrap_or_default()
        } else {
            vec![]
        };
        for (id, _) in containers {
            let _ = cd.task_kill(&id, 9, true).await;
            let _ = cd.task_delete(&id).await;
            let _ = cd.container_delete(&id).await;
            let _ = cd.snapshot_remove(&id).await;
        }
        let host_network = Self::host_network(pod);
        let net = sandbox::namespace_paths(&self.ns_dir, host_network).net;
        if let Some(net) = net
            && let Ok(list) = rudder_cni::runtime::load_conflist(&cfg.cni_conf_dir)
        {
            let rt = rudder_cni::runtime::Runtime {
                bin_dirs: cfg.cni_bin_dirs.clone(),
                cache_dir: cfg.cni_cache_dir.clone(),
            };
            let rc = self.runtime_conf(pod, &net);
            let r = tokio::task::spawn_blocking(move || rt.del(&list, &rc)).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(pod = %pod_key(pod), error = %e, "CNI DEL");
            }
        }
        sandbox::remove_namespaces(&self.ns_dir);
        let _ = std::fs::remove_dir_all(&self.ns_dir);
        let _ = std::fs::remove_file(self.pod_dir.join("sandbox.json"));
        remove_pod_cgroups(&cfg.cgroup_root, &self.uid);
        if removing {
            volumes::unmount_all(&self.pod_dir);
            let _ = std::fs::remove_dir_all(&self.pod_dir);
            self.volumes = None;
            let log_dir = logs::pod_log_dir(
                &cfg.pod_log_dir,
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default(),
                &self.uid,
            );
            let _ = std::fs::remove_dir_all(log_dir);
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
        let cd = &self.shared.containerd;
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
                )
                .await;
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
        let sig = labels
            .get(L_STOP_SIGNAL)
            .filter(|s| !s.is_empty())
            .map_or(15, |s| signal_number(s));
        if grace > 0.0 {
            let _ = cd.task_kill(id, sig, false).await;
            if wait_stopped(cd, id, now() + grace).await {
                return;
            }
        }
        let _ = cd.task_kill(id, 9, true).await;
        wait_stopped(cd, id, now() + 10.0).await;
    }

    /// Starts one container instance; on failure the waiting reason, its
    /// message and whether it is an image failure (with its own back-off).
    async fn start(
        &mut self,
        pod: &Pod,
        name: &str,
        attempt: u32,
    ) -> Result<(), (String, String, bool)> {
        let c: Container = sync::containers_by_name(pod)
            .get(name)
            .map(|(c, _)| c.clone())
            .ok_or_else(|| {
                (
                    "CreateContainerError".to_string(),
                    format!("no container {name}"),
                    false,
                )
            })?;
        // Image, per pull policy.
        let image = self.ensure_image(pod, &c).await?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        // Environment.
        let lookup = self.lookup_for(pod, &c).await;
        let mut services: Vec<Service> =
            Api::<Service>::namespaced(self.shared.client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
        if ns != "default"
            && let Ok(master) = Api::<Service>::namespaced(self.shared.client.clone(), "default")
                .get("kubernetes")
                .await
        {
            services.push(master);
        }
        let mut facts = self.shared.node_facts.read().await.clone();
        facts.pod_ip = self.pod_ip();
        let env = env::container_env(pod, &c, &services, &lookup, &facts).map_err(|e| {
            (
                "CreateContainerConfigError".to_string(),
                e.to_string(),
                false,
            )
        })?;
        // Volumes, set up once per pod (until that succeeds), and the pod's files.
        let vols = match &self.volumes {
            Some(v) => v.clone(),
            None => match volumes::setup(&self.shared.client, pod, &self.pod_dir, &facts).await {
                Ok(v) => {
                    self.volumes = Some(v.clone());
                    self.volumes_synced = now();
                    v
                }
                Err(e) => {
                    self.event(pod, "Warning", "FailedMount", &e.to_string())
                        .await;
                    return Err(("ContainerCreating".into(), e.to_string(), false));
                }
            },
        };
        let mut mounts = volumes::mounts(pod, &c, &vols, &self.pod_dir, &env)
            .map_err(|e| ("CreateContainerConfigError".into(), e.to_string(), false))?;
        let etc = self.pod_dir.join("etc");
        let has = |d: &str, m: &Vec<spec::MountSpec>| m.iter().any(|x| x.destination == d);
        for (f, dest) in [
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
            ("hostname", "/etc/hostname"),
        ] {
            if !has(dest, &mounts) {
                mounts.push(spec::MountSpec {
                    destination: dest.into(),
                    source: etc.join(f),
                    read_only: false,
                    nosuid_nodev: true,
                });
            }
        }
        let id = container_id(&self.uid, name, attempt);
        let term_dir = self.pod_dir.join("termination");
        let _ = std::fs::create_dir_all(&term_dir);
        let term_file = term_dir.join(&id);
        let _ = std::fs::write(&term_file, b"");
        let term_path = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        mounts.push(spec::MountSpec {
            destination: term_path,
            source: term_file,
            read_only: false,
            nosuid_nodev: true,
        });
        let spec_pod_hostname = pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
        let host_network = Self::host_network(pod);
        let hostname = if host_network {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        } else {
            spec_pod_hostname
        };
        let namespaces = sandbox::namespace_paths(&self.ns_dir, host_network);
        let cgroups_path = format!("{}/pod{}/{id}", self.shared.cfg.cgroup_root, self.uid);
        let oci = spec::build(&spec::SpecInput {
            pod,
            container: &c,
            image: &image.config,
            env: &env,
            namespaces: &namespaces,
            mounts: &mounts,
            cgroups_path: &cgroups_path,
            hostname: &hostname,
        })
        .map_err(|e| (e.reason().to_string(), e.to_string(), false))?;
        let spec_json = serde_json::to_vec(&oci)
            .map_err(|e| ("CreateContainerError".into(), e.to_string(), false))?;
        let cd = &self.shared.containerd;
        let fail = |e: crate::containerd::ContainerdError| {
            ("CreateContainerError".to_string(), e.to_string(), false)
        };
        // A leftover of an interrupted start with the same id goes first.
        let _ = cd.task_delete(&id).await;
        let _ = cd.container_delete(&id).await;
        let _ = cd.snapshot_remove(&id).await;
        // The new snapshot is held by a lease until the container record
        // that references it exists: an unreferenced active snapshot is
        // fair game for containerd's garbage collector (which any other
        // pull's lease release sets off).
        let lease = format!("rudder-start-{id}");
        cd.lease_create(&lease, Duration::from_secs(600))
            .await
            .map_err(fail)?;
        let labels = HashMap::from([
            (L_POD_UID.to_string(), self.uid.clone()),
            (
                L_POD_NAME.to_string(),
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (L_POD_NS.to_string(), ns.clone()),
            (L_CONTAINER.to_string(), name.to_string()),
            (L_ATTEMPT.to_string(), attempt.to_string()),
            (L_IMAGE_ID.to_string(), image.image_id.clone()),
            (L_STOP_SIGNAL.to_string(), image.config.stop_signal.clone()),
        ]);
        let made = async {
            let rootfs = cd
                .snapshot_prepare(
                    Some(&lease),
                    &id,
                    &image.chain_id,
                    HashMap::from([(L_POD_UID.to_string(), self.uid.clone())]),
                )
                .await?;
            cd.container_create(&id, &image.name, spec_json, &id, labels)
                .await?;
            Ok::<_, crate::containerd::ContainerdError>(rootfs)
        }
        .await;
        let _ = cd.lease_delete(&lease).await;
        let rootfs = made.map_err(fail)?;
        let log_dir = logs::pod_log_dir(
            &self.shared.cfg.pod_log_dir,
            &ns,
            pod.metadata.name.as_deref().unwrap_or_default(),
            &self.uid,
        );
        let log_path = logs::container_log_path(&log_dir, name, attempt);
        let uri = logs::driver_uri(
            &self.shared.cfg.log_driver,
            &log_path,
            logs::DEFAULT_MAX_SIZE,
            logs::DEFAULT_MAX_FILES,
        );
        let created = cd.task_create(&id, rootfs, &uri, &uri).await;
        let started = match created {
            Ok(_) => cd.task_start(&id).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            // The process could not run (missing binary, bad user): an exited
            // instance with runc's message, as containerd's CRI reports it.
            let msg = e.to_string();
            tracing::warn!(pod = %pod_key(pod), container = %name, error = %msg, "container start failed");
            let _ = cd.task_delete(&id).await;
            let t = now();
            let r = cd
                .container_set_labels(
                    &id,
                    HashMap::from([
                        (L_EXIT.to_string(), "128".to_string()),
                        (L_FINISHED.to_string(), format!("{t:.3}")),
                        (L_STARTED.to_string(), format!("{t:.3}")),
                        (L_REASON.to_string(), "StartError".to_string()),
                    ]),
                )
                .await;
            if let Err(e) = r {
                tracing::warn!(container = %id, error = %e, "recording the failed start");
            }
            let _ = std::fs::write(self.pod_dir.join("termination").join(&id), &msg);
            self.event(pod, "Warning", "Failed", &format!("Error: {msg}"))
                .await;
            return Ok(());
        }
        let t = now();
        let _ = cd
            .container_set_labels(
                &id,
                HashMap::from([(L_STARTED.to_string(), format!("{t:.3}"))]),
            )
            .await;
        self.event(
            pod,
            "Normal",
            "Created",
            &format!("Created container {name}"),
        )
        .await;
        self.event(
            pod,
            "Normal",
            "Started",
            &format!("Started container {name}"),
        )
        .await;
        if let Some(post) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            let target = probe::Target {
                instance: id.clone(),
                pod_ip: self.pod_ip(),
                container: c.clone(),
            };
            let grace = self.grace(pod, name);
            if let Err(e) = probe::hook(
                &self.shared,
                &target,
                &post,
                Duration::from_secs(grace.max(1) as u64),
            )
            .await
            {
                self.event(
                    pod,
                    "Warning",
                    "FailedPostStartHook",
                    &format!("PostStartHook failed: {e}"),
                )
                .await;
                self.kill(pod, name, &id, grace).await;
            }
        }
        Ok(())
    }

    async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<crate::image::ImageInfo, (String, String, bool)> {
        let image = c.image.clone().unwrap_or_default();
        let reference = crate::image::Reference::parse(&image)
            .map_err(|e| ("InvalidImageName".to_string(), e.to_string(), false))?;
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if reference.digest.is_none() && reference.tag.as_deref() == Some("latest") {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let puller = &self.shared.puller;
        // Always pulls without looking: the registry decides what is current.
        let local = if policy == "Always" {
            None
        } else {
            puller
                .local(&image)
                .await
                .map_err(|e| ("ImageInspectError".to_string(), e.to_string(), false))?
        };
        match (policy.as_str(), local) {
            ("Never", Some(i)) | ("IfNotPresent", Some(i)) => {
                self.event(
                    pod,
                    "Normal",
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                )
                .await;
                return Ok(i);
            }
            ("Never", None) => {
                let msg =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(pod, "Warning", "ErrImageNeverPull", &msg).await;
                return Err(("ErrImageNeverPull".into(), msg, false));
            }
            _ => {}
        }
        // One pull of an image at a time.
        let lock = {
            let mut locks = self.shared.pull_locks.lock().await;
            Arc::clone(locks.entry(reference.to_string()).or_default())
        };
        let _guard = lock.lock().await;
        self.event(
            pod,
            "Normal",
            "Pulling",
            &format!("Pulling image \"{image}\""),
        )
        .await;
        let started = std::time::Instant::now();
        let creds = volumes::pull_credentials(&self.shared.client, pod).await;
        match puller.pull(&image, &creds).await {
            Ok(i) => {
                self.event(
                    pod,
                    "Normal",
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                )
                .await;
                Ok(i)
            }
            Err(e) => {
                let msg = format!("Failed to pull image \"{image}\": {e}");
                self.event(pod, "Warning", "Failed", &msg).await;
                self.event(pod, "Warning", "Failed", "Error: ErrImagePull")
                    .await;
                Err(("ErrImagePull".into(), msg, true))
            }
        }
    }

    async fn lookup_for(&self, pod: &Pod, c: &Container) -> MapLookup {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut cms: HashSet<String> = HashSet::new();
        let mut secrets: HashSet<String> = HashSet::new();
        for f in c.env_from.iter().flatten() {
            cms.extend(f.config_map_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(f.secret_ref.as_ref().map(|r| r.name.clone()));
        }
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value_from {
                cms.extend(v.config_map_key_ref.as_ref().map(|r| r.name.clone()));
                secrets.extend(v.secret_key_ref.as_ref().map(|r| r.name.clone()));
            }
        }
        let mut out = MapLookup::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &ns);
        for n in cms {
            if let Ok(Some(cm)) = cm_api.get_opt(&n).await {
                out.config_maps.insert(n, cm.data.unwrap_or_default());
            }
        }
        let s_api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &ns);
        for n in secrets {
            if let Ok(Some(s)) = s_api.get_opt(&n).await {
                let mut data: BTreeMap<String, String> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                data.extend(s.string_data.unwrap_or_default());
                out.secrets.insert(n, data);
            }
        }
        out
    }

    async fn write_status(&mut self, pod: &Pod, view: &sync::StatusView) {
        let body = status_json(
            pod,
            view,
            &self.shared.cfg.node_ip,
            self.mem.first_seen.unwrap_or_else(now),
        );
        if self.last_status.as_ref() == Some(&body) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        match api
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(_) => self.last_status = Some(body),
            Err(e) => tracing::warn!(pod = %pod_key(pod), error = %e, "writing the pod status"),
        }
    }
}

/// ConfigMaps and Secrets fetched for one container's environment.
#[derive(Debug, Default)]
struct MapLookup {
    config_maps: HashMap<String, BTreeMap<String, String>>,
    secrets: HashMap<String, BTreeMap<String, String>>,
}

impl env::Lookup for MapLookup {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.config_maps.get(name).cloned()
    }
    fn secret(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.secrets.get(name).cloned()
    }
}

fn view_state(s: &ViewState) -> Value {
    match s {
        ViewState::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"waiting": w})
        }
        ViewState::Running { started_at } => {
            json!({"running": {"startedAt": rfc3339(*started_at)}})
        }
        ViewState::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
            container_id,
        } => {
            let mut t = json!({
                "exitCode": exit_code, "reason": reason,
                "finishedAt": rfc3339(*finished_at), "containerID": container_id,
            });
            if let Some(s) = started_at {
                t["startedAt"] = json!(rfc3339(*s));
            }
            if let Some(m) = message {
                t["message"] = json!(m);
            }
            json!({"terminated": t})
        }
    }
}

fn qos_class(pod: &Pod) -> &'static str {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        for k in ["cpu", "memory"] {
            match lim.get(k) {
                Some(l) => {
                    if req.get(k).is_some_and(|r| r != l) {
                        guaranteed = false;
                    }
                }
                None => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The status subresource body for a view.
fn status_json(pod: &Pod, v: &sync::StatusView, host_ip: &str, started: f64) -> Value {
    let old: Vec<k8s_openapi::api::core::v1::PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now_s = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let cond = |t: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .iter()
            .find(|c| c.type_ == t && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map_or_else(
                || now_s.clone(),
                |t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            );
        let mut c = json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
        if let Some(r) = reason.filter(|_| !ok) {
            c["reason"] = json!(r);
        }
        c
    };
    let scheduled = old.iter().find(|c| c.type_ == "PodScheduled").map_or_else(
        || cond("PodScheduled", true, None),
        |c| serde_json::to_value(c).unwrap_or_default(),
    );
    let not_ready_reason = if v.phase == "Succeeded" || v.phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut conditions = vec![
        cond("PodReadyToStartContainers", v.ready_to_start, None),
        cond(
            "Initialized",
            v.initialized,
            Some("ContainersNotInitialized"),
        ),
        cond("Ready", v.ready, Some(not_ready_reason)),
        cond(
            "ContainersReady",
            v.containers_ready,
            Some(not_ready_reason),
        ),
        scheduled,
    ];
    // Conditions others own (readiness gates) are kept.
    for c in &old {
        if ![
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ]
        .contains(&c.type_.as_str())
        {
            conditions.push(serde_json::to_value(c).unwrap_or_default());
        }
    }
    let cs = |list: &[sync::ContainerView]| -> Vec<Value> {
        list.iter()
            .map(|c| {
                let mut s = json!({
                    "name": c.name, "image": c.image, "imageID": "",
                    "ready": c.ready, "started": c.started, "restartCount": c.restart_count,
                    "state": view_state(&c.state),
                    "lastState": c.last_state.as_ref().map_or(json!({}), view_state),
                });
                if let Some(id) = &c.container_id {
                    s["containerID"] = json!(id);
                }
                s
            })
            .collect()
    };
    let mut status = json!({
        "phase": v.phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": rfc3339(started),
        "qosClass": qos_class(pod),
        "containerStatuses": cs(&v.statuses),
    });
    if !v.init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(cs(&v.init_statuses));
    }
    if let Some(ip) = &v.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(r) = &v.reason {
        status["reason"] = json!(r);
    }
    if let Some(m) = &v.message {
        status["message"] = json!(m);
    }
    json!({"status": status})
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

/// Removes the pod's cgroup directories (runc removes each container's,
/// not the pod parent it created on the way).
fn remove_pod_cgroups(root: &str, uid: &str) {
    let rel = format!("{}/pod{uid}", root.trim_start_matches('/'));
    let mut bases: Vec<PathBuf> = vec![PathBuf::from("/sys/fs/cgroup")];
    bases.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir()),
    );
    for b in bases {
        let p = b.join(&rel);
        if p.is_dir() {
            // Children (containers) first.
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&p);
        }
    }
}

/// Waits until the container's task has stopped (or is gone), polling
/// every 100 ms until `deadline`; whether it stopped.
async fn wait_stopped(cd: &crate::containerd::Containerd, id: &str, deadline: f64) -> bool {
    loop {
        let stopped = cd
            .task_list()
            .await
            .map(|ts| {
                ts.iter()
                    .all(|t| t.container_id != id || t.state == TaskState::Stopped)
            })
            .unwrap_or(true);
        if stopped {
            return true;
        }
        if now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Cleans up what containerd and the node hold for pods that no longer
/// exist in the apiserver (deleted while the agent was down).
pub(crate) async fn reap_orphans(shared: &Arc<Shared>, live: &HashSet<String>) {
    let cd = &shared.containerd;
    let Ok(all) = cd.container_list("").await else {
        return;
    };
    let mut orphans: BTreeMap<String, ()> = BTreeMap::new();
    for (id, labels) in all {
        let Some(uid) = labels.get(L_POD_UID) else {
            continue;
        };
        if live.contains(uid) {
            continue;
        }
        let _ = cd.task_kill(&id, 9, true).await;
        wait_stopped(cd, &id, now() + 5.0).await;
        let _ = cd.task_delete(&id).await;
        let _ = cd.container_delete(&id).await;
        let _ = cd.snapshot_remove(&id).await;
        orphans.insert(uid.clone(), ());
    }
    // Sandboxes of vanished pods (by directory).
    let pods_dir = shared.cfg.root_dir.join("pods");
    for e in std::fs::read_dir(&pods_dir).into_iter().flatten().flatten() {
        let uid = e.file_name().to_string_lossy().into_owned();
        if !live.contains(&uid) {
            orphans.insert(uid, ());
        }
    }
    for uid in orphans.keys() {
        let ns_dir = shared.cfg.run_dir.join("pods").join(uid);
        let net = ns_dir.join("net");
        if net.exists()
            && let Ok(list) = rudder_cni::runtime::load_conflist(&shared.cfg.cni_conf_dir)
        {
            let rt = rudder_cni::runtime::Runtime {
                bin_dirs: shared.cfg.cni_bin_dirs.clone(),
                cache_dir: shared.cfg.cni_cache_dir.clone(),
            };
            let rc = rudder_cni::runtime::RuntimeConf {
                container_id: id_prefix(uid),
                netns: net.display().to_string(),
                ifname: "eth0".into(),
                args: vec![("K8S_POD_UID".into(), uid.clone())],
                capability_args: serde_json::Map::new(),
            };
            let _ = tokio::task::spawn_blocking(move || rt.del(&list, &rc)).await;
        }
        sandbox::remove_namespaces(&ns_dir);
        let _ = std::fs::remove_dir_all(&ns_dir);
        volumes::unmount_all(&pods_dir.join(uid));
        let _ = std::fs::remove_dir_all(pods_dir.join(uid));
        remove_pod_cgroups(&shared.cfg.cgroup_root, uid);
        tracing::info!(pod_uid = %uid, "cleaned up a pod deleted while the agent was away");
    }
}
