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
    /// Keep transmit checksum offload on the VXLAN device. Off by default:
    /// with it, some kernels and NICs send wrong inner checksums (flannel
    /// #1282/#2152; pods time out or see 63 s delays). Turning it off costs
    /// throughput (software segmentation): measured 2.3 vs ~20 Gbit/s for
    /// host-gw on one VM (`cargo xtask bench network`); set true where the
    /// kernel and NIC are known good.
    pub vxlan_checksum_offload: bool,
    /// The subnet file the CNI plugin reads.
    pub subnet_file: PathBuf,
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
            vxlan_checksum_offload: false,
            subnet_file: PathBuf::from(rudder_cni::subnet::DEFAULT_PATH),
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
