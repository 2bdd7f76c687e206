//! The kubelet: registers the Node, renews its Lease, watches the pods bound
//! to this node and runs each through containerd with a per-pod worker.
//!
//! Each worker loops: observe (containerd's containers and tasks carrying
//! the pod's uid label, the sandbox's files) → [`sync::plan`] (pure) →
//! execute the actions → write the pod's status if it changed → sleep until
//! the pod changes, a task exits, or a back-off ends. The dispatcher
//! (`dispatch.rs`) hands each worker its pod, validated and admitted once.

pub mod admit;
pub mod attach;
pub mod authz;
pub mod cgroups;
mod dispatch;
pub mod env;
pub mod eviction;
pub mod exec;
#[cfg(test)]
mod fake_runtime;
pub mod logs;
pub mod node;
pub mod pause;
pub mod pod_proxy;
pub mod portforward;
pub mod portforward_ws;
pub mod probe;
pub mod quantity;
pub mod sandbox;
pub mod seccomp;
pub mod selinux;
pub mod server;
mod serving_cert;
pub mod spdy;
pub mod spec;
pub mod static_pods;
mod static_source;
pub mod stats;
pub mod sync;
mod volumes;
mod worker;

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, runtime::watcher};
use tokio::sync::mpsc;

use rudder_runtime::{
    ContainerRuntime,
    containerd::{Containerd, ContainerdError, TaskEvent},
    image::{Puller, Registries},
};

/// Label keys on containerd containers.
pub(crate) const L_POD_UID: &str = "rudder.io/pod-uid";
pub(crate) const L_POD_NAME: &str = "rudder.io/pod-name";
pub(crate) const L_POD_NS: &str = "rudder.io/pod-namespace";
pub(crate) const L_CONTAINER: &str = "rudder.io/container-name";
pub(crate) const L_ATTEMPT: &str = "rudder.io/attempt";
pub(crate) const L_STARTED: &str = "rudder.io/started-at";
pub(crate) const L_EXIT: &str = "rudder.io/exit-code";
pub(crate) const L_FINISHED: &str = "rudder.io/finished-at";
pub(crate) const L_REASON: &str = "rudder.io/reason";
pub(crate) const L_IMAGE_ID: &str = "rudder.io/image-id";

/// How the kubelet is set up (flags of `rudder agent kubelet`).
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    /// The address other nodes and the apiserver reach this node at.
    pub node_ip: String,
    pub containerd_socket: PathBuf,
    /// containerd namespace for the pods (the CRI plugin uses `k8s.io`;
    /// Rudder keeps its own so the two never see each other's containers).
    pub containerd_namespace: String,
    /// Persistent state: pod directories (volumes, hosts files), downloads.
    pub root_dir: PathBuf,
    /// Namespace files of the sandboxes (a tmpfs such as /run is right).
    pub run_dir: PathBuf,
    pub pod_log_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_cache_dir: PathBuf,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub registries: Registries,
    /// The `rudder` binary the runc shim starts as the log driver.
    pub log_driver: PathBuf,
    /// `--cgroup-root`: where `kubepods` goes, relative to the cgroup
    /// file system's root ([`cgroups`]).
    pub cgroup_root: String,
    /// `--cgroup-driver`: cgroupfs, or systemd's slices and runc's systemd
    /// cgroups.
    pub cgroup_driver: cgroups::Driver,
    pub max_pods: u32,
    /// Hard eviction thresholds: the node's pressure conditions follow them.
    pub eviction_hard: eviction::EvictionHard,
    /// The node's resolv.conf (for dnsPolicy Default).
    pub resolv_conf: PathBuf,
    /// The kubelet API's port (logs for `kubectl logs`).
    pub port: u16,
    /// CA certificates (DER) whose client certificates the kubelet API
    /// accepts: the cluster's.
    pub client_ca: Vec<Vec<u8>>,
    /// The service proxy in the same agent: told after each CNI ADD, so the
    /// pod's interface carries the Service datapath before its containers
    /// start.
    pub proxy: Option<rudder_host::Rescan>,
    /// Manifests of static pods (`--pod-manifest-path`), if any.
    pub static_pod_dir: Option<PathBuf>,
    /// `--seccomp-default`: containers that name no seccomp profile run
    /// under `RuntimeDefault` rather than `Unconfined`. `Localhost`
    /// profiles live under `<root_dir>/seccomp`.
    pub seccomp_default: bool,
    /// `--selinux`: containers and the kubelet's volumes labelled
    /// ([`selinux`]).
    pub selinux: bool,
}

/// Why the kubelet could not run.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    #[error("node {node}: {source}")]
    Node {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod watch: {0}")]
    Watch(String),
    #[error(
        "--selinux: SELinux is not enabled on this node (no /sys/fs/selinux, or this process \
         runs in no context); leave the flag off, as containerd's enable_selinux is off there"
    )]
    SelinuxOff,
    #[error("pod cgroups: {0}")]
    Cgroups(#[from] cgroups::CgroupError),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What every worker shares.
pub(crate) struct Shared {
    pub cfg: KubeletConfig,
    pub client: Client,
    /// The container runtime (containerd, behind its seam).
    pub runtime: Arc<dyn ContainerRuntime>,
    pub puller: Puller,
    /// Serializes image pulls of the same image.
    pub pull_locks: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub node_facts: tokio::sync::RwLock<env::NodeFacts>,
    /// Which Events to make, bump or drop (client-go's correlator).
    pub events: std::sync::Mutex<rudder_k8s::events::Correlator>,
    /// Events waiting to be written (see [`record_event`]).
    pub event_queue: mpsc::Sender<PodEvent>,
    /// Services of the cluster, watched: the containers' docker-link
    /// variables are made from them.
    /// Indexed by namespace ([`BY_NAMESPACE`]).
    pub services: rudder_informer::Shared<k8s_openapi::api::core::v1::Service>,
    /// With `--selinux`: the node's contexts and the pods' levels.
    pub selinux: Option<selinux::NodeLabels>,
    /// The pods' cgroups under the QoS tiers.
    pub cgroups: cgroups::PodCgroups,
}

/// An Event about a pod, queued for the writer.
#[derive(Debug)]
pub(crate) struct PodEvent {
    /// The involved pod: its name, namespace and uid only.
    pod: Box<Pod>,
    kind: &'static str,
    reason: String,
    message: String,
}

/// Events queued at most (client-go's broadcaster holds 1,000 too); more
/// are dropped, with a log line.
const EVENT_QUEUE: usize = 1000;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.cfg.node_name)
            .finish_non_exhaustive()
    }
}

/// Messages to a pod worker.
#[derive(Debug)]
pub(crate) enum ToWorker {
    /// The pod as the apiserver has it now.
    Pod(Box<Pod>),
    /// The pod object is gone from the apiserver: stop everything.
    Gone,
    /// One of the pod's tasks exited or was OOM-killed.
    Task(TaskEvent),
    /// A probe of one of the pod's containers reports.
    Probe(probe::Report),
}

/// Runs the kubelet until the process is stopped: starts what every worker
/// shares, then feeds the [`dispatch::Dispatcher`] from the pod watch and
/// the static pod files.
pub async fn run(client: Client, cfg: KubeletConfig) -> Result<(), KubeletError> {
    let shared = start(client.clone(), &cfg).await?;
    let workers: dispatch::Workers = Arc::default();
    tokio::spawn(dispatch::forward_task_events(
        Arc::clone(&shared.runtime),
        Arc::clone(&workers),
    ));

    // Pods that have containers here but no longer exist in the apiserver
    // (deleted while the agent was down) are cleaned up by a worker too.
    let pods: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={}", cfg.node_name);
    let initial = pods
        .list(&kube::api::ListParams::default().fields(&selector))
        .await
        .map_err(|e| KubeletError::Watch(e.to_string()))?;
    let mut live: std::collections::HashSet<String> = initial
        .items
        .iter()
        .filter(|p| !static_pods::is_mirror(p))
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    // Static pods run from their files, whatever the apiserver says.
    let (static_tx, mut static_rx) = mpsc::unbounded_channel();
    if let Some(dir) = cfg.static_pod_dir.clone() {
        let first = static_source::parse_all(&dir, &cfg.node_name);
        live.extend(first.values().filter_map(|p| p.metadata.uid.clone()));
        tokio::spawn(static_source::run(Arc::clone(&shared), dir, static_tx));
    } else {
        drop(static_tx);
    }
    worker::reap_orphans(&shared, &live).await;

    let mut stream = Box::pin(rudder_informer::events(
        pods,
        watcher::Config::default().fields(&selector),
        "kubelet pods",
    ));
    let mut dispatcher = dispatch::Dispatcher::new(shared, workers);
    let mut static_open = cfg.static_pod_dir.is_some();
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(ev) => dispatcher.on_watch(ev).await,
                None => break,
            },
            st = static_rx.recv(), if static_open => match st {
                Some(st) => dispatcher.on_static(st).await,
                None => static_open = false,
            },
        }
    }
    Err(KubeletError::Watch("the pod watch ended".into()))
}

/// Makes the directories, connects to containerd, registers the Node and
/// starts what runs beside the workers (the Event writer, the Service
/// watch, the Node's heartbeat, the kubelet API).
async fn start(client: Client, cfg: &KubeletConfig) -> Result<Arc<Shared>, KubeletError> {
    for dir in [&cfg.root_dir, &cfg.run_dir, &cfg.pod_log_dir] {
        std::fs::create_dir_all(dir).map_err(|source| KubeletError::Io {
            what: "creating",
            path: dir.clone(),
            source,
        })?;
    }
    let selinux = if cfg.selinux {
        if !selinux::enabled() {
            return Err(KubeletError::SelinuxOff);
        }
        let base = selinux::Base::load(std::path::Path::new("/etc/selinux"));
        tracing::info!(process = %base.process, file = %base.file, "labelling containers for SELinux");
        Some(selinux::NodeLabels::new(base, &cfg.root_dir.join("pods")))
    } else {
        None
    };
    let facts = node::facts(cfg);
    let cgroups = cgroups::PodCgroups::open(
        cfg.cgroup_driver,
        &cfg.cgroup_root,
        facts.allocatable_millicpu.into(),
    )
    .await?;
    tracing::info!(
        driver = ?cfg.cgroup_driver,
        kubepods = %cgroups.layout().dir(cgroups.layout().kubepods()),
        cgroup_v2 = cgroups.unified(),
        "pod cgroups"
    );
    let containerd = Containerd::connect(&cfg.containerd_socket, &cfg.containerd_namespace)
        .await?
        .with_systemd_cgroup(cfg.cgroup_driver == cgroups::Driver::Systemd);
    let version = containerd.version().await?;
    tracing::info!(node = %cfg.node_name, containerd = %version, "kubelet starting");
    let puller = Puller::new(
        containerd.clone(),
        cfg.registries.clone(),
        cfg.root_dir.join("downloads"),
    );
    let (event_queue, event_rx) = mpsc::channel(EVENT_QUEUE);
    let services = rudder_informer::Shared::new(rudder_informer::Reflector::new().with_index(
        BY_NAMESPACE,
        |s: &k8s_openapi::api::core::v1::Service| {
            vec![s.metadata.namespace.clone().unwrap_or_default()]
        },
    ));
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        client: client.clone(),
        runtime: Arc::new(containerd),
        puller,
        pull_locks: tokio::sync::Mutex::new(HashMap::new()),
        node_facts: tokio::sync::RwLock::new(facts),
        events: std::sync::Mutex::default(),
        event_queue,
        services,
        selinux,
        cgroups,
    });
    tokio::spawn(write_events(Arc::clone(&shared), event_rx));
    tokio::spawn(watch_services(client, shared.services.clone()));
    node::register(&shared, &version).await?;
    tokio::spawn(node::heartbeat(Arc::clone(&shared), version));
    let api = Arc::clone(&shared);
    tokio::spawn(async move {
        if let Err(e) = server::serve(api).await {
            tracing::error!(error = %e, "the kubelet API is not served");
        }
    });
    Ok(shared)
}

/// Records an Event about `pod` from this kubelet: queued, and written by
/// [`write_events`] off the pod's path, as client-go's recorder does (a
/// pod start no longer waits for three Event writes).
pub(crate) fn record_event(shared: &Shared, pod: &Pod, kind: &str, reason: &str, message: &str) {
    let kind = if kind == "Warning" {
        "Warning"
    } else {
        "Normal"
    };
    // Only what names the involved object travels with the event, not the
    // pod's spec and status.
    let involved = Pod {
        metadata: kube::api::ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let ev = PodEvent {
        pod: Box::new(involved),
        kind,
        reason: reason.to_string(),
        message: message.to_string(),
    };
    if let Err(mpsc::error::TrySendError::Full(ev)) = shared.event_queue.try_send(ev) {
        tracing::warn!(reason = %ev.reason, message = %ev.message, "event queue full, event dropped");
    }
}

/// Writes queued Events one after another.
async fn write_events(shared: Arc<Shared>, mut rx: mpsc::Receiver<PodEvent>) {
    while let Some(ev) = rx.recv().await {
        write_event(&shared, &ev.pod, ev.kind, &ev.reason, &ev.message).await;
    }
}

/// The index of the Services by namespace.
pub const BY_NAMESPACE: &str = "namespace";

/// Keeps `services` filled with the cluster's Services.
async fn watch_services(
    client: Client,
    services: rudder_informer::Shared<k8s_openapi::api::core::v1::Service>,
) {
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::all(client);
    let events = rudder_informer::events(api, watcher::Config::default(), "kubelet services");
    services.follow(events).await;
}

/// Writes one Event (created, or an existing one's count bumped).
async fn write_event(shared: &Shared, pod: &Pod, kind: &str, reason: &str, message: &str) {
    use rudder_k8s::events::{Decision, EventKey};
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let key = EventKey {
        source: format!("kubelet {}", shared.cfg.node_name),
        object: format!(
            "Pod/{ns}/{}/{}",
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.uid.as_deref().unwrap_or_default()
        ),
        type_: kind.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
    };
    let decision = shared
        .events
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .decide(key, now());
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(shared.client.clone(), &ns);
    let ts = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let key = match decision {
        Decision::Drop => return,
        Decision::Bump { key, name, count } => {
            let patch = serde_json::json!({"count": count, "lastTimestamp": ts});
            let bumped = api
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await;
            let mut events = shared
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if bumped.is_ok() {
                events.recorded(key, name, count);
                return;
            }
            // Gone (events expire): record it anew.
            events.forget(&key);
            key
        }
        Decision::Create { key } => key,
    };
    let name = format!(
        "{}.{:x}",
        pod.metadata.name.as_deref().unwrap_or("pod"),
        rand::random::<u64>()
    );
    let Ok(ev) = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod",
            "name": pod.metadata.name, "namespace": pod.metadata.namespace, "uid": pod.metadata.uid,
        },
        "reason": key.reason,
        "message": key.message,
        "type": kind,
        "source": {"component": "kubelet", "host": shared.cfg.node_name},
        "reportingComponent": "kubelet",
        "reportingInstance": shared.cfg.node_name,
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    })) else {
        return;
    };
    match api.create(&kube::api::PostParams::default(), &ev).await {
        Ok(_) => shared
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recorded(key, name, 1),
        Err(e) => tracing::debug!(error = %e, "recording an event"),
    }
}

/// Seconds since the epoch, now.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
