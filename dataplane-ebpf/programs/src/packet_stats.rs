//! `packet-stats`: a tc classifier that parses Ethernet (with VLAN tags),
//! IPv4 (with options and fragments), TCP, UDP and ICMP, counts what it sees in
//! a per-CPU array, and passes every packet on unchanged.
//!
//! It returns `TC_ACT_UNSPEC` (`TCX_NEXT` under TCX) so that it never decides
//! a packet's fate: the next program, or the default action, does.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};
use rudder_ebpf::parse::{
    self, ETH_P_IP, ICMP_HLEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Malformed, TCP_MIN_HLEN,
    UDP_HLEN,
};
use rudder_ebpf_common::packet_stats::{COUNTERS, Counter};

#[map(name = "PACKET_STATS")]
static PACKET_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);

#[inline(always)]
fn add(counter: Counter, n: u64) {
    if let Some(slot) = PACKET_STATS.get_ptr_mut(counter.index()) {
        // SAFETY: the pointer comes from a per-CPU array lookup, so it is valid
        // for this CPU's copy of the value and no other CPU writes to it; the
        // program cannot be preempted on this CPU while it runs.
        unsafe { *slot += n };
    }
}

#[classifier]
pub fn packet_stats(ctx: TcContext) -> i32 {
    count(&ctx);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn count(ctx: &TcContext) {
    add(Counter::Packets, 1);
    add(Counter::Bytes, u64::from(ctx.len()));

    // A tag the driver moved out of the frame is in the socket buffer.
    // SAFETY: `ctx.skb.skb` is the context pointer the kernel passed to the
    // program; reading a field of `__sk_buff` is checked by the verifier.
    let accel_vlan = unsafe { (*ctx.skb.skb).vlan_present } != 0;

    let l2 = match parse::parse_l2(ctx) {
        Ok(l2) => l2,
        Err(_) => return add(Counter::TruncatedL2, 1),
    };
    if accel_vlan || l2.vlan_tags > 0 {
        add(Counter::Vlan, 1);
    }
    if l2.ethertype != ETH_P_IP {
        return add(Counter::OtherEtherType, 1);
    }
    let ip = match parse::parse_ipv4(ctx, l2.l3_offset) {
        Ok(ip) => ip,
        Err(Malformed::BadIpHeader) => return add(Counter::BadIpHeader, 1),
        Err(_) => return add(Counter::TruncatedL3, 1),
    };
    add(Counter::Ipv4, 1);
    if ip.has_options() {
        add(Counter::Ipv4Options, 1);
    }
    if ip.is_fragment() {
        add(Counter::Fragment, 1);
        if ip.is_later_fragment() {
            return add(Counter::FragmentNonFirst, 1);
        }
    }

    let l4 = l2.l3_offset + ip.header_len;
    // L4 bounds come from the IP total length, not the frame length, so that
    // Ethernet padding is never taken for a header.
    let l4_len = ip.total_len - ip.header_len;
    match ip.protocol {
        IPPROTO_TCP => {
            if l4_len < TCP_MIN_HLEN {
                return add(Counter::TruncatedL4, 1);
            }
            let Ok(off_flags) = ctx.load::<u8>(l4 + 12) else {
                return add(Counter::TruncatedL4, 1);
            };
            let doff = usize::from(off_flags >> 4) * 4;
            if doff < TCP_MIN_HLEN || doff > l4_len {
                return add(Counter::TruncatedL4, 1);
            }
            add(Counter::Tcp, 1);
        }
        IPPROTO_UDP => {
            if l4_len < UDP_HLEN {
                return add(Counter::TruncatedL4, 1);
            }
            add(Counter::Udp, 1);
        }
        IPPROTO_ICMP => {
            if l4_len < ICMP_HLEN {
                return add(Counter::TruncatedL4, 1);
            }
            add(Counter::Icmp, 1);
        }
        _ => add(Counter::OtherL4, 1),
    }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
