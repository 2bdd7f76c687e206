//! The `packet-stats` classifier: what it counts, and where.
//!
//! The program keeps one `u64` per [`Counter`] in a per-CPU array named
//! [`MAP_NAME`]; user space sums the CPUs. A packet adds to several counters
//! (for example `Packets`, `Ipv4`, `Fragment` and `Udp`), so the counters are
//! not exclusive categories, except for the `Truncated*`/`Bad*` ones: a packet
//! found malformed at one layer is counted there once and parsing stops.

/// Name of the per-CPU array map that holds the counters.
pub const MAP_NAME: &str = "PACKET_STATS";
/// Name of the tc classifier program in the object file.
pub const PROGRAM_NAME: &str = "packet_stats";

/// Index of each counter in the [`MAP_NAME`] array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// Every packet the program ran on.
    Packets = 0,
    /// Sum of the packets' lengths in bytes (from the L2 header on).
    Bytes,
    /// Packets that carried one or two 802.1Q/802.1ad tags, in the frame or
    /// already stripped into the socket buffer by the driver.
    Vlan,
    /// Frames whose EtherType is not IPv4 (ARP, IPv6, ...): passed untouched.
    OtherEtherType,
    /// Well-formed IPv4 packets.
    Ipv4,
    /// IPv4 packets with options (IHL > 5).
    Ipv4Options,
    /// IPv4 fragments, first or not.
    Fragment,
    /// IPv4 fragments other than the first: they carry no L4 header.
    FragmentNonFirst,
    /// TCP segments (with a complete TCP header).
    Tcp,
    /// UDP datagrams (with a complete UDP header).
    Udp,
    /// ICMP messages (with a complete ICMP header).
    Icmp,
    /// IPv4 packets of any other protocol.
    OtherL4,
    /// Frames too short for their Ethernet or VLAN header.
    TruncatedL2,
    /// Packets shorter than their IPv4 header or than its total length.
    TruncatedL3,
    /// IPv4 headers that are invalid: version not 4, IHL below 5, or a total
    /// length smaller than the header.
    BadIpHeader,
    /// TCP, UDP or ICMP headers cut short, or a TCP data offset below 5 or
    /// past the end of the IP payload.
    TruncatedL4,
}

/// Number of counters, i.e. the size of the array map.
pub const COUNTERS: u32 = Counter::TruncatedL4 as u32 + 1;

impl Counter {
    /// All counters, in index order.
    pub const ALL: [Counter; COUNTERS as usize] = [
        Counter::Packets,
        Counter::Bytes,
        Counter::Vlan,
        Counter::OtherEtherType,
        Counter::Ipv4,
        Counter::Ipv4Options,
        Counter::Fragment,
        Counter::FragmentNonFirst,
        Counter::Tcp,
        Counter::Udp,
        Counter::Icmp,
        Counter::OtherL4,
        Counter::TruncatedL2,
        Counter::TruncatedL3,
        Counter::BadIpHeader,
        Counter::TruncatedL4,
    ];

    /// The counter's index in the map.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// A stable snake_case name, used for metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Packets => "packets",
            Counter::Bytes => "bytes",
            Counter::Vlan => "vlan",
            Counter::OtherEtherType => "other_ethertype",
            Counter::Ipv4 => "ipv4",
            Counter::Ipv4Options => "ipv4_options",
            Counter::Fragment => "fragment",
            Counter::FragmentNonFirst => "fragment_non_first",
            Counter::Tcp => "tcp",
            Counter::Udp => "udp",
            Counter::Icmp => "icmp",
            Counter::OtherL4 => "other_l4",
            Counter::TruncatedL2 => "truncated_l2",
            Counter::TruncatedL3 => "truncated_l3",
            Counter::BadIpHeader => "bad_ip_header",
            Counter::TruncatedL4 => "truncated_l4",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_complete() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i, "{c:?} out of order");
        }
        assert_eq!(Counter::ALL.len(), COUNTERS as usize);
    }
}
