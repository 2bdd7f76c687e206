//! NodePort acceleration at XDP: `xdp_from_netdev` on the node's uplinks,
//! in the driver (native mode) only, beside `from_netdev` on tc, which
//! handles everything the XDP path passes on (see the program's module).
//!
//! Generic (skb-mode) XDP is never used: it runs after the socket buffer is
//! allocated, where tc already is, and would only add a second pass.
//!
//! Like the tc links, the XDP link is pinned under `<pin dir>/links/`
//! (kernel 5.9's `bpf_link`), so it stays attached while the agent
//! restarts, and a new agent swaps its program into the pinned link
//! atomically. A program of someone else's on the interface is never
//! replaced: attaching then fails, and the caller falls back to tc.
//!
//! A veth uplink (nodes as containers) carries its sender's checksum
//! offload into XDP as partial checksums, which an `XDP_TX`ed frame cannot
//! keep: acceleration on one needs transmit checksumming off on the
//! sending side, so `best-effort` skips virtual devices and `native`
//! takes them only when asked.

use aya::{
    maps::{MapData, PerCpuArray},
    programs::{
        TestRun as _, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use rudder_ebpf_common::service::{
    DsrCounter, MAP_DSR_STATS, MAP_XDP_STATS, PROG_XDP_FROM_NETDEV, XdpCounter,
};

use super::{
    BpfError, OBJECT, ServiceDataplane, TestRunOutput, ifindex_of, link_error, link_pin_name,
    map_error, pin_link, program_error, test_run_with,
};

/// What the node asks of NodePort acceleration (Cilium's
/// `loadBalancer.acceleration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acceleration {
    /// tc only (the default: some drivers reset their rings, and so the
    /// link, when an XDP program is attached).
    #[default]
    Disabled,
    /// XDP in the driver on every uplink, or an error.
    Native,
    /// XDP in the driver on the uplinks whose driver has it (physical
    /// devices only), tc alone on the others.
    BestEffort,
}

impl std::str::FromStr for Acceleration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disabled" => Ok(Self::Disabled),
            "native" => Ok(Self::Native),
            "best-effort" => Ok(Self::BestEffort),
            other => Err(format!(
                "unknown NodePort acceleration {other:?}: expected disabled, native or best-effort"
            )),
        }
    }
}

/// Whether `iface` is a physical device (it has a `device` link in sysfs),
/// the only kind `best-effort` accelerates.
pub fn is_physical(iface: &str) -> bool {
    std::path::Path::new("/sys/class/net")
        .join(iface)
        .join("device")
        .exists()
}

/// Named counters summed over CPUs, as `(name, value)`.
pub type XdpCounts = Vec<(&'static str, u64)>;

/// Every counter of a per-CPU counter map (owned or borrowed), by name.
pub(super) fn read_named_counts<T: std::borrow::Borrow<MapData>>(
    stats: &PerCpuArray<T, u64>,
    map: &'static str,
    names: impl IntoIterator<Item = (u32, &'static str)>,
) -> Result<XdpCounts, BpfError> {
    names
        .into_iter()
        .map(|(index, name)| {
            let v = stats
                .get(&index, 0)
                .map_err(|e| map_error(map, &format!("read {name}"), e))?;
            Ok((name, v.iter().sum()))
        })
        .collect()
}

/// Every counter of the XDP path.
pub(super) fn read_xdp_counts<T: std::borrow::Borrow<MapData>>(
    stats: &PerCpuArray<T, u64>,
) -> Result<XdpCounts, BpfError> {
    let names = XdpCounter::ALL.iter().map(|c| (*c as u32, c.name()));
    read_named_counts(stats, MAP_XDP_STATS, names)
}

/// Every counter of direct server return.
pub(super) fn read_dsr_counts<T: std::borrow::Borrow<MapData>>(
    stats: &PerCpuArray<T, u64>,
) -> Result<XdpCounts, BpfError> {
    let names = DsrCounter::ALL.iter().map(|c| (*c as u32, c.name()));
    read_named_counts(stats, MAP_DSR_STATS, names)
}

impl ServiceDataplane {
    /// Loads `xdp_from_netdev` (without attaching it): whether the kernel
    /// accepts it. Public for `preflight`.
    pub fn load_xdp(&mut self) -> Result<(), BpfError> {
        self.xdp_program().map(drop)
    }

    fn xdp_program(&mut self) -> Result<&mut Xdp, BpfError> {
        let prog = self
            .ebpf
            .program_mut(PROG_XDP_FROM_NETDEV)
            .ok_or(BpfError::NoProgram {
                object: OBJECT,
                program: PROG_XDP_FROM_NETDEV,
            })?;
        let prog: &mut Xdp = prog
            .try_into()
            .map_err(|e| program_error(PROG_XDP_FROM_NETDEV, "open as an XDP program", e))?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| {
                program_error(
                    PROG_XDP_FROM_NETDEV,
                    "load (needs kernel 5.10: bpf_fib_lookup from XDP)",
                    e,
                )
            })?;
        }
        Ok(prog)
    }

    /// Attaches `xdp_from_netdev` to `iface` in the driver (in the calling
    /// thread's network namespace), or swaps it into the link pinned by an
    /// earlier agent. Errors when the driver has no native XDP, the kernel
    /// has no XDP links, or another program holds the interface.
    pub fn attach_xdp(&mut self, iface: &str) -> Result<(), BpfError> {
        self.load_netdev()?;
        let ifindex = ifindex_of(iface)?;
        let dir = self.ensure_links_dir()?;
        let pin = dir.join(link_pin_name(iface, ifindex, PROG_XDP_FROM_NETDEV));
        let name = PROG_XDP_FROM_NETDEV;
        let prog = self.xdp_program()?;
        if pin.exists() {
            let link = PinnedLink::from_pin(&pin).map_err(|e| link_error(name, &pin, e))?;
            let link =
                XdpLink::try_from(FdLink::from(link)).map_err(|e| link_error(name, &pin, e))?;
            let action = format!("replace the program in {}", pin.display());
            let id = prog
                .attach_to_link(link)
                .map_err(|e| program_error(name, &action, e))?;
            drop(
                prog.take_link(id)
                    .map_err(|e| program_error(name, "take the link", e))?,
            );
            return Ok(());
        }
        let action = format!("attach to {iface} in the driver (native XDP)");
        let id = prog
            .attach_to_if_index(ifindex, XdpMode::Driver)
            .map_err(|e| program_error(name, &action, e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| program_error(name, "take the link", e))?;
        // An XDP `bpf_link` (5.9): `from_netdev`, loaded first, already
        // needs 5.10, so aya's netlink fallback is not expected here.
        let fd = FdLink::try_from(link).map_err(|e| link_error(name, &pin, e))?;
        pin_link(fd, &pin)
    }

    /// Detaches `xdp_from_netdev` from `iface` if this agent (or an earlier
    /// one) attached it. Returns whether it was attached.
    pub fn detach_xdp(&mut self, iface: &str) -> Result<bool, BpfError> {
        let Ok(ifindex) = ifindex_of(iface) else {
            return Ok(false);
        };
        let pin = self
            .links_dir()
            .join(link_pin_name(iface, ifindex, PROG_XDP_FROM_NETDEV));
        match std::fs::remove_file(&pin) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(BpfError::Pin { path: pin, source }),
        }
    }

    /// The XDP path's counters (all zero before it ever ran).
    pub fn xdp_counts(&self) -> Result<XdpCounts, BpfError> {
        read_xdp_counts(&self.counter_map(MAP_XDP_STATS)?)
    }

    /// Direct server return's counters.
    pub fn dsr_counts(&self) -> Result<XdpCounts, BpfError> {
        read_dsr_counts(&self.counter_map(MAP_DSR_STATS)?)
    }

    /// One of the object's per-CPU counter maps. The maps exist from the
    /// object's load: no program needs loading to read them.
    fn counter_map(&self, name: &'static str) -> Result<PerCpuArray<&MapData, u64>, BpfError> {
        let map = self.ebpf.map(name).ok_or(BpfError::NoMap {
            object: OBJECT,
            map: name,
        })?;
        PerCpuArray::<&MapData, u64>::try_from(map).map_err(|e| map_error(name, "open", e))
    }

    /// Runs `xdp_from_netdev` once on `packet` through `BPF_PROG_TEST_RUN`,
    /// as if it had arrived on interface `ifindex` (of the calling thread's
    /// network namespace), with `repeat` runs timed by the kernel.
    pub fn test_run_xdp(
        &mut self,
        packet: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<(TestRunOutput, std::time::Duration), BpfError> {
        let prog = self.xdp_program()?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let md: [u32; 6] = [0, packet.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        test_run_with(PROG_XDP_FROM_NETDEV, packet, Some(&ctx), repeat, |opts| {
            prog.test_run(opts)
        })
    }
}
