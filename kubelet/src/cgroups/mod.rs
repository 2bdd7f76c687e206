//! Pod cgroups as the kubelet lays them out with `--cgroups-per-qos` (its
//! default, and the only layout here): `kubepods` under `--cgroup-root`
//! (the node-allocatable parent), one tier below it for Burstable and one
//! for BestEffort pods (Guaranteed pods sit in `kubepods` itself), then one
//! cgroup per pod, `pod<uid>`, holding the pod's containers.
//!
//! Two drivers, as the kubelet's `--cgroup-driver`:
//! - `cgroupfs` ([`fs`]) writes the hierarchy itself, on cgroup v1 (one
//!   directory per controller) or v2, and hands runc a path per container;
//! - `systemd` ([`systemd`]) asks systemd for the slices over D-Bus
//!   (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`,
//!   the uid's dashes made underscores) and hands runc
//!   `<pod slice>:cri-containerd:<id>`, so that runc's systemd driver makes
//!   each container a scope of the pod's slice, as containerd's CRI plugin
//!   has it on CentOS/RHEL nodes. The runtime is told to use runc's systemd
//!   cgroups at the same time (`rudder_runtime`'s `systemd_cgroup`), so the
//!   two can never disagree, the misconfiguration kubeadm users meet most.
//!
//! What a pod's cgroup is given is the kubelet's `ResourceConfigForPod`,
//! computed pure in [`pod_resources`]: cpu shares from the requests (2 for
//! BestEffort), a CFS quota when every container has a cpu limit, a memory
//! limit when every container has one, and the pod overhead within both.
//! The Burstable tier's shares follow the sum of its pods' cpu requests
//! (the kubelet's QoS container manager); BestEffort's are 2.

pub mod fs;
pub mod systemd;

use std::{collections::BTreeMap, sync::Mutex};

use k8s_openapi::api::core::v1::PodSpec;
use rudder_k8s::qos::QosClass;

/// The kubelet's `--cgroup-driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    #[default]
    Cgroupfs,
    Systemd,
}

/// Why a pod's cgroup could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("pod uid {0:?} cannot name a cgroup (letters, digits and '-' only, at most 64)")]
    BadUid(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--cgroup-driver systemd: systemd is not this node's init (no /run/systemd/system); \
         run with --cgroup-driver cgroupfs, as the node's container runtime must too"
    )]
    NoSystemd,
    #[error("systemd: {0}")]
    Systemd(String),
}

/// A cgroup's name as the kubelet's `CgroupName`: its components from the
/// root, independent of the driver that spells it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupName(Vec<String>);

/// systemd's unit suffix for the slices the systemd driver names.
const SLICE: &str = ".slice";

impl CgroupName {
    /// The name of a cgroupfs path (`/a/b` → `[a, b]`).
    pub fn parse_cgroupfs(path: &str) -> Self {
        Self(
            path.split('/')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// This name with one more component.
    pub fn child(&self, component: &str) -> Self {
        let mut v = self.0.clone();
        v.push(component.to_owned());
        Self(v)
    }

    /// The path the cgroupfs driver uses: `/a/b`.
    pub fn to_cgroupfs(&self) -> String {
        format!("/{}", self.0.join("/"))
    }

    /// The slice unit the systemd driver makes of the name: the components
    /// with `-` escaped to `_`, joined by `-` (`kubepods-burstable.slice`);
    /// the root is `-.slice`.
    pub fn to_systemd_unit(&self) -> String {
        if self.0.is_empty() {
            return format!("-{SLICE}");
        }
        let parts: Vec<String> = self.0.iter().map(|c| c.replace('-', "_")).collect();
        format!("{}{SLICE}", parts.join("-"))
    }

    /// The cgroup path systemd gives that slice, each ancestor a slice of
    /// its own (runc's `ExpandSlice`):
    /// `/kubepods.slice/kubepods-burstable.slice`.
    pub fn to_systemd(&self) -> String {
        if self.0.is_empty() {
            return "/".into();
        }
        let mut path = String::new();
        let mut prefix = String::new();
        for c in &self.0 {
            let c = c.replace('-', "_");
            path.push('/');
            path.push_str(&prefix);
            path.push_str(&c);
            path.push_str(SLICE);
            prefix.push_str(&c);
            prefix.push('-');
        }
        path
    }

    /// The slice unit of the parent (`-.slice` for a top-level name).
    pub fn parent_unit(&self) -> String {
        let mut parent = self.clone();
        parent.0.pop();
        parent.to_systemd_unit()
    }
}

/// containerd's CRI plugin's prefix of a container's scope.
pub const SCOPE_PREFIX: &str = "cri-containerd";

/// Where pods go under one driver and cgroup root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub driver: Driver,
    kubepods: CgroupName,
}

impl Layout {
    /// `cgroup_root` is the kubelet's `--cgroup-root` (cgroupfs spelling,
    /// `/` by default), under which `kubepods` goes.
    pub fn new(driver: Driver, cgroup_root: &str) -> Self {
        Self {
            driver,
            kubepods: CgroupName::parse_cgroupfs(cgroup_root).child("kubepods"),
        }
    }

    /// `kubepods`, the parent of every pod.
    pub fn kubepods(&self) -> &CgroupName {
        &self.kubepods
    }

    /// The tier pods of a class sit in.
    pub fn tier(&self, qos: QosClass) -> CgroupName {
        match qos {
            QosClass::Guaranteed => self.kubepods.clone(),
            QosClass::Burstable => self.kubepods.child("burstable"),
            QosClass::BestEffort => self.kubepods.child("besteffort"),
        }
    }

    /// The pod's cgroup; its uid checked to be one a cgroup can be named by.
    pub fn pod(&self, qos: QosClass, uid: &str) -> Result<CgroupName, CgroupError> {
        let ok = !uid.is_empty()
            && uid.len() <= 64
            && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(CgroupError::BadUid(uid.to_owned()));
        }
        Ok(self.tier(qos).child(&format!("pod{uid}")))
    }

    /// The pod's cgroup under each class, for callers that know only the
    /// uid (clean-up of pods gone while the agent was away, usage).
    pub fn pod_candidates(&self, uid: &str) -> Vec<CgroupName> {
        [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ]
        .into_iter()
        .filter_map(|q| self.pod(q, uid).ok())
        .collect()
    }

    /// The cgroup's path relative to the root of a hierarchy.
    pub fn dir(&self, name: &CgroupName) -> String {
        match self.driver {
            Driver::Cgroupfs => name.to_cgroupfs(),
            Driver::Systemd => name.to_systemd(),
        }
    }

    /// The OCI `linux.cgroupsPath` of a container of the pod: a path for
    /// cgroupfs; `slice:prefix:id` for runc's systemd driver, as
    /// containerd's CRI plugin writes it.
    pub fn container_cgroups_path(&self, pod: &CgroupName, id: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("{}/{id}", pod.to_cgroupfs()),
            Driver::Systemd => format!("{}:{SCOPE_PREFIX}:{id}", pod.to_systemd_unit()),
        }
    }

    /// The container's cgroup directory relative to a hierarchy's root.
    pub fn container_dir(&self, pod: &CgroupName, id: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("{}/{id}", pod.to_cgroupfs()),
            Driver::Systemd => format!("{}/{SCOPE_PREFIX}-{id}.scope", pod.to_systemd()),
        }
    }
}

/// The CFS period the kubelet uses (`--cpu-cfs-quota-period`'s default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel's bounds on cpu shares.
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
/// The smallest quota the kubelet sets (1 ms).
const MIN_QUOTA_US: i64 = 1_000;

/// What a cgroup is given, as the kubelet's `ResourceConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpu_shares: u64,
    /// CFS quota per [`CPU_PERIOD_US`]; `None` is unlimited.
    pub cpu_quota_us: Option<i64>,
    /// Bytes; `None` is unlimited.
    pub memory_limit: Option<i64>,
}

impl Resources {
    /// Shares alone, nothing capped.
    pub fn shares(cpu_shares: u64) -> Self {
        Self {
            cpu_shares,
            cpu_quota_us: None,
            memory_limit: None,
        }
    }
}

/// The kubelet's `MilliCPUToShares`.
pub fn milli_cpu_to_shares(milli: i128) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    let shares = milli.saturating_mul(1024) / 1000;
    u64::try_from(shares.clamp(i128::from(MIN_SHARES), i128::from(MAX_SHARES)))
        .unwrap_or(MAX_SHARES)
}

/// The kubelet's `MilliCPUToQuota` over `period_us`.
pub fn milli_cpu_to_quota(milli: i128, period_us: u64) -> i64 {
    if milli <= 0 {
        return 0;
    }
    let quota = milli.saturating_mul(i128::from(period_us)) / 1000;
    i64::try_from(quota.max(i128::from(MIN_QUOTA_US))).unwrap_or(i64::MAX)
}

/// cgroup v2's `cpu.weight` for v1 shares (runc's
/// `ConvertCPUSharesToCgroupV2Value`, the kubelet's before 1.31).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// The kubelet's `ResourceConfigForPod` (CFS quota enforced, the default).
pub fn pod_resources(spec: &PodSpec) -> Resources {
    let qos = rudder_k8s::qos::pod_qos(spec);
    if qos == QosClass::BestEffort {
        return Resources::shares(MIN_SHARES);
    }
    let requests = rudder_k8s::resources::pod_requests(spec);
    let limits = rudder_k8s::resources::pod_limits(spec);
    // A limit counts only if every container, init containers too, has one.
    let declared = |name: &str| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .all(|c| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.limits.as_ref())
                    .and_then(|l| l.get(name))
                    .and_then(|q| rudder_k8s::quantity::parse_milli(q.0.trim()).ok())
                    .is_some_and(|m| m > 0)
            })
    };
    let cpu_request = requests.get("cpu").copied().unwrap_or(0);
    let cpu_limit = limits.get("cpu").copied().unwrap_or(0);
    // Quantities are counted in thousandths: bytes rounded up, as Value().
    let memory_limit = limits
        .get("memory")
        .map(|m| i64::try_from((m + 999) / 1000).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let guaranteed = qos == QosClass::Guaranteed;
    Resources {
        cpu_shares: milli_cpu_to_shares(cpu_request),
        cpu_quota_us: (guaranteed || declared("cpu"))
            .then(|| milli_cpu_to_quota(cpu_limit, CPU_PERIOD_US))
            .filter(|q| *q > 0),
        memory_limit: (guaranteed || declared("memory"))
            .then_some(memory_limit)
            .filter(|m| *m > 0),
    }
}

/// Where cgroups are written: the cgroup file system or systemd.
#[derive(Debug)]
enum Backend {
    Fs,
    Systemd(systemd::Systemd),
}

/// The node's pod cgroups: the layout, the driver behind it, and the cpu
/// requests of the Burstable pods that the tier's shares follow.
#[derive(Debug)]
pub struct PodCgroups {
    layout: Layout,
    /// The node's cgroup mount, detected once.
    hierarchy: fs::Hierarchy,
    backend: Backend,
    burstable: Mutex<BTreeMap<String, i128>>,
}

impl PodCgroups {
    /// Opens the driver and makes `kubepods` and its tiers; `node_milli_cpu`
    /// is the node's cpu, whose shares `kubepods` gets.
    pub async fn open(
        driver: Driver,
        cgroup_root: &str,
        node_milli_cpu: i128,
    ) -> Result<Self, CgroupError> {
        let layout = Layout::new(driver, cgroup_root);
        let backend = match driver {
            Driver::Cgroupfs => Backend::Fs,
            Driver::Systemd => Backend::Systemd(systemd::Systemd::connect().await?),
        };
        let this = Self {
            layout,
            hierarchy: fs::Hierarchy::detect(),
            backend,
            burstable: Mutex::default(),
        };
        let kubepods = this.layout.kubepods().clone();
        this.apply(
            &kubepods,
            &Resources::shares(milli_cpu_to_shares(node_milli_cpu)),
        )
        .await?;
        for (qos, shares) in [
            (QosClass::Burstable, MIN_SHARES),
            (QosClass::BestEffort, MIN_SHARES),
        ] {
            this.apply(&this.layout.tier(qos), &Resources::shares(shares))
                .await?;
        }
        Ok(this)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether the hierarchy is cgroup v2 (unified).
    pub fn unified(&self) -> bool {
        self.hierarchy.unified
    }

    async fn apply(&self, name: &CgroupName, res: &Resources) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::Fs => self.hierarchy.ensure(&self.layout.dir(name), res),
            Backend::Systemd(s) => s.ensure_slice(name, res).await,
        }
    }

    /// Makes (or updates) the pod's cgroup with what its spec asks for,
    /// and the Burstable tier's shares with it; the pod's cgroup.
    pub async fn ensure_pod(&self, uid: &str, spec: &PodSpec) -> Result<CgroupName, CgroupError> {
        let qos = rudder_k8s::qos::pod_qos(spec);
        let name = self.layout.pod(qos, uid)?;
        if qos == QosClass::Burstable {
            // The tier is written only when its sum changed (a pod new to
            // it), not at each of a pod's container starts.
            let changed = {
                let mut b = self
                    .burstable
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let req = rudder_k8s::resources::pod_requests(spec);
                let cpu = req.get("cpu").copied().unwrap_or(0);
                (b.insert(uid.to_owned(), cpu) != Some(cpu))
                    .then(|| milli_cpu_to_shares(b.values().sum()))
            };
            if let Some(shares) = changed
                && let Err(e) = self
                    .apply(&self.layout.tier(qos), &Resources::shares(shares))
                    .await
            {
                // Not recorded, so the next start writes the tier again.
                self.burstable
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(uid);
                return Err(e);
            }
        }
        self.apply(&name, &pod_resources(spec)).await?;
        Ok(name)
    }

    /// Removes the pod's cgroup (under whichever tier it is) once its
    /// containers are gone.
    pub async fn remove_pod(&self, uid: &str) {
        let was_burstable = self
            .burstable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid)
            .is_some();
        for name in self.layout.pod_candidates(uid) {
            match &self.backend {
                Backend::Fs => self.hierarchy.remove(&self.layout.dir(&name)),
                Backend::Systemd(s) => s.stop_slice(&name).await,
            }
        }
        if was_burstable {
            let shares = milli_cpu_to_shares(
                self.burstable
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .values()
                    .sum(),
            );
            let tier = self.layout.tier(QosClass::Burstable);
            if let Err(e) = self.apply(&tier, &Resources::shares(shares)).await {
                tracing::warn!(error = %e, "updating the burstable tier's cpu shares");
            }
        }
    }

    /// The directory of a container of a pod known only by uid: the first
    /// that exists under any tier, relative to a hierarchy's root.
    pub fn find_container_dir(&self, uid: &str, id: &str) -> Option<String> {
        self.layout
            .pod_candidates(uid)
            .iter()
            .map(|p| self.layout.container_dir(p, id))
            .find(|d| self.hierarchy.exists(d))
    }
}

#[cfg(test)]
mod tests;
