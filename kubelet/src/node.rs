//! The Node object: registration with capacity and allocatable from the
//! host, the Lease in `kube-node-lease` renewed every 10 s, and the status
//! (conditions true to the host, images present) posted every minute.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::Node,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use rudder_k8s::time::now_rfc3339;
use serde_json::json;

use super::{KubeletConfig, KubeletError, Shared, env::NodeFacts};

/// How often the Lease is renewed (lease duration 40 s × 0.25).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
pub const LEASE_DURATION_SECS: i32 = 40;
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// The host's cpu (millicores) and memory (bytes).
pub fn facts(cfg: &KubeletConfig) -> NodeFacts {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as i64;
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<i64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    NodeFacts {
        host_ip: cfg.node_ip.clone(),
        pod_ip: String::new(),
        allocatable_millicpu: cpus * 1000,
        allocatable_memory: mem,
    }
}

fn ephemeral_storage(cfg: &KubeletConfig) -> u64 {
    nix::sys::statvfs::statvfs(&cfg.root_dir)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0)
}

/// Memory pressure: `MemAvailable` under the `memory.available` threshold.
fn memory_pressure(cfg: &KubeletConfig) -> bool {
    let Some(t) = cfg.eviction_hard.memory_available else {
        return false;
    };
    let Ok(m) = std::fs::read_to_string("/proc/meminfo") else {
        return false;
    };
    let get = |k: &str| {
        m.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    match (get("MemAvailable:"), get("MemTotal:")) {
        (Some(avail), Some(total)) => t.crossed(avail, total),
        _ => false,
    }
}

/// Disk pressure: the kubelet's root filesystem under `nodefs.available`
/// (bytes an unprivileged writer gets) or `nodefs.inodesFree`.
fn disk_pressure(cfg: &KubeletConfig) -> bool {
    let Ok(s) = nix::sys::statvfs::statvfs(&cfg.root_dir) else {
        return false;
    };
    let frag = s.fragment_size();
    let bytes = cfg
        .eviction_hard
        .nodefs_available
        .is_some_and(|t| t.crossed(s.blocks_available() * frag, s.blocks() * frag));
    // Filesystems without inode accounting (btrfs) report 0 files.
    let inodes = s.files() > 0
        && cfg
            .eviction_hard
            .nodefs_inodes_free
            .is_some_and(|t| t.crossed(s.files_available(), s.files()));
    bytes || inodes
}

/// PID pressure: more than 90 % of the kernel's PID space in use (threads
/// count: `/proc/loadavg`'s total of scheduling entities).
fn pid_pressure() -> bool {
    let max: f64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(f64::MAX);
    let used: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok())
        .unwrap_or(0.0);
    used > 0.9 * max
}

/// Whether a CNI network configuration is in place for pods.
fn network_configured(cfg: &KubeletConfig) -> bool {
    std::fs::read_dir(&cfg.cni_conf_dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with(".conf") || n.ends_with(".conflist") || n.ends_with(".json")
        })
}

/// The node conditions' states (memory, disk, PID pressure; network
/// unavailable): a change is posted at once, not at the next minute.
fn condition_states(cfg: &KubeletConfig) -> [bool; 4] {
    [
        memory_pressure(cfg),
        disk_pressure(cfg),
        pid_pressure(),
        !network_configured(cfg),
    ]
}

/// The node's status as a JSON merge patch body.
async fn status(shared: &Shared, runtime_version: &str) -> serde_json::Value {
    let cfg = &shared.cfg;
    let facts = shared.node_facts.read().await.clone();
    let [mem_pressure, disk_pressure, pid_pressure, no_network] = condition_states(cfg);
    let now = now_rfc3339();
    let cond =
        |t: &str, bad: bool, reason_ok: &str, msg_ok: &str, reason_bad: &str, msg_bad: &str| {
            json!({
                "type": t,
                "status": if bad { "True" } else { "False" },
                "reason": if bad { reason_bad } else { reason_ok },
                "message": if bad { msg_bad } else { msg_ok },
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            })
        };
    let images = match shared.runtime.image_list().await {
        Ok(list) => list
            .into_iter()
            .map(|(name, target)| json!({"names": [name], "sizeBytes": target.size}))
            .collect::<Vec<_>>(),
        Err(_) => vec![],
    };
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into());
    let capacity = json!({
        "cpu": (facts.allocatable_millicpu / 1000).to_string(),
        "memory": format!("{}Ki", facts.allocatable_memory / 1024),
        "pods": cfg.max_pods.to_string(),
        "ephemeral-storage": format!("{}Ki", ephemeral_storage(cfg) / 1024),
    });
    json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": cfg.node_ip},
                {"type": "Hostname", "address": cfg.node_name},
            ],
            "conditions": [
                cond("MemoryPressure", mem_pressure, "KubeletHasSufficientMemory", "kubelet has sufficient memory available", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
                cond("DiskPressure", disk_pressure, "KubeletHasNoDiskPressure", "kubelet has no disk pressure", "KubeletHasDiskPressure", "kubelet has disk pressure"),
                cond("PIDPressure", pid_pressure, "KubeletHasSufficientPID", "kubelet has sufficient PID available", "KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
                cond("NetworkUnavailable", no_network, "CNIConfigured", "a CNI network configuration is in place", "NoNetworkConfigured", &format!("no CNI network configuration in {}", cfg.cni_conf_dir.display())),
                {
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                },
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.port}},
            "nodeInfo": {
                "machineID": std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim(),
                "systemUUID": "",
                "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim(),
                "kernelVersion": kernel,
                "osImage": os_image,
                "containerRuntimeVersion": format!("containerd://{runtime_version}"),
                "kubeletVersion": concat!("v1.33.0-rudder.", env!("CARGO_PKG_VERSION")),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
            },
            "images": images,
        }
    })
}

/// Creates the Node if it does not exist, then posts its status.
pub(crate) async fn register(shared: &Shared, runtime_version: &str) -> Result<(), KubeletError> {
    let cfg = &shared.cfg;
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let err = |source| KubeletError::Node {
        node: cfg.node_name.clone(),
        source,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let labels = [
        ("kubernetes.io/hostname", cfg.node_name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch),
    ];
    let node = Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %cfg.node_name, "registered the node"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(err(e)),
    }
    let body = status(shared, runtime_version).await;
    nodes
        .patch_status(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await
        .map_err(err)?;
    renew_lease(shared).await.map_err(err)?;
    Ok(())
}

async fn renew_lease(shared: &Shared) -> Result<(), kube::Error> {
    let cfg = &shared.cfg;
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(cfg.node_name.clone()),
            lease_duration_seconds: Some(LEASE_DURATION_SECS),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    match leases
        .patch(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&lease),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => leases
            .create(&PostParams::default(), &lease)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Renews the Lease every 10 s and posts the status every minute, or at
/// once when a condition changes, retrying with back-off (200 ms doubling
/// to 7 s) when the apiserver is away.
pub(crate) async fn heartbeat(shared: Arc<Shared>, runtime_version: String) {
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let mut last_status = std::time::Instant::now();
    // Unknown at first: the first round posts.
    let mut posted: Option<[bool; 4]> = None;
    loop {
        tokio::time::sleep(LEASE_RENEW).await;
        let mut delay = Duration::from_millis(200);
        for _ in 0..5 {
            match renew_lease(&shared).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the node lease");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(7));
                }
            }
        }
        let states = condition_states(&shared.cfg);
        if last_status.elapsed() >= STATUS_EVERY || posted != Some(states) {
            let body = status(&shared, &runtime_version).await;
            match nodes
                .patch_status(
                    &shared.cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&body),
                )
                .await
            {
                Ok(_) => {
                    last_status = std::time::Instant::now();
                    posted = Some(states);
                }
                Err(e) => tracing::warn!(error = %e, "posting the node status"),
            }
        }
    }
}
