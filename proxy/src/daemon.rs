//! `rudder agent proxy`: watches Services and EndpointSlices (any
//! Kubernetes apiserver), keeps the eBPF Service dataplane's maps equal to
//! them, attaches the datapath to every pod interface on the node's pod
//! bridges, and serves its metrics.
//!
//! State lives in the pinned maps, not in this process: at start the
//! translator adopts what the maps hold, and nothing is changed until both
//! watches have listed everything, so a restarted proxy never drops a
//! service it has not yet seen again.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{Api, Client, runtime::watcher};
use rudder_netlink::Netlink;
use tokio::sync::oneshot;
use tracing::{info, warn};

pub use rudder_host::{Rescan, RescanRx};

mod netfilter_mode;
mod nodes;
mod state;
use state::Loop;

use super::{
    Translator,
    cache::{Cache, Key},
    desired,
    metrics::{self, Snapshot},
    program::{Batch, Programmer},
};
use rudder_dataplane::{
    BpfError,
    service::{Acceleration, DatapathReader, ServiceDataplane},
    tc::AttachMode,
};

/// Where the maps and links are pinned by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/rudder/service";
/// The address hairpin flows (a pod reaching itself through a Service) are
/// masqueraded as: link-local, used by nothing else.
pub const DEFAULT_HAIRPIN_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 42, 1);

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub node_name: String,
    /// bpffs directory of the maps and pinned links.
    pub pin_dir: PathBuf,
    /// Pod interfaces are the veths enslaved to these bridges.
    pub bridges: Vec<String>,
    pub hairpin_addr: Ipv4Addr,
    /// `/metrics` and `/healthz` over plain HTTP (kube-proxy's port is 10249).
    pub metrics_addr: Option<SocketAddr>,
    /// kube-proxy's health server ([`super::health`]; its port is 10256).
    pub healthz_addr: Option<SocketAddr>,
    pub attach: AttachMode,
    /// How often pod interfaces are looked for (besides [`Rescan::now`]).
    pub link_interval: Duration,
    /// The cgroup v2 directory whose processes (in the agent's network
    /// namespace) reach Services through the socket hooks; `None`: the
    /// cgroup2 mount's root, the whole node. Disabled when `host_services`
    /// is false.
    pub node_cgroup: Option<PathBuf>,
    pub host_services: bool,
    /// The node's primary address: the source NAT address for external
    /// traffic to externalIPs and LoadBalancer IPs (default: the address of
    /// the default route's interface).
    pub node_ip: Option<Ipv4Addr>,
    /// The node's interfaces that get `from_netdev` (NodePorts etc. from
    /// outside); `None`: every interface with an IPv4 address and every
    /// VXLAN device, except loopback and the pod bridges.
    pub node_interfaces: Option<Vec<String>>,
    /// NodePort acceleration at XDP on `node_interfaces` (see
    /// [`crate::accelerate`]).
    pub acceleration: Acceleration,
    /// Which of the node's addresses serve NodePorts (kube-proxy's
    /// `--nodeport-addresses`).
    pub nodeport_addresses: NodePortAddresses,
    /// The apiserver's `--service-node-port-range`: node ports outside it
    /// are not served (they would take ports of the node's own daemons).
    pub node_ports: std::ops::RangeInclusive<u16>,
    /// How Services are served: eBPF, iptables rules, or eBPF where its
    /// programs load and iptables otherwise.
    pub mode: ProxyMode,
    /// The pods' addresses (the network's cluster CIDR): in the iptables
    /// mode, traffic to a ClusterIP from outside them is masqueraded.
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
}

/// kube-proxy's `--proxy-mode`, with the eBPF dataplane as the first
/// choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// The eBPF dataplane where its programs load; else nftables rules
    /// where the node can run kube-proxy's nftables mode
    /// ([`crate::nftables::probe`]); else iptables rules (with the iptables
    /// binary the node uses); said in the log.
    #[default]
    Auto,
    /// The eBPF dataplane; refuse to start without it.
    Ebpf,
    /// The `ip rudder-proxy` nftables table.
    Nftables,
    /// iptables rules with this binary (`iptables`, `iptables-legacy`,
    /// `iptables-nft`).
    Iptables(String),
}

/// kube-proxy's `--nodeport-addresses`: which node addresses NodePorts
/// answer on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every address of the node (kube-proxy's iptables default).
    #[default]
    All,
    /// The node's primary address only (`primary`; kube-proxy's nftables
    /// default).
    Primary,
    /// The addresses within these CIDRs.
    Cidrs(Vec<rudder_cni::net::Ipv4Net>),
}

impl NodePortAddresses {
    /// The addresses of `all` that serve NodePorts.
    pub fn select(
        &self,
        all: &BTreeSet<Ipv4Addr>,
        primary: Option<Ipv4Addr>,
    ) -> BTreeSet<Ipv4Addr> {
        match self {
            Self::All => all.clone(),
            Self::Primary => primary.into_iter().filter(|p| all.contains(p)).collect(),
            Self::Cidrs(cidrs) => all
                .iter()
                .copied()
                .filter(|a| cidrs.iter().any(|c| c.contains(*a)))
                .collect(),
        }
    }
}

impl ProxyConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            pin_dir: DEFAULT_PIN_DIR.into(),
            bridges: vec!["cni0".into()],
            hairpin_addr: DEFAULT_HAIRPIN_ADDR,
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 10249))),
            healthz_addr: Some(SocketAddr::from(([0, 0, 0, 0], 10256))),
            attach: AttachMode::Auto,
            link_interval: Duration::from_secs(1),
            node_cgroup: None,
            host_services: true,
            node_ip: None,
            node_interfaces: None,
            acceleration: Acceleration::Disabled,
            nodeport_addresses: NodePortAddresses::All,
            node_ports: desired::DEFAULT_NODE_PORTS,
            mode: ProxyMode::Auto,
            cluster_cidr: None,
        }
    }
}

/// Why the proxy stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "the eBPF Service dataplane cannot run on this kernel: {0} \
         (it needs kernel 5.3 or later, or a vendor kernel with the same BPF features; \
         `rudder agent preflight` names the check that fails)"
    )]
    Load(#[source] BpfError),
    #[error("pin directory {}: {source}", .path.display())]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting {what} in the BPF maps: {source}")]
    Apply {
        what: String,
        #[source]
        source: BpfError,
    },
    #[error("netlink: {0}")]
    Netlink(#[from] rudder_netlink::NetlinkError),
    #[error("metrics or health listener {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

/// Shared with the metrics endpoint.
#[derive(Default)]
struct Stats {
    snapshot: Snapshot,
    synced: bool,
    kube: metrics::KubeProxy,
}

impl Stats {
    /// A sync that reached the maps: `took` long, `failed` batches, the
    /// changes it programmed triggered at `triggers`.
    fn record_sync(
        &mut self,
        took: Duration,
        failed: usize,
        program: &Programmer,
        reports: &Reports,
        triggers: impl Iterator<Item = std::time::SystemTime>,
    ) {
        self.synced = true;
        let now = std::time::SystemTime::now();
        self.kube.synced(took, now);
        for t in triggers {
            if let Ok(d) = now.duration_since(t) {
                self.kube.network_programming.observe(d.as_secs_f64());
            }
        }
        let s = &mut self.snapshot;
        s.syncs += 1;
        s.sync_total += took;
        s.last_sync = took;
        s.apply_failures += failed as u64;
        s.failing = program.failing();
        s.refused = reports.refused();
        s.conflicts = reports.conflicts();
    }
}

enum Input {
    Service(Box<watcher::Event<Service>>),
    Node(Box<watcher::Event<Node>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Rescan(oneshot::Sender<()>),
    Tick,
}

/// Runs the proxy until a watch ends for good.
pub async fn run(client: Client, cfg: ProxyConfig, rescan: RescanRx) -> Result<(), ProxyError> {
    match &cfg.mode {
        ProxyMode::Iptables(bin) => {
            let backend = netfilter_mode::Backend::Iptables(bin.clone());
            return netfilter_mode::run(client, cfg, rescan, backend).await;
        }
        ProxyMode::Nftables => {
            return netfilter_mode::run(client, cfg, rescan, netfilter_mode::Backend::Nftables)
                .await;
        }
        ProxyMode::Auto | ProxyMode::Ebpf => {}
    }
    let dp = match load(&cfg) {
        Ok(dp) => dp,
        // No bpffs (kernels before 4.4) or programs the verifier refuses.
        Err(e @ (ProxyError::Load(_) | ProxyError::PinDir { .. }))
            if cfg.mode == ProxyMode::Auto =>
        {
            let backend = match crate::nftables::probe() {
                Ok(()) => {
                    warn!(
                        error = %e,
                        "the eBPF Service dataplane cannot load on this node: serving Services with nftables rules (--proxy-mode nftables)"
                    );
                    netfilter_mode::Backend::Nftables
                }
                Err(why) => {
                    warn!(
                        error = %e,
                        nftables = %why,
                        "the eBPF Service dataplane cannot load on this node, nor the nftables mode run: serving Services with iptables rules (--proxy-mode iptables)"
                    );
                    netfilter_mode::Backend::Iptables("iptables".into())
                }
            };
            return netfilter_mode::run(client, cfg, rescan, backend).await;
        }
        Err(e) => return Err(e),
    };
    run_ebpf(client, cfg, rescan, dp).await
}

/// The eBPF dataplane, loaded (or adopted from its pins) with the hairpin
/// address set.
fn load(cfg: &ProxyConfig) -> Result<ServiceDataplane, ProxyError> {
    rudder_dataplane::ensure_bpffs(&cfg.pin_dir).map_err(|source| ProxyError::PinDir {
        path: rudder_dataplane::BPFFS.into(),
        source,
    })?;
    std::fs::create_dir_all(&cfg.pin_dir).map_err(|source| ProxyError::PinDir {
        path: cfg.pin_dir.clone(),
        source,
    })?;
    let mut dp = ServiceDataplane::load(&cfg.pin_dir).map_err(ProxyError::Load)?;
    dp.set_hairpin_addr(cfg.hairpin_addr)
        .map_err(|source| ProxyError::Apply {
            what: "the hairpin address".into(),
            source,
        })?;
    Ok(dp)
}

/// The eBPF mode's loop.
async fn run_ebpf(
    client: Client,
    cfg: ProxyConfig,
    rescan: RescanRx,
    mut dp: ServiceDataplane,
) -> Result<(), ProxyError> {
    let program = Programmer::new(adopted(&dp));
    let (adopted_services, adopted_backends) = program.translator.sizes();
    info!(
        services = adopted_services,
        backends = adopted_backends,
        pin_dir = %cfg.pin_dir.display(),
        "service dataplane loaded"
    );
    if cfg.host_services {
        attach_node(&mut dp, &cfg);
    }
    let nl = Netlink::new()?;
    let mut links = Links::default();
    links.scan(&nl, &mut dp, &cfg).await;

    let stats = Arc::new(Mutex::new(Stats::default()));
    lock(&stats).snapshot.mode = "ebpf";
    let health = Arc::new(Mutex::new(super::health::Health::default()));
    let _servers = serve_http(&cfg, &dp, &stats, &health).await?;
    let mut inputs = inputs(client.clone(), &cfg, rescan, true);
    let kube = lock(&stats).kube.clone();
    let mut state = Loop {
        service_health: super::service_health::ServiceHealth::new(Arc::clone(&health)),
        kube,
        reports: Reports::new(client),
        cache: Cache::default(),
        dirty: HashSet::new(),
        nodes: nodes::NodeAddrs::default(),
        nodes_dirty: false,
        services_listed: false,
        slices_listed: false,
        synced: false,
        dirty_since: None,
        waiting: vec![],
        triggers: Vec::new(),
        dp,
        program,
        nl,
        links,
        stats,
        health,
        cfg,
    };
    while let Some(input) = inputs.next().await {
        let mut tick = state.take(input);
        // Take whatever else is ready, so a burst of events is one sync.
        while let Some(Some(more)) = futures_util::FutureExt::now_or_never(inputs.next()) {
            tick |= state.take(more);
        }
        state.step(tick).await;
    }
    // The watch streams retry with back-off and never end by themselves.
    Err(ProxyError::WatchEnded("service"))
}

/// The proxy's inputs as one stream: the Service, Node and EndpointSlice
/// watches, the kubelet's rescan requests and the link-scan ticks. The
/// eBPF datapath (`all_nodes`) needs every node's addresses; the netfilter
/// rules only this node's object.
fn inputs(
    client: Client,
    cfg: &ProxyConfig,
    rescan: RescanRx,
    all_nodes: bool,
) -> futures_util::stream::SelectAll<futures_util::stream::BoxStream<'static, Input>> {
    let services = rudder_informer::events(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        "services",
    )
    .map(|e| Input::Service(Box::new(e)));
    // eBPF: every node (this one's for the health check, all of their
    // addresses for direct server return's options); else this one only.
    let nodes = if all_nodes {
        watcher::Config::default()
    } else {
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name))
    };
    let node = rudder_informer::events(Api::<Node>::all(client.clone()), nodes, "nodes")
        .map(|e| Input::Node(Box::new(e)));
    let slices = rudder_informer::events(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
        "endpointslices",
    )
    .map(|e| Input::Slice(Box::new(e)));
    let rescans = futures_util::stream::unfold(rescan, |rx| async move {
        let t = rx.recv().await;
        t.map(|t| (Input::Rescan(t), rx))
    });
    let ticks =
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(cfg.link_interval))
            .map(|_| Input::Tick);
    futures_util::stream::select_all([
        services.boxed(),
        node.boxed(),
        slices.boxed(),
        rescans.boxed(),
        ticks.boxed(),
    ])
}

/// A mutex's contents, even after a panic elsewhere poisoned it (the
/// metrics and health state stay readable).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Socket-level translation for the node's own processes. A kernel or
/// layout without it leaves pods' Service traffic working: say so clearly
/// and go on.
fn attach_node(dp: &mut ServiceDataplane, cfg: &ProxyConfig) {
    let Some(cgroup) = cfg.node_cgroup.clone().or_else(cgroup2_mount) else {
        warn!(
            "no cgroup2 file system is mounted: Services are reachable from pods but not from \
             this node's own processes (mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`)"
        );
        return;
    };
    match dp.attach_node_cgroup(&cgroup) {
        Ok(hooks) => {
            info!(cgroup = %cgroup.display(), ?hooks, "Services reachable from this node's processes");
        }
        Err(e) => warn!(
            cgroup = %cgroup.display(),
            error = %rudder_dataplane::tc::error_chain(&e),
            "Services are reachable from pods but not from this node's own processes: the cgroup \
             socket hooks need kernel 5.7 (bpf_get_netns_cookie) and SO_NETNS_COOKIE (5.14)"
        ),
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones such as CentOS 8), if anywhere.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(point))
    })
}

/// A translator that believes what the maps hold.
fn adopted(dp: &ServiceDataplane) -> Translator {
    let i = dp.installed();
    Translator::adopt(&i.services, &i.slots, &i.backends)
}

/// Applies the batches one by one: a batch that fails is logged, counted
/// and retried alone later (the translator adopts the maps again, since it
/// may have been cut short); the others go on. Returns the operations
/// applied and the batches that failed.
fn apply(
    dp: &mut ServiceDataplane,
    program: &mut Programmer,
    batches: Vec<Batch>,
    reports: &mut Reports,
) -> (usize, usize) {
    let (mut ops, mut failed) = (0, 0);
    for b in batches {
        reports.note(&b);
        match dp.apply(&b.ops) {
            Ok(()) => {
                ops += b.ops.len();
                program.applied(&b.key);
            }
            Err(e) => {
                failed += 1;
                warn!(
                    service = %format!("{}/{}", b.key.0, b.key.1),
                    ops = b.ops.len(),
                    error = %e,
                    "programming a Service failed; it is retried alone, the others go on"
                );
                program.failed(&b.key, adopted(dp), Instant::now());
            }
        }
    }
    (ops, failed)
}

/// Front ends the proxy does not program, said once each: in the log, as
/// a Warning event on the Service, in the metrics.
struct Reports {
    client: Client,
    /// What is currently said, per Service: refusals (capacity) and
    /// conflicts (another Service owns the front end).
    refused: HashMap<Key, BTreeSet<String>>,
    conflicts: HashMap<Key, BTreeSet<String>>,
}

impl Reports {
    fn new(client: Client) -> Self {
        Self {
            client,
            refused: HashMap::new(),
            conflicts: HashMap::new(),
        }
    }

    fn note(&mut self, b: &Batch) {
        let mut refused: HashMap<Key, BTreeSet<String>> = HashMap::new();
        refused.insert(b.key.clone(), BTreeSet::new());
        for (owner, r) in &b.refused {
            refused
                .entry(owner.clone())
                .or_default()
                .insert(r.to_string());
        }
        let conflicts = b.conflicts.iter().map(|(k, list)| {
            let said = list
                .iter()
                .map(|(f, owner)| {
                    format!(
                        "front end {}:{}/{:?} is owned by Service {}/{}: not programmed for this one",
                        f.addr, f.port, f.proto, owner.0, owner.1
                    )
                })
                .collect();
            (k.clone(), said)
        });
        for (key, now) in refused {
            self.say(&key, now, false);
        }
        for (key, now) in conflicts.collect::<Vec<_>>() {
            self.say(&key, now, true);
        }
    }

    /// Replaces what is said about `key`, reporting what is new.
    fn say(&mut self, key: &Key, now: BTreeSet<String>, conflict: bool) {
        let table = if conflict {
            &mut self.conflicts
        } else {
            &mut self.refused
        };
        let before = table.remove(key).unwrap_or_default();
        for m in now.difference(&before) {
            warn!(service = %format!("{}/{}", key.0, key.1), "{m}");
            tokio::spawn(service_event(self.client.clone(), key.clone(), m.clone()));
        }
        if !now.is_empty() {
            table.insert(key.clone(), now);
        }
    }

    fn refused(&self) -> usize {
        self.refused.values().map(BTreeSet::len).sum()
    }

    fn conflicts(&self) -> usize {
        self.conflicts.values().map(BTreeSet::len).sum()
    }
}

/// A Warning event on a Service from this node's proxy.
async fn service_event(client: Client, (ns, name): Key, message: String) {
    let ts = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let ev = serde_json::json!({
        "metadata": {"name": format!("{name}.{:x}", rand::random::<u64>()), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Service", "name": name, "namespace": ns},
        "reason": "FrontendNotProgrammed",
        "message": message,
        "type": "Warning",
        "source": {"component": "rudder-proxy"},
        "reportingComponent": "rudder-proxy",
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
    });
    let Ok(ev) = serde_json::from_value::<k8s_openapi::api::core::v1::Event>(ev) else {
        return;
    };
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, &ns);
    if let Err(e) = api.create(&kube::api::PostParams::default(), &ev).await {
        tracing::debug!(error = %e, "recording a Service event");
    }
}

/// Interfaces the datapath is attached to, by (name, ifindex), and the
/// node addresses last written.
#[derive(Default)]
struct Links {
    attached: BTreeSet<(String, u32)>,
    /// Interfaces an attach failed on: not retried (logged once).
    failed: BTreeSet<(String, u32)>,
    addrs: BTreeSet<Ipv4Addr>,
    primary: Option<Ipv4Addr>,
}

impl Links {
    /// Attaches to new pod and node interfaces, forgets (and unpins) gone
    /// ones, and keeps the node's addresses current.
    async fn scan(&mut self, nl: &Netlink, dp: &mut ServiceDataplane, cfg: &ProxyConfig) {
        let all = match nl.links().await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "listing links");
                return;
            }
        };
        let pods = pod_interfaces(&all, &cfg.bridges);
        // Addresses of every interface but the pods' veths (which have none).
        let mut with_addrs: Vec<(rudder_netlink::Link, Vec<Ipv4Addr>)> = vec![];
        for l in all
            .iter()
            .filter(|l| l.kind.as_deref() != Some("veth") || l.master.is_none())
        {
            let a = nl.addresses(l.index).await.unwrap_or_default();
            with_addrs.push((l.clone(), a.into_iter().map(|(ip, _)| ip).collect()));
        }
        let node_ifaces =
            node_interfaces(&with_addrs, &cfg.bridges, cfg.node_interfaces.as_deref());
        let addrs: BTreeSet<Ipv4Addr> = with_addrs
            .iter()
            .flat_map(|(_, a)| a.iter().copied())
            .collect();
        let primary = match cfg.node_ip {
            Some(ip) => Some(ip),
            None => {
                let defaults = nl.default_route_link().await.unwrap_or_default();
                with_addrs
                    .iter()
                    .filter(|(l, _)| defaults.contains(&l.index))
                    .find_map(|(_, a)| a.first().copied())
            }
        };
        let addrs = cfg.nodeport_addresses.select(&addrs, primary);
        if addrs != self.addrs || primary != self.primary {
            match dp.set_node_addrs(&addrs, primary) {
                Ok(_) => {
                    info!(addrs = ?addrs, primary = ?primary, "node addresses for NodePorts");
                    self.addrs = addrs;
                    self.primary = primary;
                }
                Err(e) => warn!(error = %e, "writing the node addresses"),
            }
        }
        for (name, index) in pods.iter().chain(node_ifaces.iter()) {
            if self.attached.contains(&(name.clone(), *index))
                || self.failed.contains(&(name.clone(), *index))
            {
                continue;
            }
            let result = if pods.contains(&(name.clone(), *index)) {
                dp.attach_pod_interface(name, cfg.attach)
            } else {
                dp.attach_node_interface(name, cfg.attach).inspect(|_| {
                    let kind = all.iter().find(|l| l.index == *index);
                    let kind = kind.and_then(|l| l.kind.as_deref());
                    crate::accelerate::accelerate(dp, name, kind, cfg.acceleration);
                })
            };
            match result {
                Ok(how) => {
                    tracing::debug!(iface = %name, ?how, "attached");
                    self.attached.insert((name.clone(), *index));
                }
                Err(e) => {
                    warn!(
                        iface = %name,
                        error = %rudder_dataplane::tc::error_chain(&e),
                        "attaching the service datapath (not retried for this interface)"
                    );
                    self.failed.insert((name.clone(), *index));
                }
            }
        }
        self.attached
            .retain(|a| pods.contains(a) || node_ifaces.contains(a));
        self.failed
            .retain(|a| pods.contains(a) || node_ifaces.contains(a));
        let alive: HashSet<(String, u32)> = all.iter().map(|l| (l.name.clone(), l.index)).collect();
        match dp.prune_links(|name, index| alive.contains(&(name.to_string(), index))) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(n, "unpinned the links of gone interfaces"),
            Err(e) => warn!(error = %e, "unpinning links"),
        }
    }
}

/// The node's own interfaces among `links` (with their IPv4 addresses):
/// the named ones, or every interface with an address and every VXLAN
/// device, but not loopback, the pod bridges or their ports.
pub fn node_interfaces(
    links: &[(rudder_netlink::Link, Vec<Ipv4Addr>)],
    bridges: &[String],
    named: Option<&[String]>,
) -> BTreeSet<(String, u32)> {
    links
        .iter()
        .filter(|(l, addrs)| match named {
            Some(names) => names.contains(&l.name),
            None => {
                l.name != "lo"
                    && !bridges.contains(&l.name)
                    && l.master.is_none()
                    && (!addrs.is_empty() || l.kind.as_deref() == Some("vxlan"))
            }
        })
        .map(|(l, _)| (l.name.clone(), l.index))
        .collect()
}

/// The pod interfaces among `links`: veths whose master is one of `bridges`.
pub fn pod_interfaces(
    links: &[rudder_netlink::Link],
    bridges: &[String],
) -> BTreeSet<(String, u32)> {
    let masters: HashSet<u32> = links
        .iter()
        .filter(|l| bridges.contains(&l.name))
        .map(|l| l.index)
        .collect();
    links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .filter(|l| l.master.is_some_and(|m| masters.contains(&m)))
        .map(|l| (l.name.clone(), l.index))
        .collect()
}

/// Starts the metrics server and kube-proxy's health server, as
/// configured; they stop when the guards are dropped (with this run).
/// When the change an updated EndpointSlice carries happened, as the
/// EndpointSlice controller writes it (`endpoints.kubernetes.io/last-change-trigger-time`,
/// RFC 3339).
fn trigger_time(ev: &watcher::Event<EndpointSlice>) -> Option<std::time::SystemTime> {
    let watcher::Event::Apply(s) = ev else {
        return None;
    };
    let text = s
        .metadata
        .annotations
        .as_ref()?
        .get("endpoints.kubernetes.io/last-change-trigger-time")?;
    let t: jiff::Timestamp = text.parse().ok()?;
    Some(std::time::SystemTime::from(t))
}

async fn serve_http(
    cfg: &ProxyConfig,
    dp: &ServiceDataplane,
    stats: &Arc<Mutex<Stats>>,
    health: &Arc<Mutex<super::health::Health>>,
) -> Result<Vec<rudder_host::supervise::TaskGuard>, ProxyError> {
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Metrics { addr, source })
    };
    let mut servers = Vec::new();
    if let Some(addr) = cfg.metrics_addr {
        let listener = bind(addr).await?;
        info!(%addr, "proxy metrics");
        let reader = dp.reader().map_err(ProxyError::Load)?;
        servers.push(rudder_host::supervise::spawn_scoped(serve_metrics(
            listener,
            Arc::clone(stats),
            Some(Arc::new(reader)),
        )));
    }
    if let Some(addr) = cfg.healthz_addr {
        let listener = bind(addr).await?;
        info!(%addr, "proxy health server");
        servers.push(rudder_host::supervise::spawn_scoped(super::health::serve(
            listener,
            Arc::clone(health),
        )));
    }
    Ok(servers)
}

async fn serve_metrics(
    listener: tokio::net::TcpListener,
    stats: Arc<Mutex<Stats>>,
    reader: Option<Arc<DatapathReader>>,
) {
    use hyper::{Response, StatusCode, body::Bytes, service::service_fn};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let stats = Arc::clone(&stats);
        let reader = reader.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let stats = Arc::clone(&stats);
                let reader = reader.clone();
                async move {
                    let req_is_metrics = req.uri().path() == "/metrics";
                    let (status, body) = match req.uri().path() {
                        "/metrics" => {
                            let mut snap = stats
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .snapshot
                                .clone();
                            // Read when scraped: the counters and the flow
                            // table (a walk, so not more often than that).
                            if let Some(r) = reader {
                                let (counts, flows, xdp) = tokio::task::spawn_blocking(move || {
                                    (r.counts(), r.flow_count(), r.path_counts())
                                })
                                .await
                                .unwrap_or_else(|_| (Ok(Default::default()), 0, vec![]));
                                snap.flows = flows;
                                snap.flow_capacity =
                                    rudder_ebpf_common::service::MAX_FLOWS as usize;
                                match counts {
                                    Ok(c) => snap.packets = [c.non_zero(), xdp].concat(),
                                    Err(e) => warn!(error = %e, "reading the datapath counters"),
                                }
                            }
                            let kube = stats
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .kube
                                .clone();
                            (StatusCode::OK, metrics::render(&snap, &kube))
                        }
                        path => {
                            let synced = stats
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .synced;
                            match path {
                                "/healthz" | "/livez" if synced => (StatusCode::OK, "ok\n".into()),
                                "/healthz" | "/livez" => (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "not synced with the apiserver yet\n".into(),
                                ),
                                _ => (StatusCode::NOT_FOUND, "not found\n".into()),
                            }
                        }
                    };
                    let (status, body): (StatusCode, String) = (status, body);
                    let mut resp = Response::new(http_body_util::Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(if req_is_metrics {
                            metrics::CONTENT_TYPE
                        } else {
                            "text/plain; charset=utf-8"
                        }),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(
        index: u32,
        name: &str,
        kind: Option<&str>,
        master: Option<u32>,
    ) -> rudder_netlink::Link {
        rudder_netlink::Link {
            index,
            name: name.into(),
            mtu: 1500,
            mac: None,
            master,
            kind: kind.map(Into::into),
            up: true,
            vxlan_local: None,
        }
    }

    #[test]
    fn node_interfaces_have_addresses_or_are_vxlan() {
        let a = |s: &str| vec![s.parse::<Ipv4Addr>().unwrap()];
        let links = [
            (link(1, "lo", None, None), a("127.0.0.1")),
            (link(2, "cni0", Some("bridge"), None), a("10.244.0.1")),
            (link(3, "eth0", None, None), a("192.0.2.2")),
            (link(4, "rudder.1", Some("vxlan"), None), vec![]),
            (link(5, "eth1", None, None), vec![]),
            (link(6, "rdr0123456789ab", Some("veth"), Some(2)), vec![]),
        ];
        let names = |s: BTreeSet<(String, u32)>| s.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(node_interfaces(&links, &["cni0".into()], None)),
            ["eth0", "rudder.1"]
        );
        assert_eq!(
            names(node_interfaces(
                &links,
                &["cni0".into()],
                Some(&["eth1".into()])
            )),
            ["eth1"]
        );
    }

    #[test]
    fn pod_interfaces_are_veths_on_the_pod_bridge() {
        let links = [
            link(1, "lo", None, None),
            link(2, "cni0", Some("bridge"), None),
            link(3, "docker0", Some("bridge"), None),
            link(4, "rdr0123456789ab", Some("veth"), Some(2)),
            link(5, "vethdocker", Some("veth"), Some(3)),
            link(6, "vethloose", Some("veth"), None),
            link(7, "rudder.1", Some("vxlan"), None),
        ];
        let got = pod_interfaces(&links, &["cni0".into()]);
        assert_eq!(got, BTreeSet::from([("rdr0123456789ab".to_string(), 4)]));
    }
}
