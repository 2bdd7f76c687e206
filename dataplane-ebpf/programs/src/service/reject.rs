//! Refusals of flows to a service without backends, made in place and
//! sent back out of the interface they came in on: a TCP RST (RFC 793's
//! rules for its sequence numbers) or an ICMP port unreachable quoting the
//! datagram (RFC 792); and ICMP "fragmentation needed" for packets that
//! direct server return's option would take past the path's MTU.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Refuses a flow to a service without backends: a TCP segment is answered
/// with a RST, a UDP datagram with ICMP port unreachable, sent back out of
/// the interface it came in on.
///
/// `from_pod` inlines the refusal into its own frame. The verifiers of
/// Debian's 5.10 and 6.1 round every frame of a call chain up to 32 bytes
/// against the 512-byte stack, so a subprogram's frame on top of
/// `from_pod`'s did not fit there ("combined stack size of 3 calls is
/// 576"; 6.18 accepted the same chain). `from_netdev`, whose own frame
/// leaves less room to inline into, calls it as a subprogram:
/// [`reject_outlined`].
#[inline(always)]
pub(super) fn reject(ctx: &TcContext, p: &Packet) -> i32 {
    let r = if p.ip.protocol == IPPROTO_TCP {
        reject_tcp(ctx, p)
    } else {
        reject_udp(ctx, p)
    };
    sent(ctx, p, r)
}

/// [`reject`] through BPF-to-BPF calls (a frame of their own).
#[inline(always)]
pub(super) fn reject_outlined(ctx: &TcContext, p: &Packet) -> i32 {
    let r = if p.ip.protocol == IPPROTO_TCP {
        reject_tcp_call(ctx, p)
    } else {
        reject_udp_call(ctx, p)
    };
    sent(ctx, p, r)
}

#[inline(never)]
fn reject_tcp_call(ctx: &TcContext, p: &Packet) -> Result<(), ()> {
    reject_tcp(ctx, p)
}

#[inline(never)]
fn reject_udp_call(ctx: &TcContext, p: &Packet) -> Result<(), ()> {
    reject_udp(ctx, p)
}

/// Answers a packet that does not fit the path's MTU and may not be
/// fragmented with ICMP "fragmentation needed" quoting it, `mtu` the
/// next hop's (RFC 1191), sent back out of the interface it came in on.
/// A subprogram, as [`reject_outlined`]'s.
#[inline(never)]
pub(super) fn frag_needed(ctx: &TcContext, p: &Packet, mtu: u16) -> Result<(), ()> {
    icmp_unreachable(ctx, p, 4, mtu)
}

/// Counts a refusal made and sends it back; drops the packet when it
/// could not be made.
#[inline(always)]
fn sent(ctx: &TcContext, p: &Packet, r: Result<(), ()>) -> i32 {
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

#[inline(always)]
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
    // Spelled out rather than zeroed then filled: LLVM makes the zeroing
    // of the tail a `memset` call, a frame more on the stack (see
    // [`reject`]).
    let (sp, dp) = (p.dport.to_ne_bytes(), p.sport.to_ne_bytes());
    let (sq, ak) = (rst_seq.to_be_bytes(), rst_ack.to_be_bytes());
    #[rustfmt::skip]
    let mut tcp = [
        sp[0], sp[1], dp[0], dp[1],
        sq[0], sq[1], sq[2], sq[3],
        ak[0], ak[1], ak[2], ak[3],
        5 << 4, rst_flags, 0, 0,
        0, 0, 0, 0,
    ];
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

#[inline(always)]
fn reject_udp(ctx: &TcContext, p: &Packet) -> Result<(), ()> {
    icmp_unreachable(ctx, p, 3, 0)
}

/// Turns the packet into an ICMP destination unreachable of `code` (3:
/// port unreachable; 4: fragmentation needed, with the next hop's `mtu`)
/// to its sender, quoting the original IP header and the first 8 bytes of
/// its payload (RFC 792).
#[inline(always)]
fn icmp_unreachable(ctx: &TcContext, p: &Packet, code: u8, mtu: u16) -> Result<(), ()> {
    // The quote stays where it is in the packet; it is read here only to
    // checksum it, in fixed-size words the verifier can bound.
    let quote_len = p.ip.header_len + 8;
    let mut sum = u32::from(3u16 << 8 | u16::from(code)) + u32::from(mtu);
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
    icmp[1] = code;
    icmp[2..4].copy_from_slice(&fold(sum).to_be_bytes());
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
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
