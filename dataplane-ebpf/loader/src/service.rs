//! The Service dataplane's BPF side: loads the `service` object with its
//! maps pinned under a directory (so a restarted agent finds the same maps,
//! flows and affinities), attaches it to pod interfaces, and applies the
//! proxy's [`MapOp`]s.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TestRun, TestRunOptions, TestRunResult,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
    },
};
use rudder_ebpf_common::service::{
    AffinityKey, AffinityValue, Backend, CtValue, FlowKey, FlowValue, MAP_AFFINITY, MAP_BACKENDS,
    MAP_CONFIG, MAP_CONNTRACK, MAP_DSR_NODES, MAP_DSR_STATS, MAP_FLOWS, MAP_HOST_NETNS,
    MAP_MEMBERS, MAP_NODE_ADDRS, MAP_REV_NAT, MAP_SERVICES, MAP_SLOTS, MAP_STATS, MAP_XDP_STATS,
    MemberKey, PROG_CONNECT4, PROG_FROM_NETDEV, PROG_FROM_POD, PROG_GETPEERNAME4, PROG_RECVMSG4,
    PROG_SENDMSG4, PROG_TO_POD, RevNatValue, SVC_COUNTERS, ServiceKey, ServiceValue, SlotKey,
    SockKey, SvcCounter, config,
};

mod apply;
mod xdp;

pub use xdp::{Acceleration, XdpCounts, is_physical};

use super::{
    BpfError, SERVICE_OBJECT,
    packet_stats::TestRunOutput,
    tc::{self, AttachMode, Attached, Direction},
};

const OBJECT: &str = "service";

/// What goes on a pod's host-side interface.
const POD_PROGRAMS: &[(&str, Direction)] = &[
    (PROG_FROM_POD, Direction::Ingress),
    (PROG_TO_POD, Direction::Egress),
];

/// The loaded Service dataplane.
pub struct ServiceDataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    slots: HashMap<MapData, SlotKey, u32>,
    backends: HashMap<MapData, u32, Backend>,
    members: HashMap<MapData, MemberKey, u32>,
    flows: HashMap<MapData, SockKey, FlowValue>,
    conntrack: HashMap<MapData, FlowKey, CtValue>,
    rev_nat: HashMap<MapData, FlowKey, RevNatValue>,
    affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    config: Array<MapData, u32>,
    stats: PerCpuArray<MapData, u64>,
    host_netns: Array<MapData, u64>,
    node_addrs: HashMap<MapData, u32, u32>,
    dsr_nodes: HashMap<MapData, u32, u32>,
    /// Cgroup links that could not be pinned (kernels before 5.7).
    cgroup_links: Vec<aya::programs::cgroup_sock_addr::CgroupSockAddrLink>,
}

impl std::fmt::Debug for ServiceDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceDataplane").finish_non_exhaustive()
    }
}

/// The service, slot, backend and member maps' contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    pub slots: BTreeMap<SlotKey, u32>,
    pub backends: BTreeMap<u32, Backend>,
    /// (service, backend) pairs of services with session affinity.
    pub members: BTreeSet<MemberKey>,
}

/// The counters and the flow table of a loaded dataplane, opened from its
/// pins; `Send`, so another task can read them.
pub struct DatapathReader {
    stats: PerCpuArray<MapData, u64>,
    /// The XDP path's and direct server return's counters (absent in pins
    /// of an older agent).
    xdp_stats: Option<PerCpuArray<MapData, u64>>,
    dsr_stats: Option<PerCpuArray<MapData, u64>>,
    flows: HashMap<MapData, SockKey, FlowValue>,
    conntrack: HashMap<MapData, FlowKey, CtValue>,
}

impl std::fmt::Debug for DatapathReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatapathReader").finish_non_exhaustive()
    }
}

impl DatapathReader {
    fn open(pin_dir: &Path) -> Result<Self, BpfError> {
        let open = |name: &'static str| {
            MapData::from_pin(pin_dir.join(name))
                .map_err(|e| map_error(name, &format!("open the pin in {}", pin_dir.display()), e))
        };
        let stats = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(open(MAP_STATS)?))
            .map_err(|e| map_error(MAP_STATS, "open", e))?;
        let flows = HashMap::try_from(aya::maps::Map::LruHashMap(open(MAP_FLOWS)?))
            .map_err(|e| map_error(MAP_FLOWS, "open", e))?;
        let conntrack = HashMap::try_from(aya::maps::Map::LruHashMap(open(MAP_CONNTRACK)?))
            .map_err(|e| map_error(MAP_CONNTRACK, "open", e))?;
        let counters = |name| {
            open(name)
                .ok()
                .and_then(|m| PerCpuArray::try_from(aya::maps::Map::PerCpuArray(m)).ok())
        };
        Ok(Self {
            stats,
            xdp_stats: counters(MAP_XDP_STATS),
            dsr_stats: counters(MAP_DSR_STATS),
            flows,
            conntrack,
        })
    }

    /// Datapath counters.
    pub fn counts(&self) -> Result<SvcCounts, BpfError> {
        read_counts(&self.stats)
    }

    /// Tracked flows (walks the tables).
    pub fn flow_count(&self) -> usize {
        count_flows(&self.flows, &self.conntrack)
    }

    /// The non-zero counters of the XDP path and of direct server return,
    /// as `(name, value)`.
    pub fn path_counts(&self) -> Vec<(&'static str, u64)> {
        let mut counts = self
            .xdp_stats
            .as_ref()
            .and_then(|s| xdp::read_xdp_counts(s).ok())
            .unwrap_or_default();
        if let Some(s) = &self.dsr_stats {
            counts.extend(xdp::read_dsr_counts(s).unwrap_or_default());
        }
        counts.retain(|(_, v)| *v > 0);
        counts
    }
}

/// The flows of both flow tables: pods' flows to service addresses by
/// socket, the others by 5-tuple.
fn count_flows(
    flows: &HashMap<MapData, SockKey, FlowValue>,
    conntrack: &HashMap<MapData, FlowKey, CtValue>,
) -> usize {
    flows.keys().filter(Result::is_ok).count() + conntrack.keys().filter(Result::is_ok).count()
}

fn read_counts(stats: &PerCpuArray<MapData, u64>) -> Result<SvcCounts, BpfError> {
    let mut c = SvcCounts::default();
    for counter in SvcCounter::ALL {
        let v = stats
            .get(&(counter as u32), 0)
            .map_err(|e| map_error(MAP_STATS, &format!("read {}", counter.name()), e))?;
        c.0[counter as usize] = v.iter().sum();
    }
    Ok(c)
}

/// Datapath counters summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SvcCounts([u64; SVC_COUNTERS as usize]);

impl SvcCounts {
    pub fn get(&self, c: SvcCounter) -> u64 {
        self.0[c as usize]
    }

    /// Non-zero counters as `(name, value)`.
    pub fn non_zero(&self) -> Vec<(&'static str, u64)> {
        SvcCounter::ALL
            .iter()
            .filter(|c| self.get(**c) > 0)
            .map(|c| (c.name(), self.get(*c)))
            .collect()
    }
}

/// Makes an address set map (network order → 1) hold `want`, changing only
/// what differs; whether anything did.
fn sync_addrs(
    map: &mut HashMap<MapData, u32, u32>,
    want: &BTreeSet<Ipv4Addr>,
    name: &'static str,
) -> Result<bool, BpfError> {
    let have: BTreeSet<Ipv4Addr> = map
        .keys()
        .filter_map(Result::ok)
        .map(|a| Ipv4Addr::from(u32::from_be(a)))
        .collect();
    for a in want.difference(&have) {
        map.insert(u32::from(*a).to_be(), 1, 0)
            .map_err(|e| map_error(name, &format!("add {a}"), e))?;
    }
    for a in have.difference(want) {
        map.remove(&u32::from(*a).to_be())
            .map_err(|e| map_error(name, &format!("remove {a}"), e))?;
    }
    Ok(want != &have)
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(BpfError::NoMap {
        object: OBJECT,
        map: name,
    })?;
    T::try_from(map).map_err(|e| map_error(name, "open", e))
}

fn map_error(map: &'static str, action: &str, e: aya::maps::MapError) -> BpfError {
    BpfError::Map {
        map,
        action: action.to_string(),
        source: Box::new(e),
    }
}

fn program_error(program: &'static str, action: &str, e: ProgramError) -> BpfError {
    BpfError::Program {
        program,
        action: action.to_string(),
        source: Box::new(e),
    }
}

impl ServiceDataplane {
    /// Loads the object; its maps are pinned in `pin_dir` (created maps are
    /// pinned there, maps already pinned there are reused).
    pub fn load(pin_dir: &Path) -> Result<Self, BpfError> {
        if SERVICE_OBJECT.is_empty() {
            return Err(BpfError::NotEmbedded(OBJECT));
        }
        crate::lift_memlock();
        let fresh_flows = !pin_dir.join(MAP_FLOWS).exists();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(SERVICE_OBJECT)
            .map_err(|e| BpfError::Load {
                object: OBJECT,
                source: Box::new(e),
            })?;
        for name in [PROG_FROM_POD, PROG_TO_POD] {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|e| program_error(name, "load", e))?;
        }
        let mut dp = Self {
            services: take(&mut ebpf, MAP_SERVICES)?,
            slots: take(&mut ebpf, MAP_SLOTS)?,
            backends: take(&mut ebpf, MAP_BACKENDS)?,
            members: take(&mut ebpf, MAP_MEMBERS)?,
            flows: take(&mut ebpf, MAP_FLOWS)?,
            conntrack: take(&mut ebpf, MAP_CONNTRACK)?,
            rev_nat: take(&mut ebpf, MAP_REV_NAT)?,
            affinity: take(&mut ebpf, MAP_AFFINITY)?,
            config: take(&mut ebpf, MAP_CONFIG)?,
            stats: take(&mut ebpf, MAP_STATS)?,
            host_netns: take(&mut ebpf, MAP_HOST_NETNS)?,
            node_addrs: take(&mut ebpf, MAP_NODE_ADDRS)?,
            dsr_nodes: take(&mut ebpf, MAP_DSR_NODES)?,
            cgroup_links: vec![],
            ebpf,
            pin_dir: pin_dir.to_path_buf(),
        };
        if fresh_flows {
            dp.adopt_tracked_flows()?;
        }
        dp.prune_members()?;
        Ok(dp)
    }

    /// Removes `MEMBERS` entries of services without session affinity:
    /// agents before members were written only for affinity wrote them for
    /// every service, and the translator, which now neither writes nor
    /// deletes those, would leave them there for good.
    fn prune_members(&mut self) -> Result<(), BpfError> {
        let affine: BTreeSet<u32> = self
            .services
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.affinity_timeout != 0)
            .map(|(_, v)| v.service_id)
            .collect();
        remove_where(&mut self.members, MAP_MEMBERS, |k, _| {
            !affine.contains(&k.service_id)
        })
    }

    /// Moves pods' flows to service addresses that an agent from before the
    /// `FLOWS` table tracked by 5-tuple (`CONNTRACK` and `REV_NAT`) into
    /// `FLOWS`, so that they keep their backends across the upgrade: the new
    /// program looks such flows up by socket only. Flows with source NAT, to
    /// NodePorts or from outside stay where they are (the new program still
    /// tracks those by 5-tuple). Returns how many moved.
    fn adopt_tracked_flows(&mut self) -> Result<usize, BpfError> {
        let mut moved = 0;
        let tracked: Vec<(FlowKey, CtValue)> =
            self.conntrack.iter().filter_map(Result::ok).collect();
        for (key, ct) in tracked {
            let Ok(b) = self.backends.get(&ct.backend_id, 0) else {
                continue;
            };
            let rev_key = FlowKey {
                saddr: b.addr,
                daddr: key.saddr,
                sport: b.port,
                dport: key.sport,
                ..key
            };
            let plain = ct.nat_saddr == key.saddr
                && ct.nat_sport == key.sport
                && self.rev_nat.get(&rev_key, 0).is_ok_and(|r| r.flags == 0);
            if !plain {
                continue;
            }
            let sock = SockKey {
                addr: key.saddr,
                port: key.sport,
                proto: key.proto,
                _pad: 0,
            };
            let flow = FlowValue {
                vip: key.daddr,
                vport: key.dport,
                flags: 0,
                service_id: ct.service_id,
                backend_id: ct.backend_id,
                // No slot set: the first packet checks the backend.
                slots_id: 0,
                backend_addr: b.addr,
                backend_port: b.port,
                _pad: 0,
                nat_saddr: key.saddr,
            };
            // BPF_NOEXIST: a socket with two such flows keeps the first in
            // FLOWS; the other stays tracked by 5-tuple, as the program does.
            if self.flows.insert(sock, flow, BPF_NOEXIST).is_ok() {
                moved += 1;
            }
        }
        if moved > 0 {
            tracing::info!(
                moved,
                "flows of the previous agent adopted into the socket flow table"
            );
        }
        Ok(moved)
    }
    fn links_dir(&self) -> PathBuf {
        self.pin_dir.join("links")
    }

    /// Attaches to a pod's host-side interface (in the calling thread's
    /// network namespace): `from_pod` on its ingress (what the pod sends),
    /// `to_pod` on its egress (what the pod receives).
    ///
    /// With TCX the links are pinned under `<pin dir>/links/`, so they stay
    /// attached when the agent stops; attaching again (a restarted agent)
    /// swaps the new program into the pinned link atomically, and traffic
    /// never sees the interface without a program. With clsact (kernels
    /// before 6.6) the filters live as long as this object.
    pub fn attach_pod_interface(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<Attached, BpfError> {
        self.attach(iface, mode, POD_PROGRAMS)
    }

    /// Attaches `from_netdev` to the ingress of one of the node's own
    /// interfaces (uplink, VXLAN device), like [`Self::attach_pod_interface`]:
    /// NodePorts, externalIPs and LoadBalancer IPs reached from outside.
    pub fn attach_node_interface(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<Attached, BpfError> {
        self.load_netdev()?;
        self.attach(iface, mode, &[(PROG_FROM_NETDEV, Direction::Ingress)])
    }

    /// Loads `from_netdev` on first use: it needs bpf_redirect_neigh
    /// (5.10), which the pod programs do not. Public for `preflight`.
    pub fn load_netdev(&mut self) -> Result<(), BpfError> {
        let prog = classifier(&mut self.ebpf, PROG_FROM_NETDEV)?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| {
                program_error(
                    PROG_FROM_NETDEV,
                    "load (NodePorts need kernel 5.10: bpf_fib_lookup, bpf_redirect_neigh)",
                    e,
                )
            })?;
        }
        Ok(())
    }

    fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
        programs: &[(&'static str, Direction)],
    ) -> Result<Attached, BpfError> {
        if mode != AttachMode::Clsact {
            match self.attach_tcx_pinned(iface, programs) {
                Ok(()) => return Ok(Attached::Tcx),
                Err(e) if mode == AttachMode::Tcx => return Err(e),
                Err(e) => {
                    tracing::info!(iface, error = %tc::error_chain(&e), "TCX unavailable, using clsact");
                }
            }
        }
        for &(name, direction) in programs {
            let prog = classifier(&mut self.ebpf, name)?;
            tc::attach(prog, name, iface, direction, AttachMode::Clsact)?;
        }
        Ok(Attached::Clsact)
    }

    fn attach_tcx_pinned(
        &mut self,
        iface: &str,
        programs: &[(&'static str, Direction)],
    ) -> Result<(), BpfError> {
        let ifindex = ifindex_of(iface)?;
        let dir = self.ensure_links_dir()?;
        for &(name, direction) in programs {
            let pin = dir.join(link_pin_name(iface, ifindex, name));
            let prog = classifier(&mut self.ebpf, name)?;
            if pin.exists() {
                let link = PinnedLink::from_pin(&pin).map_err(|e| link_error(name, &pin, e))?;
                let link = SchedClassifierLink::try_from(FdLink::from(link))
                    .map_err(|e| link_error(name, &pin, e))?;
                let action = format!("replace the program in {}", pin.display());
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| program_error(name, &action, e))?;
                // The pin stays the link's only holder.
                drop(
                    prog.take_link(id)
                        .map_err(|e| program_error(name, "take the link", e))?,
                );
            } else {
                let options = TcAttachOptions::TcxOrder(LinkOrder::default());
                let action = format!("TCX attach to {iface} ({direction:?})");
                let id = prog
                    .attach_with_options(iface, direction.into(), options)
                    .map_err(|e| program_error(name, &action, e))?;
                let link = prog
                    .take_link(id)
                    .map_err(|e| program_error(name, "take the link", e))?;
                let fd = FdLink::try_from(link).map_err(|e| link_error(name, &pin, e))?;
                pin_link(fd, &pin)?;
            }
        }
        Ok(())
    }

    /// The directory of the pinned links, made if missing.
    fn ensure_links_dir(&self) -> Result<PathBuf, BpfError> {
        let dir = self.links_dir();
        std::fs::create_dir_all(&dir).map_err(|source| BpfError::Pin {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// Translates Service addresses for the sockets of this network
    /// namespace's processes in the cgroup `cgroup` (a cgroup v2 directory;
    /// its root covers the whole node): `connect4`, `sendmsg4`, `recvmsg4`
    /// and, where the kernel has it (5.8), `getpeername4`.
    ///
    /// The links are pinned under `<pin dir>/cgroup-links/`, so they outlive
    /// the agent. Attaching again (a restarted or upgraded agent) attaches
    /// the new programs beside the old ones, then moves the new pins over
    /// the old (the old links go with their last reference). While both run,
    /// the second sees a backend address, not a service one, and does
    /// nothing. Returns the hooks attached.
    pub fn attach_node_cgroup(&mut self, cgroup: &Path) -> Result<Vec<&'static str>, BpfError> {
        use aya::programs::{CgroupAttachMode, CgroupSockAddr};
        let cookie = netns_cookie().map_err(|source| BpfError::Pin {
            path: PathBuf::from("/proc/self/ns/net"),
            source,
        })?;
        self.host_netns
            .set(0, cookie, 0)
            .map_err(|e| map_error(MAP_HOST_NETNS, "set the node's netns cookie", e))?;
        let cg = std::fs::File::open(cgroup).map_err(|source| BpfError::Pin {
            path: cgroup.to_path_buf(),
            source,
        })?;
        let dir = self.pin_dir.join("cgroup-links");
        std::fs::create_dir_all(&dir).map_err(|source| BpfError::Pin {
            path: dir.clone(),
            source,
        })?;
        // bpf_link (5.7+) cgroup attachments always coexist and take no
        // flags; older kernels' prog-attach needs ALLOW_MULTI for that.
        let has_links = aya::util::KernelVersion::current()
            .is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 7, 0));
        let mode = if has_links {
            CgroupAttachMode::Single
        } else {
            CgroupAttachMode::AllowMultiple
        };
        let mut attached = vec![];
        for name in [
            PROG_CONNECT4,
            PROG_SENDMSG4,
            PROG_RECVMSG4,
            PROG_GETPEERNAME4,
        ] {
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or(BpfError::NoProgram {
                    object: OBJECT,
                    program: name,
                })?
                .try_into()
                .map_err(|e| program_error(name, "open as a cgroup sock_addr program", e))?;
            let result = prog.load().and_then(|()| prog.attach(&cg, mode));
            let id = match result {
                Ok(id) => id,
                // getpeername hooks came in 5.8: without them getpeername()
                // shows the backend, nothing else changes.
                Err(e) if name == PROG_GETPEERNAME4 => {
                    tracing::info!(error = %tc::error_chain(&e), "no getpeername4 hook on this kernel");
                    continue;
                }
                Err(e) => {
                    return Err(program_error(
                        name,
                        &format!("attach to the cgroup {}", cgroup.display()),
                        e,
                    ));
                }
            };
            let link = prog
                .take_link(id)
                .map_err(|e| program_error(name, "take the link", e))?;
            let pin = dir.join(name);
            if !has_links {
                // Kernels before 5.7 have no cgroup bpf_link: the program
                // stays attached as long as this process holds it.
                self.cgroup_links.push(link);
                attached.push(name);
                continue;
            }
            match FdLink::try_from(link) {
                Ok(fd) => {
                    let tmp = dir.join(format!("{name}:new"));
                    let _ = std::fs::remove_file(&tmp);
                    fd.pin(&tmp).map_err(|e| BpfError::Pin {
                        path: tmp.clone(),
                        source: std::io::Error::other(e),
                    })?;
                    std::fs::rename(&tmp, &pin).map_err(|source| BpfError::Pin {
                        path: pin.clone(),
                        source,
                    })?;
                }
                Err(e) => return Err(link_error(name, &pin, e)),
            }
            attached.push(name);
        }
        Ok(attached)
    }

    /// Detaches from a pod interface attached with TCX, by removing its pins.
    pub fn detach_pod_interface(&mut self, iface: &str) -> Result<usize, BpfError> {
        self.remove_links(|name, _| name == iface)
    }

    /// Removes the pinned links of interfaces for which `alive(name,
    /// ifindex)` is false (pods deleted while the agent was down).
    pub fn prune_links(&mut self, alive: impl Fn(&str, u32) -> bool) -> Result<usize, BpfError> {
        self.remove_links(|name, ifindex| !alive(name, ifindex))
    }

    fn remove_links(&mut self, remove: impl Fn(&str, u32) -> bool) -> Result<usize, BpfError> {
        let mut n = 0;
        for (iface, ifindex, path) in self.link_pins() {
            if remove(&iface, ifindex) {
                std::fs::remove_file(&path).map_err(|source| BpfError::Pin { path, source })?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Pinned links as `(interface, ifindex, pin path)`.
    fn link_pins(&self) -> Vec<(String, u32, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(self.links_dir()) else {
            return vec![];
        };
        entries
            .flatten()
            .filter_map(|e| {
                let (iface, ifindex) = parse_link_pin_name(&e.file_name().to_string_lossy())?;
                Some((iface, ifindex, e.path()))
            })
            .collect()
    }

    /// Interfaces with pinned links, as `(name, ifindex)`.
    pub fn pinned_interfaces(&self) -> BTreeSet<(String, u32)> {
        self.link_pins()
            .into_iter()
            .map(|(i, x, _)| (i, x))
            .collect()
    }

    /// Removes everything: programs from every interface, maps, flows.
    pub fn uninstall(self) -> Result<(), BpfError> {
        let dir = self.pin_dir.clone();
        drop(self);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BpfError::Pin {
                path: dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// What the maps hold (services, slots, backends), for
    /// [`Translator::adopt`](rudder_proxy::Translator::adopt) after a restart.
    pub fn installed(&self) -> Installed {
        Installed {
            services: self.services.iter().filter_map(Result::ok).collect(),
            slots: self.slots.iter().filter_map(Result::ok).collect(),
            backends: self.backends.iter().filter_map(Result::ok).collect(),
            members: self.members.keys().filter_map(Result::ok).collect(),
        }
    }

    /// Sets the address hairpin flows are masqueraded as (link-local, not
    /// used by anything else on the node).
    pub fn set_hairpin_addr(&mut self, addr: Ipv4Addr) -> Result<(), BpfError> {
        self.config
            .set(config::HAIRPIN_ADDR, u32::from(addr).to_be(), 0)
            .map_err(|e| map_error(MAP_CONFIG, "set the hairpin address", e))
    }

    /// Sets the node's addresses (where NodePorts listen) and its primary
    /// one (the source NAT address of external traffic to externalIPs and
    /// LoadBalancer IPs). Returns whether anything changed.
    pub fn set_node_addrs(
        &mut self,
        addrs: &BTreeSet<Ipv4Addr>,
        primary: Option<Ipv4Addr>,
    ) -> Result<bool, BpfError> {
        let mut changed = sync_addrs(&mut self.node_addrs, addrs, MAP_NODE_ADDRS)?;
        let ip = primary.map_or(0, |a| u32::from(a).to_be());
        if self.config.get(&config::NODE_IP, 0).ok() != Some(ip) {
            self.config
                .set(config::NODE_IP, ip, 0)
                .map_err(|e| map_error(MAP_CONFIG, "set the node address", e))?;
            changed = true;
        }
        Ok(changed)
    }

    /// Sets the cluster's nodes' addresses: those a direct-server-return
    /// option naming a node port may carry (see the program's `dsr.rs`).
    /// Returns whether anything changed.
    pub fn set_dsr_nodes(&mut self, addrs: &BTreeSet<Ipv4Addr>) -> Result<bool, BpfError> {
        sync_addrs(&mut self.dsr_nodes, addrs, MAP_DSR_NODES)
    }

    /// The cluster's nodes' addresses as the datapath has them.
    pub fn dsr_nodes(&self) -> BTreeSet<Ipv4Addr> {
        self.dsr_nodes
            .keys()
            .filter_map(Result::ok)
            .map(|a| Ipv4Addr::from(u32::from_be(a)))
            .collect()
    }

    /// Moves the datapath's clock forward by `seconds` (tests of affinity
    /// expiry use it instead of waiting).
    pub fn set_clock_offset(&mut self, seconds: u32) -> Result<(), BpfError> {
        self.config
            .set(config::CLOCK_OFFSET, seconds, 0)
            .map_err(|e| map_error(MAP_CONFIG, "set the clock offset", e))
    }

    /// Number of tracked flows.
    pub fn flow_count(&self) -> usize {
        count_flows(&self.flows, &self.conntrack)
    }

    /// Entries of each flow table: (`FLOWS`, `CONNTRACK`, `REV_NAT`).
    pub fn flow_tables(&self) -> (usize, usize, usize) {
        (
            (self.flows.keys().filter(Result::is_ok).count()),
            (self.conntrack.keys().filter(Result::is_ok).count()),
            (self.rev_nat.keys().filter(Result::is_ok).count()),
        )
    }

    /// Datapath counters.
    pub fn counts(&self) -> Result<SvcCounts, BpfError> {
        read_counts(&self.stats)
    }

    /// A second, read-only view of the counters and the flow table, opened
    /// from the pins (for a metrics endpoint that reads them when scraped).
    pub fn reader(&self) -> Result<DatapathReader, BpfError> {
        DatapathReader::open(&self.pin_dir)
    }

    /// Runs `from_pod` (`true`) or `to_pod` once on `packet` through
    /// `BPF_PROG_TEST_RUN`.
    pub fn test_run(&mut self, from_pod: bool, packet: &[u8]) -> Result<TestRunOutput, BpfError> {
        self.test_run_inner(from_pod, packet, 1).map(|(out, _)| out)
    }

    /// Like [`ServiceDataplane::test_run`], returning the kernel's own timing
    /// of the program run (benchmarks).
    /// With `repeat > 1` the program runs that many times on the same
    /// buffer, so only packets it leaves unchanged measure one path.
    pub fn test_run_timed(
        &mut self,
        from_pod: bool,
        packet: &[u8],
        repeat: u32,
    ) -> Result<std::time::Duration, BpfError> {
        self.test_run_inner(from_pod, packet, repeat)
            .map(|(_, d)| d)
    }

    /// Runs `from_netdev` once on `packet` through `BPF_PROG_TEST_RUN`.
    pub fn test_run_netdev(&mut self, packet: &[u8]) -> Result<TestRunOutput, BpfError> {
        self.load_netdev()?;
        self.test_run_program(PROG_FROM_NETDEV, packet, 1)
            .map(|(out, _)| out)
    }

    fn test_run_inner(
        &mut self,
        from_pod: bool,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(TestRunOutput, std::time::Duration), BpfError> {
        let name = if from_pod { PROG_FROM_POD } else { PROG_TO_POD };
        self.test_run_program(name, packet, repeat)
    }

    fn test_run_program(
        &mut self,
        name: &'static str,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(TestRunOutput, std::time::Duration), BpfError> {
        let prog = classifier(&mut self.ebpf, name)?;
        test_run_with(name, packet, None, repeat, |opts| prog.test_run(opts))
    }
}

/// Runs a program `repeat` times on `packet` (and the context `ctx_in`)
/// through `run`: what came out, and the kernel's timing.
fn test_run_with(
    name: &'static str,
    packet: &[u8],
    ctx_in: Option<&[u8]>,
    repeat: u32,
    run: impl FnOnce(TestRunOptions<'_>) -> Result<TestRunResult, ProgramError>,
) -> Result<(TestRunOutput, std::time::Duration), BpfError> {
    let mut out = vec![0u8; packet.len() + 256];
    let r = run(TestRunOptions {
        data_in: Some(packet),
        data_out: Some(&mut out),
        ctx_in,
        repeat,
        ..TestRunOptions::default()
    })
    .map_err(|e| program_error(name, "BPF_PROG_TEST_RUN", e))?;
    out.truncate(r.data_size_out as usize);
    let output = TestRunOutput {
        verdict: r.return_value as i32,
        data: out,
    };
    Ok((output, r.duration))
}

/// The cookie of the calling thread's network namespace
/// (`SO_NETNS_COOKIE`, kernel 5.14; the helper the programs compare it
/// with came in 5.7).
fn netns_cookie() -> std::io::Result<u64> {
    use std::os::fd::AsRawFd as _;
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: a valid socket, and an out-buffer of the size passed.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// `<ifindex>:<program>:<interface>`, with the interface's dots written as
/// colons: bpffs refuses names with a dot, and interface names may have
/// dots (`eth0.100`) but never colons.
fn link_pin_name(iface: &str, ifindex: u32, program: &str) -> String {
    format!("{ifindex}:{program}:{}", iface.replace('.', ":"))
}

fn parse_link_pin_name(name: &str) -> Option<(String, u32)> {
    let mut parts = name.splitn(3, ':');
    let (ifindex, _program, iface) = (parts.next()?, parts.next()?, parts.next()?);
    Some((iface.replace(':', "."), ifindex.parse().ok()?))
}

fn ifindex_of(iface: &str) -> Result<u32, BpfError> {
    let c = std::ffi::CString::new(iface).map_err(|_| BpfError::NoInterface(iface.to_string()))?;
    // SAFETY: a valid NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(BpfError::NoInterface(iface.to_string()))
    } else {
        Ok(i)
    }
}

/// Pins a new link at `pin`, its only holder from then on.
fn pin_link(fd: FdLink, pin: &Path) -> Result<(), BpfError> {
    fd.pin(pin).map_err(|e| BpfError::Pin {
        path: pin.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    Ok(())
}

fn link_error(program: &'static str, pin: &Path, e: aya::programs::links::LinkError) -> BpfError {
    BpfError::Link {
        program,
        path: pin.to_path_buf(),
        source: e,
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, BpfError> {
    let prog = ebpf.program_mut(name).ok_or(BpfError::NoProgram {
        object: OBJECT,
        program: name,
    })?;
    prog.try_into()
        .map_err(|e| program_error(name, "open as a tc classifier", e))
}

/// Deletes the entries of `map` for which `doomed` holds.
fn remove_where<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    doomed: impl Fn(&K, &V) -> bool,
) -> Result<(), BpfError> {
    let keys: Vec<K> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| doomed(k, v))
        .map(|(k, _)| k)
        .collect();
    for k in keys {
        ignore_missing(map.remove(&k)).map_err(|e| map_error(name, "purge", e))?;
    }
    Ok(())
}

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// Deleting what is already gone (an LRU eviction, a repeated sync) is fine.
fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names_round_trip_and_have_no_dots() {
        for iface in ["veth0", "eth0.100", "lxc.a.b"] {
            let n = link_pin_name(iface, 42, PROG_FROM_POD);
            assert!(!n.contains('.'), "{n}");
            assert_eq!(parse_link_pin_name(&n), Some((iface.to_string(), 42)));
        }
        assert_eq!(parse_link_pin_name("maps.debug"), None);
    }
}
