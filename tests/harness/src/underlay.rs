//! One underlay segment made of namespaces: a bridge in a namespace of its
//! own (the wire) and hosts on it, each host's uplink `up0` a veth whose
//! other end (`p<i>`) is a port of the bridge. The hosts' uplinks send
//! complete checksums (transmit checksum offload off), as frames arriving
//! from a NIC carry them: XDP programs see the frame, not the socket
//! buffer's offload state.

use crate::NetNs;

/// The segment; every namespace is deleted on drop.
#[derive(Debug)]
pub struct Underlay {
    pub wire: NetNs,
    pub hosts: Vec<NetNs>,
    /// The bridge's ports, one per host, in the wire's namespace.
    pub ports: Vec<String>,
}

impl Underlay {
    /// Hosts with the given addresses (CIDR) on `up0`.
    #[track_caller]
    pub fn new(addrs: &[&str]) -> Self {
        let wire = NetNs::new();
        wire.bridge("br0", None);
        let mut hosts = vec![];
        let mut ports = vec![];
        for (i, addr) in addrs.iter().enumerate() {
            let host = NetNs::new();
            let port = format!("p{i}");
            host.veth_to(&wire, ("up0", Some(addr)), (&port, None));
            wire.ip(&["link", "set", &port, "master", "br0"]);
            let out = host.exec("ethtool", &["-K", "up0", "tx", "off"]);
            assert!(
                out.status.success(),
                "ethtool -K up0 tx off: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            hosts.push(host);
            ports.push(port);
        }
        Self { wire, hosts, ports }
    }
}
