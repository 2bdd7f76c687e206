//! Direct server return (DSR) for traffic from outside to the services that
//! ask for it (`SVC_F_DSR`), as Cilium's IP-option mode does it:
//! - on the node the client reached (`from_netdev`), a flow's packets go to
//!   the backend with only their destination translated (the client's
//!   address and port are kept), and each TCP SYN and every UDP datagram
//!   carries the service's address and port to the backend's node in an IP
//!   option (`DSR_OPT_TYPE`, 8 bytes after the 20-byte header);
//! - on the backend's node, `to_pod` reads the option as the packet enters
//!   the pod and records the reply's translation in `REV_NAT` (routed), so
//!   `from_pod` sends the backend's replies from the service address
//!   straight to the client instead of back through the first node.
//!
//! An option is believed only when it names a service of this node's maps
//! that asks for direct server return (every node has the same services)
//! and, for a node port, an address of one of the cluster's nodes
//! (`DSR_NODES`, from the Node objects): anyone who can reach a pod could
//! otherwise make its replies leave from any address they chose. Others
//! are counted and ignored. The node the client reached uses the same set:
//! a node-port flow to an address no Node names (a second interface's, say)
//! takes source NAT, which needs nothing of the backend's node. A SYN without the option removes a reply
//! translation an option made for the same addresses and ports, which would
//! otherwise translate a direct connection's replies.
//!
//! A packet the option would take past the route's MTU is answered, when it
//! may not be fragmented, with ICMP "fragmentation needed" quoting it as
//! the client sent it (RFC 1191: the client's path MTU to the service
//! drops by the option's 8 bytes); else it goes on for the stack to
//! fragment. Kernels before 5.12 do not check a FIB lookup's length for a
//! socket buffer: there such a packet is sent as it is.

#[allow(clippy::wildcard_imports)]
use super::*;
use aya_ebpf::bindings::BPF_FIB_LKUP_RET_FRAG_NEEDED;
use rudder_ebpf_common::service::{
    CT_F_DSR, DSR_OPT_LEN, DSR_OPT_TYPE, DsrCounter, MAX_DSR_NODES, REV_F_DSR,
};

/// Direct server return's counters (per CPU), a map of their own so that
/// `SVC_STATS` keeps its size for agents of either version.
#[map(name = "DSR_STATS")]
static DSR_STATS: PerCpuArray<u64> = PerCpuArray::pinned(DsrCounter::LEN, 0);
/// The cluster's nodes' addresses (network order → 1): those a node-port
/// option may name. Written by user space only.
#[map(name = "DSR_NODES")]
static DSR_NODES: HashMap<u32, u32> = HashMap::pinned(MAX_DSR_NODES, BPF_F_NO_PREALLOC);

const IP_DF: u16 = 0x4000;
const OPT_LEN: usize = DSR_OPT_LEN as usize;

#[inline(always)]
fn dcount(c: DsrCounter) {
    if let Some(slot) = DSR_STATS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU array slot of this CPU; the program is not
        // preempted on it.
        unsafe { *slot += 1 };
    }
}

/// Whether `addr` is an address of one of the cluster's nodes: the only
/// node-port addresses an option may name, and so the only ones whose
/// node-port flows take direct server return.
#[inline(always)]
pub(super) fn known_node(addr: u32) -> bool {
    // SAFETY: only tested for presence.
    unsafe { DSR_NODES.get(addr) }.is_some()
}

/// Whether a new flow from outside to `svc` is forwarded by direct server
/// return: the service asks for it and the packet is one the option can
/// be inserted into (untagged, a 20-byte IP header). Others take source
/// NAT as usual.
#[inline(always)]
pub(super) fn chosen(p: &Packet, svc: &ServiceValue) -> bool {
    svc.flags & SVC_F_DSR != 0 && p.l3 == ETH_HLEN && p.ip.header_len == IPV4_MIN_HLEN
}

/// Whether a TCP SYN (without ACK, a new connection) found a flow made in
/// the other forwarding mode than the service's now (the service's
/// annotation changed, and the client reuses an old flow's address and
/// port): such a SYN starts a new flow in the current mode. Established
/// connections, and UDP flows, keep the mode they were made in.
#[inline(always)]
pub(super) fn switched(ct_flags: u16, p: &Packet, svc: &ServiceValue, syn: bool) -> bool {
    (ct_flags & CT_F_DSR != 0) != chosen(p, svc) && p.ip.protocol == IPPROTO_TCP && syn
}

/// [`switched`] for `from_netdev`, reading the segment's flags: a
/// subprogram, so that `from_netdev`'s frame, at the 512-byte limit of
/// Debian's 5.10 and 6.1 verifiers with its calls, does not grow by it.
#[inline(never)]
pub(super) fn switched_tc(ctx: &TcContext, p: &Packet, ct_flags: u16, svc_flags: u32) -> bool {
    let svc = ServiceValue {
        flags: svc_flags,
        ..ServiceValue::default()
    };
    // The flags are read only when the modes differ.
    switched(ct_flags, p, &svc, true) && syn_only(tcp_flags(ctx, p))
}

/// Whether a packet of a direct-server-return flow carries the option:
/// every UDP datagram (a backend's node may have lost or never seen an
/// earlier one), and TCP segments with SYN (the reply translation lasts
/// the connection).
#[inline(always)]
pub(super) fn wants_option(tcp_flags: u8, p: &Packet) -> bool {
    p.ip.protocol == IPPROTO_UDP || tcp_flags & TCP_SYN != 0
}

/// A TCP segment's flags, 0 for anything else or a header that cannot be
/// read (a plain byte, not an `Option`: the BPF backend once mixed an
/// `Option<u8>` up with the context pointer, which the verifier refused).
/// Read as the two bytes ending with them: a one-byte read's bounds check
/// compiles to a comparison the verifier cannot take a range from
/// (`pkt >= pkt_end` at offset 0).
#[inline(always)]
pub(super) fn tcp_flags(ctx: &TcContext, p: &Packet) -> u8 {
    if p.ip.protocol != IPPROTO_TCP {
        return 0;
    }
    read::<[u8; 2]>(ctx, p.l4 + TCP_FLAGS - 1).map_or(0, |b| b[1])
}

/// Whether TCP `flags` are a SYN without ACK: a new connection.
#[inline(always)]
pub(super) fn syn_only(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// `from_netdev`: sends a direct-server-return flow's packet to backend
/// `b`, its destination translated, with the option when the packet
/// [wants one](wants_option), routed by a FIB lookup.
#[inline(always)]
pub(super) fn forward(ctx: &TcContext, p: &Packet, b: &Backend) -> i32 {
    match forward_call(ctx, p, b) {
        Ok(verdict) => verdict,
        // Answered from `from_netdev`'s frame, not from within the call:
        // three frames deep, the stack would pass 512 bytes.
        Err(mtu) => too_big(ctx, p, mtu),
    }
}

/// [`forward`] as a subprogram (its frame is not added to
/// `from_netdev`'s): the verdict, or the MTU to answer with when the
/// packet is too big for the option and may not be fragmented.
#[inline(never)]
fn forward_call(ctx: &TcContext, p: &Packet, b: &Backend) -> Result<i32, u16> {
    let tcp_flags = tcp_flags(ctx, p);
    let total = p.ip.total_len + OPT_LEN;
    // (A packet at the IP length's limit, only ever a merged one, goes
    // without: the flow's earlier packets carried the option.)
    let option = p.l3 == ETH_HLEN
        && p.ip.header_len == IPV4_MIN_HLEN
        && total <= usize::from(u16::MAX)
        && wants_option(tcp_flags, p);
    if !option {
        if rewrite(ctx, p, p.saddr, p.sport, b.addr, b.port).is_err() {
            return Ok(TC_ACT_SHOT);
        }
        return Ok(route(ctx, p, p.saddr, b.addr, p.sport, b.port));
    }
    let Some((rc, fib)) = fib_lookup(
        ctx,
        p.ip.protocol,
        total as u16,
        (p.saddr, p.sport),
        (b.addr, b.port),
    ) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if rc == i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED) && p.ip.frag & IP_DF != 0 {
        // SAFETY: a union of two integers of the same size; the kernel
        // wrote the route's MTU over the length asked about (5.12 on).
        let mtu = unsafe { fib.__bindgen_anon_1.mtu_result };
        // Without the MTU (an older kernel), the packet's own length: a
        // client sends at its path MTU, which is then 8 bytes too many.
        let mtu = if usize::from(mtu) < total {
            mtu
        } else {
            p.ip.total_len as u16
        };
        return Err(mtu.saturating_sub(DSR_OPT_LEN.into()));
    }
    if rewrite(ctx, p, p.saddr, p.sport, b.addr, b.port).is_err()
        || insert_option(ctx, p, total).is_err()
    {
        return Ok(TC_ACT_SHOT);
    }
    dcount(DsrCounter::Sent);
    Ok(fib_send(ctx, rc, fib))
}

/// Answers a packet too big for the option with ICMP "fragmentation
/// needed" for `mtu`, sent back out of the interface it came in on.
#[inline(always)]
fn too_big(ctx: &TcContext, p: &Packet, mtu: u16) -> i32 {
    if reject::frag_needed(ctx, p, mtu).is_err() {
        return TC_ACT_SHOT;
    }
    dcount(DsrCounter::TooBig);
    // SAFETY: no preconditions.
    unsafe { bpf_redirect(ifindex(ctx), 0) as i32 }
}

/// Inserts the option carrying the packet's service address and port (its
/// destination as the client sent it) after its 20-byte IP header, whose
/// length, header length and checksum it updates (RFC 1624). The transport
/// checksum does not cover IP options. Called after the destination was
/// translated: the header's checksum is read from the packet.
#[inline(always)]
fn insert_option(ctx: &TcContext, p: &Packet, total: usize) -> Result<(), ()> {
    let first = read::<[u8; 4]>(ctx, p.l3).ok_or(())?;
    let csum = u16::from_be(read::<u16>(ctx, p.l3 + IP_CSUM).ok_or(())?);
    ctx.adjust_room(OPT_LEN as i32, BPF_ADJ_ROOM_NET, 0)
        .map_err(|_| ())?;
    let version_ihl = 0x40 | ((IPV4_MIN_HLEN + OPT_LEN) / 4) as u8;
    let new_first = [version_ihl, first[1], (total >> 8) as u8, total as u8];
    // The option's words, summed as they are written (type and length,
    // the port, the address); scalars rather than an array: this runs in
    // a frame that must stay small (see `forward_call`).
    let head = u16::from_be_bytes([DSR_OPT_TYPE, DSR_OPT_LEN]);
    let (port, addr) = (u16::from_be(p.dport), u32::from_be(p.daddr));
    let mut sum =
        u32::from(!csum) + u32::from(head) + u32::from(port) + (addr >> 16) + (addr & 0xffff);
    for i in [0, 2] {
        sum += u32::from(!u16::from_be_bytes([first[i], first[i + 1]]));
        sum += u32::from(u16::from_be_bytes([new_first[i], new_first[i + 1]]));
    }
    write(ctx, p.l3, new_first)?;
    write(ctx, p.l3 + IP_CSUM, fold(sum).to_be())?;
    write(ctx, p.l3 + IPV4_MIN_HLEN, head.to_be())?;
    write(ctx, p.l3 + IPV4_MIN_HLEN + 2, p.dport)?;
    write(ctx, p.l3 + IPV4_MIN_HLEN + 4, p.daddr)
}

/// `to_pod`: records the reply translation an option asks for, and removes
/// one a SYN without it makes stale.
#[inline(always)]
pub(super) fn learn(ctx: &TcContext, p: &Packet) {
    if p.ip.header_len == IPV4_MIN_HLEN + OPT_LEN {
        learn_option(ctx, p);
    } else if p.ip.protocol == IPPROTO_TCP && syn_only(tcp_flags(ctx, p)) {
        let key = reply_key(p);
        // SAFETY: copied out at once.
        if unsafe { REV_NAT.get(key) }.is_some_and(|r| r.flags & REV_F_DSR != 0) {
            let _ = REV_NAT.remove(key);
        }
    }
}

/// The key the backend's replies to the packet's flow carry.
#[inline(always)]
fn reply_key(p: &Packet) -> FlowKey {
    FlowKey {
        saddr: p.daddr,
        daddr: p.saddr,
        sport: p.dport,
        dport: p.sport,
        proto: p.ip.protocol,
        _pad: 0,
        _pad2: 0,
    }
}

#[inline(always)]
fn learn_option(ctx: &TcContext, p: &Packet) {
    let Some(opt) = read::<[u8; 8]>(ctx, p.l3 + IPV4_MIN_HLEN) else {
        return;
    };
    if opt[0] != DSR_OPT_TYPE || opt[1] != DSR_OPT_LEN {
        return;
    }
    let vport = u16::from_ne_bytes([opt[2], opt[3]]);
    let vip = u32::from_ne_bytes([opt[4], opt[5], opt[6], opt[7]]);
    let Some(service_id) = dsr_service(vip, vport, p.ip.protocol) else {
        dcount(DsrCounter::Refused);
        return;
    };
    let rev = RevNatValue {
        vip,
        vport,
        flags: REV_F_ROUTE | REV_F_DSR,
        client: p.saddr,
        service_id,
        client_port: p.sport,
        _pad: 0,
    };
    let key = reply_key(p);
    // SAFETY: copied out at once.
    if unsafe { REV_NAT.get(key) }.is_some_and(|r| *r == rev) {
        // A later datagram or a retransmitted SYN: already recorded.
        return;
    }
    if REV_NAT.insert(key, rev, 0).is_ok() {
        dcount(DsrCounter::Learned);
    } else {
        count(SvcCounter::MapFull);
    }
}

/// The id of the service an option names, if it asks for direct server
/// return: an external address's front end, or a node port (whose address
/// is the address of the node the client reached, not this one's, and must
/// be a cluster node's).
#[inline(always)]
fn dsr_service(vip: u32, vport: u16, proto: u8) -> Option<u32> {
    let mut key = ServiceKey {
        addr: vip,
        port: vport,
        proto,
        scope: SCOPE_ADDR,
    };
    // SAFETY: copied out at once.
    if let Some(v) = unsafe { SERVICES.get(key) }.copied() {
        return (v.flags & SVC_F_DSR != 0).then_some(v.service_id);
    }
    if !known_node(vip) {
        return None;
    }
    key.addr = 0;
    key.scope = SCOPE_NODEPORT;
    // SAFETY: copied out at once.
    let v = unsafe { SERVICES.get(key) }.copied()?;
    (v.flags & SVC_F_DSR != 0).then_some(v.service_id)
}
