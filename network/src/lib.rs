//! The network daemon: flannel's job, for Rudder's CNI plugin. Takes this
//! node's pod CIDR from its Node, writes the subnet file and the CNI
//! configuration, sets up the backend (a VXLAN device, or nothing for
//! host-gw), publishes what other nodes need as Node annotations, masquerades
//! traffic leaving the cluster network, and keeps one route (+ ARP + FDB
//! entry for VXLAN) per other node in step with the cluster's Nodes.
//!
//! What it programs is recognisable as its own (routes tagged with
//! [`RTPROT_RUDDER`], entries on its own VXLAN device, its own nftables
//! table), so it removes exactly that on node departure or uninstall, and a
//! restart neither flushes nor duplicates anything.

pub mod config;
pub mod forward;
pub mod iface;
pub mod masq;
pub mod plan;

use std::{collections::BTreeMap, path::Path, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api,
    api::{Patch, PatchParams},
    runtime::watcher,
};
use rudder_cni::{net::Ipv4Net, subnet::SubnetEnv};
use rudder_informer::Reflector;
use rudder_netlink::{Netlink, NetlinkError, VxlanSpec};
use tracing::{info, warn};

use self::{
    config::{Backend, NetworkConfig},
    iface::Uplink,
    plan::{ANN_BACKEND, ANN_PUBLIC_IP, ANN_VTEP_MAC, Desired, Local, Op, Peer},
};

/// The route protocol number on every route the daemon adds (`ip route
/// show proto 82`). Unassigned in iproute2's `rt_protos`.
pub const RTPROT_RUDDER: u8 = 82;

/// How often the kernel state is re-read and repaired without a Node event.
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("choosing the node interface: {0}")]
    Iface(#[from] iface::IfaceError),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: NetlinkError,
    },
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Masq(#[from] masq::MasqError),
    #[error(transparent)]
    Subnet(#[from] rudder_cni::subnet::SubnetError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node}: pod CIDR {cidr} is not inside the cluster network {cluster}")]
    OutsideCluster {
        node: String,
        cidr: Ipv4Net,
        cluster: Ipv4Net,
    },
    #[error("node {node}: spec.podCIDR {value:?} is not an IPv4 prefix")]
    BadPodCidr { node: String, value: String },
}

fn nl_err(what: impl Into<String>) -> impl FnOnce(NetlinkError) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Netlink { what, source }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Kube { what, source }
}

/// The node interface per the configuration.
pub async fn find_uplink(nl: &Netlink, cfg: &NetworkConfig) -> Result<Uplink, NetworkError> {
    let links = nl.links().await.map_err(nl_err("list links"))?;
    let mut with_addrs = Vec::new();
    for l in links {
        let addrs = nl
            .addresses(l.index)
            .await
            .map_err(nl_err(format!("list addresses of {}", l.name)))?;
        with_addrs.push((l, addrs));
    }
    let oifs = nl
        .default_route_link()
        .await
        .map_err(nl_err("read the default route"))?;
    Ok(iface::select(
        &with_addrs,
        &oifs,
        cfg.iface.as_deref(),
        cfg.iface_address,
    )?)
}

/// Waits until the Node has a pod CIDR (or takes the configured one).
async fn pod_cidr(
    api: &Api<Node>,
    node: &str,
    cfg: &NetworkConfig,
) -> Result<Ipv4Net, NetworkError> {
    if let Some(c) = cfg.pod_cidr {
        return Ok(c.trunc());
    }
    let mut said = false;
    loop {
        let n = api
            .get_opt(node)
            .await
            .map_err(kube_err(format!("get node {node}")))?;
        let cidr = n.as_ref().and_then(|n| n.spec.as_ref()?.pod_cidr.clone());
        match (n.is_some(), cidr) {
            (_, Some(c)) => {
                return c.parse::<Ipv4Net>().map(Ipv4Net::trunc).map_err(|_| {
                    NetworkError::BadPodCidr {
                        node: node.into(),
                        value: c,
                    }
                });
            }
            (exists, None) if !said => {
                if exists {
                    warn!(
                        node,
                        "node's pod CIDR is not assigned yet (spec.podCIDR); waiting. Pods cannot start until it is (the CNI plugin answers \"try again later\"). Set network.pod-cidr if this cluster does not allocate node CIDRs"
                    );
                } else {
                    warn!(node, "node is not registered yet; waiting");
                }
                said = true;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn set_sysctl(path: &str, value: &str) -> Result<(), NetworkError> {
    std::fs::write(path, value).map_err(|source| NetworkError::Io {
        what: format!("set {path} = {value}"),
        source,
    })
}

/// Sets up the backend device; returns the interface routes go through
/// and the MTU pods get.
async fn setup_backend(
    nl: &Netlink,
    cfg: &NetworkConfig,
    uplink: &Uplink,
    cidr: Ipv4Net,
) -> Result<(u32, u32, Option<[u8; 6]>), NetworkError> {
    match cfg.backend {
        Backend::HostGw => Ok((uplink.index, uplink.mtu, None)),
        Backend::Vxlan => {
            let mtu = uplink.mtu.saturating_sub(50);
            let spec = VxlanSpec {
                name: cfg.vxlan_device.clone(),
                vni: cfg.vxlan_vni,
                port: cfg.vxlan_port,
                local: uplink.addr.addr,
                underlay_index: uplink.index,
                mtu,
            };
            // A device left by an earlier run keeps its MAC (peers know it);
            // one bound to an old node address is re-made.
            if let Some(old) = nl
                .link(&spec.name)
                .await
                .map_err(nl_err("look up the vxlan device"))?
                && (old.kind.as_deref() != Some("vxlan") || old.vxlan_local != Some(spec.local))
            {
                info!(device = %spec.name, old_local = ?old.vxlan_local, new_local = %spec.local, "re-creating the VXLAN device for the node's new address");
                nl.delete_link(old.index)
                    .await
                    .map_err(nl_err(format!("delete the stale {}", spec.name)))?;
            }
            let dev = nl
                .ensure_vxlan(&spec)
                .await
                .map_err(nl_err(format!("create {}", spec.name)))?;
            if dev.mtu != mtu {
                nl.set_mtu(dev.index, mtu)
                    .await
                    .map_err(nl_err(format!("set the MTU of {}", spec.name)))?;
            }
            // The subnet's network address as /32: the VTEP's own address,
            // without a broadcast route (as flannel).
            let addrs = nl
                .addresses(dev.index)
                .await
                .map_err(nl_err("list vxlan addresses"))?;
            for (a, p) in addrs {
                if (a, p) != (cidr.network(), 32) {
                    nl.del_address(dev.index, a, p)
                        .await
                        .map_err(nl_err("remove a stale vxlan address"))?;
                }
            }
            nl.add_address(dev.index, cidr.network(), 32)
                .await
                .map_err(nl_err(format!(
                    "address {} on {}",
                    cidr.network(),
                    spec.name
                )))?;
            nl.set_up(dev.index)
                .await
                .map_err(nl_err(format!("set {} up", spec.name)))?;
            // Checksum offload on VXLAN devices corrupts checksums of NAT'd
            // packets on kernels before 5.7; set both ways, since a device
            // kept from an earlier run may have it either way.
            let (on, why) = cfg
                .vxlan_checksum_offload
                .decide(&rudder_host::kernel_release());
            match rudder_netlink::set_tx_checksum(&spec.name, on) {
                Ok(()) => {
                    info!(device = %spec.name, offload = on, reason = %why, "vxlan tx checksum offload");
                }
                Err(e) => {
                    warn!(device = %spec.name, offload = on, error = %e, "cannot set tx checksum offload");
                }
            }
            Ok((dev.index, mtu, dev.mac))
        }
    }
}

fn peer_of(node: &Node) -> Peer {
    let ann = node.metadata.annotations.clone().unwrap_or_default();
    Peer {
        name: node.metadata.name.clone().unwrap_or_default(),
        pod_cidr: node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_ref()?.parse().ok()),
        backend: ann.get(ANN_BACKEND).cloned(),
        public_ip: ann.get(ANN_PUBLIC_IP).and_then(|v| v.parse().ok()),
        vtep_mac: ann
            .get(ANN_VTEP_MAC)
            .and_then(|v| rudder_netlink::parse_mac(v)),
    }
}

/// What this daemon has programmed, read back from the kernel.
async fn current(nl: &Netlink, local: &Local<'_>) -> Result<Desired, NetworkError> {
    let mut d = Desired {
        routes: nl
            .routes(Some(RTPROT_RUDDER))
            .await
            .map_err(nl_err("list routes"))?
            .into_iter()
            .collect(),
        ..Desired::default()
    };
    if local.backend == Backend::Vxlan {
        d.neighbours = nl
            .neighbours(local.ifindex)
            .await
            .map_err(nl_err("list neighbours"))?
            .into_iter()
            .collect();
        d.fdbs = nl
            .fdbs(local.ifindex)
            .await
            .map_err(nl_err("list fdb entries"))?
            .into_iter()
            .collect();
    }
    Ok(d)
}

async fn apply(nl: &Netlink, op: &Op) -> Result<(), NetlinkError> {
    match op {
        Op::AddFdb(f) => nl.replace_fdb(f).await,
        Op::AddNeighbour(n) => nl.replace_neighbour(n).await,
        Op::AddRoute(r) => nl.replace_route(r, RTPROT_RUDDER).await,
        Op::DelRoute(r) => nl.del_route(r, RTPROT_RUDDER).await,
        Op::DelNeighbour(n) => nl.del_neighbour(n).await,
        Op::DelFdb(f) => nl.del_fdb(f).await,
    }
}

/// Brings the kernel in line with the peers; returns how many operations
/// were applied. Failures are logged and retried at the next sync.
async fn sync(nl: &Netlink, local: &Local<'_>, peers: &BTreeMap<String, Peer>) -> usize {
    let peers: Vec<Peer> = peers.values().cloned().collect();
    let want = plan::desired(local, &peers);
    for (node, why) in &want.skipped {
        tracing::debug!(peer = %node, "not routing to node: {why}");
    }
    let have = match current(nl, local).await {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "cannot read the programmed routes; retrying at the next sync");
            return 0;
        }
    };
    let ops = plan::diff(&have, &want);
    let mut done = 0;
    for op in &ops {
        match apply(nl, op).await {
            Ok(()) => {
                info!(?op, "applied");
                done += 1;
            }
            Err(e) => warn!(?op, error = %e, "failed; retrying at the next sync"),
        }
    }
    done
}

/// Runs the daemon until the process is stopped. `ipam_data_dir` overrides
/// the plugin's IPAM directory in the written conflist.
pub async fn run(
    cfg: NetworkConfig,
    node_name: String,
    client: kube::Client,
    ipam_data_dir: Option<&Path>,
) -> Result<(), NetworkError> {
    let nl = Netlink::new().map_err(nl_err("open netlink"))?;
    let uplink = find_uplink(&nl, &cfg).await?;
    info!(iface = %uplink.name, addr = %uplink.addr, mtu = uplink.mtu, "node interface");
    let api: Api<Node> = Api::all(client);
    let cidr = pod_cidr(&api, &node_name, &cfg).await?;
    if !cfg.cluster_cidr.contains_net(cidr) {
        return Err(NetworkError::OutsideCluster {
            node: node_name,
            cidr,
            cluster: cfg.cluster_cidr,
        });
    }
    info!(pod_cidr = %cidr, backend = cfg.backend.as_str(), "node network");
    set_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    let (ifindex, mtu, vtep_mac) = setup_backend(&nl, &cfg, &uplink, cidr).await?;

    let mut ann = serde_json::Map::new();
    ann.insert(ANN_BACKEND.into(), cfg.backend.as_str().into());
    ann.insert(ANN_PUBLIC_IP.into(), uplink.addr.addr.to_string().into());
    if let Some(mac) = vtep_mac {
        ann.insert(ANN_VTEP_MAC.into(), rudder_netlink::mac_string(&mac).into());
    }
    api.patch(
        &node_name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": ann}})),
    )
    .await
    .map_err(kube_err(format!(
        "publish the network annotations on node {node_name}"
    )))?;

    if cfg.masquerade {
        masq::apply(cfg.cluster_cidr)?;
    }
    ensure_forward(cfg.cluster_cidr);
    SubnetEnv::for_pod_cidr(cfg.cluster_cidr, cidr, mtu, cfg.masquerade).write(&cfg.subnet_file)?;
    let conflist = cfg.conflist(ipam_data_dir);
    let conf_path = cfg.cni_conf_dir.join(&cfg.cni_conf_name);
    rudder_cni::subnet::write_atomic(
        &conf_path,
        serde_json::to_string_pretty(&conflist)
            .expect("serializable")
            .as_bytes(),
    )
    .map_err(|source| NetworkError::Io {
        what: format!("write {}", conf_path.display()),
        source,
    })?;
    info!(subnet_file = %cfg.subnet_file.display(), cni_conf = %conf_path.display(), "pod network ready");
    let missing = cfg.missing_plugins();
    if !missing.is_empty() {
        warn!(
            missing = ?missing,
            dirs = ?cfg.cni_bin_dirs,
            "CNI plugins named by {} are missing from the CNI bin dirs: pods will fail with \"failed to find plugin\". Install rudder-cni as `rudder` and the reference plugins (containernetworking-plugins)",
            conf_path.display()
        );
    }

    let local = Local {
        name: &node_name,
        backend: cfg.backend,
        cluster_cidr: cfg.cluster_cidr,
        ifindex,
        uplink_net: uplink.addr,
    };
    let mut nodes = Reflector::<Node>::new();
    let mut events = rudder_informer::events(api, watcher::Config::default(), "nodes").boxed();
    let mut tick = tokio::time::interval(RESYNC);
    // Nothing is synced before the first complete list of Nodes: with no
    // peers known, a sync would delete every route a restarted daemon
    // finds (and add them back a moment later).
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { break };
                let delta = nodes.apply(ev);
                if nodes.synced() && (delta.relisted || !delta.changes.is_empty()) {
                    sync(&nl, &local, &peers_of(&nodes)).await;
                }
            }
            _ = tick.tick() => {
                if nodes.synced() {
                    sync(&nl, &local, &peers_of(&nodes)).await;
                }
                ensure_forward(cfg.cluster_cidr);
            }
        }
    }
    Ok(())
}

/// The peers the Nodes describe, by name.
fn peers_of(nodes: &Reflector<Node>) -> BTreeMap<String, Peer> {
    nodes
        .objects()
        .values()
        .map(|n| {
            let p = peer_of(n);
            (p.name.clone(), p)
        })
        .collect()
}

/// Pod traffic accepted where iptables' FORWARD drops by default (see
/// `forward.rs`); a failure is logged, and retried at the next resync.
fn ensure_forward(cluster: Ipv4Net) {
    match forward::ensure(cluster) {
        Ok(changed) if !changed.is_empty() => {
            info!(flavours = ?changed, chain = forward::CHAIN, "FORWARD drops by default: pod traffic accepted");
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "accepting pod traffic in iptables' FORWARD chain"),
    }
}

/// Removes everything the daemon made on this node: routes tagged as its
/// own, the VXLAN device (with its ARP and FDB entries), the masquerade
/// table, the subnet file and the CNI configuration list. Pods keep their
/// interfaces (the CNI plugin's DEL removes those).
pub async fn uninstall(
    cfg: &NetworkConfig,
    ipam_data_dir: Option<&Path>,
) -> Result<(), NetworkError> {
    let nl = Netlink::new().map_err(nl_err("open netlink"))?;
    for r in nl
        .routes(Some(RTPROT_RUDDER))
        .await
        .map_err(nl_err("list routes"))?
    {
        nl.del_route(&r, RTPROT_RUDDER)
            .await
            .map_err(nl_err(format!("delete route {r:?}")))?;
    }
    nl.delete_link_named(&cfg.vxlan_device)
        .await
        .map_err(nl_err(format!("delete {}", cfg.vxlan_device)))?;
    // The pod bridge (the CNI plugin's), once no pod is attached to it:
    // pods still on it keep their network until they are gone.
    let links = nl.links().await.map_err(nl_err("list links"))?;
    if let Some(bridge) = links.iter().find(|l| l.name == cfg.bridge) {
        let ports = links
            .iter()
            .filter(|l| l.master == Some(bridge.index))
            .count();
        if ports == 0 {
            nl.delete_link_named(&cfg.bridge)
                .await
                .map_err(nl_err(format!("delete {}", cfg.bridge)))?;
        } else {
            tracing::warn!(bridge = %cfg.bridge, ports, "pods are still attached: the bridge is kept");
        }
    }
    masq::remove()?;
    if let Err(e) = forward::remove() {
        warn!(error = %e, "removing the FORWARD accept rules");
    }
    remove_empty_ipam_state(
        ipam_data_dir.unwrap_or(Path::new(rudder_cni::types::DEFAULT_DATA_DIR)),
    );
    for f in [
        cfg.subnet_file.clone(),
        cfg.cni_conf_dir.join(&cfg.cni_conf_name),
        cfg.proxy_socket.clone(),
    ] {
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(NetworkError::Io {
                    what: format!("remove {}", f.display()),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// The plugin's IPAM state of the `rudder` network when no address is
/// held any more (only its lock and last-reserved files), and the data
/// directory if that leaves it empty. Addresses still held are kept.
fn remove_empty_ipam_state(data_dir: &Path) {
    let dir = data_dir.join("rudder");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names
        .iter()
        .all(|n| n == "lock" || n.starts_with("last_reserved_ip"))
    {
        for n in &names {
            let _ = std::fs::remove_file(dir.join(n));
        }
        let _ = std::fs::remove_dir(&dir);
        let _ = std::fs::remove_dir(data_dir);
    } else {
        tracing::warn!(dir = %dir.display(), "addresses are still held: the IPAM state is kept");
    }
}
