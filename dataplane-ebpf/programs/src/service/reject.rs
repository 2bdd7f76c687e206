//! Refusals of flows to a service without backends, made in place and
//! sent back out of the interface they came in on: a TCP RST (RFC 793's
//! rules for its sequence numbers) or an ICMP port unreachable quoting the
//! datagram (RFC 792).

#[allow(clippy::wildcard_imports)]
use super::*;

/// Refuses a flow to a service without backends: a TCP segment is answered
/// with a RST, a UDP datagram with ICMP port unreachable, sent back out of
/// the interface it came in on.
#[inline(always)]
pub(super) fn reject(ctx: &TcContext, p: &Packet) -> i32 {
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
