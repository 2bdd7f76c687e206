//! `from_netdev`, tc ingress of the node's own interfaces (uplink, VXLAN
//! device): NodePorts, externalIPs and LoadBalancer IPs reached from
//! outside, with source NAT (or the client's address kept) and Maglev
//! consistent hashing where the service asks for it, or forwarded by direct
//! server return (`dsr.rs`); replies of remote backends to such flows,
//! routed back.

#[allow(clippy::wildcard_imports)]
use super::*;
use rudder_ebpf_common::service::CT_F_DSR;

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
            && !dsr::switched_tc(&ctx, &p, ct.flags, svc.flags)
        {
            // SAFETY: as above; a racing update of a timestamp is harmless.
            unsafe { (*entry).last_seen = now_s() };
            count(SvcCounter::Established);
            if ct.flags & CT_F_DSR != 0 {
                return dsr::forward(&ctx, &p, &b);
            }
            if rewrite(&ctx, &p, ct.nat_saddr, ct.nat_sport, b.addr, b.port).is_err() {
                return TC_ACT_SHOT;
            }
            return route(&ctx, &p, ct.nat_saddr, b.addr, ct.nat_sport, b.port);
        }
        count(SvcCounter::StaleBackend);
    }
    if svc.count == 0 {
        return reject_outlined(&ctx, &p);
    }
    let Some((backend_id, b)) = pick_external(&p, &svc) else {
        count(SvcCounter::MapFull);
        return TC_ACT_UNSPEC;
    };
    let (nat_saddr, nat_sport) = match external_source(&p, &svc, node_port, &b) {
        Ok(source) => source,
        Err(NoSource::Unconfigured) => return TC_ACT_UNSPEC,
        Err(NoSource::NoPort) => {
            count(SvcCounter::NoPort);
            return TC_ACT_SHOT;
        }
    };
    let dsr = dsr::chosen(&p, &svc);
    if !record_external(&p, &svc, backend_id, &b, (nat_saddr, nat_sport), dsr) {
        count(SvcCounter::MapFull);
        return TC_ACT_UNSPEC;
    }
    count(SvcCounter::External);
    if dsr {
        return dsr::forward(&ctx, &p, &b);
    }
    if rewrite(&ctx, &p, nat_saddr, nat_sport, b.addr, b.port).is_err() {
        return TC_ACT_SHOT;
    }
    route(&ctx, &p, nat_saddr, b.addr, nat_sport, b.port)
}

/// The backend of a new flow from outside: by Maglev when the service asks
/// for it (session affinity, a per-node table, takes precedence), else as
/// pods' flows pick.
#[inline(always)]
pub(super) fn pick_external(p: &Packet, svc: &ServiceValue) -> Option<(u32, Backend)> {
    let maglev = svc.maglev_size();
    if maglev != 0 && svc.affinity_timeout == 0 {
        let id = maglev_backend(svc.maglev_slots_id, maglev, flow_hash(p))?;
        // SAFETY: copied out at once.
        return unsafe { BACKENDS.get(id) }.copied().map(|b| (id, b));
    }
    select(p.saddr, svc)
}

/// Why a new flow from outside has no source to take.
pub(super) enum NoSource {
    /// No node address to translate to is configured.
    Unconfigured,
    /// Every port tried is taken (counted as `NoPort`).
    NoPort,
}

/// The source (address, port) a new flow from outside takes: the client's
/// own when the service keeps it or the flow is forwarded by direct server
/// return, else the node address it reached (or the node's primary one)
/// with a port no other flow to the backend uses.
#[inline(always)]
pub(super) fn external_source(
    p: &Packet,
    svc: &ServiceValue,
    node_port: bool,
    b: &Backend,
) -> Result<(u32, u16), NoSource> {
    let keep_source = svc.flags & SVC_F_KEEP_SOURCE != 0 || dsr::chosen(p, svc);
    // SAFETY: copied out at once.
    let nat_saddr = if keep_source {
        p.saddr
    } else if node_port || unsafe { NODE_ADDRS.get(p.daddr) }.is_some() {
        p.daddr
    } else {
        config(config::NODE_IP)
    };
    if nat_saddr == 0 {
        return Err(NoSource::Unconfigured);
    }
    if keep_source {
        return Ok((nat_saddr, p.sport));
    }
    let port = snat_port(p, b, nat_saddr).ok_or(NoSource::NoPort)?;
    Ok((nat_saddr, port))
}

/// Records a new flow from outside: its conntrack entry and the reverse
/// entry its replies find (none for direct server return, whose replies
/// do not come back through this node). The entries are built in a
/// per-CPU scratch slot, not on the stack: `from_netdev` has none to
/// spare. `false` when either table refused the entry.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the entries are in the scratch map: by value they would be copied to the stack"
)]
pub(super) fn record_external(
    p: &Packet,
    svc: &ServiceValue,
    backend_id: u32,
    b: &Backend,
    (nat_saddr, nat_sport): (u32, u16),
    dsr: bool,
) -> bool {
    let Some(slot) = SCRATCH_FLOW.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a valid map value pointer of this CPU, used only until the
    // program returns (tc and XDP programs do not nest on a CPU).
    let sc = unsafe { &mut *slot };
    sc.ct = CtValue {
        backend_id,
        service_id: svc.service_id,
        nat_saddr,
        last_seen: now_s(),
        nat_sport,
        flags: if dsr { CT_F_DSR } else { 0 },
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
    CONNTRACK.insert(&p.flow(), &sc.ct, 0).is_ok()
        && (dsr || REV_NAT.insert(&sc.rev_key, &sc.rev, 0).is_ok())
}
