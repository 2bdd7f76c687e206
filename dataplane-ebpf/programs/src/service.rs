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
    SVC_F_KEEP_SOURCE, ServiceKey, ServiceValue, SlotKey, SockKey, SockRevKey, SockRevValue,
    SvcCounter, config,
};

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
/// Per-CPU scratch space for the entries of a new flow from outside.
#[map(name = "SCRATCH_FLOW")]
static SCRATCH_FLOW: PerCpuArray<FlowScratch> = PerCpuArray::with_max_entries(1, 0);

/// The conntrack and reverse-NAT entries `from_netdev` makes for a new flow.
#[derive(Clone, Copy)]
struct FlowScratch {
    ct: CtValue,
    rev_key: FlowKey,
    rev: RevNatValue,
}

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
    if let Some(f) = unsafe { FLOWS.get(&p.dest_sock()) }
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

/// The backend of a new flow from outside the cluster to a service that
/// asks for Maglev: the slot of the flow's hash in the service's table
/// (`size` slots in set `slots_id`). The same table and hash on every node,
/// so a flow an upstream router moves to another node keeps its backend.
/// (Session affinity, a per-node table, takes precedence: the caller
/// chooses.)
///
/// A function of its own (a BPF-to-BPF call) with scalar arguments, as
/// `icmp_error_netdev`: inlined, its locals push `from_netdev`'s frame past
/// the 512-byte stack.
#[inline(never)]
fn maglev_backend(slots_id: u32, size: u32, hash: u32) -> Option<u32> {
    // By a non-zero divisor: no division-by-zero branch (whose panic has
    // no exit, which the verifier refuses).
    let size = core::num::NonZeroU32::new(size)?;
    let key = SlotKey {
        slots_id,
        slot: hash % size,
    };
    // SAFETY: copied out at once.
    unsafe { SLOTS.get(key) }.copied()
}

/// A hash of the flow's 5-tuple with no per-node seed (MurmurHash3's
/// finaliser over each word): every node computes the same one.
#[inline(always)]
fn flow_hash(p: &Packet) -> u32 {
    // Word by word, not over an array: an array would take stack.
    let ports = (u32::from(p.sport) << 16) | u32::from(p.dport);
    let step = |h: u32, w: u32| fmix32(h ^ w).wrapping_mul(5).wrapping_add(0xe654_6b64);
    let h = step(0x9747_b28c, p.saddr);
    let h = step(h, p.daddr);
    let h = step(h, ports);
    fmix32(step(h, u32::from(p.ip.protocol)))
}

#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
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
        _pad: 0,
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
    unsafe { SERVICES.get(key) }.copied().map(|v| (v, true))
}

/// Sends a translated packet on by a FIB lookup and a redirect, as the
/// stack would have routed it (used when its new source is a node address,
/// which the stack refuses to forward, and for traffic from outside).
/// Falls back to the stack when the lookup does not give a next hop.
#[inline(always)]
fn route(ctx: &TcContext, p: &Packet, saddr: u32, daddr: u32, sport: u16, dport: u16) -> i32 {
    fib_redirect(
        ctx,
        p.ip.protocol,
        p.ip.total_len as u16,
        (saddr, sport),
        (daddr, dport),
    )
}

/// The FIB lookup and redirect of [`route`], for a packet of `protocol` and
/// `total_len` bytes between two (address, port) pairs (network order).
#[inline(always)]
fn fib_redirect(
    ctx: &TcContext,
    protocol: u8,
    total_len: u16,
    (saddr, sport): (u32, u16),
    (daddr, dport): (u32, u16),
) -> i32 {
    // The parameter block lives in a per-CPU scratch slot, not on the
    // stack: 64 bytes that `from_netdev` cannot spare.
    let Some(slot) = SCRATCH_FIB.get_ptr_mut(0) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: a valid map value pointer of this CPU, used only until the
    // program returns (tc programs do not nest on a CPU); an all-zero
    // bpf_fib_lookup is a valid request to fill in.
    let fib = unsafe {
        core::ptr::write_bytes(slot, 0, 1);
        &mut *slot
    };
    fib.family = 2; // AF_INET
    fib.l4_protocol = protocol;
    fib.sport = sport;
    fib.dport = dport;
    fib.__bindgen_anon_1.tot_len = total_len;
    fib.ifindex = ifindex(ctx);
    fib.__bindgen_anon_3.ipv4_src = saddr;
    fib.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: the skb context and a parameter block of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), fib, size_of::<FibParams>() as i32, 0) };
    if rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&fib.dmac);
        macs[6..].copy_from_slice(&fib.smac);
        if ctx.store(0, &macs, 0).is_err() {
            return TC_ACT_SHOT;
        }
        count(SvcCounter::Routed);
        // SAFETY: no preconditions.
        return unsafe { bpf_redirect(fib.ifindex, 0) } as i32;
    }
    if rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        count(SvcCounter::Routed);
        // SAFETY: no neighbour parameters: the kernel resolves the next hop.
        return unsafe { bpf_redirect_neigh(fib.ifindex, core::ptr::null_mut(), 0, 0) } as i32;
    }
    TC_ACT_UNSPEC
}

/// Picks the source port for source NAT to `nat_saddr`: the client's own
/// if no other flow to the backend uses it, else a random one of the
/// ephemeral range (eight tries).
#[inline(always)]
fn snat_port(p: &Packet, b: &Backend, nat_saddr: u32) -> Option<u16> {
    let mut port = p.sport;
    for _ in 0..8 {
        let key = FlowKey {
            saddr: b.addr,
            daddr: nat_saddr,
            sport: b.port,
            dport: port,
            proto: p.ip.protocol,
            _pad: 0,
            _pad2: 0,
        };
        // SAFETY: copied out at once.
        match unsafe { REV_NAT.get(key) }.copied() {
            None => return Some(port),
            Some(r) if r.client == p.saddr && r.client_port == p.sport => return Some(port),
            Some(_) => {
                // SAFETY: no preconditions.
                let r = unsafe { bpf_get_prandom_u32() } % 28_232;
                port = (32_768 + r as u16).to_be();
            }
        }
    }
    None
}

/// tc ingress of the node's own interfaces: traffic from outside to
/// NodePorts (any node address), externalIPs and LoadBalancer IPs, and the
/// replies of remote backends to flows translated here. New flows take the
/// node's address as their source (so replies come back through this
/// node), unless the service keeps the client's (`externalTrafficPolicy:
/// Local`, whose backends are then all local).
#[classifier]
pub fn from_netdev(ctx: TcContext) -> i32 {
    let p = match parse(&ctx) {
        Parsed::Flow(p) => p,
        // Routed as the first fragment was: a translated fragment may carry
        // a node address as its source, which the stack would not forward.
        Parsed::LaterFragment(p) => {
            return match translate_fragment(&ctx, &p) {
                Ok(v) => route(&ctx, &p, v.new_saddr, v.new_daddr, 0, 0),
                Err(verdict) => verdict,
            };
        }
        Parsed::Icmp { l3, l4, saddr } => return icmp_error_netdev(&ctx, l3, l4, saddr),
        Parsed::Other => return TC_ACT_UNSPEC,
    };
    // SAFETY: copied out at once.
    if let Some(rev) = unsafe { REV_NAT.get(p.flow()) }.copied() {
        if rev.flags & REV_F_ROUTE == 0 {
            // A reply to a pod's flow: the pod's own interface translates it.
            return TC_ACT_UNSPEC;
        }
        return reverse_tracked(&ctx, &p, false).unwrap_or(TC_ACT_UNSPEC);
    }
    let Some((svc, node_port)) = lookup(&p) else {
        return TC_ACT_UNSPEC;
    };
    let flow = p.flow();
    if let Some(entry) = CONNTRACK.get_ptr_mut(flow) {
        // SAFETY: a valid map value pointer, copied out at once.
        let ct = unsafe { *entry };
        // SAFETY: copied out at once.
        if let Some(b) = unsafe { BACKENDS.get(ct.backend_id) }.copied()
            && ct.service_id == svc.service_id
        {
            // SAFETY: as above; a racing update of a timestamp is harmless.
            unsafe { (*entry).last_seen = now_s() };
            if rewrite(&ctx, &p, ct.nat_saddr, ct.nat_sport, b.addr, b.port).is_err() {
                return TC_ACT_SHOT;
            }
            count(SvcCounter::Established);
            return route(&ctx, &p, ct.nat_saddr, b.addr, ct.nat_sport, b.port);
        }
        count(SvcCounter::StaleBackend);
    }
    if svc.count == 0 {
        return reject(&ctx, &p);
    }
    let maglev = svc.maglev_size();
    let picked = if maglev != 0 && svc.affinity_timeout == 0 {
        maglev_backend(svc.maglev_slots_id, maglev, flow_hash(&p)).and_then(|id| {
            // SAFETY: copied out at once.
            unsafe { BACKENDS.get(id) }.copied().map(|b| (id, b))
        })
    } else {
        select(p.saddr, &svc)
    };
    let Some((backend_id, b)) = picked else {
        count(SvcCounter::MapFull);
        return TC_ACT_UNSPEC;
    };
    let keep_source = svc.flags & SVC_F_KEEP_SOURCE != 0;
    let nat_saddr = if keep_source {
        p.saddr
    } else if node_port || unsafe { NODE_ADDRS.get(p.daddr) }.is_some() {
        p.daddr
    } else {
        config(config::NODE_IP)
    };
    if nat_saddr == 0 {
        return TC_ACT_UNSPEC;
    }
    let nat_sport = if keep_source {
        p.sport
    } else {
        match snat_port(&p, &b, nat_saddr) {
            Some(port) => port,
            None => {
                count(SvcCounter::NoPort);
                return TC_ACT_SHOT;
            }
        }
    };
    // The entries are built in a per-CPU scratch slot, not on the stack:
    // `from_netdev` has none to spare.
    let Some(slot) = SCRATCH_FLOW.get_ptr_mut(0) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: a valid map value pointer of this CPU, used only until the
    // program returns (tc programs do not nest on a CPU).
    let sc = unsafe { &mut *slot };
    sc.ct = CtValue {
        backend_id,
        service_id: svc.service_id,
        nat_saddr,
        last_seen: now_s(),
        nat_sport,
        _pad: 0,
    };
    sc.rev_key = FlowKey {
        saddr: b.addr,
        daddr: nat_saddr,
        sport: b.port,
        dport: nat_sport,
        proto: p.ip.protocol,
        _pad: 0,
        _pad2: 0,
    };
    sc.rev = RevNatValue {
        vip: p.daddr,
        vport: p.dport,
        flags: REV_F_ROUTE,
        client: p.saddr,
        service_id: svc.service_id,
        client_port: p.sport,
        _pad: 0,
    };
    if CONNTRACK.insert(&flow, &sc.ct, 0).is_err()
        || REV_NAT.insert(&sc.rev_key, &sc.rev, 0).is_err()
    {
        count(SvcCounter::MapFull);
        return TC_ACT_UNSPEC;
    }
    if rewrite(&ctx, &p, nat_saddr, nat_sport, b.addr, b.port).is_err() {
        return TC_ACT_SHOT;
    }
    count(SvcCounter::External);
    route(&ctx, &p, nat_saddr, b.addr, nat_sport, b.port)
}

#[classifier]
pub fn to_pod(ctx: TcContext) -> i32 {
    match parse(&ctx) {
        Parsed::Flow(p) => reverse(&ctx, &p, false).unwrap_or(TC_ACT_UNSPEC),
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

/// An ICMP error (destination unreachable, time exceeded, parameter
/// problem) and the packet it quotes: the quote's IP header and first 8
/// bytes of TCP/UDP.
#[derive(Clone, Copy)]
struct IcmpError {
    outer_saddr: u32,
    outer_daddr: u32,
    /// The quoted packet's addresses and ports, as in the packet.
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    /// The quoted IP header's length in bytes.
    ihl: u8,
    inner_csum: u16,
}

impl IcmpError {
    /// The rewritten error's source: `addr` if the quoted packet's
    /// destination sent the error, else the sender's own (a router's).
    #[inline(always)]
    fn source_or(&self, addr: u32) -> u32 {
        if self.outer_saddr == self.daddr {
            addr
        } else {
            self.outer_saddr
        }
    }
}

/// The per-CPU scratch slot of an ICMP error's translation: the error, the
/// key of the flow it quotes, and what it is rewritten to.
#[derive(Clone, Copy)]
struct IcmpScratch {
    e: IcmpError,
    flow: FlowKey,
    to: IcmpRewrite,
    /// The error's IP total length (for the FIB lookup).
    tot_len: u16,
}

/// Where an ICMP error's parts are: the IP header, the ICMP header, the
/// quoted IP header and the quoted L4 header. Kept in registers, not in the
/// scratch slot: offsets loaded back from a map have no bounds for the
/// verifier.
#[derive(Clone, Copy)]
struct IcmpAt {
    l3: usize,
    l4: usize,
}

impl IcmpAt {
    fn inner(self) -> usize {
        self.l4 + 8
    }

    fn inner_l4(self, e: &IcmpError) -> usize {
        self.inner() + usize::from(e.ihl & 0x3c)
    }
}

/// Parses an ICMP error about a TCP or UDP packet; `None` for anything
/// else (echo, errors about other protocols, quotes cut short).
#[inline(always)]
fn parse_icmp_error(
    ctx: &TcContext,
    l3: usize,
    l4: usize,
    outer_saddr: u32,
) -> Option<&'static mut IcmpScratch> {
    let icmp = read::<[u8; 4]>(ctx, l4)?;
    if !matches!(icmp[0], 3 | 11 | 12) {
        return None;
    }
    // In a per-CPU scratch slot, not on the stack (see [`SCRATCH_ICMP`]),
    // field by field: a copy of the quoted header would cost stack too.
    let slot = SCRATCH_ICMP.get_ptr_mut(0)?;
    // SAFETY: a valid map value pointer of this CPU, used only until the
    // program returns (tc programs do not nest on a CPU).
    let sc = unsafe { &mut *slot };
    let inner = l4 + 8;
    // Two-byte reads: the verifier follows their bounds checks.
    let vihl = read::<[u8; 2]>(ctx, inner)?[0];
    let ihl = usize::from(vihl & 0x0f) * 4;
    let proto = read::<[u8; 2]>(ctx, inner + 8)?[1];
    if vihl >> 4 != 4 || ihl < IPV4_MIN_HLEN || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
        return None;
    }
    sc.tot_len = u16::from_be(read::<u16>(ctx, l3 + 2)?);
    sc.e.outer_saddr = outer_saddr;
    sc.e.outer_daddr = read::<u32>(ctx, l3 + IP_DADDR)?;
    sc.e.ihl = ihl as u8;
    sc.e.proto = proto;
    sc.e.inner_csum = u16::from_be(read::<u16>(ctx, inner + IP_CSUM)?);
    sc.e.saddr = read::<u32>(ctx, inner + IP_SADDR)?;
    sc.e.daddr = read::<u32>(ctx, inner + IP_DADDR)?;
    sc.e.sport = read::<u16>(ctx, inner + ihl)?;
    sc.e.dport = read::<u16>(ctx, inner + ihl + 2)?;
    sc.flow = quoted_flow(&sc.e);
    Some(sc)
}

/// What an ICMP error is rewritten to: the outer addresses and the quoted
/// packet's addresses and ports (network order, as in the packet).
#[derive(Clone, Copy)]
struct IcmpRewrite {
    outer_saddr: u32,
    outer_daddr: u32,
    saddr: u32,
    sport: u16,
    daddr: u32,
    dport: u16,
}

/// Rewrites an ICMP error and its quote, fixing the outer IP checksum, the
/// quote's IP checksum and the ICMP checksum (which covers the quote). The
/// quoted L4 checksum is left as it is: the quote is usually cut short, and
/// receivers do not check it.
#[inline(always)]
fn rewrite_icmp(ctx: &TcContext, at: IcmpAt, e: &IcmpError, to: &IcmpRewrite) -> Result<(), ()> {
    let (inner, inner_l4) = (at.inner(), at.inner_l4(e));
    let inner_csum = csum_update32(
        csum_update32(e.inner_csum, e.saddr, to.saddr),
        e.daddr,
        to.daddr,
    );
    write(ctx, inner + IP_SADDR, to.saddr)?;
    write(ctx, inner + IP_DADDR, to.daddr)?;
    write(ctx, inner_l4, to.sport)?;
    write(ctx, inner_l4 + 2, to.dport)?;
    write(ctx, inner + IP_CSUM, inner_csum.to_be())?;
    // One call per field, not a loop over an array of changes: the array
    // would cost `from_netdev` stack it does not have.
    let icmp_csum = at.l4 + 2;
    icmp_csum_update(ctx, icmp_csum, e.saddr.into(), to.saddr.into(), 4)?;
    icmp_csum_update(ctx, icmp_csum, e.daddr.into(), to.daddr.into(), 4)?;
    icmp_csum_update(ctx, icmp_csum, e.sport.into(), to.sport.into(), 2)?;
    icmp_csum_update(ctx, icmp_csum, e.dport.into(), to.dport.into(), 2)?;
    icmp_csum_update(
        ctx,
        icmp_csum,
        e.inner_csum.to_be().into(),
        inner_csum.to_be().into(),
        2,
    )?;
    set_outer_addr(ctx, at.l3 + IP_SADDR, at.l3, e.outer_saddr, to.outer_saddr)?;
    set_outer_addr(ctx, at.l3 + IP_DADDR, at.l3, e.outer_daddr, to.outer_daddr)?;
    count(SvcCounter::IcmpError);
    Ok(())
}

/// Updates the ICMP checksum at `off` for a quoted field of `size` bytes
/// changing from `old` to `new` (no pseudo-header).
#[inline(always)]
fn icmp_csum_update(ctx: &TcContext, off: usize, old: u64, new: u64, size: u64) -> Result<(), ()> {
    if old == new {
        return Ok(());
    }
    ctx.l4_csum_replace(off, old, new, size).map_err(|_| ())
}

/// Sets an outer IP address (at `off`) and fixes the header checksum.
#[inline(always)]
fn set_outer_addr(ctx: &TcContext, off: usize, l3: usize, old: u32, new: u32) -> Result<(), ()> {
    if old == new {
        return Ok(());
    }
    write(ctx, off, new)?;
    ctx.l3_csum_replace(l3 + IP_CSUM, u64::from(old), u64::from(new), 4)
        .map_err(|_| ())
}

/// The flow an ICMP error's quote belongs to, in the client's direction:
/// the reverse-NAT key if the quote is a packet sent to a backend, the
/// conntrack key if it is a reply sent to a client (the quote reversed,
/// either way).
#[inline(always)]
fn quoted_flow(e: &IcmpError) -> FlowKey {
    FlowKey {
        saddr: e.daddr,
        daddr: e.saddr,
        sport: e.dport,
        dport: e.sport,
        proto: e.proto,
        _pad: 0,
        _pad2: 0,
    }
}

/// An ICMP error about a packet of a translated flow, on a pod interface,
/// is made to look as if it were about the packet the client sent: the
/// quoted destination and port become the service's, and so does the
/// error's source if the backend sent it. The client's socket then gets the
/// error (e.g. ECONNREFUSED for a UDP port nobody listens on).
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the keys are in the scratch map: by value they would be copied to the stack"
)]
fn icmp_error(ctx: &TcContext, l3: usize, l4: usize, outer_saddr: u32) -> i32 {
    let Some(sc) = parse_icmp_error(ctx, l3, l4, outer_saddr) else {
        return TC_ACT_UNSPEC;
    };
    let e = &sc.e;
    let sock = SockKey {
        addr: e.saddr,
        port: e.sport,
        proto: e.proto,
        _pad: 0,
    };
    // The flow's `FLOWS` entry, under the client socket the quoted packet
    // came from; else its reverse-NAT entry.
    // SAFETY: references into the maps, read before any map update.
    let (vip, vport) = match unsafe { FLOWS.get(&sock) } {
        Some(f)
            if f.backend_addr == e.daddr
                && f.backend_port == e.dport
                && f.flags & FLOW_F_HAIRPIN == 0 =>
        {
            (f.vip, f.vport)
        }
        // SAFETY: as above.
        _ => match unsafe { REV_NAT.get(&sc.flow) } {
            Some(rev) => (rev.vip, rev.vport),
            None => return TC_ACT_UNSPEC,
        },
    };
    sc.to = IcmpRewrite {
        outer_saddr: e.source_or(vip),
        outer_daddr: e.outer_daddr,
        saddr: e.saddr,
        sport: e.sport,
        daddr: vip,
        dport: vport,
    };
    if rewrite_icmp(ctx, IcmpAt { l3, l4 }, &sc.e, &sc.to).is_err() {
        return TC_ACT_SHOT;
    }
    TC_ACT_UNSPEC
}

/// ICMP errors on a node interface about flows from outside (NodePorts,
/// externalIPs, LoadBalancer IPs), which the stack cannot match to
/// anything since it never saw the translation:
/// - about a packet sent to a (remote) backend, from the backend or a
///   router on the way: sent to the client about the packet it sent (the
///   front end as destination, its own address and port as source);
/// - about a reply sent to the client, from the client or a router on the
///   way (e.g. "fragmentation needed" for path MTU discovery): sent to the
///   backend about the reply it sent.
///
/// Both are routed on by the program. Errors about pods' own flows pass on
/// to their pod's interface, which translates them.
///
/// A function of its own (a BPF-to-BPF call): inlined, its locals would
/// push `from_netdev`'s frame past the 512-byte stack.
#[inline(never)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the keys are in the scratch map: by value they would be copied to the stack"
)]
fn icmp_error_netdev(ctx: &TcContext, l3: usize, l4: usize, outer_saddr: u32) -> i32 {
    // Everything lives in the scratch slot, and map values are read where
    // they are: this function's frame adds to `from_netdev`'s.
    let Some(sc) = parse_icmp_error(ctx, l3, l4, outer_saddr) else {
        return TC_ACT_UNSPEC;
    };
    // An error goes to the source of the packet it quotes; one that does
    // not is someone else's (this node forwarding it).
    if sc.e.outer_daddr != sc.e.saddr {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: references into the maps, read before any map update.
    if let Some(rev) = unsafe { REV_NAT.get(&sc.flow) } {
        if rev.flags & REV_F_ROUTE == 0 {
            return TC_ACT_UNSPEC;
        }
        let e = &sc.e;
        sc.to = IcmpRewrite {
            outer_saddr: e.source_or(rev.vip),
            outer_daddr: rev.client,
            saddr: rev.client,
            sport: if rev.client_port != 0 {
                rev.client_port
            } else {
                e.sport
            },
            daddr: rev.vip,
            dport: rev.vport,
        };
    } else {
        // The quote is a reply, and `flow` the client's.
        // SAFETY: as above.
        let Some(ct) = (unsafe { CONNTRACK.get(&sc.flow) }) else {
            return TC_ACT_UNSPEC;
        };
        // SAFETY: as above.
        let Some(b) = (unsafe { BACKENDS.get(ct.backend_id) }) else {
            return TC_ACT_UNSPEC;
        };
        let e = &sc.e;
        sc.to = IcmpRewrite {
            outer_saddr: e.source_or(ct.nat_saddr),
            outer_daddr: b.addr,
            saddr: b.addr,
            sport: b.port,
            daddr: ct.nat_saddr,
            dport: ct.nat_sport,
        };
    }
    if rewrite_icmp(ctx, IcmpAt { l3, l4 }, &sc.e, &sc.to).is_err() {
        return TC_ACT_SHOT;
    }
    // Routed like [`route`] routes a translated packet.
    fib_redirect(
        ctx,
        IPPROTO_ICMP,
        sc.tot_len,
        (sc.to.outer_saddr, 0),
        (sc.to.outer_daddr, 0),
    )
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

/// Refuses a flow to a service without backends: a TCP segment is answered
/// with a RST, a UDP datagram with ICMP port unreachable, sent back out of
/// the interface it came in on.
#[inline(always)]
fn reject(ctx: &TcContext, p: &Packet) -> i32 {
    let r = if p.ip.protocol == IPPROTO_TCP {
        reject_tcp(ctx, p)
    } else {
        reject_udp(ctx, p)
    };
    match r {
        Ok(()) => {
            count(if p.ip.protocol == IPPROTO_TCP {
                SvcCounter::RejectTcp
            } else {
                SvcCounter::RejectUdp
            });
            // SAFETY: no preconditions.
            unsafe { bpf_redirect(ifindex(ctx), 0) as i32 }
        }
        Err(()) => TC_ACT_SHOT,
    }
}

/// An IPv4 header (20 bytes, no options) from `src` to `dst`.
#[inline(always)]
fn ip_header(total_len: u16, protocol: u8, src: u32, dst: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total_len.to_be_bytes());
    h[8] = 64;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.to_ne_bytes());
    h[16..20].copy_from_slice(&dst.to_ne_bytes());
    let c = fold(sum_words(0, &h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

fn reject_tcp(ctx: &TcContext, p: &Packet) -> Result<(), ()> {
    let flags: u8 = ctx.load(p.l4 + TCP_FLAGS).map_err(|_| ())?;
    if flags & TCP_RST != 0 {
        // Never answer a RST.
        return Err(());
    }
    let seq = u32::from_be(ctx.load::<u32>(p.l4 + 4).map_err(|_| ())?);
    let ack = u32::from_be(ctx.load::<u32>(p.l4 + 8).map_err(|_| ())?);
    let doff: u8 = ctx.load(p.l4 + 12).map_err(|_| ())?;
    let payload = (p.ip.total_len - p.ip.header_len) as u32 - u32::from(doff >> 4) * 4;
    let seg_len = payload + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
    // RFC 793: if the segment has ACK, the RST takes its sequence number from
    // it; otherwise the RST acknowledges the segment.
    let (rst_seq, rst_ack, rst_flags) = if flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        (0, seq.wrapping_add(seg_len), TCP_RST | TCP_ACK)
    };
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&p.dport.to_ne_bytes());
    tcp[2..4].copy_from_slice(&p.sport.to_ne_bytes());
    tcp[4..8].copy_from_slice(&rst_seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&rst_ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = rst_flags;
    // Checksum: pseudo header (addresses, protocol, length) + header.
    let mut sum = sum_words(0, &tcp);
    for a in [p.daddr, p.saddr] {
        let b = a.to_ne_bytes();
        sum += (u32::from(b[0]) << 8 | u32::from(b[1])) + (u32::from(b[2]) << 8 | u32::from(b[3]));
    }
    sum += u32::from(IPPROTO_TCP) + 20;
    let c = fold(sum);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let ip = ip_header(40, IPPROTO_TCP, p.daddr, p.saddr);

    // Drop IP options and payload: the reply is 20 + 20 bytes after L2.
    let opts = p.ip.header_len as i32 - 20;
    if opts > 0 {
        ctx.adjust_room(-opts, BPF_ADJ_ROOM_NET, 0)
            .map_err(|_| ())?;
    }
    // SAFETY: the skb is ours for the program's duration.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (p.l3 + 40) as u32, 0) } != 0 {
        return Err(());
    }
    swap_macs(ctx)?;
    ctx.store(p.l3, &ip, 0).map_err(|_| ())?;
    ctx.store(p.l3 + 20, &tcp, 0).map_err(|_| ())
}

/// Longest quoted original, in 32-bit words: IP header with options (60
/// bytes) + 8 bytes of UDP.
const QUOTE_WORDS: usize = 17;

fn reject_udp(ctx: &TcContext, p: &Packet) -> Result<(), ()> {
    // ICMP destination unreachable / port unreachable, quoting the original
    // IP header and the first 8 bytes of its payload (RFC 792). The quote
    // stays where it is in the packet; it is read here only to checksum it,
    // in fixed-size words the verifier can bound.
    let quote_len = p.ip.header_len + 8;
    let mut sum = u32::from(3u16 << 8 | 3);
    let mut i = 0;
    while i < QUOTE_WORDS {
        if i * 4 >= quote_len {
            break;
        }
        let w = ctx.load::<[u8; 4]>(p.l3 + i * 4).map_err(|_| ())?;
        sum += (u32::from(w[0]) << 8 | u32::from(w[1])) + (u32::from(w[2]) << 8 | u32::from(w[3]));
        i += 1;
    }
    let mut icmp = [0u8; 8];
    icmp[0] = 3;
    icmp[1] = 3;
    icmp[2..4].copy_from_slice(&fold(sum).to_be_bytes());
    let total = (20 + 8 + quote_len) as u16;
    let ip = ip_header(total, 1, p.daddr, p.saddr);

    // Make room for the new IP + ICMP headers in front of the original IP
    // header, then cut the packet after the quote.
    ctx.adjust_room(28, BPF_ADJ_ROOM_MAC, 0).map_err(|_| ())?;
    // SAFETY: the skb is ours for the program's duration.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (p.l3 + 28 + quote_len) as u32, 0) } != 0 {
        return Err(());
    }
    swap_macs(ctx)?;
    ctx.store(p.l3, &ip, 0).map_err(|_| ())?;
    ctx.store(p.l3 + 20, &icmp, 0).map_err(|_| ())
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

// --- Socket-level translation for the node's own processes -------------
//
// The tc programs sit on pod interfaces, so a process of the node itself
// (in the node's network namespace) would send Service traffic to the
// default route. These cgroup hooks translate its sockets instead: at
// connect (TCP, connected UDP) and sendmsg (unconnected UDP) the service
// address is replaced by a backend's, chosen the same way as for pods
// (affinity keyed by client 0, "this node"); recvmsg and getpeername show
// the service address again. Only sockets of the node's namespace are
// touched: pods are left to the tc path, and namespaces of other
// instances (tests) to their own programs.

const SOCK_ALLOW: i32 = 1;
const SOCK_DENY: i32 = 0;

#[inline(always)]
fn node_netns(ctx: &SockAddrContext) -> bool {
    let want = HOST_NETNS.get(0).copied().unwrap_or(0);
    // SAFETY: a sock_addr context, which the helper accepts.
    want != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == want
}

#[inline(always)]
fn sock_forward(ctx: &SockAddrContext) -> i32 {
    if !node_netns(ctx) {
        return SOCK_ALLOW;
    }
    // SAFETY: the kernel passes a valid context for the program's lifetime.
    let sa = unsafe { &mut *ctx.sock_addr };
    let proto = match sa.protocol {
        6 => IPPROTO_TCP,
        17 => IPPROTO_UDP,
        _ => return SOCK_ALLOW,
    };
    let vip = sa.user_ip4;
    // The port is in network order in the low 16 bits.
    let vport = sa.user_port as u16;
    let key = ServiceKey {
        addr: vip,
        port: vport,
        proto,
        scope: SCOPE_ADDR,
    };
    // SAFETY: copied out at once.
    let svc = match unsafe { SERVICES.get(key) }.copied() {
        Some(v) => v,
        None => {
            // A NodePort on one of the node's addresses, or on loopback.
            // SAFETY: copied out at once.
            let local =
                (u32::from_be(vip) >> 24) == 127 || unsafe { NODE_ADDRS.get(vip) }.is_some();
            if !local {
                return SOCK_ALLOW;
            }
            let np = ServiceKey {
                addr: 0,
                port: vport,
                proto,
                scope: SCOPE_NODEPORT,
            };
            // SAFETY: copied out at once.
            match unsafe { SERVICES.get(np) }.copied() {
                Some(v) => v,
                None => return SOCK_ALLOW,
            }
        }
    };
    if svc.count == 0 {
        count(SvcCounter::HostReject);
        return SOCK_DENY;
    }
    let Some((_, b)) = select(0, &svc) else {
        count(SvcCounter::MapFull);
        return SOCK_ALLOW;
    };
    // SAFETY: a sock_addr context, which the helper accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rk = SockRevKey {
        cookie,
        addr: b.addr,
        port: b.port,
        _pad: 0,
    };
    let rv = SockRevValue {
        vip,
        vport,
        _pad: 0,
    };
    if SOCK_REV.insert(rk, rv, 0).is_err() {
        count(SvcCounter::MapFull);
    }
    sa.user_ip4 = b.addr;
    sa.user_port = u32::from(b.port);
    count(SvcCounter::HostSocket);
    SOCK_ALLOW
}

#[inline(always)]
fn sock_reverse(ctx: &SockAddrContext) -> i32 {
    if !node_netns(ctx) {
        return SOCK_ALLOW;
    }
    // SAFETY: the kernel passes a valid context for the program's lifetime.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: a sock_addr context, which the helper accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rk = SockRevKey {
        cookie,
        addr: sa.user_ip4,
        port: sa.user_port as u16,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(rv) = unsafe { SOCK_REV.get(rk) }.copied() {
        sa.user_ip4 = rv.vip;
        sa.user_port = u32::from(rv.vport);
    }
    SOCK_ALLOW
}

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    sock_forward(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_forward(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock_reverse(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
    sock_reverse(&ctx)
}
