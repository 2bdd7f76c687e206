//! Bounds-checked parsing of Ethernet, VLAN and IPv4 headers from a socket
//! buffer. Every read goes through `bpf_skb_load_bytes`, which fails instead of
//! reading past the end, and every length taken from a header is checked
//! against the packet before use.

use aya_ebpf::programs::TcContext;

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPV4_MIN_HLEN: usize = 20;
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET_MASK: u16 = 0x1fff;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const TCP_MIN_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
pub const ICMP_HLEN: usize = 8;

/// Why a packet could not be parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    TruncatedL2,
    TruncatedL3,
    BadIpHeader,
}

/// Where the network header starts and which EtherType it has.
#[derive(Clone, Copy)]
pub struct L2 {
    pub l3_offset: usize,
    pub ethertype: u16,
    pub vlan_tags: u8,
}

/// Reads a big-endian `u16` at `offset`.
#[inline(always)]
pub fn load_be16(ctx: &TcContext, offset: usize) -> Option<u16> {
    ctx.load::<u16>(offset).ok().map(u16::from_be)
}

/// Parses the Ethernet header and up to two VLAN tags (802.1ad outer, 802.1Q
/// inner), as they appear in the frame.
#[inline(always)]
pub fn parse_l2(ctx: &TcContext) -> Result<L2, Malformed> {
    let mut ethertype = load_be16(ctx, 12).ok_or(Malformed::TruncatedL2)?;
    let mut offset = ETH_HLEN;
    let mut vlan_tags = 0u8;
    // Unrolled: the verifier wants bounded loops and two tags is QinQ's limit.
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = load_be16(ctx, offset + 2).ok_or(Malformed::TruncatedL2)?;
        offset += VLAN_HLEN;
        vlan_tags += 1;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            ethertype = load_be16(ctx, offset + 2).ok_or(Malformed::TruncatedL2)?;
            offset += VLAN_HLEN;
            vlan_tags += 1;
        }
    }
    Ok(L2 {
        l3_offset: offset,
        ethertype,
        vlan_tags,
    })
}

/// The parts of an IPv4 header that the programs use.
#[derive(Clone, Copy)]
pub struct Ipv4 {
    /// Header length in bytes (IHL × 4), at least 20.
    pub header_len: usize,
    /// Total length from the header: header plus payload, without L2 padding.
    pub total_len: usize,
    pub protocol: u8,
    /// Flags and fragment offset, host order.
    pub frag: u16,
    pub saddr: u32,
    pub daddr: u32,
}

impl Ipv4 {
    #[inline(always)]
    pub fn has_options(&self) -> bool {
        self.header_len > IPV4_MIN_HLEN
    }
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        self.frag & (IP_MF | IP_OFFSET_MASK) != 0
    }
    /// A fragment other than the first: its payload starts mid-datagram and
    /// carries no L4 header.
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        self.frag & IP_OFFSET_MASK != 0
    }
}

/// Parses and validates the IPv4 header at `offset`.
#[inline(always)]
pub fn parse_ipv4(ctx: &TcContext, offset: usize) -> Result<Ipv4, Malformed> {
    let packet_len = ctx.len() as usize;
    if packet_len < offset + IPV4_MIN_HLEN {
        return Err(Malformed::TruncatedL3);
    }
    let vihl: u8 = ctx.load(offset).map_err(|_| Malformed::TruncatedL3)?;
    if vihl >> 4 != 4 {
        return Err(Malformed::BadIpHeader);
    }
    let header_len = usize::from(vihl & 0x0f) * 4;
    if header_len < IPV4_MIN_HLEN {
        return Err(Malformed::BadIpHeader);
    }
    let total_len = usize::from(load_be16(ctx, offset + 2).ok_or(Malformed::TruncatedL3)?);
    if total_len < header_len {
        return Err(Malformed::BadIpHeader);
    }
    if packet_len < offset + total_len {
        return Err(Malformed::TruncatedL3);
    }
    let frag = load_be16(ctx, offset + 6).ok_or(Malformed::TruncatedL3)?;
    let protocol: u8 = ctx.load(offset + 9).map_err(|_| Malformed::TruncatedL3)?;
    let saddr = u32::from_be(ctx.load(offset + 12).map_err(|_| Malformed::TruncatedL3)?);
    let daddr = u32::from_be(ctx.load(offset + 16).map_err(|_| Malformed::TruncatedL3)?);
    Ok(Ipv4 {
        header_len,
        total_len,
        protocol,
        frag,
        saddr,
        daddr,
    })
}
