//! Maps of the Service dataplane (`service` object).
//!
//! Addresses and ports are kept in network byte order, as they appear in
//! packets, so the datapath never converts. User space converts with
//! [`u32::to_be`]/[`u16::to_be`] (or `from_be` when reading).
//!
//! How a new flow to a Service is translated:
//! 1. [`SERVICES`](MAP_SERVICES)`[ServiceKey{vip, port, proto}]` gives a
//!    [`ServiceValue`]: the service's stable id, its current slot set and how
//!    many backends it has.
//! 2. With session affinity, [`AFFINITY`](MAP_AFFINITY)`[{client, service}]`
//!    may name a backend still in [`BACKENDS`](MAP_BACKENDS) and not expired.
//! 3. Otherwise a random slot `0..count` of the slot set is read from
//!    [`SLOTS`](MAP_SLOTS), giving a backend id, looked up in `BACKENDS`.
//! 4. The flow is recorded and the packet is rewritten. A pod's flow to a
//!    service address takes one entry of [`FLOWS`](MAP_FLOWS), an LRU map
//!    keyed by the client's socket (address, port, protocol): its packets
//!    find it by their source, the backend's replies by their destination,
//!    so one insert serves both directions. A flow whose socket already
//!    has an entry for another destination (an unconnected UDP socket
//!    talking to two services), and the flows whose replies come back to
//!    another address (NodePorts, source NAT of traffic from outside,
//!    hairpin), are recorded in [`CONNTRACK`](MAP_CONNTRACK) (forward,
//!    client→VIP) and/or [`REV_NAT`](MAP_REV_NAT) (reply, backend→client).
//!
//! User space switches a service's backends atomically: it writes a new slot
//! set under a fresh `slots_id`, then replaces the `ServiceValue` (one map
//! update), then deletes the old slots. A packet sees the old set or the new
//! one, never a mix, never zero backends while some exist.

/// Map names in the object file.
pub const MAP_SERVICES: &str = "SERVICES";
pub const MAP_SLOTS: &str = "SLOTS";
pub const MAP_BACKENDS: &str = "BACKENDS";
pub const MAP_FLOWS: &str = "FLOWS";
pub const MAP_CONNTRACK: &str = "CONNTRACK";
pub const MAP_REV_NAT: &str = "REV_NAT";
pub const MAP_AFFINITY: &str = "AFFINITY";
pub const MAP_MEMBERS: &str = "MEMBERS";
pub const MAP_FRAGMENTS: &str = "FRAGMENTS";
pub const MAP_CONFIG: &str = "SVC_CONFIG";
pub const MAP_STATS: &str = "SVC_STATS";
pub const MAP_SOCK_REV: &str = "SOCK_REV";
pub const MAP_HOST_NETNS: &str = "HOST_NETNS";
pub const MAP_NODE_ADDRS: &str = "NODE_ADDRS";
pub const MAP_XDP_STATS: &str = "XDP_STATS";
pub const MAP_DSR_STATS: &str = "DSR_STATS";
pub const MAP_DSR_NODES: &str = "DSR_NODES";
/// How many node addresses `DSR_NODES` holds (two per node of a 5,000-node
/// cluster, Kubernetes' largest supported size, and room to spare).
pub const MAX_DSR_NODES: u32 = 16_384;

/// Program names in the object file.
pub const PROG_FROM_POD: &str = "from_pod";
pub const PROG_TO_POD: &str = "to_pod";
/// tc ingress of the node's own interfaces (uplink, VXLAN device): NodePorts,
/// externalIPs and LoadBalancer IPs from outside, and replies to them from
/// remote backends.
pub const PROG_FROM_NETDEV: &str = "from_netdev";
/// XDP on the node's uplink: the fast path of `from_netdev` for traffic
/// from outside whose backend is reached back out of the same interface.
pub const PROG_XDP_FROM_NETDEV: &str = "xdp_from_netdev";
/// Socket-level translation for the node's own processes (cgroup hooks).
pub const PROG_CONNECT4: &str = "sock_connect4";
pub const PROG_SENDMSG4: &str = "sock_sendmsg4";
pub const PROG_RECVMSG4: &str = "sock_recvmsg4";
pub const PROG_GETPEERNAME4: &str = "sock_getpeername4";

/// Map sizes.
/// Service front ends (service ports × addresses).
pub const MAX_SERVICES: u32 = 1 << 20;
/// Backend slots, old and new sets of services being updated included.
pub const MAX_SLOTS: u32 = 1 << 23;
/// Distinct backends (address, port).
pub const MAX_BACKENDS: u32 = 1 << 21;
pub const MAX_FLOWS: u32 = 524_288;
pub const MAX_AFFINITY: u32 = 131_072;
pub const MAX_FRAGMENTS: u32 = 8_192;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// A Service front end: ClusterIP (or other address) + port + protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Network order.
    pub addr: u32,
    /// Network order.
    pub port: u16,
    pub proto: u8,
    /// [`SCOPE_ADDR`] (the address itself) or [`SCOPE_NODEPORT`] (`addr`
    /// is 0: the port on every node address).
    pub scope: u8,
}

/// A front end on its own address: ClusterIP, externalIP, LoadBalancer IP.
pub const SCOPE_ADDR: u8 = 0;
/// A NodePort: the port on any of the node's addresses (`NODE_ADDRS`).
pub const SCOPE_NODEPORT: u8 = 1;

/// `ServiceValue::flags`: keep the client's source address on traffic from
/// outside the cluster (`externalTrafficPolicy: Local`; the backends are
/// then only this node's).
pub const SVC_F_KEEP_SOURCE: u32 = 1;
/// `ServiceValue::flags`: new flows from outside the cluster pick their
/// backend by Maglev consistent hashing of the flow over the slot set
/// `maglev_slots_id`, whose size is in the flags' upper 16 bits (the same
/// table on every node: a flow keeps its backend whichever node it
/// reaches). Pods' own flows still pick at random over `slots_id`.
pub const SVC_F_MAGLEV: u32 = 2;
/// `ServiceValue::flags`: direct server return for traffic from outside
/// (`rudder.io/forwarding-mode: dsr`): a new flow keeps the client's
/// address, its first packet (every datagram, for UDP) carries the service
/// address to the backend's node in an IP option ([`DSR_OPT_TYPE`]), and
/// the backend's replies go from there straight to the client.
pub const SVC_F_DSR: u32 = 4;
/// Shift of the Maglev table size in `ServiceValue::flags`.
pub const SVC_MAGLEV_SIZE_SHIFT: u32 = 16;

/// A Service's current state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    /// Stable id of the service front end (affinity and conntrack refer to it).
    pub service_id: u32,
    /// The slot set in use; see [`SlotKey`].
    pub slots_id: u32,
    /// Number of slots (backends) in the set; 0 means refuse new flows.
    pub count: u32,
    /// Session affinity timeout in seconds; 0 disables affinity.
    pub affinity_timeout: u32,
    /// `SVC_F_*` flags (and the Maglev table size in the upper 16 bits).
    pub flags: u32,
    /// With `SVC_F_MAGLEV`: the slot set of the Maglev lookup table.
    pub maglev_slots_id: u32,
}

impl ServiceValue {
    /// The Maglev table's size, 0 without one.
    pub fn maglev_size(&self) -> u32 {
        if self.flags & SVC_F_MAGLEV == 0 {
            0
        } else {
            self.flags >> SVC_MAGLEV_SIZE_SHIFT
        }
    }
}

/// Key of one backend slot of a slot set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub slots_id: u32,
    pub slot: u32,
}

/// A backend: where translated packets go. Keyed by backend id (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Backend {
    /// Network order.
    pub addr: u32,
    /// Network order.
    pub port: u16,
    pub _pad: u16,
}

/// A flow's 5-tuple as seen in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// Padding as two fields: a three-byte array is zeroed by a call to
    /// `memset` in BPF code.
    pub _pad: u8,
    pub _pad2: u16,
}

/// Key of [`MAP_FLOWS`]: a client socket (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// A pod's flow to a service address, keyed by its client socket: where it
/// goes and what its replies are translated back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    /// The service address and port the client sent to (network order).
    pub vip: u32,
    pub vport: u16,
    /// `FLOW_F_*` flags.
    pub flags: u16,
    pub service_id: u32,
    pub backend_id: u32,
    /// The service's slot set when the backend was last known to be in
    /// it: while the service still has that set, the backend needs no
    /// lookup.
    pub slots_id: u32,
    /// The backend (network order).
    pub backend_addr: u32,
    pub backend_port: u16,
    pub _pad: u16,
    /// Source address after translation: the client's own, or the hairpin
    /// address when the client is its own backend.
    pub nat_saddr: u32,
}

/// `FlowValue::flags`: the client is its own backend; replies come back to
/// the hairpin address and are found in `REV_NAT`.
pub const FLOW_F_HAIRPIN: u16 = 1;

/// Forward conntrack entry (key: client→VIP tuple).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CtValue {
    pub backend_id: u32,
    pub service_id: u32,
    /// Source address after translation: the client's own, the hairpin
    /// address when the client is its own backend, or a node address for
    /// traffic from outside (source NAT).
    pub nat_saddr: u32,
    /// Seconds since boot when the flow was made (refreshed by packets
    /// from outside); for inspection, the datapath does not read it.
    pub last_seen: u32,
    /// Source port after translation (network order).
    pub nat_sport: u16,
    /// `CT_F_*` flags (0 in entries of agents before direct server return).
    pub flags: u16,
}

/// `CtValue::flags`: the flow is forwarded by direct server return; its
/// replies do not come back through this node.
pub const CT_F_DSR: u16 = 1;

/// Reverse NAT entry (key: backend→client tuple, as replies carry it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RevNatValue {
    /// The service address and port the client used (network order).
    pub vip: u32,
    pub vport: u16,
    /// `REV_F_*` flags.
    pub flags: u16,
    /// The client's address (differs from the reply's destination for hairpin flows).
    pub client: u32,
    pub service_id: u32,
    /// The client's port (differs from the reply's destination port when
    /// source NAT had to pick another one).
    pub client_port: u16,
    pub _pad: u16,
}

/// The reply must be sent straight back out of the interface it came in
/// on: the client is the pod behind it (hairpin).
pub const REV_F_HAIRPIN: u16 = 1;
/// The reply's new source is a node address: it is routed by the program
/// (FIB lookup and redirect), since the stack drops forwarded packets from
/// its own addresses.
pub const REV_F_ROUTE: u16 = 2;

/// The entry was made on a backend's node from the IP option of a flow
/// forwarded by direct server return: a connection attempt without the
/// option on the same addresses and ports removes it.
pub const REV_F_DSR: u16 = 4;

/// The IP option that carries a direct-server-return flow's service
/// address to its backend's node, after Cilium's: type 0x9a (copied on
/// fragmentation, class 0, number 26), length 8, the service port and
/// address (network order).
pub const DSR_OPT_TYPE: u8 = 0x9a;
pub const DSR_OPT_LEN: u8 = 8;

/// `(service, backend)` pairs of the current slot sets: session affinity
/// only follows a backend that is still one of the service's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MemberKey {
    pub service_id: u32,
    pub backend_id: u32,
}

/// Session affinity key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AffinityKey {
    pub client: u32,
    pub service_id: u32,
}

/// Session affinity entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AffinityValue {
    pub backend_id: u32,
    /// Seconds since boot of the last new flow that used it.
    pub last_used: u32,
}

/// Key of a datagram being fragmented (IPv4 id + addresses + protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragKey {
    pub saddr: u32,
    pub daddr: u32,
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// What the first fragment was translated to; later fragments follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragValue {
    pub new_saddr: u32,
    pub new_daddr: u32,
}

/// Socket-level reverse translation: a socket (by cookie) that was sent to
/// a backend in place of a service address. `recvmsg` (UDP) and
/// `getpeername` show the service address again.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockRevKey {
    pub cookie: u64,
    /// Backend address and port, network order.
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// The service address a socket's peer stands for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockRevValue {
    pub vip: u32,
    pub vport: u16,
    pub _pad: u16,
}

/// Indices of the `SVC_CONFIG` array (`u32` values).
pub mod config {
    /// The hairpin source address (network order), link-local.
    pub const HAIRPIN_ADDR: u32 = 0;
    /// Clock offset in seconds added to "now" (tests use it to expire
    /// affinity without waiting); 0 in production.
    pub const CLOCK_OFFSET: u32 = 1;
    /// The node's primary address (network order): the source NAT address
    /// for externalIPs and LoadBalancer IPs that are not the node's own.
    pub const NODE_IP: u32 = 2;
    pub const LEN: u32 = 3;
}

/// Datapath counters (`SVC_STATS`, per-CPU `u64`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SvcCounter {
    /// New flows translated to a backend.
    NewFlow = 0,
    /// Packets of known flows translated.
    Established,
    /// Replies translated back to the service address.
    Reverse,
    /// New flows that followed session affinity.
    AffinityHit,
    /// Known flows whose backend was gone, re-balanced (and new TCP
    /// connections from outside that found a flow of the same addresses
    /// and ports made in the service's other forwarding mode).
    StaleBackend,
    /// TCP connection attempts to a service without backends, answered with RST.
    RejectTcp,
    /// UDP datagrams to a service without backends, answered with ICMP port unreachable.
    RejectUdp,
    /// Fragments translated like their datagram's first fragment.
    Fragment,
    /// Non-first fragments with no known first fragment: passed untouched.
    FragmentUnknown,
    /// TCP/UDP packets whose L4 header is cut short: passed untouched.
    Malformed,
    /// A map update failed (table full): the packet passed untouched.
    MapFull,
    /// ICMP errors about translated flows, translated back.
    IcmpError,
    /// Sockets of the node's own processes sent to a backend at connect
    /// or sendmsg time.
    HostSocket,
    /// Such connects to a service without backends, refused (EPERM).
    HostReject,
    /// New flows from outside (NodePort, externalIPs, LoadBalancer IPs).
    External,
    /// Packets the program routed itself (FIB lookup and redirect).
    Routed,
    /// No free source port for source NAT: dropped.
    NoPort,
}

pub const SVC_COUNTERS: u32 = SvcCounter::NoPort as u32 + 1;

impl SvcCounter {
    pub const ALL: [SvcCounter; SVC_COUNTERS as usize] = [
        SvcCounter::NewFlow,
        SvcCounter::Established,
        SvcCounter::Reverse,
        SvcCounter::AffinityHit,
        SvcCounter::StaleBackend,
        SvcCounter::RejectTcp,
        SvcCounter::RejectUdp,
        SvcCounter::Fragment,
        SvcCounter::FragmentUnknown,
        SvcCounter::Malformed,
        SvcCounter::MapFull,
        SvcCounter::IcmpError,
        SvcCounter::HostSocket,
        SvcCounter::HostReject,
        SvcCounter::External,
        SvcCounter::Routed,
        SvcCounter::NoPort,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            SvcCounter::NewFlow => "new_flow",
            SvcCounter::Established => "established",
            SvcCounter::Reverse => "reverse",
            SvcCounter::AffinityHit => "affinity_hit",
            SvcCounter::StaleBackend => "stale_backend",
            SvcCounter::RejectTcp => "reject_tcp",
            SvcCounter::RejectUdp => "reject_udp",
            SvcCounter::Fragment => "fragment",
            SvcCounter::FragmentUnknown => "fragment_unknown",
            SvcCounter::Malformed => "malformed",
            SvcCounter::MapFull => "map_full",
            SvcCounter::IcmpError => "icmp_error",
            SvcCounter::HostSocket => "host_socket",
            SvcCounter::HostReject => "host_reject",
            SvcCounter::External => "external",
            SvcCounter::Routed => "routed",
            SvcCounter::NoPort => "no_source_port",
        }
    }
}

/// Counters of the XDP fast path (`XDP_STATS`, per-CPU `u64`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XdpCounter {
    /// New flows from outside translated and sent back out at XDP.
    NewFlow = 0,
    /// Packets of known flows from outside translated at XDP.
    Established,
    /// Replies of remote backends translated back at XDP.
    Reverse,
    /// Packets passed on to the stack (and `from_netdev`) untouched.
    Passed,
}

impl XdpCounter {
    pub const LEN: u32 = XdpCounter::Passed as u32 + 1;
    pub const ALL: [XdpCounter; XdpCounter::LEN as usize] = [
        XdpCounter::NewFlow,
        XdpCounter::Established,
        XdpCounter::Reverse,
        XdpCounter::Passed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            XdpCounter::NewFlow => "xdp_new_flow",
            XdpCounter::Established => "xdp_established",
            XdpCounter::Reverse => "xdp_reverse",
            XdpCounter::Passed => "xdp_passed",
        }
    }
}

/// Counters of direct server return (`DSR_STATS`, per-CPU `u64`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DsrCounter {
    /// Packets sent to a backend with the option (at the service's node).
    Sent = 0,
    /// Reply translations recorded from an option (at a backend's node).
    Learned,
    /// Options naming no service that asks for direct server return:
    /// ignored.
    Refused,
    /// Packets that would exceed the path's MTU with the option: answered
    /// with ICMP "fragmentation needed".
    TooBig,
}

impl DsrCounter {
    pub const LEN: u32 = DsrCounter::TooBig as u32 + 1;
    pub const ALL: [DsrCounter; DsrCounter::LEN as usize] = [
        DsrCounter::Sent,
        DsrCounter::Learned,
        DsrCounter::Refused,
        DsrCounter::TooBig,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DsrCounter::Sent => "dsr_sent",
            DsrCounter::Learned => "dsr_learned",
            DsrCounter::Refused => "dsr_refused",
            DsrCounter::TooBig => "dsr_too_big",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers, with
    // explicit padding fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for ServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ServiceValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SlotKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CtValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RevNatValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for AffinityKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for MemberKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for AffinityValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FragKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FragValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SockRevKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SockRevValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(size_of::<ServiceValue>(), 24);
        assert_eq!(size_of::<SlotKey>(), 8);
        assert_eq!(size_of::<Backend>(), 8);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<CtValue>(), 20);
        assert_eq!(size_of::<SockKey>(), 8);
        assert_eq!(size_of::<FlowValue>(), 32);
        assert_eq!(size_of::<RevNatValue>(), 20);
        assert_eq!(size_of::<AffinityKey>(), 8);
        assert_eq!(size_of::<AffinityValue>(), 8);
        assert_eq!(size_of::<FragKey>(), 12);
        assert_eq!(size_of::<FragValue>(), 8);
        assert_eq!(size_of::<SockRevKey>(), 16);
        assert_eq!(size_of::<SockRevValue>(), 8);
    }

    #[test]
    fn counters_in_order() {
        for (i, c) in SvcCounter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
