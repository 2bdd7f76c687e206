//! `xdp_from_netdev`, XDP on the node's uplink: the fast path of
//! `from_netdev` for NodePort, externalIP and LoadBalancer traffic whose
//! backend is on another node reached through the same interface, and for
//! that backend's replies, as Cilium's XDP acceleration does it.
//!
//! A packet it takes is translated exactly as `from_netdev` would translate
//! it (the same conntrack and reverse-NAT entries, in the same maps, so
//! either program finds the flows of the other), its Ethernet addresses set
//! from a FIB lookup, and sent back out of the interface it came in on
//! (`XDP_TX`) before the kernel allocates a socket buffer for it. Everything
//! else goes on to the stack untouched (`XDP_PASS`), where `from_netdev`
//! handles it as before:
//! - anything but an untagged IPv4 TCP or UDP packet with a 20-byte header,
//!   fragments included, and anything malformed;
//! - packets for no service and no translated flow;
//! - flows whose next hop is not on the ingress interface (local backends,
//!   a VXLAN device, another NIC: a redirect there would need the target
//!   driver's XDP transmit, which not every driver has), or has no
//!   neighbour entry yet, or whose packet exceeds its MTU;
//! - refusals (no endpoints: `from_netdev` answers with a RST or an ICMP
//!   error), full tables, no free source port;
//! - the packets of direct-server-return flows that carry its IP option
//!   (new flows, SYNs, UDP datagrams: `dsr.rs`); their other packets are
//!   translated here;
//! - flows whose backend left the service (re-picked by `from_netdev`).
//!
//! New flows are recorded only once the FIB lookup has said the packet is
//! sent here, so a flow is never half-made. The checksums are updated by
//! RFC 1624 arithmetic: a received frame carries complete checksums (a
//! sender's checksum offload on a veth does not: see the loader).

use super::netdev::{NoSource, external_source, pick_external, record_external};
#[allow(clippy::wildcard_imports)]
use super::*;
use aya_ebpf::{
    bindings::xdp_action::{XDP_PASS, XDP_TX},
    macros::xdp,
    programs::XdpContext,
};
use rudder_ebpf_common::service::{CT_F_DSR, XdpCounter};

/// The XDP path's own counters (per CPU): the `SVC_STATS` array keeps its
/// size, so agents of either version share it.
#[map(name = "XDP_STATS")]
static XDP_STATS: PerCpuArray<u64> = PerCpuArray::pinned(XdpCounter::LEN, 0);

const L3: usize = ETH_HLEN;
/// The longest IP packet this path takes: larger ones pass to tc.
const MAX_FRAME: usize = 16_383;
const L4: usize = ETH_HLEN + IPV4_MIN_HLEN;

#[inline(always)]
fn xcount(c: XdpCounter) {
    if let Some(slot) = XDP_STATS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU array slot of this CPU; the program is not
        // preempted on it.
        unsafe { *slot += 1 };
    }
}

/// A pointer to a `T` at `off` in the frame, if it is all there.
#[inline(always)]
fn xptr<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut T)
}

/// Reads a `T` at `off` in the frame.
#[inline(always)]
fn xread<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    let p = xptr::<T>(ctx, off)?;
    // SAFETY: within the frame (checked above); unaligned-safe.
    Some(unsafe { core::ptr::read_unaligned(p) })
}

/// Writes `v` at `off` in the frame.
#[inline(always)]
fn xwrite<T>(ctx: &XdpContext, off: usize, v: T) -> Option<()> {
    let p = xptr::<T>(ctx, off)?;
    // SAFETY: within the frame (checked above); an XDP frame is writable.
    unsafe { core::ptr::write_unaligned(p, v) };
    Some(())
}

/// The packet, if it is one this path handles: untagged IPv4 without
/// options, not a fragment, TCP or UDP with a complete header.
#[inline(always)]
fn xparse(ctx: &XdpContext) -> Option<Packet> {
    let ethertype = u16::from_be(xread::<u16>(ctx, 12)?);
    if ethertype != ETH_P_IP {
        return None;
    }
    let h = xread::<[u8; 20]>(ctx, L3)?;
    if h[0] != 0x45 {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let protocol = h[9];
    let min = match protocol {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return None,
    };
    // The bound first: verifiers before 6.x do not carry a value's range
    // through the byte swap that read it, and refuse packet pointer
    // arithmetic with an unbounded value. (A frame in one XDP buffer is
    // shorter anyway.)
    if total_len > MAX_FRAME
        || frag & (IP_MF | IP_OFFSET_MASK) != 0
        || total_len < IPV4_MIN_HLEN + min
        || ctx.data() + L3 + total_len > ctx.data_end()
    {
        return None;
    }
    let ports = xread::<[u16; 2]>(ctx, L4)?;
    Some(Packet {
        l3: L3,
        l4: L4,
        ip: Ipv4 {
            header_len: IPV4_MIN_HLEN,
            total_len,
            protocol,
            frag,
            saddr: 0,
            daddr: 0,
        },
        saddr: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
        daddr: u32::from_ne_bytes([h[16], h[17], h[18], h[19]]),
        sport: ports[0],
        dport: ports[1],
        ip_id: u16::from_ne_bytes([h[4], h[5]]),
        ip_csum: u16::from_be_bytes([h[10], h[11]]),
    })
}

#[xdp]
pub fn xdp_from_netdev(ctx: XdpContext) -> u32 {
    let verdict = match xparse(&ctx) {
        Some(p) => translate(&ctx, &p),
        None => XDP_PASS,
    };
    if verdict == XDP_PASS {
        xcount(XdpCounter::Passed);
    }
    verdict
}

/// The verdict for a TCP/UDP packet: `XDP_TX` once translated, else
/// `XDP_PASS` with the frame and the maps untouched.
#[inline(always)]
fn translate(ctx: &XdpContext, p: &Packet) -> u32 {
    // SAFETY: copied out at once.
    if let Some(rev) = unsafe { REV_NAT.get(p.flow()) }.copied() {
        if rev.flags & REV_F_ROUTE == 0 {
            // A reply to a pod's flow: the pod's interface translates it.
            return XDP_PASS;
        }
        let client_port = if rev.client_port != 0 {
            rev.client_port
        } else {
            p.dport
        };
        return send(ctx, p, (rev.vip, rev.vport), (rev.client, client_port)).map_or(
            XDP_PASS,
            |()| {
                xcount(XdpCounter::Reverse);
                XDP_TX
            },
        );
    }
    let Some((svc, node_port)) = lookup(p) else {
        return XDP_PASS;
    };
    if let Some(entry) = CONNTRACK.get_ptr_mut(p.flow()) {
        // SAFETY: a valid map value pointer, copied out at once.
        let ct = unsafe { *entry };
        // SAFETY: copied out at once.
        let Some(b) = unsafe { BACKENDS.get(ct.backend_id) }.copied() else {
            return XDP_PASS;
        };
        // A direct-server-return packet that carries the option is tc's
        // (XDP cannot insert it), and so is a new connection that found a
        // flow of the service's other forwarding mode. The flags are read
        // as `dsr::tcp_flags` reads them.
        let tcp_flags = if p.ip.protocol == IPPROTO_TCP {
            xread::<[u8; 2]>(ctx, L4 + TCP_FLAGS - 1).map_or(0, |b| b[1])
        } else {
            0
        };
        if ct.service_id != svc.service_id
            || (ct.flags & CT_F_DSR != 0 && dsr::wants_option(tcp_flags, p))
            || dsr::switched(ct.flags, p, &svc, dsr::syn_only(tcp_flags))
            || send(ctx, p, (ct.nat_saddr, ct.nat_sport), (b.addr, b.port)).is_none()
        {
            return XDP_PASS;
        }
        // SAFETY: as above; a racing update of a timestamp is harmless.
        unsafe { (*entry).last_seen = now_s() };
        xcount(XdpCounter::Established);
        return XDP_TX;
    }
    new_flow(ctx, p, &svc, node_port).map_or(XDP_PASS, |()| {
        xcount(XdpCounter::NewFlow);
        XDP_TX
    })
}

/// A new flow from outside: picked and recorded as `from_netdev` does,
/// once the FIB lookup says its packets leave by the ingress interface.
#[inline(always)]
fn new_flow(ctx: &XdpContext, p: &Packet, svc: &ServiceValue, node_port: bool) -> Option<()> {
    if svc.count == 0 || dsr::chosen(p, svc) {
        return None;
    }
    let (backend_id, b) = pick_external(p, svc)?;
    let source = match external_source(p, svc, node_port, &b) {
        Ok(source) => source,
        Err(NoSource::Unconfigured | NoSource::NoPort) => return None,
    };
    let macs = next_hop(ctx, p, source, (b.addr, b.port))?;
    if !record_external(p, svc, backend_id, &b, source, false) {
        return None;
    }
    write_translation(ctx, p, source, (b.addr, b.port), &macs)
}

/// Translates the packet to `source` → `dest` and sends it back out, if the
/// FIB lookup allows.
#[inline(always)]
fn send(ctx: &XdpContext, p: &Packet, source: (u32, u16), dest: (u32, u16)) -> Option<()> {
    let macs = next_hop(ctx, p, source, dest)?;
    write_translation(ctx, p, source, dest, &macs)
}

/// The Ethernet addresses (destination, source) of the translated packet,
/// if the FIB sends it out of the interface it arrived on, to a known
/// neighbour, within the MTU.
#[inline(always)]
fn next_hop(
    ctx: &XdpContext,
    p: &Packet,
    (saddr, sport): (u32, u16),
    (daddr, dport): (u32, u16),
) -> Option<[u8; 12]> {
    let slot = SCRATCH_FIB.get_ptr_mut(0)?;
    let fib = zeroed_fib(slot);
    let ingress = ctx.ingress_ifindex() as u32;
    fib.family = 2; // AF_INET
    fib.l4_protocol = p.ip.protocol;
    fib.sport = sport;
    fib.dport = dport;
    fib.__bindgen_anon_1.tot_len = p.ip.total_len as u16;
    fib.ifindex = ingress;
    fib.__bindgen_anon_3.ipv4_src = saddr;
    fib.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: the XDP context and a parameter block of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), fib, size_of::<FibParams>() as i32, 0) };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) || fib.ifindex != ingress {
        return None;
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&fib.dmac);
    macs[6..].copy_from_slice(&fib.smac);
    Some(macs)
}

/// Writes the new addresses, ports and Ethernet header, and updates the
/// checksums as `rewrite` and the kernel's helpers do for a complete
/// checksum: the same RFC 1624 steps for the fields that change, in the
/// same order, a UDP checksum of 0 ("none") kept and a computed 0 sent as
/// 0xffff.
#[inline(always)]
fn write_translation(
    ctx: &XdpContext,
    p: &Packet,
    (saddr, sport): (u32, u16),
    (daddr, dport): (u32, u16),
    macs: &[u8; 12],
) -> Option<()> {
    let udp = p.ip.protocol == IPPROTO_UDP;
    // A constant offset for each protocol, not one computed: older
    // verifiers lose track of a computed one through the stack.
    let csum_at = if udp { L4 + UDP_CSUM } else { L4 + TCP_CSUM };
    let mut c = u16::from_be(xread::<u16>(ctx, csum_at)?);
    if !(udp && c == 0) {
        let mangled = |c: u16| if udp && c == 0 { 0xffff } else { c };
        if daddr != p.daddr {
            c = mangled(csum_update32(c, p.daddr, daddr));
        }
        if saddr != p.saddr {
            c = mangled(csum_update32(c, p.saddr, saddr));
        }
        if dport != p.dport {
            c = mangled(csum_update16(c, p.dport, dport));
        }
        if sport != p.sport {
            c = mangled(csum_update16(c, p.sport, sport));
        }
        xwrite(ctx, csum_at, c.to_be())?;
    }
    if daddr != p.daddr || saddr != p.saddr {
        let ip_csum = csum_update32(csum_update32(p.ip_csum, p.daddr, daddr), p.saddr, saddr);
        xwrite(ctx, L3 + IP_CSUM, ip_csum.to_be())?;
    }
    xwrite(ctx, L3 + IP_SADDR, saddr)?;
    xwrite(ctx, L3 + IP_DADDR, daddr)?;
    xwrite(ctx, L4, [sport, dport])?;
    xwrite(ctx, 0, *macs)
}

/// RFC 1624 incremental update of a checksum for a 16-bit field (both
/// values as in the packet).
#[inline(always)]
fn csum_update16(csum: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!csum)
        + u32::from(!u16::from_be_bytes(old.to_ne_bytes()))
        + u32::from(u16::from_be_bytes(new.to_ne_bytes()));
    fold(sum)
}
