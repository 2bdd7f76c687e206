//! The `[network]` section of the agent configuration.

use std::{net::Ipv4Addr, path::PathBuf};

use rudder_cni::net::Ipv4Net;
use serde::Deserialize;

/// How pod traffic crosses between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// An overlay: a VXLAN device, one route + ARP + FDB entry per node.
    Vxlan,
    /// Plain routes via each node's address (nodes on one L2 segment).
    HostGw,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vxlan => "vxlan",
            Self::HostGw => "host-gw",
        }
    }
}

/// Whether the VXLAN device keeps transmit checksum offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumOffload {
    /// On where the kernel is known good (5.7 and later), off before.
    Auto,
    On,
    Off,
}

/// The first kernel whose NAT leaves the UDP checksum of VXLAN packets
/// right with offload on (netfilter's fix of kubernetes#88986).
const OFFLOAD_SAFE_FROM: (u32, u32) = (5, 7);

impl ChecksumOffload {
    /// Whether offload stays on for a kernel `release` (`uname -r`), and why.
    pub fn decide(self, release: &str) -> (bool, String) {
        match self {
            Self::On => (true, "vxlan-checksum-offload = true".into()),
            Self::Off => (false, "vxlan-checksum-offload = false".into()),
            Self::Auto => match kernel_version(release) {
                Some(v) if v >= OFFLOAD_SAFE_FROM => (
                    true,
                    format!("kernel {release} has the NAT checksum fix (5.7+)"),
                ),
                Some(_) => (
                    false,
                    format!(
                        "kernel {release} predates 5.7: NAT'd VXLAN packets would leave with wrong checksums"
                    ),
                ),
                None => (
                    false,
                    format!("kernel release {release:?} not understood: offload off to be safe"),
                ),
            },
        }
    }
}

/// The (major, minor) of a kernel release such as `3.10.0-1160.el7.x86_64`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl<'de> Deserialize<'de> for ChecksumOffload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Self::On),
            Raw::Bool(false) => Ok(Self::Off),
            Raw::Word(w) if w == "auto" => Ok(Self::Auto),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "vxlan-checksum-offload: expected true, false or \"auto\", got {w:?}"
            ))),
        }
    }
}

/// The network daemon's settings. Every key has a default matching a
/// kubeadm cluster made with `--pod-network-cidr=10.244.0.0/16`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct NetworkConfig {
    pub backend: Backend,
    /// The cluster's pod network (every node's pod CIDR is inside it).
    pub cluster_cidr: Ipv4Net,
    /// This node's pod CIDR, for clusters that do not set `spec.podCIDR`
    /// on Nodes; by default the Node's is used.
    pub pod_cidr: Option<Ipv4Net>,
    /// The interface that carries traffic between nodes, by name…
    pub iface: Option<String>,
    /// …or by one of its addresses. Neither: the default route's.
    pub iface_address: Option<Ipv4Addr>,
    /// Masquerade pod traffic that leaves the cluster network.
    pub masquerade: bool,
    /// VXLAN network identifier and UDP port (the kernel's and flannel's
    /// defaults).
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
    /// VXLAN device name.
    pub vxlan_device: String,
    /// Transmit checksum offload on the VXLAN device: `"auto"` (the
    /// default) keeps it on kernels from 5.7 and turns it off before, where
    /// NAT'd VXLAN packets leave with wrong UDP checksums (kubernetes#88986,
    /// calico#3145; pods time out or see 63 s delays); `true` or `false`
    /// force it. Off costs throughput (software checksums and
    /// segmentation; `cargo xtask bench network` measures both).
    pub vxlan_checksum_offload: ChecksumOffload,
    /// The subnet file the CNI plugin reads.
    pub subnet_file: PathBuf,
    /// The service proxy's attach socket, which the CNI plugin asks to put
    /// the Service dataplane on a new pod's interface before the pod runs
    /// (`proxy::attach_socket`).
    pub proxy_socket: PathBuf,
    /// Where the CNI configuration list is written, and its file name.
    pub cni_conf_dir: PathBuf,
    pub cni_conf_name: String,
    /// Where the runtime looks for plugin binaries; the daemon checks that
    /// the ones its configuration names are there.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The node bridge the plugin attaches pods to.
    pub bridge: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Vxlan,
            cluster_cidr: Ipv4Net {
                addr: Ipv4Addr::new(10, 244, 0, 0),
                prefix: 16,
            },
            pod_cidr: None,
            iface: None,
            iface_address: None,
            masquerade: true,
            vxlan_vni: 1,
            vxlan_port: 8472,
            vxlan_device: "rudder.1".into(),
            vxlan_checksum_offload: ChecksumOffload::Auto,
            subnet_file: PathBuf::from(rudder_cni::subnet::DEFAULT_PATH),
            proxy_socket: PathBuf::from(rudder_cni::types::DEFAULT_PROXY_SOCKET),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_conf_name: "10-rudder.conflist".into(),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin")],
            bridge: "cni0".into(),
        }
    }
}

impl NetworkConfig {
    /// The CNI configuration list the daemon writes: Rudder's plugin, then
    /// portmap (hostPort) and bandwidth (traffic shaping annotations).
    /// `cniVersion` 1.0.0, which the reference plugins of Debian 12 and
    /// RHEL 9 speak too.
    pub fn conflist(&self, ipam_data_dir: Option<&std::path::Path>) -> serde_json::Value {
        let mut rudder = serde_json::json!({
            "type": "rudder",
            "bridge": self.bridge,
            "subnetFile": self.subnet_file,
            "proxySocket": self.proxy_socket,
        });
        if let Some(d) = ipam_data_dir {
            rudder["dataDir"] = serde_json::json!(d);
        }
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "rudder",
            "plugins": [
                rudder,
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}},
            ]
        })
    }
}

impl NetworkConfig {
    /// Plugins the written configuration names that none of the bin dirs
    /// has (flannel's "failed to find plugin … in path").
    pub fn missing_plugins(&self) -> Vec<&'static str> {
        ["rudder", "portmap", "bandwidth"]
            .into_iter()
            .filter(|p| !self.cni_bin_dirs.iter().any(|d| d.join(p).is_file()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_follows_the_kernel_unless_forced() {
        let auto = ChecksumOffload::Auto;
        assert!(auto.decide("6.18.44-fc-v1272").0);
        assert!(auto.decide("5.7.0").0);
        assert!(!auto.decide("5.6.19-300.fc32.x86_64").0);
        assert!(!auto.decide("4.18.0-513.el8.x86_64").0);
        assert!(!auto.decide("3.10.0-1160.el7.x86_64").0);
        assert!(!auto.decide("unknown").0);
        assert!(ChecksumOffload::On.decide("3.10.0").0);
        assert!(!ChecksumOffload::Off.decide("6.18.0").0);
        assert_eq!(kernel_version("3.10.0-1160.el7.x86_64"), Some((3, 10)));
        assert_eq!(kernel_version("6.1"), Some((6, 1)));
        assert_eq!(kernel_version("6"), None);
    }

    #[test]
    fn offload_is_read_from_true_false_or_auto() {
        let read = |v: &str| {
            toml::from_str::<NetworkConfig>(&format!("vxlan-checksum-offload = {v}"))
                .map(|c| c.vxlan_checksum_offload)
        };
        assert_eq!(read("true").unwrap(), ChecksumOffload::On);
        assert_eq!(read("false").unwrap(), ChecksumOffload::Off);
        assert_eq!(read("\"auto\"").unwrap(), ChecksumOffload::Auto);
        assert!(read("\"sometimes\"").is_err());
        assert_eq!(
            toml::from_str::<NetworkConfig>("")
                .unwrap()
                .vxlan_checksum_offload,
            ChecksumOffload::Auto
        );
    }
}
