//! `service`: the per-packet Service dataplane on pod interfaces.
//!
//! - `from_pod`, tc ingress of a pod's host-side veth (traffic leaving the
//!   pod): translates new and known flows to a Service front end into a
//!   backend (conntrack, session affinity, random choice over the slot set),
//!   translates replies that a backend pod sends back (and hairpin replies,
//!   which it returns straight to the pod), and refuses flows to a service
//!   without backends: TCP with a RST, UDP with ICMP port unreachable.
//! - `to_pod`, tc egress of the same veth (traffic entering the pod):
//!   translates replies from remote or host-routed backends back to the
//!   service address.
//!
//! A pod's flow to a service address costs one `FLOWS` entry, keyed by the
//! client's socket: its packets find it by their source, the backend's
//! replies by their destination. A known flow's packet takes two lookups
//! (the service, its flow) and no look at the backend while the service's
//! slot set is the one the flow saw; a new flow takes one LRU insert.
//!
//! Packets the program does not own, and packets it cannot parse, are passed
//! on untouched (`TC_ACT_UNSPEC`). See `rudder_ebpf_common::service` for
//! the maps.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_SHOT, TC_ACT_UNSPEC,
        bpf_adj_room_mode::{BPF_ADJ_ROOM_MAC, BPF_ADJ_ROOM_NET},
        bpf_fib_lookup as FibParams,
    },
    helpers::{
        bpf_fib_lookup, bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie,
        bpf_ktime_get_ns, bpf_redirect, bpf_redirect_neigh, bpf_skb_change_tail,
    },
    macros::{cgroup_sock_addr, classifier, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{SockAddrContext, TcContext},
};
use rudder_ebpf::parse::{
    ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, IP_MF, IP_OFFSET_MASK, IPPROTO_ICMP,
    IPPROTO_TCP, IPPROTO_UDP, IPV4_MIN_HLEN, Ipv4, VLAN_HLEN,
};
use rudder_ebpf_common::service::{
    AffinityKey, AffinityValue, Backend, CtValue, FLOW_F_HAIRPIN, FlowKey, FlowValue, FragKey,
    FragValue, MAX_AFFINITY, MAX_BACKENDS, MAX_FLOWS, MAX_FRAGMENTS, MAX_SERVICES, MAX_SLOTS,
    MemberKey, REV_F_HAIRPIN, REV_F_ROUTE, RevNatValue, SCOPE_ADDR, SCOPE_NODEPORT, SVC_COUNTERS,
    SVC_F_DSR, SVC_F_KEEP_SOURCE, ServiceKey, ServiceValue, SlotKey, SockKey, SockRevKey,
    SockRevValue, SvcCounter, config,
};

#[path = "service/dsr.rs"]
mod dsr;
#[path = "service/fib.rs"]
mod fib;
#[path = "service/icmp.rs"]
mod icmp;
#[path = "service/netdev.rs"]
mod netdev;
#[path = "service/reject.rs"]
mod reject;
#[path = "service/sock.rs"]
mod sock;
#[path = "service/xdp.rs"]
mod xdp;

use fib::{fib_lookup, fib_redirect, fib_send, route, zeroed_fib};
use icmp::{IcmpScratch, icmp_error, icmp_error_netdev};
use reject::{reject, reject_outlined};

#[map(name = "SERVICES")]
static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::pinned(MAX_SERVICES, BPF_F_NO_PREALLOC);
#[map(name = "SLOTS")]
static SLOTS: HashMap<SlotKey, u32> = HashMap::pinned(MAX_SLOTS, BPF_F_NO_PREALLOC);
#[map(name = "BACKENDS")]
static BACKENDS: HashMap<u32, Backend> = HashMap::pinned(MAX_BACKENDS, BPF_F_NO_PREALLOC);
#[map(name = "MEMBERS")]
static MEMBERS: HashMap<MemberKey, u32> = HashMap::pinned(MAX_SLOTS, BPF_F_NO_PREALLOC);
#[map(name = "FLOWS")]
static FLOWS: LruHashMap<SockKey, FlowValue> = LruHashMap::pinned(MAX_FLOWS, BPF_F_NO_COMMON_LRU);
#[map(name = "CONNTRACK")]
static CONNTRACK: LruHashMap<FlowKey, CtValue> = LruHashMap::pinned(MAX_FLOWS, BPF_F_NO_COMMON_LRU);
#[map(name = "REV_NAT")]
static REV_NAT: LruHashMap<FlowKey, RevNatValue> =
    LruHashMap::pinned(MAX_FLOWS, BPF_F_NO_COMMON_LRU);
#[map(name = "AFFINITY")]
static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(MAX_AFFINITY, BPF_F_NO_COMMON_LRU);
#[map(name = "FRAGMENTS")]
static FRAGMENTS: LruHashMap<FragKey, FragValue> =
    LruHashMap::pinned(MAX_FRAGMENTS, BPF_F_NO_COMMON_LRU);
#[map(name = "SVC_CONFIG")]
static SVC_CONFIG: Array<u32> = Array::pinned(config::LEN, 0);
#[map(name = "SVC_STATS")]
static SVC_STATS: PerCpuArray<u64> = PerCpuArray::pinned(SVC_COUNTERS, 0);
#[map(name = "SOCK_REV")]
static SOCK_REV: LruHashMap<SockRevKey, SockRevValue> =
    LruHashMap::pinned(MAX_FLOWS, BPF_F_NO_COMMON_LRU);
/// The network namespace (cookie) whose sockets the cgroup hooks translate:
/// the node's. 0: none.
#[map(name = "HOST_NETNS")]
static HOST_NETNS: Array<u64> = Array::pinned(1, 0);
/// Per-CPU scratch space for the ICMP error being translated: with it on
/// the stack, `from_netdev` and its ICMP handler exceed 512 bytes.
#[map(name = "SCRATCH_ICMP")]
static SCRATCH_ICMP: PerCpuArray<IcmpScratch> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU scratch space for [`fib_redirect`]'s parameter block.
#[map(name = "SCRATCH_FIB")]
static SCRATCH_FIB: PerCpuArray<FibParams> = PerCpuArray::with_max_entries(1, 0);
/// The node's own addresses (network order → 1): where NodePorts listen.
#[map(name = "NODE_ADDRS")]
static NODE_ADDRS: HashMap<u32, u32> = HashMap::pinned(256, 0);

/// Control-plane maps (written only by user space) allocate entries as they
/// are used, so their limits can be generous without costing memory.
const BPF_F_NO_PREALLOC: u32 = 1;
/// Per-CPU LRU lists: no global lock on the flow tables.
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
const IP_DADDR: usize = 16;
const IP_SADDR: usize = 12;
const IP_CSUM: usize = 10;
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
const TCP_FLAGS: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const TCP_FIN: u8 = 0x01;

#[inline(always)]
fn count(c: SvcCounter) {
    if let Some(slot) = SVC_STATS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU array slot of this CPU; the program is not
        // preempted on it.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn config(index: u32) -> u32 {
    SVC_CONFIG.get(index).copied().unwrap_or(0)
}

/// Seconds since boot, plus the configured clock offset (tests only).
#[inline(always)]
fn now_s() -> u32 {
    // SAFETY: no preconditions.
    let ns = unsafe { bpf_ktime_get_ns() };
    ((ns / 1_000_000_000) as u32).wrapping_add(config(config::CLOCK_OFFSET))
}

/// The packet's layer offsets and 5-tuple (addresses and ports as they
/// appear on the wire).
#[derive(Clone, Copy)]
struct Packet {
    l3: usize,
    l4: usize,
    ip: Ipv4,
    /// Network-order values, as loaded from the packet.
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    ip_id: u16,
    /// The IP header checksum, host order.
    ip_csum: u16,
}

impl Packet {
    fn flow(&self) -> FlowKey {
        FlowKey {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.ip.protocol,
            _pad: 0,
            _pad2: 0,
        }
    }

    /// The socket that sent the packet.
    fn source_sock(&self) -> SockKey {
        SockKey {
            addr: self.saddr,
            port: self.sport,
            proto: self.ip.protocol,
            _pad: 0,
        }
    }

    /// The socket the packet is for.
    fn dest_sock(&self) -> SockKey {
        SockKey {
            addr: self.daddr,
            port: self.dport,
            proto: self.ip.protocol,
            _pad: 0,
        }
    }

    fn frag_key(&self) -> FragKey {
        FragKey {
            saddr: self.saddr,
            daddr: self.daddr,
            id: self.ip_id,
            proto: self.ip.protocol,
            _pad: 0,
        }
    }

    fn csum_offset(&self) -> usize {
        self.l4
            + if self.ip.protocol == IPPROTO_TCP {
                TCP_CSUM
            } else {
                UDP_CSUM
            }
    }

    fn l4_flags(&self) -> u64 {
        // A UDP checksum of 0 means "none" and must stay 0.
        if self.ip.protocol == IPPROTO_UDP {
            u64::from(BPF_F_MARK_MANGLED_0)
        } else {
            0
        }
    }
}

enum Parsed {
    /// TCP or UDP with a complete header (first or only fragment).
    Flow(Packet),
    /// A later fragment: no L4 header.
    LaterFragment(Packet),
    /// An ICMP message (not a fragment): its header starts at `l4`.
    Icmp { l3: usize, l4: usize, saddr: u32 },
    /// Not ours: pass.
    Other,
}

/// A pointer to a `T` at `off` in the packet's linear data, if it is all
/// there. Reads and writes through it are checked by the verifier against
/// `data_end`, and cost no helper call.
#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut T)
}

/// Reads a `T` at `off`, pulling the headers into the linear data first if
/// they are not there yet (rare: GSO or fragmented buffers).
#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    let p = match ptr_at::<T>(ctx, off) {
        Some(p) => p,
        None => {
            ctx.pull_data((off + size_of::<T>()) as u32).ok()?;
            ptr_at::<T>(ctx, off)?
        }
    };
    // SAFETY: `p` is within the packet (checked above); the read is
    // unaligned-safe.
    Some(unsafe { core::ptr::read_unaligned(p) })
}

/// Writes `v` at `off` in the packet.
#[inline(always)]
fn write<T>(ctx: &TcContext, off: usize, v: T) -> Result<(), ()> {
    let p = ptr_at::<T>(ctx, off).ok_or(())?;
    // SAFETY: `p` is within the packet (checked above); tc unclones the
    // buffer before a program that writes to it runs.
    unsafe { core::ptr::write_unaligned(p, v) };
    Ok(())
}

#[inline(always)]
fn parse(ctx: &TcContext) -> Parsed {
    let Some(mut ethertype) = read::<u16>(ctx, 12).map(u16::from_be) else {
        return Parsed::Other;
    };
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(t) = read::<u16>(ctx, l3 + 2).map(u16::from_be) else {
            return Parsed::Other;
        };
        ethertype = t;
        l3 += VLAN_HLEN;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            let Some(t) = read::<u16>(ctx, l3 + 2).map(u16::from_be) else {
                return Parsed::Other;
            };
            ethertype = t;
            l3 += VLAN_HLEN;
        }
    }
    if ethertype != ETH_P_IP {
        return Parsed::Other;
    }
    let Some(h) = read::<[u8; 20]>(ctx, l3) else {
        return Parsed::Other;
    };
    if h[0] >> 4 != 4 {
        return Parsed::Other;
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if header_len < IPV4_MIN_HLEN || total_len < header_len || (ctx.len() as usize) < l3 + total_len
    {
        return Parsed::Other;
    }
    let protocol = h[9];
    if protocol == IPPROTO_ICMP {
        let frag = u16::from_be_bytes([h[6], h[7]]);
        if frag & (IP_MF | IP_OFFSET_MASK) != 0 {
            return Parsed::Other;
        }
        let saddr = u32::from_ne_bytes([h[12], h[13], h[14], h[15]]);
        return Parsed::Icmp {
            l3,
            l4: l3 + header_len,
            saddr,
        };
    }
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return Parsed::Other;
    }
    let ip = Ipv4 {
        header_len,
        total_len,
        protocol,
        frag: u16::from_be_bytes([h[6], h[7]]),
        saddr: 0,
        daddr: 0,
    };
    let saddr = u32::from_ne_bytes([h[12], h[13], h[14], h[15]]);
    let daddr = u32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
    let ip_id = u16::from_ne_bytes([h[4], h[5]]);
    let ip_csum = u16::from_be_bytes([h[10], h[11]]);
    let l4 = l3 + header_len;
    let mut p = Packet {
        l3,
        l4,
        ip,
        saddr,
        daddr,
        sport: 0,
        dport: 0,
        ip_id,
        ip_csum,
    };
    if ip.is_later_fragment() {
        return Parsed::LaterFragment(p);
    }
    let l4_len = total_len - header_len;
    let min = if protocol == IPPROTO_TCP { 20 } else { 8 };
    if l4_len < min {
        count(SvcCounter::Malformed);
        return Parsed::Other;
    }
    let Some(ports) = read::<[u16; 2]>(ctx, l4) else {
        return Parsed::Other;
    };
    p.sport = ports[0];
    p.dport = ports[1];
    Parsed::Flow(p)
}

/// Rewrites the source and/or destination of a TCP/UDP packet, fixing the IP
/// and L4 checksums, and remembers the rewrite for later fragments.
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    p: &Packet,
    new_saddr: u32,
    new_sport: u16,
    new_daddr: u32,
    new_dport: u16,
) -> Result<(), ()> {
    // Fields first (direct writes), then the checksum helpers: they change
    // only the checksum fields, and handle CHECKSUM_PARTIAL buffers.
    if new_daddr != p.daddr {
        write(ctx, p.l3 + IP_DADDR, new_daddr)?;
    }
    if new_saddr != p.saddr {
        write(ctx, p.l3 + IP_SADDR, new_saddr)?;
    }
    if new_dport != p.dport {
        write(ctx, p.l4 + 2, new_dport)?;
    }
    if new_sport != p.sport {
        write(ctx, p.l4, new_sport)?;
    }
    let csum = p.csum_offset();
    let l4f = p.l4_flags();
    let addr_flags = u64::from(BPF_F_PSEUDO_HDR) | 4 | l4f;
    // The IP header checksum is computed here (RFC 1624) and written with
    // the addresses: it has no offload state for a helper to keep.
    if new_daddr != p.daddr || new_saddr != p.saddr {
        let ip_csum = csum_update32(
            csum_update32(p.ip_csum, p.daddr, new_daddr),
            p.saddr,
            new_saddr,
        );
        write(ctx, p.l3 + IP_CSUM, ip_csum.to_be())?;
    }
    if new_daddr != p.daddr {
        ctx.l4_csum_replace(csum, u64::from(p.daddr), u64::from(new_daddr), addr_flags)
            .map_err(|_| ())?;
    }
    if new_saddr != p.saddr {
        ctx.l4_csum_replace(csum, u64::from(p.saddr), u64::from(new_saddr), addr_flags)
            .map_err(|_| ())?;
    }
    if new_dport != p.dport {
        ctx.l4_csum_replace(csum, u64::from(p.dport), u64::from(new_dport), 2 | l4f)
            .map_err(|_| ())?;
    }
    if new_sport != p.sport {
        ctx.l4_csum_replace(csum, u64::from(p.sport), u64::from(new_sport), 2 | l4f)
            .map_err(|_| ())?;
    }
    if p.ip.frag & IP_MF != 0 {
        let v = FragValue {
            new_saddr,
            new_daddr,
        };
        if FRAGMENTS.insert(p.frag_key(), v, 0).is_err() {
            count(SvcCounter::MapFull);
        }
    }
    Ok(())
}

/// Translates a later fragment as its first fragment was. Returns the
/// verdict, or the addresses it now carries if the caller is to route it.
#[inline(always)]
fn translate_fragment(ctx: &TcContext, p: &Packet) -> Result<FragValue, i32> {
    // SAFETY: the value is copied out before any other map operation.
    let Some(v) = (unsafe { FRAGMENTS.get(p.frag_key()) }).copied() else {
        count(SvcCounter::FragmentUnknown);
        return Err(TC_ACT_UNSPEC);
    };
    for (off, old, new) in [
        (IP_DADDR, p.daddr, v.new_daddr),
        (IP_SADDR, p.saddr, v.new_saddr),
    ] {
        if old != new
            && (ctx.store(p.l3 + off, &new, 0).is_err()
                || ctx
                    .l3_csum_replace(p.l3 + IP_CSUM, u64::from(old), u64::from(new), 4)
                    .is_err())
        {
            return Err(TC_ACT_SHOT);
        }
    }
    count(SvcCounter::Fragment);
    Ok(v)
}

/// A later fragment on a pod interface: translated, then on through the
/// stack.
#[inline(always)]
fn rewrite_fragment(ctx: &TcContext, p: &Packet) -> i32 {
    translate_fragment(ctx, p).map_or_else(|verdict| verdict, |_| TC_ACT_UNSPEC)
}

/// Swaps the Ethernet addresses, so the frame can go back where it came from.
#[inline(always)]
fn swap_macs(ctx: &TcContext) -> Result<(), ()> {
    let macs: [u8; 12] = ctx.load(0).map_err(|_| ())?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    ctx.store(0, &swapped, 0).map_err(|_| ())
}

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context pointer the kernel passed; a verifier-checked read.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Translates a reply (backend → client) on a pod interface back to the
/// service address, if it belongs to a translated flow. Returns the verdict
/// if it did.
#[inline(always)]
fn reverse(ctx: &TcContext, p: &Packet, from_pod: bool) -> Option<i32> {
    // A reply to a pod's flow to a service address, found by the client
    // socket it goes to.
    // SAFETY: a reference into the map, read before any map update.
    if let Some(f) = unsafe { FLOWS.get(p.dest_sock()) }
        && f.backend_addr == p.saddr
        && f.backend_port == p.sport
        && f.flags & FLOW_F_HAIRPIN == 0
    {
        let (vip, vport) = (f.vip, f.vport);
        if rewrite(ctx, p, vip, vport, p.daddr, p.dport).is_err() {
            return Some(TC_ACT_SHOT);
        }
        count(SvcCounter::Reverse);
        return Some(TC_ACT_UNSPEC);
    }
    reverse_tracked(ctx, p, from_pod)
}

/// Translates a reply found in `REV_NAT` (flows whose replies come back to
/// another address than the client's socket, or share its socket).
#[inline(always)]
fn reverse_tracked(ctx: &TcContext, p: &Packet, from_pod: bool) -> Option<i32> {
    // SAFETY: copied out at once.
    let rev = unsafe { REV_NAT.get(p.flow()) }.copied()?;
    let hairpin = rev.flags & REV_F_HAIRPIN != 0;
    let client_port = if rev.client_port != 0 {
        rev.client_port
    } else {
        p.dport
    };
    if rewrite(ctx, p, rev.vip, rev.vport, rev.client, client_port).is_err() {
        return Some(TC_ACT_SHOT);
    }
    count(SvcCounter::Reverse);
    if hairpin && from_pod {
        // The client is the pod this reply came from: send it straight back.
        if swap_macs(ctx).is_err() {
            return Some(TC_ACT_SHOT);
        }
        // SAFETY: no preconditions.
        return Some(unsafe { bpf_redirect(ifindex(ctx), 0) } as i32);
    }
    if rev.flags & REV_F_ROUTE != 0 {
        return Some(route(ctx, p, rev.vip, rev.client, rev.vport, client_port));
    }
    Some(TC_ACT_UNSPEC)
}

/// Picks a backend for a new flow: affinity first, else a random slot.
/// The clock is read only for affinity.
#[inline(always)]
fn select(client: u32, svc: &ServiceValue) -> Option<(u32, Backend)> {
    let now = if svc.affinity_timeout != 0 {
        now_s()
    } else {
        0
    };
    if svc.affinity_timeout != 0 {
        let key = AffinityKey {
            client,
            service_id: svc.service_id,
        };
        // SAFETY: copied out at once.
        if let Some(a) = unsafe { AFFINITY.get(key) }.copied() {
            let member = MemberKey {
                service_id: svc.service_id,
                backend_id: a.backend_id,
            };
            let fresh = now.wrapping_sub(a.last_used) <= svc.affinity_timeout;
            // SAFETY: copied out at once.
            if fresh
                && unsafe { MEMBERS.get(member) }.is_some()
                && let Some(b) = unsafe { BACKENDS.get(a.backend_id) }.copied()
            {
                count(SvcCounter::AffinityHit);
                let v = AffinityValue {
                    backend_id: a.backend_id,
                    last_used: now,
                };
                let _ = AFFINITY.insert(key, v, 0);
                return Some((a.backend_id, b));
            }
        }
    }
    let count = core::num::NonZeroU32::new(svc.count)?;
    // SAFETY: no preconditions.
    let slot = unsafe { bpf_get_prandom_u32() } % count;
    let key = SlotKey {
        slots_id: svc.slots_id,
        slot,
    };
    // SAFETY: copied out at once.
    let backend_id = unsafe { SLOTS.get(key) }.copied()?;
    // SAFETY: copied out at once.
    let b = unsafe { BACKENDS.get(backend_id) }.copied()?;
    if svc.affinity_timeout != 0 {
        let key = AffinityKey {
            client,
            service_id: svc.service_id,
        };
        let _ = AFFINITY.insert(
            key,
            AffinityValue {
                backend_id,
                last_used: now,
            },
            0,
        );
    }
    Some((backend_id, b))
}

#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    let p = match parse(&ctx) {
        Parsed::Flow(p) => p,
        Parsed::LaterFragment(p) => return rewrite_fragment(&ctx, &p),
        Parsed::Icmp { l3, l4, saddr } => return icmp_error(&ctx, l3, l4, saddr),
        Parsed::Other => return TC_ACT_UNSPEC,
    };
    // A reply never has a service address as its destination, so the
    // service lookup comes first and the reverse lookup only on a miss.
    let Some((svc, node_port)) = lookup(&p) else {
        return reverse(&ctx, &p, true).unwrap_or(TC_ACT_UNSPEC);
    };
    if node_port {
        // Replies come from a node address: tracked by their own key.
        return tracked_flow(&ctx, &p, &svc, true);
    }
    let Some(entry) = FLOWS.get_ptr_mut(p.source_sock()) else {
        return new_flow(&ctx, &p, &svc);
    };
    // SAFETY: a valid map value pointer, copied out at once.
    let f = unsafe { *entry };
    if f.vip != p.daddr || f.vport != p.dport {
        // The socket's entry is a flow to another destination.
        return tracked_flow(&ctx, &p, &svc, false);
    }
    // A known flow keeps its backend while the backend exists.
    if f.service_id == svc.service_id && backend_current(entry, &f, &svc) {
        if rewrite(
            &ctx,
            &p,
            f.nat_saddr,
            p.sport,
            f.backend_addr,
            f.backend_port,
        )
        .is_err()
        {
            return TC_ACT_SHOT;
        }
        count(SvcCounter::Established);
        return TC_ACT_UNSPEC;
    }
    count(SvcCounter::StaleBackend);
    new_flow(&ctx, &p, &svc)
}

/// Whether a known flow's backend still exists. While the service keeps
/// the slot set the flow last saw, it does, without a lookup; after a
/// change of the set the backend map says, and the flow notes the new set.
#[inline(always)]
fn backend_current(entry: *mut FlowValue, f: &FlowValue, svc: &ServiceValue) -> bool {
    if f.slots_id == svc.slots_id {
        return true;
    }
    // SAFETY: copied out at once.
    match unsafe { BACKENDS.get(f.backend_id) }.copied() {
        Some(b) if b.addr == f.backend_addr && b.port == f.backend_port => {
            // SAFETY: a valid map value pointer; a racing update of the
            // same value is harmless.
            unsafe { (*entry).slots_id = svc.slots_id };
            true
        }
        _ => false,
    }
}

/// A pod's new flow to a service address: one `FLOWS` entry under its
/// socket (plus a reverse entry for a hairpin flow, whose replies come back
/// to the hairpin address).
#[inline(always)]
fn new_flow(ctx: &TcContext, p: &Packet, svc: &ServiceValue) -> i32 {
    let (backend_id, b, nat_saddr) = match pick(ctx, p, svc) {
        Ok(picked) => picked,
        Err(verdict) => return verdict,
    };
    let hairpin = nat_saddr != p.saddr;
    let f = FlowValue {
        vip: p.daddr,
        vport: p.dport,
        flags: if hairpin { FLOW_F_HAIRPIN } else { 0 },
        service_id: svc.service_id,
        backend_id,
        slots_id: svc.slots_id,
        backend_addr: b.addr,
        backend_port: b.port,
        _pad: 0,
        nat_saddr,
    };
    let recorded = FLOWS.insert(p.source_sock(), f, 0).is_ok()
        && (!hairpin || insert_rev_nat(p, &b, nat_saddr, svc, 0).is_ok());
    translate_new(ctx, p, recorded, nat_saddr, &b)
}

/// A new pod flow's backend and source address: refuses the flow (the
/// verdict) when the service has no backends; the hairpin address as the
/// source when the pod reaches itself, so the reply comes back through this
/// program.
#[inline(always)]
fn pick(ctx: &TcContext, p: &Packet, svc: &ServiceValue) -> Result<(u32, Backend, u32), i32> {
    if svc.count == 0 {
        return Err(reject(ctx, p));
    }
    let Some((backend_id, b)) = select(p.saddr, svc) else {
        // The slot set is being replaced or is inconsistent: leave the packet
        // alone rather than guess.
        count(SvcCounter::MapFull);
        return Err(TC_ACT_UNSPEC);
    };
    let hairpin_addr = config(config::HAIRPIN_ADDR);
    let hairpin = b.addr == p.saddr && hairpin_addr != 0;
    Ok((backend_id, b, if hairpin { hairpin_addr } else { p.saddr }))
}

/// Sends a new pod flow's first packet to its backend once the flow is
/// `recorded` (a full table leaves the packet untouched).
#[inline(always)]
fn translate_new(ctx: &TcContext, p: &Packet, recorded: bool, nat_saddr: u32, b: &Backend) -> i32 {
    if !recorded {
        count(SvcCounter::MapFull);
        return TC_ACT_UNSPEC;
    }
    if rewrite(ctx, p, nat_saddr, p.sport, b.addr, b.port).is_err() {
        return TC_ACT_SHOT;
    }
    count(SvcCounter::NewFlow);
    TC_ACT_UNSPEC
}

/// Records the reverse translation of a flow whose replies do not come
/// back to the client's own socket.
#[inline(always)]
fn insert_rev_nat(
    p: &Packet,
    b: &Backend,
    nat_saddr: u32,
    svc: &ServiceValue,
    flags: u16,
) -> Result<(), ()> {
    let hairpin = b.addr == p.saddr && nat_saddr != p.saddr;
    let rev_key = FlowKey {
        saddr: b.addr,
        daddr: nat_saddr,
        sport: b.port,
        dport: p.sport,
        proto: p.ip.protocol,
        _pad: 0,
        _pad2: 0,
    };
    let rev = RevNatValue {
        vip: p.daddr,
        vport: p.dport,
        flags: flags | if hairpin { REV_F_HAIRPIN } else { 0 },
        client: p.saddr,
        service_id: svc.service_id,
        client_port: p.sport,
        _pad: 0,
    };
    REV_NAT.insert(rev_key, rev, 0).map_err(|_| ())
}

/// A pod's flow tracked by its whole 5-tuple in `CONNTRACK`, with its
/// replies in `REV_NAT`: flows to a NodePort (replies come from a node
/// address, which the program routes) and flows whose socket already has a
/// `FLOWS` entry for another destination.
#[inline(always)]
fn tracked_flow(ctx: &TcContext, p: &Packet, svc: &ServiceValue, node_port: bool) -> i32 {
    let flow = p.flow();
    if let Some(entry) = CONNTRACK.get_ptr_mut(flow) {
        // SAFETY: a valid map value pointer, copied out at once.
        let ct = unsafe { *entry };
        // SAFETY: copied out at once.
        if let Some(b) = unsafe { BACKENDS.get(ct.backend_id) }.copied()
            && ct.service_id == svc.service_id
        {
            if rewrite(ctx, p, ct.nat_saddr, p.sport, b.addr, b.port).is_err() {
                return TC_ACT_SHOT;
            }
            count(SvcCounter::Established);
            return TC_ACT_UNSPEC;
        }
        count(SvcCounter::StaleBackend);
    }
    let (backend_id, b, nat_saddr) = match pick(ctx, p, svc) {
        Ok(picked) => picked,
        Err(verdict) => return verdict,
    };
    let ct = CtValue {
        backend_id,
        service_id: svc.service_id,
        nat_saddr,
        last_seen: now_s(),
        nat_sport: p.sport,
        flags: 0,
    };
    // A NodePort's replies come from a node address: the program routes
    // them (the stack drops forwarded packets from its own addresses).
    let route_flag = if node_port { REV_F_ROUTE } else { 0 };
    let recorded = CONNTRACK.insert(flow, ct, 0).is_ok()
        && insert_rev_nat(p, &b, nat_saddr, svc, route_flag).is_ok();
    translate_new(ctx, p, recorded, nat_saddr, &b)
}

/// The service a TCP/UDP packet is addressed to: its own front end, or a
/// NodePort when it is for one of the node's addresses. `true` for a
/// NodePort.
#[inline(always)]
fn lookup(p: &Packet) -> Option<(ServiceValue, bool)> {
    let mut key = ServiceKey {
        addr: p.daddr,
        port: p.dport,
        proto: p.ip.protocol,
        scope: SCOPE_ADDR,
    };
    // SAFETY: copied out at once.
    if let Some(v) = unsafe { SERVICES.get(key) }.copied() {
        return Some((v, false));
    }
    // SAFETY: copied out at once.
    unsafe { NODE_ADDRS.get(p.daddr) }?;
    key.addr = 0;
    key.scope = SCOPE_NODEPORT;
    // SAFETY: copied out at once.
    let mut v = unsafe { SERVICES.get(key) }.copied()?;
    if v.flags & SVC_F_DSR != 0 && !dsr::known_node(p.daddr) {
        // An address no Node object names: a backend's node would not
        // believe the option, so its flows take source NAT. (Looked up
        // only for such services: every node-port packet comes here.)
        v.flags &= !SVC_F_DSR;
    }
    Some((v, true))
}

#[classifier]
pub fn to_pod(ctx: TcContext) -> i32 {
    match parse(&ctx) {
        Parsed::Flow(p) => {
            dsr::learn(&ctx, &p);
            reverse(&ctx, &p, false).unwrap_or(TC_ACT_UNSPEC)
        }
        Parsed::LaterFragment(p) => rewrite_fragment(&ctx, &p),
        Parsed::Icmp { l3, l4, saddr } => icmp_error(&ctx, l3, l4, saddr),
        Parsed::Other => TC_ACT_UNSPEC,
    }
}

/// RFC 1624 incremental update of a 16-bit one's-complement checksum for a
/// 32-bit field changing from `old` to `new` (both as in the packet).
#[inline(always)]
fn csum_update32(csum: u16, old: u32, new: u32) -> u16 {
    let (o, n) = (old.to_ne_bytes(), new.to_ne_bytes());
    let mut sum = u32::from(!csum);
    for i in [0, 2] {
        sum += u32::from(!u16::from_be_bytes([o[i], o[i + 1]]));
        sum += u32::from(u16::from_be_bytes([n[i], n[i + 1]]));
    }
    fold(sum)
}

/// Folds a 32-bit one's-complement sum into the final checksum.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Adds the big-endian 16-bit words of `b` to `sum`.
#[inline(always)]
fn sum_words<const N: usize>(mut sum: u32, b: &[u8; N]) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += (u32::from(b[i]) << 8) | u32::from(b[i + 1]);
        i += 2;
    }
    sum
}
