//! Choosing the interface that carries traffic between nodes: by name, by
//! address, or the default route's, with a clear error when it is
//! ambiguous (multi-NIC hosts: flannel's most common misroute).

use std::net::Ipv4Addr;

use rudder_cni::net::Ipv4Net;
use rudder_netlink::Link;

/// The chosen interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// Its address (with prefix): the node's public IP for other nodes.
    pub addr: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfaceError {
    #[error("network.iface {0:?}: no such interface")]
    NoSuchName(String),
    #[error("network.iface {0:?} has no IPv4 address")]
    NoAddress(String),
    #[error("network.iface-address {0}: no interface has this address")]
    NoSuchAddress(Ipv4Addr),
    #[error(
        "no default route to choose the node interface from: set network.iface or \
         network.iface-address"
    )]
    NoDefaultRoute,
    #[error(
        "the default routes leave by several interfaces ({0}): set network.iface or \
         network.iface-address to choose"
    )]
    Ambiguous(String),
}

/// Picks the uplink from the links (with their IPv4 addresses) and the
/// interfaces the default routes use.
pub fn select(
    links: &[(Link, Vec<(Ipv4Addr, u8)>)],
    default_oifs: &[u32],
    by_name: Option<&str>,
    by_address: Option<Ipv4Addr>,
) -> Result<Uplink, IfaceError> {
    let make = |l: &Link, (a, p): (Ipv4Addr, u8)| Uplink {
        index: l.index,
        name: l.name.clone(),
        mtu: l.mtu,
        addr: Ipv4Net { addr: a, prefix: p },
    };
    if let Some(name) = by_name {
        let (l, addrs) = links
            .iter()
            .find(|(l, _)| l.name == name)
            .ok_or_else(|| IfaceError::NoSuchName(name.into()))?;
        let first = *addrs
            .first()
            .ok_or_else(|| IfaceError::NoAddress(name.into()))?;
        let chosen = by_address
            .and_then(|want| addrs.iter().find(|(a, _)| *a == want).copied())
            .unwrap_or(first);
        return Ok(make(l, chosen));
    }
    if let Some(want) = by_address {
        return links
            .iter()
            .find_map(|(l, addrs)| addrs.iter().find(|(a, _)| *a == want).map(|a| make(l, *a)))
            .ok_or(IfaceError::NoSuchAddress(want));
    }
    let mut oifs: Vec<u32> = default_oifs.to_vec();
    oifs.sort_unstable();
    oifs.dedup();
    match oifs.as_slice() {
        [] => Err(IfaceError::NoDefaultRoute),
        [one] => {
            let (l, addrs) = links
                .iter()
                .find(|(l, _)| l.index == *one)
                .ok_or(IfaceError::NoDefaultRoute)?;
            let a = *addrs
                .first()
                .ok_or_else(|| IfaceError::NoAddress(l.name.clone()))?;
            Ok(make(l, a))
        }
        many => Err(IfaceError::Ambiguous(
            many.iter()
                .map(|i| {
                    links
                        .iter()
                        .find(|(l, _)| l.index == *i)
                        .map_or_else(|| format!("#{i}"), |(l, _)| l.name.clone())
                })
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            mtu: 1500,
            mac: None,
            master: None,
            kind: None,
            up: true,
            vxlan_local: None,
        }
    }

    fn links() -> Vec<(Link, Vec<(Ipv4Addr, u8)>)> {
        vec![
            (link(1, "lo"), vec![(Ipv4Addr::LOCALHOST, 8)]),
            (link(2, "eth0"), vec![(Ipv4Addr::new(10, 0, 2, 15), 24)]),
            (link(3, "eth1"), vec![(Ipv4Addr::new(192, 168, 56, 11), 24)]),
            (link(4, "eth2"), vec![]),
        ]
    }

    #[test]
    fn by_name_by_address_and_default_route() {
        let l = links();
        assert_eq!(
            select(&l, &[2], Some("eth1"), None).unwrap().addr.addr,
            Ipv4Addr::new(192, 168, 56, 11)
        );
        assert_eq!(
            select(&l, &[2], None, Some(Ipv4Addr::new(192, 168, 56, 11)))
                .unwrap()
                .name,
            "eth1"
        );
        let u = select(&l, &[2, 2], None, None).unwrap();
        assert_eq!((u.name.as_str(), u.mtu, u.addr.prefix), ("eth0", 1500, 24));
    }

    #[test]
    fn clear_errors() {
        let l = links();
        assert_eq!(
            select(&l, &[2], Some("wlan0"), None),
            Err(IfaceError::NoSuchName("wlan0".into()))
        );
        assert_eq!(
            select(&l, &[2], Some("eth2"), None),
            Err(IfaceError::NoAddress("eth2".into()))
        );
        assert_eq!(select(&l, &[], None, None), Err(IfaceError::NoDefaultRoute));
        let e = select(&l, &[3, 2], None, None).unwrap_err();
        assert_eq!(e, IfaceError::Ambiguous("eth0, eth1".into()));
        assert!(e.to_string().contains("network.iface"));
    }
}
