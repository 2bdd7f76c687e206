//! ICMP errors about translated flows, translated back: on pod interfaces
//! (`icmp_error`) and on the node's interfaces for flows from outside
//! (`icmp_error_netdev`), so that the client's socket gets the error about
//! the packet it sent and path MTU discovery works through NodePorts.

#[allow(clippy::wildcard_imports)]
use super::*;

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
pub(super) struct IcmpScratch {
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
pub(super) fn icmp_error(ctx: &TcContext, l3: usize, l4: usize, outer_saddr: u32) -> i32 {
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
pub(super) fn icmp_error_netdev(ctx: &TcContext, l3: usize, l4: usize, outer_saddr: u32) -> i32 {
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
