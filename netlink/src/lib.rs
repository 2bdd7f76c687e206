//! Rudder's one seam to rtnetlink: the links, addresses, routes, neighbour
//! and FDB entries that the CNI plugin and the network daemon program, in the
//! caller's network namespace or in another one opened by path.
//!
//! Every call is idempotent where the kernel allows it ("already exists" on
//! add and "not found" on delete are reported as such, so callers can treat
//! them as success), and every error names the operation and the object.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    path::Path,
};

use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressMessage},
    link::{
        InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
        LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
    },
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope},
};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

/// What failed, on which object.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink: {op}: {source}")]
    Request {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot open network namespace {path}: {source}")]
    Netns {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
}

impl NetlinkError {
    fn request(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let op = op.into();
        move |source| Self::Request { op, source }
    }

    /// The errno the kernel answered with, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Request {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => m.code.map(|c| -c.get()),
            Self::Netns { source, .. } | Self::Socket(source) | Self::Io { source, .. } => {
                source.raw_os_error()
            }
            Self::Request { .. } => None,
        }
    }

    /// The object already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The object (or the device it is on) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }
}

pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

/// What callers need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    /// Index of the bridge (or other controller) the link is a port of.
    pub master: Option<u32>,
    /// `bridge`, `veth`, `vxlan`, … (`None` for plain devices such as `lo`).
    pub kind: Option<String>,
    pub up: bool,
    /// For VXLAN devices: the local (source) address of the tunnel.
    pub vxlan_local: Option<Ipv4Addr>,
}

/// An IPv4 route in the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    /// `onlink`: the gateway is reachable on `oif` without a covering route.
    pub onlink: bool,
}

/// A permanent IPv4 neighbour (ARP) entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

/// A permanent FDB entry on a VXLAN device: frames for `mac` go to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fdb {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub dst: Ipv4Addr,
}

/// A VXLAN device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    pub underlay_index: u32,
    pub mtu: u32,
}

/// An rtnetlink connection bound to one network namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the calling thread's network namespace. Needs a Tokio
    /// runtime (the connection task is spawned on it).
    pub fn new() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// A connection in the network namespace at `path` (e.g.
    /// `/run/netns/x` or `/proc/<pid>/ns/net`): the socket is opened on a
    /// thread that has entered it, and stays bound to it.
    pub fn in_netns(path: &Path) -> Result<Self> {
        let file = open_netns(path)?;
        let rt = tokio::runtime::Handle::current();
        let opened = std::thread::scope(|s| {
            s.spawn(|| {
                let _enter = rt.enter();
                // SAFETY: `file` is an open network-namespace file; setns only
                // changes the namespace of this scoped thread, which ends here.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(NetlinkError::Netns {
                        path: path.display().to_string(),
                        source: std::io::Error::last_os_error(),
                    });
                }
                rtnetlink::new_connection().map_err(NetlinkError::Socket)
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })?;
        let (conn, handle, _) = opened;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    // ---- links -----------------------------------------------------------

    /// The link called `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        let res = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        match res {
            Ok(Some(m)) => Ok(Some(link_from(&m))),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = NetlinkError::request(format!("get link {name}"))(e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// The link with index `index`, if there is one.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let res = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await;
        match res {
            Ok(m) => Ok(m.as_ref().map(link_from)),
            Err(e) => {
                let e = NetlinkError::request(format!("get link #{index}"))(e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(NetlinkError::request("list links"))?;
        Ok(msgs.iter().map(link_from).collect())
    }

    /// Creates a bridge (up, with `mtu` if given, on an address of its own)
    /// unless a link of that name exists; returns the link either way.
    /// Concurrent callers are fine.
    pub async fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link> {
        if let Some(l) = self.link(name).await? {
            self.pin_bridge_mac(&l).await?;
            return Ok(l);
        }
        let mut b = LinkBridge::new(name).up().address(random_mac().to_vec());
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        match self.handle.link().add(b.build()).execute().await {
            Ok(()) => {}
            Err(e) => {
                let e = NetlinkError::request(format!("create bridge {name}"))(e);
                if !e.is_exists() {
                    return Err(e);
                }
            }
        }
        self.link(name).await?.ok_or_else(|| NetlinkError::Io {
            op: format!("bridge {name} vanished after it was created"),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })
    }

    /// A bridge whose address nobody set takes the lowest address among its
    /// ports, and takes another when that port goes: every pod that had
    /// resolved its gateway then sends to an address no port has, and the
    /// bridge floods those frames to the pods instead of routing them,
    /// until the pods' neighbour entries expire (tens of seconds of lost
    /// connections after each pod deletion). A bridge still on a port's
    /// address (made by an older version, or by someone else) gets that
    /// address set, which the kernel then keeps.
    async fn pin_bridge_mac(&self, bridge: &Link) -> Result<()> {
        let Some(mac) = bridge.mac else {
            return Ok(());
        };
        let borrowed = self
            .links()
            .await?
            .iter()
            .any(|l| l.master == Some(bridge.index) && l.mac == Some(mac));
        if !borrowed {
            return Ok(());
        }
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(bridge.index)
                    .address(mac.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(NetlinkError::request(format!(
                "set the address of bridge {} to {}",
                bridge.name,
                mac_string(&mac)
            )))
    }

    /// Creates a veth pair: `host` here, `peer` directly inside the
    /// namespace at `netns` (so a half-made pair never appears there under a
    /// temporary name). Both ends get `mtu`.
    pub async fn create_veth_into(
        &self,
        host: &str,
        peer: &str,
        netns: &Path,
        mtu: u32,
    ) -> Result<()> {
        let ns = open_netns(netns)?;
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .mtu(mtu)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        let res = self.handle.link().add(msg).execute().await;
        drop(ns);
        res.map_err(NetlinkError::request(format!(
            "create veth {host} with peer {peer} in {}",
            netns.display()
        )))
    }

    /// Creates a VXLAN device (learning off, UDP checksums on) unless one of
    /// that name exists; returns the link. An existing device keeps its MAC,
    /// so the VTEP address other nodes know stays valid across restarts.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<Link> {
        if let Some(l) = self.link(&spec.name).await? {
            return Ok(l);
        }
        let msg = LinkVxlan::new(&spec.name, spec.vni)
            .dev(spec.underlay_index)
            .local(spec.local)
            .port(spec.port)
            .learning(false)
            .udp_csum(true)
            .mtu(spec.mtu)
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(NetlinkError::request(format!(
                "create vxlan {} (vni {}, local {}, port {})",
                spec.name, spec.vni, spec.local, spec.port
            )))?;
        self.link(&spec.name)
            .await?
            .ok_or_else(|| NetlinkError::Io {
                op: format!("vxlan {} vanished after it was created", spec.name),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            })
    }

    /// Sets a link up.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(NetlinkError::request(format!("set link #{index} up")))
    }

    /// Sets a link's MTU.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .map_err(NetlinkError::request(format!(
                "set mtu {mtu} on link #{index}"
            )))
    }

    /// Makes `index` a port of the bridge `master`.
    pub async fn set_master(&self, index: u32, master: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).controller(master).build())
            .execute()
            .await
            .map_err(NetlinkError::request(format!(
                "attach link #{index} to bridge #{master}"
            )))
    }

    /// Turns hairpin mode on for a bridge port, so a frame can leave by the
    /// port it came in (a pod reaching itself through a Service).
    pub async fn set_hairpin(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .set_port_kind(InfoPortKind::Bridge)
            .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                true,
            )]))
            .build();
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(NetlinkError::request(format!(
                "turn hairpin mode on for bridge port #{index}"
            )))
    }

    /// Deletes a link; a link that is already gone is not an error.
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = NetlinkError::request(format!("delete link #{index}"))(e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// Deletes the link called `name` if it exists; returns whether it did.
    pub async fn delete_link_named(&self, name: &str) -> Result<bool> {
        match self.link(name).await? {
            Some(l) => {
                self.delete_link(l.index).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    // ---- addresses -------------------------------------------------------

    /// IPv4 addresses on a link, with prefix lengths.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(NetlinkError::request(format!(
                "list addresses of link #{index}"
            )))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.family == AddressFamily::Inet && m.header.index == index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip))
                    | AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Adds an address; one that is already there is not an error.
    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let e =
                    NetlinkError::request(format!("add address {ip}/{prefix} to link #{index}"))(e);
                if e.is_exists() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// Removes an address; one that is not there is not an error.
    pub async fn del_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.index = index;
        msg.header.prefix_len = prefix;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(ip)));
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = NetlinkError::request(format!(
                    "delete address {ip}/{prefix} from link #{index}"
                ))(e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }

    // ---- routes ----------------------------------------------------------

    fn route_message(route: &Route, protocol: RouteProtocol) -> RouteMessage {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.dst, route.prefix)
            .protocol(protocol);
        if let Some(gw) = route.gateway {
            b = b.gateway(gw);
        } else {
            b = b.scope(RouteScope::Link);
        }
        if let Some(oif) = route.oif {
            b = b.output_interface(oif);
        }
        if route.onlink {
            b = b.onlink();
        }
        b.build()
    }

    /// Adds (or replaces) a route tagged with `protocol`, so that the routes
    /// a component made can be listed and removed without touching others.
    pub async fn replace_route(&self, route: &Route, protocol: u8) -> Result<()> {
        let msg = Self::route_message(route, RouteProtocol::from(protocol));
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(NetlinkError::request(format!("add route {route:?}")))
    }

    /// Adds a route (not replacing one that exists: that is `is_exists`).
    pub async fn add_route(&self, route: &Route, protocol: u8) -> Result<()> {
        let msg = Self::route_message(route, RouteProtocol::from(protocol));
        self.handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(NetlinkError::request(format!("add route {route:?}")))
    }

    /// Deletes a route; one that is gone is not an error.
    pub async fn del_route(&self, route: &Route, protocol: u8) -> Result<()> {
        let msg = Self::route_message(route, RouteProtocol::from(protocol));
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = NetlinkError::request(format!("delete route {route:?}"))(e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// IPv4 routes of the main table; only those tagged `protocol` if given.
    pub async fn routes(&self, protocol: Option<u8>) -> Result<Vec<Route>> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(NetlinkError::request("list routes"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.table == 254)
            .filter(|m| protocol.is_none_or(|p| m.header.protocol == RouteProtocol::from(p)))
            .map(|m| {
                let mut r = Route {
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix: m.header.destination_prefix_length,
                    gateway: None,
                    oif: None,
                    onlink: m
                        .header
                        .flags
                        .contains(netlink_packet_route::route::RouteFlags::Onlink),
                };
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(ip)) => r.dst = *ip,
                        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => r.gateway = Some(*ip),
                        RouteAttribute::Oif(i) => r.oif = Some(*i),
                        _ => {}
                    }
                }
                r
            })
            .collect())
    }

    /// The link and source address of the default route, if any.
    pub async fn default_route_link(&self) -> Result<Vec<u32>> {
        Ok(self
            .routes(None)
            .await?
            .into_iter()
            .filter(|r| r.prefix == 0)
            .filter_map(|r| r.oif)
            .collect())
    }

    // ---- neighbours and FDB ---------------------------------------------

    /// Adds (or replaces) a permanent ARP entry.
    pub async fn replace_neighbour(&self, n: &Neighbour) -> Result<()> {
        self.handle
            .neighbours()
            .add(n.ifindex, IpAddr::V4(n.ip))
            .link_layer_address(&n.mac)
            .replace()
            .execute()
            .await
            .map_err(NetlinkError::request(format!(
                "add neighbour {} lladdr {} on link #{}",
                n.ip,
                mac_string(&n.mac),
                n.ifindex
            )))
    }

    /// Deletes an ARP entry; one that is gone is not an error.
    pub async fn del_neighbour(&self, n: &Neighbour) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = n.ifindex;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                n.ip,
            )));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = NetlinkError::request(format!(
                    "delete neighbour {} on link #{}",
                    n.ip, n.ifindex
                ))(e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// Permanent IPv4 neighbour entries on a link.
    pub async fn neighbours(&self, ifindex: u32) -> Result<Vec<Neighbour>> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(NetlinkError::request("list neighbours"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == ifindex)
            .filter(|m| {
                m.header.state == netlink_packet_route::neighbour::NeighbourState::Permanent
            })
            .filter_map(|m| {
                let mut ip = None;
                let mut mac = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => ip = Some(*i),
                        NeighbourAttribute::LinkLayerAddress(l) => mac = mac6(l),
                        _ => {}
                    }
                }
                Some(Neighbour {
                    ifindex,
                    ip: ip?,
                    mac: mac?,
                })
            })
            .collect())
    }

    /// Adds (or replaces) a permanent FDB entry on a VXLAN device.
    pub async fn replace_fdb(&self, f: &Fdb) -> Result<()> {
        self.handle
            .neighbours()
            .add_bridge(f.ifindex, &f.mac)
            .destination(IpAddr::V4(f.dst))
            .flags(NeighbourFlags::Own)
            .replace()
            .execute()
            .await
            .map_err(NetlinkError::request(format!(
                "add fdb {} dst {} on link #{}",
                mac_string(&f.mac),
                f.dst,
                f.ifindex
            )))
    }

    /// Deletes an FDB entry; one that is gone is not an error.
    pub async fn del_fdb(&self, f: &Fdb) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = f.ifindex;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(f.mac.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                f.dst,
            )));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = NetlinkError::request(format!(
                    "delete fdb {} dst {} on link #{}",
                    mac_string(&f.mac),
                    f.dst,
                    f.ifindex
                ))(e);
                if e.is_not_found() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// FDB entries with a remote destination on a device.
    pub async fn fdbs(&self, ifindex: u32) -> Result<Vec<Fdb>> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(NetlinkError::request("list fdb entries"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == ifindex)
            .filter_map(|m| {
                let mut dst = None;
                let mut mac = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => {
                            dst = Some(*i);
                        }
                        // AF_BRIDGE dumps carry NDA_DST as raw bytes.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                            dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from);
                        }
                        NeighbourAttribute::LinkLayerAddress(l) => mac = mac6(l),
                        _ => {}
                    }
                }
                Some(Fdb {
                    ifindex,
                    mac: mac?,
                    dst: dst?,
                })
            })
            .filter(|f| f.mac != [0; 6])
            .collect())
    }
}

/// Turns transmit checksum offload on a device on or off (`ethtool -K <dev>
/// tx on|off`). VXLAN devices on kernels before 5.7 send wrong UDP
/// checksums for packets NAT rewrote with offload on (kubernetes#88986,
/// calico#3145, flannel #1282: pods reach each other only after 63 s
/// retransmits, or not at all); with it off, the kernel checksums and
/// segments in software. Acts on the calling thread's network namespace.
pub fn set_tx_checksum(name: &str, on: bool) -> Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x0000_0017;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct Ifreq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    let io_err = |op: &str| NetlinkError::Io {
        op: format!("{op} for {name}"),
        source: std::io::Error::last_os_error(),
    };
    if name.len() >= libc::IFNAMSIZ {
        return Err(NetlinkError::Io {
            op: format!("interface name {name:?} is too long"),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    let mut req = Ifreq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io_err("socket"));
    }
    // SAFETY: `req` is a valid ifreq whose data pointer points at `value`,
    // which outlives the call; SIOCETHTOOL reads/writes only those.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL, &mut req) };
    let err = (rc != 0).then(|| io_err("ethtool ETHTOOL_STXCSUM"));
    // SAFETY: `fd` is the socket opened above and not used after this.
    unsafe { libc::close(fd) };
    err.map_or(Ok(()), Err)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn mac6(l: &[u8]) -> Option<[u8; 6]> {
    l.try_into().ok()
}

fn open_netns(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| NetlinkError::Netns {
        path: path.display().to_string(),
        source,
    })
}

fn link_from(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        master: None,
        kind: None,
        up: m.header.flags.contains(LinkFlags::Up),
        vxlan_local: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name.clone_from(n),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(a) => l.mac = mac6(a),
            LinkAttribute::Controller(c) => l.master = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        NlLinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                        NlLinkInfo::Data(InfoData::Vxlan(v)) => {
                            l.vxlan_local = v.iter().find_map(|x| match x {
                                netlink_packet_route::link::InfoVxlan::Local(ip) => Some(*ip),
                                _ => None,
                            });
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// A random, locally administered unicast MAC address.
fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most `mac.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n != 6 {
        // No entropy call (very old kernels): the clock and pid still make
        // two nodes' bridges unlikely to collide, and they never share a
        // segment anyway.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id());
        mac.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip() {
        let m = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0xff];
        assert_eq!(mac_string(&m), "0a:58:0a:f4:01:ff");
        assert_eq!(parse_mac("0a:58:0a:f4:01:ff"), Some(m));
        assert_eq!(parse_mac("0a:58:0a:f4:01"), None);
        assert_eq!(parse_mac("0a:58:0a:f4:01:ff:00"), None);
        assert_eq!(parse_mac("zz:58:0a:f4:01:ff"), None);
    }
}
