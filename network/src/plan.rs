//! From the cluster's Nodes to the kernel entries this node needs: pure, so
//! it is tested without privileges. The daemon reads what it programmed
//! before, asks [`diff`] for the operations, and applies them.

use std::{collections::BTreeSet, net::Ipv4Addr};

use rudder_cni::net::Ipv4Net;
use rudder_netlink::{Fdb, Neighbour, Route};

use super::config::Backend;

/// Annotations a node publishes for the others (flannel's, under our name).
pub const ANN_BACKEND: &str = "rudder.io/backend-type";
pub const ANN_PUBLIC_IP: &str = "rudder.io/public-ip";
pub const ANN_VTEP_MAC: &str = "rudder.io/vtep-mac";

/// What the plan needs to know about one Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub pod_cidr: Option<Ipv4Net>,
    pub backend: Option<String>,
    pub public_ip: Option<Ipv4Addr>,
    pub vtep_mac: Option<[u8; 6]>,
}

/// This node's side of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local<'a> {
    pub name: &'a str,
    pub backend: Backend,
    pub cluster_cidr: Ipv4Net,
    /// The VXLAN device (vxlan) or the uplink (host-gw).
    pub ifindex: u32,
    /// The uplink's own subnet, to tell a host-gw peer that is not on it.
    pub uplink_net: Ipv4Net,
}

/// The entries this node should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: BTreeSet<Route>,
    pub neighbours: BTreeSet<Neighbour>,
    pub fdbs: BTreeSet<Fdb>,
    /// Peers that cannot be routed to, with why (logged, not fatal).
    pub skipped: Vec<(String, String)>,
}

/// The entries for every other node that has a pod CIDR inside the cluster
/// network and has published what this backend needs.
pub fn desired(local: &Local<'_>, peers: &[Peer]) -> Desired {
    let mut d = Desired::default();
    for p in peers {
        if p.name == local.name {
            continue;
        }
        let skip = |d: &mut Desired, why: String| d.skipped.push((p.name.clone(), why));
        let Some(cidr) = p.pod_cidr else {
            skip(&mut d, "no pod CIDR yet".into());
            continue;
        };
        let cidr = cidr.trunc();
        if !local.cluster_cidr.contains_net(cidr) {
            skip(
                &mut d,
                format!(
                    "pod CIDR {cidr} is outside the cluster network {}",
                    local.cluster_cidr
                ),
            );
            continue;
        }
        let Some(ip) = p.public_ip else {
            skip(
                &mut d,
                "has not published its address yet (no network daemon?)".into(),
            );
            continue;
        };
        if p.backend.as_deref() != Some(local.backend.as_str()) {
            skip(
                &mut d,
                format!(
                    "runs backend {:?}, this node runs {}",
                    p.backend.as_deref().unwrap_or("none"),
                    local.backend.as_str()
                ),
            );
            continue;
        }
        match local.backend {
            Backend::Vxlan => {
                let Some(mac) = p.vtep_mac else {
                    skip(&mut d, "has not published its VTEP MAC".into());
                    continue;
                };
                // flannel's scheme: the peer's VTEP answers for its subnet's
                // network address; route onlink via it.
                let gw = cidr.network();
                d.routes.insert(Route {
                    dst: cidr.network(),
                    prefix: cidr.prefix,
                    gateway: Some(gw),
                    oif: Some(local.ifindex),
                    onlink: true,
                });
                d.neighbours.insert(Neighbour {
                    ifindex: local.ifindex,
                    ip: gw,
                    mac,
                });
                d.fdbs.insert(Fdb {
                    ifindex: local.ifindex,
                    mac,
                    dst: ip,
                });
            }
            Backend::HostGw => {
                if !local.uplink_net.contains(ip) {
                    skip(
                        &mut d,
                        format!(
                            "address {ip} is not on this node's segment {} (host-gw needs every \
                             node on one L2 network; use the vxlan backend)",
                            local.uplink_net.trunc()
                        ),
                    );
                    continue;
                }
                d.routes.insert(Route {
                    dst: cidr.network(),
                    prefix: cidr.prefix,
                    gateway: Some(ip),
                    oif: Some(local.ifindex),
                    onlink: false,
                });
            }
        }
    }
    d
}

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddFdb(Fdb),
    AddNeighbour(Neighbour),
    AddRoute(Route),
    DelRoute(Route),
    DelNeighbour(Neighbour),
    DelFdb(Fdb),
}

/// Operations from `current` (what this daemon programmed, read back from
/// the kernel) to `want`. Additions come first, FDB and ARP before the
/// route that needs them; removals last, route before ARP and FDB, so no
/// route ever points at a missing entry.
pub fn diff(current: &Desired, want: &Desired) -> Vec<Op> {
    let mut ops = Vec::new();
    ops.extend(want.fdbs.difference(&current.fdbs).copied().map(Op::AddFdb));
    ops.extend(
        want.neighbours
            .difference(&current.neighbours)
            .copied()
            .map(Op::AddNeighbour),
    );
    ops.extend(
        want.routes
            .difference(&current.routes)
            .copied()
            .map(Op::AddRoute),
    );
    ops.extend(
        current
            .routes
            .difference(&want.routes)
            .copied()
            .map(Op::DelRoute),
    );
    // A neighbour whose IP is re-added with another MAC was replaced above.
    let wanted_ips: BTreeSet<(u32, Ipv4Addr)> =
        want.neighbours.iter().map(|n| (n.ifindex, n.ip)).collect();
    ops.extend(
        current
            .neighbours
            .difference(&want.neighbours)
            .filter(|n| !wanted_ips.contains(&(n.ifindex, n.ip)))
            .copied()
            .map(Op::DelNeighbour),
    );
    ops.extend(current.fdbs.difference(&want.fdbs).copied().map(Op::DelFdb));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn peer(name: &str, cidr: &str, ip: &str, mac: u8, backend: &str) -> Peer {
        Peer {
            name: name.into(),
            pod_cidr: Some(net(cidr)),
            backend: Some(backend.into()),
            public_ip: Some(ip.parse().unwrap()),
            vtep_mac: Some([2, 0, 0, 0, 0, mac]),
        }
    }

    fn local(backend: Backend) -> Local<'static> {
        Local {
            name: "n1",
            backend,
            cluster_cidr: net("10.244.0.0/16"),
            ifindex: 7,
            uplink_net: net("192.168.50.11/24"),
        }
    }

    #[test]
    fn vxlan_one_route_arp_and_fdb_per_peer() {
        let peers = [
            peer("n1", "10.244.1.0/24", "192.168.50.11", 1, "vxlan"),
            peer("n2", "10.244.2.0/24", "192.168.50.12", 2, "vxlan"),
            peer("n3", "10.244.3.0/24", "192.168.60.13", 3, "vxlan"),
        ];
        let d = desired(&local(Backend::Vxlan), &peers);
        assert_eq!(d.routes.len(), 2, "not to itself");
        let r = d.routes.iter().next().unwrap();
        assert_eq!((r.dst, r.prefix), ("10.244.2.0".parse().unwrap(), 24));
        assert_eq!(r.gateway, Some("10.244.2.0".parse().unwrap()));
        assert!(r.onlink);
        assert!(d.neighbours.contains(&Neighbour {
            ifindex: 7,
            ip: "10.244.3.0".parse().unwrap(),
            mac: [2, 0, 0, 0, 0, 3]
        }));
        assert!(d.fdbs.contains(&Fdb {
            ifindex: 7,
            mac: [2, 0, 0, 0, 0, 3],
            dst: "192.168.60.13".parse().unwrap()
        }));
    }

    #[test]
    fn host_gw_routes_via_node_addresses_and_refuses_other_segments() {
        let peers = [
            peer("n2", "10.244.2.0/24", "192.168.50.12", 2, "host-gw"),
            peer("n3", "10.244.3.0/24", "192.168.60.13", 3, "host-gw"),
        ];
        let d = desired(&local(Backend::HostGw), &peers);
        assert_eq!(d.routes.len(), 1);
        assert_eq!(
            d.routes.iter().next().unwrap().gateway,
            Some("192.168.50.12".parse().unwrap())
        );
        assert!(d.neighbours.is_empty() && d.fdbs.is_empty());
        assert_eq!(d.skipped.len(), 1);
        assert!(d.skipped[0].1.contains("L2"), "{:?}", d.skipped);
    }

    #[test]
    fn peers_missing_data_or_on_another_backend_are_skipped_with_reasons() {
        let mut no_cidr = peer("a", "10.244.2.0/24", "192.168.50.12", 2, "vxlan");
        no_cidr.pod_cidr = None;
        let mut no_ip = peer("b", "10.244.3.0/24", "192.168.50.13", 3, "vxlan");
        no_ip.public_ip = None;
        let outside = peer("c", "10.9.0.0/24", "192.168.50.14", 4, "vxlan");
        let other = peer("d", "10.244.5.0/24", "192.168.50.15", 5, "host-gw");
        let d = desired(&local(Backend::Vxlan), &[no_cidr, no_ip, outside, other]);
        assert!(d.routes.is_empty());
        let why: Vec<_> = d.skipped.iter().map(|(_, w)| w.as_str()).collect();
        assert!(why[0].contains("no pod CIDR"));
        assert!(why[1].contains("address"));
        assert!(why[2].contains("outside"));
        assert!(why[3].contains("host-gw"));
    }

    #[test]
    fn diff_orders_adds_before_removes_and_handles_moves() {
        let l = local(Backend::Vxlan);
        let before = desired(
            &l,
            &[
                peer("n2", "10.244.2.0/24", "192.168.50.12", 2, "vxlan"),
                peer("n3", "10.244.3.0/24", "192.168.50.13", 3, "vxlan"),
            ],
        );
        // n3 leaves; n2 changes address (and VTEP MAC, as after a re-create).
        let after = desired(
            &l,
            &[peer("n2", "10.244.2.0/24", "192.168.50.22", 9, "vxlan")],
        );
        let ops = diff(&before, &after);
        let pos = |f: &dyn Fn(&Op) -> bool| ops.iter().position(f).unwrap();
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::DelRoute(r) if r.dst.octets()[2] == 3))
        );
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::DelFdb(f) if f.dst.octets()[3] == 12))
        );
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::AddFdb(f) if f.dst.octets()[3] == 22))
        );
        // The neighbour of n2 is replaced (AddNeighbour replaces), not deleted.
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Op::DelNeighbour(n) if n.ip.octets()[2] == 2))
        );
        assert!(pos(&|o| matches!(o, Op::AddFdb(_))) < pos(&|o| matches!(o, Op::DelRoute(_))));
        assert!(
            pos(&|o| matches!(o, Op::DelRoute(_))) < pos(&|o| matches!(o, Op::DelNeighbour(_)))
        );
        assert!(diff(&after, &after).is_empty());
    }
}
