//! Builds Ethernet frames for `BPF_PROG_TEST_RUN`: optional VLAN tags, IPv4
//! with options and fragment fields, TCP/UDP/ICMP with correct checksums.

use std::net::Ipv4Addr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// The L4 part of a packet.
#[derive(Debug, Clone)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
    },
    /// ICMP echo request.
    IcmpEcho { id: u16, seq: u16 },
    /// Raw bytes after the IP header with the given protocol number.
    Raw { protocol: u8, bytes: Vec<u8> },
}

/// An IPv4 packet in an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Ipv4Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    /// IP options, padded to a multiple of 4 bytes when built.
    pub options: Vec<u8>,
    /// More-fragments flag.
    pub more_fragments: bool,
    /// Don't-fragment flag.
    pub dont_fragment: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub l4: L4,
    /// VLAN tags (TPID, TCI), outermost first.
    pub vlans: Vec<(u16, u16)>,
}

impl Ipv4Packet {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Self {
        Self {
            src,
            dst,
            ttl: 64,
            options: vec![],
            more_fragments: false,
            dont_fragment: false,
            frag_offset: 0,
            l4,
            vlans: vec![],
        }
    }

    pub fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Self {
        Self::new(
            src.into(),
            dst.into(),
            L4::Udp {
                sport,
                dport,
                payload: payload.to_vec(),
            },
        )
    }

    pub fn tcp_syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Self {
        Self::new(
            src.into(),
            dst.into(),
            L4::Tcp {
                sport,
                dport,
                flags: 0x02,
                payload: vec![],
            },
        )
    }

    pub fn icmp_echo(src: [u8; 4], dst: [u8; 4]) -> Self {
        Self::new(src.into(), dst.into(), L4::IcmpEcho { id: 7, seq: 1 })
    }

    #[must_use]
    pub fn with_vlan(mut self, tpid: u16, vid: u16) -> Self {
        self.vlans.push((tpid, vid));
        self
    }

    #[must_use]
    pub fn with_options(mut self, options: &[u8]) -> Self {
        self.options = options.to_vec();
        self
    }

    #[must_use]
    pub fn dont_fragment(mut self) -> Self {
        self.dont_fragment = true;
        self
    }

    #[must_use]
    pub fn fragment(mut self, more_fragments: bool, offset_units: u16) -> Self {
        self.more_fragments = more_fragments;
        self.frag_offset = offset_units;
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0); // End of Option List padding.
        }
        let ihl = 20 + opts.len();
        let (protocol, l4) = self.l4_bytes();
        let total = ihl + l4.len();

        let mut ip = Vec::with_capacity(total);
        ip.push(0x40 | (ihl / 4) as u8);
        ip.push(0);
        ip.extend_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&0x1234u16.to_be_bytes());
        let frag = (u16::from(self.dont_fragment) << 14)
            | (u16::from(self.more_fragments) << 13)
            | (self.frag_offset & 0x1fff);
        ip.extend_from_slice(&frag.to_be_bytes());
        ip.push(self.ttl);
        ip.push(protocol);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&opts);
        let c = checksum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&l4);
        ethernet(&self.vlans, ETH_P_IP, &ip)
    }

    fn l4_bytes(&self) -> (u8, Vec<u8>) {
        let pseudo = |proto: u8, len: usize| -> u32 {
            let mut s = 0u32;
            for o in [self.src.octets(), self.dst.octets()] {
                s += u32::from(u16::from_be_bytes([o[0], o[1]]));
                s += u32::from(u16::from_be_bytes([o[2], o[3]]));
            }
            s + u32::from(proto) + len as u32
        };
        match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
                payload,
            } => {
                let mut t = Vec::with_capacity(20 + payload.len());
                t.extend_from_slice(&sport.to_be_bytes());
                t.extend_from_slice(&dport.to_be_bytes());
                t.extend_from_slice(&1u32.to_be_bytes()); // seq
                t.extend_from_slice(&0u32.to_be_bytes()); // ack
                t.push(5 << 4);
                t.push(*flags);
                t.extend_from_slice(&64240u16.to_be_bytes());
                t.extend_from_slice(&[0, 0, 0, 0]); // csum, urg
                t.extend_from_slice(payload);
                let c = checksum(&t, pseudo(6, t.len()));
                t[16..18].copy_from_slice(&c.to_be_bytes());
                (6, t)
            }
            L4::Udp {
                sport,
                dport,
                payload,
            } => {
                let len = 8 + payload.len();
                let mut u = Vec::with_capacity(len);
                u.extend_from_slice(&sport.to_be_bytes());
                u.extend_from_slice(&dport.to_be_bytes());
                u.extend_from_slice(&(len as u16).to_be_bytes());
                u.extend_from_slice(&[0, 0]);
                u.extend_from_slice(payload);
                let mut c = checksum(&u, pseudo(17, len));
                if c == 0 {
                    c = 0xffff;
                }
                u[6..8].copy_from_slice(&c.to_be_bytes());
                (17, u)
            }
            L4::IcmpEcho { id, seq } => {
                let mut i = vec![8, 0, 0, 0];
                i.extend_from_slice(&id.to_be_bytes());
                i.extend_from_slice(&seq.to_be_bytes());
                i.extend_from_slice(b"rudder");
                let c = checksum(&i, 0);
                i[2..4].copy_from_slice(&c.to_be_bytes());
                (1, i)
            }
            L4::Raw { protocol, bytes } => (*protocol, bytes.clone()),
        }
    }
}

/// A TCP segment's frame, with correct checksums.
pub fn tcp(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    tcp_with_options(src, sport, dst, dport, flags, payload, &[])
}

/// A TCP segment's frame with IP options, with correct checksums.
pub fn tcp_with_options(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    payload: &[u8],
    options: &[u8],
) -> Vec<u8> {
    Ipv4Packet::new(
        src.into(),
        dst.into(),
        L4::Tcp {
            sport,
            dport,
            flags,
            payload: payload.to_vec(),
        },
    )
    .with_options(options)
    .build()
}

/// A UDP datagram's frame, with correct checksums.
pub fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    Ipv4Packet::udp(src, sport, dst, dport, payload).build()
}

/// An Ethernet frame (with VLAN tags, outermost first) around `payload`.
pub fn ethernet(vlans: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * vlans.len() + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src
    for (tpid, tci) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The Internet checksum of `data`, starting from a partial sum.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_header_checksum_verifies() {
        let f = Ipv4Packet::udp([10, 0, 0, 1], 1000, [10, 0, 0, 2], 53, b"hi").build();
        assert_eq!(
            checksum(&f[14..34], 0),
            0,
            "a header with its checksum sums to zero"
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 2);
    }

    #[test]
    fn options_are_padded_and_ihl_follows() {
        let f = Ipv4Packet::icmp_echo([1, 1, 1, 1], [2, 2, 2, 2])
            .with_options(&[1, 1, 1])
            .build();
        assert_eq!(f[14] & 0x0f, 6);
    }

    #[test]
    fn vlan_tags_come_before_the_ethertype() {
        let f = Ipv4Packet::tcp_syn([1, 1, 1, 1], 1, [2, 2, 2, 2], 2)
            .with_vlan(ETH_P_8021AD, 100)
            .with_vlan(ETH_P_8021Q, 200)
            .build();
        assert_eq!(u16::from_be_bytes([f[12], f[13]]), ETH_P_8021AD);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), ETH_P_8021Q);
        assert_eq!(u16::from_be_bytes([f[20], f[21]]), ETH_P_IP);
    }
}
