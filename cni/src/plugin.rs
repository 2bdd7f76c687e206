//! The plugin: ADD, DEL, CHECK, GC, STATUS and VERSION.
//!
//! Error codes: the spec's (1 incompatible version, 4 invalid environment,
//! 5 I/O, 6 decoding, 7 invalid network config, 11 try again later, 50 not
//! available) and three of the plugin's own: 100 the kernel refused a
//! change, 101 no address could be allocated, 102 CHECK found the
//! attachment differs from its result.
//!
//! ADD validates everything it was given before it changes anything, and
//! undoes what it made if a later step fails, so a failed ADD leaves no
//! interface and no allocation behind.

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use rudder_netlink::{Netlink, NetlinkError, Route};
use sha2::{Digest as _, Sha256};

use crate::{
    ipam::{IpamError, Range, Store},
    net::Ipv4Net,
    spec::{self, ErrorCode, ErrorResult},
    subnet::{SubnetEnv, SubnetError},
    types::{CniResult, Interface, IpConfig, NetConf, RouteConf},
};

/// The operation asked for by `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

/// The `CNI_*` environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }
}

/// A failed call: what the plugin prints, and exits 1 with.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Env(String),
    #[error("cannot decode the network configuration on stdin: {0}")]
    Decode(String),
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Version(String),
    #[error("network not ready: {0}")]
    NotReady(#[source] SubnetError),
    #[error("{0}")]
    Subnet(#[source] SubnetError),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: NetlinkError,
    },
    #[error("{0}")]
    Ipam(#[source] IpamError),
    #[error("CHECK failed: {0}")]
    Check(String),
    #[error("not available: {0}")]
    Unavailable(String),
}

impl PluginError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Env(_) => ErrorCode::InvalidEnvironment,
            Self::Decode(_) => ErrorCode::Decoding,
            Self::Config(_) | Self::Subnet(SubnetError::Invalid { .. }) => {
                ErrorCode::InvalidNetworkConfig
            }
            Self::Version(_) => ErrorCode::IncompatibleVersion,
            Self::NotReady(_) => ErrorCode::TryAgainLater,
            Self::Subnet(_) => ErrorCode::Io,
            Self::Netlink { .. } => ErrorCode::KernelRefused,
            Self::Ipam(IpamError::Io { .. }) => ErrorCode::Io,
            Self::Ipam(_) => ErrorCode::NoAddress,
            Self::Check(_) => ErrorCode::CheckFailed,
            Self::Unavailable(_) => ErrorCode::PluginNotAvailable,
        }
    }

    /// The error result for the caller (the whole cause chain as `msg`).
    pub fn to_result(&self, cni_version: &str) -> ErrorResult {
        let mut msg = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            let s = s.to_string();
            if !msg.contains(&s) {
                msg.push_str(": ");
                msg.push_str(&s);
            }
            src = src.and_then(std::error::Error::source);
        }
        ErrorResult::new(cni_version, self.code(), msg)
    }
}

fn nl(what: impl Into<String>) -> impl FnOnce(NetlinkError) -> PluginError {
    let what = what.into();
    move |source| PluginError::Netlink { what, source }
}

/// The `cniVersion` to answer in: the config's if it parses, else the
/// newest we speak.
pub fn reply_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| spec::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_string())
}

/// Runs one call. `Ok(Some(json))` is printed on stdout; `Ok(None)` prints
/// nothing (DEL, GC, STATUS success).
pub async fn run(env: &Env, stdin: &[u8]) -> Result<Option<String>, PluginError> {
    let command = match env.command.as_deref() {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("GC") => Command::Gc,
        Some("STATUS") => Command::Status,
        Some("VERSION") => Command::Version,
        Some(other) => {
            return Err(PluginError::Env(format!(
                "CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"
            )));
        }
        None => return Err(PluginError::Env("CNI_COMMAND is not set".into())),
    };
    if command == Command::Version {
        let requested = reply_version(stdin);
        let v = spec::version_result(&requested);
        return Ok(Some(serde_json::to_string(&v).expect("serializable")));
    }
    let conf = parse_conf(stdin)?;
    match command {
        Command::Add => add(env, &conf).await.map(Some),
        Command::Del => del(env, &conf).await.map(|()| None),
        Command::Check => check(env, &conf).await.map(|()| None),
        Command::Gc => gc(&conf).await.map(|()| None),
        Command::Status => status(&conf).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}

/// Decodes and validates the configuration.
pub fn parse_conf(stdin: &[u8]) -> Result<NetConf, PluginError> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Err(PluginError::Decode("stdin is empty".into()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(stdin).map_err(|e| PluginError::Decode(e.to_string()))?;
    let version = value
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .ok_or_else(|| PluginError::Config("cniVersion is missing".into()))?;
    spec::check_version(version).map_err(|e| PluginError::Version(e.msg))?;
    let conf: NetConf =
        serde_json::from_value(value).map_err(|e| PluginError::Config(e.to_string()))?;
    if conf.name.is_empty()
        || conf.name.starts_with('.')
        || !conf
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(PluginError::Config(format!(
            "name {:?} must be non-empty letters, digits, '-', '_' or '.' (it names the IPAM \
             directory)",
            conf.name
        )));
    }
    check_ifname("bridge", &conf.bridge).map_err(PluginError::Config)?;
    if let Some(mtu) = conf.mtu
        && !(576..=65535).contains(&mtu)
    {
        return Err(PluginError::Config(format!(
            "mtu {mtu} is out of range 576-65535"
        )));
    }
    Ok(conf)
}

fn check_ifname(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Err(format!(
            "{what} {name:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
        ))
    } else {
        Ok(())
    }
}

fn need<'a>(v: &'a Option<String>, key: &str) -> Result<&'a str, PluginError> {
    v.as_deref()
        .ok_or_else(|| PluginError::Env(format!("{key} is not set")))
}

fn container_id(env: &Env) -> Result<&str, PluginError> {
    let id = need(&env.container_id, "CNI_CONTAINERID")?;
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(id)
    } else {
        Err(PluginError::Env(format!(
            "CNI_CONTAINERID {id:?} must start with a letter or digit and contain only letters, \
             digits, '_', '.' and '-'"
        )))
    }
}

fn ifname(env: &Env) -> Result<&str, PluginError> {
    let name = need(&env.ifname, "CNI_IFNAME")?;
    check_ifname("CNI_IFNAME", name).map_err(PluginError::Env)?;
    Ok(name)
}

/// The host end of a pod's veth: a stable name per (container, interface),
/// so DEL and GC find it even when the pod's namespace is gone, and an ADD
/// retried after a killed one can remove the leftover.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let h = Sha256::digest(format!("{container_id}/{ifname}"));
    let hex: String = h.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("rdr{hex}")
}

fn load_subnet(conf: &NetConf) -> Result<SubnetEnv, PluginError> {
    SubnetEnv::load(&conf.subnet_file).map_err(|e| match e {
        SubnetError::Missing(_) => PluginError::NotReady(e),
        e => PluginError::Subnet(e),
    })
}

fn ipam_store(conf: &NetConf) -> Result<Store, PluginError> {
    Store::open(&conf.data_dir, &conf.name).map_err(PluginError::Ipam)
}

async fn add(env: &Env, conf: &NetConf) -> Result<String, PluginError> {
    // Validate all input before touching anything.
    let id = container_id(env)?;
    let ifname = ifname(env)?;
    let netns = PathBuf::from(need(&env.netns, "CNI_NETNS")?);
    if !netns.exists() {
        return Err(PluginError::Env(format!(
            "CNI_NETNS {} does not exist",
            netns.display()
        )));
    }
    let subnet = load_subnet(conf)?;
    let mtu = conf.mtu.unwrap_or(subnet.mtu);
    let host = Netlink::new().map_err(nl("open netlink"))?;
    let pod = Netlink::in_netns(&netns).map_err(nl(format!("open {}", netns.display())))?;
    if pod
        .link(ifname)
        .await
        .map_err(nl("look up the pod interface"))?
        .is_some()
    {
        return Err(PluginError::Config(format!(
            "interface {ifname} already exists in {}",
            netns.display()
        )));
    }
    let bridge = ensure_bridge(&host, conf, &subnet, mtu).await?;

    let host_name = host_veth_name(id, ifname);
    // A leftover of an ADD that was killed for this same attachment.
    host.delete_link_named(&host_name)
        .await
        .map_err(nl(format!("remove the leftover {host_name}")))?;

    let range = Range::from_gateway_subnet(subnet.subnet);
    let ip = ipam_store(conf)?
        .allocate(&range, id, ifname)
        .map_err(PluginError::Ipam)?;

    match attach(
        &host, &pod, conf, &subnet, &bridge, &host_name, &netns, ifname, ip, mtu,
    )
    .await
    {
        Ok(result) => {
            let mut result = result;
            result.cni_version.clone_from(&conf.cni_version);
            result.dns.clone_from(&conf.dns);
            if conf.cni_version == "0.4.0" {
                for ipc in &mut result.ips {
                    ipc.version = Some("4".into());
                }
            }
            if let Some(path) = &conf.proxy_socket {
                ask_proxy_to_attach(path).await;
            }
            Ok(serde_json::to_string(&result).expect("serializable"))
        }
        Err(e) => {
            // Undo: the veth (both ends go with the host end) and the address.
            let _ = host.delete_link_named(&host_name).await;
            let _ =
                ipam_store(conf).and_then(|mut s| s.release(id, ifname).map_err(PluginError::Ipam));
            Err(e)
        }
    }
}

/// Asks the agent's service proxy to attach to the new interface and waits
/// for its answer, at most 3 s. Best effort: without a proxy on the node
/// (no socket), or with a slow one, the pod starts anyway and the proxy's
/// periodic scan attaches a little later.
async fn ask_proxy_to_attach(path: &Path) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ask = async {
        let mut s = tokio::net::UnixStream::connect(path).await?;
        s.write_all(b"attach\n").await?;
        let mut answer = [0u8; 3];
        s.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer == *b"ok\n")
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), ask).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => eprintln!("rudder: the proxy at {} refused to attach", path.display()),
        // No proxy on this node (or a stale socket of a stopped one).
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) => {}
        Ok(Err(e)) => eprintln!(
            "rudder: asking the proxy at {} to attach: {e}",
            path.display()
        ),
        Err(_) => eprintln!(
            "rudder: the proxy at {} did not attach within 3 s",
            path.display()
        ),
    }
}

/// The node bridge, up, with the gateway address; refuses a bridge that
/// carries an address outside this node's subnet (the node's pod CIDR
/// changed: flannel's "cni0 already has an IP address different from").
async fn ensure_bridge(
    host: &Netlink,
    conf: &NetConf,
    subnet: &SubnetEnv,
    mtu: u32,
) -> Result<rudder_netlink::Link, PluginError> {
    let name = &conf.bridge;
    let bridge = host
        .ensure_bridge(name, Some(mtu))
        .await
        .map_err(nl(format!("create bridge {name}")))?;
    if bridge.kind.as_deref() != Some("bridge") {
        return Err(PluginError::Config(format!(
            "{name} exists and is not a bridge (it is a {} device)",
            bridge.kind.as_deref().unwrap_or("plain")
        )));
    }
    let addrs = host
        .addresses(bridge.index)
        .await
        .map_err(nl(format!("list addresses of {name}")))?;
    let pod_net = subnet.subnet.trunc();
    if let Some((a, p)) = addrs
        .iter()
        .find(|(a, p)| !pod_net.contains(*a) || *p != subnet.subnet.prefix)
    {
        return Err(PluginError::Config(format!(
            "bridge {name} has address {a}/{p}, but this node's pod subnet is {pod_net} (from {}): \
             the node's pod CIDR changed; drain the node and delete the bridge (`ip link delete \
             {name}`) so it is re-created",
            conf.subnet_file.display()
        )));
    }
    if !addrs.iter().any(|(a, _)| *a == subnet.gateway()) {
        host.add_address(bridge.index, subnet.gateway(), subnet.subnet.prefix)
            .await
            .map_err(nl(format!("add gateway {} to {name}", subnet.subnet)))?;
    }
    if !bridge.up {
        host.set_up(bridge.index)
            .await
            .map_err(nl(format!("set {name} up")))?;
    }
    Ok(bridge)
}

#[allow(clippy::too_many_arguments, reason = "one call site; the steps of ADD")]
async fn attach(
    host: &Netlink,
    pod: &Netlink,
    conf: &NetConf,
    subnet: &SubnetEnv,
    bridge: &rudder_netlink::Link,
    host_name: &str,
    netns: &Path,
    ifname: &str,
    ip: Ipv4Addr,
    mtu: u32,
) -> Result<CniResult, PluginError> {
    host.create_veth_into(host_name, ifname, netns, mtu)
        .await
        .map_err(nl(format!("create the veth pair {host_name}/{ifname}")))?;
    let hl = host
        .link(host_name)
        .await
        .map_err(nl(format!("look up {host_name}")))?
        .ok_or_else(|| PluginError::Check(format!("{host_name} vanished after creation")))?;
    host.set_master(hl.index, bridge.index)
        .await
        .map_err(nl(format!("attach {host_name} to {}", conf.bridge)))?;
    if conf.hairpin_mode {
        host.set_hairpin(hl.index)
            .await
            .map_err(nl(format!("hairpin mode on {host_name}")))?;
    }
    host.set_up(hl.index)
        .await
        .map_err(nl(format!("set {host_name} up")))?;

    let pl = pod
        .link(ifname)
        .await
        .map_err(nl(format!("look up {ifname} in the pod")))?
        .ok_or_else(|| PluginError::Check(format!("{ifname} did not appear in the pod")))?;
    let prefix = subnet.subnet.prefix;
    pod.add_address(pl.index, ip, prefix)
        .await
        .map_err(nl(format!("add {ip}/{prefix} to {ifname}")))?;
    pod.set_up(pl.index)
        .await
        .map_err(nl(format!("set {ifname} up")))?;
    let gw = subnet.gateway();
    let mut routes = Vec::new();
    if conf.is_default_gateway {
        pod.add_route(
            &Route {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Some(gw),
                oif: Some(pl.index),
                onlink: false,
            },
            4, // RTPROT_STATIC, as `ip route add`
        )
        .await
        .map_err(nl(format!("add the default route via {gw} in the pod")))?;
        routes.push(RouteConf {
            dst: "0.0.0.0/0".into(),
            gw: Some(gw.to_string()),
        });
    }
    let mac = |m: Option<[u8; 6]>| m.map(|m| rudder_netlink::mac_string(&m));
    Ok(CniResult {
        cni_version: String::new(),
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                mac: mac(bridge.mac),
                mtu: None,
                sandbox: None,
            },
            Interface {
                name: host_name.to_string(),
                mac: mac(hl.mac),
                mtu: Some(mtu),
                sandbox: None,
            },
            Interface {
                name: ifname.to_string(),
                mac: mac(pl.mac),
                mtu: Some(mtu),
                sandbox: Some(netns.display().to_string()),
            },
        ],
        ips: vec![IpConfig {
            version: None,
            address: format!("{ip}/{prefix}"),
            gateway: Some(gw.to_string()),
            interface: Some(2),
        }],
        routes,
        dns: None,
    })
}

async fn del(env: &Env, conf: &NetConf) -> Result<(), PluginError> {
    let id = container_id(env)?;
    let ifname = ifname(env)?;
    // The host end by its stable name: deleting it removes its peer in the
    // pod too, and works when the namespace is gone or an ADD was killed
    // half-way. Only if there was none, the pod's CNI_IFNAME (if its
    // namespace still exists). Then the address. Each step tolerates "gone".
    let host = Netlink::new().map_err(nl("open netlink"))?;
    let host_name = host_veth_name(id, ifname);
    let had_host_end = host
        .delete_link_named(&host_name)
        .await
        .map_err(nl(format!("delete {host_name}")))?;
    if !had_host_end
        && let Some(netns) = env.netns.as_deref().map(Path::new)
        && netns.exists()
    {
        match Netlink::in_netns(netns) {
            Ok(pod) => {
                pod.delete_link_named(ifname)
                    .await
                    .map_err(nl(format!("delete {ifname} in {}", netns.display())))?;
            }
            // The namespace was torn down between the check and the open.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(nl(format!("open {}", netns.display()))(e)),
        }
    }
    ipam_store(conf)?
        .release(id, ifname)
        .map_err(PluginError::Ipam)?;
    Ok(())
}

async fn check(env: &Env, conf: &NetConf) -> Result<(), PluginError> {
    let id = container_id(env)?;
    let ifname = ifname(env)?;
    let netns = PathBuf::from(need(&env.netns, "CNI_NETNS")?);
    let prev: CniResult = serde_json::from_value(
        conf.prev_result
            .clone()
            .ok_or_else(|| PluginError::Config("CHECK needs prevResult".into()))?,
    )
    .map_err(|e| PluginError::Config(format!("prevResult: {e}")))?;
    let want: Ipv4Net = prev
        .ips
        .iter()
        .find_map(|i| i.address.parse().ok())
        .ok_or_else(|| PluginError::Config("prevResult has no IPv4 address".into()))?;
    let fail = |m: String| Err(PluginError::Check(m));

    let held = ipam_store(conf)?
        .find(id, ifname)
        .map_err(PluginError::Ipam)?;
    if held != Some(want.addr) {
        return fail(format!(
            "IPAM holds {held:?} for {id}/{ifname}, the result says {}",
            want.addr
        ));
    }
    if !netns.exists() {
        return fail(format!("the pod's netns {} is gone", netns.display()));
    }
    let pod = Netlink::in_netns(&netns).map_err(nl(format!("open {}", netns.display())))?;
    let Some(pl) = pod
        .link(ifname)
        .await
        .map_err(nl("look up the pod interface"))?
    else {
        return fail(format!("{ifname} is missing in {}", netns.display()));
    };
    let addrs = pod
        .addresses(pl.index)
        .await
        .map_err(nl("list pod addresses"))?;
    if !addrs.contains(&(want.addr, want.prefix)) {
        return fail(format!("{ifname} lacks {want} (has {addrs:?})"));
    }
    if !pl.up {
        return fail(format!("{ifname} is down"));
    }
    let host = Netlink::new().map_err(nl("open netlink"))?;
    let host_name = host_veth_name(id, ifname);
    let Some(hl) = host
        .link(&host_name)
        .await
        .map_err(nl("look up the host veth"))?
    else {
        return fail(format!("the host end {host_name} is missing"));
    };
    let bridge = host
        .link(&conf.bridge)
        .await
        .map_err(nl("look up the bridge"))?;
    if bridge.as_ref().map(|b| b.index) != hl.master || hl.master.is_none() {
        return fail(format!("{host_name} is not a port of {}", conf.bridge));
    }
    Ok(())
}

async fn gc(conf: &NetConf) -> Result<(), PluginError> {
    let valid: HashSet<(String, String)> = conf
        .valid_attachments
        .iter()
        .chain(&conf.attachments)
        .flatten()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    ipam_store(conf)?.gc(&valid).map_err(PluginError::Ipam)?;
    // Host ends of attachments that are not valid: ours (by name prefix),
    // on our bridge, and not the stable name of a valid attachment.
    let host = Netlink::new().map_err(nl("open netlink"))?;
    let Some(bridge) = host
        .link(&conf.bridge)
        .await
        .map_err(nl("look up the bridge"))?
    else {
        return Ok(());
    };
    let keep: HashSet<String> = valid
        .iter()
        .map(|(id, ifn)| host_veth_name(id, ifn))
        .collect();
    let stale: Vec<_> = host
        .links()
        .await
        .map_err(nl("list links"))?
        .into_iter()
        .filter(|l| l.master == Some(bridge.index) && l.name.starts_with("rdr"))
        .filter(|l| !keep.contains(&l.name))
        .collect();
    for l in stale {
        host.delete_link(l.index)
            .await
            .map_err(nl(format!("delete stale {}", l.name)))?;
    }
    Ok(())
}

fn status(conf: &NetConf) -> Result<(), PluginError> {
    let subnet =
        SubnetEnv::load(&conf.subnet_file).map_err(|e| PluginError::Unavailable(e.to_string()))?;
    let store = Store::open(&conf.data_dir, &conf.name)
        .map_err(|e| PluginError::Unavailable(e.to_string()))?;
    let range = Range::from_gateway_subnet(subnet.subnet);
    let used = store
        .allocations()
        .map_err(|e| PluginError::Unavailable(e.to_string()))?
        .into_iter()
        .filter(|a| range.subnet.contains(a.ip))
        .count();
    let size = (u32::from(range.end) - u32::from(range.start)) as usize; // gateway excluded
    if used >= size {
        return Err(PluginError::Unavailable(format!(
            "no free pod addresses: all {size} of {} are allocated",
            range.subnet
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("rdr"));
    }

    #[test]
    fn config_errors_have_the_right_codes() {
        let code = |s: &str| parse_conf(s.as_bytes()).unwrap_err().code() as u32;
        assert_eq!(code(""), 6);
        assert_eq!(code("{not json"), 6);
        assert_eq!(code(r#"{"name":"x","type":"rudder"}"#), 7);
        assert_eq!(
            code(r#"{"cniVersion":"0.2.0","name":"x","type":"rudder"}"#),
            1
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"../x","type":"rudder"}"#),
            7
        );
        assert_eq!(
            code(
                r#"{"cniVersion":"1.0.0","name":"x","type":"rudder","bridge":"a-very-long-bridge-name"}"#
            ),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"x","type":"rudder","mtu":9}"#),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"x","type":"rudder","mtu":"big"}"#),
            7
        );
        let ok = parse_conf(br#"{"cniVersion":"1.1.0","name":"cbr0","type":"rudder","extra":1}"#)
            .unwrap();
        assert_eq!(ok.bridge, "cni0");
        assert!(ok.hairpin_mode && ok.is_default_gateway);
    }

    #[test]
    fn env_errors_are_code_4() {
        let env = Env {
            command: Some("ADD".into()),
            container_id: Some("-bad".into()),
            ..Env::default()
        };
        let e = container_id(&env).unwrap_err();
        assert_eq!(e.code() as u32, 4);
        let env = Env {
            ifname: Some("a/b".into()),
            ..Env::default()
        };
        assert_eq!(ifname(&env).unwrap_err().code() as u32, 4);
        assert_eq!(ifname(&Env::default()).unwrap_err().code() as u32, 4);
    }
}
